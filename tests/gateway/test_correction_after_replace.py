"""Venue corrections (ExecType G): of an execution from before the order was replaced, and
one that reopens a finished order.

Real QuickFIX sessions (`conftest.Rig`): the simulated venue fills order A, takes the
client's replace R1, then corrects the fill under R1 (its current ClOrdID); or fills
A whole and corrects the fill down, reopening A.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from knightwatch.gateway import fields as F

from .conftest import Rig, eventually
from .test_gateway import BUY, below, rest


@pytest.mark.parametrize(("corrected", "left"), [(10, 190), (50, 150)])
def test_a_correction_of_a_fill_from_before_a_replace_is_applied(
    rig: Rig, corrected: int, left: int
) -> None:
    """A (100) fills 30, is replaced up to 200, then the venue corrects that fill to 10 or
    50. Before, the correction reached the Guard under the replaced order's id while the
    fill was booked under the first: the Guard refused it as another order's, the node
    halted `fill_mismatch` and the position stayed 30. It is applied: the position is the
    corrected quantity, the order's working quantity follows the venue, no halt."""
    rest(rig, "A", qty=100)
    px = below(rig, "L000")
    exec_id = rig.venue.execute("A", 30, px)
    eventually(lambda: rig.guard.position("L000") == 30, what="the fill booked")
    rig.oms.replace("R1", "A", "L000", BUY, 200, px)
    rig.oms.wait_report("R1", "5")
    eventually(lambda: rig.guard.remaining("OMS1:R1") == 170, what="the replace applied")
    rig.venue.correct(exec_id, corrected, px)
    eventually(
        lambda: rig.oms.reports("R1")[-1].get(F.EXEC_TYPE) == "G" or rig.guard.halts(),
        what="the correction relayed (or the node halted)",
    )
    assert rig.guard.halts() == {}
    assert rig.guard.position("L000") == corrected
    assert rig.guard.remaining("OMS1:R1") == left
    rig.venue.execute("R1", left, px)  # the venue fills what it says is left: no overfill
    eventually(lambda: rig.guard.position("L000") == corrected + left, what="filled")
    assert rig.guard.halts() == {} and rig.guard.remaining("OMS1:R1") is None


def test_a_finished_order_a_correction_reopens_is_cancelled_at_the_venue(rig: Rig) -> None:
    """A (100) fills whole; the venue corrects the fill down to 60 and reports the order
    working again with 40 left (OrdStatus 1, LeavesQty 40). Before, the book took it as
    working while the Guard, which cannot count a finished order working again, did not
    count it: 40 worked at the venue outside every limit, with nothing halted. As for a
    trade bust that reopens a finished order, it is recorded (`correction_reopened`) and
    cancelled at the venue, the correction itself applied."""
    rest(rig, "A")
    px = below(rig, "L000")
    exec_id = rig.venue.execute("A", 100, px)
    eventually(lambda: rig.guard.position("L000") == 100, what="filled")
    order = rig.venue.find("A")
    assert order is not None
    order.status, order.cum = "1", Decimal(60)  # the venue reopens what it corrects away
    report = [(F.EXEC_REF_ID, exec_id), (F.LAST_QTY, "60"), (F.LAST_PX, f"{px:.2f}")]
    rig.venue.misreport("A", "G", [(F.EXEC_ID, "XC1"), *report])
    eventually(lambda: rig.guard.position("L000") == 60, what="the correction applied")
    eventually(lambda: not rig.venue.working(), what="cancelled at the venue")
    assert rig.events("correction_reopened")
    assert rig.guard.remaining("OMS1:A") is None and rig.guard.halts() == {}
