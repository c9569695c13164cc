"""What a flight recorder says was in force when its node stopped: halts, flag changes.

The control plane's store is the fleet's record of kills, but a node's own
flight recorder holds every halt the node applied and every resume it
honoured, on the node's own disk. A node that restarts against a store that
lost its entries (a single server's disk wiped, a bucket deleted) reads them
back from here and comes back halted until an operator resumes.

The same file remembers the newest signed flag change the node applied
(`flag_applied`), so a restarted node still refuses an older approved change
someone stored again while it was down, as a running node does.

Only the node's own records are taken back: a file holding another node's (a copied
state dir, another node's `--recorder`) is refused (`ForeignRecord`), or that node's
halts, flag changes and order ids would become this one's.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, BinaryIO

import msgspec

from knightwatch.audit.chain import SEAL
from knightwatch.audit.errors import AuditError
from knightwatch.audit.read import (
    MAX_LINE_BYTES,
    AcceptedIds,
    accepted_ids,
    decode_record,
    read_lines,
)
from knightwatch.audit.record import EventRecord
from knightwatch.audit.recorder import RECOVERY
from knightwatch.decision import RejectReason
from knightwatch.errors import quoted
from knightwatch.inputs import UNDECODABLE
from knightwatch.state import Scope, TradingState

if TYPE_CHECKING:
    from knightwatch.audit.recorder import FlightRecorder

_MARKERS = (b'"kind":"halt"', b'"kind":"resume"', b'"kind":"flag_applied"')
FLAG_APPLIED = "flag_applied"
"""The event a node records when it applies a flag change newer than any before it."""


class StandingHalt(msgspec.Struct, frozen=True):
    """One halt latch the recorder says was set and never resumed."""

    scope: str
    key: str
    state: str
    """TradingState name: HALTED or REDUCING."""
    code: str
    """The latch's source (a RejectReason value): `halted` for an operator's kill."""
    reason: str
    actor: str
    ts: int
    """When it was recorded (wall ns)."""
    seq: int


class Standing(msgspec.Struct, frozen=True):
    """What one read of a node's file found in force at its end."""

    halts: list[StandingHalt]
    flag_revisions: dict[str, int]
    """Per flag, the revision of the newest signed change the node applied."""


def held_standing(recorder: FlightRecorder, path: str | os.PathLike[str]) -> Standing:
    """What was in force in the file `recorder` holds, up to where its data ended when it
    opened it (`standing`; `path` names the file in messages).

    Read through the recorder's own descriptor (`FlightRecorder.reader`), not the path:
    a node read its halts and flag changes by path once the recorder had opened the
    file, so another file renamed over the path in between (a node's old file, one
    with no halts) was what the node started from, while it appended to its own.
    """
    with recorder.reader() as f:
        return standing(path, end=recorder.opened_at, file=f)


class ForeignRecord(AuditError, ValueError):
    """A line of the file a node reads back names another node (`read_back` with `node`):
    the file is not this node's own record, so nothing in it is taken."""


class ReadBack(msgspec.Struct, frozen=True):
    """What a starting node takes back from its file in one pass (`read_back`)."""

    standing: Standing
    used: AcceptedIds
    """The order ids still in the duplicate scope (`audit.read.accepted_ids`)."""


def held_read_back(
    recorder: FlightRecorder,
    path: str | os.PathLike[str],
    *,
    since: int | None = None,
    node: str | None = None,
) -> ReadBack:
    """`held_standing` and the used order ids (`accepted_ids` with `since`) of the file
    `recorder` holds, in one read through its descriptor up to `opened_at`; with `node`,
    only if every record in it is that node's (`read_back`).

    A node's start read the file twice after the recorder's own open, once for each: on a
    file of a million accepted orders (498 MiB) the two passes took 16.3 s on the loaded
    build machine, the one 6.8 s (`bench/audit_bench.py --readback`).
    """
    with recorder.reader() as f:
        return read_back(f, path, since=since, end=recorder.opened_at, node=node)


def read_back(
    f: BinaryIO,
    path: str | os.PathLike[str],
    *,
    since: int | None = None,
    end: int | None = None,
    node: str | None = None,
) -> ReadBack:
    """`standing` and `accepted_ids` of the file `f` (open at its start) in one pass: each
    chunk `accepted_ids` decodes for its ids is searched for the lines marked as halts,
    resumes and flag changes, which alone are decoded whole. Gives exactly what the two
    give apart, and raises what `accepted_ids` raises (`UnreadableRecord`).

    `node`: the node reading its own file back. A record naming another node (every
    record but a seal or a recovery line names the node that wrote it) raises
    `ForeignRecord` naming the file, the line and both nodes: before, a node started on
    another node's file (a copied state dir, a wrong `--recorder`) took that node's halts,
    flag changes and order ids as its own, and appended its own records to the file."""
    replay = _Replay(path, node)
    used = accepted_ids(f, path, since=since, end=end, each_chunk=replay.chunk)
    return ReadBack(replay.standing(), used)


