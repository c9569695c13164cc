"""The market: one `OrderBook` per symbol, and the `Venue` that executes child orders on it.

Child orders are marketable (they take the touch, as a pegged order that
crosses does), so an accepted child fills at once. The venue takes a batch of
identical children as one call: the ladder sums per share, so n children of
q shares cost exactly what they cost one by one; the guarded path sends them
one at a time because the Guard must decide on each.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
import numpy.typing as npt

from knightwatch.sim.book import OrderBook
from knightwatch.sim.universe import SymbolSpec


class MarketParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the market answers aggressive flow (the *history* calibration, docs/replay.md)."""

    tick: float = 0.01
    impact_y: float = 2.0
    permanent_fraction: float = 2.0 / 3.0
    resilience_s: float = 180.0
    quiet_s: float = 5.0


class Market:
    """All books, addressed by symbol index (the hot path) or by name (the edges)."""

    def __init__(self, symbols: tuple[SymbolSpec, ...], params: MarketParams) -> None:
        self.symbols = symbols
        self.params = params
        self.books = [
            OrderBook(
                s,
                tick=params.tick,
                impact_y=params.impact_y,
                phi=params.permanent_fraction,
                resilience_s=params.resilience_s,
            )
            for s in symbols
        ]
        self.index = {s.name: i for i, s in enumerate(symbols)}
        self.mid0 = np.array([b.mid0 for b in self.books])

    def relax_idle(self, now_ns: int, dt_s: float, quiet_ns: int) -> None:
        """Depth refills for `dt_s` in every symbol not traded within the last `quiet_ns`."""
        for b in self.books:
            if now_ns - b.traded_ns >= quiet_ns and b.net != b.permanent_net():
                b.relax(dt_s)

    def mids(self) -> npt.NDArray[np.float64]:
        return np.array([b.mid() for b in self.books])

    def moved_over(self, fraction: float) -> int:
        return sum(1 for b in self.books if b.moved_pct() > fraction)


class Venue:
    """Executes marketable children; keeps the traders' signed flow per symbol and their
    cash, so every share and dollar can be traced to an account."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.executions = 0
        self.shares = 0
        self.signed_qty = [0] * len(market.books)
        self.cash = 0.0

    def execute(self, symbol: int, is_buy: bool, qty: int, count: int, now_ns: int) -> float:
        """Fill `count` children of `qty` shares; returns their total notional."""
        total = count * qty
        notional = self.market.books[symbol].take(is_buy, total, now_ns)
        self.executions += count
        self.shares += total
        if is_buy:
            self.signed_qty[symbol] += total
            self.cash -= notional
        else:
            self.signed_qty[symbol] -= total
            self.cash += notional
        return notional


def impact_unit(spec: SymbolSpec, qty: float) -> float:
    """sigma * sqrt(Q / adv): the dimensionless size of a metaorder in this stock."""
    return spec.sigma * math.sqrt(abs(qty) / spec.adv)
