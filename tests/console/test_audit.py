"""The console's record: flight-recorder format, searchable, exportable, and a forgery shows."""

from __future__ import annotations

import json
from pathlib import Path

from knightwatch.audit.verify import verify_file
from knightwatch.clock import SimClock
from knightwatch.console.audit import ConsoleAudit, Query, export_lines, params_hash, search

S = 1_000_000_000


def filled(tmp_path: Path) -> tuple[Path, SimClock]:
    clock = SimClock(start_ns=100 * S)
    audit = ConsoleAudit(tmp_path / "console" / "audit.jsonl", clock)
    for actor, action, scope, key, status in [
        ("alice", "login", "", "", 200),
        ("mallory", "login", "", "", 401),
        ("alice", "kill", "fleet", "fleet", 200),
        ("carol", "kill", "fleet", "fleet", 403),
        ("bob", "approve", "node", "n2", 200),
    ]:
        audit.record(actor=actor, action=action, scope=scope, key=key, status=status, result="x")
        clock.advance(S)
    audit.close()
    return audit.path, clock


def test_records_verify_with_the_flight_recorder_verifier(tmp_path: Path) -> None:
    path, _ = filled(tmp_path)
    report = verify_file(path)
    assert report.intact and report.records >= 5


def test_search_by_actor_action_scope_and_time(tmp_path: Path) -> None:
    path, _ = filled(tmp_path)
    kills = search(path, Query(action="kill"))
    assert [r.data["actor"] for r in kills.records] == ["carol", "alice"]  # newest first
    assert kills.intact and kills.head
    assert [r.data["actor"] for r in search(path, Query(scope="n2")).records] == ["bob"]
    late = search(path, Query(since_ns=102 * S))
    assert {r.data["actor"] for r in late.records} == {"alice", "carol", "bob"}
    early = search(path, Query(until_ns=101 * S))
    assert {r.data["action"] for r in early.records} == {"login"}
    assert len(search(path, Query(limit=2)).records) == 2


def test_an_edited_file_is_reported_and_answers_nothing(tmp_path: Path) -> None:
    path, _ = filled(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"carol"', b'"alice"', 1))
    found = search(path, Query(action="kill"))
    assert not found.intact and found.problem and found.records == []
    last = json.loads(list(export_lines(path, Query()))[-1])
    assert last["intact"] is False


def test_export_is_ndjson_ending_with_the_chain_head(tmp_path: Path) -> None:
    path, _ = filled(tmp_path)
    lines = list(export_lines(path, Query(action="login")))
    records = [json.loads(line) for line in lines[:-1]]
    assert [r["data"]["actor"] for r in records] == ["alice", "mallory"]
    tail = json.loads(lines[-1])
    assert tail["intact"] and tail["chain_head"] == verify_file(path).head


def test_params_hash_is_stable_and_order_free() -> None:
    assert params_hash({"a": 1, "b": [2]}) == params_hash({"b": [2], "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": 2})