def standing(
    path: str | os.PathLike[str], end: int | None = None, *, file: BinaryIO | None = None
) -> Standing:
    """Replay the file's halt, resume and flag_applied events; what is left was in force.

    Each source of a scope holds its latch as the Guard does (`Halts.latch`): a milder
    halt recorded after a stricter one of the same source (a drain after a kill) leaves
    the stricter in force. A missing file has none. A halt that cannot be read (a line marked as a
    halt that does not decode, or one without its scope, key or source) is not
    skipped: a damaged halt would let the node start unhalted (a recorder checks
    every seal when it reopens a file, but records after the last seal are proven
    by none, and this reads files no recorder opened). It
    stands as an `unreadable` latch (scope UNREADABLE, which the node runtime
    applies as a halt of the node itself), lifted only by a later resume of the
    node (`audit verify` names the line). A `flag_applied` line that does not decode
    (or names no flag or no revision) is not skipped either: the node could no longer
    prove which flag changes it applied, and an older approved change stored again
    would verify. It stands the
    same way, but no resume recorded before lifts it, in the file or in the store
    (a resume says nothing about flags; its time is never earlier, `NodeRuntime._restore`):
    the node starts halted, until an operator resumes it, while its file holds such a
    line. `end`: where the data ends, when a
    recorder holding the file says so (`FlightRecorder.opened_at`); nothing
    after it is read. `file`: the file to read, open at its start (`path` then only
    names it), as `held_standing` passes the one a recorder holds.
    """
    if file is not None:
        return _replay(path, file, end)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after a possibly long scan
    except FileNotFoundError:
        return Standing([], {})
    with f:
        return _replay(path, f, end)


def _replay(path: str | os.PathLike[str], f: BinaryIO, end: int | None) -> Standing:
    """`standing` on an open file."""
    replay = _Replay(path)
    for lineno, line in enumerate(read_lines(f, end=end), start=1):
        if any(m in line for m in _MARKERS):
            replay.line(lineno, line)
    return replay.standing()


