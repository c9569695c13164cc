"""A written chain reads back exactly and verifies, in memory and on disk."""

from __future__ import annotations

import itertools
from pathlib import Path

import msgspec

from knightwatch.audit import (
    GENESIS,
    DecisionRecord,
    EventRecord,
    FlightRecorder,
    decode_record,
    verify_file,
    verify_lines,
)
from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED

from .conftest import WriteFile
from .helpers import BLOCK, CTX, RULES, order


def test_file_round_trip(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file(30)
    records = [decode_record(line) for line in lines]
    assert [r.seq for r in records] == list(range(len(lines)))
    assert records[0].prev == GENESIS
    for a, b in itertools.pairwise(records):
        assert b.prev == a.hash
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
    assert report.intact and report.records == len(lines) == report.lines
    assert report.head == records[-1].hash


def test_memory_recorder_uses_the_same_chain(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock)
    for i in range(10):
        rec.record_decision(order(i), ACCEPTED, CTX, RULES)
    rec.record_event("halt", CTX, scope="fleet", key="fleet", reason="drill", actor="ops")
    assert rec.lines == []  # nothing is written before a flush
    assert rec.flush()
    assert len(rec.lines) == 11 and rec.pending == 0
    report = verify_lines((line + b"\n" for line in rec.lines), "memory")
    assert report.intact and report.head == rec.head and rec.seq == 11
    first = msgspec.json.decode(rec.lines[0])
    assert first["ts"] == clock.time_ns() and first["kind"] == "decision"
    assert next(iter(first)) == "seq" and list(first)[-2:] == ["prev", "hash"]


def test_empty_file_verifies_as_genesis(audit_path: Path, clock: SimClock) -> None:
    FlightRecorder(audit_path, clock=clock).close()
    report = verify_file(audit_path)
    assert report.intact and report.records == 0 and report.head == GENESIS


def test_context_change_is_recorded_per_decision(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock)
    rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    rec.record_decision(order(2), ACCEPTED, msgspec.structs.replace(CTX, release_id="rel-8"), ())
    rec.flush()
    a, b = (decode_record(line) for line in rec.lines)
    assert (a.release_id, b.release_id) == ("rel-7", "rel-8")
    assert isinstance(b, DecisionRecord) and b.rules == ()
