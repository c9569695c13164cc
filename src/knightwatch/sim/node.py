"""A router node: its release, its `SmarsRouter`, and (when a guard layer is on) its `Guard`.

The node is the order gateway: each child the router releases goes to the
Guard, then to the venue, and the execution comes back to the router, the
Guard and the account. With no Guard a batch of identical children goes to
the venue in one call (the ladder prices them exactly as one by one); with a
Guard every child is its own `Order` and its own decision.

A node with `[faults]` sends every child on its own, guarded or not, through
`_route_faulted`: its price comes from the node's feed (frozen or not) and may be
set away from the touch, its side may be the opposite of its parent's, its id from a
sequence a restart may reset, and its fill is matched to the first child that carried
its id. A child still fills at once (the model's axiom); one priced through the market
fills at its own price (the contra takes the price offered), and the firm, which makes
its customer whole, books the difference; one on the wrong side is reported to the
customer as done on the parent's side, so the firm holds the market leg and the
customer's. Nodes without faults keep the paths below unchanged.
"""

from __future__ import annotations

from knightwatch.clock import NS_PER_S
from knightwatch.decision import Decision
from knightwatch.guard import Guard
from knightwatch.order import Fill, Order, Side
from knightwatch.sim.account import Account
from knightwatch.sim.book import OrderBook
from knightwatch.sim.release import Release
from knightwatch.sim.router import Algorithm, RoutedParent, SmarsRouter, Unchecked
from knightwatch.sim.scenario import NodeConfig, NodeFaults
from knightwatch.sim.venue import Market, Venue


