"""Check a flight-recorder file and name every record that breaks the chain.

One streaming pass checks each line on its own (JSON, sealed, its hash matches
its bytes) and against the line before it (seq + 1, prev = previous hash). Each
broken link is then explained from the hashes found at the other breaks, the
only places a moved record's true neighbours can be: a record whose stated
predecessor sits elsewhere in the file was moved (reordered); one whose
predecessor is two lines up had a line inserted before it; one whose
predecessor is nowhere had records deleted before it.

A chain alone cannot show records cut from the very end, or every record from
some point on rewritten with fresh hashes. Pass the head hash kept elsewhere
(`anchor`) to catch those.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from enum import StrEnum
from typing import Final

import msgspec

from knightwatch.audit.chain import GENESIS, Link, body_hash, split_line
from knightwatch.audit.read import MAX_LINE_BYTES, read_lines

MAX_PROBLEMS: Final = 1000
MAX_BREAKS: Final = 100_000
"""Broken links kept for explanation; bounds memory on a shuffled or spliced file."""


class ProblemKind(StrEnum):
    """Stable codes for what is wrong (part of the CLI's JSON output)."""

    NOT_JSON = "not_json"
    MALFORMED = "malformed"
    EDITED = "edited"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    BROKEN_LINK = "broken_link"
    TRUNCATED = "truncated"
    ANCHOR_MISSING = "anchor_missing"
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    """The record at a signed checkpoint's seq is not the one the node signed (rewritten)."""
    CHECKPOINT_MISSING = "checkpoint_missing"
    """The node signed a seq the file does not hold (cut, or rewritten shorter)."""
    CHECKPOINT_INVALID = "checkpoint_invalid"
    """A checkpoint whose signature does not verify under the node's key (forged)."""
    APPENDED = "appended"
    """Records after the node's signed final checkpoint: written by someone else."""


class Problem(msgspec.Struct, frozen=True):
    kind: ProblemKind
    line: int
    seq: int | None
    detail: str


class VerifyReport(msgspec.Struct, frozen=True):
    path: str
    lines: int
    records: int
    head: str
    problems: tuple[Problem, ...]
    problems_capped: bool = False
    last_seq: int = -1
    """The seq of the last record read (-1 if none)."""
    noted: dict[int, str] = msgspec.field(default_factory=dict)
    """The hash found at each seq asked for (`note`): what signed checkpoints are held to."""

    @property
    def intact(self) -> bool:
        return not self.problems


class _Seen(msgspec.Struct, frozen=True, gc=False):
    line: int
    seq: int
    prev: str
    hash: str


_START = _Seen(line=0, seq=-1, prev="", hash=GENESIS)
"""Stands before line 1, so the first record is checked like any other."""


def verify_file(
    path: str | os.PathLike[str], *, anchor: str | None = None, note: Iterable[int] = ()
) -> VerifyReport:
    """Verify the chain in `path`; raises OSError only when the file cannot be read.

    `anchor` is a head hash noted elsewhere earlier (by another system, or a
    previous verify); if no record carries it, records were cut from the end
    or rewritten.
    """
    with open(path, "rb") as f:
        return verify_lines(read_lines(f), os.fspath(path), anchor=anchor, note=note)


def verify_lines(
    raw_lines: Iterable[bytes],
    name: str,
    *,
    anchor: str | None = None,
    note: Iterable[int] = (),
) -> VerifyReport:
    """Verify raw lines (each with its newline, as read from a binary file).

    `note`: seqs whose hashes the report should carry (`VerifyReport.noted`).
    """
    return _Verifier(anchor, frozenset(note)).run(raw_lines, name)


def _where(seen: _Seen) -> str:
    return "the start of the file" if seen.line == 0 else f"line {seen.line} (seq {seen.seq})"


class _Verifier:
    def __init__(self, anchor: str | None, note: frozenset[int] = frozenset()) -> None:
        self.note = note
        self.noted: dict[int, str] = {}
        self.problems: list[Problem] = []
        self.capped = False
        # (record two lines up or None, record before the break, record after it)
        self.breaks: list[tuple[_Seen | None, _Seen, _Seen]] = []
        self.anchor = anchor
        self.anchor_seen = anchor is None or anchor == GENESIS

    def add(self, kind: ProblemKind, line: int, seq: int | None, detail: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(kind, line, seq, detail))
        else:
            self.capped = True

    def run(self, raw_lines: Iterable[bytes], name: str) -> VerifyReport:
        decode = msgspec.json.Decoder(Link).decode
        before: _Seen | None = None
        prev: _Seen | None = _START
        last: _Seen | None = None
        lineno = 0
        records = 0
        for raw in raw_lines:
            lineno += 1
            complete = raw.endswith(b"\n")
            line = raw[:-1] if complete else raw
            if len(line) > MAX_LINE_BYTES:
                self.add(
                    ProblemKind.MALFORMED, lineno, None, f"line longer than {MAX_LINE_BYTES} bytes"
                )
                before, prev = prev, None
                continue
            try:
                link = decode(line)
            except RecursionError:
                self.add(ProblemKind.MALFORMED, lineno, None, "not a record: nested too deeply")
                before, prev = prev, None
                continue
            except msgspec.ValidationError as exc:
                self.add(ProblemKind.MALFORMED, lineno, None, f"not a record: {exc}")
                before, prev = prev, None
                continue
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                if complete:
                    self.add(ProblemKind.NOT_JSON, lineno, None, f"not JSON: {exc}")
                else:
                    self.add(
                        ProblemKind.TRUNCATED, lineno, None, f"last line cut short ({len(raw)} B)"
                    )
                before, prev = prev, None
                continue
            records += 1
            if link.seq in self.note and link.seq not in self.noted:
                self.noted[link.seq] = link.hash
            self._check_own(line, link, lineno, complete)
            seen = _Seen(lineno, link.seq, link.prev, link.hash)
            if not self.anchor_seen and link.hash == self.anchor:
                self.anchor_seen = True
            if prev is not None and (link.prev != prev.hash or link.seq != prev.seq + 1):
                if len(self.breaks) < MAX_BREAKS:
                    self.breaks.append((before, prev, seen))
                else:
                    self.capped = True
            before, prev, last = prev, seen, seen
        self._explain(last)
        if not self.anchor_seen:
            self.add(
                ProblemKind.ANCHOR_MISSING,
                lineno,
                None,
                f"no record carries the anchor hash {self.anchor}: "
                "records were cut from the end or rewritten",
            )
        self.problems.sort(key=lambda p: p.line)
        return VerifyReport(
            path=name,
            lines=lineno,
            records=records,
            head=last.hash if last is not None else GENESIS,
            problems=tuple(self.problems),
            problems_capped=self.capped,
            last_seq=last.seq if last is not None else -1,
            noted=self.noted,
        )

    def _check_own(self, line: bytes, link: Link, lineno: int, complete: bool) -> None:
        parts = split_line(line)
        if parts is None:
            self.add(
                ProblemKind.MALFORMED,
                lineno,
                link.seq,
                'the line does not end with its own "hash" field',
            )
        elif parts[1] != link.hash.encode() or body_hash(parts[0]) != parts[1]:
            self.add(
                ProblemKind.EDITED,
                lineno,
                link.seq,
                "contents do not match the record's hash: the record was altered",
            )
        if not complete:
            self.add(ProblemKind.TRUNCATED, lineno, link.seq, "last line has no newline")

    def _explain(self, last: _Seen | None) -> None:
        # Records referenced from somewhere other than the line right after them:
        # every such reference sits at a break, so this set is complete.
        referenced = {seen.prev for _, _, seen in self.breaks}
        inserted: set[int] = set()
        for before, prev, seen in self.breaks:
            # A line inserted between two records: this one chains to the record
            # two lines up, and no record anywhere chains to the line in between.
            if (
                before is not None
                and seen.prev == before.hash
                and prev.hash not in referenced
                and prev.line not in inserted
            ):
                inserted.add(prev.line)
                self.add(
                    ProblemKind.INSERTED,
                    prev.line,
                    prev.seq,
                    f"line {prev.line} is not part of the chain: line {seen.line} "
                    f"(seq {seen.seq}) follows {_where(before)}",
                )
        by_hash = {prev.hash: prev for _, prev, _ in self.breaks}
        if last is not None:
            by_hash[last.hash] = last
        by_hash.setdefault(GENESIS, _START)
        for _, prev, seen in self.breaks:
            if seen.line in inserted or prev.line in inserted:
                continue
            origin = by_hash.get(seen.prev)
            if origin is not None and origin.line != prev.line:
                self.add(
                    ProblemKind.REORDERED,
                    seen.line,
                    seen.seq,
                    f"line {seen.line} (seq {seen.seq}) belongs after {_where(origin)}, "
                    f"not after {_where(prev)}",
                )
            elif origin is None and seen.seq > prev.seq + 1:
                self.add(
                    ProblemKind.DELETED,
                    seen.line,
                    seen.seq,
                    f"{seen.seq - prev.seq - 1} record(s) missing between "
                    f"{_where(prev)} and line {seen.line} (seq {seen.seq})",
                )
            else:
                self.add(
                    ProblemKind.BROKEN_LINK,
                    seen.line,
                    seen.seq,
                    f"line {seen.line} (seq {seen.seq}) does not follow {_where(prev)}: "
                    "one of them was replaced, or its seq or prev rewritten",
                )
