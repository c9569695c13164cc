"""Check a flight-recorder file and name every line that breaks it.

One streaming pass does two independent checks:

* The seals. Each seal line must carry the hash of the exact bytes of the
  lines since the previous seal plus its own body, and chain to the previous
  seal's hash. A failed seal proves its batch (or the seal) was altered, but
  not which line: a hash per batch names the batch.
* The sequence. Every line carries seq 0, 1, 2, ... A line out of sequence is
  explained from where the missing numbers turn up: a record, or a run of
  records, whose numbers fill a gap elsewhere was moved (reordered); one whose
  number was already passed, or belongs nowhere, was inserted; numbers that
  never turn up were deleted. This names the line, inside a batch.

Records after the last seal are reported as unsealed: a recorder still
running, or one that crashed and was not reopened (reopening seals them).
A chain alone cannot show records cut from the very end together with their
seal, or every seal from some point on recomputed. Pass the head hash kept
elsewhere (`anchor`) to catch those.
"""

from __future__ import annotations

import copy
import io
import os
import stat
from bisect import bisect_left
from collections.abc import Iterable
from enum import StrEnum
from hashlib import sha256
from typing import Any, BinaryIO, Final

import msgspec

from knightwatch.audit.chain import GENESIS, SEAL, Seal, split_line
from knightwatch.audit.log import SEGMENT, NotARegularFile
from knightwatch.audit.read import ADOPT, MAX_LINE_BYTES, data_end, read_lines, unreadable_id
from knightwatch.audit.record import DECISION
from knightwatch.audit.standing import unreadable_standing
from knightwatch.inputs import UNDECODABLE

_STANDING: Final = frozenset({"halt", "flag_applied"})
"""The kinds a starting node reads back as standing (`standing.unreadable_standing`)."""
_REFUSED: Final = "the node refuses to start on the file"
_HALTED_ON: Final = "the node starts halted on it until an operator resumes it"
MAX_PROBLEMS: Final = 1000
MAX_BREAKS: Final = 100_000
"""Out-of-sequence lines kept for explanation; bounds memory on a shuffled or spliced file."""


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
    UNSEALED = "unsealed"
    ANCHOR_MISSING = "anchor_missing"
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    """The seal at a signed checkpoint's seq is not the one the node signed (rewritten)."""
    CHECKPOINT_MISSING = "checkpoint_missing"
    """The node signed a seq the file does not hold (cut, or rewritten shorter)."""
    CHECKPOINT_INVALID = "checkpoint_invalid"
    """A checkpoint whose signature does not verify under the node's key (forged)."""
    APPENDED = "appended"
    """Records after the node's signed final checkpoint: written by someone else."""
    CUT = "cut"
    """The file ends inside its last line with nothing after it (`ends_cut`): cut after it
    was written, not a recorder writing it or one that crashed (`truncated`)."""


