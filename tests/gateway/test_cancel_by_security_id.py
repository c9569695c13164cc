"""With `instrument = "security_id"` the gateway's own cancels name the order's instrument.

The Guard keys an order by its SecurityID(48). Before, a cancel the gateway sends itself
(a kill's, a cancel-on-disconnect's, one per order of a client's mass cancel) carried that
SecurityID as Symbol(55) and no SecurityID: a venue that matches a cancel's instrument to
its order's (as many do) refused it as an unknown order, every time it was sent again,
and the kill left the order working. Now such a cancel names the Symbol(55),
SecurityID(48) and SecurityIDSource(22) the order was sent with (an adopted order: as the
venue's status report named them). Real QuickFIX sessions (`conftest.Rig`).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from knightwatch.gateway import fields as F
from knightwatch.gateway.venue import VenueOrder
from knightwatch.limits import Limits
from knightwatch.state import Scope

from .conftest import Rig, eventually
from .test_gateway import BUY, below

ISIN = "US0000L00001"
LIMITS = Limits.off(max_order_qty=5_000, require_reference_price=False)


def test_a_kill_by_security_id_cancels_at_a_venue_that_checks_the_instrument(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(
        limits=LIMITS,
        config={"instrument": "security_id", "security_id_source": "4"},
        venue={"check_instrument": True},
    )
    rig.start().ready(())
    ids = [(F.SECURITY_ID, ISIN), (F.ID_SOURCE, "4")]
    rig.oms.new_order("K1", "L000", BUY, 10, below(rig, "L000"), extra=ids)
    rig.oms.wait_report("K1", "0")
    assert rig.gateway.cancel_scope(Scope.SYMBOL, ISIN, "bad isin") == ["OMS1:K1"]
    # before, the venue refused the cancel (Symbol(55)=US0000L00001 is no order of its)
    assert rig.oms.wait_report("K1", "4").get(F.TEXT) == "knightwatch kill: bad isin"
    assert rig.venue.working() == []


def test_an_adopted_order_is_cancelled_under_the_instrument_its_status_report_named(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = rig_factory(
        limits=LIMITS,
        config={"instrument": "security_id", "security_id_source": "4"},
        venue={"check_instrument": True},
    )
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
        venue._report(w8, "I", extra=extra)

    monkeypatch.setattr(venue, "_mass_status", answer)
    rig.start()
    eventually(lambda: rig.guard.remaining("reconciled:W8") == 300, what="W8 adopted")
    assert rig.gateway.cancel_scope(Scope.SYMBOL, ISIN, "bad isin") == ["reconciled:W8"]
    eventually(lambda: w8.status == "4", what="W8 cancelled at the venue")
    eventually(lambda: rig.guard.remaining("reconciled:W8") in (None, 0), what="W8 ended")
