"""A node reads back only its own flight recorder (`audit.standing.read_back` with `node`).

Every record names the node that wrote it; a file holding another node's records is
refused at the first of them. What a recorder writes for the node itself must never be
refused: a restart after a crash (its `recovery` line names no node), seals, events whose
fields happen to be called `node` or `flag_snapshot_id`, records under a release and flag
snapshot. A refusal there would stop a node from starting after every crash.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from knightwatch.audit import RECOVERY, FlightRecorder
from knightwatch.audit.record import AuditContext
from knightwatch.audit.standing import ForeignRecord, held_read_back
from knightwatch.clock import SimClock
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Order, Side
from knightwatch.state import Scope

S = 1_000_000_000


def _written(path: Path, node: str, clock: SimClock) -> None:
    """A session of `node`: an accepted order, a halt of strategy s1, odd event fields."""
    rec = FlightRecorder(path, clock=clock)
    guard = Guard(Limits.off(), node=node, clock=clock, recorder=rec)
    guard.arm("test")
    guard.on_price("AAPL", 100.0)
    assert guard.check(Order(f"{node}-1", "s1", "AAPL", Side.BUY, 1, 100.0, None)).accepted
    guard.halt(Scope.STRATEGY, "s1", "look", "alice")
    ctx = AuditContext(node=node, release_id="r-1", flag_snapshot_id="f-1", limits_version="v")
    # fields named as a record's own: one more `"flag_snapshot_id":` than lines naming the
    # node (the counts differ: each line of the chunk is decoded, and the file still passes)
    rec.record_event("note", ctx, flag_snapshot_id="f-9", node="n9", records=1)
    rec.close()


def test_a_nodes_own_file_after_a_crash_is_taken_back(tmp_path: Path) -> None:
    path, clock = tmp_path / "n1.jsonl", SimClock(1_000 * S)
    _written(path, "n1", clock)
    with path.open("ab") as f:  # a crash: a torn record, the file allocated past its data
        f.write(b'{"seq":99,"ts":1,"kind":"decision","node":"n1","ord' + b"\0" * 4096)
    clock.advance(S)
    rec = FlightRecorder(path, clock=clock)
    try:
        assert RECOVERY.encode() in path.read_bytes()
        back = held_read_back(rec, path, node="n1")
    finally:
        rec.close()
    assert [(h.scope, h.key) for h in back.standing.halts] == [("strategy", "s1")]
    assert back.used.ids == ["n1-1"]


def test_another_nodes_file_is_refused_at_its_first_line(tmp_path: Path) -> None:
    path, clock = tmp_path / "n2.jsonl", SimClock(1_000 * S)
    _written(path, "n2", clock)
    rec = FlightRecorder(path, clock=clock)
    try:
        with pytest.raises(ForeignRecord) as err:
            held_read_back(rec, path, node="n1")
    finally:
        rec.close()
    assert str(err.value).startswith(f"{path}: line 1: written by node 'n2', not by this node 'n1'")


def test_a_file_two_nodes_wrote_is_refused_at_the_others_first_line(tmp_path: Path) -> None:
    """n1's session, then n2's on the same file (n2 started on n1's copied state dir before
    nodes checked): refused at n2's first record, which is after n1's."""
    path, clock = tmp_path / "n1.jsonl", SimClock(1_000 * S)
    _written(path, "n1", clock)
    own = len(path.read_bytes().rstrip(b"\0").splitlines())
    clock.advance(S)
    _written(path, "n2", clock)
    rec = FlightRecorder(path, clock=clock)
    try:
        with pytest.raises(ForeignRecord) as err:
            held_read_back(rec, path, node="n1")
        assert held_read_back(rec, path).used.ids == ["n1-1", "n2-1"]  # no node: unchecked
    finally:
        rec.close()
    assert str(err.value).startswith(f"{path}: line {own + 1}: written by node 'n2'")
