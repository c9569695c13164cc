"""A recorder that cannot write keeps every record, reports unhealthy, and recovers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from knightwatch.audit import (
    FileSink,
    FlightRecorder,
    FsyncPolicy,
    MemorySink,
    UnwrittenRecords,
    verify_file,
    verify_lines,
)
from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED

from .helpers import CTX, RULES, order

MS = 1_000_000


class FailingSink:
    """A real file sink with a switch that makes writes fail like a full disk."""

    def __init__(self, inner: FileSink | MemorySink) -> None:
        self.inner = inner
        self.failing = False
        self.writes = 0

    def tail(self) -> tuple[bytes | None, bytes]:
        return self.inner.tail()

    def discard_torn(self, n: int) -> None:
        self.inner.discard_torn(n)

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self.failing:
            raise OSError(28, "No space left on device")
        self.inner.write(data)

    def sync(self) -> None:
        self.inner.sync()

    def close(self) -> None:
        self.inner.close()


def test_dev_full_reports_unhealthy_and_keeps_records(clock: SimClock) -> None:
    rec = FlightRecorder("/dev/full", clock=clock, fsync=FsyncPolicy.BATCH)
    assert rec.ready()
    for i in range(3):
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    assert rec.flush() is False
    assert not rec.healthy and rec.pending == 3
    assert rec.ready() is False
    with pytest.raises(UnwrittenRecords, match="3 records could not be written"):
        rec.close()


def test_failed_write_is_retried_and_the_chain_verifies(audit_path: Path, clock: SimClock) -> None:
    sink = FailingSink(FileSink(audit_path))
    rec = FlightRecorder(None, clock=clock, sink=sink, batch_size=4, flush_interval_ms=10)
    for i in range(4):
        assert rec.ready()
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    sink.failing = True
    assert rec.ready() is False  # the full batch flushes, the write fails
    assert rec.pending == 4 and not rec.healthy
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
    report = verify_file(audit_path)
    assert report.intact and report.records == 20


def test_partial_write_is_cut_back_before_retry(tmp_path: Path) -> None:
    """A real EFBIG mid-batch (RLIMIT_FSIZE) leaves no half record in the chain."""
    path = tmp_path / "a.jsonl"
    script = textwrap.dedent(
        f"""
        import resource, signal
        from knightwatch.audit import FlightRecorder, AuditContext
        from knightwatch.clock import SimClock
        from knightwatch.decision import ACCEPTED
        from knightwatch.order import Order, Side
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        ctx = AuditContext(node="n1")
        rec = FlightRecorder({str(path)!r}, clock=SimClock(), batch_size=1000)
        def batch(start):
            for i in range(start, start + 10):
                rec.record_decision(Order(f"o{{i}}", "s", "X", Side.BUY, 1, 1.0), ACCEPTED, ctx, ())
        batch(0)
        assert rec.flush()
        size = {str(path)!r} and __import__("os").path.getsize({str(path)!r})
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1500, hard))
        batch(10)
        assert rec.flush() is False and rec.pending == 10 and not rec.healthy
        assert __import__("os").path.getsize({str(path)!r}) == size, "partial write cut back"
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        assert rec.flush() and rec.healthy and rec.pending == 0
        rec.close()
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    report = verify_file(path)
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
    assert len(rec.lines) == 1
    assert verify_lines([rec.lines[0] + b"\n"], "m").intact


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
    def __init__(self, inner: FileSink | MemorySink) -> None:
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
    audit_path: Path, clock: SimClock, policy: FsyncPolicy
) -> None:
    sink = SyncFailingSink(FileSink(audit_path))
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
    assert verify_file(audit_path).records == 2


def test_batch_fsync_runs_off_the_order_path(audit_path: Path, clock: SimClock) -> None:
    sink = SyncFailingSink(FileSink(audit_path))
    rec = FlightRecorder(None, clock=clock, sink=sink, fsync=FsyncPolicy.BATCH, batch_size=2)
    for i in range(6):
        rec.ready()
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    assert rec.sync()
    assert 1 <= sink.syncs <= 4  # fsyncs were requested per batch, may be shared
    assert "flight-recorder-fsync" in {t.name for t in threading.enumerate()}
    rec.close()
    assert verify_file(audit_path).records == 6
    assert rec._syncer is not None and rec._syncer._thread is not None
    assert not rec._syncer._thread.is_alive(), "close() stops the fsync thread"


def test_none_policy_never_fsyncs_until_asked(audit_path: Path, clock: SimClock) -> None:
    sink = SyncFailingSink(FileSink(audit_path))
    rec = FlightRecorder(None, clock=clock, sink=sink, fsync=FsyncPolicy.NONE, batch_size=2)
    for i in range(6):
        rec.ready()
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    rec.close()
    assert sink.syncs == 0
    assert verify_file(audit_path).records == 6
