"""The Guard's ledger: positions, working orders, parents and the fleet-level totals.

Capacity decides whose an execution is (SEC 15c3-5 asks for credit limits per
customer and capital limits for the firm). A child that fills a registered
parent within the parent's quantity trades as agent: the fill is the
customer's and counts against that customer's account. A fill with no
registered parent, or beyond the parent's quantity, is the firm's own
(principal): it moves the node's position, exposure and P&L. A healthy agency
router therefore holds no principal position at all, and an overfilling loop
(Knight's 33 Account) shows up as principal exposure from its first overfill,
however much customer flow the node carries. Working orders are split the same
way when accepted: the part within the parent's uncommitted quantity is the
customer's, the rest the firm's.

The Guard keeps totals (gross, worst-case net long and short, unrealized P&L;
per account: gross and worst-case nets) as sums of per-symbol contributions; a
symbol book or customer line knows its own contribution, so a change in one
symbol costs O(1), not a pass over all. The ledger is state only: it applies
fills, cancels and prices and says what changed; every decision (block, halt)
stays in the Guard's one check path.

Quantities are integers counted in the symbol's lot (`lot_size`, 1 unless a
symbol override sets it): positions and working sums stay exact, and only
values (notional, exposure, P&L) multiply by the lot.
"""

from __future__ import annotations

from collections.abc import Callable

from knightwatch.order import Fill, Side

_BUY = Side.BUY

BOOKED_WINDOW = 20_000
"""Orders the ledger remembers after they end or move to a replace's id (children of registered
parents that filled or ended, orders replaced after a fill), at least (the last `BOOKED_WINDOW`
to fill, end or be replaced) and at most twice that: two generations of a dict,
the older dropped whole when the newer fills up (a plain dict write per fill)."""
EXECS_KEPT = 8
"""Executions remembered per order (`Working.execs`); beyond them, an order's totals (exact
for an order all the customer's or all the firm's, the common case)."""
_NONE: list[int] = []  # `Working.ecust` until its first execution (never appended to)


def customer_part(parent: Parent | None, qty: int) -> int:
    """The customer's part of `qty` more for a child of `parent`: what fits in the parent's
    uncommitted quantity; the rest (all of it without a parent) is the firm's own. The
    Guard's step 10 computes the same inline, on the order's path."""
    if parent is None:
        return 0
    free = parent.qty - parent.committed
    if free <= 0:
        return 0
    return qty if qty <= free else free


def reduces(held: SymbolBook | CustomerLine | None, side: Side, qty: int) -> bool:
    """True if `qty` more on `side` can only shrink `held`'s position, even with its working
    orders filled (a firm's symbol book or a customer's line; nothing held: it cannot)."""
    if held is None:
        return False
    if side is Side.BUY:
        return held.pos < 0 and held.pos + held.wbuy + qty <= 0
    return held.pos > 0 and held.pos - held.wsell - qty >= 0


