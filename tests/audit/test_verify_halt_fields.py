"""verify names every halt line a starting node halts on, a scope, key or code left out too.

Every recorder's halt carries its scope, key and code (`Guard.halt`). A starting node that
reads a halt line without one of them as text stands halted on the line, telling the
operator to run `audit verify` (`audit.standing`). verify named such a line only when a
value was there but not text: one with a field left out (or null), resealed or after the
last seal, was reported intact while the node stood halted on it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import msgspec
import pytest

from knightwatch.audit import FlightRecorder, ProblemKind, verify_file
from knightwatch.audit.standing import UNREADABLE, standing
from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED, RejectReason
from knightwatch.state import Scope

from .helpers import CTX, RULES, order
from .test_verify_start_readable import _resealed

_FIELDS = {"scope": b'"scope":"strategy",', "key": b'"key":"smars",', "code": b'"code":"halted",'}


def _file(path: Path) -> None:
    """A halt as a recorder writes it (`Guard.halt`), between two decisions."""
    clock = SimClock(1_343_828_400_000_000_000)
    with FlightRecorder(path, clock=clock) as rec:
        rec.record_decision(order(0), ACCEPTED, CTX, RULES)
        rec.record_event(
            "halt", CTX, scope="strategy", key="smars", state="HALTED", code="halted",
            reason="r", actor="ops", latched_ns=1_343_828_400_000_000_000,
        )  # fmt: skip
        rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    assert verify_file(path).intact
    assert not [h for h in standing(path).halts if h.scope == UNREADABLE]


def _stands_on(path: Path) -> list[str]:
    """The lines the node would start halted on, as unreadable."""
    return [h.key for h in standing(path).halts if h.scope == UNREADABLE]


_WRITTEN = b'"scope":"strategy","key":"smars","state":"HALTED","code":"halted"'
"""The halt's fields as the recorder writes them (`Guard.halt`), in its order."""
_GONE = "(left out)"
_TEXT = "(as written)"
_AS_WRITTEN = {"scope": "strategy", "key": "smars", "code": "halted"}

_LEFT_OUT = [
    fields for n in (1, 2, 3) for fields in itertools.combinations(("scope", "key", "code"), n)
]


@pytest.mark.parametrize("fields", _LEFT_OUT, ids="+".join)
@pytest.mark.parametrize("how", ["left_out", "null"])
def test_a_resealed_halt_without_its_scope_key_or_code_is_named(
    tmp_path: Path, fields: tuple[str, ...], how: str
) -> None:
    path = tmp_path / "n1.jsonl"
    _file(path)
    data = path.read_bytes()
    old = _WRITTEN + b","
    assert old in data
    new = old
    for f in fields:
        gone = b"" if how == "left_out" else b'"%s":null,' % f.encode()
        new = new.replace(_FIELDS[f], gone)
    line = _resealed(path, old, new)
    assert _stands_on(path) == [f"line {line}"]  # the node starts halted on it
    report = verify_file(path)
    assert [(p.kind, p.line) for p in report.problems] == [(ProblemKind.MALFORMED, line)]
    assert report.problems[0].detail.startswith(
        "a record a starting node cannot read: a halt without scope, key and code"
    )


@pytest.mark.parametrize("field", ["scope", "key", "code"])
def test_an_unsealed_halt_without_its_scope_key_or_code_is_named(
    tmp_path: Path, field: str
) -> None:
    """After the last seal (a recorder that crashed before sealing it), as a hand-written
    halt without one of the three: not only 'not sealed yet'."""
    path = tmp_path / "n1.jsonl"
    _file(path)
    lines = path.read_bytes().splitlines(keepends=True)
    seq = msgspec.json.decode(lines[-1])["seq"] + 1
    data = {"scope": "node", "key": "n1", "state": "HALTED", "code": "halted", "reason": "r"}
    del data[field]
    lines.append(
        b'{"seq":%d,"ts":1343828400000000001,"kind":"halt","node":"n1","release_id":null,'
        b'"flag_snapshot_id":null,"limits_version":"","data":%s}\n'
        % (seq, msgspec.json.encode(data))
    )
    path.write_bytes(b"".join(lines))
    assert _stands_on(path) == [f"line {len(lines)}"]
    kinds = {(p.kind, p.line) for p in verify_file(path).problems}
    assert kinds == {(ProblemKind.UNSEALED, len(lines)), (ProblemKind.MALFORMED, len(lines))}