class _Line(msgspec.Struct):
    """What verification reads of any line: its place in the sequence and its kind (a
    `chain.Link`), and what a starting node must read of a decision, typed loosely so
    that each value is checked by the node's own rule (`read.accepted_ids`)."""

    seq: int
    kind: str
    ts: Any = None
    order_id: Any = None
    accepted: Any = None


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
    seals: int = 0
    unsealed: int = 0
    """Records after the last seal (also reported as an `unsealed` problem)."""
    last_seq: int = -1
    """The seq of the last line read (-1 if none)."""
    noted: dict[int, str] = msgspec.field(default_factory=dict)
    """The seal hash found at each seq asked for (`note`): what signed checkpoints are held to."""

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_file(
    path: str | os.PathLike[str], *, anchor: str | None = None, note: Iterable[int] = ()
) -> VerifyReport:
    """Verify `path`; raises OSError only when the file cannot be read, and
    NotARegularFile when it is not a regular file.

    `anchor` is a head hash noted elsewhere earlier (by another system, or a
    previous verify); if no seal carries it, records were cut from the end
    or rewritten.

    A pipe, device or directory is refused before anything is read: a pipe blocked
    the call for as long as no one wrote to it (opened without `O_NONBLOCK`, even
    the open waited for a writer), and /dev/null, empty, was reported intact.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = "a directory" if stat.S_ISDIR(mode) else "a device, pipe or socket"
            raise NotARegularFile(
                f"{os.fspath(path)}: {what}, not a flight-recorder file "
                "(a recorder writes a regular file)"
            )
        os.set_blocking(fd, True)
        f = open(fd, "rb", closefd=True)  # noqa: SIM115 - closed by the `with` below
    except BaseException:
        os.close(fd)
        raise
    with f:
        # A live or crashed recorder's file ends in allocated zero bytes: read to the data's
        # end, so a crash's torn last line is reported as cut short, not as one line of
        # megabytes (its bytes and the zeros after them) that is "malformed".
        end = data_end(f)
        cut = ends_cut(f, end)
        f.seek(0)
        return verify_lines(
            read_lines(f, end=end), os.fspath(path), anchor=anchor, note=note, ended=cut
        )


def ends_cut(f: BinaryIO, end: int) -> bool:
    """Whether the file holds nothing after its data's `end` (`read.data_end`): a last line
    cut short there was cut after it was written (`verify_lines`' `ended`).

    A recorder copying a line (running, or killed mid-copy) has its file allocated past it
    in zero bytes, the rest of the line's own bytes (its newline) among them, and a closed
    one cuts its file after a whole line; only a copy tool, a full disk or a `truncate`
    ends a file inside a line. Such a file was reported as "a recorder is writing this
    file, or crashed". A data end on a segment boundary is not judged: a machine crash
    may keep a segment's data and lose the allocation of the next one."""
    try:
        size = os.fstat(f.fileno()).st_size
    except (OSError, io.UnsupportedOperation):
        return False  # in memory: nothing to tell by
    return end == size and end % SEGMENT != 0


def verify_lines(
    raw_lines: Iterable[bytes],
    name: str,
    *,
    anchor: str | None = None,
    note: Iterable[int] = (),
    ended: bool = False,
) -> VerifyReport:
    """Verify raw lines (each with its newline, as read from a binary file).

    `note`: seqs whose seal hashes the report should carry (`VerifyReport.noted`).
    `ended`: the lines are the whole file and nothing follows them (`ends_cut`): a last
    line without its newline is `cut`, not `truncated` (a writer's unfinished copy).
    """
    return _Verifier(anchor, frozenset(note), ended).run(raw_lines, name)


def verify_through(
    raw_lines: Iterable[bytes], name: str, through: int, *, ended: bool = False
) -> tuple[VerifyReport, VerifyReport]:
    """Verify raw lines, and say also what verifying only their first `through` lines says
    (as `verify_lines` of them would), in one pass: (the first `through` lines, all).

    `audit why` answers from some lines and is held to the whole file too: a record of the
    order after them, edited so it no longer names the order, is found only as a broken
    chain there. Fewer lines than `through`: both reports are of all of them.
    """
    verifier = _Verifier(None, ended=ended)
    whole = verifier.run(raw_lines, name, through=through)
    return verifier.prefix or whole, whole


class _Verifier:
    def __init__(
        self, anchor: str | None, note: frozenset[int] = frozenset(), ended: bool = False
    ) -> None:
        self.note = note
        self.ended = ended
        self.noted: dict[int, str] = {}
        self.last_seq = -1
        self.problems: list[Problem] = []
        self.capped = False
        self.anchor = anchor
        self.anchor_seen = anchor is None or anchor == GENESIS
        # sequence
        self.run_end: tuple[int, int] = (0, -1)  # (line, seq) ending the last connected run
        self.cur: tuple[int, int] | None = None  # the line waiting for its successor
        self.cur_back = False  # cur follows the parsed line before it
        self.gaps: list[tuple[int, int, int, int]] = []  # (line after, line before, lo, hi)
        self.isolated: dict[int, int] = {}  # seq -> line, lines connected to neither neighbour
        self.repeats: list[tuple[int, int, int, int]] = []  # (line, seq, run-end line, its seq)
        self.run_start: tuple[int, int] | None = None  # (line, seq) starting the current run
        self.runs: list[tuple[int, int, int, int]] = []  # (first line, its seq, last line, seq)
        # seals
        self.batch = sha256()
        self.batch_lines = 0
        self.batch_records = 0  # of them, lines that are records (garbage is not "unsealed")
        self.batch_first = (0, 0)  # (line, seq) of the first line of the current batch
        self.head = GENESIS
        self.prefix: VerifyReport | None = None  # the report of the first `through` lines

    def add(self, kind: ProblemKind, line: int, seq: int | None, detail: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(kind, line, seq, detail))
        else:
            self.capped = True

    def run(self, raw_lines: Iterable[bytes], name: str, through: int = -1) -> VerifyReport:
        """Verify the lines; with `through`, also keep the report of the first `through`
        lines as `prefix` (of a copy of the state then: no second pass)."""
        decode = msgspec.json.Decoder(_Line).decode
        lineno = 0
        records = 0
        seals = 0
        last_line = 0
        nul: tuple[int, int] | None = None  # (problem index, line) of a line holding a NUL
        for raw in raw_lines:
            complete = raw.endswith(b"\n")
            if not complete and not raw.strip(b"\0"):
                break  # allocated, unused space after a live or crashed recorder's data
            if lineno == through:
                self.prefix = self._copy().finish(name, lineno, records, seals, last_line, nul)
            lineno += 1
            line = raw[:-1] if complete else raw
            if len(line) > MAX_LINE_BYTES:
                self.add(
                    ProblemKind.MALFORMED, lineno, None, f"line longer than {MAX_LINE_BYTES} bytes"
                )
                self._hash(raw, lineno, None)
                continue
            try:
                link = decode(line)
            except RecursionError:
                self.add(ProblemKind.MALFORMED, lineno, None, "not a record: nested too deeply")
                self._hash(raw, lineno, None)
                continue
            except msgspec.ValidationError as exc:
                self.add(ProblemKind.MALFORMED, lineno, None, f"not a record: {exc}")
                self._hash(raw, lineno, None)
                continue
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                if complete and b"\0" in line:
                    # a record never holds a NUL: a crash that stopped a line's copy midway
                    # (its end stored before its middle) if it is the last line, which a
                    # recorder then cuts as torn; a changed file anywhere else
                    nul = (len(self.problems), lineno)
                    self.add(ProblemKind.NOT_JSON, lineno, None, f"not JSON: {exc}")
                elif complete:
                    self.add(ProblemKind.NOT_JSON, lineno, None, f"not JSON: {exc}")
                else:
                    self._cut(lineno, None, f"last line cut short ({len(raw)} B)")
                self._hash(raw, lineno, None)
                continue
            if not line.isascii():
                self._utf8(line, lineno, link.seq)
            last_line = lineno
            self.last_seq = link.seq
            self._sequence(lineno, link.seq)
            if not complete:
                self._cut(lineno, link.seq, "last line has no newline")
            if link.kind == SEAL:
                seals += 1
                self._seal(line, lineno, link.seq)
            else:
                records += 1
                self.batch_records += 1
                self._hash(raw, lineno, link.seq)
                kind, accepted = link.kind, link.accepted
                if kind == DECISION:
                    if accepted is not False and not (
                        accepted is True
                        and type(link.order_id) is str
                        and link.order_id
                        and type(link.ts) is int
                    ):
                        self._unreadable(unreadable_id(line), lineno, link.seq, _REFUSED)
                elif kind == ADOPT:
                    self._unreadable(unreadable_id(line), lineno, link.seq, _REFUSED)
                elif kind in _STANDING:
                    why = unreadable_standing(line)
                    self._unreadable(why, lineno, link.seq, _HALTED_ON)
                if link.seq in self.note and link.seq not in self.noted:
                    self.noted[link.seq] = ""  # a record carries no hash: no signed head is here
        return self.finish(name, lineno, records, seals, last_line, nul)

    def _cut(self, lineno: int, seq: int | None, what: str) -> None:
        """The last line ends without its newline: a writer's unfinished copy, or, where
        nothing follows it in the file (`ended`), a file cut short after it was written."""
        if not self.ended:
            self.add(ProblemKind.TRUNCATED, lineno, seq, what)
            return
        self.add(
            ProblemKind.CUT,
            lineno,
            seq,
            f"{what}, and nothing follows it in the file: cut after it was written (a "
            "recorder writing it, or killed mid-copy, leaves its file allocated past the "
            "line in zero bytes; a closed one ends it after a whole line)",
        )

    def _copy(self) -> _Verifier:
        """An independent copy of the state (`finish` changes what it is called on)."""
        other = copy.copy(self)
        other.noted = dict(self.noted)
        other.problems = list(self.problems)
        other.gaps = list(self.gaps)
        other.isolated = dict(self.isolated)
        other.repeats = list(self.repeats)
        other.runs = list(self.runs)
        other.batch = self.batch.copy()
        return other

    def finish(
        self,
        name: str,
        lineno: int,
        records: int,
        seals: int,
        last_line: int,
        nul: tuple[int, int] | None,
    ) -> VerifyReport:
        """The report, once the lines ended after `lineno` (the last of them numbered so)."""
        if nul is not None and nul[1] == lineno and nul[0] < len(self.problems) and not self.ended:
            # (with nothing after it in the file, no crash left it: it stays not JSON)
            self.problems[nul[0]] = Problem(
                ProblemKind.TRUNCATED,
                lineno,
                None,
                "last line torn: zero bytes inside it, where a crash stopped its copy "
                "(opening the file with a recorder cuts it)",
            )
        self._finish_sequence()
        self._explain_sequence()
        if self.batch_records:
            first_line, first_seq = self.batch_first
            self.add(
                ProblemKind.UNSEALED,
                first_line,
                first_seq,
                f"{self.batch_records} record(s) from line {first_line} on are not sealed: "
                "the recorder is still writing, or crashed before sealing them "
                "(opening the file with a recorder seals them)",
            )
        if not self.anchor_seen:
            self.add(
                ProblemKind.ANCHOR_MISSING,
                last_line,
                None,
                f"no seal carries the anchor hash {self.anchor}: "
                "records were cut from the end or rewritten",
            )
        self.problems.sort(key=lambda p: p.line)
        return VerifyReport(
            path=name,
            lines=lineno,
            records=records,
            head=self.head,
            problems=tuple(self.problems),
            problems_capped=self.capped,
            seals=seals,
            unsealed=self.batch_records,
            last_seq=self.last_seq,
            noted=self.noted,
        )

    def _utf8(self, line: bytes, lineno: int, seq: int) -> None:
        """Name a line that is not UTF-8 text, as JSON and every record a recorder writes
        are: the decoder skips the fields `Link` does not keep without checking their
        bytes, so such a line passed where no seal is broken (its seal recomputed, or none
        yet at a crashed recorder's end) while `why` could not read it. Its seq still
        places it (a line that is not a record is counted deleted)."""
        try:
            line.decode()
        except UnicodeDecodeError as exc:
            self.add(
                ProblemKind.NOT_JSON,
                lineno,
                seq,
                f"not JSON: not UTF-8 text (byte 0x{line[exc.start]:02x} at byte {exc.start + 1})",
            )

    def _unreadable(self, why: str | None, lineno: int, seq: int, then: str) -> None:
        """Name a record a starting node cannot read (`why`, None if it can): it refuses the
        file (a decision or adopt event's order id, `read.accepted_ids`) or starts halted on
        it (a halt or flag_applied line, `standing.unreadable_standing`), `then`, telling
        the operator to run verify, which passed it where no seal was broken (resealed, or
        after the last seal)."""
        if why is not None:
            self.add(
                ProblemKind.MALFORMED,
                lineno,
                seq,
                f"a record a starting node cannot read: {why} ({then})",
            )

    # ------------------------------------------------------------------ seals

    def _hash(self, raw: bytes, lineno: int, seq: int | None) -> None:
        if not self.batch_lines:
            self.batch_first = (lineno, -1 if seq is None else seq)
        self.batch.update(raw)
        self.batch_lines += 1

    def _seal(self, line: bytes, lineno: int, seq: int) -> None:
        parts = split_line(line)
        try:
            seal = msgspec.json.decode(line, type=Seal)
        except UNDECODABLE:
            seal = None
        first_line, first_seq = self.batch_first
        span = (
            f"lines {first_line}-{lineno - 1} (seq {first_seq}-{seq - 1})"
            if self.batch_lines
            else "an empty batch"
        )
        if parts is None or seal is None:
            self.add(ProblemKind.MALFORMED, lineno, seq, "a seal line without its fields or hash")
        else:
            if seal.prev != self.head:
                self.add(
                    ProblemKind.BROKEN_LINK,
                    lineno,
                    seq,
                    f"the seal on line {lineno} does not chain to the seal before it: "
                    "a seal was replaced or recomputed, or whole batches were removed",
                )
            self.batch.update(parts[0])
            if self.batch.hexdigest().encode() != parts[1] or parts[1] != seal.hash.encode():
                self.add(
                    ProblemKind.EDITED,
                    lineno,
                    seq,
                    f"{span} or the seal itself were altered: "
                    f"the contents do not match the seal on line {lineno}",
                )
            self.head = seal.hash
            if seq in self.note and seq not in self.noted:
                self.noted[seq] = seal.hash
            if not self.anchor_seen and seal.hash == self.anchor:
                self.anchor_seen = True
        self.batch = sha256()
        self.batch_lines = 0
        self.batch_records = 0

    # ------------------------------------------------------------------ sequence

    def _sequence(self, lineno: int, seq: int) -> None:
        cur = self.cur
        back = False
        if cur is not None:
            self._classify(cur, forward=seq == cur[1] + 1)
            back = seq == cur[1] + 1
        elif seq == 0:
            back = True  # the first line of a file follows "the start"
        self.cur, self.cur_back = (lineno, seq), back

    def _finish_sequence(self) -> None:
        if self.cur is not None:
            self._classify(self.cur, forward=True)
            self.cur = None
        self._close_run()

    def _classify(self, cur: tuple[int, int], *, forward: bool) -> None:
        line, seq = cur
        end_line, end_seq = self.run_end
        if self.cur_back or seq == end_seq + 1:
            # follows the line before it, or connected across a line that is not a record
            if self.run_start is None:
                self.run_start = cur
            self.run_end = cur
        elif forward:
            if seq > end_seq + 1:
                self._keep(self.gaps, (line, end_line, end_seq + 1, seq - 1))
            else:
                self._keep(self.repeats, (line, seq, end_line, end_seq))
            self._close_run()
            self.run_start = self.run_end = cur
        elif len(self.isolated) < MAX_BREAKS:
            self.isolated.setdefault(seq, line)
        else:
            self.capped = True

    def _close_run(self) -> None:
        """Keep the connected run that just ended: a block of lines moved elsewhere is one."""
        if self.run_start is not None:
            self._keep(self.runs, (*self.run_start, *self.run_end))
            self.run_start = None

    def _keep(self, into: list[tuple[int, int, int, int]], item: tuple[int, int, int, int]) -> None:
        if len(into) < MAX_BREAKS:
            into.append(item)
        else:
            self.capped = True

    def _where(self, line: int, seq: int) -> str:
        return "the start of the file" if line == 0 else f"line {line} (seq {seq})"

    def _home(self, s: int, lo: int, before: int, run_ends: dict[int, int]) -> str:
        """Where a line (or a run) with seq `s`, moved into the gap from `lo` on, belongs."""
        if s == lo:
            return self._where(before, lo - 1)
        if s - 1 in self.isolated:
            return self._where(self.isolated[s - 1], s - 1)
        if s - 1 in run_ends:
            return self._where(run_ends[s - 1], s - 1)
        return f"seq {s - 1}"

    def _explain_sequence(self) -> None:
        """Explain the gaps from what turns up elsewhere: an out-of-sequence line or a run of
        lines whose seqs fall in a gap was moved there, and the rest of the gap was deleted.

        Each gap finds its lines by bisection, each line and run placed once: a search of
        every out-of-sequence line per gap took hours on a file with its fills moved to its
        end (100,000 gaps by 100,000 lines). A run of lines moved as a block (a batch put
        back in the wrong place) was reported as that many records deleted, and its first
        line as inserted.
        """
        iso = sorted(self.isolated)
        iso_next = list(range(len(iso) + 1))  # the first unplaced index from each (path-halved)
        runs = sorted(self.runs, key=lambda r: r[1])
        run_seqs = [r[1] for r in runs]
        run_next = list(range(len(runs) + 1))
        run_ends = {r[3]: r[2] for r in runs}  # a run's last seq -> its line
        placed: set[int] = set()
        moved_runs: set[int] = set()  # the first lines of runs found moved
        scan_left = 4 * MAX_BREAKS  # runs looked at that do not fit a gap (overlapping junk)
        for after, before, lo, hi in self.gaps:
            filled = 0
            i = _first_free(iso_next, bisect_left(iso, lo))
            while i < len(iso) and iso[i] <= hi:
                s = iso[i]
                placed.add(s)
                iso_next[i] = i + 1
                filled += 1
                line = self.isolated[s]
                self.add(
                    ProblemKind.REORDERED,
                    line,
                    s,
                    f"line {line} (seq {s}) belongs after {self._home(s, lo, before, run_ends)}",
                )
                i = _first_free(iso_next, i + 1)
            j = _first_free(run_next, bisect_left(run_seqs, lo))
            while j < len(runs) and run_seqs[j] <= hi and scan_left > 0:
                first_line, first, last_line, last = runs[j]
                if last <= hi:
                    run_next[j] = j + 1
                    moved_runs.add(first_line)
                    filled += last - first + 1
                    home = self._home(first, lo, before, run_ends)
                    self.add(
                        ProblemKind.REORDERED,
                        first_line,
                        first,
                        f"lines {first_line}-{last_line} (seq {first}-{last}) belong after {home}",
                    )
                else:
                    scan_left -= 1
                j = _first_free(run_next, j + 1)
            missing = hi - lo + 1 - filled
            if missing > 0:
                self.add(
                    ProblemKind.DELETED,
                    after,
                    hi + 1,
                    f"{missing} record(s) missing between {self._where(before, lo - 1)} "
                    f"and line {after} (seq {hi + 1})",
                )
        for s, line in self.isolated.items():
            if s not in placed:
                self.add(
                    ProblemKind.INSERTED,
                    line,
                    s,
                    f"line {line} (seq {s}) is out of sequence and fills no gap: it was inserted",
                )
        for line, seq, end_line, end_seq in self.repeats:
            if line in moved_runs:
                continue
            self.add(
                ProblemKind.INSERTED,
                line,
                seq,
                f"line {line} (seq {seq}) repeats a seq already passed "
                f"({self._where(end_line, end_seq)}): a line was inserted or duplicated",
            )


def _first_free(nxt: list[int], i: int) -> int:
    """The first index from `i` on not yet placed: `nxt[k]` points past placed ones (a
    disjoint-set walk with path halving, so each gap's search costs what it finds)."""
    while nxt[i] != i:
        nxt[i] = nxt[nxt[i]]
        i = nxt[i]
    return i
