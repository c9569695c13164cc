"""With `instrument = "security_id"` every SecurityID is read under one SecurityIDSource.

The Guard keys an instrument by its SecurityID(48) string alone. Before, the source was
not read: "US0000L00001" as an ISIN (22=4) and the same string as an exchange symbol
(22=8), or a SecurityID with no source at all, shared one reference price, one position
and one set of limits, and an order of one instrument was checked against another's. Now
the gateway's `security_id_source` (required with `instrument = "security_id"`) names the
one source: an order or replace naming another source, or none, is refused
`invalid_order` naming the tag, nothing sent; a market data snapshot under another
source is recorded `venue_price_refused`, never filed. Real QuickFIX sessions
(`conftest.Rig`).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from knightwatch.decision import RejectReason
from knightwatch.gateway import fields as F
from knightwatch.gateway.config import ClientSession, GatewayConfig, VenueSession
from knightwatch.gateway.engine import GatewayError
from knightwatch.gateway.venue import VenueOrder
from knightwatch.limits import Limits

from .conftest import Rig, eventually
from .test_gateway import BUY, below

ISIN = "US0000L00001"
LIMITS = Limits.off(max_order_qty=5_000, require_reference_price=False)


def _answer(rig: Rig, clordid: str) -> str:
    report = rig.oms.wait_for(
        lambda r: r.get(F.CL_ORD_ID) == clordid and r.get(F.EXEC_TYPE) in ("0", "8"),
        what=f"{clordid} answered",
    )
    return report.get(F.EXEC_TYPE) + " " + (report.get(F.TEXT) or "")


def test_an_order_naming_another_source_or_none_is_refused(
    rig_factory: Callable[..., Rig],
) -> None:
    config = {"instrument": "security_id", "security_id_source": "4"}
    rig = rig_factory(limits=LIMITS, config=config).start().ready(())
    px = below(rig, "L000")
    rig.oms.new_order("S8", "L000", BUY, 10, px, extra=[(F.SECURITY_ID, ISIN), (F.ID_SOURCE, "8")])
    # before: accepted, and checked and counted as the ISIN's
    assert _answer(rig, "S8") == (
        "8 knightwatch:invalid_order SecurityIDSource(22)='8' is not the gateway's "
        "security_id_source 4 (the Guard keys SecurityID(48) under that source alone)"
    )
    rig.oms.new_order("S0", "L000", BUY, 10, px, extra=[(F.SECURITY_ID, ISIN)])
    assert _answer(rig, "S0").startswith(
        "8 knightwatch:invalid_order SecurityIDSource(22) is required"
    )
    rig.oms.new_order("S4", "L000", BUY, 10, px, extra=[(F.SECURITY_ID, ISIN), (F.ID_SOURCE, "4")])
    assert _answer(rig, "S4") == "0 "
    assert [o.clordid for o in rig.venue.working()] == ["S4"]
    assert rig.guard.remaining("OMS1:S4") == 10


def test_a_snapshot_under_another_source_is_refused_not_filed(
    rig_factory: Callable[..., Rig],
) -> None:
    # the simulated venue names L000 as SecurityID L000 under source 8 (exchange symbol)
    rig = rig_factory(config={"instrument": "security_id", "security_id_source": "4"}).start()
    eventually(lambda: rig.gateway.reconciled.is_set(), what="reconciliation")
    refused = eventually(lambda: rig.events("venue_price_refused"), what="price refused")
    assert "SecurityIDSource(22)" in refused[0]["data"]["why"], refused[0]
    # before: filed under "L000", the reference of an ISIN spelt "L000"
    assert not rig._has_price("L000")


@pytest.mark.parametrize(("source", "halts"), [("8", True), ("4", False), (None, False)])
def test_a_working_order_reported_under_another_source_is_adopted_and_halts(
    rig_factory: Callable[..., Rig],
    monkeypatch: pytest.MonkeyPatch,
    source: str | None,
    halts: bool,
) -> None:
    """The venue's start-up mass status reports W8 working under SecurityID ISIN with
    SecurityIDSource 8: another instrument than the ISIN the Guard keys it under. Counted
    all the same (a kill cancels it), and the node halts `fill_mismatch` naming the source
    until a person looks. Before, adopted under the ISIN's key with no word. One naming
    the configured source, or none, is adopted as before."""
    config = {"instrument": "security_id", "security_id_source": "4"}
    rig = rig_factory(limits=LIMITS, config=config)
    venue = rig.venue
    w8 = VenueOrder("W8", "V81", None, "L000", BUY, Decimal(300), 99.0, "0", "0")
    w8.security_id = ISIN

    def answer(msg: F.In, sid: Any, key: str) -> None:
        w8.session = F.own_sid(sid)
        venue.orders[(key, "W8")] = w8
        extra = [
            (F.MASS_STATUS_REQ_ID, msg[F.MASS_STATUS_REQ_ID]),
            (F.TOT_NUM_REPORTS, "1"),
            (F.LAST_RPT_REQUESTED, "Y"),
        ]
        if source is not None:
            extra.append((F.ID_SOURCE, source))
        venue._report(w8, "I", extra=extra)

    monkeypatch.setattr(venue, "_mass_status", answer)
    rig.start()
    eventually(lambda: rig.guard.remaining("reconciled:W8") == 300, what="W8 adopted")
    eventually(lambda: rig.gateway.reconciled.is_set(), what="reconciliation")
    halted = rig.guard.halts()
    if not halts:
        assert halted == {}
        return
    (halt,) = halted.values()
    assert halt.code is RejectReason.FILL_MISMATCH, halt
    assert "SecurityIDSource(22)='8' is not the gateway's security_id_source 4" in halt.reason


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (
            {"instrument": "security_id"},
            'security_id_source: required with instrument = "security_id"',
        ),
        (
            {"security_id_source": "4"},
            'security_id_source: only with instrument = "security_id"',
        ),
        (
            {"instrument": "security_id", "security_id_source": "4\x01"},
            "security_id_source: must be",
        ),
    ],
)
def test_the_source_is_required_with_security_ids_and_only_then(
    fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(GatewayError, match=problem):
        GatewayConfig(
            listen_port=9878,
            venue=VenueSession(port=9880),
            clients=(ClientSession(comp_id="OMS1"),),
            assume_flat=True,
            **fields,
        )


def test_a_report_of_an_order_under_another_source_halts(rig_factory: Callable[..., Rig]) -> None:
    """Order K1, ISIN under source 4, works at the venue; the venue restates it naming the
    same SecurityID under source 8: it works another instrument than the Guard checked.
    Applied as reported, and the node halts `fill_mismatch` naming the source (as for
    another SecurityID). Before, relayed with no word."""
    config = {"instrument": "security_id", "security_id_source": "4"}
    rig = rig_factory(limits=LIMITS, config=config).start().ready(())
    ids = [(F.SECURITY_ID, ISIN), (F.ID_SOURCE, "4")]
    rig.oms.new_order("K1", "L000", BUY, 10, below(rig, "L000"), extra=ids)
    rig.oms.wait_report("K1", "0")
    rig.venue.misreport("K1", "D", [(F.EXEC_ID, "XI1"), (F.ID_SOURCE, "4")])
    rig.oms.wait_report("K1", "D")
    assert rig.guard.halts() == {}
    rig.venue.misreport("K1", "D", [(F.EXEC_ID, "XI2"), (F.ID_SOURCE, "8")])
    eventually(lambda: rig.guard.halts(), what="the node halted")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH, halt
    assert "names SecurityIDSource(22)=8; the order is buy US0000L00001" in halt.reason, halt
    assert rig.guard.remaining("OMS1:K1") == 10
