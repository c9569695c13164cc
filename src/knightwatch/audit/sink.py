"""Where sealed lines go: a local append-only file, or memory for tests and replays.

A sink's `write` is all-or-nothing: either every byte of the batch is appended,
or OSError is raised and the file is as it was before the call (a partial write
is cut back), so a retry never leaves half a record in the middle of the chain.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from typing import Protocol

from knightwatch.audit.errors import RecorderLocked

_TAIL_CHUNK = 64 * 1024


class Sink(Protocol):
    def tail(self) -> tuple[bytes | None, bytes]:
        """(last complete line without its newline or None, torn bytes after it)."""
        ...

    def discard_torn(self, n: int) -> None:
        """Remove the last n bytes (a torn record left by a crash)."""
        ...

    def write(self, data: bytes) -> None: ...

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

    def tail(self) -> tuple[bytes | None, bytes]:
        return (self.lines[-1] if self.lines else None), b""

    def discard_torn(self, n: int) -> None:
        if n:
            raise ValueError("a memory sink never holds a torn record")

    def write(self, data: bytes) -> None:
        new = data.split(b"\n")[:-1]  # every sealed line ends in a newline
        if self.capacity is not None and len(self.lines) + len(new) > self.capacity:
            raise OSError(errno.ENOSPC, f"memory flight recorder full ({self.capacity} records)")
        self.lines.extend(new)

    def sync(self) -> None:
        return None

    def close(self) -> None:
        return None


class FileSink:
    """An O_APPEND file held under an exclusive flock for the recorder's lifetime."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RecorderLocked(
                    f"{self.path}: another flight recorder is appending to this file"
                ) from exc
            raise
        self._fd = fd
        st = os.fstat(fd)
        # Devices and pipes (e.g. /dev/full, a log shipper's FIFO) have no size to
        # resume from or cut back to, and fsync means nothing for them.
        self._regular = stat.S_ISREG(st.st_mode)
        self._size = st.st_size if self._regular else 0
        self._dirty = False

    def tail(self) -> tuple[bytes | None, bytes]:
        if not self._regular or self._size == 0:
            return None, b""
        end = self._size
        buf = b""
        pos = end
        while True:
            start = max(0, pos - _TAIL_CHUNK)
            buf = os.pread(self._fd, pos - start, start) + buf
            pos = start
            last_nl = buf.rfind(b"\n")
            if last_nl >= 0:
                prev_nl = buf.rfind(b"\n", 0, last_nl)
                if prev_nl >= 0 or pos == 0:
                    return buf[prev_nl + 1 : last_nl], buf[last_nl + 1 :]
            elif pos == 0:
                return None, buf

    def discard_torn(self, n: int) -> None:
        if n:
            os.ftruncate(self._fd, self._size - n)
            self._size -= n

    def write(self, data: bytes) -> None:
        if self._dirty:
            os.ftruncate(self._fd, self._size)
            self._dirty = False
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError:
            if done and self._regular:
                self._dirty = True
                try:
                    os.ftruncate(self._fd, self._size)
                    self._dirty = False
                except OSError:
                    pass  # cut back before the next write instead
            raise
        self._size += done

    def sync(self) -> None:
        # fdatasync also persists the new file size (needed to read the appended
        # bytes back), which is all an append-only log needs; it skips mtime.
        if self._regular:
            os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
