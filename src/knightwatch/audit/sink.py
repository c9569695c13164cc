"""Where sealed batches go besides the recorder's own file: memory, a replay's tail, shipping.

A recorder without a file writes each sealed batch (its record lines and the
seal line) to its sink; a recorder with a file also hands every sealed batch
to a sink if given one (the node runtime ships them to the fleet's stream).
A sink's `write` is all-or-nothing: it takes every line or raises OSError, and
the recorder keeps the batch for a retry.
"""

from __future__ import annotations

import errno
from typing import Protocol


class Sink(Protocol):
    def write(self, data: bytes) -> None:
        """Take complete lines (each ending in a newline), in order."""
        ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps lines (without their newline) in a list; same chain, no IO.

    With a `capacity` it behaves like a full disk once that many lines are held:
    the write fails with ENOSPC, the recorder turns unhealthy and the Guard blocks.
    A process with nowhere durable to record must stop, not grow without bound.
    """

    def __init__(self, capacity: int | None = None) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity: must be >= 1 or None (got {capacity})")
        self.capacity = capacity
        self.lines: list[bytes] = []

    def write(self, data: bytes) -> None:
        new = data.split(b"\n")[:-1]  # every sealed line ends in a newline
        if self.capacity is not None and len(self.lines) + len(new) > self.capacity:
            raise OSError(errno.ENOSPC, f"memory flight recorder full ({self.capacity} records)")
        self.lines.extend(new)

    def sync(self) -> None:
        return None

    def close(self) -> None:
        return None
