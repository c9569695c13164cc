"""With `instrument = "security_id"`, SecurityIDSource(22) is read wherever a SecurityID is.

The Guard keys an instrument by its SecurityID(48) string alone, so the same string
under another source (an ISIN, 22=4, against an exchange symbol, 22=8) is another
instrument. Before, a fill was matched to its order by the ClOrdID and booked under the
order's SecurityID whatever source it named, and a client's mass cancel or mass status
by instrument took any source for the configured one: a mass cancel naming the exchange
symbol's instrument cancelled the client's ISIN orders of that string. Real QuickFIX
sessions (`conftest.Rig`).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from knightwatch.decision import RejectReason
from knightwatch.gateway import fields as F
from knightwatch.gateway.client import Received
from knightwatch.limits import Limits

from .conftest import Rig, eventually
from .test_gateway import BUY, SELL, below, dc_fill, dc_sid, mass_status

ISIN = "US0000L00001"
LIMITS = Limits.off(max_order_qty=5_000, require_reference_price=False)
CONFIG = {"instrument": "security_id", "security_id_source": "4"}
IDS = [(F.SECURITY_ID, ISIN), (F.ID_SOURCE, "4")]


def _working(rig_factory: Callable[..., Rig], clordid: str = "K1") -> Rig:
    """A rig under `security_id_source` 4 with OMS1's order `clordid` (buy 10 of the
    ISIN) working at the venue."""
    rig = rig_factory(limits=LIMITS, config=CONFIG).start().ready(())
    rig.oms.new_order(clordid, "L000", BUY, 10, below(rig, "L000"), extra=IDS)
    rig.oms.wait_report(clordid, "0")
    return rig


def _fill(rig: Rig, exec_id: str, source: str) -> None:
    """The venue reports 4 of K1's 10 filled, naming SecurityIDSource `source`."""
    rig.venue.misreport(
        "K1",
        "F",
        [
            (F.EXEC_ID, exec_id),
            (F.ORD_STATUS, "1"),
            (F.LAST_QTY, "4"),
            (F.LAST_PX, "99"),
            (F.CUM_QTY, "4"),
            (F.LEAVES_QTY, "6"),
            (F.ID_SOURCE, source),
        ],
    )


@pytest.mark.parametrize(("source", "halts"), [("8", True), ("4", False)])
def test_a_fill_naming_another_source_halts(
    rig_factory: Callable[..., Rig], source: str, halts: bool
) -> None:
    """K1 (the ISIN, source 4) is filled 4 and the venue's report names the SecurityID
    under source 8: the venue executed another instrument than the Guard checked. Booked
    as reported (the order's leaves are the venue's), and the node halts `fill_mismatch`
    naming the source. Before, booked as the ISIN's with no word. One naming source 4 is
    booked as before."""
    rig = _working(rig_factory)
    _fill(rig, "XF1", source)
    eventually(lambda: rig.guard.remaining("OMS1:K1") == 6, what="the fill booked")
    assert rig.guard.position(ISIN) == 4
    if not halts:
        assert rig.guard.halts() == {}
        return
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH, halt
    assert "venue trade report of OMS1:K1 names SecurityIDSource(22)=8" in halt.reason, halt


def _mass_cancel(rig: Rig, clordid: str, ids: list[tuple[int, str]]) -> Received:
    rig.oms.send(
        F.message(
            F.MASS_CANCEL,
            [
                (F.CL_ORD_ID, clordid),
                (F.MASS_CANCEL_REQUEST_TYPE, "1"),
                *ids,
                (F.TRANSACT_TIME, F.now_utc()),
            ],
        )
    )
    return rig.oms.wait_for(
        lambda r: r.mtype == F.MASS_CANCEL_REPORT and r.get(F.CL_ORD_ID) == clordid,
        what=f"mass cancel {clordid} answered",
    )


