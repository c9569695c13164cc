"""The client order ids the duplicate check remembers, within a scope, in bounded memory.

FIX scopes a ClOrdID to a session and a day; so does the Guard. An id is
remembered for at least `window_ns` after it was accepted (a rolling window,
by default a day), or for the whole session when there is no window (until
`clear`, which the Guard calls when a new session starts). A duplicate within
the scope is always caught: the check is an exact set lookup, never a
probabilistic filter, so a fresh id is never refused either.

Memory is bounded by the ids accepted within the window: ids leave in the
order they came, counted in time buckets of `window_ns / BUCKETS`, so an id is
forgotten between one window and one window plus one bucket after it was
accepted. Forgetting is spread over later accepts (a few ids each), so no
order pays for forgetting a whole bucket at once; a hit on an id that may
have expired while nothing was accepted catches up first (`recent`).

The ids are kept in `SHARDS` sets chosen by hash, not one. A set rebuilds its
whole table when it grows, and, once ids come and go, whenever the slots its
deletions left fill it up; the add that triggers it pays for all of it, an
order waiting on bookkeeping (with 600,000 ids, 14-37 ms every few hundred
thousand orders). A shard holds 1/256 of the ids, so a rebuild costs 1/256
as much. `bench/orderids_bench.py` measures both.

The shards and the arrival-order deque hold only strings, so the garbage
collector is told not to walk them (`guard/untracked.py`): held in tracked
sets, 1.8 million ids made every full collection, which runs inside an
order's call, take 152 ms.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from knightwatch.guard.untracked import untracked

BUCKETS: Final = 1024
"""Time buckets per window: retention is at most window * (1 + 1 / BUCKETS)."""
_DROP_PER_ADD: Final = 4
"""Expired ids forgotten per accepted order; more than one, so forgetting keeps up."""
SHARDS: Final = 256
"""Sets the ids are spread over (a power of two)."""
SHARD_MASK: Final = SHARDS - 1
_NO_BUCKET: Final = -(1 << 63)
"""`_bucket_end` while no bucket is open: before any time an id can be added at (a
restarted node takes ids back at their age, which is before 0 on a freshly booted host)."""


class OrderIds:
    """An exact set of recent order ids with first-in, first-out expiry by time."""

    __slots__ = (
        "_bucket_end",
        "_bucket_ns",
        "_count",
        "_counts",
        "_expired",
        "_fifo",
        "_starts",
        "_window_ns",
        "count",
        "live",
        "pending",
        "shards",
    )

    def __init__(
        self,
        window_ns: int | None,
        live: dict[str, Any] | None = None,
        pending: dict[str, Any] | None = None,
    ) -> None:
        if window_ns is not None and window_ns <= 0:
            raise ValueError(f"window_ns: must be > 0 or None (got {window_ns})")
        self.shards: list[set[str]] = [untracked(set()) for _ in range(SHARDS)]
        """Every id still remembered, in the shard `hash(id) & SHARD_MASK` (the Guard
        tests membership there directly: one lookup, no call)."""
        self.count = 0
        """Ids remembered."""
        self.live: dict[str, Any] = {} if live is None else live
        """Orders still working, by id (the Guard's ledger): their ids are never forgotten,
        whatever their age or a new session, so a live order's id is never accepted again
        (it would take over the live order's place in the ledger)."""
        self.pending: dict[str, Any] = {} if pending is None else pending
        """Replaces the venue has not answered, by their new id (the Guard's ledger): held
        as a live order's are, so a new order cannot take an id a replace is about to
        carry on (the ack would put the replaced order in its place in the ledger, and
        one of the two orders' working quantity would stay counted for good)."""
        self._window_ns = window_ns
        self._bucket_ns = 0 if window_ns is None else max(1, window_ns // BUCKETS)
        # remembered ids, oldest first (windowed scope only)
        self._fifo: deque[str] = untracked(deque())
        self._starts: deque[int] = deque()  # start of each closed bucket, oldest first
        self._counts: deque[int] = deque()  # ids accepted in each closed bucket
        self._bucket_end = _NO_BUCKET  # the open bucket ends here (exclusive)
        self._count = 0  # ids in the open bucket
        self._expired = 0  # ids at the front of the fifo already past the window

    def __len__(self) -> int:
        return self.count

    def __contains__(self, oid: str) -> bool:
        return oid in self.shards[hash(oid) & SHARD_MASK]

    def add(self, oid: str, now: int) -> None:
        """Remember an accepted id (`now` is monotonic and never runs backwards)."""
        shard = self.shards[hash(oid) & SHARD_MASK]
        n = len(shard)
        shard.add(oid)
        self.count += len(shard) - n
        if self._window_ns is None:
            return
        self._fifo.append(oid)
        if now >= self._bucket_end:
            self._roll(now)
        self._count += 1
        if self._expired:
            self._drop(_DROP_PER_ADD)

    def _roll(self, now: int) -> None:
        """Close the open bucket, open one at `now`, and count what has now expired."""
        if self._bucket_end != _NO_BUCKET:
            self._starts.append(self._bucket_end - self._bucket_ns)
            self._counts.append(self._count)
        self._count = 0
        self._bucket_end = now + self._bucket_ns
        self._expire(now)

    def _expire(self, now: int) -> None:
        window = self._window_ns
        assert window is not None
        starts, counts = self._starts, self._counts
        # every id of a bucket was accepted before its end: once the end is a window
        # behind `now`, all of them are older than the window
        while starts and starts[0] + self._bucket_ns + window <= now:
            starts.popleft()
            self._expired += counts.popleft()

    def _drop(self, n: int) -> None:
        fifo, shards = self._fifo, self.shards
        n = min(n, self._expired)
        gone = 0
        live, pending = self.live, self.pending
        kept = 0
        for _ in range(n):
            oid = fifo.popleft()
            if oid in live or oid in pending:  # still working: held for another window
                fifo.append(oid)
                kept += 1
                continue
            shard = shards[hash(oid) & SHARD_MASK]
            if oid in shard:  # an id added twice left with its first copy
                shard.remove(oid)
                gone += 1
        self._count += kept
        self.count -= gone
        self._expired -= n

    def recent(self, oid: str, now: int) -> bool:
        """On a hit in its shard: is the id still within the scope at `now`?

        Forgetting normally rides on later accepts; an id that went past the
        window while nothing was accepted is still in its shard, so a hit first
        forgets everything expired (a one-off cost on this, blocked or rare, path).
        """
        if self._window_ns is not None:
            self._catch_up(now)
        return oid in self.shards[hash(oid) & SHARD_MASK]

    def _catch_up(self, now: int) -> None:
        if now >= self._bucket_end:
            self._roll(now)
        else:
            self._expire(now)
        self._drop(self._expired)

    def full(self, capacity: int, now: int) -> bool:
        """At or over `capacity` even after forgetting every id already past the window."""
        if self.count < capacity:
            return False
        if self._window_ns is not None:
            self._catch_up(now)
        return self.count >= capacity

    def retune(self, window_ns: int | None, now: int = 0) -> None:
        """A new scope (`Guard.set_limits`), keeping every id remembered now: a wider
        window holds them longer, a narrower one forgets them over the next accepts, and
        ids remembered under the session scope are held for the new window from `now`
        (no session ends under a window: before, they stayed for good). An id that
        was already past the old window when it changed stays forgotten."""
        if window_ns is not None and window_ns <= 0:
            raise ValueError(f"window_ns: must be > 0 or None (got {window_ns})")
        from_session = window_ns is not None and self._window_ns is None
        if from_session:
            assert window_ns is not None
            self._bucket_ns = max(1, window_ns // BUCKETS)
        self._window_ns = window_ns
        if from_session:
            # ids of a windowed scope before the session one are in the fifo already; the
            # rest are the session's, each remembered once, from now
            queued = set(self._fifo)
            for oid in [oid for shard in self.shards for oid in shard if oid not in queued]:
                self.add(oid, now)

    def clear(self, now: int = 0) -> int:
        """Forget every id but those of orders still working or replaces still pending (a
        new session); returns how many were forgotten."""
        n = self.count
        self.shards = [untracked(set()) for _ in range(SHARDS)]
        self.count = 0
        self._fifo = untracked(deque())
        self._starts = deque()
        self._counts = deque()
        self._bucket_end = _NO_BUCKET
        self._count = 0
        self._expired = 0
        for oid in [*self.live, *self.pending]:
            self.add(oid, now)
        return n - self.count
