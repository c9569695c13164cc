"""Per-symbol position book: fills, working orders and the marks the Guard's totals need.

The Guard keeps fleet-level totals (gross, worst-case net long and short,
unrealized P&L) as sums of per-symbol contributions; a symbol book knows its
own contribution so a change in one symbol costs O(1), not a pass over all.
"""

from __future__ import annotations

from knightwatch.order import Side


class SymbolBook:
    __slots__ = (
        "avg",
        "gross_c",
        "long_c",
        "mark",
        "pos",
        "ref",
        "ref_ns",
        "short_c",
        "unreal_c",
        "wbuy",
        "wsell",
    )

    def __init__(self) -> None:
        self.pos = 0
        self.avg = 0.0
        self.wbuy = 0
        self.wsell = 0
        self.ref: float | None = None
        self.ref_ns = 0
        self.mark: float | None = None
        self.gross_c = 0.0
        self.long_c = 0.0
        self.short_c = 0.0
        self.unreal_c = 0.0

    def worst(self, is_buy: bool, qty: int) -> tuple[int, int]:
        """Position if every working buy (resp. sell) filled, with this order added."""
        if is_buy:
            return self.pos + self.wbuy + qty, self.pos - self.wsell
        return self.pos + self.wbuy, self.pos - self.wsell - qty

    def reduces(self, side: Side, qty: int) -> bool:
        """True if the order can only shrink the position, even with working orders filled."""
        if side is Side.BUY:
            return self.pos < 0 and self.pos + self.wbuy + qty <= 0
        return self.pos > 0 and self.pos - self.wsell - qty >= 0

    def fill(self, is_buy: bool, qty: int, price: float) -> float:
        """Apply an execution at average cost; returns the realized P&L it closes."""
        if self.mark is None:
            self.mark = price
        pos = self.pos
        signed = qty if is_buy else -qty
        realized = 0.0
        if pos == 0 or (pos > 0) == is_buy:
            self.avg = (self.avg * abs(pos) + price * qty) / (abs(pos) + qty)
        else:
            closing = min(qty, abs(pos))
            realized = closing * (price - self.avg) * (1 if pos > 0 else -1)
            if qty > abs(pos):
                self.avg = price
            elif qty == abs(pos):
                self.avg = 0.0
        self.pos = pos + signed
        return realized

    def contributions(self) -> tuple[float, float, float, float]:
        """(gross, worst net long, worst net short, unrealized) valued at the mark."""
        m = self.mark
        if m is None:
            return 0.0, 0.0, 0.0, 0.0
        long_q = self.pos + self.wbuy
        short_q = self.pos - self.wsell
        gross = max(abs(long_q), abs(short_q)) * m
        unreal = self.pos * (m - self.avg) if self.pos else 0.0
        return gross, long_q * m, short_q * m, unreal
