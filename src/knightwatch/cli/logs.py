"""Log lines are written by a background thread at a lower CPU priority, not by the
thread that logs them.

Why: the lines a process logs while it trades (a node's `HALT` after each kill, a
Guard's `BLOCK_ORDER`, a gateway's refusals) were formatted and written to stderr
by the thread that had the kill or the order in hand: the time stamp, the caller
lookup, the formatting and a write system call, 0.12-0.17 ms of a node's CPU per
kill on a two-core machine (`bench/kill_bench.py` with `KNIGHTWATCH_LOG=ERROR`
against the default, alternating), and, when stderr is a pipe whose reader
stalls, as long as the reader takes. On a host shared by many processes that CPU
is taken from the next process's confirmation. Here the calling thread only
builds the record and merges its arguments (so a value changed later cannot
change the line); a writer thread at nice +`WRITER_NICE` (Linux: a thread's own
priority) formats and writes, flushing once per burst, in the time the
latency-critical threads leave.

Bounded: at most `QUEUE_MAX` lines wait. When the queue is full (the writer
starved or its stream stuck), a line is dropped, never the caller stalled; the
writer says how many were dropped in its next line. A write the stream refuses (a
full disk, a closed pipe) is counted the same way and said, with the stream's error,
in the first line a later write gets out: lines are never lost unsaid. Logs are the operator's
view; the flight recorder is the record and is not affected. Everything queued
is written at exit.

Written as the operator can trust them: a line's values come from the control plane,
a venue's FIX messages, files and exceptions, so a control character in one is written
escaped (`\\x1b`, `\\r`, `\\u202e`), never to the terminal, and a newline in a record
(a value's, a traceback's) continues its record on a line indented by `CONTINUATION`: a
value cannot forge a line that reads as another record, or rewrite the terminal.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from typing import Final, TextIO

from knightwatch.errors import escaped, quoted

FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
QUEUE_MAX: Final = 10_000
"""Lines that may wait for the writer before new ones are dropped."""
WRITER_NICE: Final = 10
"""How much lower the writer thread's CPU priority is than the process's."""
GATHER_S: Final = 0.05
"""How long the writer lets lines gather after the first before it writes them."""
LEVELS: Final = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
"""The level names `KNIGHTWATCH_LOG` may give (docs/runbook.md)."""
CONTINUATION: Final = "    "
"""What starts the second and later lines of one record: no record's line starts so."""


def printable(line: str) -> str:
    """`line` with every character that is not printable escaped, its newlines kept as
    `CONTINUATION` lines of the same record."""
    if line.isprintable():
        return line
    return ("\n" + CONTINUATION).join(escaped(part) for part in line.split("\n"))


class QueuedHandler(logging.Handler):
    """Hands each record to a `Writer` thread; never blocks the caller."""

    def __init__(self, writer: Writer) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg = record.getMessage()
            record.args = None
        except Exception:  # a broken format string: logging's own report, as before
            self.handleError(record)
            return
        self.writer.put(record)


class Writer(threading.Thread):
    """Formats and writes queued records to one stream, at a lower priority.

    It wakes once per `GATHER_S` at most, not once per line, and writes what
    gathered in one call: waking a thread costs a context switch each way, which on a
    host shared by many processes is CPU taken from the others as surely as the
    write itself.
    """

    def __init__(
        self, stream: TextIO, formatter: logging.Formatter, maxsize: int, gather_s: float
    ) -> None:
        super().__init__(name="knightwatch-log-writer", daemon=True)
        self.stream = stream
        self.formatter = formatter
        self.maxsize = maxsize
        self.gather_s = gather_s
        self.dropped = 0
        self._unwritten = 0  # lines a failed write took with it; the writer's own
        self._why = ""  # why the last write failed
        self._pending: list[logging.LogRecord] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ending = threading.Event()

    def put(self, record: logging.LogRecord) -> None:
        with self._lock:
            if self._ending.is_set() or len(self._pending) >= self.maxsize:
                self.dropped += 1
                return
            self._pending.append(record)
            # the writer clears `_wake` under this lock as it takes the batch, so a line
            # put after that sets it again: no line waits for a later one
            if not self._wake.is_set():
                self._wake.set()

    def run(self) -> None:
        if sys.platform == "linux":  # there a thread id names one thread's priority
            with contextlib.suppress(OSError):  # a sandbox forbids it: still off the caller
                tid = threading.get_native_id()
                now = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, now + WRITER_NICE)
        while True:
            self._wake.wait()
            self._ending.wait(self.gather_s)  # let a burst gather (at exit: no wait)
            with self._lock:
                batch, self._pending = self._pending, []
                dropped, self.dropped = self.dropped, 0
                self._wake.clear()
                stopping = self._ending.is_set()
            self._write(batch, dropped)
            if stopping:
                return

    def _write(self, batch: list[logging.LogRecord], dropped: int) -> None:
        fmt = self.formatter.format
        lines = []
        if self._unwritten:
            note = f"{self._unwritten} log lines may be lost: writing them failed ({self._why})"
            lines.append(fmt(logging.LogRecord(__name__, logging.WARNING, "", 0, note, None, None)))
        if dropped:
            note = f"{dropped} log lines dropped: the log writer fell {self.maxsize} lines behind"
            lines.append(fmt(logging.LogRecord(__name__, logging.WARNING, "", 0, note, None, None)))
        for record in batch:
            try:
                lines.append(printable(fmt(record)))
            except Exception:  # a record its formatter cannot print: say so, go on
                lines.append(f"unprintable log record from {record.name}")
        if not lines:  # woken at exit with nothing queued
            return
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except Exception as exc:  # a full disk, a closed pipe: counted, said once it writes
            self._unwritten += len(batch)
            self._why = escaped(f"{type(exc).__name__}: {exc}")
            if dropped:  # the note that said so went with the batch: say it next time
                with self._lock:
                    self.dropped += dropped
        else:
            self._unwritten = 0

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, then end (at exit)."""
        with self._lock:
            self._ending.set()
            self._wake.set()
        if self.is_alive():
            self.join(timeout)


def configure(level: str | int, stream: TextIO | None = None) -> Writer | None:
    """Log to `stream` (stderr) through a writer thread, as `logging.basicConfig` would:
    nothing changes if the root logger already has a handler (a test's, an embedder's).

    Returns the writer when it configured one. An unknown level name is a
    `ValueError` naming the known ones, whether or not anything is configured.
    """
    if not isinstance(level, int) and level not in LEVELS:
        # NOTSET, WARN and FATAL too: logging's aliases, but not the names the runbook gives
        known = ", ".join(LEVELS)
        raise ValueError(f"log level must be one of {known} (got {quoted(level)})")
    root = logging.getLogger()
    if root.handlers:
        return None
    # The record fields this format never prints are not gathered (the logging
    # HOWTO's "Optimization" section): the caller's file and line, thread, process.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    writer = Writer(
        stream if stream is not None else sys.stderr, logging.Formatter(FORMAT), QUEUE_MAX, GATHER_S
    )
    writer.start()
    atexit.register(writer.stop)
    root.addHandler(QueuedHandler(writer))
    root.setLevel(level)
    return writer
