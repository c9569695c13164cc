"""The Guard's decisions land in a real flight-recorder file that verifies and explains."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from knightwatch.audit import FlightRecorder, MemorySink, explain_order, verify_file
from knightwatch.cli.app import app
from knightwatch.clock import SimClock
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Fill, Order, Side
from knightwatch.state import Scope


def test_decisions_fills_and_halts_are_recorded_and_explained(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = SimClock(1_343_827_800 * 10**9)
    with FlightRecorder(path, clock=clock) as rec:
        g = Guard(Limits(version="v7", max_order_qty=1_000), node="r8", clock=clock, recorder=rec)
        g.set_context(release_id="smars-2012.07.27", flag_snapshot_id="flags@42")
        g.on_price("EBR", 10.0)
        g.arm("ops")
        ok = Order("ok-1", "rlp", "EBR", Side.BUY, 500, 10.0)
        big = Order("big-1", "rlp", "EBR", Side.BUY, 1_001, 10.0)
        assert g.check(ok).accepted
        g.on_fill(Fill("ok-1", "EBR", Side.BUY, 500, 10.0))
        assert not g.check(big).accepted
        g.halt(Scope.SYMBOL, "EBR", "drill", actor="alice")
        assert not g.check(Order("late-1", "rlp", "EBR", Side.BUY, 1, 10.0)).accepted
    report = verify_file(path)
    assert report.intact and report.records >= 7
    why = explain_order(path, "big-1").decision
    assert (why.accepted, why.reason, why.node) == (False, "max_order_qty", "r8")
    assert why.detail == "qty 1001 > max_order_qty 1000 for strategy rlp"
    assert (why.release_id, why.flag_snapshot_id, why.limits_version) == (
        "smars-2012.07.27",
        "flags@42",
        "v7",
    )
    assert "order_size" in why.rules and "parent" in why.rules
    assert len(explain_order(path, "ok-1").fills) == 1
    late = explain_order(path, "late-1")
    assert late.decision.reason == "halted"
    assert any(c.kind == "halt" for c in late.controls)
    out = CliRunner().invoke(app, ["audit", "why", "big-1", str(path)])
    assert out.exit_code == 0 and "max_order_qty" in out.output


def test_tampered_guard_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = SimClock(0)
    with FlightRecorder(path, clock=clock) as rec:
        g = Guard(Limits(), node="n", clock=clock, recorder=rec)
        g.on_price("IBM", 100.0)
        g.arm()
        for i in range(5):
            g.check(Order(f"o{i}", "s", "IBM", Side.BUY, 10, 100.0))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[4] = lines[4].replace(b'"accepted":true', b'"accepted":false')
    path.write_bytes(b"".join(lines))
    report = verify_file(path)
    assert not report.intact
    (problem,) = report.problems
    assert problem.kind == "edited" and "lines 1-6 (seq 0-5)" in problem.detail


def test_default_memory_recorder_is_bounded_and_fails_closed() -> None:
    clock = SimClock(0)
    rec = FlightRecorder(None, clock=clock, batch_size=4, sink=MemorySink(capacity=10))
    g = Guard(Limits(), node="n", clock=clock, recorder=rec)
    g.on_price("IBM", 100.0)
    g.arm()
    verdicts = [g.check(Order(f"o{i}", "s", "IBM", Side.BUY, 1, 100.0)) for i in range(20)]
    assert verdicts[0].accepted
    assert verdicts[-1].reason == "audit_unavailable"
    assert not rec.healthy


class FlakySink(MemorySink):
    """A disk that fails on demand, then comes back."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def write(self, data: bytes) -> None:
        if self.broken:
            raise OSError(28, "No space left on device")
        super().write(data)


def test_failed_write_blocks_the_next_order_and_loses_nothing(tmp_path: Path) -> None:
    clock = SimClock(0)
    sink = FlakySink()
    rec = FlightRecorder(None, clock=clock, batch_size=1, sink=sink)
    g = Guard(Limits(), node="n", clock=clock, recorder=rec)
    g.on_price("IBM", 100.0)
    g.arm()
    assert g.check(Order("a1", "s", "IBM", Side.BUY, 1, 100.0)).accepted
    sink.broken = True
    # a1's record is still pending: the next order's ready() tries to write it and fails
    assert g.check(Order("a2", "s", "IBM", Side.BUY, 1, 100.0)).reason == "audit_unavailable"
    for i in range(100):
        g.check(Order(f"x{i}", "s", "IBM", Side.BUY, 1, 100.0))
    sink.broken = False
    clock.advance(10**9)  # the recorder retries once per flush interval
    assert g.check(Order("a3", "s", "IBM", Side.BUY, 1, 100.0)).accepted
    rec.close()
    path = tmp_path / "recovered.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in sink.lines))
    assert verify_file(path).intact
    assert explain_order(path, "a1").decision.accepted
    outage = [line for line in sink.lines if b'"audit_outage"' in line]
    assert len(outage) == 1 and b'"blocked":101' in outage[0]
    assert explain_order(path, "a3").decision.accepted
