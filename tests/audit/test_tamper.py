"""Every kind of tampering is detected: the seal names the batch, the sequence names the line."""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

import msgspec

from knightwatch.audit import Problem, ProblemKind, VerifyReport, verify_file
from knightwatch.audit.chain import finish_seal, seal_body, split_line
from knightwatch.audit.read import MAX_LINE_BYTES

from .conftest import WriteFile

# write_file(20): lines 1-8 records (seq 0-7), line 9 seal (seq 8), lines 10-17 records,
# line 18 seal (seq 17), lines 19-25 records, line 26 seal (seq 25)
SEAL_1, SEAL_2, SEAL_3 = 9, 18, 26


def check(path: Path, lines: list[bytes], anchor: str | None = None) -> VerifyReport:
    path.write_bytes(b"".join(lines))
    return verify_file(path, anchor=anchor)


def kinds(report: VerifyReport) -> list[tuple[ProblemKind, int, int | None]]:
    return [(p.kind, p.line, p.seq) for p in report.problems]


def reseal(lines: list[bytes], seal_line: int) -> list[bytes]:
    """Recompute the seal on `seal_line` (1-based) over the lines before it, as a forger would."""
    lines = list(lines)
    start = max((i + 1 for i in range(seal_line - 1) if b'"kind":"seal"' in lines[i]), default=0)
    old = msgspec.json.decode(lines[seal_line - 1])
    body = seal_body(old["seq"], old["ts"], old["records"], old["prev"].encode())
    line, _ = finish_seal(sha256(b"".join(lines[start : seal_line - 1])), body)
    lines[seal_line - 1] = line
    return lines


