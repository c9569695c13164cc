"""The Guard's large containers of plain values are out of the collector's walk, and stay
usable and freed like any other."""

from __future__ import annotations

import gc
import sys
import weakref
from collections import deque

from knightwatch.clock import SimClock
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard
from knightwatch.guard.rates import windows
from knightwatch.guard.untracked import untracked
from knightwatch.limits import Limits

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


def test_an_untracked_container_is_still_freed() -> None:
    box = untracked({"a", "b"})
    gone = weakref.ref(box)
    del box
    assert gone() is None, "reference counting frees it: no cycle runs through it"


def test_the_guards_rate_windows_and_turnover_are_not_walked() -> None:
    guard = Guard(Limits(), node="n1", clock=SimClock(10**15))
    (window,) = windows(5, 100, RejectReason.RATE_NODE, "node", "n1")
    assert gc.is_tracked(window.events) is not CPYTHON
    assert gc.is_tracked(guard._turnover) is not CPYTHON
    assert all(gc.is_tracked(w.events) is not CPYTHON for w in guard._node_windows)
