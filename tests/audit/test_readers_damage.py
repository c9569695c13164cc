"""Damage the chain cannot see is still named by `audit verify` and `audit why`.

A seal proves bytes, not that they are a record: a line holding what no recorder writes
(a byte that is not UTF-8, a number out of range) passes the chain where its seal was
recomputed or where no seal covers it yet (a crashed recorder's end). `why` could not
decode such a line that names the order, said so, and `verify` of the same file named
nothing ("nothing before that end was found altered"); `why` reported the line only as
its batch's records "not sealed yet" (the recorder "still writing"), at another line.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from knightwatch.audit import FlightRecorder, ProblemKind, explain_order, verify_file
from knightwatch.cli.app import app
from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED

from .conftest import WriteFile
from .helpers import BLOCK, CTX, RULES, order
from .test_tamper import SEAL_2, SEAL_3, reseal

runner = CliRunner()


def _said(result: object) -> str:
    return " ".join(result.output.split())  # type: ignore[attr-defined]


def test_a_byte_that_is_not_utf8_is_named_where_no_seal_is_broken(
    write_file: WriteFile, audit_path: Path
) -> None:
    """In the unsealed end of a crashed recorder's file, and in a batch whose seal was
    recomputed: `verify` reported the first as the end a recorder leaves, the second
    intact."""
    lines = write_file()
    line = SEAL_2 + 3
    assert b'"smars"' in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(b'"smars"', b'"sm\xffrs"')
    for damaged in (lines[:-1], reseal(lines, SEAL_3)):
        audit_path.write_bytes(b"".join(damaged))
        report = verify_file(audit_path)
        found = [(p.kind, p.line) for p in report.problems if p.kind != ProblemKind.UNSEALED]
        assert found == [(ProblemKind.NOT_JSON, line)], report.problems
        assert "not UTF-8" in report.problems[-1].detail
        result = runner.invoke(app, ["audit", "verify", str(audit_path)])
        assert result.exit_code == 1 and "not UTF-8" in _said(result)
        assert "nothing before that end was found altered" not in _said(result)


def _fill_in_a_later_batch(path: Path, clock: SimClock, fill: bytes) -> int:
    """o1 decided and sealed, then o2 and o1's fill (`fill` spliced into its data) sealed
    together, then o3 sealed; returns the fill's line."""
    with FlightRecorder(path, clock=clock) as rec:
        rec.record_decision(order(1), BLOCK, CTX, RULES)
        rec.flush()
        rec.record_decision(order(2), ACCEPTED, CTX, RULES)
        rec.record_event("fill", CTX, order_id="o1", qty=60, price=101.2)
        rec.flush()
        rec.record_decision(order(3), ACCEPTED, CTX, RULES)
    lines = path.read_bytes().splitlines(keepends=True)
    at = next(i for i, x in enumerate(lines) if b'"kind":"fill"' in x)
    lines[at] = lines[at].replace(b'"qty":60', fill)
    seal = next(i for i in range(at, len(lines)) if b'"kind":"seal"' in lines[i])
    path.write_bytes(b"".join(reseal(lines, seal + 1)))
    return at + 1


def test_a_fill_no_recorder_writes_in_a_resealed_batch_is_named_not_left_out(
    audit_path: Path, clock: SimClock
) -> None:
    """`1e400` is JSON, but no number a record holds: the chain passes the resealed
    batch and `why` cannot decode the fill. It named the o2 line before it as "not sealed
    yet" (checking only through the fill); checked through its seal, it would have been
    "chain verified" with the fill left out."""
    line = _fill_in_a_later_batch(audit_path, clock, b'"qty":1e400')
    exp = explain_order(audit_path, "o1")
    assert exp.fills == ()
    first = exp.chain.problems[0]
    assert (first.kind, first.line) == (ProblemKind.MALFORMED, line), exp.chain.problems
    assert ProblemKind.UNSEALED not in {p.kind for p in exp.chain.problems}
    assert "Number out of range" in first.detail
    result = runner.invoke(app, ["audit", "why", "o1", str(audit_path)])
    out = _said(result)
    assert result.exit_code == 1, out
    assert f"CHAIN BROKEN in lines 1-{exp.chain.lines}" in out
    assert f"first at line {line}: malformed" in out


def test_a_damaged_fill_is_checked_through_its_seal_and_named_first(
    audit_path: Path, clock: SimClock
) -> None:
    """A fill of o1 that is not JSON, mid-batch: the check stopped at it, and the first
    problem `why` printed was "unsealed" at the o2 line before it ("the recorder is still
    writing"), not the damage."""
    line = _fill_in_a_later_batch(audit_path, clock, b'"qty":6O')
    exp = explain_order(audit_path, "o1")
    assert exp.chain.lines == line + 1  # through the seal after it
    kinds = [(p.kind, p.line) for p in exp.chain.problems]
    assert kinds[0] == (ProblemKind.NOT_JSON, line), kinds
    assert ProblemKind.UNSEALED not in {kind for kind, _ in kinds}
    result = runner.invoke(app, ["audit", "why", "o1", str(audit_path)])
    assert result.exit_code == 1 and f"first at line {line}: not_json" in _said(result)
