"""Rate windows: one deque per scope key answers both limits exactly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.clock import MINUTE_NS, NS_PER_S, SimClock
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard
from knightwatch.guard.rates import Window, windows
from knightwatch.limits import Limits
from knightwatch.order import Order, Side

R = RejectReason.RATE_NODE


@settings(max_examples=300, deadline=None)
@given(
    per_s=st.integers(0, 6),
    per_min=st.integers(0, 12),
    gaps=st.lists(st.integers(0, NS_PER_S // 2), min_size=1, max_size=200),
)
def test_an_order_is_refused_exactly_when_a_limit_already_holds_its_count(
    per_s: int, per_min: int, gaps: list[int]
) -> None:
    """Model: every accepted timestamp kept; a limit L over span S refuses the next order
    iff L were accepted within the last S. The window must agree on every order."""
    w = Window(per_s, per_min, R, "node", "n1")
    accepted: list[int] = []
    now = 0
    for gap in gaps:
        now += gap * 13  # up to 6.5 s apart: both windows fill and drain
        in_s = sum(1 for t in accepted if now - t < NS_PER_S)
        in_min = sum(1 for t in accepted if now - t < MINUTE_NS)
        expect = (
            NS_PER_S
            if per_s and in_s >= per_s
            else MINUTE_NS
            if per_min and in_min >= per_min
            else 0
        )
        assert w.over(now) == expect
        if not expect:
            w.events.append(now)
            accepted.append(now)
    assert len(w.events) <= max(per_s, per_min)


@settings(max_examples=150, deadline=None)
@given(
    per_s=st.integers(1, 6),
    per_min=st.integers(1, 12),
    scope=st.sampled_from(["node", "strategy", "symbol"]),
    gaps=st.lists(st.integers(0, NS_PER_S // 2), min_size=1, max_size=120),
)
def test_the_guard_refuses_for_rate_exactly_when_the_model_does(
    per_s: int, per_min: int, scope: str, gaps: list[int]
) -> None:
    """Through the Guard, for each scope: it refuses, with the scope's code and the limit
    that was reached, exactly the orders the model refuses."""
    clock = SimClock(10**12)
    limits = Limits.off(
        **{f"max_orders_per_s_{scope}": per_s, f"max_orders_per_min_{scope}": per_min}
    )
    guard = Guard(limits, node="n1", clock=clock)
    guard.arm("test")
    guard.on_price("IBM", 100.0)
    code = {"node": RejectReason.RATE_NODE, "strategy": RejectReason.RATE_STRATEGY}.get(
        scope, RejectReason.RATE_SYMBOL
    )
    accepted: list[int] = []
    for i, gap in enumerate(gaps):
        clock.advance(gap * 13)
        now = clock.monotonic_ns()
        in_s = sum(1 for t in accepted if now - t < NS_PER_S)
        in_min = sum(1 for t in accepted if now - t < MINUTE_NS)
        d = guard.check(Order(f"o{i}", "rlp", "IBM", Side.BUY, 1, 100.0))
        if in_s >= per_s:
            assert d.reason is code and "1s" in d.detail, (i, d)
        elif in_min >= per_min:
            assert d.reason is code and "1min" in d.detail, (i, d)
        else:
            assert d.accepted, (i, d)
            accepted.append(now)
            guard.on_cancel(f"o{i}")


def test_the_detail_names_the_limit_that_was_reached() -> None:
    w = Window(2, 3, R, "strategy", "rlp")
    for t in (0, 1, 2):
        w.events.append(t)
    assert (
        w.detail(NS_PER_S) == "2 orders in the last 1s for strategy rlp = max_orders_per_s_strategy"
    )
    assert w.detail(MINUTE_NS) == (
        "3 orders in the last 1min for strategy rlp = max_orders_per_min_strategy"
    )


def test_a_scope_with_no_limit_has_no_window_and_one_limit_is_enough() -> None:
    assert windows(None, None, R, "node", "n1") == ()
    (only_min,) = windows(None, 5, R, "node", "n1")
    assert (only_min.per_s, only_min.per_min, only_min.events.maxlen) == (0, 5, 5)
