"""The halts a flight recorder says were still in force when its node stopped.

The control plane's store is the fleet's record of kills, but a node's own
flight recorder holds every halt the node applied and every resume it
honoured, on the node's own disk. A node that restarts against a store that
lost its entries (a single server's disk wiped, a bucket deleted) reads them
back from here and comes back halted until an operator resumes.
"""

from __future__ import annotations

import os

import msgspec

from knightwatch.audit.read import decode_record, read_lines
from knightwatch.audit.record import EventRecord

_MARKERS = (b'"kind":"halt"', b'"kind":"resume"')


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


def standing_halts(path: str | os.PathLike[str], end: int | None = None) -> list[StandingHalt]:
    """Replay the file's halt and resume events; what is left was in force at its end.

    A missing file has none. Lines that are not records are skipped here:
    `audit verify` names them, and the recorder refuses to append to a file
    whose last record is broken, so the node would not start on one. `end`:
    where the data ends, when a recorder holding the file says so
    (`FlightRecorder.opened_at`); nothing after it is read.
    """
    latches: dict[tuple[str, str], dict[str, StandingHalt]] = {}
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after a possibly long scan
    except FileNotFoundError:
        return []
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
    return [h for slot in latches.values() for h in slot.values()]
