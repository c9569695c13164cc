"""A node's flag state: verified, applied the moment it is stored, confirmed, served from memory.

`NodeFlags` is a node's cached view of flag state. It applies each new
revision the moment it is stored, once the signed proof of the change that set
this node's value verifies against the roster (`knightwatch.trust.flagproof`:
an operator's signature and, for a trading flag moved away from its safe
default, a second person's approval), confirms it (fast path and durably), and
serves the OpenFeature provider from memory. Anyone able to write the flags
bucket could otherwise turn a trading flag on with no second person. A revision
that does not verify is refused: the node keeps what it evaluated before (or
the safe default), does not confirm it, logs one line and records a
`flag_refused` event with the reason code. A stored state record that cannot be
decoded (or holds another flag) is refused the same way, but the node drops
what it held for that flag and evaluates the safe default: the stop direction
never waits on a record nobody can read. It fails closed (unavailable) while
the node is disconnected or not yet resynced; a resync that fails is tried again
(backing off to every 5 s) while the connection holds, never left failed until the
next reconnect.

A state read from the store (at start, on a resync) that moves this node's value
away from the safe default is judged, as a stored roster version or resume is,
at the instant the store's server wrote the change behind its proof (the
`change.<flag>.<revision>` record holding that very proof; a write time no client
sets), not only at the date its signer chose: a change signed after its
operator's key was revoked and dated back before the revocation is refused by a
node that starts afterwards, as a running node refused it live. Where the store
keeps write times and that record is missing (or holds another proof), the change
is refused until it is stored; the stop direction (a change to the safe default)
is never looked up, slowed or refused for it. The record layout
(`state_key`, `change_key`, `applied_key`, `FlagApplied`) lives here, below
the operator's flag store, because both sides read and write it.

A rollout's approval carries that rollout alone, and the node remembers what it saw
of each (`RolloutSeen`, from every verified stage in every state it reads, its own
value's or another node's): the rollout it was first used for, the revision of each
stage and the nodes that stage added, and whether it ended. A change riding the
approval is refused (`replayed`) if it is of another rollout (its id, start, nodes
or plan), once the rollout ended (a node one of its stages turned on no longer holds
that stage: aborted, stopped by anyone, or replaced), if it makes a stage again
(another revision), or if the plan's earlier stage that adds nodes was never seen.
Before, the approval of an aborted rollout, stored with it and readable, let one
operator sign new "stages" within its day and turn the flag on again alone. The memory
is kept in the node's applied record (only the node may write it), read back at start,
and dropped once no stage can ride the approval anyway (`ROLLOUT_SPAN_NS`). A stage heard
sooner after the plan's previous stage that added nodes than the approved plan holds
between them (less `SKEW_NS`) is refused (`approval_invalid`): the holds were the driver's
alone, and one operator could sign the stages in quick succession. The hold is measured on
when each stage was heard live (`RolloutStep.heard_ns`), not on the signed issue times a
signer picks within a minute before to 5 s after (two stages written a moment apart passed
dated a hold apart). A stage no node heard live (learned at a start or resync) is timed by
the server's write time of its change record (`change.<flag>.<revision>`, holding its very
proof; `Written.stages`), mixed with a heard time where the other stage has one: before, a
node that started after two stages were written judged their hold on the signed dates
alone, about 70 s of slack. Where the store keeps write times and one cannot be read (the
record missing, or holding another proof), the stage is refused until it can; only a store
keeping none (the in-memory plane without a clock) falls back to the signed dates. A stage
refused for a change record that is not stored (its own, or an earlier stage's: not yet
replicated, or written late) is judged again when that record arrives; one never stored
keeps the node at the safe default (fail closed, `approval_invalid`).

A `flags set` approval is of one change, and the node remembers the change each approval
it saw carried, the same way (`used_approval`, kept with the rollouts): a change riding an
approval another change used is refused (`replayed`). Before, `flags set` alone refused a
used approval (`approval_used`); someone writing `kw_flags` directly could sign a second
change on it within its hour, after the first was switched off, and turn the flag on alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple, TypeVar

import msgspec

from knightwatch.audit.standing import FLAG_APPLIED
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.protocol import Bucket, ControlPlane, ControlPlaneUnavailable, Record
from knightwatch.flags.fleet import FleetMember
from knightwatch.flags.state import FlagChange, FlagState, StateUnavailable
from knightwatch.inputs import UNDECODABLE
from knightwatch.release.errors import ReleaseInputError
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import SKEW_NS, Refused, TrustReason
from knightwatch.trust.flagproof import (
    ROLLOUT_SPAN_NS,
    ApprovalUse,
    FlagDecision,
    FlagProof,
    RolloutStage,
    check_flag_proof,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

SUBJECT_APPLIED = "flags.applied"
_BRIDGE_TIMEOUT_S = 5.0
_REFUSED_KEPT = 1024
_RESYNC_FIRST_S = 0.1
_RESYNC_MAX_S = 5.0
"""A failed flag resync is tried again after 0.1 s, doubling to at most every 5 s."""


class RolloutStep(msgspec.Struct, frozen=True):
    """One stage of a rollout a node saw: the change that made it and the nodes it added."""

    revision: int
    proof: str
    """sha256 of the stage's proof (every node it added holds that very proof). The
    nodes a stage added are read from that proof, which names them, wherever a node of
    the state still holds it: an earlier version listed them here too (`nodes`), and on a
    fleet of a few hundred nodes the record outgrew its bucket's value bound (the node's
    confirmation and memory were refused, every flag change after it stayed unconfirmed
    for the rollout's day). Records that list them still decode (the field is ignored)."""
    issued_ns: int = 0
    """The stage's signed issue time (0: recorded by a node that did not keep it, so no
    later stage can be checked against it)."""
    heard_ns: int = 0
    """When a node first heard the stage live, by its own clock: the next stage's hold
    counts from it (0: learned at a resync, not live; the server's write time of the
    stage's change record stands for it then, `Written.stages`). A signer chooses its
    issue time within the minute before it is heard and 5 s after, so two stages written
    a second apart could be dated a hold apart and skip it."""


