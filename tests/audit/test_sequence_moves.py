"""Lines moved as a block, and many lines moved, are explained as moved, and in bounded time.

A run of records put back in the wrong place (a batch and its seal pasted after another)
was reported as that many records deleted and its first line as inserted: an investigator
read that evidence was lost when every record was still in the file. A file whose fills
were moved to its end (`grep -v fill; grep fill`) took time proportional to the gaps times
the moved lines: hours for a day's file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from knightwatch.audit import ProblemKind
from knightwatch.audit.verify import verify_lines

from .conftest import WriteFile
from .test_tamper import SEAL_1, SEAL_2, check, kinds


def test_a_batch_moved_to_the_end_is_reordered_not_deleted(
    write_file: WriteFile, audit_path: Path
) -> None:
    lines = write_file()
    moved = lines[SEAL_1:SEAL_2]  # lines 10-18: batch 2 and its seal (seq 9-17)
    report = check(audit_path, lines[:SEAL_1] + lines[SEAL_2:] + moved)
    found = {p.kind for p in report.problems}
    assert ProblemKind.DELETED not in found and ProblemKind.INSERTED not in found, kinds(report)
    reordered = [p for p in report.problems if p.kind is ProblemKind.REORDERED]
    assert [(p.line, p.seq) for p in reordered] == [(18, 9)]
    assert reordered[0].detail == "lines 18-26 (seq 9-17) belong after line 9 (seq 8)"
    assert not report.intact  # the chain still breaks where the batches meet


def test_a_block_of_records_moved_within_the_file_is_named_as_one(
    write_file: WriteFile, audit_path: Path
) -> None:
    """Seq 2-4 pasted after seq 11, and two whole batches swapped: nothing is missing."""
    lines = write_file()
    block = lines[2:5]
    rest = lines[:2] + lines[5:]
    at = rest.index(lines[11]) + 1
    report = check(audit_path, rest[:at] + block + rest[at:])
    assert ProblemKind.DELETED not in {p.kind for p in report.problems}, kinds(report)
    assert ProblemKind.INSERTED not in {p.kind for p in report.problems}, kinds(report)
    reordered = [p for p in report.problems if p.kind is ProblemKind.REORDERED]
    # either block moved explains it; both are named, each where it belongs, nothing lost
    assert [p.detail for p in reordered] == [
        "lines 3-9 (seq 5-11) belong after line 12 (seq 4)",
        "lines 10-12 (seq 2-4) belong after line 2 (seq 1)",
    ]

    swapped = lines[SEAL_1:SEAL_2] + lines[:SEAL_1] + lines[SEAL_2:]
    report = check(audit_path, swapped)
    assert ProblemKind.DELETED not in {p.kind for p in report.problems}, kinds(report)
    assert ProblemKind.INSERTED not in {p.kind for p in report.problems}, kinds(report)
    assert {(p.line, p.seq) for p in report.problems if p.kind is ProblemKind.REORDERED} == {
        (1, 9),
        (10, 0),
    }


def test_deleted_and_duplicated_blocks_are_still_named(
    write_file: WriteFile, audit_path: Path
) -> None:
    """A block that turns up nowhere else is deleted; a block that repeats is inserted."""
    lines = write_file()
    report = check(audit_path, lines[:2] + lines[5:])
    assert kinds(report)[0] == (ProblemKind.DELETED, 3, 5)
    assert report.problems[0].detail.startswith("3 record(s) missing")
    report = check(audit_path, lines[:SEAL_1] + lines[:SEAL_1] + lines[SEAL_1:])
    assert (ProblemKind.INSERTED, SEAL_1 + 1, 0) in kinds(report)
    assert ProblemKind.REORDERED not in {p.kind for p in report.problems}


@pytest.mark.timeout(60)  # a hang guard, not a benchmark: about a second now, 81 s before
def test_many_moved_lines_are_explained_in_bounded_time() -> None:
    """Every 7th of 300,000 records moved to the end, in reverse: about 43,000 gaps and
    43,000 moved lines. Under a second here; the search per gap took minutes."""
    n = 300_000
    lines = [b'{"seq":%d,"kind":"fill"}\n' % i for i in range(n)]
    kept = [line for i, line in enumerate(lines) if i % 7]
    moved = [line for i, line in enumerate(lines) if not i % 7]
    report = verify_lines(kept + moved[::-1], "f")
    assert report.problems_capped
    assert {p.kind for p in report.problems} == {ProblemKind.REORDERED}
    first = report.problems[0]
    assert first.detail == f"line {first.line} (seq {first.seq}) belongs after line " + (
        f"{first.seq - first.seq // 7} (seq {first.seq - 1})"
    )
