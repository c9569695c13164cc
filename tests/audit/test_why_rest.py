"""`audit why` is held to the whole file, and tells a recorder's unfinished end from tampering.

An answer says what is not there as much as what is: no fill, no later decision. A record
of the order after those the answer uses, edited so that it no longer names the order, is
found only as a broken chain there, and the chain was checked only through the answer's
last seal. A file a recorder is still writing ends in records not sealed yet, which
`why` reported as `CHAIN BROKEN` ("the records above cannot be trusted").
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from knightwatch.audit import FlightRecorder, OrderNotFound, explain_order
from knightwatch.audit.verify import verify_lines, verify_through
from knightwatch.cli.app import app
from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED

from .helpers import BLOCK, CTX, RULES, order
from .test_mutation_property import CLEAN

runner = CliRunner()


def _said(result: object) -> str:
    return " ".join(result.output.split())  # type: ignore[attr-defined]


def _decision_then_later_records(path: Path, clock: SimClock) -> None:
    """o1 decided (its own batch), then o2, then o1's fill, then a second decision for o1
    and o3, each batch sealed."""
    with FlightRecorder(path, clock=clock) as rec:
        rec.record_decision(order(1), BLOCK, CTX, RULES)
        rec.flush()
        rec.record_decision(order(2), ACCEPTED, CTX, RULES)
        rec.flush()
        clock.advance(1_000)
        rec.record_event("fill", CTX, order_id="o1", symbol="AAPL", qty=60, price=101.2)
        rec.flush()
        rec.record_decision(order(3), ACCEPTED, CTX, RULES)


EDITS = {
    "fill id escaped": (b'"order_id":"o1","symbol"', b'"order_id":"o\\u0031","symbol"'),
    "fill id changed": (b'"order_id":"o1","symbol"', b'"order_id":"o7","symbol"'),
    "fill line cut out": (None, None),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_later_fill_edited_out_of_the_answer_is_not_verified(
    audit_path: Path, clock: SimClock, edit: str
) -> None:
    """The fill, in a later batch, edited so it no longer names o1 (or removed): `why o1`
    said "fills: none recorded" and "chain verified" (exit 0), having checked only
    through the decision's seal."""
    _decision_then_later_records(audit_path, clock)
    old, new = EDITS[edit]
    data = audit_path.read_bytes()
    if old is None:
        lines = data.splitlines(keepends=True)
        data = b"".join(line for line in lines if b'"kind":"fill"' not in line)
    else:
        assert old in data
        data = data.replace(old, new)  # type: ignore[arg-type]
    audit_path.write_bytes(data)
    result = runner.invoke(app, ["audit", "why", "o1", str(audit_path)])
    out = _said(result)
    assert "fills: none recorded" in out
    assert result.exit_code == 1, out
    assert "CHAIN BROKEN after the records used" in out
    assert "may have been altered or removed there" in out
    exp = explain_order(audit_path, "o1")
    assert exp.fills == () and exp.chain.intact  # the answer's own records are intact
    assert exp.file is not None and not exp.file.intact
    assert exp.file.problems[0].line > exp.chain.lines


def test_a_clean_file_is_verified_whole_and_exits_0(audit_path: Path, clock: SimClock) -> None:
    _decision_then_later_records(audit_path, clock)
    exp = explain_order(audit_path, "o2")
    assert exp.chain.intact and exp.file is not None and exp.file.intact
    assert exp.chain.lines < exp.file.lines
    result = runner.invoke(app, ["audit", "why", "o2", str(audit_path)])
    assert result.exit_code == 0 and "CHAIN BROKEN" not in result.output


