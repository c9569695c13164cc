"""read_lines: every line, cut when too long, and nothing past where the caller says the
data ends (a recorder's file is allocated ahead in zero bytes)."""

from __future__ import annotations

import io

from knightwatch.audit.read import MAX_LINE_BYTES, read_lines


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
