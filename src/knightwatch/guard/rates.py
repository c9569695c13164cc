"""Sliding-window rate limits that are exact and O(1) per order.

A deque holding the last `limit` accepted timestamps: the next order is allowed
iff fewer than `limit` are held or the oldest is outside the window. No pruning
loop, no buckets, no approximation: "at most N in any window of W" exactly.
"""

from __future__ import annotations

from collections import deque

from knightwatch.clock import MINUTE_NS, NS_PER_S
from knightwatch.decision import RejectReason


class Window:
    """At most `limit` accepted orders in any `span_ns`, for one node, strategy or symbol."""

    __slots__ = ("events", "key", "limit", "reason", "scope", "span_ns")

    def __init__(
        self, limit: int, span_ns: int, reason: RejectReason, scope: str, key: str
    ) -> None:
        self.limit = limit
        self.span_ns = span_ns
        self.reason = reason
        self.scope = scope
        self.key = key
        self.events: deque[int] = deque(maxlen=limit)

    def detail(self) -> str:
        unit = "s" if self.span_ns == NS_PER_S else "min"
        return (
            f"{self.limit} orders in the last 1{unit} for {self.scope} {self.key} "
            f"= max_orders_per_{unit}_{self.scope}"
        )


def windows(
    per_s: int | None, per_min: int | None, reason: RejectReason, scope: str, key: str
) -> tuple[Window, ...]:
    """The per-second and per-minute windows that are switched on, for one scope key."""
    out = []
    if per_s is not None:
        out.append(Window(per_s, NS_PER_S, reason, scope, key))
    if per_min is not None:
        out.append(Window(per_min, MINUTE_NS, reason, scope, key))
    return tuple(out)
