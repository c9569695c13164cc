"""The Guard's ledger: positions, working orders, parents and the fleet-level totals.

The Guard keeps fleet-level totals (gross, worst-case net long and short,
unrealized P&L) as sums of per-symbol contributions; a symbol book knows its
own contribution so a change in one symbol costs O(1), not a pass over all.
The ledger is state only: it applies fills, cancels and prices and says what
changed; every decision (block, halt) stays in the Guard's one check path.
"""

from __future__ import annotations

from knightwatch.order import Fill, Order, Side

_BUY = Side.BUY


class SymbolBook:
    """One symbol: position at average cost, working quantity per side, reference and mark.

    `gross_c`, `long_c`, `short_c` and `unreal_c` are this symbol's current
    contributions to the ledger's totals (so a change swaps one contribution).
    `wbuy` and `wsell` are the quantities of accepted orders still working.
    """

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

    def remove_working(self, is_buy: bool, qty: int) -> None:
        if is_buy:
            self.wbuy -= qty
        else:
            self.wsell -= qty

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


class Working:
    """An accepted order not yet fully filled or cancelled."""

    __slots__ = ("parent_id", "remaining", "side", "strategy", "symbol")

    def __init__(self, o: Order) -> None:
        self.strategy = o.strategy
        self.symbol = o.symbol
        self.side = o.side
        self.remaining = o.qty
        self.parent_id = o.parent_id


class Parent:
    """Quantity committed to a parent's children: filled plus still working."""

    __slots__ = ("children", "committed", "qty")

    def __init__(self, qty: int) -> None:
        self.qty = qty
        self.committed = 0
        self.children = 0


class Ledger:
    """Everything the Guard counts: books per symbol, working orders, parents, totals.

    `fills` and `cancels` count events since the cancel-to-fill ratio last
    latched (the Guard resets them when it halts on that ratio).
    """

    __slots__ = (
        "books",
        "cancels",
        "fills",
        "gross",
        "net_long",
        "net_short",
        "parents",
        "realized",
        "unrealized",
        "working",
    )

    def __init__(self) -> None:
        self.books: dict[str, SymbolBook] = {}
        self.working: dict[str, Working] = {}
        self.parents: dict[str, Parent] = {}
        self.gross = 0.0
        self.net_long = 0.0
        self.net_short = 0.0
        self.realized = 0.0
        self.unrealized = 0.0
        self.fills = 0
        self.cancels = 0

    def book(self, symbol: str) -> SymbolBook:
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = SymbolBook()
        return book

    def refresh(self, book: SymbolBook) -> None:
        """Swap this symbol's old contribution to the totals for its new one."""
        g, lc, sc, u = book.contributions()
        self.gross += g - book.gross_c
        self.net_long += lc - book.long_c
        self.net_short += sc - book.short_c
        self.unrealized += u - book.unreal_c
        book.gross_c, book.long_c, book.short_c, book.unreal_c = g, lc, sc, u

    def fill(self, fill: Fill) -> tuple[Working | None, str]:
        """Apply an execution; returns the working order it belonged to and any mismatch.

        The whole fill moves the position (the venue's report is the truth); a
        mismatch says how it disagrees with the working order it names.
        """
        book = self.book(fill.symbol)
        w = self.working.get(fill.order_id)
        mismatch = f"fill for order {fill.order_id} matches no working order"
        if w is not None:
            mismatch = ""
            if fill.qty > w.remaining:
                mismatch = (
                    f"fill of {fill.qty} for order {fill.order_id} is more than the "
                    f"{w.remaining} it had left (an overfill)"
                )
            took = min(fill.qty, w.remaining)
            w.remaining -= took
            wbook = self.books[w.symbol]
            wbook.remove_working(w.side is _BUY, took)
            if w.remaining == 0:
                del self.working[fill.order_id]
            if wbook is not book:
                self.refresh(wbook)
            if w.symbol != fill.symbol or w.side is not fill.side:
                mismatch = (mismatch + "; " if mismatch else "") + (
                    f"fill for order {fill.order_id} reports {fill.side.value} {fill.symbol}; "
                    f"the order was {w.side.value} {w.symbol}"
                )
        self.realized += book.fill(fill.side is _BUY, fill.qty, fill.price)
        self.fills += 1
        self.refresh(book)
        return w, mismatch

    def cancel(self, order_id: str) -> Working | None:
        """A confirmed cancel: free the order's working quantity and its parent's commitment."""
        w = self.working.pop(order_id, None)
        if w is not None:
            self.cancels += 1
            book = self.books[w.symbol]
            book.remove_working(w.side is _BUY, w.remaining)
            if w.parent_id is not None and (p := self.parents.get(w.parent_id)) is not None:
                p.committed -= w.remaining
            self.refresh(book)
        return w

    def price(self, symbol: str, price: float, now_ns: int) -> SymbolBook:
        """A new reference price: it is also the mark for exposure and unrealized P&L."""
        book = self.book(symbol)
        book.ref = book.mark = price
        book.ref_ns = now_ns
        self.refresh(book)
        return book

    def pnl(self) -> float:
        return self.realized + self.unrealized
