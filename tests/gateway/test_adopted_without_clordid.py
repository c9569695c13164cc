"""A working order the start-up mass status reports without a ClOrdID is counted, never skipped.

FIX lets a venue report an order it holds with ClOrdID(11) "NONE" (an order entered
at the venue by other means than this session's electronic flow, on the firm's
behalf). Before, start-up skipped every report under "NONE" as the venue's "no working
orders" answer: such an order worked on uncounted by the Guard (its limits started
low) and out of every kill's reach. Now it is adopted (counted, cancelled by a kill
naming its OrderID) and the node halts `fill_mismatch` naming it: nothing the gateway
sent has no ClOrdID. The venue's "no working orders" answer (TotNumReports(911) 0,
or a finished OrdStatus) is still no order. Real QuickFIX sessions (`conftest.Rig`).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from knightwatch.decision import RejectReason
from knightwatch.gateway import fields as F
from knightwatch.gateway.venue import VenueOrder
from knightwatch.state import Scope

from .conftest import Rig, eventually
from .test_gateway import BUY


def answered_with(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, report: VenueOrder, total: str
) -> None:
    """The rig's venue answers the start-up mass status with `report` alone, its
    TotNumReports(911) `total`; the order is also held by the venue, so a cancel of it
    by OrderID(37) finds it."""
    venue = rig.venue

    def answer(msg: F.In, sid: Any, key: str) -> None:
        report.session = sid
        extra = [
            (F.MASS_STATUS_REQ_ID, msg[F.MASS_STATUS_REQ_ID]),
            (F.TOT_NUM_REPORTS, total),
            (F.LAST_RPT_REQUESTED, "Y"),
        ]
        venue._report(report, "I", extra=extra)

    monkeypatch.setattr(venue, "_mass_status", answer)


def test_a_working_order_reported_without_a_clordid_is_adopted_and_halts(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = rig_factory()
    manual = VenueOrder("NONE", "V77", None, "L000", BUY, Decimal(400), 99.0, "2", "0")
    answered_with(rig, monkeypatch, manual, "1")
    rig.start()
    eventually(lambda: rig.gateway.reconciled.is_set(), what="reconciliation")
    assert rig.guard.remaining("reconciled:NONE") == 400  # counted by every limit
    assert rig.guard.working_qty("L000") == (400, 0)
    halt = rig.guard.halts()[(Scope.NODE, "gw")]
    assert halt.code is RejectReason.FILL_MISMATCH
    assert "V77" in halt.reason and "no ClOrdID" in halt.reason
    assert rig.gateway.in_scope(Scope.SYMBOL, "L000")[0].order_id == "V77"  # a kill finds it


@pytest.mark.parametrize(("status", "total"), [("8", "0"), ("0", "0"), ("4", "1")])
def test_the_venues_no_working_orders_answer_is_no_order(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch, status: str, total: str
) -> None:
    rig = rig_factory()
    none = VenueOrder("NONE", "NONE", None, "NA", BUY, Decimal(0), None, "2", "0", status=status)
    answered_with(rig, monkeypatch, none, total)
    rig.start()
    eventually(lambda: rig.guard.armed, what="armed")
    assert not rig.gateway.book.live()
    assert not rig.guard.halts()
