"""When records are sealed and where they are at each moment: batch, interval, fsync policy."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from knightwatch.audit import FlightRecorder, FsyncPolicy, verify_file
from knightwatch.audit.log import PREFAULT, PREFAULT_MIN, PRELOAD_FACTOR, is_seal
from knightwatch.audit.recorder import INLINE_HASH, _sized
from knightwatch.clock import SimClock, SystemClock
from knightwatch.decision import ACCEPTED
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Order, Side

from .helpers import CTX, RULES, order, resident

MS = 1_000_000


def test_interval_flush_on_a_simulated_clock(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock, batch_size=1000, flush_interval_ms=50)
    for i in range(3):
        assert rec.ready()
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    clock.advance(49 * MS)
    assert rec.ready() and rec.lines == [] and rec.pending == 3
    clock.advance(1 * MS)
    assert rec.ready() and len(rec.lines) == 4 and rec.pending == 0  # 3 records and a seal
    rec.record_decision(order(3), ACCEPTED, CTX, RULES)
    clock.advance(49 * MS)
    assert rec.ready() and len(rec.lines) == 4  # the interval restarts at each flush
    clock.advance(1 * MS)
    assert rec.ready() and len(rec.lines) == 6


def test_full_batch_flushes_before_the_next_decision(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock, batch_size=4, flush_interval_ms=1e9)
    for i in range(4):
        assert rec.ready()
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    assert rec.lines == []  # recording never writes by itself
    assert rec.ready()
    assert len(rec.lines) == 5 and is_seal(rec.lines[-1])


def test_events_share_the_batch_and_the_chain(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock, batch_size=2, flush_interval_ms=1e9)
    rec.record_event("arm", CTX, actor="ops")
    rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    assert rec.ready() and len(rec.lines) == 3


@pytest.mark.parametrize("policy", list(FsyncPolicy))
def test_every_policy_puts_the_record_in_the_file_before_returning(
    audit_path: Path, clock: SimClock, policy: FsyncPolicy
) -> None:
    """The crash-safety promise, seen from inside: the file holds the line at once."""
    rec = FlightRecorder(audit_path, clock=clock, fsync=policy, batch_size=512)
    rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    assert audit_path.read_bytes().rstrip(b"\0").count(b'"order_id":"o1"') == 1
    rec.record_event(
        "halt", CTX, scope="fleet", key="fleet", state="HALTED", code="halted",
        reason="drill", actor="ops",
    )  # fmt: skip
    assert audit_path.read_bytes().rstrip(b"\0").count(b"\n") == 2
    rec.close()
    report = verify_file(audit_path)
    assert report.intact and report.records == 2 and report.seals == 1


def test_policies_write_the_same_records(tmp_path: Path) -> None:
    records = []
    for policy in FsyncPolicy:
        path = tmp_path / f"{policy}.jsonl"
        with FlightRecorder(path, clock=SimClock(1), fsync=policy, batch_size=3) as rec:
            for i in range(10):
                rec.ready()
                rec.record_decision(order(i), ACCEPTED, CTX, RULES)
        report = verify_file(path)
        assert report.intact and report.records == 10
        records.append([line for line in path.read_bytes().splitlines() if not is_seal(line)])
    # seals fall where the background thread finished hashing, so seq may differ; the
    # records' content may not
    stripped = [[line.split(b",", 1)[1] for line in r] for r in records]
    assert stripped[0] == stripped[1] == stripped[2]


def test_a_file_recorder_seals_a_full_batch_at_the_next_ready(
    audit_path: Path, clock: SimClock
) -> None:
    rec = FlightRecorder(audit_path, clock=clock, batch_size=4, flush_interval_ms=1e9)
    for i in range(4):
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    deadline = time.monotonic() + 15  # a thread a loaded machine keeps off the core
    while time.monotonic() < deadline:  # the background thread hashes, then ready() seals
        if rec.ready() and rec.pending == 0:
            break
        time.sleep(0.001)
    assert rec.pending == 0
    assert verify_file(audit_path).intact
    rec.close()


def test_a_run_of_events_is_sealed_without_waiting_for_a_decision(
    audit_path: Path, clock: SimClock
) -> None:
    """Fills and cancels between orders: the batch is sealed as they come, so the next
    order is not the one that hashes everything they wrote."""
    rec = FlightRecorder(audit_path, clock=clock, batch_size=4, flush_interval_ms=1e9)
    deadline = time.monotonic() + 15  # as long as a loaded machine keeps the sealer waiting
    i = 0
    while time.monotonic() < deadline:
        rec.record_event("fill", CTX, n=i)
        if i > 4 and rec.pending < 4:
            break
        i += 1
        time.sleep(0.001)
    assert rec.pending < 4, "a batch handed for sealing waited for the next decision"
    rec.close()
    assert verify_file(audit_path).intact


def test_a_writer_that_never_pauses_still_has_its_batches_sealed(
    audit_path: Path, clock: SimClock
) -> None:
    """The background thread cannot catch up with a thread that writes without a pause;
    it hands an overdue batch over anyway, so unsealed records stay bounded."""
    rec = FlightRecorder(audit_path, clock=clock, batch_size=4, flush_interval_ms=1e9)
    start = time.monotonic()
    worst = n = 0
    while time.monotonic() - start < 2.0:
        rec.record_event("fill", CTX, n=n, pad="x" * 400)
        n += 1
        if time.monotonic() - start > 1.0:
            worst = max(worst, rec.pending)
    rec.close()
    assert verify_file(audit_path).intact
    assert worst < n // 4, f"{worst} of {n} records were left unsealed"


def _outrun_sealer(rec: FlightRecorder) -> list[int]:
    """Slow the sealer thread's reads (a sealer the scheduler keeps off the core), so the
    calling thread outruns it by megabytes; returns the sizes this thread hashes, per call."""
    assert rec._log is not None
    log = rec._log
    feed = log.feed
    writer = threading.get_ident()
    slices: list[int] = []

    def slow_sealer(h: Any, start: int, end: int, buf: bytearray) -> None:
        if threading.get_ident() == writer:
            slices.append(end - start)
        else:
            time.sleep(0.02)
        feed(h, start, end, buf)

    log.feed = slow_sealer  # type: ignore[method-assign]
    return slices


def test_a_writer_that_outran_the_sealer_hashes_the_rest_a_slice_per_call(
    audit_path: Path, clock: SimClock
) -> None:
    """A handed-over batch megabytes behind the end is hashed by the writer's calls at most
    `INLINE_HASH` bytes each, never in one call; the seals still cover every byte."""
    rec = FlightRecorder(audit_path, clock=clock, batch_size=4, flush_interval_ms=1e9)
    slices = _outrun_sealer(rec)
    start = time.monotonic()
    n = seals = 0
    while time.monotonic() - start < 1.5:
        before = rec.pending
        rec.ready()
        rec.record_event("fill", CTX, n=n, pad="x" * 400)
        n += 1
        seals += rec.pending <= before  # a seal in this round took records off
    assert slices, "the sealer never handed a batch over to the writer"
    assert max(slices) <= INLINE_HASH, f"one call hashed {max(slices)} bytes"
    assert slices.count(INLINE_HASH) > 1, "no batch was far enough behind to need slices"
    assert seals > 0
    rec.close()
    report = verify_file(audit_path)
    assert report.intact and report.records == n


def test_an_idle_guards_lease_tick_seals_a_floods_batch_whole(
    audit_path: Path, clock: SimClock
) -> None:
    """After a flood the Guard's calls hash a handed-over batch a slice at a time; once it
    is idle (a lease tick with nothing recorded since the previous one) the tick seals the
    rest at once, rather than 16 KiB per heartbeat for a minute."""
    rec = FlightRecorder(audit_path, clock=clock, batch_size=4, flush_interval_ms=1e9)
    _outrun_sealer(rec)
    guard = Guard(Limits.off(lease_timeout_s=60.0), node="n1", clock=clock, recorder=rec)
    guard.arm("test")
    guard.renew_lease()
    guard.on_price("IBM", 100.0)
    start = time.monotonic()
    n = 0
    while True:  # flood until a handed-over batch has a flood's worth left to hash
        guard.check(Order(f"o{n}", "rlp", "IBM", Side.BUY, 1, 100.0))
        n += 1
        r = rec._ready_seal
        if time.monotonic() - start > 1.0 and r is not None and rec._end - r.upto > 4 * INLINE_HASH:
            break
        assert time.monotonic() - start < 20, "the sealer never handed a flood's batch over"
    guard.renew_lease()  # something was recorded since the last tick: a slice, as an order
    assert rec._ready_seal is r and rec.pending
    guard.renew_lease()  # idle since the last tick: the rest, whole
    assert rec._ready_seal is None and rec.pending == 0
    rec.close()
    report = verify_file(audit_path)
    assert report.intact and report.records == n + 1  # the orders and the arm


def test_records_reach_the_disk_within_an_interval_while_their_seal_waits_for_the_guard(
    audit_path: Path,
) -> None:
    """`batch` promises a machine crash loses at most an interval's records (plus one
    fdatasync). The seal is appended by the Guard's thread at its next call, which an idle
    Guard (or one hashing a flood's slices) may not make for a while; the records are in
    the file already and are fsynced on the interval without it."""
    rec = FlightRecorder(audit_path, clock=SystemClock(), batch_size=512, flush_interval_ms=20)
    for i in range(3):
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    written = rec._end
    deadline = time.monotonic() + 5
    while rec._synced_end < written:  # no ready(), no further record: an idle Guard
        assert time.monotonic() < deadline, "the records waited for a seal to be fsynced"
        time.sleep(0.01)
    assert rec.pending == 3  # nothing sealed them: the Guard's thread has not called since
    rec.close()
    report = verify_file(audit_path)
    assert report.intact and report.records == 3


def test_policy_accepts_its_string_value(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock, fsync="none")  # type: ignore[arg-type]
    rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    assert rec.flush()


def _fsynced(rec: FlightRecorder) -> None:
    """Wait until an fsync has covered everything written (sealing what is handed over)."""
    deadline = time.monotonic() + 10
    while rec._synced_end != rec._end:
        assert time.monotonic() < deadline, "no fsync covered the records"
        rec.ready()  # appends the seal the background thread prepared; the fsync follows
        time.sleep(0.005)


def test_the_pages_made_writable_after_an_fsync_follow_what_was_written(
    audit_path: Path, clock: SimClock
) -> None:
    """Every page made writable ahead is dirtied, so each fsync writes it back: a recorder
    that writes one event per kill keeps the least window, one under load the most.

    No interval: the sealer wakes only when a batch is full or sealed, so the 4,000
    records below are one fsync period however slowly they are written (with an
    interval it asks for an fsync each interval its handed-over seal waits)."""
    rec = FlightRecorder(audit_path, clock=clock, batch_size=1, flush_interval_ms=1e9)
    rec.record_event("halt", CTX, scope="fleet")
    _fsynced(rec)
    assert rec._ahead == PREFAULT_MIN
    for i in range(4000):  # about 1.5 MB before the next fsync
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    _fsynced(rec)
    assert rec._ahead == PREFAULT
    rec.record_event("halt", CTX, scope="fleet")
    _fsynced(rec)
    assert rec._ahead == PREFAULT_MIN
    rec.close()


def test_pages_far_ahead_of_the_data_are_read_in_off_the_order_path(
    audit_path: Path, clock: SimClock
) -> None:
    """Beyond the writable window, the background thread reads in up to `PRELOAD_FACTOR`
    times as much (at least half of that ahead at any time): a record copied there
    touches memory that is already there."""
    rec = FlightRecorder(audit_path, clock=clock)
    for i in range(100):
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    log = rec._log
    assert log is not None
    end = rec._end
    start = end - end % 4096 + PREFAULT  # past the writable window
    length = (PRELOAD_FACTOR // 2 - 1) * PREFAULT
    deadline = time.monotonic() + 5
    while rec._loaded < end + PRELOAD_FACTOR * PREFAULT // 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec._loaded >= end + PRELOAD_FACTOR * PREFAULT // 2
    assert all(resident(log, start, length))
    rec.close()


@given(st.integers(0, 1 << 22), st.integers(0, 1 << 23), st.integers(1, 1 << 22))
def test_a_read_buffer_grows_to_the_load_and_is_kept(have: int, need: int, cap: int) -> None:
    buf = bytearray(have)
    out = _sized(buf, need, cap)
    if need <= have or have >= cap:
        assert out is buf  # enough, or as large as it may be: no new memory
    else:
        assert min(need, cap) <= len(out) <= cap  # one pass reads as much as it may
        assert len(out) >= min(2 * have, cap)  # doubling: a growing load regrows rarely
