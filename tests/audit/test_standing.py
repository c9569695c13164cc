"""standing: what a node's own recorder says was still in force when it stopped."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.audit import AuditContext, ChainCorrupt, FlightRecorder
from knightwatch.audit import read as audit_read
from knightwatch.audit.read import MAX_LINE_BYTES, AcceptedIds, UnreadableRecord, accepted_ids
from knightwatch.audit.standing import (
    FLAG_APPLIED,
    Standing,
    held_read_back,
    held_standing,
    read_back,
    standing,
)
from knightwatch.clock import SimClock
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Order, Side
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


# --- one pass: `read_back` gives what `standing` and `accepted_ids` give apart -------------

_SCOPES = [(Scope.FLEET, "fleet"), (Scope.NODE, "n1"), (Scope.SYMBOL, "IBM")]
_CODES = [RejectReason.HALTED, RejectReason.LOSS_LIMIT]
_step = st.one_of(
    st.tuples(st.just("order"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("replace"), st.integers(0, 5), st.integers(0, 5)),
    st.tuples(st.just("adopt"), st.integers(0, 5)),
    st.tuples(st.just("session")),
    st.tuples(st.just("halt"), st.integers(0, 2), st.integers(0, 1)),
    st.tuples(st.just("resume"), st.integers(0, 2), st.integers(-1, 1)),
    st.tuples(st.just("flag"), st.sampled_from(["rlp", "mm", ""]), st.integers(-1, 9)),
    st.tuples(st.just("odd"), st.sampled_from(["halt", "resume", FLAG_APPLIED])),
)
_DAMAGE = st.sampled_from(
    [
        None,
        b"not json",  # a line that does not decode: both refuse or replay it as they did
        b'{"ts":5,"kind":"halt","data":{"scope":"node","key":"n1","code":"halted"}}',  # no seq
        b'{"seq":3,"ts":5,"kind":"resume","data":{"scope":"node","key":"n1"}}',  # no node/...
        b'{"seq":3,"ts":5,"kind":"flag_applied","data":"x"}',
    ]
)


def _write_steps(path: Path, steps: list[tuple[object, ...]]) -> None:
    """What a node records: decisions, replaces, adopts, sessions, halts, resumes and flag
    changes (some without the fields they need), as a file recorder writes them."""
    clock = SimClock(10**18)
    rec = FlightRecorder(None, clock=clock, batch_size=4)
    g = Guard(Limits.off(max_order_qty=100), node="n1", clock=clock, recorder=rec)
    g.arm("test")
    g.on_price("IBM", 100.0)
    ctx = AuditContext(node="n1")
    for step in steps:
        clock.advance(10**9)
        match step:
            case ("order", int(i), bool(ok)):
                g.check(Order(f"o{i}", "s1", "IBM", Side.BUY, 10 if ok else 1000, 100.0, None))
            case ("replace", int(i), int(j)):
                g.check_replace(f"o{i}", Order(f"r{j}", "s1", "IBM", Side.BUY, 5, 100.0, None))
            case ("adopt", int(i)):
                with contextlib.suppress(ValueError):  # already working here
                    g.adopt(Order(f"v{i}", "s1", "IBM", Side.BUY, 10, 100.0, None))
            case ("session",):
                g.start_session("ops")
            case ("halt", int(s), int(c)):
                g.halt(*_SCOPES[s], "kill", actor="alice", code=_CODES[c])
            case ("resume", int(s), int(c)):
                g.resume(*_SCOPES[s], "done", actor="bob", code=_CODES[c] if c >= 0 else None)
            case ("flag", str(flag), int(revision)):
                rec.record_event(FLAG_APPLIED, ctx, flag=flag, revision=revision)
            case ("odd", str(kind)):
                rec.record_event(kind, ctx, key="n1", revision="7")  # no scope, code or flag
    rec.close()
    path.write_bytes(b"".join(line + b"\n" for line in rec.lines))


def _apart(path: Path, since: int | None) -> tuple[Standing, AcceptedIds] | str:
    with path.open("rb") as f:
        try:
            used = accepted_ids(f, path, since=since)
        except UnreadableRecord as exc:
            return str(exc)
    return standing(path), used


def _together(path: Path, since: int | None) -> tuple[Standing, AcceptedIds] | str:
    with path.open("rb") as f:
        try:
            got = read_back(f, path, since=since)
        except UnreadableRecord as exc:
            return str(exc)
    return got.standing, got.used


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(_step, max_size=40),
    damage=_DAMAGE,
    where=st.integers(0, 60),
    chunk=st.sampled_from([64, 97, 301, 4096, 4 * 1024 * 1024]),
    since=st.sampled_from([None, 10**18 + 10 * 10**9]),
)
def test_one_pass_gives_what_the_two_reads_gave(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[object, ...]],
    damage: bytes | None,
    where: int,
    chunk: int,
    since: int | None,
) -> None:
    """A starting node read its file twice (`standing`, then `accepted_ids`); `read_back`
    reads it once: the same halts, flag revisions and used ids, or the same refusal of a
    line that could hide a used id, whatever the chunks cut through."""
    path = tmp_path_factory.mktemp("one-pass") / "n1.jsonl"
    _write_steps(path, steps)
    if damage is not None:
        lines = path.read_bytes().splitlines(keepends=True)
        at = where % (len(lines) + 1)
        path.write_bytes(b"".join(lines[:at]) + damage + b"\n" + b"".join(lines[at:]))
    expected = _apart(path, since)
    saved = audit_read._ID_CHUNK
    audit_read._ID_CHUNK = chunk  # lines straddling chunks, or the whole file in one
    try:
        assert _together(path, since) == expected
    finally:
        audit_read._ID_CHUNK = saved


def test_a_torn_line_is_refused_in_one_pass_as_it_was(tmp_path: Path) -> None:
    """A halt cut short (no newline, not JSON) where the data ends: the ids reader refused
    it naming the line, and so does the one pass."""
    path = tmp_path / "n1.jsonl"
    _write_steps(path, [("halt", 0, 0), ("order", 1, True)])
    data = path.read_bytes()
    n = data.count(b"\n")
    path.write_bytes(data + b'{"seq":99,"ts":1,"kind":"halt","data":{"sco')
    found = _together(path, None)
    assert found == _apart(path, None)
    assert isinstance(found, str) and found.startswith(f"{path}: line {n + 1}: not a record")


def test_a_halt_longer_than_a_line_is_read_cut_as_it_was(tmp_path: Path) -> None:
    """A halt line longer than any record (decodes for the ids, which read it whole) is
    replayed as `read_lines` gives it, cut: it stands as an unreadable halt of the node."""
    path = tmp_path / "n1.jsonl"
    _write_steps(path, [("order", 1, True), ("halt", 2, 0)])
    long = b'{"seq":9,"ts":5,"kind":"halt","data":{"reason":"%s"}}\n' % (b"x" * MAX_LINE_BYTES)
    path.write_bytes(path.read_bytes() + long + b'{"seq":10,"ts":6,"kind":"x"}\n')
    found = _together(path, None)
    assert found == _apart(path, None)
    assert not isinstance(found, str)
    assert [(h.scope, h.seq) for h in found[0].halts][-1:] == [("unreadable", 9)]


def test_a_node_reads_back_the_file_its_recorder_holds_in_one_pass(tmp_path: Path) -> None:
    """`held_read_back`, as a starting node calls it: through the recorder's descriptor,
    up to where it found the data end (not a file renamed over the path, not the zero
    bytes allocated ahead, not what it appends)."""
    path = tmp_path / "n1.jsonl"
    clock = SimClock(10**18)
    _two_halts(path, clock)
    with FlightRecorder(path, clock=clock) as rec:
        Guard(Limits(), node="n1", clock=clock, recorder=rec).adopt(
            Order("v1", "s1", "IBM", Side.BUY, 10, 100.0, None)
        )
    other = tmp_path / "old-n1.jsonl"
    _write_steps(other, [("halt", 2, 1), ("order", 3, True)])
    with FlightRecorder(path, clock=clock) as rec:
        os.replace(other, path)
        got = held_read_back(rec, path, since=None)
        rec.record_event("adopt", AuditContext(node="n1"), order_id="after")
        assert got.standing == held_standing(rec, path)
        with rec.reader() as f:
            assert got.used == accepted_ids(f, path, end=rec.opened_at)
    assert {(h.scope, h.actor) for h in got.standing.halts} == {
        ("fleet", "alice"),
        ("symbol", "carol"),
    }
    assert got.used.ids == ["v1"]


@pytest.mark.parametrize("ts", [b'"1000000000000000000"', b"1e18", b"null", b"-5"])
def test_a_halt_whose_time_is_not_a_count_stands_and_no_store_resume_lifts_it(
    tmp_path: Path, ts: bytes
) -> None:
    """A halt's time the schema cannot read was read as 0, older than any resume in the
    store, so a resume dated before the halt lifted it at the node's start (a halt naming
    no command is lifted by a stored resume issued after it). It stands as unreadable."""
    path = tmp_path / "n1.jsonl"
    clock = SimClock(10**18)
    with FlightRecorder(path, clock=clock) as rec:
        Guard(Limits(), node="n1", clock=clock, recorder=rec).halt(
            Scope.FLEET, "fleet", "kill", actor="alice"
        )
    data = path.read_bytes()
    assert b'"ts":1000000000000000000,"kind":"halt"' in data
    path.write_bytes(
        data.replace(
            b'"ts":1000000000000000000,"kind":"halt"', b'"ts":' + ts + b',"kind":"halt"', 1
        )
    )
    (held,) = standing(path).halts
    assert (held.scope, held.key, held.ts) == ("unreadable", "line 1", 2**63 - 1)
    assert "a halt without its seq and time as counts" in held.reason