class RolloutSeen(msgspec.Struct, frozen=True):
    """What a node remembers of the rollout an approval was used for."""

    approval: str
    """sha256 of the approval's payload."""
    binding: str
    """The rollout it was first used for (`RolloutStage.binding`)."""
    approved_ns: int
    value: bool
    stages: dict[int, RolloutStep] = {}
    ended: str = ""
    """Why it ended ("": it had not, as far as this node saw)."""


def used_approval(use: ApprovalUse) -> RolloutSeen:
    """A `flags set` approval this node saw carried by a change, kept with the rollouts (in
    the node's applied record): `binding` names the change (`ApprovalUse.change`), no
    stages, never ended; it may carry no other change."""
    return RolloutSeen(use.approval, f"change:{use.change}", use.issued_ns, use.value)


class FlagApplied(msgspec.Struct, frozen=True):
    """A node's proof that it now evaluates this revision of a flag."""

    flag_id: str
    node: str
    revision: int
    at_ns: int
    proof_revision: int = 0
    """The revision of the change behind the node's value: what it may not go back from
    (only the node itself may write its applied records; read back at its start)."""
    rollouts: tuple[RolloutSeen, ...] = ()
    """The rollouts of this flag the node saw whose approvals may still carry a stage."""


def state_key(flag_id: str) -> str:
    return f"state.{flag_id}"


def change_key(flag_id: str, revision: int) -> str:
    return f"change.{flag_id}.{revision}"


def applied_key(flag_id: str, node: str) -> str:
    """Node first: flag ids hold dots, node ids never do, so a NATS permission can give
    each node `applied.<its id>.>` and nothing of another node's."""
    return f"applied.{node}.{flag_id}"


STATE_DECODER = msgspec.json.Decoder(FlagState)
CHANGE_DECODER = msgspec.json.Decoder(FlagChange)
APPLIED_DECODER = msgspec.json.Decoder(FlagApplied)
ENCODER = msgspec.json.Encoder()


def decode_state(flag_id: str, value: bytes) -> FlagState:
    """A stored flag state, or `StateUnavailable` naming its key (one line, no traceback)."""
    try:
        state = STATE_DECODER.decode(value)
    except UNDECODABLE as exc:
        raise StateUnavailable(
            f"flag state record {state_key(flag_id)!r} cannot be decoded: {exc}"
        ) from None
    if state.flag_id != flag_id:
        raise StateUnavailable(
            f"flag state record {state_key(flag_id)!r} holds flag {state.flag_id!r}"
        )
    return state


def assemble(flag_id: str, records: dict[str, tuple[bytes, int]]) -> FlagState | None:
    """The flag's state with every node's applied revision, from one bucket snapshot.

    A node's confirmation that cannot be decoded counts as no confirmation (logged):
    each node writes its own, and one node's bad record must not make the state
    unreadable for everyone, nor stop a change back to the safe default."""
    stored = records.get(state_key(flag_id))
    if stored is None:
        return None
    state = decode_state(flag_id, stored[0])
    for key, (value, _) in records.items():
        node, _, flag = key.removeprefix("applied.").partition(".")
        if key.startswith("applied.") and flag == flag_id:
            try:
                applied = APPLIED_DECODER.decode(value)
            except UNDECODABLE as exc:
                log.warning("ignoring undecodable flag confirmation %r: %s", key, exc)
                continue
            if applied.node == node and applied.flag_id == flag_id:  # stored under its own name
                state = state.with_applied(applied.node, applied.revision)
    return state


def changes_of(flag_id: str, records: dict[str, tuple[bytes, int]]) -> list[FlagChange]:
    """The flag's recorded changes (`change.<flag>.<revision>`); one that cannot be decoded,
    or that names another flag or revision than its key, is `StateUnavailable` naming its
    key. Flag ids hold dots, so `change.a.b.` also begins the keys of flag `a.b.c`: only a
    key whose rest is a revision number is this flag's (before, `a.b`'s history listed
    `a.b.c`'s changes, and the checks for a used approval read them as its own)."""
    prefix = f"change.{flag_id}."
    found: list[FlagChange] = []
    for key, (value, _) in records.items():
        rest = key[len(prefix) :]
        if not key.startswith(prefix) or not (rest.isascii() and rest.isdigit()):
            continue
        try:
            change = CHANGE_DECODER.decode(value)
        except UNDECODABLE as exc:
            raise StateUnavailable(f"flag change record {key!r} cannot be decoded: {exc}") from None
        if change_key(change.flag_id, change.revision) != key:
            raise StateUnavailable(
                f"flag change record {key!r} holds the change of {change.flag_id!r} at revision "
                f"{change.revision}: not this key's"
            )
        found.append(change)
    return sorted(found, key=lambda c: c.revision)


def carried_by(payload: bytes, changes: Sequence[FlagChange]) -> FlagChange | None:
    """The first of `changes` whose proof carried the approval signed over `payload` (its
    DSSE payload): an approval is of one change, or one rollout, never a second. A proof
    that does not decode carries nothing here (every node refuses it anyway)."""
    for change in changes:
        try:
            carried = msgspec.json.decode(change.proof, type=FlagProof).approval
        except (*UNDECODABLE, ReleaseInputError):
            continue
        if carried is not None and carried.payload_bytes() == payload:
            return change
    return None


