"""Duplicate client order ids: caught within the scope, a day at full rate never blocks."""

from __future__ import annotations

import pytest

from knightwatch.clock import NS_PER_S, SimClock
from knightwatch.decision import RejectReason as R
from knightwatch.guard import Guard
from knightwatch.guard.orderids import BUCKETS
from knightwatch.limits import ID_BUCKETS, Limits, LimitsError
from knightwatch.order import Order, Side


def guard(**limits: object) -> tuple[Guard, SimClock]:
    clock = SimClock(10**12)
    g = Guard(Limits.off(**limits), node="n1", clock=clock)
    g.arm("test")
    g.on_price("IBM", 100.0)
    return g, clock


def order(oid: str) -> Order:
    return Order(oid, "rlp", "IBM", Side.BUY, 1, 100.0)


def test_a_duplicate_within_the_window_is_blocked_and_one_after_it_accepted() -> None:
    g, clock = guard(duplicate_id_window_s=60.0)
    assert g.check(order("a")).accepted
    g.on_cancel("a")  # it ended: its id stays taken for the window, no longer
    clock.advance(59 * NS_PER_S)
    d = g.check(order("a"))
    assert not d.accepted and d.reason is R.DUPLICATE_ORDER_ID
    clock.advance(2 * NS_PER_S)
    assert g.check(order("a")).accepted  # nothing accepted since: the hit itself catches up


def test_a_day_at_the_rate_limit_never_blocks_for_capacity() -> None:
    """Default-shaped limits scaled down: the id set stays within what the window holds."""
    lim = dict(
        max_orders_per_min_node=600,
        duplicate_id_window_s=60.0,
        max_tracked_order_ids=1200,
    )
    g, clock = guard(**lim)
    assert Limits.off(**lim).ids_in_window() == 1200  # 600 per started minute of 60.1 s
    step = NS_PER_S // 10  # 10 orders/s = the per-minute limit, for a simulated day
    for i in range(24 * 60 * 600 // 60):  # 24 h at 600/min, sampled: every 60th minute's worth
        clock.advance(step)
        d = g.check(order(f"o{i}"))
        assert d.accepted, (i, d)
        g.on_cancel(f"o{i}")
    assert len(g._ids) <= 600 * (1 + 2 / BUCKETS) + 4
    assert g.blocked.get(R.ORDER_ID_CAPACITY, 0) == 0


def test_session_scope_blocks_for_capacity_until_a_new_session() -> None:
    g, _ = guard(max_tracked_order_ids=2)
    assert g.check(order("a")).accepted and g.check(order("b")).accepted
    d = g.check(order("c"))
    assert d.reason is R.ORDER_ID_CAPACITY and "within the duplicate scope" in d.detail
    g.on_cancel("a")
    g.on_cancel("b")
    assert g.start_session("ops") == 2
    assert g.check(order("c")).accepted
    assert g.check(order("a")).accepted, "a new session is a new scope"
    assert g.check(order("a")).reason is R.DUPLICATE_ORDER_ID


def test_the_session_start_is_recorded() -> None:
    g, _ = guard()
    g.check(order("a"))
    g.on_cancel("a")
    g.start_session("ops")
    g.recorder.flush()
    assert any(b'"kind":"session"' in line and b'"forgotten_order_ids":1' in line
               for line in g.recorder.lines)  # fmt: skip
    with pytest.raises(ValueError, match="actor"):
        g.start_session("")


def test_a_capacity_below_what_the_rates_allow_in_the_window_is_a_limits_error() -> None:
    with pytest.raises(LimitsError, match=r"max_tracked_order_ids: must be >= 14430000"):
        Limits(max_tracked_order_ids=5_000_000)
    assert Limits().ids_in_window() == 14_430_000  # 10,000/min for a day and 2 buckets
    assert Limits(duplicate_id_window_s=3600.0).ids_in_window() == 610_000
    assert ID_BUCKETS == BUCKETS
    assert Limits(duplicate_id_window_s=None, max_tracked_order_ids=1).ids_in_window() is None


@pytest.mark.parametrize("window", [10.0, None])
def test_the_id_of_an_order_still_working_is_never_accepted_again(window: float | None) -> None:
    """A GTC order outlives its id's scope (the window, or the session a new one replaces):
    its id stays taken while it works, else a new order would take its place in the ledger
    and leave its working quantity behind for good. Once it ends, the scope applies."""
    g, clock = guard(duplicate_id_window_s=window)
    assert g.check(order("gtc")).accepted
    for i in range(3):  # three scopes later, with other orders coming and going
        clock.advance(11 * NS_PER_S)
        if window is None:
            g.start_session("ops")
        g.on_price("IBM", 100.0)
        assert g.check(order(f"day{i}")).accepted
        g.on_cancel(f"day{i}")
        assert g.check(order("gtc")).reason is R.DUPLICATE_ORDER_ID
    assert g.working_qty("IBM") == (1, 0)
    g.on_cancel("gtc")
    assert g.working_qty("IBM") == (0, 0)
    clock.advance(11 * NS_PER_S)
    if window is None:
        g.start_session("ops")
    g.on_price("IBM", 100.0)
    assert g.check(order("x")).accepted  # scopes roll on accepted orders
    clock.advance(11 * NS_PER_S)
    g.on_price("IBM", 100.0)
    assert g.check(order("gtc")).accepted  # ended and out of scope: free again


@pytest.mark.parametrize("window", [10.0, None])
def test_the_new_id_of_a_replace_still_pending_is_never_accepted_again(
    window: float | None,
) -> None:
    """A replace the venue has not answered carries its order on under the new id: past
    the scope (the window, or a new session) a new order under that id was accepted, the
    ack then put the replaced order in its place and one order's working quantity stayed
    on the book for good."""
    g, clock = guard(duplicate_id_window_s=window)
    assert g.check(Order("a", "rlp", "IBM", Side.BUY, 10, 100.0)).accepted
    assert g.check_replace("a", Order("b", "rlp", "IBM", Side.BUY, 20, 100.0)).accepted
    clock.advance(11 * NS_PER_S)
    if window is None:
        assert g.start_session("ops") == 0  # "a" works, "b" is pending: neither forgotten
    g.on_price("IBM", 100.0)
    d = g.check(Order("b", "rlp", "IBM", Side.BUY, 5, 100.0))
    assert d.reason is R.DUPLICATE_ORDER_ID
    g.on_replace_ack("b")
    assert g.working_qty("IBM") == (20, 0) and g.remaining("b") == 20
    g.on_cancel("b")
    assert g.working_qty("IBM") == (0, 0)


def test_a_new_session_forgets_nothing_when_the_scope_is_a_window() -> None:
    """With a window the session is not the scope: before, `start_session` forgot every id
    within the window and a duplicate within it was accepted."""
    g, _ = guard(duplicate_id_window_s=60.0)
    assert g.check(order("a")).accepted
    g.on_cancel("a")
    with pytest.raises(ValueError, match=r"start_session: .*duplicate_id_window_s 60s"):
        g.start_session("ops")
    assert g.check(order("a")).reason is R.DUPLICATE_ORDER_ID
