"""A file that ends inside a line with nothing after it was cut after it was written.

A recorder copying a line (running, or killed mid-copy) has its file allocated past it in
zero bytes, the line's own missing bytes among them; a closed one cuts its file after a
whole line. Only a copy tool, a full disk or a `truncate` ends a file inside a line, and
such a file was reported as `truncated`, which `audit verify` and `audit why` show as "a
recorder is writing this file, or crashed" (why: exit 0 beside "chain verified").
"""

from __future__ import annotations

from pathlib import Path

from knightwatch.audit import FlightRecorder, ProblemKind, verify_file
from knightwatch.audit.why import explain_order
from knightwatch.clock import SimClock

from .helpers import record_one


def _closed_file(path: Path) -> bytes:
    clock = SimClock(1_343_828_400_000_000_000)
    with FlightRecorder(path, clock=clock, batch_size=4) as rec:
        for i in range(8):
            clock.advance(1_000)
            record_one(rec, i)
            if i % 3 == 0:
                rec.flush()  # a seal after it
    data = path.read_bytes()
    assert verify_file(path).intact
    return data


def _ends(path: Path) -> list[tuple[ProblemKind, int]]:
    """What verify says of the file's end (every other problem is its unsealed records)."""
    report = verify_file(path)
    assert {p.kind for p in report.problems} <= {
        ProblemKind.UNSEALED,
        ProblemKind.CUT,
        ProblemKind.TRUNCATED,
    }
    return [(p.kind, p.line) for p in report.problems if p.kind is not ProblemKind.UNSEALED]


def test_a_closed_file_cut_inside_any_line_is_cut_not_a_writers_end(tmp_path: Path) -> None:
    path = tmp_path / "n1.jsonl"
    data = _closed_file(path)
    ends = [i + 1 for i, b in enumerate(data) if b == 10]
    # inside every line: after its first byte, in its middle, before its newline (a whole
    # line cut with its seal is shown only by an anchor or a checkpoint)
    for line, (start, end) in enumerate(zip([0, *ends], ends, strict=False), start=1):
        for at in (start + 1, (start + end) // 2, end - 1):
            path.write_bytes(data[:at])
            assert _ends(path) == [(ProblemKind.CUT, line)], at
            path.write_bytes(data[:at] + b"\0" * 512)  # what a recorder leaves: a writer's end
            assert _ends(path) == [(ProblemKind.TRUNCATED, line)], at


def test_why_of_a_closed_file_cut_after_the_answer_is_not_a_writers_end(
    tmp_path: Path,
) -> None:
    path = tmp_path / "n1.jsonl"
    data = _closed_file(path)
    path.write_bytes(data[:-10])  # the final seal cut inside
    exp = explain_order(path, "o0")
    assert exp.chain.intact
    assert exp.file is not None
    assert [p.kind for p in exp.file.problems] == [ProblemKind.UNSEALED, ProblemKind.CUT]
    path.write_bytes(data[:-10] + b"\0" * 4096)
    exp = explain_order(path, "o0")
    assert exp.file is not None
    assert [p.kind for p in exp.file.problems] == [ProblemKind.UNSEALED, ProblemKind.TRUNCATED]


def test_a_last_line_with_zero_bytes_and_nothing_after_it_is_not_a_crashs_torn_copy(
    tmp_path: Path,
) -> None:
    """A copy a crash stopped midway (its end stored before its middle) is followed by the
    file's allocated zero bytes; with nothing after it, the line stays not JSON."""
    path = tmp_path / "n1.jsonl"
    data = _closed_file(path)
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    torn = data[:start] + data[start : start + 20] + b"\0" * 30 + data[start + 50 :]
    path.write_bytes(torn)
    assert [p.kind for p in verify_file(path).problems][-1] is ProblemKind.NOT_JSON
    path.write_bytes(torn + b"\0" * 4096)
    assert [p.kind for p in verify_file(path).problems][-1] is ProblemKind.TRUNCATED
