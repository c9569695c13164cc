"""Whether the store's history shows a stored resume lifts the halt it names.

A resume is stored by compare-and-set on the revision it was decided on, so
its write lands right over the halt it names. Its signatures (operator and
approver) say who decided it, not where it was put: anyone with kill-state
write rights can store the same signed entry again later, over a newer kill,
and it still verifies. Only the slot's history tells the two apart. Every
reader that acts on a stored resume asks the same question here: a node
adopting it, the kill switch deciding what a new resume must lift, and the
freeze, preflight, console and status judging what is in force. A resume
that fails is a halt of its slot to all of them (fail closed), as an entry
that does not verify is.
"""

from __future__ import annotations

from knightwatch.control.plane.protocol import STATE_HISTORY, ControlPlane
from knightwatch.control.plane.wire import StateEntry, parse_slot
from knightwatch.state import TradingState
from knightwatch.trust.command import Checked, Refused, TrustReason, check_state
from knightwatch.trust.roster import Roster

MALFORMED_KEY = "state_key_malformed"
"""Reason code of a stored kill-state key that is no canonical slot (`parse_slot`
refuses it): listed by `states()`, logged once per write, held by no reader."""

UNVERIFIED_ACTOR = "trust:unverified"
"""Actor of the halt a reader holds for a slot whose stored entry it cannot trust."""


def unverified_id(slot: str, revision: int) -> str:
    """The command id of the halt a reader holds for a slot whose stored entry at
    `revision` it cannot trust; a resume decided on that revision names it as the
    halt it lifts."""
    return f"unverified-{slot}-{revision}"


def held_halted(slot: str, revision: int, why: str) -> StateEntry:
    """The halt every reader holds for `slot` when its entry at `revision` cannot be
    trusted (`why`: deleted, does not verify, a replayed resume). Raises ValueError,
    naming `MALFORMED_KEY` and the key, when `slot` is no canonical slot (`fleet.x`,
    `strategy.a.b`: written by hand): no tool can address it to resume it, so no reader
    holds it halted for good; `NatsControlPlane.states` lists and logs it."""
    try:
        scope, key = parse_slot(slot)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{MALFORMED_KEY}: {slot!r} is no slot ({exc})") from None
    return StateEntry(
        scope=scope,
        key=key,
        state=TradingState.HALTED,
        reason=f"the stored entry at revision {revision} {why}; held halted",
        actor=UNVERIFIED_ACTOR,
        command_id=unverified_id(slot, revision),
        issued_ns=0,
    )


async def unproven_resume(plane: ControlPlane, entry: StateEntry, revision: int) -> Refused | None:
    """Why the resume stored at `revision` does not provably lift the halt it names, or
    None when the slot's write just before it is that halt, at the revision the resume
    was decided on. None for an entry that is not a resume (halts need no history: they
    can only stop). Raises `ControlPlaneUnavailable` when the history cannot be read.

    A verified resume re-stored later over a newer kill fails this, and so does one
    whose slot's history no longer reaches back that far (a store that lost it, or a
    resume stored as a slot's first write).
    """
    if entry.state is not TradingState.ACTIVE:
        return None
    before = await plane.previous_state(entry.scope, entry.key, revision)
    lifts = f"resume {entry.command_id[:12]} stored at revision {revision}"
    if before is None:
        return Refused(
            TrustReason.REPLAYED,
            f"{lifts}: the store keeps no earlier write of {entry.slot} (it keeps the last "
            f"{STATE_HISTORY}), so it cannot show the resume lifts {entry.supersedes[:12]}",
        )
    previous, previous_revision = before
    if previous_revision != entry.decided_on:
        return Refused(
            TrustReason.REPLAYED,
            f"{lifts} over revision {previous_revision}, but it was decided on revision "
            f"{entry.decided_on}: stored again over a later write",
        )
    named = previous.command_id if previous is not None else "a delete marker"
    unverified = unverified_id(entry.slot, entry.decided_on)
    if entry.supersedes != unverified and named != entry.supersedes:
        return Refused(
            TrustReason.REPLAYED,
            f"{lifts} lifts {entry.supersedes[:12]}, but revision {previous_revision} "
            f"holds {named[:24]}",
        )
    return None


class ResumeProofs:
    """`unproven_resume`, remembered per stored write, for a reader that judges the same
    slots again and again (the console, a kill switch). A revision names one write for
    good and the write before it never changes, so the answer for a (slot, revision,
    command) never does; only a new write, with its own revision, asks the store again.
    The same holds for when the store wrote it (`ControlPlane.stored_ns`): a resume is
    judged at that instant, as a node adopting it from the store judges it."""

    def __init__(self, plane: ControlPlane, keep: int = 1024) -> None:
        self.plane = plane
        self.keep = keep
        self._known: dict[tuple[str, int, str], Refused | None] = {}
        self._stored: dict[tuple[str, int, str], int] = {}

    async def judge(
        self, entry: StateEntry, revision: int, roster: Roster | None, now_ns: int
    ) -> Checked:
        """Whether a stored entry is in force as nodes hold it: its signer(s), verified
        against `roster` (None, no roster yet: refused), if it verifies and, for a resume,
        it verifies at the time the store wrote it (its keys valid and the approval policy
        met then, stored before its expiry) and the slot's history shows it stored right
        over the halt it lifts; else `Refused`, naming why (nodes hold the slot halted).
        A resume whose write the store no longer holds (when it was stored unknown) is
        refused as a node refuses it. Raises `ControlPlaneUnavailable` when the store
        cannot be read."""
        stored_ns = await self.stored_at(entry, revision)
        checked = check_state(
            entry.command(), entry.proof, roster, now_ns=now_ns, live=False, stored_ns=stored_ns
        )
        refused = await self.check(entry, revision)
        if refused is not None:
            raise refused
        return checked

    async def stored_at(self, entry: StateEntry, revision: int) -> int | None:
        """When the store wrote the resume `entry` at `revision` (None for an entry that
        is not a resume: a kill is never judged by it); `Refused` (stale) when the store
        no longer holds that write, as a starting node refuses it (fail closed)."""
        if entry.state is not TradingState.ACTIVE:
            return None
        key = (entry.slot, revision, entry.command_id)
        known = self._stored.get(key)
        if known is not None:
            return known
        stored_ns = await self.plane.stored_ns(entry.scope, entry.key, revision)
        if stored_ns is None:
            raise Refused(
                TrustReason.STALE,
                f"the store no longer holds revision {revision} of {entry.slot}: "
                "when it was stored is unknown",
            )
        if len(self._stored) >= self.keep:
            self._stored.clear()
        self._stored[key] = stored_ns
        return stored_ns

    async def check(self, entry: StateEntry, revision: int) -> Refused | None:
        if entry.state is not TradingState.ACTIVE:
            return None
        key = (entry.slot, revision, entry.command_id)
        if key in self._known:
            return self._known[key]
        refused = await unproven_resume(self.plane, entry, revision)
        if len(self._known) >= self.keep:
            self._known.clear()
        self._known[key] = refused
        return refused
