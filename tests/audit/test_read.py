"""read_lines and last_lines: every line, cut when too long, and nothing past where the
caller says the data ends (a recorder's file is allocated ahead in zero bytes)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.audit import verify_file
from knightwatch.audit.read import MAX_LINE_BYTES, last_lines, read_lines
from knightwatch.audit.record import format_ts
from knightwatch.audit.why import explain_order

from .conftest import WriteFile

HOLE = 64 * 1024**3
"""A crashed or tampered file cut to 64 GiB with `truncate`: sparse, nothing on disk."""


def test_lines_come_back_with_their_newlines_and_a_torn_last_line_without() -> None:
    f = io.BytesIO(b'{"a":1}\n{"b":2}\n{"torn')
    assert list(read_lines(f)) == [b'{"a":1}\n', b'{"b":2}\n', b'{"torn']


def test_a_long_line_is_cut_and_the_rest_skipped() -> None:
    f = io.BytesIO(b"x" * (MAX_LINE_BYTES + 10) + b"\n" + b'{"a":1}\n')
    cut, after = list(read_lines(f))
    assert len(cut) == MAX_LINE_BYTES + 2 and cut.endswith(b"\n") and after == b'{"a":1}\n'


def test_nothing_past_the_end_is_read() -> None:
    data = b'{"a":1}\n{"b":2}\n'
    f = io.BytesIO(data + bytes(8 * MAX_LINE_BYTES))
    assert list(read_lines(f, end=len(data))) == [b'{"a":1}\n', b'{"b":2}\n']
    assert f.tell() == len(data)
    f = io.BytesIO(data + bytes(8 * MAX_LINE_BYTES))
    assert len(list(read_lines(f))) == 3  # without it, the zeros come back as a line


def test_the_end_cuts_a_long_line_too_and_counts_from_the_position() -> None:
    f = io.BytesIO(b"head\n" + b"y" * (3 * MAX_LINE_BYTES) + bytes(MAX_LINE_BYTES))
    f.readline()
    end = 5 + 2 * MAX_LINE_BYTES
    (cut,) = list(read_lines(f, end=end))
    assert len(cut) == MAX_LINE_BYTES + 1 and not cut.endswith(b"\n")
    assert f.tell() == end


def _no_newline_or_zero(line: bytes) -> bytes:
    """A line's bytes (a file's data ends at its last non-zero byte: `_data_end`)."""
    return line.replace(b"\n", b"x").replace(b"\0", b"y")


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(_no_newline_or_zero), max_size=12),
    trailing=st.booleans(),
    n=st.integers(min_value=1, max_value=15),
    chunk=st.integers(min_value=1, max_value=64),
    limit=st.integers(min_value=1, max_value=50),
)
def test_last_lines_are_the_files_last_lines_with_long_ones_cut(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[bytes],
    trailing: bool,
    n: int,
    chunk: int,
    limit: int,
) -> None:
    """Whatever the chunk, every line is found; one over `limit` comes back as its first
    `limit + 1` bytes, as `read_lines` cuts it, and the lines before it are still found
    (a tail of a file whose last line was too long showed nothing before)."""
    data = b"\n".join(lines) + (b"\n" if trailing and lines else b"")
    path = tmp_path_factory.mktemp("tail") / "a.jsonl"
    path.write_bytes(data)
    split = data.split(b"\n")
    if split and split[-1] == b"":
        split.pop()
    expected = [line[: limit + 1] for line in split][-n:]
    assert last_lines(path, n, chunk=chunk, limit=limit) == expected


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (1_343_828_400_000_000_123, "2012-08-01T13:40:00.000000123Z"),
        (-1, "1969-12-31T23:59:59.999999999Z"),
        (-62_135_596_800 * 10**9, "0001-01-01T00:00:00.000000000Z"),
        (253_402_300_799 * 10**9 + 999_999_999, "9999-12-31T23:59:59.999999999Z"),
        (10**21, "? (out of range: 1000000000000000000000 ns)"),
        (-(10**21), "? (out of range: -1000000000000000000000 ns)"),
        (253_402_300_800 * 10**9, "? (out of range: 253402300800000000000 ns)"),
    ],
)
def test_format_ts_shows_any_time_and_says_when_no_calendar_can(ns: int, text: str) -> None:
    """A time outside years 1-9999 (a wrong clock, an edited file) raised ValueError from
    the function itself: every reader had to guard it, or end with a traceback."""
    assert format_ts(ns) == text


def test_a_sparse_file_is_read_for_its_data_not_its_hole(
    write_file: WriteFile, audit_path: Path
) -> None:
    """Past 256 MiB of zeros `data_end` gave up and every reader read the whole hole:
    verify, why and tail of a file cut to 64 GiB read 64 GiB of zeros. The hole is
    skipped (`SEEK_DATA`/`SEEK_HOLE`); the bytes this process reads (`rchar` of
    /proc/self/io) show it."""
    lines = write_file(12)
    os.truncate(audit_path, HOLE)
    before = read_so_far()
    report = verify_file(audit_path)
    assert report.intact and report.records == len(lines) - 2 and report.seals == 2
    assert last_lines(audit_path, 2) == [line.rstrip(b"\n") for line in lines[-2:]]
    exp = explain_order(audit_path, "o4")
    assert not exp.decision.accepted and exp.chain.intact
    assert read_so_far() - before < 64 * 1024 * 1024  # far less than the hole


def read_so_far() -> int:
    """Bytes this process has read through read(2)-like calls (/proc/self/io `rchar`)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def test_a_hole_inside_a_file_is_skipped_and_named_not_read(
    write_file: WriteFile, audit_path: Path
) -> None:
    """A file with 64 GiB of hole cut into its middle (zeros, on no disk) was read zero by
    zero: `verify` read the whole hole as one over-long line. The hole is skipped; the
    line holding it is still named (too long), and the records after it are read."""
    lines = write_file(12)
    head, tail = b"".join(lines[:9]), b"".join(lines[9:])
    audit_path.write_bytes(head)
    os.truncate(audit_path, len(head) + HOLE)
    with open(audit_path, "ab") as f:
        f.write(tail)
    before = read_so_far()
    report = verify_file(audit_path)
    assert read_so_far() - before < 64 * 1024 * 1024  # far less than the hole
    assert report.lines == len(lines) and report.last_seq == len(lines) - 1
    assert [(p.kind, p.line) for p in report.problems][:1] == [("malformed", 10)]
    assert f"longer than {MAX_LINE_BYTES} bytes" in report.problems[0].detail


def test_a_long_run_of_written_zeros_is_read_through_not_lost(tmp_path: Path) -> None:
    """Zeros written out (data, not a hole) are read as they are: the lines after them are
    all found, none twice (the hole check must not move the file under its buffer)."""
    path = tmp_path / "zeros.jsonl"
    path.write_bytes(b'{"a":1}\n' + bytes(64) + b'x\n{"b":2}\n{"c":3}\n')
    with open(path, "rb") as f:
        got = list(read_lines(f, limit=16))
    assert got == [b'{"a":1}\n', bytes(17) + b"\n", b'{"b":2}\n', b'{"c":3}\n']
