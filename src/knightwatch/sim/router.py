"""`SmarsRouter`: works parent orders by sending child orders, inside hard bounds.

A parent is worked by an algorithm chosen by the node's release from the
parent's flag. The algorithm says how many of the children now due it wants
to send; the router then applies its hard bounds (principle 6 in docs/architecture.md): at
most `max_children_per_parent` children and a cumulative child quantity never
above `max_qty_multiple` times the parent's, counted on what was *sent*, so
the bound holds whatever the algorithm or the fills do. A child the Guard
refuses never left: it is taken back (`on_reject`) and neither the bounds nor
the algorithm count it, so a parent throttled by a rate limit at the open is
completed once the window frees instead of stopping short.
`bounds=None` is a router without them, like SMARS in 2012.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from knightwatch.order import Side


class RouterBounds(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_children_per_parent: int
    max_qty_multiple: float = 1.0


class ParentOrder(msgspec.Struct, frozen=True):
    """A customer order as it reaches a router node, carrying the flag that selects behaviour."""

    id: str
    symbol: str
    side: Side
    qty: int
    arrival_ns: int
    node: str
    flag: str | None = None
    account: str | None = None


class Algorithm(Protocol):
    name: str
    resting: bool
    """True when the algorithm waits for contra liquidity and sends no marketable children."""

    def wants(self, p: RoutedParent, due: int) -> int:
        """How many of the `due` children it sends now (0 means it is done with the parent)."""
        ...


class RoutedParent:
    """The router's working state for one parent; `filled` is its cumulative-quantity view."""

    __slots__ = (
        "algorithm",
        "child_qty",
        "children",
        "done",
        "filled",
        "id",
        "interval_ns",
        "is_buy",
        "next_k",
        "order",
        "qty",
        "refused",
        "refused_for",
        "sent_qty",
        "start_ns",
        "symbol",
        "target",
    )

    def __init__(
        self,
        order: ParentOrder,
        symbol: int,
        algorithm: Algorithm,
        child_qty: int,
        interval_ns: int,
        work_multiple: float = 1.0,
    ) -> None:
        self.order = order
        self.id = order.id
        self.symbol = symbol
        self.is_buy = order.side is Side.BUY
        self.qty = order.qty
        self.target = round(order.qty * work_multiple)
        """What the router works the parent to: its quantity, unless the config says otherwise."""
        self.algorithm = algorithm
        self.child_qty = child_qty
        self.start_ns = order.arrival_ns
        self.interval_ns = interval_ns
        self.next_k = 0
        self.children = 0
        self.sent_qty = 0
        self.filled = 0
        self.refused = 0
        self.refused_for = ""
        """Why its last child was refused (empty once a child got out again)."""
        self.done = ""

    def due_before(self, t_ns: int) -> int:
        """Children of this parent's child clock that fall before `t_ns` and are not yet taken."""
        if t_ns <= self.start_ns:
            return 0
        total = -(-(t_ns - self.start_ns) // self.interval_ns)
        return max(0, total - self.next_k)

    def child_time(self, k: int) -> int:
        return self.start_ns + k * self.interval_ns


class FillToParent:
    """SMARS's normal behaviour: route children until the cumulative quantity reaches the
    parent's (the cumulative-quantity function, SEC order para. 14); `p.target` is the
    parent's quantity unless the node's config works it to a multiple."""

    __slots__ = ("name",)
    resting = False

    def __init__(self, name: str) -> None:
        self.name = name

    def wants(self, p: RoutedParent, due: int) -> int:
        open_qty = p.target - max(p.sent_qty, p.filled)
        if open_qty <= 0:
            return 0
        return min(due, -(-open_qty // p.child_qty))


class RetailLiquidity:
    """RLP on the new code: the parent rests at the exchange for Retail Price Improvement
    contra orders. The replay does not model RPI liquidity (the program started that day
    and its fills are not published), so an RLP parent rests and sends no marketable child;
    it is still working, which is why the 2012 rollback could wake Power Peg for it."""

    __slots__ = ()
    name = "rlp"
    resting = True

    def wants(self, p: RoutedParent, due: int) -> int:
        return 0


class Unchecked:
    """Any algorithm with the cumulative-quantity check switched off by config: a child on
    every update for as long as the parent works, whatever was filled (Power Peg's defect,
    reached through a config file instead of old code)."""

    __slots__ = ("name",)
    resting = False

    def __init__(self, inner: Algorithm) -> None:
        self.name = f"{inner.name} (fill check off)"

    def wants(self, p: RoutedParent, due: int) -> int:
        return due


class SmarsRouter:
    """One node's router. Bound hits are kept in `bound_hits` as (time, parent id, rule)."""

    def __init__(self, node: str, bounds: RouterBounds | None) -> None:
        self.node = node
        self.bounds = bounds
        self.active: list[RoutedParent] = []
        self.bound_hits: list[tuple[int, str, str]] = []

    def accept(self, p: RoutedParent) -> None:
        self.active.append(p)

    def release(self, p: RoutedParent, due: int, now_ns: int) -> int:
        """Children of `p` that leave now, out of `due`; retires the parent when it is done."""
        if p.done or due <= 0:
            return 0
        p.next_k += due
        if p.algorithm.resting:
            return 0
        n = p.algorithm.wants(p, due)
        if n <= 0:
            p.done = "filled"
            return 0
        n = min(n, due)
        b = self.bounds
        if b is not None:
            by_count = b.max_children_per_parent - p.children
            by_qty = (int(p.qty * b.max_qty_multiple) - p.sent_qty) // p.child_qty
            cap = max(0, min(by_count, by_qty))
            if n >= cap:
                rule = "max_children_per_parent" if by_count <= by_qty else "max_qty_multiple"
                if n > cap:
                    self.bound_hits.append((now_ns, p.id, rule))
                    p.done = "router_bound"
                n = cap
        p.children += n
        p.sent_qty += n * p.child_qty
        return n

    def on_fill(self, p: RoutedParent, qty: int) -> None:
        p.filled += qty

    def on_reject(self, p: RoutedParent) -> None:
        """The last child released for `p` was refused before it left: it is not sent."""
        p.children -= 1
        p.sent_qty -= p.child_qty
        p.refused += 1

    def sweep(self) -> None:
        """Drop retired parents from the working list."""
        if any(p.done for p in self.active):
            self.active = [p for p in self.active if not p.done]
