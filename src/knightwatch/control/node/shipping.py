"""Ship flight-recorder lines to the fleet's audit stream without slowing the Guard.

The local file stays the record of truth (it is written first, with the
recorder's own fail-closed rules); the stream copy lets an operator read every
node's decisions in one place. Lines wait in a bounded buffer that the node
runtime drains in the background, many lines to a message; if the control plane
is away for long, the oldest lines are dropped from the buffer (never from the
file) and counted. The buffer is bounded in lines and in bytes: a recorder's line
may be up to 16 KiB, and 100,000 of them were 1.6 GB of copies in memory.
"""

from __future__ import annotations

import threading
from collections import deque

from knightwatch.audit.sink import Sink

DEFAULT_MAX_LINES = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""More than 100,000 typical lines (a decision is about 560 bytes): for those the line
bound holds first."""


class ShippingSink:
    """A `Sink` that queues each sealed line for shipping, writing through to `inner` if given.

    A recorder with a file hands it every sealed batch (the file is written
    first); a recorder without one writes through it to `inner`. It holds at most
    `max_buffered` lines and `max_bytes` bytes of them (newlines not counted), dropping
    the oldest (`dropped`). `write` may come from a recorder's other thread (a
    `LockedGuard`'s engine) while the event loop `take`s: both hold a lock.
    """

    def __init__(
        self,
        inner: Sink | None = None,
        max_buffered: int = DEFAULT_MAX_LINES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.inner = inner
        self._queue: deque[bytes] = deque()
        self._max_lines = max_buffered
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self.dropped = 0

    def write(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.write(data)
        lines = data.splitlines()
        size = sum(map(len, lines))
        with self._lock:
            q = self._queue
            q.extend(lines)
            self._bytes += size
            dropped = 0
            while q and (len(q) > self._max_lines or self._bytes > self._max_bytes):
                self._bytes -= len(q.popleft())
                dropped += 1
            self.dropped += dropped

    def sync(self) -> None:
        if self.inner is not None:
            self.inner.sync()

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()

    def take(self, limit: int, max_bytes: int) -> list[bytes]:
        """Up to `limit` lines in write order, removed from the buffer: as many as fit in
        `max_bytes` (newlines counted), and always the first, whatever its size."""
        q = self._queue
        out: list[bytes] = []
        size = 0
        with self._lock:
            while q and len(out) < limit:
                n = len(q[0]) + 1
                if out and size + n > max_bytes:
                    break
                out.append(q.popleft())
                size += n
            self._bytes -= size - len(out)
        return out