def test_clean_file_is_intact(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    report = check(audit_path, lines)
    assert report.intact and report.problems == ()
    assert (report.records, report.seals, report.unsealed) == (23, 3, 0)
    assert report.head == msgspec.json.decode(lines[-1])["hash"]


def test_edited_field_names_the_batch(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    assert b'"qty":100' in lines[4]
    lines[4] = lines[4].replace(b'"qty":100', b'"qty":900')
    report = check(audit_path, lines)
    assert kinds(report) == [(ProblemKind.EDITED, SEAL_1, 8)]
    assert "lines 1-8 (seq 0-7)" in report.problems[0].detail


def test_edited_seal_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    lines[SEAL_2 - 1] = lines[SEAL_2 - 1].replace(b'"records":8', b'"records":7')
    assert kinds(check(audit_path, lines)) == [(ProblemKind.EDITED, SEAL_2, 17)]


def test_edited_and_resealed_batch_breaks_the_next_seal(
    write_file: WriteFile, audit_path: Path
) -> None:
    lines = write_file()
    lines[11] = lines[11].replace(b'"qty":100', b'"qty":900')
    lines = reseal(lines, SEAL_2)
    report = check(audit_path, lines)
    assert kinds(report) == [(ProblemKind.BROKEN_LINK, SEAL_3, 25)]
    assert "does not chain to the seal before it" in report.problems[0].detail


def test_deleted_record_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    del lines[5]
    report = check(audit_path, lines)
    assert kinds(report) == [(ProblemKind.DELETED, 6, 6), (ProblemKind.EDITED, SEAL_1 - 1, 8)]
    assert report.problems[0].detail == (
        "1 record(s) missing between line 5 (seq 4) and line 6 (seq 6)"
    )


def test_deleted_first_record_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    report = check(audit_path, lines[1:])
    assert kinds(report)[0] == (ProblemKind.DELETED, 1, 1)


def test_several_deleted_records_are_counted(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    del lines[2:6]
    report = check(audit_path, lines)
    assert kinds(report)[0] == (ProblemKind.DELETED, 3, 6)
    assert report.problems[0].detail.startswith("4 record(s) missing")


def test_deleted_batch_with_its_seal_breaks_the_chain(
    write_file: WriteFile, audit_path: Path
) -> None:
    lines = write_file()
    del lines[SEAL_1:SEAL_2]  # lines 10-18: a whole batch and its seal
    report = check(audit_path, lines)
    assert {p.kind for p in report.problems} == {ProblemKind.DELETED, ProblemKind.BROKEN_LINK}
    assert kinds(report)[0] == (ProblemKind.DELETED, 10, 18)


def test_inserted_record_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    forged = msgspec.json.decode(lines[5])
    forged["order_id"] = "o-injected"
    lines.insert(6, msgspec.json.encode(forged) + b"\n")  # a second seq 5 after the first
    report = check(audit_path, lines)
    assert kinds(report) == [(ProblemKind.INSERTED, 7, 5), (ProblemKind.EDITED, SEAL_1 + 1, 8)]


def test_record_with_a_seq_from_nowhere_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    forged = msgspec.json.decode(lines[5])
    forged["seq"] = 999
    lines.insert(6, msgspec.json.encode(forged) + b"\n")
    report = check(audit_path, lines)
    assert kinds(report)[0] == (ProblemKind.INSERTED, 7, 999)


def test_duplicated_record_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    lines.insert(12, lines[12])
    report = check(audit_path, lines)
    assert (ProblemKind.INSERTED, 14, 12) in kinds(report)


def test_swapped_records_are_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    lines[10], lines[11] = lines[11], lines[10]  # seq 10 and 11
    report = check(audit_path, lines)
    assert {p.kind for p in report.problems} == {ProblemKind.REORDERED, ProblemKind.EDITED}
    reordered = [p for p in report.problems if p.kind is ProblemKind.REORDERED]
    assert [p.line for p in reordered] == [11]  # one record moved explains a swap
    assert reordered[0].detail == "line 11 (seq 11) belongs after line 12 (seq 10)"


def test_moved_record_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    moved = lines.pop(3)  # seq 3
    lines.insert(12, moved)
    report = check(audit_path, lines)
    assert (ProblemKind.REORDERED, 13, 3) in kinds(report)
    assert ProblemKind.DELETED not in {p.kind for p in report.problems}


def test_record_moved_earlier_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    moved = lines.pop(6)  # seq 6
    lines.insert(2, moved)
    report = check(audit_path, lines)
    assert (ProblemKind.REORDERED, 3, 6) in kinds(report)
    assert ProblemKind.DELETED not in {p.kind for p in report.problems}


def test_truncated_last_line_is_named(write_file: WriteFile, audit_path: Path) -> None:
    """Cut with nothing after it: not what a recorder leaves (`cut`, test_cut_files.py);
    with the allocated zero bytes a crashed or running recorder's file has, `truncated`."""
    lines = write_file()
    lines[-1] = lines[-1][:40]
    report = check(audit_path, lines)
    assert kinds(report) == [
        (ProblemKind.UNSEALED, SEAL_2 + 1, 18),
        (ProblemKind.CUT, 26, None),
    ]
    report = check(audit_path, [*lines, b"\0" * 4096])
    assert kinds(report) == [
        (ProblemKind.UNSEALED, SEAL_2 + 1, 18),
        (ProblemKind.TRUNCATED, 26, None),
    ]


def test_missing_final_newline_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    lines[-1] = lines[-1].rstrip(b"\n")
    report = check(audit_path, lines)
    assert kinds(report) == [(ProblemKind.CUT, SEAL_3, 25)]  # the newline is not hashed
    report = check(audit_path, [*lines, b"\0"])
    assert kinds(report) == [(ProblemKind.TRUNCATED, SEAL_3, 25)]


def test_non_json_line_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    lines.insert(3, b"rm -rf / # not a record\n")
    report = check(audit_path, lines)
    assert kinds(report)[0] == (ProblemKind.NOT_JSON, 4, None)
    assert (ProblemKind.EDITED, SEAL_1 + 1, 8) in kinds(report)


def test_json_that_is_not_a_record_is_named(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    lines[2] = lines[2].replace(b'"seq":2,', b'"seq":"two",')
    report = check(audit_path, lines)
    assert kinds(report)[0] == (ProblemKind.MALFORMED, 3, None)


def test_records_after_the_last_seal_are_unsealed(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    report = check(audit_path, lines[:-1])  # a recorder that crashed before its last seal
    assert kinds(report) == [(ProblemKind.UNSEALED, SEAL_2 + 1, 18)]
    assert report.unsealed == 7 and report.head == msgspec.json.decode(lines[SEAL_2 - 1])["hash"]


def test_allocated_zero_bytes_after_the_data_are_free_space(
    write_file: WriteFile, audit_path: Path
) -> None:
    lines = write_file()
    report = check(audit_path, [*lines, b"\0" * 100_000])
    assert report.intact and report.lines == len(lines)


def test_a_crashed_recorders_torn_last_line_is_truncated_not_malformed(
    write_file: WriteFile, audit_path: Path
) -> None:
    """A crashed recorder's file ends in megabytes of allocated zero bytes: its torn last
    line ran into them and was reported as a malformed line over 1 MiB, not as cut short."""
    lines = write_file()
    torn = lines[-2][:40]
    report = check(audit_path, [*lines[:-2], torn, b"\0" * (2 * MAX_LINE_BYTES)])
    assert kinds(report) == [
        (ProblemKind.UNSEALED, SEAL_2 + 1, 18),
        (ProblemKind.TRUNCATED, 25, None),
    ]
    assert report.problems[1].detail == "last line cut short (40 B)"


def test_a_last_line_whose_copy_a_crash_stopped_midway_is_truncated(
    write_file: WriteFile, audit_path: Path
) -> None:
    """memcpy may store a line's end before its middle: the last line looks complete with
    zeros inside, which a recorder cuts as torn; verify called it "not JSON"."""
    lines = write_file()
    line = lines[-2]
    torn = line[:40] + b"\0" * (len(line) - 72) + line[-32:]
    report = check(audit_path, [*lines[:-2], torn, b"\0" * 4096])
    assert kinds(report) == [
        (ProblemKind.UNSEALED, SEAL_2 + 1, 18),
        (ProblemKind.TRUNCATED, 25, None),
    ]
    assert "a crash stopped its copy" in report.problems[1].detail


def test_zero_bytes_inside_the_data_are_not_free_space(
    write_file: WriteFile, audit_path: Path
) -> None:
    lines = write_file()
    lines.insert(4, b"\0" * 10 + b"\n")
    assert kinds(check(audit_path, lines))[0] == (ProblemKind.NOT_JSON, 5, None)


def test_cut_tail_needs_the_anchor(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file()
    head = msgspec.json.decode(lines[-1])["hash"]
    assert check(audit_path, lines, anchor=head).intact
    cut = check(audit_path, lines[:SEAL_2])  # the last batch and its seal removed
    assert cut.intact, "a chain alone cannot see a batch cut from the end with its seal"
    report = check(audit_path, lines[:SEAL_2], anchor=head)
    assert [p.kind for p in report.problems] == [ProblemKind.ANCHOR_MISSING]
    earlier = msgspec.json.decode(lines[SEAL_1 - 1])["hash"]
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


def test_seal_line_splits_into_body_and_hash(write_file: WriteFile) -> None:
    lines = write_file()
    parts = split_line(lines[SEAL_1 - 1].rstrip(b"\n"))
    assert parts is not None and parts[0].endswith(b'"') and len(parts[1]) == 64
    assert split_line(lines[0].rstrip(b"\n")) is None  # records carry no hash
