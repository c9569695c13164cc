"""Sliding-window rate limits that are exact, with one deque per scope key.

A node, strategy or symbol may have a per-second and a per-minute limit. One
deque holds its last max(per_s, per_min) accepted timestamps, and serves both:
the next order is allowed iff, for each limit L, fewer than L are held or the
L-th newest is outside the limit's window. No pruning loop, no buckets, no
approximation: "at most N in any window of W" exactly. One append per order
and scope (not one per limit); reading the L-th newest is an index into the
deque, which CPython walks from the nearer end in blocks of 64.
"""

from __future__ import annotations

from collections import deque

from knightwatch.clock import MINUTE_NS, NS_PER_S
from knightwatch.decision import RejectReason
from knightwatch.guard.untracked import untracked


class Window:
    """At most `per_s` accepted orders in any second and `per_min` in any minute (0: no
    such limit), for one node, strategy or symbol."""

    __slots__ = ("events", "key", "per_min", "per_s", "reason", "scope")

    def __init__(
        self, per_s: int, per_min: int, reason: RejectReason, scope: str, key: str
    ) -> None:
        self.per_s = per_s
        self.per_min = per_min
        self.reason = reason
        self.scope = scope
        self.key = key
        # timestamps only: the collector need not walk them (`guard/untracked.py`)
        self.events: deque[int] = untracked(deque(maxlen=max(per_s, per_min)))

    def over(self, now: int) -> int:
        """The span (ns) whose limit one more order at `now` would break, else 0."""
        ev = self.events
        n = len(ev)
        ps = self.per_s
        if ps and n >= ps and now - ev[n - ps] < NS_PER_S:
            return NS_PER_S
        pm = self.per_min
        if pm and n >= pm and now - ev[n - pm] < MINUTE_NS:
            return MINUTE_NS
        return 0

    def detail(self, span_ns: int) -> str:
        if span_ns == NS_PER_S:
            unit, limit = "s", self.per_s
        else:
            unit, limit = "min", self.per_min
        return (
            f"{limit} orders in the last 1{unit} for {self.scope} {self.key} "
            f"= max_orders_per_{unit}_{self.scope}"
        )


def windows(
    per_s: int | None, per_min: int | None, reason: RejectReason, scope: str, key: str
) -> tuple[Window, ...]:
    """The scope key's window, if either of its limits is switched on (else none)."""
    if per_s is None and per_min is None:
        return ()
    return (Window(per_s or 0, per_min or 0, reason, scope, key),)
