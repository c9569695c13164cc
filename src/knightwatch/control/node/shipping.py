"""Ship flight-recorder lines to the fleet's audit stream without slowing the Guard.

The local file stays the record of truth (it is written first, with the
recorder's own fail-closed rules); the stream copy lets an operator read every
node's decisions in one place. Lines wait in a bounded buffer that the node
runtime drains in the background, many lines to a message; if the control plane
is away for long, the oldest lines are dropped from the buffer (never from the
file) and counted.
"""

from __future__ import annotations

from collections import deque

from knightwatch.audit.sink import Sink


class ShippingSink:
    """A `Sink` that queues each sealed line for shipping, writing through to `inner` if given.

    A recorder with a file hands it every sealed batch (the file is written
    first); a recorder without one writes through it to `inner`.
    """

    def __init__(self, inner: Sink | None = None, max_buffered: int = 100_000) -> None:
        self.inner = inner
        self._queue: deque[bytes] = deque(maxlen=max_buffered)
        self.dropped = 0

    def write(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.write(data)
        lines = data.splitlines()
        overflow = len(self._queue) + len(lines) - (self._queue.maxlen or 0)
        if overflow > 0:
            self.dropped += overflow
        self._queue.extend(lines)

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
        while q and len(out) < limit:
            n = len(q[0]) + 1
            if out and size + n > max_bytes:
                break
            out.append(q.popleft())
            size += n
        return out
