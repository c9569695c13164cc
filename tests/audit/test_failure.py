"""A recorder that cannot write keeps every record, reports unhealthy, and recovers."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from knightwatch.audit import (
    FlightRecorder,
    FsyncPolicy,
    MemorySink,
    NotARegularFile,
    UnwrittenRecords,
    verify_file,
    verify_lines,
)
from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED

from .helpers import CTX, RULES, order

MS = 1_000_000


class FailingSink:
    """A real memory sink with a switch that makes writes fail like a full disk."""

    def __init__(self, inner: MemorySink) -> None:
        self.inner = inner
        self.failing = False
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self.failing:
            raise OSError(28, "No space left on device")
        self.inner.write(data)

    def sync(self) -> None:
        self.inner.sync()

    def close(self) -> None:
        self.inner.close()


def lines_of(sink: FailingSink) -> list[bytes]:
    return [line + b"\n" for line in sink.inner.lines]


def test_a_device_is_refused_with_a_clear_error(clock: SimClock) -> None:
    with pytest.raises(NotARegularFile, match="/dev/full: not a regular file"):
        FlightRecorder("/dev/full", clock=clock)


def test_failed_write_is_retried_and_the_chain_verifies(clock: SimClock) -> None:
    sink = FailingSink(MemorySink())
    rec = FlightRecorder(None, clock=clock, sink=sink, batch_size=4, flush_interval_ms=10)
    for i in range(4):
        assert rec.ready()
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    sink.failing = True
    assert rec.ready() is False  # the full batch flushes, the write fails
    assert rec.pending == 4 and not rec.healthy and "No space left" in rec.problem
    for i in range(4, 20):  # the Guard records its blocks while unhealthy
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
        assert rec.ready() is False
    assert sink.writes == 1, "no retry before the interval: one syscall per interval"
    clock.advance(10 * MS)
    assert rec.ready() is False and sink.writes == 2
    sink.failing = False
    clock.advance(10 * MS)
    assert rec.ready() is True and rec.healthy and rec.pending == 0
    rec.close()
    report = verify_lines(lines_of(sink), "m")
    assert report.intact and report.records == 20


def test_max_pending_makes_the_recorder_unhealthy(clock: SimClock) -> None:
    sink = FailingSink(MemorySink())
    rec = FlightRecorder(None, clock=clock, sink=sink, batch_size=2, max_pending=5)
    sink.failing = True
    for i in range(4):
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    rec.flush()
    sink.failing = False
    assert rec.pending == 4
    rec.record_decision(order(4), ACCEPTED, CTX, RULES)
    assert not rec.healthy  # 5 pending >= max_pending
    assert rec.flush() and rec.healthy


def test_closed_recorder_is_unhealthy_and_close_is_idempotent(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock)
    rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    rec.close()
    rec.close()
    assert not rec.healthy and rec.ready() is False
    assert rec.flush() is False
    assert len(rec.lines) == 2  # the record and its seal
    assert verify_lines([line + b"\n" for line in rec.lines], "m").intact


def test_unwritable_path_is_a_clear_error(tmp_path: Path, clock: SimClock) -> None:
    with pytest.raises(FileNotFoundError):
        FlightRecorder(tmp_path / "missing-dir" / "a.jsonl", clock=clock)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"flush_interval_ms": -1.0}, "flush_interval_ms"),
        ({"flush_interval_ms": float("nan")}, "flush_interval_ms"),
        ({"flush_interval_ms": float("inf")}, "flush_interval_ms"),
        ({"max_pending": 0}, "max_pending"),
    ],
)
def test_bad_settings_name_the_field(clock: SimClock, kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        FlightRecorder(None, clock=clock, **kwargs)  # type: ignore[arg-type]


class SyncFailingSink(FailingSink):
    def __init__(self, inner: MemorySink) -> None:
        super().__init__(inner)
        self.sync_failing = False
        self.syncs = 0

    def sync(self) -> None:
        self.syncs += 1
        if self.sync_failing:
            raise OSError(5, "Input/output error")
        self.inner.sync()


@pytest.mark.parametrize("policy", [FsyncPolicy.BATCH, FsyncPolicy.ALWAYS])
def test_failed_fsync_makes_the_recorder_unhealthy_until_one_succeeds(
    clock: SimClock, policy: FsyncPolicy
) -> None:
    sink = SyncFailingSink(MemorySink())
    rec = FlightRecorder(None, clock=clock, sink=sink, fsync=policy)
    rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    assert rec.sync() and rec.healthy
    sink.sync_failing = True
    rec.record_decision(order(2), ACCEPTED, CTX, RULES)
    assert rec.sync() is False
    assert not rec.healthy and rec.ready() is False
    with pytest.raises(UnwrittenRecords, match="fsync failed"):
        rec.close()
    sink.sync_failing = False
    assert rec.sync() and rec.healthy and rec.ready()
    rec.close()
    assert not rec.healthy
    assert verify_lines(lines_of(sink), "m").records == 2


def test_none_policy_never_fsyncs_until_asked(clock: SimClock) -> None:
    sink = SyncFailingSink(MemorySink())
    rec = FlightRecorder(None, clock=clock, sink=sink, fsync=FsyncPolicy.NONE, batch_size=2)
    for i in range(6):
        rec.ready()
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    rec.close()
    assert sink.syncs == 0
    assert verify_lines(lines_of(sink), "m").records == 6


def test_file_recorder_seals_and_fsyncs_off_the_order_path(
    audit_path: Path, clock: SimClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = FlightRecorder(audit_path, clock=clock, fsync=FsyncPolicy.BATCH, batch_size=2)
    sealer, syncer = rec._sealer, rec._syncer
    assert sealer is not None and sealer.name == "flight-recorder-sealer" and sealer.is_alive()
    assert syncer is not None and syncer._thread is None, "no fsync thread before a seal"
    # The sealer asks for the fsync once it sees a seal, in its own time: the test
    # waits for that request itself (the real one, noted), not for a while.
    asked = threading.Event()
    request = syncer.request

    def request_and_note() -> None:
        request()
        asked.set()

    monkeypatch.setattr(syncer, "request", request_and_note)
    for i in range(6):
        rec.ready()
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    assert rec.sync()
    assert sealer.is_alive()
    assert asked.wait(timeout=120), "the sealer never asked for an fsync after a seal"
    assert syncer._thread is not None and syncer._thread.name == "flight-recorder-fsync"
    assert syncer._thread.is_alive()
    rec.close()
    report = verify_file(audit_path)
    assert report.intact and report.records == 6
    assert not sealer.is_alive() and not syncer._thread.is_alive(), "close() stops both"


def test_full_disk_blocks_then_recovers_without_losing_a_record(tmp_path: Path) -> None:
    """A real EFBIG (RLIMIT_FSIZE) when the next segment is allocated: unhealthy, then healthy."""
    path = tmp_path / "a.jsonl"
    script = textwrap.dedent(
        f"""
        import resource, signal, time
        import knightwatch.audit.log as log
        log.SEGMENT = 1 << 20  # small segments, so the test reaches the limit quickly
        from knightwatch.audit import FlightRecorder, AuditContext
        from knightwatch.clock import SystemClock
        from knightwatch.decision import ACCEPTED
        from knightwatch.order import Order, Side
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))  # one segment, no second
        ctx = AuditContext(node="n1")
        rec = FlightRecorder({str(path)!r}, clock=SystemClock(), flush_interval_ms=2)
        n = 0
        deadline = time.monotonic() + 20
        while rec.ready():
            rec.record_decision(Order(f"o{{n}}", "s", "X", Side.BUY, 1, 1.0), ACCEPTED, ctx, ())
            n += 1
            assert time.monotonic() < deadline, "never turned unhealthy"
        assert "cannot grow" in rec.problem, rec.problem
        assert n > 1000, n
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space comes back
        while not rec.ready():
            time.sleep(0.002)
            assert time.monotonic() < deadline, "never recovered"
        for _ in range(10):
            rec.record_decision(Order(f"o{{n}}", "s", "X", Side.BUY, 1, 1.0), ACCEPTED, ctx, ())
            n += 1
        rec.close()
        print(n)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    n = int(out.stdout)
    report = verify_file(path)
    assert report.intact and report.records == n


