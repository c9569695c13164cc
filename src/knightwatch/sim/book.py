"""A limit order book whose depth ladder reproduces the square-root impact law.

Depth grows linearly away from the touch: the level k ticks behind the
original quote holds ``d1 * (k + 1)`` shares, with
``d1 = 2 * adv * tick**2 / (impact_y * sigma * price)**2``. Eating Q shares
then moves the quote by ``impact_y * sigma * price * sqrt(Q / adv)``, the law
the replay's calibration is written in (docs/replay.md, Sources and
calibration), while every
share still fills at a whole-tick price on a real ladder level.

The book is kept as one signed number, ``net``: shares absorbed from the ask
ladder (positive) or the bid ladder (negative). Market makers requote the
other side a spread away, so a buyer pushes both quotes up and a seller walks
them back down: a round trip costs exactly the spread plus the ladder.

Prices stay positive: a seller walks the bid down at most to one tick, and
every share beyond that fills at one tick (the ladder's depth at the floor is
unbounded). Without the floor a sell runaway in a low-priced stock walked the
quote through zero: the unguarded replay booked sales at negative prices as a
profit, and the guarded one ended in a traceback building a child at 0.0.

Resilience: while a symbol is traded its displacement stays (that is what the
square-root law already averages over); once trading stops it relaxes, with
time constant ``resilience_s``, to ``phi`` of the displacement it had, the
part of impact that is permanent (Farmer et al. 2013; phi = 2/3). "Stops"
means a quiet period with no trade, so a stock traded every few hundred
milliseconds by a runaway loop does not relax between its children.
"""

from __future__ import annotations

import math

from knightwatch.sim.universe import SymbolSpec


class OrderBook:
    __slots__ = (
        "anchor",
        "ask0",
        "bid0",
        "d1",
        "floor",
        "mid0",
        "name",
        "net",
        "peak_ticks",
        "phi",
        "resilience_s",
        "spread_ticks",
        "tick",
        "traded_ns",
        "volume",
    )

    def __init__(
        self,
        spec: SymbolSpec,
        *,
        tick: float,
        impact_y: float,
        phi: float,
        resilience_s: float,
    ) -> None:
        self.name = spec.name
        self.tick = tick
        self.spread_ticks = max(1, round(spec.spread / tick))
        self.bid0 = round(spec.price / tick)
        self.ask0 = self.bid0 + self.spread_ticks
        self.mid0 = (self.bid0 + self.ask0) / 2 * tick
        self.floor = max(0, self.bid0 - 1)
        """How many ticks the quote can fall: the bid stops at one tick."""
        self.d1 = 2.0 * spec.adv * tick * tick / (impact_y * spec.sigma * spec.price) ** 2
        self.phi = phi
        self.resilience_s = resilience_s
        self.net = 0
        self.anchor = 0
        self.peak_ticks = 0
        self.traded_ns = -1
        self.volume = 0

    # ------------------------------------------------------------------ ladder

    def level(self, y: int) -> int:
        """Ticks behind the original touch of the y-th absorbed share (y >= 0)."""
        d1 = self.d1
        k = int((math.sqrt(1.0 + 8.0 * y / d1) - 1.0) / 2.0)
        while d1 * (k + 1) * (k + 2) / 2 <= y:
            k += 1
        while k > 0 and d1 * k * (k + 1) / 2 > y:
            k -= 1
        return k

    def _sum_levels(self, a: int, b: int) -> int:
        """Sum of level(y) for a <= y < b, level by level (a batch crosses few levels)."""
        if b <= a:
            return 0
        d1 = self.d1
        k = self.level(a)
        total = 0
        while a < b:
            end = min(b, math.ceil(d1 * (k + 1) * (k + 2) / 2))
            if end > a:
                total += k * (end - a)
                a = end
            k += 1
        return total

    def _sum_floored(self, a: int, b: int) -> int:
        """Sum of min(level(y), floor) for a <= y < b: the bid ladder stops at one tick."""
        if b <= a:
            return 0
        cap = self.floor
        at_floor = math.ceil(self.d1 * cap * (cap + 1) / 2)  # first y with level(y) >= floor
        total = self._sum_levels(a, min(b, at_floor))
        return total + cap * max(0, b - max(a, at_floor))

    def _sum_disp(self, a: int, b: int) -> int:
        """Sum over states a <= x < b of the quote displacement in ticks."""
        total = 0
        if b > 0:
            total += self._sum_levels(max(a, 0), b)
        if a < 0:
            total -= self._sum_floored(-min(b, 0) + 1, -a + 1)
        return total

    def disp(self, x: int) -> int:
        return self.level(x) if x >= 0 else -min(self.level(-x), self.floor)

    # ------------------------------------------------------------------ trading

    def quote(self, is_buy: bool, qty: int, net: int) -> float:
        """Notional of a marketable order of `qty` shares from book state `net` (no change)."""
        if is_buy:
            ticks = qty * self.ask0 + self._sum_disp(net, net + qty)
        else:
            ticks = qty * self.bid0 + self._sum_disp(net - qty, net)
        return ticks * self.tick

    def take(self, is_buy: bool, qty: int, now_ns: int) -> float:
        """Execute a marketable order of `qty` shares against the ladder; returns its notional.

        The ladder is deep enough for any order (it is the latent liquidity of
        the whole market), so marketable orders always fill in full.
        """
        notional = self.quote(is_buy, qty, self.net)
        n = self.net + qty if is_buy else self.net - qty
        self.net = self.anchor = n
        self.traded_ns = now_ns
        self.volume += qty
        d = abs(self.disp(n))
        if d > self.peak_ticks:
            self.peak_ticks = d
        return notional

    def mid(self) -> float:
        return self.mid0 + self.disp(self.net) * self.tick

    def moved_pct(self) -> float:
        """Largest move of the quote from its opening level, as a fraction."""
        return self.peak_ticks * self.tick / self.mid0

    # ------------------------------------------------------------------ resilience

    def permanent_net(self) -> int:
        """The absorbed volume the book keeps once fully relaxed (phi of the displacement)."""
        return round(self.phi * self.phi * self.anchor)

    def relax(self, dt_s: float) -> None:
        """Refill depth for `dt_s` seconds of no trading in this symbol."""
        target = self.permanent_net()
        if self.net == target:
            return
        gap = (self.net - target) * math.exp(-dt_s / self.resilience_s)
        self.net = target + math.trunc(gap)

    def settled_mid(self) -> float:
        """The quote after full relaxation: what the position is worth once the burst is over."""
        return self.mid0 + self.disp(self.permanent_net()) * self.tick

    def touch(self, is_buy: bool) -> float:
        """The price a marketable child pegged to the far touch carries: best ask to buy."""
        base = self.ask0 if is_buy else self.bid0
        return (base + self.disp(self.net)) * self.tick
