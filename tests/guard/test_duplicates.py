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
    assert g.start_session("ops") == 2
    assert g.check(order("c")).accepted
    assert g.check(order("a")).accepted, "a new session is a new scope"
    assert g.check(order("a")).reason is R.DUPLICATE_ORDER_ID


def test_the_session_start_is_recorded() -> None:
    g, _ = guard()
    g.check(order("a"))
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
