"""A router node: its release, its `SmarsRouter`, and (when a guard layer is on) its `Guard`.

The node is the order gateway: each child the router releases goes to the
Guard, then to the venue, and the execution comes back to the router, the
Guard and the account. With no Guard a batch of identical children goes to
the venue in one call (the ladder prices them exactly as one by one); with a
Guard every child is its own `Order` and its own decision.
"""

from __future__ import annotations

from knightwatch.guard import Guard
from knightwatch.order import Fill, Order, Side
from knightwatch.sim.account import Account
from knightwatch.sim.release import Release
from knightwatch.sim.router import Algorithm, RoutedParent, SmarsRouter, Unchecked
from knightwatch.sim.scenario import NodeConfig
from knightwatch.sim.venue import Venue


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
        d = guard.check(order)
        if not d.accepted:
            self.blocked += 1
            self.router.on_reject(p)
            p.refused_for = self.refused_for = d.reason.value
            self.first_block.setdefault(d.reason.value, now_ns)
            return
        p.refused_for = self.refused_for = ""
        notional = self.venue.execute(p.symbol, p.is_buy, qty, 1, now_ns)
        self.sent += 1
        self.executions += 1
        self._runaway(
            self.account.book(p.symbol, p.is_buy, p.qty, p.filled, qty, notional, qty, now_ns)
        )
        self.router.on_fill(p, qty)
        guard.on_fill(Fill(order.id, symbol, side, qty, notional / qty))
        guard.on_price(symbol, book.mid())
