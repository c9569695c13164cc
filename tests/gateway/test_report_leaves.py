"""Venue reports whose OrdStatus says the order is finished while their LeavesQty says
part of it still works (FIX's LeavesQty is 0 for a finished order).

Real QuickFIX sessions (`conftest.Rig`); the simulated venue sends the contradictory
report (`FixVenue.misreport`) while the order in fact works on there.
"""

from __future__ import annotations

import pytest

from knightwatch.decision import RejectReason
from knightwatch.gateway import fields as F
from knightwatch.state import Scope

from .conftest import Rig, eventually
from .test_gateway import below, rest


@pytest.mark.parametrize(
    ("exec_type", "status", "leaves", "fill"),
    [
        ("F", "4", "50", True),  # a fill "cancelled" with 50 left
        ("F", "2", "50", True),  # a fill "filled" with 50 left
        ("F", "C", "30", True),  # a fill "expired" with 30 left
        ("D", "4", "100", False),  # a restatement "cancelled" with all of it left
        ("D", "3", "80", False),  # a restatement "done for day" with 80 left
    ],
)
def test_a_finished_status_with_quantity_left_halts_and_the_order_stays_in_a_kills_reach(
    rig: Rig, exec_type: str, status: str, leaves: str, fill: bool
) -> None:
    """Order A (100) works at the venue; the venue reports it finished (OrdStatus 2, 4, C
    or 3) with LeavesQty > 0, in a fill or a restatement. Before, the Guard took the
    LeavesQty as still working while the book took the OrdStatus: the order left the
    gateway's working index, no kill cancelled it (a drain counted it done) and nothing
    halted. Now the report is not applied, the node halts `fill_mismatch` naming both
    fields, and a kill still cancels the order at the venue."""
    rest(rig, "A")
    px = f"{below(rig, 'L000'):.2f}"
    extra = [(F.LAST_QTY, "50"), (F.LAST_PX, px), (F.CUM_QTY, "50")] if fill else []
    report = [(F.EXEC_ID, "XL1"), (F.ORD_STATUS, status), (F.LEAVES_QTY, leaves), *extra]
    rig.venue.misreport("A", exec_type, report)
    eventually(lambda: rig.guard.halts(), what="the node halted")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH, halt
    assert f"LeavesQty(151)={leaves} with OrdStatus(39)={status}" in halt.reason, halt.reason
    assert rig.events("venue_report_unapplied")
    assert rig.guard.remaining("OMS1:A") == 100 and rig.guard.position("L000") == 0
    assert rig.gateway.still_working(Scope.FLEET, "fleet") == ["OMS1:A"]
    assert rig.gateway.cancel_scope(Scope.SYMBOL, "L000", "test") == ["OMS1:A"]
    eventually(lambda: not rig.venue.working(), what="cancelled at the venue")
    eventually(lambda: rig.guard.remaining("OMS1:A") is None, what="the Guard follows")