class Node:
    def __init__(
        self,
        node_id: str,
        release: Release,
        router: SmarsRouter,
        guard: Guard | None,
        *,
        strategy: str,
        venue: Venue,
        account: Account,
        symbols: list[str],
        config: NodeConfig | None = None,
        faults: NodeFaults | None = None,
        open_ns: int = 0,
    ) -> None:
        self.id = node_id
        self.release = release
        self.config = config if config is not None else NodeConfig()
        self._unchecked: dict[str, Algorithm] = {}
        self.router = router
        self.guard = guard
        self.strategy = strategy
        self.venue = venue
        self.account = account
        self.symbols = symbols
        self.sent = 0
        self.executions = 0
        self.blocked = 0
        self.first_block: dict[str, int] = {}
        self.refused_for = ""
        """Why the node's last child was refused (empty once one got out again)."""
        self.runaway_executions = 0
        self.runaway_first_ns: int | None = None
        self.runaway_last_ns: int | None = None
        self.flag_on = False
        self._seq = 0
        self.faults = faults
        self.frozen: list[tuple[float, float]] | None = None
        """The quotes (ask, bid) per symbol the node's feed froze at; None while it is live."""
        self._restart_ns: int | None = None
        self._off_ns: int | None = None
        self._flip: tuple[int, int | None] | None = None
        """`wrong_side`: from when (until when, if it ends) children take the other side."""
        self._owners: dict[str, RoutedParent] | None = None
        if faults is not None:
            if faults.reused_ids is not None:
                self._restart_ns = open_ns + round(faults.reused_ids.from_s * NS_PER_S)
                self._owners = {}
            if faults.off_price is not None:
                self._off_ns = open_ns + round(faults.off_price.from_s * NS_PER_S)
            ws = faults.wrong_side
            if ws is not None:
                until = None if ws.until_s is None else open_ns + round(ws.until_s * NS_PER_S)
                self._flip = (open_ns + round(ws.from_s * NS_PER_S), until)

    def freeze_feed(self, market: Market) -> None:
        """The node's feed stops: it keeps the quotes it has now."""
        self.frozen = [(b.touch(True), b.touch(False)) for b in market.books]

    def thaw_feed(self) -> None:
        self.frozen = None

    def algorithm(self, flag: str | None) -> Algorithm:
        """What this node's code does for a parent carrying `flag`, given the flag's state
        here: a flag that is off (its safe default) selects the release's default routing;
        a config with `fill_check = false` runs it without the cumulative-quantity check."""
        algo = self.release.behaviour(flag if self.flag_on else None)
        if self.config.fill_check or algo.resting:
            return algo
        unchecked = self._unchecked.get(algo.name)
        if unchecked is None:
            unchecked = self._unchecked[algo.name] = Unchecked(algo)
        return unchecked

    def set_release(self, release: Release) -> None:
        self.release = release
        self._reresolve()

    def set_flag(self, on: bool) -> None:
        self.flag_on = on
        self._reresolve()

    def _reresolve(self) -> None:
        """Working parents follow the code and flag the node has now (SEC para. 27: the
        rollback woke Power Peg for parents on the seven servers)."""
        for p in self.router.active:
            p.algorithm = self.algorithm(p.order.flag)

    def _runaway(self, booked: tuple[int, int, int] | None) -> None:
        if booked is None:
            return
        count, first, last = booked
        self.runaway_executions += count
        if self.runaway_first_ns is None or first < self.runaway_first_ns:
            self.runaway_first_ns = first
        if self.runaway_last_ns is None or last > self.runaway_last_ns:
            self.runaway_last_ns = last

    def route_batch(self, p: RoutedParent, due: int) -> None:
        """Unguarded path: release what is due and execute it as one batch (the book is
        walked once, at the last child's instant; each child is booked at its own)."""
        if self.faults is not None:
            for _ in range(due):
                if p.done:
                    break
                self._route_faulted(p, p.child_time(p.next_k))
            return
        first_ns = p.child_time(p.next_k)
        last_ns = p.child_time(p.next_k + due - 1)
        n = self.router.release(p, due, last_ns)
        if n:
            qty = p.child_qty
            notional = self.venue.execute(p.symbol, p.is_buy, qty, n, last_ns)
            self.sent += n
            self.executions += n
            self._runaway(
                self.account.book(
                    p.symbol,
                    p.is_buy,
                    p.qty,
                    p.filled,
                    n * qty,
                    notional,
                    qty,
                    first_ns,
                    p.interval_ns,
                )
            )
            self.router.on_fill(p, n * qty)

    def route_one(self, p: RoutedParent, now_ns: int) -> None:
        """Guarded path: one child, one `Order`, one Guard decision."""
        if self.faults is not None:
            self._route_faulted(p, now_ns)
            return
        if not self.router.release(p, 1, now_ns):
            return
        guard = self.guard
        assert guard is not None
        qty = p.child_qty
        book = self.venue.market.books[p.symbol]
        self._seq += 1
        symbol = self.symbols[p.symbol]
        side = Side.BUY if p.is_buy else Side.SELL
        touch = book.touch(p.is_buy)
        order = Order(f"{self.id}-{self._seq}", self.strategy, symbol, side, qty, touch, p.id)
        if not self._checked(p, guard.check(order), now_ns):
            return
        notional = self.venue.execute(p.symbol, p.is_buy, qty, 1, now_ns)
        self.sent += 1
        self.executions += 1
        self._runaway(
            self.account.book(p.symbol, p.is_buy, p.qty, p.filled, qty, notional, qty, now_ns)
        )
        self.router.on_fill(p, qty)
        guard.on_fill(Fill(order.id, symbol, side, qty, notional / qty))
        guard.on_price(symbol, book.mid())

    def _checked(self, p: RoutedParent, d: Decision, now_ns: int) -> bool:
        """Whether the Guard let the child go; a refusal is counted against `p` and the node."""
        if not d.accepted:
            self.blocked += 1
            self.router.on_reject(p)
            p.refused_for = self.refused_for = d.reason.value
            self.first_block.setdefault(d.reason.value, now_ns)
            return False
        p.refused_for = self.refused_for = ""
        return True

    def child_price(self, p: RoutedParent, book: OrderBook, now_ns: int, is_buy: bool) -> float:
        """The price the node puts on a child (a buy if `is_buy`): the far touch as its feed
        shows it, moved `off_price.pct` through it once that fault has begun (whole ticks,
        at least one)."""
        frozen = self.frozen
        touch = book.touch(is_buy) if frozen is None else frozen[p.symbol][0 if is_buy else 1]
        if self._off_ns is None or now_ns < self._off_ns:
            return touch
        assert self.faults is not None and self.faults.off_price is not None
        pct = self.faults.off_price.pct
        price = touch * (1 + pct) if is_buy else touch * (1 - pct)
        return max(1, round(price / book.tick)) * book.tick

    def _route_faulted(self, p: RoutedParent, now_ns: int) -> None:
        """One child of a node with faults, guarded or not (see the module docstring)."""
        if not self.router.release(p, 1, now_ns):
            return
        if self._restart_ns is not None and now_ns >= self._restart_ns:
            self._restart_ns = None
            self._seq = 0  # the restart: ids start again at <node>-1
        qty = p.child_qty
        book = self.venue.market.books[p.symbol]
        self._seq += 1
        oid = f"{self.id}-{self._seq}"
        symbol = self.symbols[p.symbol]
        flip = self._flip
        flipped = flip is not None and flip[0] <= now_ns and (flip[1] is None or now_ns < flip[1])
        is_buy = p.is_buy is not flipped  # `wrong_side`: the other side of its parent
        side = Side.BUY if is_buy else Side.SELL
        price = self.child_price(p, book, now_ns, is_buy)
        guard = self.guard
        if guard is not None:
            order = Order(oid, self.strategy, symbol, side, qty, price, p.id)
            if not self._checked(p, guard.check(order), now_ns):
                return
        notional = self.venue.execute(p.symbol, is_buy, qty, 1, now_ns)
        worse = price * qty - notional if is_buy else notional - price * qty
        if worse > 0:  # filled at its own price: the firm makes the customer whole
            self.account.cash -= worse
        paid = notional + max(worse, 0.0) if is_buy else notional - max(worse, 0.0)
        if flipped:  # the customer is told of a fill on its parent's side (booked below):
            sign = 1 if is_buy else -1  # the firm holds the market leg and the customer's
            self.account.position[p.symbol] += 2 * sign * qty
            self.account.cash -= 2 * sign * notional
        # the execution report is matched by id: to the first child that carried it
        owner = p if self._owners is None else self._owners.setdefault(oid, p)
        self.sent += 1
        self.executions += 1
        self._runaway(
            self.account.book(
                p.symbol, p.is_buy, owner.qty, owner.filled, qty, notional, qty, now_ns
            )
        )
        self.router.on_fill(owner, qty)
        if guard is not None:
            guard.on_fill(Fill(oid, symbol, side, qty, paid / qty))
            if self.frozen is None:
                guard.on_price(symbol, book.mid())
