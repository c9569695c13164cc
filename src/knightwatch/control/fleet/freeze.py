"""The freeze: while a fleet or strategy kill is in force, nothing that adds risk applies.

After a kill the worst next step is a well-meant change: a flag turned on to
"fix" it, a rollout promoted, a different release pushed, a new node enrolled,
a node restarted with its limits raised.
Each of those is refused by the component that would apply it, naming the kill
that freezes it, until the kill is resumed. Changes that reduce the blast
radius (more kills, drains, flags to their safe default, rollout aborts, and a
return to the release the fleet was last known-good on) always pass. The check
reads the store of record; when it cannot be read the change is refused too.
A slot whose entry was deleted, or (given the roster) does not verify, counts
as halted here as it does on every node: a forged ACTIVE entry thaws nothing, and
neither does a signed resume stored again over a newer kill (`judged`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from knightwatch.control.plane.history import (
    MALFORMED_KEY,
    ResumeProofs,
    held_halted,
    unproven_resume,
)
from knightwatch.control.plane.protocol import Bucket, ControlPlane, ControlPlaneUnavailable
from knightwatch.control.plane.wire import (
    ENCODER,
    KNOWN_GOOD_DECODER,
    KNOWN_GOOD_KEY,
    TARGET_DECODER,
    TARGET_KEY,
    UNDECODABLE_ACTOR,
    KnownGood,
    StateEntry,
)
from knightwatch.errors import KnightwatchError
from knightwatch.inputs import UNDECODABLE
from knightwatch.limits import Limits, loosened
from knightwatch.release.canonical import sha256_hex
from knightwatch.release.errors import ReleaseInputError
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import Refused, check_state
from knightwatch.trust.store import TrustStore

log = logging.getLogger(__name__)

FREEZING_SCOPES = frozenset({Scope.FLEET, Scope.STRATEGY})

_MALFORMED_SEEN: set[tuple[str, int]] = set()
"""(key, revision) of the malformed kill-state keys `held` has logged: once per write,
however often the freeze is checked."""


class FrozenByKill(KnightwatchError, RuntimeError):
    """A risk-adding change refused because a kill is in force; the message names it."""


def describe(entry: StateEntry) -> str:
    return (
        f"the {entry.scope.value} kill {entry.key!r} (command {entry.command_id[:8]}, by "
        f"{entry.actor}: {entry.reason!r}) is in force"
    )


def held(
    states: Mapping[str, tuple[StateEntry | None, int]], trust: TrustStore | None = None
) -> dict[str, tuple[StateEntry, int]]:
    """What each slot holds by its entry alone: an entry that was deleted or (with
    `trust`) does not verify against the roster is a halt of its slot. `judged` adds
    the store's history, as nodes judge it."""
    out: dict[str, tuple[StateEntry, int]] = {}
    for slot, (entry, revision) in states.items():
        why = "deleted" if entry is None else ""
        if entry is not None and trust is not None and entry.actor != UNDECODABLE_ACTOR:
            try:
                check_state(entry.command(), entry.proof, trust.roster, now_ns=0, live=False)
            except Refused as exc:
                why = f"does not verify ({exc})"
        if entry is not None and not why:
            out[slot] = (entry, revision)
            continue
        try:
            out[slot] = (held_halted(slot, revision, why), revision)
        except ValueError as exc:
            # no canonical slot (written by hand): no kill or resume addresses it, so it is
            # held by no reader; say so rather than skip it without a word
            if (slot, revision) not in _MALFORMED_SEEN:
                _MALFORMED_SEEN.add((slot, revision))
                log.error(
                    "%s key=%s revision=%d: %s; held by no reader, the freeze ignores it",
                    MALFORMED_KEY.upper(),
                    slot,
                    revision,
                    exc,
                )
    return out


async def judged(
    plane: ControlPlane, trust: TrustStore | None = None
) -> dict[str, tuple[StateEntry, int]]:
    """What each slot holds as a node judges it, read from the store of record: `held`,
    and a resume the slot's history does not show lifting the halt it names (one stored
    again over a newer kill) is a halt of its slot too; so (with `trust`) is one that does
    not verify at the time the store wrote it (`ResumeProofs.judge`: held back past its
    expiry, dated before a revocation, one person's in closed market hours), as a node
    that starts refuses it. Raises `ControlPlaneUnavailable`."""
    out = held(await plane.states(), trust)
    proofs = ResumeProofs(plane)
    for slot, (entry, revision) in list(out.items()):
        if entry.state is not TradingState.ACTIVE or entry.actor == UNDECODABLE_ACTOR:
            continue
        refused: Refused | None
        if trust is not None:
            try:
                await proofs.judge(entry, revision, trust.roster, now_ns=0)
                refused = None
            except Refused as exc:
                refused = exc
        else:
            refused = await unproven_resume(plane, entry, revision)
        if refused is not None:
            out[slot] = (held_halted(slot, revision, f"is refused ({refused})"), revision)
    return out


async def kill_in_force(plane: ControlPlane, trust: TrustStore | None = None) -> StateEntry | None:
    """The earliest fleet or strategy kill in force, or None; raises if the store is down."""
    kills = [
        e
        for e, _ in (await judged(plane, trust)).values()
        if e.scope in FREEZING_SCOPES and e.state is not TradingState.ACTIVE
    ]
    return min(kills, key=lambda e: e.issued_ns, default=None)