async def record_applied(plane: ControlPlane, applied: FlagApplied) -> None:
    """Fast path first (whoever waits on `flags set`), then the durable record for `show`."""
    payload = ENCODER.encode(applied)
    await plane.publish(SUBJECT_APPLIED, payload)
    await plane.put_record(Bucket.FLAGS, applied_key(applied.flag_id, applied.node), payload)


class Written(NamedTuple):
    """When the store wrote the change behind a node's value, as far as the node knows."""

    stored_ns: int | None = None
    """The server's write time of the change record (for a state heard live: when it was
    heard); None: judged at the change's own signed date alone."""
    missing: str = ""
    """Why that write time is unknown where it must be known ("": it need not be)."""
    awaiting: frozenset[str] = frozenset()
    """The keys of the change records it is missing (its own, or an earlier stage's of its
    rollout) that may still be stored: the arrival of any judges the state again. Before,
    only the change behind the node's value was awaited, and a stage refused for its
    earlier stage's record stayed refused after that record arrived, the node at the
    safe default while the fleet was on, until some other change of the flag."""
    stages: Mapping[str, int] = MappingProxyType({})
    """Per sha256 of a stage proof of the rollout behind this node's value (its stage and
    the earlier ones, as the state claims them): the server's write time of that stage's
    change record holding that very proof (absent: not stored, or not readable). The hold
    between two stages is measured on these wherever neither was heard live."""


_NONE_STORED: tuple[Mapping[str, int], frozenset[str]] = (MappingProxyType({}), frozenset())
"""No stage's write time looked up (the stop direction, or a store keeping none)."""
_PROOF_DECODER = msgspec.json.Decoder(FlagProof)
_DECISION_DECODER = msgspec.json.Decoder(FlagDecision)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def claimed_away(proof: str) -> FlagDecision | None:
    """The change `proof` claims, if it moves the flag away from its safe default; None
    for the stop direction, or if it does not decode (`check_flag_proof` refuses that).
    Unverified: only used to find the record of the change behind it."""
    try:
        decision = _DECISION_DECODER.decode(_PROOF_DECODER.decode(proof).change.payload_bytes())
    except (*UNDECODABLE, ReleaseInputError):
        return None
    return None if decision.value == decision.safe_default else decision


def _too_soon(
    rollout: RolloutSeen,
    stage: RolloutStage,
    heard_ns: int,
    *,
    digest: str = "",
    stored: Mapping[str, int] = MappingProxyType({}),
    strict: bool = False,
) -> str:
    """Why `stage` comes before the approved plan's hold since its `prior` stage ("" if it
    does not): the holds are in the plan the approval names, so one operator signing the
    stages in quick succession carries none of them. Measured on times no signer chose:
    from when the prior stage was heard live to `heard_ns`, when this one was (less
    `SKEW_NS`: another node may have heard the prior one, by its clock); where either was
    learned at a resync (0), on the server's write times of the stages' change records
    (`stored`, by sha256 of each stage's proof; `digest` is this stage's), the two mixed
    if need be. `strict` (the store keeps write times): where neither is known for a stage,
    the hold cannot be checked and the stage comes too soon; else (a store that keeps no
    write times) the signed issue times alone judge it, which a signer picks within a
    minute before to 5 s after it is heard (about 70 s of slack). The issue times are
    held to the hold too."""
    prior = rollout.stages.get(stage.prior) if stage.prior >= 0 else None
    if prior is None:
        return ""  # no earlier stage: the order check refuses what needs one
    this_stored = stored.get(digest, 0) if digest else 0
    prior_stored = stored.get(prior.proof, 0)
    pairs = (
        (heard_ns, prior.heard_ns, "heard", "was"),
        (this_stored, prior_stored, "stored", "was (by the store's clock)"),
        (heard_ns or this_stored, prior.heard_ns or prior_stored, "heard or stored", "was"),
    )
    for this_at, prior_at, how, was in pairs:
        if this_at > 0 and prior_at > 0:
            if this_at - prior_at < stage.hold_ns - SKEW_NS:
                return (
                    f"stage {stage.stage} of its rollout is {how} "
                    f"{(this_at - prior_at) / 1e9:.1f} s after stage {stage.prior} {was}; the "
                    f"approved plan holds {stage.hold_ns / 1e9:g} s between them"
                )
            break
    else:
        if strict:
            unknown = stage.prior if prior_at <= 0 else stage.stage
            revision = prior.revision if prior_at <= 0 else stage.revision
            return (
                f"stage {unknown} of its rollout (revision {revision}) was neither heard live "
                "here nor has a change record holding its proof with a readable write time, "
                f"so the approved plan's hold before stage {stage.stage} cannot be checked"
            )
    if prior.issued_ns <= 0:
        return (
            f"the issue time of stage {stage.prior} of its rollout is not known here, so the "
            f"approved plan's hold before stage {stage.stage} cannot be checked"
        )
    if stage.issued_ns - prior.issued_ns >= stage.hold_ns - SKEW_NS:
        return ""
    return (
        f"issued_ns {stage.issued_ns}: stage {stage.stage} of its rollout is issued "
        f"{(stage.issued_ns - prior.issued_ns) / 1e9:.1f} s after stage {stage.prior} "
        f"({prior.issued_ns}); the approved plan holds {stage.hold_ns / 1e9:g} s between them"
    )


