"""Log lines leave through a writer thread: none lost at exit, none changed after the
call, the caller never stalled by a stuck stream, drops counted and said."""

from __future__ import annotations

import errno
import io
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner

from knightwatch.cli import logs
from knightwatch.cli.app import app


class Stuck(io.StringIO):
    """A stream whose writes wait until `release` is set (a stderr pipe nobody reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, s: str) -> int:
        self.entered.set()
        self.release.wait()
        return super().write(s)


def _record(msg: str, *args: Any) -> logging.LogRecord:
    return logging.LogRecord("t", logging.WARNING, "", 0, msg, args or None, None)


def _writer(stream: io.StringIO, maxsize: int = 100) -> logs.Writer:
    w = logs.Writer(stream, logging.Formatter("%(message)s"), maxsize, gather_s=0.0)
    w.start()
    return w


def test_every_line_logged_before_exit_is_written_in_order() -> None:
    script = textwrap.dedent(
        """
        import logging
        from knightwatch.cli import logs
        assert logs.configure("INFO") is not None
        log = logging.getLogger("kw.test")
        for i in range(3000):
            log.warning("line %d", i)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = out.stderr.splitlines()
    assert [ln.rsplit(" ", 1)[1] for ln in lines] == [str(i) for i in range(3000)]
    assert all(" WARNING kw.test line " in ln for ln in lines)


def test_a_line_says_the_values_it_had_when_it_was_logged() -> None:
    stream = Stuck()
    w = _writer(stream)
    handler = logs.QueuedHandler(w)
    held = ["before"]
    handler.emit(_record("first"))  # the writer takes it and waits on the stuck stream
    assert stream.entered.wait(10)
    handler.emit(_record("value=%s", held))
    held[0] = "after"
    stream.release.set()
    w.stop()
    assert stream.getvalue().splitlines() == ["first", "value=['before']"]


def test_a_stuck_stream_never_stalls_the_caller_and_drops_are_counted_and_said() -> None:
    stream = Stuck()
    w = _writer(stream, maxsize=5)
    w.put(_record("taken"))
    assert stream.entered.wait(10)  # the writer is inside write() and stays there
    for i in range(12):  # returns although nothing can be written: 5 wait, 7 are dropped
        w.put(_record(f"queued {i}"))
    assert w.dropped == 7
    stream.release.set()
    w.stop()
    assert not w.is_alive()
    assert stream.getvalue().splitlines() == [
        "taken",
        "7 log lines dropped: the log writer fell 5 lines behind",
        *(f"queued {i}" for i in range(5)),
    ]


def test_after_stop_lines_are_dropped_not_queued_for_no_one() -> None:
    stream = io.StringIO()
    w = _writer(stream)
    w.put(_record("kept"))
    w.stop()
    w.put(_record("late"))
    assert stream.getvalue() == "kept\n"
    assert w.dropped == 1


def test_the_writer_runs_at_a_lower_priority_than_the_process() -> None:
    """On Linux a thread id names that thread's own priority, and the writer lowers it.
    Elsewhere the id would name the whole process, so nothing is lowered there; on every
    platform the caller's priority stays as it was."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    stream = Stuck()
    w = _writer(stream)
    w.put(_record("x"))
    assert stream.entered.wait(10)  # run() set its priority before it took the line
    assert w.native_id is not None
    if sys.platform == "linux":
        assert os.getpriority(os.PRIO_PROCESS, w.native_id) == min(base + logs.WRITER_NICE, 19)
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the caller's is unchanged
    stream.release.set()
    w.stop()


def test_a_value_can_neither_forge_a_line_nor_reach_the_terminal_unescaped() -> None:
    """A kill reason, a venue's ClOrdID, a file name: a newline in one must not start a line
    that reads as a record of its own, nor an escape sequence or a carriage return rewrite
    the operator's screen. A traceback logged within a record stays readable."""
    forged = "x\n2026-12-06 10:00:00,000 CRITICAL kw.node HALT cleared\r\x1b[2J\u202eend\udcff"
    stream = io.StringIO()
    w = logs.Writer(stream, logging.Formatter(logs.FORMAT), 100, gather_s=0.0)
    w.start()
    handler = logs.QueuedHandler(w)
    handler.emit(_record("UNKNOWN_REPORT clordid=%s", forged))
    handler.emit(_record("FIX_CALLBACK_ERROR %s\n%s", "cb", "Traceback:\n  line 1"))
    w.stop()
    lines = stream.getvalue().splitlines()
    records = [ln for ln in lines if not ln.startswith(logs.CONTINUATION)]
    assert len(records) == 2
    assert records[0].endswith(" WARNING t UNKNOWN_REPORT clordid=x")
    assert lines[1] == (
        logs.CONTINUATION
        + "2026-12-06 10:00:00,000 CRITICAL kw.node HALT cleared\\r\\x1b[2J\\u202eend\\udcff"
    )
    assert lines[3:] == [logs.CONTINUATION + "Traceback:", logs.CONTINUATION + "  line 1"]
    assert all(ln.isprintable() for ln in lines)


def test_configure_leaves_a_configured_root_alone() -> None:
    root = logging.getLogger()
    marker = logging.NullHandler()
    root.addHandler(marker)
    try:
        before = list(root.handlers)
        assert logs.configure("DEBUG") is None
        assert root.handlers == before
    finally:
        root.removeHandler(marker)


@pytest.mark.parametrize("level", ["LOUD", "warning", "", "NOTSET", "WARN", "FATAL"])
def test_an_unknown_level_is_refused_naming_the_known_ones(level: str) -> None:
    with pytest.raises(ValueError, match="log level must be one of CRITICAL, ERROR, WARNING"):
        logs.configure(level)


def test_the_cli_names_the_variable_of_a_bad_level_in_one_line() -> None:
    result = CliRunner().invoke(
        app,
        ["status", "--nats-url", "nats://127.0.0.1:1"],
        env={"KNIGHTWATCH_LOG": "LOUD", "COLUMNS": "250"},
    )
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: KNIGHTWATCH_LOG: log level must be one of")
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


class Full(io.StringIO):
    """A stream on a full disk: every write fails until `space` is set; the first one
    waits for `release` first (the writer is inside it while lines queue)."""

    def __init__(self) -> None:
        super().__init__()
        self.space = threading.Event()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.refusals = 0

    def write(self, s: str) -> int:
        self.entered.set()
        self.release.wait()
        if not self.space.is_set():
            self.refusals += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(s)


def test_lines_a_full_disk_refused_are_counted_and_said_once_it_writes_again() -> None:
    stream = Full()
    w = _writer(stream, maxsize=2)
    w.put(_record("refused 1"))
    assert stream.entered.wait(10)  # the writer is inside write() with it
    for i in (2, 3, 4):  # 2 and 3 wait, 4 is dropped
        w.put(_record(f"queued {i}"))
    stream.release.set()  # 1 is refused, then 2 and 3 with the note on the drop
    assert until(lambda: stream.refusals == 2)
    stream.space.set()
    w.put(_record("written"))
    w.stop()
    assert stream.getvalue().splitlines() == [
        "3 log lines may be lost: writing them failed (OSError: [Errno 28] No space left on"
        " device)",
        "1 log lines dropped: the log writer fell 2 lines behind",
        "written",
    ]


def until(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True
