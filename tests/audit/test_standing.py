"""standing: what a node's own recorder says was still in force when it stopped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from knightwatch.audit import AuditContext, ChainCorrupt, FlightRecorder
from knightwatch.audit.standing import FLAG_APPLIED, Standing, held_standing, standing
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
    found = {(h.scope, h.key, h.code): h for h in standing(path).halts}
    assert set(found) == {("fleet", "fleet", "halted"), ("node", "n1", "loss_limit")}
    assert found[("fleet", "fleet", "halted")].actor == "alice"
    assert found[("node", "n1", "loss_limit")].reason == "loss"


def test_a_missing_or_garbled_file_has_no_standing_halts(tmp_path: Path) -> None:
    assert standing(tmp_path / "none.jsonl") == Standing([], {})
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"kind":"resume" not json\n' + b"[" * 100_000 + b"\n")
    assert standing(bad) == Standing([], {})


def _two_halts(path: Path, clock: SimClock) -> None:
    """A fleet kill sealed in the first batch, a symbol halt in the second."""
    with FlightRecorder(path, clock=clock) as rec:
        g = Guard(Limits(), node="n1", clock=clock, recorder=rec)
        g.halt(Scope.FLEET, "fleet", "kill", actor="alice")
        rec.flush()
        g.halt(Scope.SYMBOL, "IBM", "prints", actor="carol")


def test_a_damaged_halt_in_an_earlier_batch_still_halts_the_node(tmp_path: Path) -> None:
    """One changed byte in a sealed halt: the halt was skipped as unreadable, so a node
    whose store had lost its entries came back unhalted. Now it stands, as a halt of the
    node itself (a scope the runtime does not know is applied as that), naming the line.
    (A recorder no longer reopens such a file at all: it checks every seal.)"""
    path = tmp_path / "n1.jsonl"
    clock = SimClock(10**18)
    _two_halts(path, clock)
    path.write_bytes(path.read_bytes().replace(b'"actor":"alice"', b'"actor":"alice}', 1))
    with pytest.raises(ChainCorrupt, match="line 2: the seal does not match"):
        FlightRecorder(path, clock=clock)
    found = standing(path)
    by_scope = {h.scope: h for h in found.halts}
    assert set(by_scope) == {"symbol", "unreadable"}
    lost = by_scope["unreadable"]
    assert (lost.key, lost.state, lost.code, lost.seq, lost.ts) == (
        "line 1",
        "HALTED",
        "halted",
        0,
        10**18,
    )
    assert f"{path} line 1: a halt record that cannot be read" in lost.reason
    with pytest.raises(ValueError):
        Scope(lost.scope)  # the runtime's restore halts the node on it


def test_a_halt_without_its_scope_or_source_stands_and_a_node_resume_lifts_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "n1.jsonl"
    clock = SimClock(10**18)
    ctx = AuditContext(node="n1")
    with FlightRecorder(path, clock=clock) as rec:
        rec.record_event("halt", ctx, scope="fleet", key="fleet", reason="kill")  # no code
        rec.record_event("halt", ctx, key="n1", code="halted")  # no scope
    found = standing(path)
    assert [(h.scope, h.key) for h in found.halts] == [
        ("unreadable", "line 1"),
        ("unreadable", "line 2"),
    ]
    assert "a halt without scope, key and code" in found.halts[0].reason
    with FlightRecorder(path, clock=clock) as rec:
        g = Guard(Limits(), node="n1", clock=clock, recorder=rec)
        g.halt(Scope.NODE, "n1", "restored", actor="recorder")
        g.resume(Scope.NODE, "n1", "reconciled", actor="bob")
    assert standing(path).halts == []


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
        found = standing(path, end=again.opened_at)
        assert [(h.scope, h.key, h.actor) for h in found.halts] == [("fleet", "fleet", "alice")]
        assert standing(path) == found
    assert FlightRecorder(None, clock=clock).opened_at is None


def test_the_newest_applied_flag_change_is_remembered_per_flag(tmp_path: Path) -> None:
    """A node records `flag_applied` each time it applies a newer signed change; a restart
    reads the highest revision per flag back (in any order written)."""
    path = tmp_path / "n1.jsonl"
    clock = SimClock(10**18)
    ctx = AuditContext(node="n1")
    with FlightRecorder(path, clock=clock) as rec:
        rec.record_event(FLAG_APPLIED, ctx, flag="rlp", revision=5)
        rec.record_event(FLAG_APPLIED, ctx, flag="rlp", revision=7)
        rec.record_event(FLAG_APPLIED, ctx, flag="mm", revision=2)
        rec.record_event(FLAG_APPLIED, ctx, flag="rlp", revision=6)  # never lowers it
        Guard(Limits(), node="n1", clock=clock, recorder=rec).halt(
            Scope.FLEET, "fleet", "kill", actor="alice"
        )
    found = standing(path)
    assert found.flag_revisions == {"rlp": 7, "mm": 2}
    assert [h.actor for h in found.halts] == ["alice"]


@pytest.mark.parametrize(
    "fields",
    [
        {"flag": "odd", "revision": "9"},  # a revision that is text
        {"flag": "odd", "revision": True},  # or a bool
        {"flag": "odd", "revision": -1},  # or below any revision
        {"flag": "", "revision": 9},  # no flag
        {"flag": 7, "revision": 9},  # a flag that is no text
        {"revision": 9},  # no flag at all
        {"flag": "odd"},  # no revision at all
    ],
)
def test_a_flag_change_without_its_flag_or_revision_halts_the_node(
    tmp_path: Path, fields: dict[str, object]
) -> None:
    """A `flag_applied` record that decodes but does not say which flag at which revision
    was skipped: the node came back without that memory, as it did for a line that does
    not decode. Now it stands the same way, as a halt of the node naming the line."""
    path = tmp_path / "n1.jsonl"
    clock = SimClock(10**18)
    ctx = AuditContext(node="n1")
    with FlightRecorder(path, clock=clock) as rec:
        rec.record_event(FLAG_APPLIED, ctx, flag="mm", revision=2)
        rec.record_event(FLAG_APPLIED, ctx, **fields)
    found = standing(path)
    assert found.flag_revisions == {"mm": 2}
    [lost] = found.halts
    assert (lost.scope, lost.key, lost.state, lost.ts) == (
        "unreadable",
        "line 2",
        "HALTED",
        2**63 - 1,
    )
    assert f"{path} line 2: a flag_applied record that cannot be read" in lost.reason


def test_a_damaged_flag_change_halts_the_node_and_no_resume_lifts_it(tmp_path: Path) -> None:
    """A `flag_applied` line that does not decode was skipped: the node came back with no
    memory of that flag change, and an older approved change stored again would verify.
    Now it stands as a halt of the node naming the line, which neither a later resume in
    the file nor one in the store (its time is never earlier) lifts."""
    path = tmp_path / "n1.jsonl"
    clock = SimClock(10**18)
    ctx = AuditContext(node="n1")
    with FlightRecorder(path, clock=clock) as rec:
        rec.record_event(FLAG_APPLIED, ctx, flag="rlp", revision=7)
        rec.record_event(FLAG_APPLIED, ctx, flag="mm", revision=2)
        g = Guard(Limits(), node="n1", clock=clock, recorder=rec)
        g.halt(Scope.NODE, "n1", "ops", actor="bob")
        g.resume(Scope.NODE, "n1", "ops done", actor="bob")
    path.write_bytes(path.read_bytes().replace(b'"flag":"rlp"', b'"flag":"rlp}', 1))
    found = standing(path)
    assert found.flag_revisions == {"mm": 2}
    [lost] = found.halts
    assert (lost.scope, lost.key, lost.state, lost.code, lost.seq) == (
        "unreadable",
        "line 1",
        "HALTED",
        "halted",
        0,
    )
    assert lost.ts == 2**63 - 1
    assert f"{path} line 1: a flag_applied record that cannot be read" in lost.reason


def test_a_node_reads_the_file_its_recorder_holds_not_whatever_the_path_names_now(
    tmp_path: Path,
) -> None:
    """The node read its halts by path once its recorder had opened the file: another file
    renamed over the path in between (one without the fleet kill) was what it started from,
    unhalted, while its recorder kept appending to the file that holds the kill."""
    path = tmp_path / "n1.jsonl"
    clock = SimClock(10**18)
    _two_halts(path, clock)
    other = tmp_path / "old-n1.jsonl"
    with FlightRecorder(other, clock=clock) as rec:
        Guard(Limits(), node="n1", clock=clock, recorder=rec).halt(
            Scope.SYMBOL, "MSFT", "other file", actor="mallory"
        )
    with FlightRecorder(path, clock=clock) as rec:
        os.replace(other, path)  # the path names another file now
        found = held_standing(rec, path)
        rec.record_event("marker", AuditContext(node="n1"), note="after the swap")
    assert {(h.scope, h.key, h.actor) for h in found.halts} == {
        ("fleet", "fleet", "alice"),
        ("symbol", "IBM", "carol"),
    }
    assert standing(path).halts[0].actor == "mallory"  # the file at the path is the other one
