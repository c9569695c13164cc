"""Reading records back: typed decoding of a line and the last lines of a file."""

from __future__ import annotations

import os

import msgspec

from knightwatch.audit.record import DECISION, DecisionRecord, EventRecord, Kind

_kind = msgspec.json.Decoder(Kind).decode
_decision = msgspec.json.Decoder(DecisionRecord).decode
_event = msgspec.json.Decoder(EventRecord).decode

AnyRecord = DecisionRecord | EventRecord


def decode_record(line: bytes) -> AnyRecord:
    """Decode one line; raises msgspec.DecodeError if it is not a record."""
    if _kind(line).kind == DECISION:
        return _decision(line)
    return _event(line)


def last_lines(path: str | os.PathLike[str], n: int, chunk: int = 64 * 1024) -> list[bytes]:
    """The last n complete lines of a file (without newlines), reading from the end."""
    if n <= 0:
        return []
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        buf = b""
        pos = end
        while pos > 0 and buf.count(b"\n") <= n:
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
    lines = buf.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if pos > 0:
        lines = lines[1:]  # the first piece may start mid-line
    return lines[-n:]