class _Replay:
    """The halt, resume and flag_applied lines of one file, fed in file order (`line`);
    what is left in force at the end (`standing`)."""

    def __init__(self, path: str | os.PathLike[str], node: str | None = None) -> None:
        self.path = path
        self.node = node
        self._mine = (
            b"" if node is None else b'"node":' + msgspec.json.encode(node) + b',"release_id":'
        )
        self.latches: dict[tuple[str, str], dict[str, StandingHalt]] = {}
        self.unreadable: list[StandingHalt] = []
        self.unproven: list[StandingHalt] = []  # unreadable flag_applied: no resume lifts them
        self.flags: dict[str, int] = {}
        self.why = ""
        """Why the last line that stands as a halt could not be read (`unreadable_standing`)."""

    def line(self, lineno: int, line: bytes) -> None:
        """One line holding a marker (as `read_lines` gives it: cut when too long)."""
        flags = self.flags
        try:
            rec = decode_record(line)
        except msgspec.DecodeError as exc:
            if _HALT_MARKER in line:
                self._stands(lineno, line, f"not a record ({exc})")
            elif _FLAG_MARKER in line:
                self._stands(lineno, line, f"not a record ({exc})", flag=True)
            return
        if not isinstance(rec, EventRecord):
            return
        self._owner_of(lineno, rec.kind, rec.node)  # a line the counts missed (no release_id)
        data = rec.data
        if rec.kind == FLAG_APPLIED:
            flag, revision = data.get("flag"), data.get("revision")
            if isinstance(flag, str) and flag and type(revision) is int and revision >= 0:
                flags[flag] = max(revision, flags.get(flag, 0))
            else:  # as unprovable as a line that does not decode
                why = "a flag_applied without its flag as text and revision as a count"
                self._stands(lineno, line, why, flag=True)
            return
        scope, key = data.get("scope"), data.get("key")
        code = data.get("code")
        if rec.kind == "halt" and not (
            isinstance(scope, str) and isinstance(key, str) and isinstance(code, str)
        ):
            missing = "scope, key and code (its source) as text"
            self._stands(lineno, line, f"a halt without {missing}")
            return
        if rec.kind == "halt" and _PREFIX.match(line) is None:
            # its seq and time not the counts a recorder writes ("ts":"..." or 1.5): the
            # reader took time 0, older than any resume in the store, which then lifted a
            # halt naming no command at the node's start (`NodeRuntime._restore`)
            self._stands(lineno, line, "a halt without its seq and time as counts")
            return
        if not isinstance(scope, str) or not isinstance(key, str):
            return
        slot = self.latches.setdefault((scope, key), {})
        if rec.kind == "halt" and isinstance(code, str):
            halt = StandingHalt(
                scope=scope,
                key=key,
                state=str(data.get("state", "HALTED")),
                code=code,
                reason=str(data.get("reason", "")),
                actor=str(data.get("actor", "")),
                ts=rec.ts,
                seq=rec.seq,
            )
            held = slot.get(code)
            if held is None or _severity(held.state) <= _severity(halt.state):
                # a milder halt of the source (a drain over a kill) leaves the stricter
                # latched in the Guard (`Halts.latch`), which records it all the same: taken
                # as the latch, a node halted then drained came back reducing at a restart
                slot[code] = halt
        elif rec.kind == "resume":
            if code is None:
                slot.clear()
            elif isinstance(code, str):
                slot.pop(code, None)
            if scope == "node" and code in (None, RejectReason.HALTED.value):
                self.unreadable.clear()  # the node halt an unreadable one stood for, lifted

    def _stands(self, lineno: int, line: bytes, why: str, *, flag: bool = False) -> None:
        """Keep a line that cannot be read as a halt of the node (`_unreadable`)."""
        self.why = why
        into = self.unproven if flag else self.unreadable
        into.append(_unreadable(self.path, lineno, line, why, flag))

    def chunk(self, buf: bytes, cut: int, lineno: int) -> None:
        """Feed the marked lines of `buf[:cut]` (whole lines, the first one numbered
        `lineno + 1`; `accepted_ids`'s `each_chunk`), as `read_lines` would give them:
        found by searching the chunk for each marker, not line by line. With a `node`,
        every line must be that node's (`_owned`)."""
        if self._mine:
            self._owned(buf, cut, lineno)
        spans: set[tuple[int, int]] = set()
        for marker in _MARKERS:
            at = buf.find(marker, 0, cut)
            while at >= 0:
                start = buf.rfind(b"\n", 0, at) + 1
                stop = buf.find(b"\n", at, cut) + 1 or cut
                spans.add((start, stop))
                at = buf.find(marker, stop, cut)
        before = 0
        for start, stop in sorted(spans):
            lineno += buf.count(b"\n", before, start) + 1
            before = stop
            line = buf[start:stop]
            if len(line) - line.endswith(b"\n") > MAX_LINE_BYTES:  # cut as read_lines cuts it
                line = line[: MAX_LINE_BYTES + 1] + (b"\n" if line.endswith(b"\n") else b"")
            if any(m in line for m in _MARKERS):
                self.line(lineno, line)

    def _owned(self, buf: bytes, cut: int, lineno: int) -> None:
        """Raise `ForeignRecord` at the first line of `buf[:cut]` that names another node
        than `node`. Counted first: every record a recorder writes but a seal names its node
        as `"node":...,"release_id":`, then `"flag_snapshot_id":`, each once (JSON escapes
        every quote inside a string), so when as many name this node as there are
        `"flag_snapshot_id":`s, none names another. Only a chunk where the two differ is
        decoded line by line, to find the line (or none: a recovery line, which names no
        node, or an event's own fields with those names). The two counts cost a starting
        node about 1 ms per MiB of file (6 ms per MiB for the rest of its read-back).
        """
        if buf.count(self._mine, 0, cut) == buf.count(_CONTEXT, 0, cut):
            return
        for at, line in enumerate(buf[:cut].split(b"\n"), start=lineno + 1):
            try:
                rec = _owner(line)
            except (*UNDECODABLE, UnicodeDecodeError):
                continue  # not a record: `accepted_ids` refuses the file on it
            self._owner_of(at, rec.kind, rec.node)

    def _owner_of(self, lineno: int, kind: object, node: object) -> None:
        """Raise `ForeignRecord` if the record at `lineno` (of `kind`) names another node."""
        if self.node is None or kind in (SEAL, RECOVERY) or node == self.node:
            return
        other = quoted(node) if isinstance(node, str) else "none"
        raise ForeignRecord(
            f"{os.fspath(self.path)}: line {lineno}: written by node {other}, not by this node "
            f"{quoted(self.node)} (a copied state dir, or another node's --recorder?); "
            "give this node its own file: nothing in this one is taken as its own"
        )

    def standing(self) -> Standing:
        halts = [h for slot in self.latches.values() for h in slot.values()]
        return Standing(halts + self.unreadable + self.unproven, self.flags)


