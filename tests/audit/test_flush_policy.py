"""When records reach the sink: batch size, flush interval (simulated clock), fsync policy."""

from __future__ import annotations

from pathlib import Path

from knightwatch.audit import FlightRecorder, FsyncPolicy, verify_file
from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED

from .helpers import CTX, RULES, order

MS = 1_000_000


def test_interval_flush_on_a_simulated_clock(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock, batch_size=1000, flush_interval_ms=50)
    for i in range(3):
        assert rec.ready()
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    clock.advance(49 * MS)
    assert rec.ready() and rec.lines == [] and rec.pending == 3
    clock.advance(1 * MS)
    assert rec.ready() and len(rec.lines) == 3 and rec.pending == 0
    rec.record_decision(order(3), ACCEPTED, CTX, RULES)
    clock.advance(49 * MS)
    assert rec.ready() and len(rec.lines) == 3  # the interval restarts at each flush
    clock.advance(1 * MS)
    assert rec.ready() and len(rec.lines) == 4


def test_full_batch_flushes_before_the_next_decision(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock, batch_size=4, flush_interval_ms=1e9)
    for i in range(4):
        assert rec.ready()
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    assert rec.lines == []  # recording never writes by itself
    assert rec.ready()
    assert len(rec.lines) == 4


def test_events_share_the_batch_and_the_chain(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock, batch_size=2, flush_interval_ms=1e9)
    rec.record_event("arm", CTX, actor="ops")
    rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    assert rec.ready() and len(rec.lines) == 2


def test_always_policy_writes_each_record_at_once(audit_path: Path, clock: SimClock) -> None:
    rec = FlightRecorder(audit_path, clock=clock, fsync=FsyncPolicy.ALWAYS, batch_size=512)
    rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    assert len(audit_path.read_bytes().splitlines()) == 1
    rec.record_event("halt", CTX, scope="fleet", key="fleet", reason="drill", actor="ops")
    assert len(audit_path.read_bytes().splitlines()) == 2
    rec.close()
    assert verify_file(audit_path).records == 2


def test_none_and_batch_policies_write_the_same_chain(tmp_path: Path) -> None:
    heads = []
    for policy in (FsyncPolicy.NONE, FsyncPolicy.BATCH, FsyncPolicy.ALWAYS):
        path = tmp_path / f"{policy}.jsonl"
        with FlightRecorder(path, clock=SimClock(1), fsync=policy, batch_size=3) as rec:
            for i in range(10):
                rec.ready()
                rec.record_decision(order(i), ACCEPTED, CTX, RULES)
        report = verify_file(path)
        assert report.intact and report.records == 10
        heads.append(report.head)
    assert len(set(heads)) == 1, "the policy changes durability, never content"


def test_policy_accepts_its_string_value(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock, fsync="none")  # type: ignore[arg-type]
    rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    assert rec.flush()
