"""What a flight recorder says was in force when its node stopped: halts, flag changes.

The control plane's store is the fleet's record of kills, but a node's own
flight recorder holds every halt the node applied and every resume it
honoured, on the node's own disk. A node that restarts against a store that
lost its entries (a single server's disk wiped, a bucket deleted) reads them
back from here and comes back halted until an operator resumes.

The same file remembers the newest signed flag change the node applied
(`flag_applied`), so a restarted node still refuses an older approved change
someone stored again while it was down, as a running node does.
"""

from __future__ import annotations

import os

import msgspec

from knightwatch.audit.read import decode_record, read_lines
from knightwatch.audit.record import EventRecord

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


def standing(path: str | os.PathLike[str], end: int | None = None) -> Standing:
    """Replay the file's halt, resume and flag_applied events; what is left was in force.

    A missing file has none. Lines that are not records are skipped here:
    `audit verify` names them, and the recorder refuses to append to a file
    whose last record is broken, so the node would not start on one. `end`:
    where the data ends, when a recorder holding the file says so
    (`FlightRecorder.opened_at`); nothing after it is read.
    """
    latches: dict[tuple[str, str], dict[str, StandingHalt]] = {}
    flags: dict[str, int] = {}
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after a possibly long scan
    except FileNotFoundError:
        return Standing([], {})
    with f:
        for line in read_lines(f, end=end):
            if not any(m in line for m in _MARKERS):
                continue
            try:
                rec = decode_record(line)
            except msgspec.DecodeError:
                continue
            if not isinstance(rec, EventRecord):
                continue
            data = rec.data
            if rec.kind == FLAG_APPLIED:
                flag, revision = data.get("flag"), data.get("revision")
                if isinstance(flag, str) and type(revision) is int:
                    flags[flag] = max(revision, flags.get(flag, 0))
                continue
            scope, key = data.get("scope"), data.get("key")
            if not isinstance(scope, str) or not isinstance(key, str):
                continue
            slot = latches.setdefault((scope, key), {})
            code = data.get("code")
            if rec.kind == "halt" and isinstance(code, str):
                slot[code] = StandingHalt(
                    scope=scope,
                    key=key,
                    state=str(data.get("state", "HALTED")),
                    code=code,
                    reason=str(data.get("reason", "")),
                    actor=str(data.get("actor", "")),
                    ts=rec.ts,
                    seq=rec.seq,
                )
            elif rec.kind == "resume":
                if code is None:
                    slot.clear()
                elif isinstance(code, str):
                    slot.pop(code, None)
    return Standing([h for slot in latches.values() for h in slot.values()], flags)
