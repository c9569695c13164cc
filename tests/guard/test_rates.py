"""Rate windows: one deque per scope key answers both limits exactly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.clock import MINUTE_NS, NS_PER_S
from knightwatch.decision import RejectReason
from knightwatch.guard.rates import Window, windows

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
