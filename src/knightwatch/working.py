"""Orders the Guard accepted that are still working, and the parents they belong to."""

from __future__ import annotations

from knightwatch.order import Order


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