class SymbolBook:
    """One symbol, principal: position at average cost, working quantity per side, mark.

    `gross_c`, `long_c`, `short_c` and `unreal_c` are this symbol's current
    contributions to the ledger's totals (so a change swaps one contribution).
    `wbuy` and `wsell` are the principal parts of accepted orders still working.
    `lines` are the customer accounts holding or working this symbol (re-marked
    with it).
    """

    __slots__ = (
        "avg",
        "gross_c",
        "lines",
        "long_c",
        "lot",
        "mark",
        "pos",
        "ref",
        "ref_ns",
        "short_c",
        "unreal_c",
        "wbuy",
        "wsell",
    )

    def __init__(self, lot: float = 1.0) -> None:
        self.lot = lot
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
        self.lines: list[CustomerLine] = []

    def worst(self, is_buy: bool, qty: int) -> tuple[int, int]:
        """Position if every working buy (resp. sell) filled, with this order added."""
        if is_buy:
            return self.pos + self.wbuy + qty, self.pos - self.wsell
        return self.pos + self.wbuy, self.pos - self.wsell - qty

    def remove_working(self, is_buy: bool, qty: int) -> None:
        if is_buy:
            self.wbuy -= qty
        else:
            self.wsell -= qty

    def gross_at(self, mark: float) -> float:
        """The gross this book holds now (position with working orders) valued at `mark`
        (lot included): what an order is compared with to tell whether it adds to gross,
        at the mark the order is checked at (`gross_c` is at the stored mark)."""
        return max(abs(self.pos + self.wbuy), abs(self.pos - self.wsell)) * mark

    def fill(self, is_buy: bool, qty: int, price: float) -> float:
        """Apply an execution at average cost; returns the realized P&L it closes."""
        if self.mark is None:
            self.mark = price
        pos = self.pos
        if pos and not self.avg:  # restored at no cost given, before any price: it costs this
            self.avg = price
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
        return realized * self.lot

    def contributions(self) -> tuple[float, float, float, float]:
        """(gross, worst net long, worst net short, unrealized) valued at the mark."""
        m = self.mark
        if m is None:
            return 0.0, 0.0, 0.0, 0.0
        m *= self.lot
        long_q = self.pos + self.wbuy
        short_q = self.pos - self.wsell
        gross = max(abs(long_q), abs(short_q)) * m
        unreal = self.pos * (m - self.avg * self.lot) if self.pos else 0.0
        return gross, long_q * m, short_q * m, unreal


class CustomerLine:
    """One customer account in one symbol: the customer's position and working quantity.

    `gross_c`, `long_c` and `short_c` are its contributions to the account's
    totals, valued at the symbol book's mark.
    """

    __slots__ = ("account", "book", "gross_c", "long_c", "pos", "short_c", "wbuy", "wsell")

    def __init__(self, account: CustomerAccount, book: SymbolBook) -> None:
        self.account = account
        self.book = book
        self.pos = 0
        self.wbuy = 0
        self.wsell = 0
        self.gross_c = 0.0
        self.long_c = 0.0
        self.short_c = 0.0

    def remove_working(self, is_buy: bool, qty: int) -> None:
        if is_buy:
            self.wbuy -= qty
        else:
            self.wsell -= qty

    def gross_at(self, mark: float) -> float:
        """As `SymbolBook.gross_at`, for the customer's line."""
        return max(abs(self.pos + self.wbuy), abs(self.pos - self.wsell)) * mark

    def refresh(self) -> None:
        """Swap this line's contribution to its account's totals for the current one."""
        m = self.book.mark
        if m is None:
            return
        m *= self.book.lot
        long_q = self.pos + self.wbuy
        short_q = self.pos - self.wsell
        g, lc, sc = max(abs(long_q), abs(short_q)) * m, long_q * m, short_q * m
        a = self.account
        a.gross += g - self.gross_c
        a.net_long += lc - self.long_c
        a.net_short += sc - self.short_c
        self.gross_c, self.long_c, self.short_c = g, lc, sc


class CustomerAccount:
    """A customer's totals across symbols: gross and worst-case net, with working orders."""

    __slots__ = ("gross", "lines", "name", "net_long", "net_short")

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: dict[str, CustomerLine] = {}
        self.gross = 0.0
        self.net_long = 0.0
        self.net_short = 0.0


class Parent:
    """A registered parent: whose it is, and how much of it its children took.

    `committed` is filled plus still working (what a new child is checked
    against), `filled` what its children executed and `cust_filled` the part of
    it booked as the customer's (a bust takes back what each execution was booked as),
    `cap` the most the children may total (the parent check). `line` caches the
    customer line of the last symbol its children traded. `side` is the customer's
    side when the registering caller knew it, `opposite` the side none of its children
    may take (None: not known, every side passes), kept so the check is one identity
    comparison.
    """

    __slots__ = (
        "account",
        "cap",
        "children",
        "committed",
        "cust_filled",
        "filled",
        "line",
        "opposite",
        "qty",
        "side",
    )

    def __init__(
        self, qty: int, account: CustomerAccount, cap: int, side: Side | None = None
    ) -> None:
        self.qty = qty
        self.account = account
        self.cap = cap
        self.side = side
        self.opposite: Side | None = (
            None if side is None else (Side.SELL if side is Side.BUY else Side.BUY)
        )
        self.committed = 0
        self.filled = 0
        self.cust_filled = 0
        self.children = 0
        self.line: CustomerLine | None = None


