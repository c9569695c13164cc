"""Every kind of tampering is detected and named by line and seq."""

from __future__ import annotations

from pathlib import Path

import msgspec

from knightwatch.audit import Problem, ProblemKind, VerifyReport, verify_file
from knightwatch.audit.chain import seal_batch

from .conftest import WriteFile


def check(path: Path, lines: list[bytes], anchor: str | None = None) -> VerifyReport:
    path.write_bytes(b"".join(lines))
    return verify_file(path, anchor=anchor)


def forged(after: bytes, order_id: str, seq: int | None = None) -> bytes:
    """A well-formed record, sealed with its own correct hash, chained to `after`."""
    rec = msgspec.json.decode(after)
    payload = {k: v for k, v in rec.items() if k not in ("seq", "prev", "hash")}
    payload["order_id"] = order_id
    pieces, _, _ = seal_batch(
        [msgspec.json.encode(payload)],
        rec["seq"] + 1 if seq is None else seq,
        rec["hash"].encode(),
    )
    return b"".join(pieces)


def kinds(report: VerifyReport) -> list[tuple[ProblemKind, int, int | None]]:
    return [(p.kind, p.line, p.seq) for p in report.problems]


def test_clean_file_is_intact(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    report = check(audit_path, lines)
    assert report.intact and report.problems == ()


def test_edited_field_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    assert b'"qty":100' in lines[4]
    lines[4] = lines[4].replace(b'"qty":100', b'"qty":900')
    report = check(audit_path, lines)
    assert kinds(report) == [(ProblemKind.EDITED, 5, 4)]


def test_edited_and_rehashed_record_breaks_the_next_link(
    write_file: WriteFile, audit_path: Path
) -> None:
    lines = write_file()
    prev = lines[3]
    lines[4] = forged(prev, "o-forged")  # same seq and prev as the original, new hash
    report = check(audit_path, lines)
    assert kinds(report) == [(ProblemKind.BROKEN_LINK, 6, 5)]
    assert "line 5 (seq 4)" in report.problems[0].detail


def test_deleted_record_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    del lines[7]
    report = check(audit_path, lines)
    assert kinds(report) == [(ProblemKind.DELETED, 8, 8)]
    assert "1 record(s) missing between line 7 (seq 6) and line 8 (seq 8)" in (
        report.problems[0].detail
    )


def test_deleted_first_record_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    report = check(audit_path, lines[1:])
    assert kinds(report) == [(ProblemKind.DELETED, 1, 1)]


def test_several_deleted_records_are_counted(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    del lines[5:9]
    report = check(audit_path, lines)
    assert kinds(report) == [(ProblemKind.DELETED, 6, 9)]
    assert report.problems[0].detail.startswith("4 record(s) missing")


def test_inserted_forged_record_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    lines.insert(6, forged(lines[5], "o-injected"))
    report = check(audit_path, lines)
    assert kinds(report) == [(ProblemKind.INSERTED, 7, 6)]


def test_inserted_record_with_unrelated_prev_is_named(
    write_file: WriteFile, audit_path: Path
) -> None:
    lines = write_file()
    lines.insert(6, forged(lines[12], "o-injected", seq=6))
    report = check(audit_path, lines)
    assert kinds(report) == [(ProblemKind.INSERTED, 7, 6)]


def test_inserted_at_the_start_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    first = msgspec.json.decode(lines[0])
    payload = {k: v for k, v in first.items() if k not in ("seq", "prev", "hash")}
    fake, _, _ = seal_batch([msgspec.json.encode(payload)], 0, b"0" * 64)
    report = check(audit_path, [b"".join(fake), *lines])
    assert kinds(report) == [(ProblemKind.INSERTED, 1, 0)]


def test_duplicated_record_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    lines.insert(9, lines[9])
    report = check(audit_path, lines)
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.INSERTED, 9)]


def test_swapped_records_are_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    lines[9], lines[10] = lines[10], lines[9]
    report = check(audit_path, lines)
    assert report.problems, "a swap must be detected"
    assert {p.kind for p in report.problems} == {ProblemKind.REORDERED}
    named = {p.line for p in report.problems}
    assert {10, 11} <= named
    assert "line 10 (seq 10) belongs after line 11 (seq 9)" in report.problems[0].detail


def test_moved_record_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    moved = lines.pop(3)
    lines.insert(12, moved)
    report = check(audit_path, lines)
    assert ProblemKind.REORDERED in {p.kind for p in report.problems}
    assert any(p.line == 13 and p.seq == 3 for p in report.problems)


def test_truncated_last_line_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    lines[-1] = lines[-1][:40]
    report = check(audit_path, lines)
    assert kinds(report) == [(ProblemKind.TRUNCATED, len(lines), None)]


def test_missing_final_newline_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    lines[-1] = lines[-1].rstrip(b"\n")
    report = check(audit_path, lines)
    assert kinds(report) == [(ProblemKind.TRUNCATED, len(lines), len(lines) - 1)]


def test_non_json_line_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    lines.insert(3, b"rm -rf / # not a record\n")
    report = check(audit_path, lines)
    assert kinds(report)[0] == (ProblemKind.NOT_JSON, 4, None)


def test_json_that_is_not_a_record_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    lines[2] = lines[2].replace(b'"seq":2,', b'"seq":"two",')
    report = check(audit_path, lines)
    assert kinds(report)[0] == (ProblemKind.MALFORMED, 3, None)


def test_cut_tail_needs_the_anchor(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    head = msgspec.json.decode(lines[-1])["hash"]
    assert check(audit_path, lines, anchor=head).intact
    cut = check(audit_path, lines[:-3])
    assert cut.intact, "a chain alone cannot see records cut from the end"
    report = check(audit_path, lines[:-3], anchor=head)
    assert [p.kind for p in report.problems] == [ProblemKind.ANCHOR_MISSING]
    earlier = msgspec.json.decode(lines[5])["hash"]
    assert check(audit_path, lines, anchor=earlier).intact  # the file grew since: fine


def test_problems_are_ordered_by_line(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file(40)
    lines[30] = lines[30].replace(b'"qty":100', b'"qty":101')
    del lines[10]
    lines[2] = b"{}\n"
    report = check(audit_path, lines)
    assert [p.line for p in report.problems] == sorted(p.line for p in report.problems)
    assert all(isinstance(p, Problem) for p in report.problems)
    assert {p.kind for p in report.problems} == {
        ProblemKind.MALFORMED,
        ProblemKind.DELETED,
        ProblemKind.EDITED,
    }


def test_problem_list_is_capped_and_says_so(audit_path: Path) -> None:
    audit_path.write_bytes(b"garbage\n" * 1500)
    report = verify_file(audit_path)
    assert len(report.problems) == 1000 and report.problems_capped
    assert report.records == 0 and report.lines == 1500