def test_verify_refuses_a_pipe_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """`verify_file` on a FIFO blocked until someone wrote to it (only the CLI refused it);
    it is refused at once. Should it wait, opening the write end lets it go on, and it
    returns a report where it should have raised."""
    fifo = tmp_path / "audit.jsonl"
    os.mkfifo(fifo)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(verify_file(fifo))
        except NotARegularFile as exc:
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    while t.is_alive():  # a verifier blocked on the pipe: give it a writer, then its end
        with contextlib.suppress(OSError):  # no reader yet (ENXIO), or none any more
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(0.01)
    t.join()
    assert len(outcome) == 1 and isinstance(outcome[0], NotARegularFile), outcome
    assert str(outcome[0]) == (
        f"{fifo}: a device, pipe or socket, not a flight-recorder file "
        "(a recorder writes a regular file)"
    )


@pytest.mark.parametrize("name", [os.devnull, "dir"])
def test_verify_refuses_a_device_or_directory_not_reports_it_intact(
    tmp_path: Path, name: str
) -> None:
    """/dev/null (empty, always) verified intact: a wrong path looked like a clean record."""
    path = Path(name) if name == os.devnull else tmp_path
    what = "a directory" if name == "dir" else "a device, pipe or socket"
    with pytest.raises(NotARegularFile, match=f"^{re.escape(str(path))}: {what}, not a"):
        verify_file(path)