async def refuse_if_frozen(
    plane: ControlPlane, change: str, trust: TrustStore | None = None
) -> None:
    """Raise `FrozenByKill` naming the kill when one is in force (or the store is unreadable)."""
    try:
        kill = await kill_in_force(plane, trust)
    except ControlPlaneUnavailable as exc:
        raise FrozenByKill(f"{change}: refused: cannot read the kill state ({exc})") from None
    if kill is not None:
        raise FrozenByKill(
            f"{change}: refused while {describe(kill)}; it is lifted only by the resume "
            "(knightwatch resume, after its preflight)"
        )


async def refuse_raised_limits(
    plane: ControlPlane,
    node_id: str,
    armed: Limits | None,
    limits: Limits,
    trust: TrustStore | None = None,
) -> None:
    """A node restarting while a kill is in force may not arm with looser limits than it
    last armed with (`armed`); the same or tighter passes, and so does a node with no
    record of its own (a new node is refused at admission instead). With `trust` (the
    node's roster) the kill state is judged as the node judges it: an entry that does not
    verify, a hand-made resume among them, is a halt of its slot."""
    if armed is None:
        return
    raised = loosened(armed, limits)
    if raised:
        await refuse_if_frozen(
            plane,
            f"node {node_id}: limits looser than it last armed with ({'; '.join(raised)})",
            trust,
        )


async def known_good(plane: ControlPlane) -> KnownGood | None:
    value, _ = await plane.get_record(Bucket.INCIDENT, KNOWN_GOOD_KEY)
    if value is None:
        return None
    try:
        return KNOWN_GOOD_DECODER.decode(value)
    except UNDECODABLE:
        return None


async def record_known_good(plane: ControlPlane, kill: StateEntry, at_ns: int) -> str | None:
    """Record the fleet's target release as the known-good one for this kill, for people
    to read (the preflight, the evidence snapshot); admission decides on the stored
    target itself (`refuse_target_if_frozen`).

    Called after a kill returns (never on its path). The first kill of an
    incident sets it; later kills while frozen keep the first record, because
    the target cannot have changed since except back to it. Returns the id.
    """
    good = await known_good(plane)
    if good is not None:
        in_force = {
            e.command_id
            for e, _ in held(await plane.states()).values()
            if e.scope in FREEZING_SCOPES and e.state is not TradingState.ACTIVE
        }
        if good.kill_command_id in in_force:
            return good.release_id
    value, _ = await plane.get_record(Bucket.RELEASE, TARGET_KEY)
    if value is None:
        return None
    try:
        release_id = TARGET_DECODER.decode(value).release_id
    except UNDECODABLE:
        return None
    record = KnownGood(release_id, kill.command_id, at_ns)
    await plane.put_record(Bucket.INCIDENT, KNOWN_GOOD_KEY, ENCODER.encode(record))
    return release_id


async def refuse_target_if_frozen(
    plane: ControlPlane,
    release_id: str,
    manifest_digest: str,
    trust: TrustStore | None = None,
) -> bool:
    """A target release change while frozen passes only back to the known-good release.

    True when a kill is in force and the request names the release the fleet froze
    on (the stop direction: one person may make it); False when no kill is in force
    (an ordinary change). The release it froze on is the stored target itself, which
    only the admission service writes and which nothing but this return can change
    while frozen; the `known_good` record, which operators write after a kill, is
    for people to read and decides nothing here (a forged one would otherwise let
    one person target any signed release, an old one included, during a kill).

    The return is to that very manifest (`manifest_digest`, the sha256 of the signed
    statement), not to its label: a release id is only a name its signers chose, and a
    second manifest signed under the frozen release's id (other files) passed as the
    one-person return before."""
    try:
        kills = [
            e
            for e, _ in (await judged(plane, trust)).values()
            if e.scope in FREEZING_SCOPES and e.state is not TradingState.ACTIVE
        ]
        value = (await plane.get_record(Bucket.RELEASE, TARGET_KEY))[0] if kills else None
    except ControlPlaneUnavailable as exc:
        raise FrozenByKill(
            f"target release {release_id}: refused: cannot read the kill state ({exc})"
        ) from None
    if not kills:
        return False
    froze_on, froze_digest = None, None
    try:
        if value is not None:
            stored = TARGET_DECODER.decode(value)
            froze_on = stored.release_id
            froze_digest = sha256_hex(stored.envelope.payload_bytes())
    except (*UNDECODABLE, ReleaseInputError):
        froze_on = froze_digest = None
    if froze_on == release_id and froze_digest == manifest_digest:
        return True
    kill = min(kills, key=lambda e: e.issued_ns)
    allowed = f"only {froze_on} (known-good)" if froze_on else "no release (none known-good)"
    if froze_on == release_id:
        allowed = (
            f"only {froze_on}'s manifest {(froze_digest or '?')[:12]} (known-good; this one "
            f"is {manifest_digest[:12]}, another under the same id)"
        )
    raise FrozenByKill(
        f"target release {release_id}: refused while {describe(kill)}; {allowed} may be "
        "targeted until the resume"
    )
