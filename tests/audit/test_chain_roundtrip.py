"""A written chain reads back exactly and verifies, in memory and on disk."""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

import msgspec

from knightwatch.audit import (
    GENESIS,
    DecisionRecord,
    EventRecord,
    FlightRecorder,
    Seal,
    decode_record,
    verify_file,
    verify_lines,
)
from knightwatch.audit.chain import seal_body
from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED

from .conftest import WriteFile
from .helpers import BLOCK, CTX, RULES, order, record_one


def test_file_round_trip(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file(30)
    records = [decode_record(line) for line in lines]
    assert [r.seq for r in records] == list(range(len(lines)))
    seals = [r for r in records if isinstance(r, Seal)]
    assert seals[0].prev == GENESIS
    assert [b.prev for b in seals[1:]] == [a.hash for a in seals[:-1]]
    d4 = next(r for r in records if isinstance(r, DecisionRecord) and r.order_id == "o4")
    assert (d4.accepted, d4.reason, d4.detail) == (False, "max_order_qty", BLOCK.detail)
    assert (d4.node, d4.release_id, d4.flag_snapshot_id, d4.limits_version) == (
        "n1",
        "rel-7",
        "snap-3",
        "v2",
    )
    assert (d4.strategy, d4.symbol, d4.side, d4.qty, d4.price, d4.parent_id) == (
        "smars",
        "AAPL",
        "buy",
        100,
        101.25,
        "p1",
    )
    assert d4.rules == RULES
    fill = next(r for r in records if isinstance(r, EventRecord))
    assert fill.kind == "fill" and fill.data == {"order_id": "o0", "qty": 100, "price": 101.0}
    report = verify_file(audit_path)
    assert report.intact and report.records + report.seals == len(lines) == report.lines
    assert report.head == seals[-1].hash


def test_a_seal_is_the_hash_of_its_batch_and_its_own_body(
    write_file: WriteFile, audit_path: Path
) -> None:
    lines = write_file(12, batch=5)
    first = next(i for i, line in enumerate(lines) if b'"kind":"seal"' in line)
    seal = msgspec.json.decode(lines[first], type=Seal)
    body = seal_body(seal.seq, seal.ts, seal.records, seal.prev.encode())
    assert seal.records == first
    assert sha256(b"".join(lines[:first]) + body).hexdigest() == seal.hash


def test_file_recorder_writes_what_the_memory_recorder_writes(
    audit_path: Path, tmp_path: Path
) -> None:
    mem = FlightRecorder(None, clock=SimClock(1), batch_size=10**6)
    with FlightRecorder(audit_path, clock=SimClock(1), batch_size=10**6) as rec:
        for i in range(50):
            record_one(rec, i)
            record_one(mem, i)
    mem.close()
    assert audit_path.read_bytes() == b"".join(line + b"\n" for line in mem.lines)


def test_memory_recorder_uses_the_same_chain(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock)
    for i in range(10):
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    rec.record_event(
        "halt", CTX, scope="fleet", key="fleet", state="HALTED", code="halted",
        reason="drill", actor="ops",
    )  # fmt: skip
    assert rec.lines == []  # nothing is written before a flush
    assert rec.flush()
    assert len(rec.lines) == 12 and rec.pending == 0
    report = verify_lines((line + b"\n" for line in rec.lines), "memory")
    assert report.intact and report.head == rec.head and rec.seq == 12
    first = msgspec.json.decode(rec.lines[0])
    assert first["ts"] == clock.time_ns() and first["kind"] == "decision"
    assert next(iter(first)) == "seq" and "hash" not in first
    assert list(msgspec.json.decode(rec.lines[-1]))[-2:] == ["prev", "hash"]


def test_empty_file_verifies_as_genesis(audit_path: Path, clock: SimClock) -> None:
    FlightRecorder(audit_path, clock=clock).close()
    assert audit_path.stat().st_size == 0  # the allocated space is cut at close
    report = verify_file(audit_path)
    assert report.intact and report.records == 0 and report.head == GENESIS


def test_context_change_is_recorded_per_decision(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock)
    rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    rec.record_decision(order(2), ACCEPTED, msgspec.structs.replace(CTX, release_id="rel-8"), ())
    rec.flush()
    a, b, _seal = (decode_record(line) for line in rec.lines)
    assert isinstance(a, DecisionRecord) and isinstance(b, DecisionRecord)
    assert (a.release_id, b.release_id) == ("rel-7", "rel-8")
    assert b.rules == ()
