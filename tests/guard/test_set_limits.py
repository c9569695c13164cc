"""Guard.set_limits and limits.scaled: a ramp stage applies at once and keeps what was counted."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch import Fill, Guard, Limits, Order, RejectReason, Side, SimClock
from knightwatch.limits import RAMP_SCALED_KEYS, LimitsError, Override, scaled

BASE = Limits.off(
    max_orders_per_s_node=100,
    max_order_notional=1_000_000.0,
    max_gross_exposure=20_000_000.0,
    version="desk",
    strategy={"peg": Override(max_orders_per_s=40)},
)


def order(n: int, strategy: str = "mm") -> Order:
    return Order(f"o{n}", strategy, "AAPL", Side.BUY, 1, 100.0)


def guard() -> Guard:
    g = Guard(BASE, node="n1", clock=SimClock(1_000_000_000))
    g.on_price("AAPL", 100.0)
    g.arm("test")
    return g


def test_a_tighter_limit_counts_the_orders_already_in_the_window() -> None:
    g = guard()
    assert all(g.check(order(i)).accepted for i in range(8))
    g.set_limits(scaled(BASE, 0.1), actor="ramp:r1")
    assert g.limits.version == "desk@10%" and g.limits.max_orders_per_s_node == 10
    assert [g.check(order(100 + i)).accepted for i in range(3)] == [True, True, False]
    assert g.blocked[RejectReason.RATE_NODE] == 1
    g.set_limits(BASE, actor="ramp:r1")
    assert g.check(order(200)).accepted


def test_the_change_is_recorded_with_both_versions_and_the_actor() -> None:
    g = guard()
    g.set_limits(scaled(BASE, 0.5), actor="ramp:r1")
    g.recorder.flush()
    last = g.recorder.lines[-2]  # the last record (a seal follows it)
    assert b'"limits_set"' in last and b'"desk@50%"' in last and b'"ramp:r1"' in last


def test_the_lease_timeout_cannot_change_and_only_limits_are_taken() -> None:
    g = guard()
    with pytest.raises(ValueError, match="lease_timeout_s must stay None"):
        g.set_limits(Limits(lease_timeout_s=1.0))
    with pytest.raises(TypeError, match="limits must be Limits"):
        g.set_limits({"max_order_qty": 1})  # type: ignore[arg-type]


def test_scaled_validates_the_fraction() -> None:
    with pytest.raises(LimitsError, match=r"fraction: must be in \(0, 1\]"):
        scaled(BASE, 0.0)
    assert scaled(BASE, 1.0) is BASE


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=0.001, max_value=1.0))
def test_scaled_never_loosens_and_never_switches_a_rule_off(fraction: float) -> None:
    small = scaled(BASE, fraction)
    for key in RAMP_SCALED_KEYS:
        before, after = getattr(BASE, key), getattr(small, key)
        if before is None:
            assert after is None
        else:
            assert after is not None and 0 < after <= before
    peg = small.strategy["peg"].max_orders_per_s
    assert peg is not None and 1 <= peg <= 40


@pytest.mark.parametrize(("before", "after"), [(10, 3), (3, 10)])
def test_the_execution_throttle_follows_the_limit_in_force(before: int, after: int) -> None:
    """A (strategy, symbol, side) that already traded counts its executions against the
    throttle set since (a ramp stage scales it), exactly as a Guard started with it does."""
    clock = SimClock(10**12)

    def traded(limit: int) -> Guard:
        g = Guard(Limits.off(max_executions_per_window=limit, execution_window_s=1.0),
                  node="n1", clock=clock)  # fmt: skip
        g.arm("t")
        g.on_price("IBM", 100.0)
        assert g.check(Order("a", "s", "IBM", Side.BUY, 1000, 100.0))
        return g

    changed, fresh = traded(before), traded(after)
    changed.on_fill(Fill("a", "IBM", Side.BUY, 1, 100.0))
    changed.set_limits(Limits.off(max_executions_per_window=after, execution_window_s=1.0))
    fresh.on_fill(Fill("a", "IBM", Side.BUY, 1, 100.0))
    for n in range(2, 12):
        changed.on_fill(Fill("a", "IBM", Side.BUY, 1, 100.0))
        fresh.on_fill(Fill("a", "IBM", Side.BUY, 1, 100.0))
        assert bool(changed.halts()) == bool(fresh.halts()) == (n > after), n


@pytest.mark.parametrize("wider", [3600.0, None])
def test_a_wider_duplicate_scope_holds_the_ids_already_remembered(wider: float | None) -> None:
    clock = SimClock(10**12)
    g = Guard(Limits.off(duplicate_id_window_s=10.0), node="n1", clock=clock)
    g.arm("t")
    g.on_price("IBM", 100.0)
    assert g.check(Order("x", "s", "IBM", Side.BUY, 1, 100.0))
    g.on_cancel("x")  # ended: only its scope holds its id now
    g.set_limits(Limits.off(duplicate_id_window_s=wider))
    clock.advance(20 * 10**9)  # past the old scope, inside the new one
    g.on_price("IBM", 100.0)
    d = g.check(Order("x", "s", "IBM", Side.BUY, 1, 100.0))
    assert d.reason is RejectReason.DUPLICATE_ORDER_ID
    g.set_limits(Limits.off(duplicate_id_window_s=5.0))  # narrower: forgotten once past it
    clock.advance(6 * 10**9)
    assert g.check(Order("y", "s", "IBM", Side.BUY, 1, 100.0))
    clock.advance(6 * 10**9)
    assert g.check(Order("x", "s", "IBM", Side.BUY, 1, 100.0))


def test_a_tighter_max_loss_halts_a_loss_already_beyond_it_at_once() -> None:
    """Before, the tighter stop waited for the next fill or price: orders went out under
    it with the loss already beyond it."""
    g = Guard(Limits.off(max_loss=10_000.0), node="n1", clock=SimClock(10**12))
    g.on_price("IBM", 100.0)
    g.arm("t")
    assert g.check(Order("a", "s", "IBM", Side.BUY, 100, 100.0))
    g.on_fill(Fill("a", "IBM", Side.BUY, 100, 100.0))
    g.on_price("IBM", 90.0)  # a loss of 1,000: within 10,000
    assert not g.halts()
    g.set_limits(Limits.off(max_loss=500.0), actor="risk")
    d = g.check(Order("b", "s", "IBM", Side.BUY, 1, 90.0))
    assert not d.accepted and d.reason is RejectReason.LOSS_LIMIT


def test_a_tighter_parent_multiple_holds_the_parents_already_registered() -> None:
    g = Guard(Limits.off(max_parent_qty_multiple=2.0), node="n1", clock=SimClock(10**12))
    g.on_price("IBM", 100.0)
    g.arm("t")
    g.register_parent("P", 100)
    assert g.check(Order("c1", "s", "IBM", Side.BUY, 50, 100.0, "P"))
    g.set_limits(Limits.off(max_parent_qty_multiple=1.0), actor="risk")
    d = g.check(Order("c2", "s", "IBM", Side.BUY, 100, 100.0, "P"))
    assert d.reason is RejectReason.PARENT_QTY_EXCEEDED, d
    assert g.check(Order("c3", "s", "IBM", Side.BUY, 50, 100.0, "P"))  # exactly the parent
    g.set_limits(Limits.off(max_parent_qty_multiple=None), actor="risk")
    assert g.check(Order("c4", "s", "IBM", Side.BUY, 100, 100.0, "P"))


def test_ids_of_the_session_scope_age_out_of_a_window_set_since() -> None:
    """Under a window no session ends (`start_session` refuses), so the ids the session
    scope remembered are held for the new window from the change, then forgotten: before,
    they stayed taken for good."""
    clock = SimClock(10**12)
    g = Guard(Limits.off(duplicate_id_window_s=None), node="n1", clock=clock)
    g.arm("t")
    g.on_price("IBM", 100.0)
    assert g.check(Order("x", "s", "IBM", Side.BUY, 1, 100.0))
    g.on_cancel("x")
    g.set_limits(Limits.off(duplicate_id_window_s=10.0))
    clock.advance(9 * 10**9)  # within the new window
    g.on_price("IBM", 100.0)
    d = g.check(Order("x", "s", "IBM", Side.BUY, 1, 100.0))
    assert d.reason is RejectReason.DUPLICATE_ORDER_ID
    clock.advance(2 * 10**9)  # past it
    g.on_price("IBM", 100.0)
    assert g.check(Order("x", "s", "IBM", Side.BUY, 1, 100.0))
