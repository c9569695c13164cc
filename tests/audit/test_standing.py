"""standing_halts: what a node's own recorder says was still halted when it stopped."""

from __future__ import annotations

from pathlib import Path

from knightwatch.audit import FlightRecorder
from knightwatch.audit.standing import standing_halts
from knightwatch.clock import SimClock
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.state import Scope


def test_halts_and_resumes_replay_per_source(tmp_path: Path) -> None:
    path = tmp_path / "n1.jsonl"
    clock = SimClock(10**18)
    with FlightRecorder(path, clock=clock) as rec:
        g = Guard(Limits(), node="n1", clock=clock, recorder=rec)
        g.halt(Scope.FLEET, "fleet", "kill", actor="alice")
        g.halt(Scope.NODE, "n1", "loss", actor="guard:loss_limit", code=RejectReason.LOSS_LIMIT)
        g.halt(Scope.NODE, "n1", "ops", actor="bob")
        g.halt(Scope.SYMBOL, "IBM", "prints", actor="carol")
        g.resume(Scope.NODE, "n1", "ops done", actor="bob", code=RejectReason.HALTED)
        g.resume(Scope.SYMBOL, "IBM", "all of it", actor="carol")  # code None: every source
    standing = {(h.scope, h.key, h.code): h for h in standing_halts(path)}
    assert set(standing) == {("fleet", "fleet", "halted"), ("node", "n1", "loss_limit")}
    assert standing[("fleet", "fleet", "halted")].actor == "alice"
    assert standing[("node", "n1", "loss_limit")].reason == "loss"


def test_a_missing_or_garbled_file_has_no_standing_halts(tmp_path: Path) -> None:
    assert standing_halts(tmp_path / "none.jsonl") == []
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"kind":"halt" not json\n' + b"[" * 100_000 + b"\n")
    assert standing_halts(bad) == []


def test_a_node_reads_its_file_up_to_where_the_recorder_found_the_data_end(
    tmp_path: Path,
) -> None:
    """What a starting node does: open the recorder (which allocates 64 MiB of zero bytes
    ahead), then read the standing halts up to `opened_at`, not through the zeros."""
    path = tmp_path / "n1.jsonl"
    clock = SimClock(10**18)
    with FlightRecorder(path, clock=clock) as rec:
        g = Guard(Limits(), node="n1", clock=clock, recorder=rec)
        g.halt(Scope.FLEET, "fleet", "kill", actor="alice")
    data_end = path.stat().st_size  # close cut the allocated rest off
    with FlightRecorder(path, clock=clock) as again:
        assert again.opened_at == data_end < path.stat().st_size
        found = standing_halts(path, end=again.opened_at)
        assert [(h.scope, h.key, h.actor) for h in found] == [("fleet", "fleet", "alice")]
        assert standing_halts(path) == found
    assert FlightRecorder(None, clock=clock).opened_at is None
