"""The block exit: a long sold to one buyer fetches at worst nothing, never a negative
price; a short's buy-back is not capped (a buyer of last resort can charge any premium)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.sim.exit import exit_value
from knightwatch.sim.scenario import Exit
from knightwatch.sim.universe import SymbolSpec
from knightwatch.sim.venue import Market, MarketParams


def _market(adv: float, sigma: float) -> Market:
    spec = SymbolSpec("THIN", "t", 50.0, adv, sigma, 0.02, 0.0)
    return Market((spec,), MarketParams())


@settings(max_examples=60, deadline=None)
@given(
    adv=st.floats(1_000, 5_000_000),
    sigma=st.floats(0.005, 0.5),
    qty=st.integers(1, 2_000_000),
    y=st.floats(0.0, 20.0),
)
def test_a_long_sold_in_a_block_fetches_between_nothing_and_its_price(
    adv: float, sigma: float, qty: int, y: float
) -> None:
    """Uncapped, `discount_y * sigma * sqrt(Q/adv)` reached 3.6 in a thin market (adv 10,000,
    sigma 0.1, the default discount_y): the long sold at a negative price and the replay's
    loss ($475M) exceeded the cash the runaway spent buying."""
    market = _market(adv, sigma)
    mid = market.books[0].settled_mid()
    value = exit_value(market, [qty], Exit("block", y))
    assert 0.0 <= value <= qty * mid + 1e-6


def test_a_thin_markets_long_is_worth_nothing_not_less() -> None:
    assert exit_value(_market(10_000, 0.1), [1_000_000], Exit("block", 3.2)) == 0.0


@pytest.mark.parametrize("qty", [-1_000, -1_000_000])
def test_a_shorts_buy_back_costs_at_least_its_price(qty: int) -> None:
    market = _market(10_000, 0.1)
    mid = market.books[0].settled_mid()
    assert exit_value(market, [qty], Exit("block", 3.2)) <= qty * mid