class Working:
    """An accepted order not yet fully filled or cancelled.

    `qty` is the order's total (a replace changes it), `filled` what executed of it,
    `remaining` what can still execute (the venue may restate it). `cust` is the
    part of `remaining` that is the customer's (counted on `line`); the rest is
    the firm's, counted on the symbol book. For a child of a registered parent,
    `cfilled` is the part of `filled` booked as the customer's and `execs` its first
    `EXECS_KEPT` executions, `ecust` the customer's part of each: what a bust or a
    correction takes back, in the capacity each was booked in (`Ledger.booked` keeps
    the order for a while after it ends).
    """

    __slots__ = (
        "cfilled",
        "cust",
        "ecust",
        "execs",
        "filled",
        "line",
        "parent",
        "parent_id",
        "price",
        "qty",
        "remaining",
        "replacing",
        "side",
        "strategy",
        "symbol",
    )

    def __init__(
        self,
        strategy: str,
        symbol: str,
        side: Side,
        qty: int,
        price: float | None,
        parent_id: str | None,
        parent: Parent | None,
        cust: int,
        line: CustomerLine | None,
    ) -> None:
        self.strategy = strategy
        self.symbol = symbol
        self.side = side
        self.qty = qty
        self.remaining = qty
        self.filled = 0
        self.price = price
        self.parent_id = parent_id
        self.parent = parent
        self.cust = cust
        self.line = line
        self.replacing: str | None = None
        """The id of a replace of this order the venue has not answered yet."""
        self.cfilled = 0
        self.execs: list[Fill] | None = None
        self.ecust: list[int] = _NONE


class Pending:
    """A replace the venue has not answered: the original's id and what it reserves.

    `reserved` is the increase of leaves held as working (on the order's side and in
    its parent) until the venue acknowledges (commit) or rejects (roll back); `cust`
    is the customer's part of it (within the parent's uncommitted quantity), the
    rest is the firm's.
    """

    __slots__ = ("cust", "orig_id", "price", "qty", "reserved", "working")

    def __init__(
        self,
        orig_id: str,
        working: Working,
        qty: int,
        price: float | None,
        reserved: int,
        cust: int,
    ) -> None:
        self.orig_id = orig_id
        self.working = working
        self.qty = qty
        self.price = price
        self.reserved = reserved
        self.cust = cust


def _match(w: Working, fill: Fill) -> int:
    """The index in `w.execs` of the execution `fill` takes back (same quantity and price;
    of several, the least the customer's: the firm's first), or -1."""
    at = -1
    ec = w.ecust
    for i, f in enumerate(w.execs or ()):
        if f.qty == fill.qty and f.price == fill.price and (at < 0 or ec[i] < ec[at]):
            at = i
    return at


def _unsure(w: Working, qty: int) -> bool:
    """Whether an execution of `qty` of `w` it does not remember (beyond `EXECS_KEPT`, or
    adopted) could be the one busted and have been booked otherwise: then a match in
    `w.execs` proves nothing, and the order's totals decide."""
    mixed = 0 < w.cfilled < w.filled
    return mixed and w.filled - sum(f.qty for f in w.execs or ()) >= qty


