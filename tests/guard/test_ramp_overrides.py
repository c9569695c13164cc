"""A resume ramp's stage cuts the rates of strategies and symbols with their own rate too.

An override's rates (`[strategy.X] max_orders_per_s`) are the fleet's per-strategy and
per-symbol rates under a short name; `scaled` left them out, so at the 10% stage a
strategy with its own rate sent its full rate while every other one was cut to 10%
(docs/runbook.md: "the rate, notional and exposure limits ... are cut to 10%").
"""

from __future__ import annotations

import pytest

from knightwatch.clock import SimClock
from knightwatch.decision import RejectReason as R
from knightwatch.guard import Guard
from knightwatch.limits import Limits, Override, scaled
from knightwatch.order import Order, Side

DESK = Limits.off(
    max_orders_per_s_strategy=200,
    max_orders_per_min_strategy=5_000,
    max_orders_per_s_symbol=500,
    max_orders_per_min_symbol=1_000,
    version="desk",
    strategy={"hft": Override(max_orders_per_s=100, max_orders_per_min=2_000)},
    symbol={"IBM": Override(max_orders_per_s=40, max_orders_per_min=600)},
)


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_a_ramp_stage_scales_the_rates_overrides_set(fraction: float) -> None:
    stage = scaled(DESK, fraction)
    for section, name in (("strategy", "hft"), ("symbol", "IBM")):
        before = getattr(DESK, section)[name]
        after = getattr(stage, section)[name]
        for key in ("max_orders_per_s", "max_orders_per_min"):
            assert getattr(after, key) == int(getattr(before, key) * fraction), (name, key)


@pytest.mark.parametrize(("strategy", "symbol", "per_s"), [("hft", "AAPL", 10), ("mm", "IBM", 4)])
def test_at_the_ten_percent_stage_an_overridden_rate_is_cut_to_ten_percent(
    strategy: str, symbol: str, per_s: int
) -> None:
    g = Guard(scaled(DESK, 0.1), node="n1", clock=SimClock(10**12))
    g.on_price(symbol, 100.0)
    g.arm("test")
    sent = [
        g.check(Order(f"o{i}", strategy, symbol, Side.BUY, 1, 100.0)).accepted
        for i in range(per_s + 1)
    ]
    assert sent == [True] * per_s + [False]
    assert set(g.blocked) <= {R.RATE_STRATEGY, R.RATE_SYMBOL}