class NodeFlags:
    """A node's flag state and its own fleet membership, for the OpenFeature provider.

    Implements `FlagStateReader` (cached state, confirmations) and `FleetView`
    (just this node, admitted only while it holds both its release admission
    and its lease), so `KnightwatchProvider` fails closed on either.
    """

    def __init__(self, runtime: NodeRuntime, applied: Mapping[str, int] | None = None) -> None:
        """`applied`: per flag, the revision of the newest change this node applied before
        it restarted (its flight recorder's `flag_applied` events, `audit.standing`)."""
        self.runtime = runtime
        self.plane = runtime.plane
        self.node = runtime.node_id
        self._states: dict[str, FlagState] = {}
        self._confirmed: dict[str, int] = {}
        self._synced = False
        self._loop: asyncio.AbstractEventLoop | None = None
        """The node's loop (`start`): confirmations asked for off it are handed to it."""
        self._latest: dict[str, FlagState] = {}
        """The newest stored revision of each flag, verified or not (re-judged when this
        node's admitted flag schema changes)."""
        self._written: dict[str, Written] = {}
        """When the store wrote the change behind each `_latest` state's value for this
        node (a re-judgement is at that time too)."""
        self._proof_revision: dict[str, int] = dict(applied or {})
        """The revision of the change behind this node's current value (no going back),
        remembered across restarts through the flight recorder."""
        self._verdict_seen: object = None
        """The admission verdict the held states were judged under (identity)."""
        self._rollouts: dict[str, dict[str, RolloutSeen]] = {}
        """Per flag, per rollout approval: the rollout it carried, as this node saw it."""
        self._refused_keys: dict[tuple[str, int], None] = {}
        self._used: dict[str, None] = {}
        """sha256 of the proofs whose `flags set` approval use is learned (not checked again)."""
        self.refused: Counter[TrustReason] = Counter()
        self.last_refusal = ""
        self._retrying: asyncio.Task[None] | None = None
        """Reading the flags bucket again after a resync failed (`_resync_again`)."""

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.plane.on_connection(self._on_connection)
        await self.plane.subscribe_records(Bucket.FLAGS, self._on_record)
        await self._resync()

    async def _on_connection(self, up: bool) -> None:
        self._synced = False
        if not up:
            return
        try:
            await self._resync()
        except ControlPlaneUnavailable as exc:
            # before, nothing read the bucket again until the next disconnect: every flag
            # stayed at its safe default for as long as the connection held
            log.warning("node %s: flag state not read again (%s); retrying", self.node, exc)
            if self._retrying is None or self._retrying.done():
                self._retrying = asyncio.create_task(
                    self._resync_again(), name=f"{self.node}-flags-resync"
                )
                self.runtime.track(self._retrying)

    async def _resync_again(self) -> None:
        """Read the flags bucket again, backing off from `_RESYNC_FIRST_S` to `_RESYNC_MAX_S`,
        until it is read or the connection drops (its return resyncs anew); the flags stay
        failed closed (`StateUnavailable`, the safe defaults) until then."""
        delay = _RESYNC_FIRST_S
        while not self._synced and self.plane.connected:
            await asyncio.sleep(delay)
            if self._synced or not self.plane.connected:
                return
            try:
                await self._resync()
            except ControlPlaneUnavailable as exc:
                log.warning("node %s: flag state still not read again: %s", self.node, exc)
                delay = min(2 * delay, _RESYNC_MAX_S)

    async def _resync(self) -> None:
        records = await self.plane.records(Bucket.FLAGS)
        self._remember(records)
        for key, (value, _) in records.items():
            if key.startswith("state."):
                await self._apply(key, value, live=False)
        self._synced = True

    def _remember(self, records: Mapping[str, tuple[bytes, int]]) -> None:
        """Raise the no-going-back memory to what this node's own applied records say,
        and learn which change or rollout each approval carried from every node's.

        The flight recorder carries the memory across restarts; a new or wiped
        recorder file has none, and an older approved change stored again would
        then verify. The applied records are the copy in the plane (only this
        node's identity may write them), so either copy is enough. The other nodes'
        records (each only its node may write) say what an approval carried while
        this node was down or before it joined: a change riding it otherwise is
        `replayed`. A rollout one of them saw end has ended here too."""
        mine = f"applied.{self.node}."
        # this node's own memory first, then every other node's: a node that was down
        # while an approval was used (or joined since) saw none of it, and one operator
        # could sign another change riding that approval for it alone
        ordered = sorted(records.items(), key=lambda item: not item[0].startswith(mine))
        for key, (value, _) in ordered:
            node, _, flag_id = key.removeprefix("applied.").partition(".")
            if not key.startswith("applied.") or not flag_id:
                continue
            try:
                applied = APPLIED_DECODER.decode(value)
            except UNDECODABLE:
                continue  # nothing to remember from it; the recorder's memory stands
            if applied.node != node or applied.flag_id != flag_id:
                continue
            seen = self._rollouts.setdefault(flag_id, {})
            for rollout in applied.rollouts:
                held = seen.get(rollout.approval)
                if held is None or (
                    rollout.ended and not held.ended and rollout.binding == held.binding
                ):
                    seen[rollout.approval] = rollout
            if node != self.node:
                continue  # another node's value is not this node's to go back from
            if applied.proof_revision > self._proof_revision.get(flag_id, 0):
                self._proof_revision[flag_id] = applied.proof_revision
                self.runtime.record_event(
                    FLAG_APPLIED, flag=flag_id, revision=applied.proof_revision
                )

    async def _on_record(self, record: Record) -> None:
        if record.key.startswith("state."):
            await self._apply(record.key, record.value, live=True)
        elif record.key.startswith("change."):
            # the change record a stored state was refused for (its writer stores it just
            # after the state): the state is judged again, at this record's write time
            flag_id = record.key.removeprefix("change.").rpartition(".")[0]
            latest = self._latest.get(flag_id)
            written = self._written.get(flag_id)
            if latest is not None and written is not None and record.key in written.awaiting:
                with contextlib.suppress(ControlPlaneUnavailable):  # the resync judges it
                    await self._take(latest, live=False)

    async def _apply(self, key: str, value: bytes, *, live: bool) -> None:
        try:
            state = decode_state(key.removeprefix("state."), value)
        except StateUnavailable as exc:
            self._unreadable(key.removeprefix("state."), str(exc))
            return
        await self._take(state, live=live)

    async def _take(self, state: FlagState, *, live: bool) -> None:
        held = self._states.get(state.flag_id)
        if held is not None and held.revision >= state.revision:
            return
        if live:  # judged now; re-judged (`_rejudge`) at when it was heard
            away = claimed_away(state.proofs.get(self.node, "")) is not None
            stages, awaiting = await self._stages_stored(state) if away else _NONE_STORED
            written = Written(
                self.runtime.clock.time_ns() if away else None, stages=stages, awaiting=awaiting
            )
        else:
            written = await self._written_at(state)
        latest = self._latest.get(state.flag_id)
        if latest is None or latest.revision <= state.revision:
            self._latest[state.flag_id] = state
            self._written[state.flag_id] = written
        if self._judge(state, live=live, written=written):
            await self._confirm(state.flag_id, state.revision)

    async def _written_at(self, state: FlagState) -> Written:
        """When the store's server wrote the change behind this node's value in `state`,
        read from the store: looked up only for a value away from the safe default (the
        stop direction never waits on it), and only where the store keeps write times
        (the in-memory plane without a clock: the change's own date). The record must
        hold this very proof: an older change's record says nothing of when this one
        was written."""
        proof = state.proofs.get(self.node, "")
        if state.value_for(self.node) is None or not self.plane.keeps_write_times:
            return Written()
        decision = claimed_away(proof)
        if decision is None or decision.flag_id != state.flag_id or self._verified(state):
            return Written()  # the stop direction, refused anyway, or verified already
        key = change_key(state.flag_id, decision.revision)
        stored, revision = await self.plane.get_record(Bucket.FLAGS, key)
        try:
            recorded = None if stored is None else CHANGE_DECODER.decode(stored)
        except UNDECODABLE:
            recorded = None
        if recorded is None or recorded.proof != proof:
            what = "not stored" if stored is None else "another change's or undecodable"
            return Written(
                None, f"the change record {key!r} behind the proof is {what}", frozenset({key})
            )
        at_ns = await self.plane.record_stored_ns(Bucket.FLAGS, key, revision)
        if at_ns is None:
            return Written(missing=f"the store no longer holds when it wrote {key!r}")
        stages, awaiting = await self._stages_stored(state)
        return Written(at_ns, stages=stages, awaiting=awaiting)

    async def _stages_stored(self, state: FlagState) -> tuple[Mapping[str, int], frozenset[str]]:
        """The server's write times of the change records of the rollout stage behind this
        node's value in `state` and of that rollout's earlier stages the state holds (by
        sha256 of each proof; `Written.stages`): only for a value away from the safe
        default (the stop direction never waits on it), only where the store keeps write
        times. Picked by what each proof claims (unverified: a time is only used for a
        stage whose verified proof has that very digest); a record missing, holding
        another proof or unreadable gives no time, and the hold it is needed for is then
        not checked but refused (`_too_soon`, strict). Also the keys of the records not
        stored or holding another proof (`Written.awaiting`: one stored later, with its
        own write time, judges the state again)."""
        own = claimed_away(state.proofs.get(self.node, ""))
        if own is None or own.approval_kind != "rollout" or not self.plane.keeps_write_times:
            return _NONE_STORED
        found: dict[str, int] = {}
        awaiting: set[str] = set()
        for proof in {p for p in state.proofs.values() if p}:
            claimed = claimed_away(proof)
            if (
                claimed is None
                or claimed.flag_id != state.flag_id
                or claimed.approval_kind != "rollout"
                or (claimed.rollout_id, claimed.approved_ns, claimed.approval_digest)
                != (own.rollout_id, own.approved_ns, own.approval_digest)
                or claimed.rollout_stage > own.rollout_stage
            ):
                continue
            key = change_key(state.flag_id, claimed.revision)
            try:
                stored, revision = await self.plane.get_record(Bucket.FLAGS, key)
                recorded = None if stored is None else CHANGE_DECODER.decode(stored)
                at_ns = (
                    await self.plane.record_stored_ns(Bucket.FLAGS, key, revision)
                    if recorded is not None and recorded.proof == proof
                    else None
                )
            except (*UNDECODABLE, ControlPlaneUnavailable) as exc:
                log.warning("node %s: no write time of %r: %s", self.node, key, exc)
                awaiting.add(key)  # a record written over it judges the state again
                continue  # no time: the hold that needs it is refused, not skipped
            if recorded is None or recorded.proof != proof:
                awaiting.add(key)
            elif at_ns is not None and at_ns > 0:
                found[_sha(proof)] = at_ns
        return MappingProxyType(found), frozenset(awaiting)

    def _verified(self, state: FlagState) -> bool:
        """This node holds `state`'s value for it already, by the same proof (checked then)."""
        held = self._states.get(state.flag_id)
        proof = state.proofs.get(self.node, "")
        return (
            held is not None
            and bool(proof)
            and held.value_for(self.node) == state.value_for(self.node)
            and held.proofs.get(self.node) == proof
        )

    def _unreadable(self, flag_id: str, detail: str) -> None:
        """The flag's stored state cannot be read (or is another flag's): the value this
        node held came from a state that is no longer there, so it goes back to the
        safe default (the stop direction; a fresh state replacing it applies as news)."""
        if self._states.pop(flag_id, None) is not None:  # news: counted and logged again
            self._refused_keys.pop((flag_id, 0), None)
        self._latest.pop(flag_id, None)
        self._written.pop(flag_id, None)
        self._refuse(
            flag_id, 0, Refused(TrustReason.MALFORMED, f"{detail}; evaluating the safe default")
        )

    def _schema(self) -> dict[str, str]:
        """The flag schema of the release this node is admitted on (empty: none)."""
        v = self.runtime.verdict
        return dict(v.flag_schema) if v is not None and v.admitted else {}

    def _judge(self, state: FlagState, *, live: bool, written: Written) -> bool:
        """Apply `state` if the change behind this node's value verifies; else record why.

        `written` (not live): when the store wrote that change; judged then too."""
        schema = self._schema()
        self._verdict_seen = self.runtime.verdict
        value = state.value_for(self.node)
        proof = state.proofs.get(self.node, "")
        # what the state shows of the flag's rollouts: before judging a change away from
        # the safe default (its stage is checked against it), after anything else (the
        # stop direction never waits on it)
        away = value is not None and claimed_away(proof) is not None
        if away:
            self._observe(state, schema, live=live, written=written)
        try:
            return self._judged(state, schema, live=live, written=written)
        finally:
            if not away:
                self._observe(state, schema, live=live)

    def _judged(
        self, state: FlagState, schema: Mapping[str, str], *, live: bool, written: Written
    ) -> bool:
        value = state.value_for(self.node)
        proof = state.proofs.get(self.node, "")
        if value is None:
            revision = 0  # no value: the safe default, the stop direction
        elif self._verified(state):
            revision = self._proof_revision.get(state.flag_id, 0)  # verified already
        else:
            try:
                verdict = check_flag_proof(
                    proof,
                    self.runtime.trust.roster,
                    flag_id=state.flag_id,
                    node=self.node,
                    value=value,
                    schema=schema,
                    now_ns=self.runtime.clock.time_ns(),
                    live=live,
                    stored_ns=None if live else written.stored_ns,
                )
                revision = verdict.revision
                if verdict.own_safe_default:
                    values = {n: v for n, v in state.node_values.items() if n != self.node}
                    state = msgspec.structs.replace(state, node_values=values)
                if revision > state.revision:
                    raise Refused(
                        TrustReason.MALFORMED,
                        f"the proof is for revision {revision}, the state is at {state.revision}",
                    )
                if verdict.away and (kill := self._freezing_kill(verdict.issued_ns)):
                    raise Refused(
                        TrustReason.FROZEN_BY_KILL,
                        f"turns the flag away from its safe default, issued while {kill} "
                        "was in force on this node; only safe-default changes apply under "
                        "a kill (issue it again after the resume)",
                    )
                if verdict.rollout is not None:
                    self._check_rollout(
                        state.flag_id,
                        verdict.rollout,
                        live=live,
                        digest=_sha(proof),
                        written=written,
                    )
                if verdict.used is not None:
                    self._check_used(state.flag_id, verdict.used)
                if revision < self._proof_revision.get(state.flag_id, 0):
                    raise Refused(
                        TrustReason.REPLAYED,
                        f"the proof is of revision {revision}; this node already applied "
                        f"a change of revision {self._proof_revision[state.flag_id]}",
                    )
                if not live and verdict.away and written.missing:
                    # its signer's date alone is not enough: a key revoked since could
                    # have dated it back; the stop direction never gets here
                    raise Refused(
                        TrustReason.MALFORMED,
                        f"{written.missing}: the server's write time of the change is "
                        "unknown, so it is not applied",
                    )
            except Refused as exc:
                self._refuse(state.flag_id, state.revision, exc)
                return False
        self._states[state.flag_id] = state
        if revision > self._proof_revision.get(state.flag_id, 0):
            self._proof_revision[state.flag_id] = revision
            # on disk, so a restart still knows which change it may not go back from
            self.runtime.record_event(FLAG_APPLIED, flag=state.flag_id, revision=revision)
        return True

    def _observe(
        self,
        state: FlagState,
        schema: Mapping[str, str],
        *,
        live: bool,
        written: Written = Written(),  # noqa: B008 (an immutable tuple)
    ) -> None:
        """Remember what `state` shows of the flag's rollouts: first whether one this node
        saw has ended (a node a stage of it turned on no longer holds that stage), then
        every stage it holds that verifies (any node's), under the rollout its approval
        was first used for. `live`: the state is heard now (a stage it holds is dated
        by when it was heard), not read at a resync. `written.stages`: the server's write
        times of stages' change records, where they were looked up (a stage judged too
        soon on them is not learned; without them, on the signed dates, as before: the
        stage a node's own value rides is checked again, strictly, in `_check_rollout`)."""
        now = self.runtime.clock.time_ns()
        seen = self._rollouts.setdefault(state.flag_id, {})
        for key, rollout in list(seen.items()):
            if now - rollout.approved_ns > ROLLOUT_SPAN_NS + SKEW_NS:
                del seen[key]  # no stage can ride it any more: nothing to remember
                continue
            if rollout.ended:
                continue
            for index, step in sorted(rollout.stages.items()):
                gone = self._left_stage(state, rollout.value, step)
                if gone:
                    why = f"at revision {state.revision} {gone} no longer held its stage {index}"
                    seen[key] = msgspec.structs.replace(rollout, ended=why)
                    break
        stages: list[tuple[RolloutStage, str]] = []
        uses: list[tuple[int, ApprovalUse]] = []
        for proof in {p for p in state.proofs.values() if p}:
            claimed = claimed_away(proof)
            if claimed is None or claimed.approval_kind not in ("rollout", "flag"):
                continue
            if not claimed.nodes:
                continue
            digest = _sha(proof)
            if digest in self._used or any(
                step.proof == digest for r in seen.values() for step in r.stages.values()
            ):
                continue  # learned already
            try:
                verdict = check_flag_proof(
                    proof,
                    self.runtime.trust.roster,
                    flag_id=state.flag_id,
                    node=claimed.nodes[0],
                    value=claimed.value,
                    schema=schema,
                    now_ns=now,
                    live=False,
                )
            except Refused:
                continue  # unverified: says nothing of the rollout (its nodes refuse it)
            if verdict.rollout is not None:
                stages.append((verdict.rollout, digest))
            if verdict.used is not None:
                uses.append((verdict.revision, verdict.used))
                self._used[digest] = None
                while len(self._used) > _REFUSED_KEPT:
                    del self._used[next(iter(self._used))]
        for _, use in sorted(uses):  # the earliest change is the approval's own
            if use.approval not in seen:
                seen[use.approval] = used_approval(use)
        for stage, digest in sorted(stages, key=lambda s: (s[0].stage, s[0].revision)):
            held = seen.get(stage.approval)
            if held is None:
                held = RolloutSeen(stage.approval, stage.binding, stage.approved_ns, stage.value)
            seen[stage.approval] = held
            if (
                held.binding != stage.binding
                or held.ended
                or stage.stage in held.stages
                or (stage.prior >= 0 and stage.prior not in held.stages)
                or _too_soon(held, stage, now if live else 0, digest=digest, stored=written.stages)
            ):
                continue  # another rollout on a used approval, or a stage out of its order
            step = RolloutStep(stage.revision, digest, stage.issued_ns, now if live else 0)
            seen[stage.approval] = msgspec.structs.replace(
                held, stages={**held.stages, stage.stage: step}
            )

    def _left_stage(self, state: FlagState, value: bool, step: RolloutStep) -> str:
        """A node `step`'s stage added that no longer holds it in `state` ("" if none): the
        stage's nodes are the ones its proof names, read from any node still holding that
        proof (it was verified when the stage was learned); if none holds it, every node
        the stage added has left it."""
        proof = next((p for p in set(state.proofs.values()) if p and _sha(p) == step.proof), "")
        claimed = claimed_away(proof) if proof else None
        if claimed is None or not claimed.nodes:
            return "every node it added"
        return next(
            (
                n
                for n in claimed.nodes
                if state.node_values.get(n) != value or state.proofs.get(n, "") != proof
            ),
            "",
        )

    def _check_rollout(
        self, flag_id: str, stage: RolloutStage, *, live: bool, digest: str, written: Written
    ) -> None:
        """Refuse a stage its rollout's approval does not carry on this node's memory
        (`live`: the stage is heard now, if this node did not learn it before; `digest`:
        sha256 of its proof; `written.stages`: the server's write times of its rollout's
        stages, which judge its hold where a stage was not heard live, and must be known
        for that wherever the store keeps write times)."""
        rollout = self._rollouts.get(flag_id, {}).get(stage.approval)
        if rollout is None:  # `_observe` learned every verified stage of the state
            raise Refused(TrustReason.REPLAYED, "the rollout stage was not seen in the state")
        if rollout.binding != stage.binding:
            raise Refused(
                TrustReason.REPLAYED,
                "its rollout approval was used already, by another rollout (its id, start, "
                "nodes or plan differ); an approval is of one rollout: ask for a new one",
            )
        step = rollout.stages.get(stage.stage)
        if step is not None and step.revision == stage.revision == self._proof_revision.get(
            flag_id, 0
        ):
            return  # the change this node applied before (a restart reads it again)
        if rollout.ended:
            raise Refused(
                TrustReason.REPLAYED,
                f"the rollout its approval was given for ended ({rollout.ended}); no stage "
                "rides that approval any more: ask for a new one",
            )
        if stage.prior >= 0 and stage.prior not in rollout.stages:
            raise Refused(
                TrustReason.REPLAYED,
                f"stage {stage.stage} of its rollout comes before stage {stage.prior} was "
                "made; the stages ride their approval in order",
            )
        if step is not None and step.revision == stage.revision:
            heard = step.heard_ns  # when it was learned (perhaps by another node)
        else:
            heard = self.runtime.clock.time_ns() if live else 0
        strict = self.plane.keeps_write_times
        if early := _too_soon(
            rollout, stage, heard, digest=digest, stored=written.stages, strict=strict
        ):
            raise Refused(TrustReason.APPROVAL_INVALID, early)
        if step is None or step.revision != stage.revision:
            made = "" if step is None else f" (made at revision {step.revision})"
            raise Refused(
                TrustReason.REPLAYED,
                f"stage {stage.stage} of its rollout is made again at revision "
                f"{stage.revision}{made}; each stage is made once",
            )

    def _check_used(self, flag_id: str, use: ApprovalUse) -> None:
        """Refuse a change riding a `flags set` approval this node saw another change use."""
        held = self._rollouts.get(flag_id, {}).get(use.approval)
        if held is not None and held.binding != f"change:{use.change}":
            revision = held.binding.removeprefix("change:").partition(":")[0]
            raise Refused(
                TrustReason.REPLAYED,
                f"its approval was used already, by the change of revision {revision}; an "
                "approval is of one change: ask for a new one",
            )

    def _freezing_kill(self, issued_ns: int) -> str:
        """The fleet or strategy kill in force on this node when `issued_ns` was: one it
        still holds, latched (or issued, if earlier: one it started under) at or before
        then, or one a resume lifted, if `issued_ns` falls between the two
        (`NodeRuntime.thawed`); "" if none. A change
        issued under a kill adds risk the kill froze, and stays refused after the resume
        (it is issued again once the kill is over), so a node that starts after the
        resume judges it as the nodes that ran through the kill did. The freeze is
        enforced where changes are made too (`flags set`); here it holds against anyone
        who can write a signed change straight into the flags bucket."""
        for (scope, key), halt in self.runtime.guard.halts().items():
            if scope not in (Scope.FLEET, Scope.STRATEGY):
                continue
            # in force since this node latched it, or since the kill it holds was issued if
            # earlier: a node started during a kill latches it then, after the changes
            # made under it before its start
            held = self.runtime.held(scope, key)
            since = halt.ts_ns
            if held is not None and held.state is not TradingState.ACTIVE and held.issued_ns > 0:
                since = min(since, held.issued_ns)
            if since <= issued_ns:
                return f"the {scope.value} kill {key!r} (by {halt.actor})"
        for (scope, key), lifted in self.runtime.thawed.items():
            for killed, resumed, actor in lifted:
                if killed <= issued_ns < resumed:
                    return f"the {scope.value} kill {key!r} (by {actor}, resumed since)"
        return ""

    def _refuse(self, flag_id: str, revision: int, exc: Refused) -> None:
        """Count, log and record a refused revision once (a re-delivery counts once)."""
        if (flag_id, revision) in self._refused_keys:
            return
        self._refused_keys[(flag_id, revision)] = None
        while len(self._refused_keys) > _REFUSED_KEPT:
            del self._refused_keys[next(iter(self._refused_keys))]
        self.refused[exc.reason] += 1
        self.runtime.refused[exc.reason] += 1
        self.last_refusal = f"{flag_id} r{revision}: {exc.reason.value}: {exc.detail}"
        self.runtime.last_refusal = self.last_refusal
        log.error(
            "FLAG_REFUSED node=%s flag=%s revision=%d reason=%s %s",
            self.node,
            flag_id,
            revision,
            exc.reason.value,
            exc.detail,
        )
        self.runtime.record_event(
            "flag_refused",
            flag=flag_id,
            revision=revision,
            reason=exc.reason.value,
            detail=exc.detail,
        )

    def _rejudge(self) -> None:
        """A new admission verdict (another schema, perhaps): judge the newest unapplied
        revisions again under it."""
        if self.runtime.verdict is self._verdict_seen:
            return
        self._verdict_seen = self.runtime.verdict
        for flag_id, latest in list(self._latest.items()):
            held = self._states.get(flag_id)
            written = self._written.get(flag_id, Written())
            if (held is None or held.revision < latest.revision) and self._judge(
                latest, live=False, written=written
            ):
                self.confirm_applied(flag_id, self.node, latest.revision)

    async def _confirm(self, flag_id: str, revision: int) -> None:
        if self._confirmed.get(flag_id, 0) >= revision:
            return
        self._confirmed[flag_id] = revision
        applied = FlagApplied(
            flag_id,
            self.node,
            revision,
            self.runtime.clock.time_ns(),
            self._proof_revision.get(flag_id, 0),
            tuple(self._rollouts.get(flag_id, {}).values()),
        )
        try:
            await record_applied(self.plane, applied)
        except ControlPlaneUnavailable as exc:
            self._confirmed[flag_id] = 0
            log.warning("node %s: flag %s r%d not confirmed: %s", self.node, flag_id, revision, exc)

    # --- FlagStateReader ------------------------------------------------------
    def get(self, flag_id: str) -> FlagState | None:
        if not self._synced or not self.plane.connected:
            raise StateUnavailable(f"node {self.node}: flag state not in sync with the plane")
        self._rejudge()
        return self._states.get(flag_id)

    def confirm_applied(self, flag_id: str, node: str, revision: int) -> None:
        """Revisions are confirmed when they arrive; only a lost confirmation is resent here."""
        if node != self.node or self._confirmed.get(flag_id, 0) >= revision:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self._loop or running
        if loop is None:
            return  # neither started nor on a loop: its start confirms what it applies
        if running is loop:
            self.runtime.track(loop.create_task(self._confirm(flag_id, revision)))
        else:
            # asked from the application's own thread (an OpenFeature evaluation off the
            # node's loop): before, `get_running_loop` raised there and the confirmation
            # was lost; it is handed to the node's loop instead
            loop.call_soon_threadsafe(
                lambda: self.runtime.track(loop.create_task(self._confirm(flag_id, revision)))
            )

    # --- FleetView --------------------------------------------------------------
    def members(self) -> Sequence[FleetMember]:
        v = self.runtime.verdict
        admitted = self.runtime.release_admitted and self.runtime.admitted
        return (
            FleetMember(
                self.node,
                admitted=admitted,
                release_id=v.release_id if v is not None else "",
                flag_schema=dict(v.flag_schema) if v is not None and admitted else {},
            ),
        )