class Ledger:
    """Everything the Guard counts: books per symbol, working orders, parents, totals.

    `fills` and `cancels` count events since the cancel-to-fill ratio last
    latched (the Guard resets them when it halts on that ratio). The flow
    counters (`executions`, `customer_notional`, `principal_notional`, `principal_fills`,
    `cancelled`) are cumulative since the Guard started: what the node publishes to the
    supervisor.
    """

    __slots__ = (
        "accounts",
        "booked",
        "booked_old",
        "books",
        "cancelled",
        "cancels",
        "customer_notional",
        "executions",
        "fills",
        "gross",
        "lot",
        "net_long",
        "net_short",
        "parents",
        "pending",
        "principal_fills",
        "principal_notional",
        "realized",
        "unrealized",
        "working",
    )

    def __init__(self, lot: Callable[[str], float] | None = None) -> None:
        self.lot = lot
        self.books: dict[str, SymbolBook] = {}
        self.working: dict[str, Working] = {}
        self.pending: dict[str, Pending] = {}
        self.parents: dict[str, Parent] = {}
        self.booked: dict[str, Working] = {}
        self.booked_old: dict[str, Working] = {}
        self.accounts: dict[str, CustomerAccount] = {}
        self.executions = 0
        self.customer_notional = 0.0
        self.principal_notional = 0.0
        self.principal_fills = 0
        self.gross = 0.0
        self.net_long = 0.0
        self.net_short = 0.0
        self.realized = 0.0
        self.unrealized = 0.0
        self.fills = 0
        self.cancels = 0
        self.cancelled = 0
        """Cancels since the Guard started (a replace the venue took is one): `cancels`, never
        set back by a cancel-to-fill halt (the supervisor's cancel rate reads it)."""

    def book(self, symbol: str) -> SymbolBook:
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = self.new_book(symbol)
        return book

    def new_book(self, symbol: str) -> SymbolBook:
        """A book for `symbol`, not kept (the Guard keeps it once it accepts an order in it)."""
        return SymbolBook(1.0 if self.lot is None else self.lot(symbol))

    def account(self, name: str) -> CustomerAccount:
        acct = self.accounts.get(name)
        if acct is None:
            acct = self.accounts[name] = CustomerAccount(name)
        return acct

    def line(self, parent: Parent, symbol: str) -> CustomerLine:
        """The parent's customer line in `symbol` (cached on the parent for its next child)."""
        line = parent.line
        if line is not None and line.book is self.books.get(symbol):
            return line
        acct = parent.account
        line = acct.lines.get(symbol)
        if line is None:
            book = self.book(symbol)
            line = acct.lines[symbol] = CustomerLine(acct, book)
            book.lines.append(line)
        parent.line = line
        return line

    def line_for(self, parent: Parent, symbol: str, book: SymbolBook) -> CustomerLine:
        """The parent's customer line in `symbol` counted on `book`, a book not kept yet
        (`Guard._lane`): the account's line if it has one (a kept line's book is the
        symbol's kept book, which `_lane` uses), else a new one, not kept."""
        acct = parent.account
        line = acct.lines.get(symbol)
        return line if line is not None else CustomerLine(acct, book)

    def keep_line(self, parent: Parent, symbol: str, line: CustomerLine) -> None:
        """Keep a line from `line_for` once an order is accepted on it."""
        acct = line.account
        if acct.lines.get(symbol) is not line:
            acct.lines[symbol] = line
            line.book.lines.append(line)
        parent.line = line

    def refresh(self, book: SymbolBook) -> None:
        """Swap this symbol's old contribution to the totals for its new one."""
        g, lc, sc, u = book.contributions()
        self.gross += g - book.gross_c
        self.net_long += lc - book.long_c
        self.net_short += sc - book.short_c
        self.unrealized += u - book.unreal_c
        book.gross_c, book.long_c, book.short_c, book.unreal_c = g, lc, sc, u

    def fill(self, fill: Fill) -> tuple[Working | None, str, int]:
        """Apply an execution; returns the working order it belonged to, any mismatch, and
        the principal quantity (the part that is not a customer's fill within its parent).

        The whole fill moves the position (the venue's report is the truth); a
        mismatch says how it disagrees with the working order it names.
        """
        book = self.book(fill.symbol)
        w = self.working.get(fill.order_id)
        mismatch = f"fill for order {fill.order_id} matches no working order"
        wc = cust = 0
        if w is not None:
            mismatch = ""
            if fill.qty > w.remaining:
                mismatch = (
                    f"fill of {fill.qty} for order {fill.order_id} is more than the "
                    f"{w.remaining} it had left (an overfill)"
                )
            took = min(fill.qty, w.remaining)
            w.remaining -= took
            w.filled += fill.qty
            if fill.qty > took and w.parent is not None:
                # an overfill (it halts): what executed beyond the leaves is committed too, as
                # a late fill's is; before, after the resume the parent's children could total
                # the overfill more than the parent check allows
                w.parent.committed += fill.qty - took
            wc = min(took, w.cust)
            w.cust -= wc
            wbook = self.books[w.symbol]
            wbook.remove_working(w.side is _BUY, took - wc)
            if wc:
                assert w.line is not None
                w.line.remove_working(w.side is _BUY, wc)
            if w.remaining == 0:
                del self.working[fill.order_id]
            if wbook is not book:
                self.refresh(wbook)
            if w.symbol != fill.symbol or w.side is not fill.side:
                mismatch = (mismatch + "; " if mismatch else "") + (
                    f"fill for order {fill.order_id} reports {fill.side.value} {fill.symbol}; "
                    f"the order was {w.side.value} {w.symbol}"
                )
            elif w.parent is not None:
                # booked as it was checked: the customer's part of this child's working
                # quantity first, then the firm's, whichever of the parent's children
                # fills first (the parent's fill count would book the firm's child that
                # fills first as the customer's, and the customer's later as the firm's)
                cust = wc
                self.remember(fill, w, wc)  # kept for a bust or a correction of it
            parent = w.parent
        else:
            # a late or duplicate fill of a finished child (it halts): the firm's, counted
            # in its parent's fills and kept so, so that its bust is taken back as the firm's,
            # and committed (filled plus working): before, a child cancelled and then filled
            # left the parent committed below what its children executed, so after the resume
            # they could total that much more than the parent check allows
            rec = self.order(fill.order_id)
            parent = None if rec is None else rec.parent
            if rec is not None and parent is not None:
                rec.filled += fill.qty
                parent.committed += fill.qty
                self.remember(fill, rec, 0)
        principal = self.execute(fill, parent, cust)
        if wc:
            assert w is not None and w.line is not None
            w.line.refresh()
        value = fill.price * book.lot
        if principal:
            self.principal_fills += 1
            self.principal_notional += principal * value
        self.customer_notional += (fill.qty - principal) * value
        self.fills += 1
        self.executions += 1
        return w, mismatch, principal

    def remember(self, fill: Fill, w: Working, cust: int) -> None:
        """Keep the capacity `fill` of `w` (a child of a registered parent) was booked in,
        for a bust or a correction of it, also after the order ends (`booked`)."""
        w.cfilled += cust
        ex = w.execs
        if ex is None:
            w.execs = [fill]
            w.ecust = [cust]
        elif len(ex) < EXECS_KEPT:
            ex.append(fill)
            w.ecust.append(cust)
        self.keep(fill.order_id, w)

    def keep(self, order_id: str, w: Working) -> None:
        """Remember `w` under `order_id` after it ends or moves (`booked`, bounded): what a
        late fill, a bust or a correction reported under that id is matched with."""
        b = self.booked
        b[order_id] = w
        if len(b) >= BOOKED_WINDOW:
            self.booked_old = b
            self.booked = {}

    def order(self, order_id: str) -> Working | None:
        """The order `order_id`: working, or remembered lately under that id (`keep`)."""
        w = self.working.get(order_id)
        if w is None:
            w = self.booked.get(order_id)
            if w is None:
                w = self.booked_old.get(order_id)
        return w

    def execute(self, fill: Fill, parent: Parent | None, cust: int) -> int:
        """The position side of an execution, by capacity: `cust` of it the customer's of
        `parent` (0 without one), the rest the firm's own. Returns the principal
        quantity; what the execution did to a working order is the caller's."""
        book = self.book(fill.symbol)
        is_buy = fill.side is _BUY
        if parent is not None:
            parent.filled += fill.qty
            if cust:
                parent.cust_filled += cust
                line = self.line(parent, fill.symbol)
                line.pos += cust if is_buy else -cust
                line.refresh()
        principal = fill.qty - cust
        if principal:
            self.realized += book.fill(is_buy, principal, fill.price)
        elif book.mark is None:
            book.mark = fill.price
        self.refresh(book)
        return principal

    def external(self, fill: Fill) -> None:
        """An execution of an order that did not pass the Guard (a drop copy): the firm's
        own, in the position and the principal flow, matched to no working order."""
        book = self.book(fill.symbol)
        self.execute(fill, None, 0)
        self.principal_fills += 1
        self.principal_notional += fill.qty * fill.price * book.lot
        self.executions += 1

    def unfill(self, fill: Fill, parent: Parent | None) -> tuple[int, int, str]:
        """Take an execution back (a trade bust): the opposite execution at its price, in the
        capacity it was booked in. Returns the principal and the customer's quantity taken
        back, and why that split is a guess ("" when it is not).

        The split is the recorded execution's (`Working.execs`: same order, quantity and
        price) when the order is known (working, or in `booked`); else what the order's
        totals (or, for an order no longer known, `parent`'s) leave possible. When both
        capacities are possible (a child straddling its parent's quantity, or an order
        the ledger no longer remembers), the firm's part is taken back first: no single
        guess is safe for both (the capacity taken back wrongly is understated on one
        side and overstated on the other, for the firm's limits and the customer's
        alike), so the caller halts until a person reconciles (`Guard.on_bust`).
        Position and the fill counts return exactly; realized P&L moves by the
        reversal against the average cost (average cost cannot be un-blended).
        """
        book = self.book(fill.symbol)
        is_buy = fill.side is _BUY
        qty = fill.qty
        w = self.order(fill.order_id)
        cust = 0
        guess = ""
        if parent is not None:
            rec = w if w is not None and w.parent is parent else None
            if rec is not None and (fill.side is not rec.side or fill.symbol != rec.symbol):
                pass  # an execution its order cannot have was never the customer's (it halts)
            elif rec is not None and (at := _match(rec, fill)) >= 0 and not _unsure(rec, qty):
                ex, ec = rec.execs, rec.ecust
                assert ex is not None  # a match was found in it
                if any(
                    ec[i] != ec[at] and f.qty == qty and f.price == fill.price
                    for i, f in enumerate(ex)
                ):
                    guess = (
                        f"order {fill.order_id} has executions of {qty} at {fill.price:g} "
                        "booked as the customer's and as the firm's"
                    )
                del ex[at]
                cust = ec.pop(at)
            else:
                if rec is not None:
                    had_c, had_f = rec.cfilled, rec.filled - rec.cfilled
                else:
                    had_c, had_f = parent.cust_filled, parent.filled - parent.cust_filled
                cust = min(max(qty - had_f, 0), had_c)  # the firm's first
                if min(qty, had_c) > cust:
                    guess = (
                        f"order {fill.order_id} filled {had_c} of the customer's and "
                        f"{max(had_f, 0)} of the firm's"
                        if rec is not None
                        else f"the order is no longer known here, and its parent filled "
                        f"{had_c} of the customer's and {max(had_f, 0)} of the firm's"
                    )
            cust = min(cust, parent.cust_filled)
            if rec is not None:
                rec.cfilled -= cust
            parent.filled = max(parent.filled - qty, 0)
            parent.cust_filled -= cust
            if cust:
                line = self.line(parent, fill.symbol)
                line.pos -= cust if is_buy else -cust
                line.refresh()
        if w is not None:
            w.filled = max(w.filled - qty, 0)  # more than it filled halts (Guard.on_bust)
        principal = qty - cust
        if principal:
            self.realized += book.fill(not is_buy, principal, fill.price)
        self.refresh(book)
        return principal, cust, guess

    def rebook(self, fill: Fill, parent: Parent | None, cust: int) -> Working | None:
        """Book a corrected execution (`Guard.on_correct`, after `unfill` of the old one):
        `cust` of it the customer's. Returns its order, if known (its fill count is the
        caller's for a working order; a finished one's is kept here)."""
        self.execute(fill, parent, cust)
        w = self.order(fill.order_id)
        if w is not None and parent is not None and w.parent is parent:
            self.remember(fill, w, cust)
            if fill.order_id not in self.working:
                w.filled += fill.qty
        return w

    def reducing(
        self, book: SymbolBook, symbol: str, side: Side, qty: int, parent_id: object
    ) -> bool:
        """Whether a new order only reduces where it would be booked (a drain, REDUCING):
        its part within `parent_id`'s uncommitted quantity the customer's line, the rest
        the firm's book, as step 10 of the Guard's check splits it. Builds nothing."""
        parent = self.parents.get(parent_id) if type(parent_id) is str else None
        cust = customer_part(parent, qty)
        if cust and not reduces(parent.account.lines.get(symbol) if parent else None, side, cust):
            return False
        return cust == qty or reduces(book, side, qty - cust)

    def hold(self, w: Working, qty: int, kept: int = 0) -> int:
        """Count `qty` more as working for `w`, by capacity as a new order is: the part
        within its parent's uncommitted quantity on the customer's line, the rest on the
        book as the firm's. `kept` of it (at most `qty`) is the customer's as it was
        before (`rework`): only the rest is split afresh. Returns the customer's part.
        `w`'s own fields are the caller's."""
        book = self.book(w.symbol)
        is_buy = w.side is _BUY
        p = w.parent
        if kept and p is not None:
            free = p.qty - p.committed - kept
            cust = kept + (min(qty - kept, free) if free > 0 else 0)
        else:
            cust = customer_part(p, qty)
        if p is not None:
            p.committed += qty
        prin = qty - cust
        if prin:
            if is_buy:
                book.wbuy += prin
            else:
                book.wsell += prin
        if cust:
            assert p is not None
            line = w.line
            if line is None or line.book is not book:
                line = w.line = self.line(p, w.symbol)
            if is_buy:
                line.wbuy += cust
            else:
                line.wsell += cust
            line.refresh()
        self.refresh(book)
        return cust

    def release(self, w: Working, cust: int, prin: int) -> None:
        """Stop counting `cust` (customer's) and `prin` (the firm's) as working for `w`."""
        book = self.books[w.symbol]
        is_buy = w.side is _BUY
        book.remove_working(is_buy, prin)
        if cust:
            assert w.line is not None
            w.line.remove_working(is_buy, cust)
            w.line.refresh()
        if w.parent is not None:
            w.parent.committed -= cust + prin
        self.refresh(book)

    def rework(self, w: Working, remaining: int, kept: int | None = None) -> None:
        """`w` now has `remaining` working (a restatement, a replace the venue took):
        what it held is released and the new quantity held again. The customer's part
        stays what it was (`kept`, `w.cust` unless given) as far as `remaining` holds it
        (a reduction takes the firm's part first, as fills take the customer's first);
        only more than that is split afresh against the parent. Before, all of it was
        split afresh, and the firm's parts of the parent's other children (counted in
        its committed quantity) moved this child's customer quantity into the firm's
        book, past the firm's limits that never checked it."""
        keep = w.cust if kept is None else kept
        self.release(w, w.cust, w.remaining - w.cust)
        w.remaining = remaining
        w.cust = self.hold(w, remaining, min(keep, remaining)) if remaining else 0

    def cancel(self, order_id: str, *, counted: bool = True) -> Working | None:
        """An order ended without filling the rest: free its working quantity and its
        parent's commitment. `counted` says whether it counts as a cancel in the
        cancel-to-fill ratio (a venue reject or an expiry does not)."""
        w = self.working.pop(order_id, None)
        if w is not None:
            if counted:
                self.cancels += 1
                self.cancelled += 1
            self.release(w, w.cust, w.remaining - w.cust)
            if w.parent is not None:
                # a child that ended before it filled is remembered too: its late fill is
                # then its parent's (filled and committed), as a child's that filled is
                self.keep(order_id, w)
        return w

    def price(self, symbol: str, price: float, now_ns: int) -> SymbolBook:
        """A new reference price: it is also the mark for exposure and unrealized P&L."""
        book = self.book(symbol)
        if book.pos and not book.avg:
            # a position restored at no cost (`Guard.restore_position`) costs its first price
            book.avg = price
        book.ref = book.mark = price
        book.ref_ns = now_ns
        self.refresh(book)
        for line in book.lines:
            line.refresh()
        return book

    def pnl(self) -> float:
        return self.realized + self.unrealized
