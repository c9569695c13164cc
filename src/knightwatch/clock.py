"""Injected time (principle 2 in docs/architecture.md).

Every component takes a `Clock` so that the replay runs the same code on a
simulated clock that the live system runs on the host clock. Nothing in the
logic calls `time.time()` itself.
"""

from __future__ import annotations

import time
from typing import Protocol

NS_PER_S = 1_000_000_000
MINUTE_NS = 60 * NS_PER_S


def to_ns(seconds: float) -> int:
    """Seconds to integer nanoseconds, rounded (never truncated: `int(1.001e9)` is 1 ns short)."""
    return round(seconds * NS_PER_S)


class Clock(Protocol):
    """Two readings: monotonic for windows and timeouts, wall for records."""

    def monotonic_ns(self) -> int: ...

    def time_ns(self) -> int: ...


class SystemClock:
    """The host's clocks, used by live processes.

    The readings are the `time` module's own functions, not methods that wrap
    them: the Guard reads the clock on every order, and a call straight into C
    costs a third of one through a Python frame. A subclass may still override
    either (a test's skewed clock does).
    """

    __slots__ = ()

    monotonic_ns = staticmethod(time.monotonic_ns)
    time_ns = staticmethod(time.time_ns)


class SimClock:
    """A clock that moves only when told to, so a replay is deterministic.

    Wall time is the simulated instant itself (nanoseconds since the epoch),
    so records written during a replay carry the simulated trading-day time.
    """

    __slots__ = ("_now",)

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def monotonic_ns(self) -> int:
        return self._now

    def time_ns(self) -> int:
        return self._now

    def advance(self, ns: int) -> None:
        if ns < 0:
            raise ValueError(f"SimClock.advance: ns must be >= 0, got {ns}")
        self._now += ns

    def advance_to(self, ns: int) -> None:
        """Move to an absolute instant; time never runs backwards."""
        if ns > self._now:
            self._now = ns
