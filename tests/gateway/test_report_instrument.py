"""Venue reports of an order (no fill) that name another instrument or side than the
order's: what the venue works is not what the Guard checked and counts.

Real QuickFIX sessions (`conftest.Rig`); the simulated venue sends the report with the
field overridden (`FixVenue.misreport`).
"""

from __future__ import annotations

import pytest

from knightwatch.decision import RejectReason
from knightwatch.gateway import fields as F

from .conftest import Rig, eventually
from .test_gateway import SELL, rest


@pytest.mark.parametrize("exec_type", ["0", "D", "6"])
@pytest.mark.parametrize(
    ("field", "named"),
    [((F.SYMBOL, "L001"), "Symbol(55)=L001"), ((F.SIDE, SELL), "Side(54)=2")],
)
def test_a_report_naming_another_instrument_or_side_halts(
    rig: Rig, exec_type: str, field: tuple[int, str], named: str
) -> None:
    """Order A, buy 100 L000, works at the venue; the venue acknowledges (0), restates (D)
    or reports it pending (6) as L001 or as a sell. Before, the report was applied and
    relayed with no word: the venue worked something the Guard never checked and does not
    count. The node halts `fill_mismatch` naming the field, the order stays counted."""
    rest(rig, "A")
    report = [(F.EXEC_ID, "XI1"), field]
    if exec_type == "6":
        report.append((F.ORD_STATUS, "6"))
    rig.venue.misreport("A", exec_type, report)
    eventually(lambda: rig.guard.halts(), what="the node halted")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH, halt
    assert f"report of OMS1:A names {named}; the order is buy L000" in halt.reason, halt.reason
    assert rig.guard.remaining("OMS1:A") == 100