@pytest.mark.parametrize("torn", [b"", b'{"seq":9,"ts":1343'])
def test_a_live_recorders_unsealed_records_are_not_reported_as_tampering(
    audit_path: Path, clock: SimClock, torn: bytes
) -> None:
    """A recorder writing the file (open, its newest records not sealed yet, perhaps one
    mid-copy): `why` of its newest order said CHAIN BROKEN, "the records above cannot be
    trusted"; `why` of an older, sealed one exited 1 the same way once the rest was
    checked. The first says NOT SEALED YET (exit 1: not proven), the second is verified."""
    rec = FlightRecorder(audit_path, clock=clock)
    try:
        for i in range(4):
            rec.record_decision(order(i), ACCEPTED, CTX, RULES)
        rec.flush()
        rec.record_decision(order(7), BLOCK, CTX, RULES)  # its seal waits for a next call
        if torn:  # a line being copied as the file is read
            data = audit_path.read_bytes().rstrip(b"\0")
            with open(audit_path, "r+b") as f:
                f.seek(len(data))
                f.write(torn)
        newest = runner.invoke(app, ["audit", "why", "o7", str(audit_path)])
        older = runner.invoke(app, ["audit", "why", "o1", str(audit_path)])
    finally:
        rec.close()
    out = _said(newest)
    assert newest.exit_code == 1, out
    assert "NOT SEALED YET" in out and "CHAIN BROKEN" not in out
    assert "lines 1-5 were found intact" in out
    out = _said(older)
    assert older.exit_code == 0, out
    assert "chain verified" in out and "CHAIN BROKEN" not in out
    assert "are not sealed yet" in out  # the note on the file's end


def test_an_unsealed_answer_beside_a_changed_line_is_still_chain_broken(
    audit_path: Path, clock: SimClock
) -> None:
    """Only the end a writer leaves is NOT SEALED YET: an edited sealed batch before the
    unsealed record is still CHAIN BROKEN."""
    rec = FlightRecorder(audit_path, clock=clock)
    try:
        rec.record_decision(order(1), ACCEPTED, CTX, RULES)
        rec.flush()
        rec.record_decision(order(7), BLOCK, CTX, RULES)
        data = bytearray(audit_path.read_bytes())
        at = data.index(b'"qty":100')
        data[at : at + 9] = b'"qty":900'
        audit_path.write_bytes(bytes(data))
        result = runner.invoke(app, ["audit", "why", "o7", str(audit_path)])
    finally:
        rec.close()
    out = _said(result)
    assert result.exit_code == 1 and "CHAIN BROKEN" in out and "NOT SEALED YET" not in out


@pytest.mark.parametrize("oid", ["\udcff", "o\udc801", "\ud800"])
def test_an_order_id_that_is_not_text_is_not_found_not_a_traceback(
    audit_path: Path, clock: SimClock, oid: str
) -> None:
    """A command line's non-UTF-8 byte reaches `why` as a lone surrogate: encoding it to
    search the file raised UnicodeEncodeError (a traceback)."""
    _decision_then_later_records(audit_path, clock)
    with pytest.raises(OrderNotFound, match="not UTF-8 text"):
        explain_order(audit_path, oid)
    result = runner.invoke(app, ["audit", "why", oid, str(audit_path)])
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1 and "no decision recorded" in _said(result)


@settings(max_examples=200, deadline=None)
@given(
    through=st.integers(0, len(CLEAN) + 2),
    line=st.integers(0, len(CLEAN) - 1),
    op=st.sampled_from(["none", "edit", "drop", "dup", "garbage"]),
)
def test_verify_through_reports_the_prefix_as_verifying_it_alone_does(
    through: int, line: int, op: str
) -> None:
    """The one-pass prefix report is the report of the first `through` lines alone, for
    clean and damaged files, and the whole report is `verify_lines`'."""
    lines = list(CLEAN)
    if op == "edit":
        lines[line] = lines[line].replace(b"1", b"2", 1)
    elif op == "drop":
        del lines[line]
    elif op == "dup":
        lines.insert(line, lines[line])
    elif op == "garbage":
        lines.insert(line, b"{not json\n")
    prefix, whole = verify_through(iter(lines), "f", through)
    assert whole == verify_lines(lines, "f")
    assert prefix == verify_lines(islice(lines, through), "f")
