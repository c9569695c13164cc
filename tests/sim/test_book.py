"""The order book: whole-tick fills, exact batching, square-root impact, resilience."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.sim.book import OrderBook
from knightwatch.sim.universe import SymbolSpec

SPEC = SymbolSpec("MID", "B", 18.5, 3_000_000, 0.028, 0.02, 11.0)


def book(y: float = 2.0) -> OrderBook:
    return OrderBook(SPEC, tick=0.01, impact_y=y, phi=2 / 3, resilience_s=60.0)


def test_round_trip_costs_exactly_the_spread() -> None:
    b = book()
    bought = b.take(True, 50_000, 0)
    sold = b.take(False, 50_000, 1)
    assert b.net == 0
    assert math.isclose(bought - sold, 50_000 * 0.02, rel_tol=1e-9)


def test_eating_q_moves_the_quote_by_the_square_root_law() -> None:
    b = book()
    q = 2_400_000
    b.take(True, q, 0)
    expected = 2.0 * SPEC.sigma * SPEC.price * math.sqrt(q / SPEC.adv)  # $0.93
    assert abs((b.mid() - b.mid0) - expected) <= 0.02
    assert 0.049 < b.moved_pct() < 0.052


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(-300_000, 300_000),
    n=st.integers(1, 300),
    buy=st.booleans(),
)
def test_a_batch_costs_what_its_children_cost_one_by_one(start: int, n: int, buy: bool) -> None:
    one, many = book(), book()
    one.net = many.net = start
    batch = one.take(buy, n * 100, 0)
    singles = sum(many.take(buy, 100, 0) for _ in range(n))
    assert one.net == many.net
    assert math.isclose(batch, singles, rel_tol=1e-12)


def test_every_share_fills_at_a_whole_tick() -> None:
    b = book()
    for _ in range(200):
        cents = b.take(True, 100, 0) / 0.01
        assert abs(cents - round(cents)) < 1e-6


def test_impact_relaxes_to_the_permanent_fraction_once_trading_stops() -> None:
    b = book()
    b.take(True, 1_000_000, 0)
    peak = b.mid() - b.mid0
    for _ in range(600):
        b.relax(1.0)
    assert b.net == b.permanent_net()
    assert math.isclose(b.mid() - b.mid0, 2 / 3 * peak, rel_tol=0.05)
    assert b.moved_pct() * b.mid0 >= peak - 1e-9  # the peak is remembered


PENNY = SymbolSpec("PNY", "C", 0.50, 2_000, 0.05, 0.01, 10.0)


def penny() -> OrderBook:
    return OrderBook(PENNY, tick=0.01, impact_y=2.0, phi=2 / 3, resilience_s=60.0)


def test_a_seller_walks_the_bid_down_to_one_tick_and_never_through_zero() -> None:
    b = penny()
    sold = b.take(False, 2_000_000, 0)  # 1,000x its daily volume: far past the floor
    assert math.isclose(b.touch(False), 0.01) and b.mid() > 0
    assert sold >= 2_000_000 * 0.01 - 1e-6  # every share at one tick or more
    assert b.moved_pct() < 1.0
    for _ in range(50):  # and a child at the floor is still a valid, positive price
        assert b.take(False, 100, 1) / 100 >= 0.01 - 1e-9
    bought = b.take(True, 2_005_000, 2)  # the round trip still costs the spread and ladder
    assert b.net == 0 and bought > sold


@settings(max_examples=60, deadline=None)
@given(start=st.integers(-400_000, 10_000), n=st.integers(1, 300), buy=st.booleans())
def test_near_the_floor_a_batch_costs_what_its_children_cost(start: int, n: int, buy: bool) -> None:
    one, many = penny(), penny()
    one.net = many.net = start
    batch = one.take(buy, n * 100, 0)
    singles = sum(many.take(buy, 100, 0) for _ in range(n))
    assert math.isclose(batch, singles, rel_tol=1e-12)
    assert batch > 0
