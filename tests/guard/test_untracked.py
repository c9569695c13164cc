"""The Guard's large containers of plain values are out of the collector's walk, stay
usable, and hold nothing through which a reference cycle could run."""

from __future__ import annotations

import gc
import sys
from collections import deque
from collections.abc import Collection

from knightwatch.clock import SimClock
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard
from knightwatch.guard.rates import windows
from knightwatch.guard.untracked import untracked
from knightwatch.limits import Limits
from knightwatch.order import Fill, Order, Side

CPYTHON = sys.implementation.name == "cpython"


def test_a_set_or_deque_of_plain_values_is_not_walked_and_keeps_working() -> None:
    ids = untracked(set[str]())
    stamps = untracked(deque[int](maxlen=100))
    for i in range(1_000):  # growing, rebuilding and discarding keep it so
        ids.add(f"o{i}")
        stamps.append(i)
    for i in range(500):
        ids.remove(f"o{i}")
    assert len(ids) == 500 and "o999" in ids and list(stamps) == list(range(900, 1_000))
    for box in (ids, stamps):
        assert gc.is_tracked(box) is not CPYTHON


PLAIN = (str, int, float)


def _plain(value: object) -> bool:
    return isinstance(value, PLAIN) or (
        type(value) is tuple and all(isinstance(v, PLAIN) for v in value)
    )


def test_what_a_trading_guard_keeps_untracked_holds_only_plain_values() -> None:
    """An untracked container through which a cycle ran would never be collected: after
    real trading (accepts, fills, cancels, a new session), each holds only plain values."""
    clock = SimClock(10**15)
    guard = Guard(Limits(lease_timeout_s=None), node="n1", clock=clock)
    guard.arm("test")
    for sym in ("IBM", "AAPL"):
        guard.on_price(sym, 100.0)
    for i in range(300):
        clock.advance(25_000_000)  # inside every default rate limit
        side, symbol = (Side.BUY if i % 2 else Side.SELL), ("IBM", "AAPL")[i % 2]
        assert guard.check(Order(f"o{i}", "rlp", symbol, side, 10, 100.0)).accepted
        if i % 3 == 0:
            guard.on_fill(Fill(f"o{i}", symbol, side, 10, 100.0))
        else:
            guard.on_cancel(f"o{i}")
    ids = guard._ids
    held: list[Collection[object]] = [guard._turnover, *ids.shards, ids._fifo]
    held += [w.events for lane in guard._lanes.values() for w in lane.windows]
    assert sum(len(c) for c in held) > 1_000  # they were used
    for container in held:
        assert gc.is_tracked(container) is not CPYTHON
        assert all(_plain(v) for v in container)


def test_the_guards_rate_windows_and_turnover_are_not_walked() -> None:
    guard = Guard(Limits(), node="n1", clock=SimClock(10**15))
    (window,) = windows(5, 100, RejectReason.RATE_NODE, "node", "n1")
    assert gc.is_tracked(window.events) is not CPYTHON
    assert gc.is_tracked(guard._turnover) is not CPYTHON
    assert all(gc.is_tracked(w.events) is not CPYTHON for w in guard._node_windows)
