"""Group-commit fsync on a background thread, so the order path never waits on the disk.

With `FsyncPolicy.BATCH` the recorder writes each batch on the caller's thread
(a copy into the page cache) and asks this thread to fsync. One fsync covers
every batch written before it started, so under load batches share fsyncs
instead of queueing behind them. A failed fsync is reported to the recorder,
which turns unhealthy (the Guard blocks) until a later fsync succeeds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Syncer:
    def __init__(self, sync: Callable[[], None], report: Callable[[OSError | None], None]) -> None:
        self._sync = sync
        self._report = report
        self._cond = threading.Condition()
        self._requested = 0  # generation of the newest write that needs an fsync
        self._attempted = 0  # generation the last finished fsync covered
        self._stopping = False
        self._thread: threading.Thread | None = None  # started by the first request

    def request(self) -> None:
        """Everything written so far must reach stable storage."""
        with self._cond:
            self._requested += 1
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="flight-recorder-fsync", daemon=True
                )
                self._thread.start()

    def drain(self) -> None:
        """Block until an fsync covering every request so far has finished."""
        with self._cond:
            target = self._requested
            while self._attempted < target and self._thread is not None and self._thread.is_alive():
                self._cond.wait()

    def stop(self) -> None:
        self.drain()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._attempted == self._requested and not self._stopping:
                    self._cond.wait()
                if self._attempted == self._requested:
                    return
                target = self._requested
            error: OSError | None = None
            try:
                self._sync()
            except OSError as exc:
                error = exc
            self._report(error)
            with self._cond:
                self._attempted = target
                self._cond.notify_all()
