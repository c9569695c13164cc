"""verify names the records a starting node refuses its file on.

A node's start takes back the order ids its file accepted (`read.accepted_ids`) and refuses
the file naming a line it cannot read, telling the operator to run `audit verify`. Such a
line resealed (its batch's seal recomputed, as anyone can) or after the last seal was
reported intact: the node would not start and the tool it names said nothing was wrong.
"""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

import msgspec
import pytest

from knightwatch.audit import AuditContext, FlightRecorder, ProblemKind, verify_file
from knightwatch.audit.chain import GENESIS, finish_seal, seal_body
from knightwatch.audit.read import UnreadableRecord, accepted_ids
from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED, Decision, RejectReason

from .helpers import CTX, RULES, order

BLOCK = Decision(False, RejectReason.INVALID_ORDER, "order could not be checked")


def _resealed(path: Path, old: bytes, new: bytes) -> int:
    """Replace `old` by `new` in the first line holding it and recompute every seal from
    there on, as a forger would; returns the line's number (1-based)."""
    lines = path.read_bytes().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if old in line)
    lines[at] = lines[at].replace(old, new, 1)
    prev, batch = GENESIS.encode(), sha256()
    out = []
    for line in lines:
        if b'"kind":"seal"' in line:
            d = msgspec.json.decode(line)
            line, prev = finish_seal(batch, seal_body(d["seq"], d["ts"], d["records"], prev))
            batch = sha256()
        else:
            batch.update(line)
        out.append(line)
    path.write_bytes(b"".join(out))
    return at + 1


def _file(path: Path) -> None:
    clock = SimClock(1_343_828_400_000_000_000)
    with FlightRecorder(path, clock=clock) as rec:
        for i in range(3):
            rec.record_decision(order(i), ACCEPTED, CTX, RULES)
        rec.record_decision(order(7), BLOCK, CTX, RULES)
        rec.record_event("adopt", AuditContext(node="n1"), order_id="v1", qty=5, remaining=5)
    assert verify_file(path).intact


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        (b'"accepted":true', b'"accepted":"yes"', "a decision whose verdict is not true or false"),
        (b'"accepted":true', b'"accepted":null', "a decision whose verdict is not true or false"),
        (b'"accepted":false', b'"accepted":0', "a decision whose verdict is not true or false"),
        (b'"order_id":"o1"', b'"order_id":1', "an accepted decision without its order id as text"),
        (b'"order_id":"o1"', b'"order_id":""', "an accepted decision without its order id as text"),
        (b'"order_id":"o1"', b'"order_id":["o1"]', "an accepted decision without its order id"),
        (b'"order_id":"v1"', b'"order_id":null', "an adopt event without its order id as text"),
        (b'"data":{"order_id"', b'"data":7,"x":{"order_id"', "an adopt event without its order id"),
    ],
)
def test_a_resealed_record_a_starting_node_refuses_is_named(
    tmp_path: Path, old: bytes, new: bytes, rule: str
) -> None:
    path = tmp_path / "n1.jsonl"
    _file(path)
    line = _resealed(path, old, new)
    with pytest.raises(UnreadableRecord, match=f"line {line}: {rule}"), path.open("rb") as f:
        accepted_ids(f, path)
    report = verify_file(path)
    assert [(p.kind, p.line) for p in report.problems] == [(ProblemKind.MALFORMED, line)]
    assert report.problems[0].detail.startswith(f"a record a starting node cannot read: {rule}")


def test_values_a_node_reads_past_stay_intact(tmp_path: Path) -> None:
    """A blocked decision's odd values (an object that bypassed validation, recorded as
    JSON carries it) and an accepted one's quantity are not what a starting node reads."""
    path = tmp_path / "n1.jsonl"
    _file(path)
    _resealed(path, b'"order_id":"o7"', b'"order_id":7')
    _resealed(
        path,
        b'"order_id":"o2","strategy":"smars","symbol":"AAPL","side":"buy","qty":100',
        b'"order_id":"o2","strategy":"smars","symbol":"AAPL","side":"HOLD","qty":-5',
    )
    with path.open("rb") as f:
        assert accepted_ids(f, path).ids == ["o0", "o1", "o2", "v1"]
    assert verify_file(path).intact