def test_a_mass_cancel_by_security_id_honours_the_source(rig_factory: Callable[..., Rig]) -> None:
    """A mass cancel of the SecurityID under source 8, or under none, is refused (530's
    response 0, the source named), nothing cancelled; under source 4 it cancels K1."""
    rig = _working(rig_factory)
    other = _mass_cancel(rig, "MC8", [(F.SECURITY_ID, ISIN), (F.ID_SOURCE, "8")])
    assert other.get(F.MASS_CANCEL_RESPONSE) == "0"
    # before: response 1, K1 cancelled as the exchange symbol's instrument
    assert other.get(F.TEXT) == (
        "knightwatch:invalid_order SecurityIDSource(22)='8' is not the gateway's "
        "security_id_source 4 (the Guard keys SecurityID(48) under that source alone)"
    )
    none = _mass_cancel(rig, "MC0", [(F.SECURITY_ID, ISIN)])
    assert none.get(F.MASS_CANCEL_RESPONSE) == "0"
    assert none.get(F.TEXT).startswith(
        "knightwatch:invalid_order SecurityIDSource(22) is required with SecurityID(48)"
    )
    assert [o.clordid for o in rig.venue.working()] == ["K1"]
    assert rig.guard.remaining("OMS1:K1") == 10
    mine = _mass_cancel(rig, "MC4", IDS)
    assert mine.get(F.MASS_CANCEL_RESPONSE) == "1"
    assert mine.get(F.TOTAL_AFFECTED) == "1"
    eventually(lambda: rig.venue.working() == [], what="K1 cancelled")


def test_a_mass_status_by_security_id_honours_the_source(rig_factory: Callable[..., Rig]) -> None:
    """A mass status of the SecurityID under source 8 is refused (a BusinessMessageReject
    naming the source), never answered with K1 as that instrument's; under 4, K1."""
    rig = _working(rig_factory)
    (rej,) = mass_status(
        rig, "S8", [(F.MASS_STATUS_REQ_TYPE, "1"), (F.SECURITY_ID, ISIN), (F.ID_SOURCE, "8")]
    )
    # before: K1 reported as the exchange symbol's instrument
    assert rej.mtype == F.BUSINESS_REJECT, rej
    assert rej.get(F.TEXT).startswith(
        "knightwatch:invalid_order SecurityIDSource(22)='8' is not the gateway's "
        "security_id_source 4"
    )
    (one,) = mass_status(rig, "S4", [(F.MASS_STATUS_REQ_TYPE, "1"), *IDS])
    assert one.get(F.CL_ORD_ID) == "K1" and one.get(F.ID_SOURCE) == "4"


@pytest.mark.parametrize(("source", "halts"), [("8", True), ("4", False)])
def test_a_bypass_fill_naming_another_source_halts(
    rig_factory: Callable[..., Rig], source: str, halts: bool
) -> None:
    """The drop copy reports a sell of 30 by an order that bypassed the gateway, naming
    the ISIN's SecurityID under source 8: another instrument than the Guard keys under
    that string. Booked all the same (the venue says the firm traded), and the node halts
    `fill_mismatch` naming the source. Before, booked as the ISIN's with no word. One
    naming source 4 is booked as before, without a halt."""
    rig = rig_factory(limits=LIMITS, config=CONFIG, drop_copy=True).start().ready(())
    eventually(lambda: rig.venue.logged_on(rig.dc_comp), what="drop copy logged on")
    report = dc_fill(F.EXECUTION_REPORT, "DC-1", "ELSEWHERE-1", SELL, 30)
    report.setField(F.SECURITY_ID, ISIN)
    report.setField(F.ID_SOURCE, source)
    assert F.send(report, dc_sid(rig))
    eventually(lambda: rig.guard.position(ISIN) == -30, what="the bypass fill booked")
    if not halts:
        assert rig.guard.halts() == {}
        return
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH, halt
    assert halt.reason == (
        "drop copy: trade report DC:DC-1: SecurityIDSource(22)='8' is not the gateway's "
        "security_id_source 4 (the Guard keys SecurityID(48) under that source alone)"
    )
