"""A restarted node takes back the order ids it accepted before (`Guard.remember_order_ids`).

The ids come from its flight recorder (`audit.read.accepted_ids`, wired in by
`control.serve`, whose tests restart a real node); here the Guard's side: each id is
refused for the rest of its window, as before the restart, and then forgotten.
"""

from __future__ import annotations

import pytest

from knightwatch.clock import NS_PER_S, SimClock
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard
from knightwatch.guard.orderids import BUCKETS, OrderIds
from knightwatch.limits import Limits
from knightwatch.order import Order, Side

WINDOW_S = 3600
BOOT = 600 * NS_PER_S  # the host booted ten minutes ago: monotonic time is small


def _guard(clock: SimClock, **limits: object) -> Guard:
    g = Guard(Limits.off(duplicate_id_window_s=float(WINDOW_S), **limits), clock=clock)
    return g


def _arm(g: Guard) -> None:
    g.arm("test")
    g.on_price("IBM", 100.0)


def _order(oid: str) -> Order:
    return Order(oid, "s1", "IBM", Side.BUY, 10, 100.0, None)


def test_an_id_accepted_before_the_restart_is_refused_for_the_rest_of_its_window() -> None:
    """Accepted 30 minutes ago by the previous process, on a host booted 10 minutes ago
    (its time on this process's monotonic clock is before 0): refused for 30 more minutes,
    then forgotten, as it would have been without the restart."""
    clock = SimClock(BOOT)
    g = _guard(clock)
    assert g.remember_order_ids(["X-1", "X-2"], [BOOT - 1800 * NS_PER_S, BOOT - 60 * NS_PER_S]) == 2
    _arm(g)
    for oid in ("X-1", "X-2"):
        assert g.check(_order(oid)).reason is RejectReason.DUPLICATE_ORDER_ID
    assert g.check(_order("X-3")).accepted
    clock.advance(1800 * NS_PER_S + 2 * WINDOW_S * NS_PER_S // BUCKETS)
    assert g.check(_order("X-1")).accepted  # its window is over
    assert g.check(_order("X-2")).reason is RejectReason.DUPLICATE_ORDER_ID


def test_ids_beyond_the_capacity_block_for_capacity_as_before_the_restart() -> None:
    clock = SimClock(BOOT)
    g = _guard(clock, max_tracked_order_ids=2)
    g.remember_order_ids(["C-1", "C-2", "C-3"], [BOOT - 3, BOOT - 2, BOOT - 1])
    _arm(g)
    assert g.check(_order("C-4")).reason is RejectReason.ORDER_ID_CAPACITY
    assert g.check(_order("C-1")).reason is RejectReason.DUPLICATE_ORDER_ID


def test_times_out_of_order_or_in_the_future_never_shorten_a_window() -> None:
    """A wall clock stepped back between two records, or after the restart: each id is
    held at least as long as its time says."""
    clock = SimClock(BOOT)
    g = _guard(clock)
    g.remember_order_ids(["F-1", "F-2"], [BOOT + 600 * NS_PER_S, BOOT - 600 * NS_PER_S])
    _arm(g)
    clock.advance((WINDOW_S - 1) * NS_PER_S)
    for oid in ("F-1", "F-2"):
        assert g.check(_order(oid)).reason is RejectReason.DUPLICATE_ORDER_ID


def test_ids_are_taken_back_only_before_arming() -> None:
    g = _guard(SimClock(BOOT))
    _arm(g)
    with pytest.raises(ValueError, match="before the Guard is armed"):
        g.remember_order_ids(["Z"], [BOOT])


def test_ids_added_before_time_zero_expire() -> None:
    """The id set itself: ids added at times before 0 leave after their window, as others."""
    window = 1_000_000
    ids = OrderIds(window)
    ids.add("old", -3 * window // 2)
    ids.add("mid", -window // 2)
    assert ids.recent("mid", 0)
    assert not ids.recent("old", 0)
    assert not ids.recent("mid", window)
    assert len(ids) == 0
