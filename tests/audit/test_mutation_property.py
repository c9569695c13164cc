"""Property: any change to the bytes, presence or order of one line of a valid file is detected."""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.audit import FlightRecorder, verify_lines
from knightwatch.audit.log import is_seal
from knightwatch.audit.read import last_lines
from knightwatch.clock import SimClock

from .helpers import CTX, record_one


def _clean_file() -> list[bytes]:
    clock = SimClock(1_343_828_400_000_000_000)
    rec = FlightRecorder(None, clock=clock, batch_size=4)
    for i in range(24):
        clock.advance(7_000)
        rec.ready()
        record_one(rec, i)
    rec.record_event(
        "halt", CTX, scope="fleet", key="fleet", state="HALTED", code="halted",
        reason="r", actor="a",
    )  # fmt: skip
    rec.record_event("resume", CTX, scope="fleet", key="fleet", reason="r", actor="a")
    rec.flush()
    return [line + b"\n" for line in rec.lines]


CLEAN = _clean_file()


def _batch_start(line: int) -> int:
    """Index of the first line of the batch `line` (0-based) belongs to."""
    return max((i + 1 for i in range(line) if is_seal(CLEAN[i])), default=0)


def _split(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def test_the_clean_file_is_intact() -> None:
    assert verify_lines(CLEAN, "clean").intact


@settings(max_examples=400, deadline=None)
@given(
    line=st.integers(0, len(CLEAN) - 1),
    pos=st.integers(0, 10_000),
    op=st.sampled_from(["replace", "insert", "delete"]),
    byte=st.integers(0, 255),
)
def test_any_single_line_mutation_is_detected(line: int, pos: int, op: str, byte: int) -> None:
    target = bytearray(CLEAN[line])
    i = pos % len(target)
    if op == "replace":
        if target[i] == byte:
            byte = (byte + 1) % 256
        target[i] = byte
    elif op == "insert":
        target.insert(i, byte)
    else:
        del target[i]
    mutated = [*CLEAN[:line], bytes(target), *CLEAN[line + 1 :]]
    report = verify_lines(_split(b"".join(mutated)), "mutated")
    assert not report.intact
    # nothing before the mutated line's batch is blamed (a seal names its whole batch)
    assert report.problems[0].line >= _batch_start(line) + 1


@settings(max_examples=100, deadline=None)
@given(line=st.integers(0, len(CLEAN) - 1))
def test_any_deleted_line_is_detected(line: int) -> None:
    # even the last: the records before it are then unsealed
    report = verify_lines([*CLEAN[:line], *CLEAN[line + 1 :]], "deleted")
    assert not report.intact


@settings(max_examples=100, deadline=None)
@given(a=st.integers(0, len(CLEAN) - 1), b=st.integers(0, len(CLEAN) - 1))
def test_any_swap_of_two_distinct_lines_is_detected(a: int, b: int) -> None:
    if a == b:
        b = (a + 1) % len(CLEAN)
    lines = list(CLEAN)
    lines[a], lines[b] = lines[b], lines[a]
    report = verify_lines(lines, "swapped")
    assert not report.intact
    named = {p.line for p in report.problems}
    assert named & {a + 1, b + 1, a + 2, b + 2}


@pytest.mark.parametrize("chunk", [16, 100, 4096])
@pytest.mark.parametrize("n", [1, 3, len(CLEAN), len(CLEAN) + 5])
def test_last_lines_reads_across_chunks(tmp_path: Path, chunk: int, n: int) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"".join(CLEAN))
    got = last_lines(path, n, chunk=chunk)
    assert got == [line.rstrip(b"\n") for line in CLEAN[-n:]]
    assert (
        sha256(b"".join(got)).digest()
        == sha256(b"".join(line.rstrip(b"\n") for line in CLEAN[-n:])).digest()
    )