@pytest.mark.parametrize(
    "values",
    list(itertools.product([None, _GONE, _TEXT, 7, True], repeat=3)),
    ids=repr,
)
def test_verify_names_a_halt_exactly_when_the_node_halts_on_it(
    tmp_path: Path, values: tuple[object, object, object]
) -> None:
    """Whatever a halt's scope, key and code hold (as written, null, left out, another type),
    verify names the line as malformed exactly when the node stands halted on it as
    unreadable: never a node halted on a line verify calls intact."""
    path = tmp_path / "n1.jsonl"
    _file(path)
    data: dict[str, object] = {}
    for field, value in zip(("scope", "key", "code"), values, strict=True):
        if value is not _GONE:
            data[field] = _AS_WRITTEN[field] if value is _TEXT else value
    data["state"] = "HALTED"
    new = msgspec.json.encode(data)[1:-1]
    line = _resealed(path, _WRITTEN, new)
    stands = _stands_on(path) == [f"line {line}"]
    named = [(p.kind, p.line) for p in verify_file(path).problems]
    assert named == ([(ProblemKind.MALFORMED, line)] if stands else [])
    assert stands != all(v is _TEXT for v in values)


@pytest.mark.parametrize(
    ("new", "rule"),
    [
        (b'"scope":"bogus","key":"smars","state":"HALTED"', "a halt whose scope 'bogus'"),
        (b'"scope":"Strategy","key":"smars","state":"HALTED"', "a halt whose scope 'Strategy'"),
        (b'"scope":"strategy","key":"smars","state":"ACTIVE"', "a halt whose state 'ACTIVE'"),
        (b'"scope":"strategy","key":"smars","state":"halted"', "a halt whose state 'halted'"),
        (b'"scope":"strategy","key":"smars","state":2', "a halt whose state '2'"),
        (b'"scope":"strategy","key":"","state":"HALTED"', "a halt whose key ''"),
        (b'"scope":"strategy","key":" \\t","state":"HALTED"', "a halt whose key ' \\t'"),
        (b'"scope":"fleet","key":"","state":"HALTED"', "a halt whose key ''"),
    ],
)
def test_a_resealed_halt_the_node_cannot_latch_as_written_is_named(
    tmp_path: Path, new: bytes, rule: str
) -> None:
    """A scope, state or key no latch holds: the node halts itself instead of the scope
    the line names (`NodeRuntime._restore`), on a line verify called intact."""
    path = tmp_path / "n1.jsonl"
    _file(path)
    line = _resealed(path, b'"scope":"strategy","key":"smars","state":"HALTED"', new)
    report = verify_file(path)
    assert [(p.kind, p.line) for p in report.problems] == [(ProblemKind.MALFORMED, line)]
    assert report.problems[0].detail.startswith(f"a record a starting node cannot read: {rule}")


@pytest.mark.parametrize("code", ["bogus", "HALTED", ""])
def test_a_resealed_halt_whose_code_is_no_reject_reason_is_named(tmp_path: Path, code: str) -> None:
    path = tmp_path / "n1.jsonl"
    _file(path)
    line = _resealed(path, b'"code":"halted"', b'"code":"%s"' % code.encode())
    report = verify_file(path)
    assert [(p.kind, p.line) for p in report.problems] == [(ProblemKind.MALFORMED, line)]
    assert f"a halt whose code {code!r} is no reject reason" in report.problems[0].detail


def test_every_halt_a_guard_records_stays_intact(tmp_path: Path) -> None:
    """Each scope, source and latched state a Guard records a halt with reads back."""
    path = tmp_path / "n1.jsonl"
    clock = SimClock(1_343_828_400_000_000_000)
    keys = {"fleet": "fleet", "strategy_symbol": "smars/AAPL"}
    with FlightRecorder(path, clock=clock) as rec:
        for scope, code, state in itertools.product(Scope, RejectReason, ("HALTED", "REDUCING")):
            rec.record_event(
                "halt", CTX, scope=scope.value, key=keys.get(scope.value, "x"), state=state,
                code=code.value, reason="r", actor="ops", latched_ns=clock.time_ns(),
            )  # fmt: skip
    assert verify_file(path).intact
