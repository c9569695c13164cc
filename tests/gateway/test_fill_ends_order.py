"""A venue fill whose one report also ends the order: the last fill of an IOC, FOK or
market order with the rest cancelled (ExecType F, OrdStatus 4, LeavesQty 0), expired
(C) or done for the day (3), as many venues report it.

Real QuickFIX sessions (`conftest.Rig`); the simulated venue sends the report
(`FixVenue.misreport`, its own matching reports an IOC's rest apart).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from knightwatch.decision import RejectReason
from knightwatch.gateway import fields as F
from knightwatch.state import Scope

from .conftest import Rig, eventually
from .test_gateway import below, rest


def _working(rig: Rig, symbol: str = "L000") -> int:
    """What the Guard counts working (bought) in `symbol`."""
    with rig.guard.lock:
        return rig.guard._ledger.books[symbol].wbuy


def _ends(rig: Rig) -> list[tuple[str, bool]]:
    ends = ("cancel", "expire")
    return [(r["kind"], r["data"]["known"]) for r in rig.records() if r["kind"] in ends]


@pytest.mark.parametrize(
    ("begin", "exec_type", "status", "end"),
    [
        ("FIX.4.4", "F", "4", "cancel"),  # an IOC's rest cancelled in its fill's report
        ("FIX.4.4", "F", "C", "expire"),  # ... expired
        ("FIX.4.4", "F", "3", "expire"),  # a day order's last fill, done for the day
        ("FIX.4.2", "1", "4", "cancel"),  # FIX 4.2: a partial fill, the rest cancelled
    ],
)
def test_a_fill_that_ends_its_order_books_the_fill_and_releases_the_rest_once(
    rig_factory: Callable[..., Rig], begin: str, exec_type: str, status: str, end: str
) -> None:
    """Order A (100) works; the venue fills 50 and ends the rest in the same report,
    then (as some venues do) sends a separate cancel report for it too. Before, the
    node halted `fill_mismatch` (LeavesQty 0 against the 50 the Guard still had) and
    the Guard counted the 50 working for ever while the book had ended the order. Now
    the fill is booked, the rest released once, and nothing halts."""
    rig = rig_factory(begin=begin).start().ready()
    rest(rig, "A")
    px = f"{below(rig, 'L000'):.2f}"
    fill = [(F.LAST_QTY, "50"), (F.LAST_PX, px), (F.CUM_QTY, "50")]
    rig.venue.misreport(
        "A", exec_type, [(F.EXEC_ID, "XF1"), (F.ORD_STATUS, status), (F.LEAVES_QTY, "0"), *fill]
    )
    assert rig.oms.wait_report("A", exec_type).get(F.ORD_STATUS) == status
    assert not rig.guard.halts(), [h.reason for h in rig.guard.halts().values()]
    assert rig.guard.position("L000") == 50
    assert rig.guard.remaining("OMS1:A") is None and _working(rig) == 0
    assert rig.gateway.still_working(Scope.FLEET, "fleet") == []
    assert _ends(rig) == [(end, True)]
    # the venue's separate report of the same end: nothing left to release, no halt
    rig.venue.misreport(
        "A",
        "4",
        [(F.EXEC_ID, "XC1"), (F.ORD_STATUS, "4"), (F.LEAVES_QTY, "0"), (F.CUM_QTY, "50")],
    )
    rig.oms.wait_report("A", "4")
    assert not rig.guard.halts(), [h.reason for h in rig.guard.halts().values()]
    assert rig.guard.position("L000") == 50 and _working(rig) == 0
    assert _ends(rig) == [(end, True), ("cancel", False)]
    assert rig.guard._ledger.cancels == (1 if end == "cancel" else 0)


@pytest.mark.parametrize("status", ["2", "8", "B"])
def test_a_fill_reported_finished_short_of_its_quantity_halts_and_ends_the_order(
    rig: Rig, status: str
) -> None:
    """Order A (100) works; the venue reports a fill of 50 as filled (2), rejected (8)
    or calculated (B) with LeavesQty 0: it finished the order at another quantity than
    the Guard checked. The node halts naming it, as before; and the Guard no longer
    counts the 50 working (before, it did for ever, while the book had ended the order:
    nothing would release them)."""
    rest(rig, "A")
    px = f"{below(rig, 'L000'):.2f}"
    fill = [(F.LAST_QTY, "50"), (F.LAST_PX, px), (F.CUM_QTY, "50")]
    rig.venue.misreport(
        "A", "F", [(F.EXEC_ID, "XF1"), (F.ORD_STATUS, status), (F.LEAVES_QTY, "0"), *fill]
    )
    eventually(lambda: rig.guard.halts(), what="the node halted")
    assert rig.guard.position("L000") == 50
    assert rig.guard.remaining("OMS1:A") is None and _working(rig) == 0
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH, halt
    assert f"OrdStatus(39)={status} with LeavesQty(151)=0 in a fill of OMS1:A" in halt.reason
    assert "counted 50 of it working" in halt.reason, halt.reason
    assert rig.gateway.still_working(Scope.FLEET, "fleet") == []


def test_a_last_fill_reported_filled_ends_the_order_with_no_halt(rig: Rig) -> None:
    """The ordinary last fill (OrdStatus 2, LeavesQty 0, the whole quantity) is unchanged:
    booked, nothing else ended, no halt."""
    rest(rig, "A")
    rig.venue.execute("A", 100, below(rig, "L000"))
    assert rig.oms.wait_report("A", "F").get(F.ORD_STATUS) == "2"
    assert not rig.guard.halts(), [h.reason for h in rig.guard.halts().values()]
    assert rig.guard.position("L000") == 100 and _working(rig) == 0
    assert _ends(rig) == []


@pytest.mark.parametrize("exec_type", ["4", "C", "3"])
def test_an_end_report_saying_more_executed_than_was_filled_halts(rig: Rig, exec_type: str) -> None:
    """Order A (100) works, 30 of it filled; the venue then ends it (cancelled, expired,
    done for day) with CumQty 80: 50 executed that it never reported as a fill (a fill
    folded into the end report, LastQty and all, or a fill report lost). Before, the
    order ended with no word and the position stayed 30 against the venue's 80. Now the
    end is applied (nothing works at the venue) and the node halts `fill_mismatch`
    naming CumQty(14)."""
    rest(rig, "A")
    px = below(rig, "L000")
    rig.venue.execute("A", 30, px)
    rig.oms.wait_report("A", "F")
    fields = [
        (F.EXEC_ID, "XE1"),
        (F.ORD_STATUS, exec_type),
        (F.LEAVES_QTY, "0"),
        (F.CUM_QTY, "80"),
        (F.LAST_QTY, "50"),
        (F.LAST_PX, f"{px:.2f}"),
    ]
    rig.venue.misreport("A", exec_type, fields)
    rig.oms.wait_report("A", exec_type)
    assert rig.guard.halts(), "no halt: 50 executed at the venue uncounted"
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH, halt
    assert "CumQty(14)=80" in halt.reason and "booked 30" in halt.reason, halt.reason
    assert rig.guard.remaining("OMS1:A") is None and _working(rig) == 0
    assert rig.gateway.still_working(Scope.FLEET, "fleet") == []


def test_an_end_report_with_what_was_filled_does_not_halt(rig: Rig) -> None:
    """The ordinary end: 30 filled, then cancelled with CumQty 30: no halt."""
    rest(rig, "A")
    rig.venue.execute("A", 30, below(rig, "L000"))
    rig.oms.wait_report("A", "F")
    rig.oms.cancel("CX1", "A", "L000", "1", 100)
    rig.oms.wait_report("CX1", "4")
    assert not rig.guard.halts(), [h.reason for h in rig.guard.halts().values()]
    assert rig.guard.position("L000") == 30 and _working(rig) == 0