def _severity(state: str) -> int:
    """How strict a recorded latch state is, as `Halts.latch` orders them; a state no latch
    holds counts strictest (the node halts itself on it, `_latch_problem`)."""
    return _RANK.get(state, len(_RANK) + 1)


def unreadable_standing(line: bytes) -> str | None:
    """Why a starting node cannot read `line` of its file as the halt or flag change it is
    marked as (it then starts halted on it, telling the operator to run `audit verify`),
    or None. `audit verify` names such a line: a halt without its scope, key and code as
    text (left out, or another type; every recorder's halt carries all three,
    `Guard.halt`), or its seq or time not counts, or a scope, code, state or key no latch
    holds (`_latch_problem`: the node halts itself instead), or a flag_applied without its
    flag and revision, resealed or after the last seal, was reported intact while the node
    stood halted on it."""
    if not any(m in line for m in _MARKERS):
        return None
    replay = _Replay("")
    replay.line(0, line)
    if replay.why:
        return replay.why
    halts = [h for slot in replay.latches.values() for h in slot.values()]
    return _latch_problem(halts[0]) if halts else None


def _latch_problem(halt: StandingHalt) -> str | None:
    """Why a starting node cannot latch `halt` as written, or None: a scope, source or
    state it does not know, or a key no latch holds. It then halts the node itself
    instead (`NodeRuntime._restore`), on a line `audit verify` reported intact."""
    if halt.scope not in _SCOPES:
        return f"a halt whose scope {halt.scope!r} is none of {', '.join(_SCOPES)}"
    if halt.code not in _CODES:
        return f"a halt whose code {halt.code!r} is no reject reason (its source)"
    if halt.state not in _LATCHED:
        return f"a halt whose state {halt.state!r} is neither HALTED nor REDUCING"
    if not halt.key or (halt.scope != Scope.FLEET.value and not halt.key.strip()):
        return f"a halt whose key {halt.key!r} is empty or only whitespace"
    return None


UNREADABLE = "unreadable"
"""The scope of a standing halt whose record cannot be read: no scope the runtime knows, so
it halts the node itself (`NodeRuntime._restore`)."""

_HALT_MARKER = b'"kind":"halt"'
_CONTEXT = b'"flag_snapshot_id":'
"""In every record that names a node, once, right after its `release_id` (`_owned`)."""


class _Owner(msgspec.Struct, gc=False):
    """What telling a line's node needs (`_Replay._owned`): typed loosely, checked there."""

    kind: Any = None
    node: Any = None


_owner = msgspec.json.Decoder(_Owner).decode
_SCOPES = tuple(s.value for s in Scope)
_CODES = frozenset(r.value for r in RejectReason)
_LATCHED = frozenset({TradingState.HALTED.name, TradingState.REDUCING.name})
_RANK = {s.name: int(s) for s in (TradingState.REDUCING, TradingState.HALTED)}
_FLAG_MARKER = b'"kind":"flag_applied"'
_PREFIX = re.compile(rb'\{"seq":(\d{1,19}),"ts":(\d{1,19}),')
_NEVER_LIFTED_BY_THE_STORE = 2**63 - 1


def _unreadable(
    path: str | os.PathLike[str], lineno: int, line: bytes, why: str, flag: bool = False
) -> StandingHalt:
    """A halt that cannot be read stands: as a halt of the node, with the line named.

    Its seq and time come from the line's prefix when that is intact; without a time
    no resume in the store can be shown to be later, so only one in the file lifts it.
    `flag`: an unreadable `flag_applied` line, which no resume in the store lifts
    either (a resume after the flag change says nothing about which change it was).
    """
    m = _PREFIX.match(line)
    seq, ts = (int(m[1]), int(m[2])) if m else (-1, _NEVER_LIFTED_BY_THE_STORE)
    what = f"a halt record that cannot be read ({why})"
    again = ""
    if flag:
        ts = _NEVER_LIFTED_BY_THE_STORE
        what = (
            f"a flag_applied record that cannot be read ({why}): "
            "the node cannot prove which flag changes it applied"
        )
        again = (
            "; it halts again at each start while the file holds the line (its applied "
            "records in the control plane still carry its flag memory on a new file)"
        )
    return StandingHalt(
        scope=UNREADABLE,
        key=f"line {lineno}",
        state="HALTED",
        code=RejectReason.HALTED.value,
        reason=(
            f"{os.fspath(path)} line {lineno}: {what}; "
            "the node stays halted until an operator resumes it "
            f"(run `knightwatch audit verify` on the file){again}"
        ),
        actor="recorder",
        ts=ts,
        seq=seq,
    )
