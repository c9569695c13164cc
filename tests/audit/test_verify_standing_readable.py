"""verify names the halt and flag_applied lines a starting node stands halted on.

A node's start reads the halts and flag changes its file holds (`audit.standing`); one it
cannot read (a halt without its scope, key or code as text, or its seq and time as counts,
a flag_applied without its flag and revision) halts the node, naming the line and telling
the operator to run `audit verify`. Such a line resealed (as anyone can) or after the last
seal (a crashed recorder's end) was reported intact: the node stood halted on a line the
tool it names said nothing about.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from knightwatch.audit import FlightRecorder, ProblemKind, verify_file
from knightwatch.audit.standing import UNREADABLE, standing
from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED

from .helpers import CTX, RULES, order
from .test_verify_start_readable import _resealed


def _file(path: Path) -> None:
    clock = SimClock(1_343_828_400_000_000_000)
    with FlightRecorder(path, clock=clock) as rec:
        rec.record_decision(order(0), ACCEPTED, CTX, RULES)
        rec.record_event(
            "halt", CTX, scope="strategy", key="smars", state="HALTED", code="halted",
            reason="r", actor="ops",
        )  # fmt: skip
        rec.record_event("flag_applied", CTX, flag="f1", revision=3)
        rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    assert verify_file(path).intact
    assert not [h for h in standing(path).halts if h.scope == UNREADABLE]


def _stands_on(path: Path, line: int) -> str:
    """The reason of the unreadable halt the node would start with, naming `line`."""
    (halt,) = [h for h in standing(path).halts if h.scope == UNREADABLE]
    assert halt.key == f"line {line}"
    return halt.reason


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        (b'"code":"halted"', b'"code":7', "a halt without scope, key and code"),
        (b'"scope":"strategy"', b'"scope":false', "a halt without scope, key and code"),
        (b'"key":"smars"', b'"key":5', "a halt without scope, key and code"),
        (b'{"seq":1,"ts":1', b'{"seq":1,"ts":-1', "a halt without its seq and time"),
        (b'"revision":3', b'"revision":"3"', "a flag_applied without its flag as text"),
        (b'"flag":"f1"', b'"flag":""', "a flag_applied without its flag as text"),
        (b'"revision":3', b'"revision":-1', "a flag_applied without its flag as text"),
    ],
)
def test_a_resealed_halt_or_flag_change_the_node_cannot_read_is_named(
    tmp_path: Path, old: bytes, new: bytes, rule: str
) -> None:
    path = tmp_path / "n1.jsonl"
    _file(path)
    line = _resealed(path, old, new)
    assert rule in _stands_on(path, line)
    report = verify_file(path)
    assert [(p.kind, p.line) for p in report.problems] == [(ProblemKind.MALFORMED, line)]
    assert report.problems[0].detail.startswith(f"a record a starting node cannot read: {rule}")


def test_an_unsealed_halt_the_node_cannot_read_is_named_beside_the_unsealed_end(
    tmp_path: Path,
) -> None:
    """After the last seal (a recorder that crashed before sealing it): not only 'not
    sealed yet', which the CLI shows as a live writer's end, nothing found altered."""
    path = tmp_path / "n1.jsonl"
    _file(path)
    lines = path.read_bytes().splitlines(keepends=True)
    seq = msgspec.json.decode(lines[-1])["seq"] + 1
    lines.append(
        b'{"seq":%d,"ts":1343828400000000001,"kind":"halt","node":"n1","release_id":null,'
        b'"flag_snapshot_id":null,"limits_version":"","data":{"scope":"node","key":7,'
        b'"code":"halted","reason":"r","actor":"ops"}}\n' % seq
    )
    path.write_bytes(b"".join(lines))
    assert "a halt without scope, key and code" in _stands_on(path, len(lines))
    kinds = {(p.kind, p.line) for p in verify_file(path).problems}
    assert kinds == {(ProblemKind.UNSEALED, len(lines)), (ProblemKind.MALFORMED, len(lines))}


def test_a_halt_the_node_reads_stays_intact_when_resealed(tmp_path: Path) -> None:
    """Values the node reads past (a reason or actor it shows as given) are not named."""
    path = tmp_path / "n1.jsonl"
    _file(path)
    _resealed(path, b'"actor":"ops"', b'"actor":"ops\\u00e9","extra":[1]')
    assert not [h for h in standing(path).halts if h.scope == UNREADABLE]
    assert verify_file(path).intact
