"""Flag state and the fleet view on the control plane, for operators' tools.

* `PlaneFlagStore`: the `FlagStateStore` operators' tools use. Each flag's
  state is one record with compare-and-swap on its store revision, so two
  operators cannot overwrite each other; each change is kept under its own
  key. The flag gate is synchronous, so the store is called from a worker
  thread and bridges onto the event loop that owns the connection.
* `fleet_snapshot`: the `FleetView` the gate judges against, built from
  membership and the admission service's verdicts. A node's flag schema is
  the one in the signed manifest it was admitted on, never its own claim.
* `AppliedWaiter`: waits for each node's confirmation of a revision.

A commit that lost the control plane once its state write was sent is never
reported as a plain "unreachable" (read as: nothing changed, so retry or walk
away): `ChangeUncertain` says the change may be stored and in force,
`ChangeInForce` that it is stored at its revision, in force on every node that
applies it, with what could not be done after (its change record, reading the
confirmations). Both name the flag and the revision and say to check `flags show`.
A state write the store answered with a refusal (`ControlPlaneRefused`: no room) is
`ChangeRefused`: nothing stored, not in force; before, it was reported as sent and not
answered, "it may be stored and in force" (exit 3), for a change the store had refused.

The stop direction is never gated on room: a bounded flags bucket keeps its last share
for changes back to the safe default (`RoomKept`). A change away from it is refused
first, once the bucket is past the rest; a full bucket refused both alike before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import msgspec

from knightwatch.clock import NS_PER_S, Clock
from knightwatch.control.node.flags import (
    APPLIED_DECODER,
    ENCODER,
    SUBJECT_APPLIED,
    FlagApplied,
    applied_key,
    assemble,
    change_key,
    changes_of,
    decode_state,
    record_applied,
    state_key,
)
from knightwatch.control.plane.protocol import (
    Bucket,
    ControlPlane,
    ControlPlaneRefused,
    ControlPlaneUnavailable,
    RoomKept,
    Unsubscribe,
)
from knightwatch.control.plane.protocol import RevisionConflict as PlaneConflict
from knightwatch.control.plane.wire import VERDICT_DECODER, Verdict
from knightwatch.flags.fleet import FleetMember, StaticFleetView
from knightwatch.flags.state import (
    FlagChange,
    FlagState,
    StateConflict,
    StateUnavailable,
    StateUnreadable,
)
from knightwatch.inputs import UNDECODABLE
from knightwatch.release.errors import ReleaseInputError
from knightwatch.trust.flagproof import FlagDecision, FlagProof

log = logging.getLogger(__name__)
T = TypeVar("T")

_BRIDGE_TIMEOUT_S = 5.0
_PROOF = msgspec.json.Decoder(FlagProof)
_DECISION = msgspec.json.Decoder(FlagDecision)


class ChangeRefused(StateUnavailable, ControlPlaneRefused):
    """The store answered the change's state write with a refusal (no room): nothing of
    it is stored, it is in force nowhere. Callers that know "unreachable" catch it as
    either; it is never "in doubt"."""


def refused(flag_id: str, why: object) -> str:
    """The line for a change the store refused."""
    return f"flag {flag_id!r}: not changed, nothing stored: {why}"


def to_safe_default(change: FlagChange) -> bool:
    """Whether `change` turns its flag to its safe default, as its sealed decision says
    (the gate read the default from the registry and signed it; the change itself does not
    carry it). A change without a readable proof is not: it is held to the room a change
    away from the safe default has."""
    try:
        decision = _DECISION.decode(_PROOF.decode(change.proof).change.payload_bytes())
    except (*UNDECODABLE, ReleaseInputError):
        return False
    return (
        decision.flag_id == change.flag_id
        and decision.value == change.value == decision.safe_default
    )


class ChangeInDoubt(StateUnavailable, ControlPlaneUnavailable):
    """A flag change that went out (its state write was sent) whose end could not be
    seen: the control plane was lost. Its message says how far it got; callers that
    know only "unreachable" still catch it as either."""


class ChangeUncertain(ChangeInDoubt):
    """The state write was sent but never answered: the change may be stored, in force."""


class ChangeInForce(ChangeInDoubt):
    """The state is stored at `state.revision` (in force on every node that applies it);
    what came after it (the change record, the confirmations) was lost with the plane."""

    def __init__(self, detail: str, state: FlagState) -> None:
        super().__init__(detail)
        self.state = state


def uncertain(flag_id: str, revision: int, why: object) -> str:
    """The line for a change sent but not answered."""
    return (
        f"flag {flag_id!r}: the change to revision {revision} was sent but the control "
        f"plane did not answer ({why}): it may be stored and in force on the nodes that "
        f"apply it; check `knightwatch flags show {flag_id}` before doing anything else"
    )


def in_force(flag_id: str, revision: int, lost: str) -> str:
    """The line for a change stored whose aftermath was lost: `lost` says what."""
    return (
        f"flag {flag_id!r}: stored at revision {revision}: in force on the nodes that apply "
        f"it; {lost}; check `knightwatch flags show {flag_id}`"
    )


class PlaneFlagStore:
    """`FlagStateStore` on the control plane, for synchronous callers off the event loop."""

    def __init__(self, plane: ControlPlane, clock: Clock) -> None:
        """Construct on the event loop that owns `plane`; call the methods from other threads."""
        self._plane = plane
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._clock = clock

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.get_ident() == self._loop_thread:
            coro.close()
            raise StateUnavailable("PlaneFlagStore: call it from a worker thread, not the loop")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(_BRIDGE_TIMEOUT_S)
        except (ChangeInDoubt, ChangeRefused):
            raise
        except (ControlPlaneUnavailable, TimeoutError) as exc:
            # given up on: it must not go on writing on the loop after the caller was told
            future.cancel()
            raise StateUnavailable(f"flag state unreachable: {exc}") from exc

    def get(self, flag_id: str) -> FlagState | None:
        return self._call(self._get(flag_id))

    async def _get(self, flag_id: str) -> FlagState | None:
        """The state key read directly from the leader; a bucket scan only for confirmations.

        The gate's compare-and-set is checked against this read, so it must not
        come from a scan that can miss a key being rewritten while it runs.
        """
        key = state_key(flag_id)
        stored, revision = await self._plane.get_record(Bucket.FLAGS, key)
        if stored is None:
            return None
        records = await self._plane.records(Bucket.FLAGS)
        records[key] = (stored, revision)
        try:
            return assemble(flag_id, records)
        except StateUnavailable as exc:
            raise StateUnreadable(str(exc), _replacing(flag_id, revision, records)) from None

    def changes(self, flag_id: str) -> Sequence[FlagChange]:
        return changes_of(flag_id, self._call(self._plane.records(Bucket.FLAGS)))

    def commit(
        self, change: FlagChange, expected_revision: int, *, replace_unreadable: bool = False
    ) -> FlagState:
        """Raises `ChangeUncertain` or `ChangeInForce` once the state write went out, a plain
        `StateUnavailable` only when nothing was sent (the bridge's own wait running out
        included: a slow read, write and record write outlast it)."""
        sent: list[FlagState] = []
        landed: list[FlagState] = []
        try:
            return self._call(
                self._commit(change, expected_revision, replace_unreadable, sent, landed)
            )
        except (ChangeInDoubt, ChangeRefused):
            raise
        except StateUnavailable as exc:
            if landed:
                lost = f"its change record not written ({exc}); confirmations not read"
                raise ChangeInForce(
                    in_force(change.flag_id, landed[0].revision, lost), landed[0]
                ) from None
            if sent:
                raise ChangeUncertain(uncertain(change.flag_id, sent[0].revision, exc)) from None
            raise

    async def _commit(
        self,
        change: FlagChange,
        expected_revision: int,
        replace_unreadable: bool = False,
        sent: list[FlagState] | None = None,
        landed: list[FlagState] | None = None,
    ) -> FlagState:
        """Compare-and-set on the state record's store revision.

        `replace_unreadable` (the gate sets it for a change to the safe default only):
        a stored record that cannot be decoded is replaced by a fresh state, as `get`
        numbered it, instead of stopping the emergency direction; logged."""
        key = state_key(change.flag_id)
        stored, store_revision = await self._plane.get_record(Bucket.FLAGS, key)
        replaced = ""
        if stored is None:
            current = FlagState(change.flag_id)
        else:
            try:
                current = decode_state(change.flag_id, stored)
            except StateUnavailable as exc:
                if not replace_unreadable:
                    raise
                records = await self._plane.records(Bucket.FLAGS)
                base = _replacing(change.flag_id, store_revision, records)
                current = FlagState(change.flag_id, base)
                replaced = str(exc)
        if current.revision != expected_revision:
            raise StateConflict(
                f"flag {change.flag_id!r} is at revision {current.revision}, "
                f"the change was checked against {expected_revision}"
            )
        updated = current.with_change(change)
        stop = replace_unreadable or to_safe_default(change)
        if not stop and isinstance(self._plane, RoomKept):
            try:  # the bucket's last share is kept for the stop direction, which never asks
                await self._plane.check_room(Bucket.FLAGS)
            except ControlPlaneRefused as exc:
                raise ChangeRefused(refused(change.flag_id, exc)) from None
        if sent is not None:
            sent.append(updated)
        try:
            await self._plane.put_record(
                Bucket.FLAGS, key, ENCODER.encode(updated), expected_revision=store_revision
            )
        except PlaneConflict as exc:
            raise StateConflict(str(exc)) from None
        except ControlPlaneRefused as exc:  # the store answered: not stored
            raise ChangeRefused(refused(change.flag_id, exc)) from None
        except ControlPlaneUnavailable as exc:
            # sent and not answered: it may have landed (nodes apply it), or land later
            raise ChangeUncertain(uncertain(change.flag_id, updated.revision, exc)) from None
        if landed is not None:
            landed.append(updated)
        if replaced:
            log.warning(
                "flag %s: replaced an unreadable state record (store revision %d) with a fresh "
                "state at revision %d, every node at the safe default (%s by %s): %s",
                change.flag_id,
                store_revision,
                updated.revision,
                "on" if change.value else "off",
                change.actor,
                replaced,
            )
        recorded = msgspec.structs.replace(change, revision=updated.revision)
        try:
            await self._plane.put_record(
                Bucket.FLAGS, change_key(change.flag_id, updated.revision), ENCODER.encode(recorded)
            )
        except ControlPlaneUnavailable as exc:
            # the state is stored: nodes apply it whatever happens to its record
            lost = f"its change record not written ({exc}); confirmations not read"
            raise ChangeInForce(in_force(change.flag_id, updated.revision, lost), updated) from None
        return updated

    def confirm_applied(self, flag_id: str, node: str, revision: int) -> None:
        self._call(
            record_applied(self._plane, FlagApplied(flag_id, node, revision, self._clock.time_ns()))
        )


def _replacing(flag_id: str, store_revision: int, records: dict[str, tuple[bytes, int]]) -> int:
    """The revision a fresh state replacing an unreadable one is checked against: above
    every revision the flag can have reached (the unreadable record's store revision,
    a recorded change, a node's confirmation), so every node takes the fresh state
    as news and no recorded change is written over."""
    highest = store_revision
    changes = change_key(flag_id, 0)[:-1]
    for key, (value, _) in records.items():
        number = key.removeprefix(changes)
        if key.startswith(changes) and number.isascii() and number.isdigit() and len(number) < 19:
            highest = max(highest, int(number))
        elif key.startswith("applied.") and key.endswith(f".{flag_id}"):
            try:
                applied = APPLIED_DECODER.decode(value)
            except UNDECODABLE:
                continue
            if applied.flag_id == flag_id and key == applied_key(flag_id, applied.node):
                highest = max(highest, applied.revision)
    return highest


async def fleet_snapshot(
    plane: ControlPlane, clock: Clock, stale_after_s: float = 30.0
) -> StaticFleetView:
    """Every node that evaluates flags now, with the verdict the admission service stored.

    Members that left, or were not seen for `stale_after_s` (crashed), are out;
    a member without a verdict, or whose stored verdict cannot be decoded (logged),
    is in, not admitted, so activation names it and a change back to the safe
    default still reaches it.
    """
    now = clock.time_ns()
    verdicts: dict[str, Verdict] = {}
    for node, (value, _) in (await plane.records(Bucket.ADMISSION)).items():
        try:
            verdicts[node] = VERDICT_DECODER.decode(value)
        except UNDECODABLE as exc:
            log.warning("admission verdict of %s cannot be decoded: %s", node, exc)
    members = []
    for status in await plane.members():
        if status.left or now - status.seen_ns > stale_after_s * NS_PER_S:
            continue
        v = verdicts.get(status.node_id)
        members.append(
            FleetMember(
                status.node_id,
                admitted=v is not None and v.admitted,
                release_id=v.release_id if v is not None else "",
                flag_schema=dict(v.flag_schema) if v is not None and v.admitted else {},
            )
        )
    return StaticFleetView(members)


_RECHECK_S = 0.02
"""How soon a node's claimed confirmation is checked again against its durable record."""
ARRIVALS_MAX = 4096
"""How many (flag, node) fast-path claims a waiter keeps; the oldest is forgotten first.
Any node may publish a claim naming any flag and node, so their number is the sender's
choice; a forgotten claim costs only its latency (the node's durable record still
confirms it when the wait ends)."""


class AppliedWaiter:
    """Collects `FlagApplied` confirmations so `flags set` can report each node's latency.

    The fast-path message is only a hint: every node may publish on its subject and
    its payload names any node, so one node could answer for another that never
    applied the change (a wedged node reported as confirmed). A node counts as
    confirmed once its own durable record says so: `applied.<node>.<flag>` in the
    flags bucket, which only that node's identity may write. Its latency is the fast
    path's arrival when the record confirms it, else when the record was read.

    `close` drops its subscription: a waiter made for one change on a long-lived
    connection (a console session's) otherwise heard every later confirmation for as
    long as the connection lived, one more handler at every change.
    """

    def __init__(self, plane: ControlPlane, clock: Clock) -> None:
        self._plane = plane
        self._clock = clock
        self._arrivals: dict[tuple[str, str], tuple[int, int]] = {}
        self._changed = asyncio.Event()
        self._unsubscribe: Unsubscribe | None = None
        self.unread: dict[str, str] = {}
        """Nodes whose record the last `wait` could not read (the plane's answer): not
        known to be unconfirmed, only not read."""

    async def start(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = await self._plane.subscribe(SUBJECT_APPLIED, self._on_applied)

    async def close(self) -> None:
        """Stop hearing confirmations and forget those heard (the waiter may start again)."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        self._arrivals.clear()
        if unsubscribe is not None:
            await unsubscribe()

    async def _on_applied(self, payload: bytes) -> None:
        try:
            applied = APPLIED_DECODER.decode(payload)
        except UNDECODABLE as exc:
            log.warning("dropping malformed flag confirmation: %s", exc)
            return
        key = (applied.flag_id, applied.node)
        if applied.revision > self._arrivals.get(key, (0, 0))[0]:
            self._arrivals.pop(key, None)  # the newest claims are the last forgotten
            self._arrivals[key] = (applied.revision, self._clock.monotonic_ns())
            while len(self._arrivals) > ARRIVALS_MAX:
                del self._arrivals[next(iter(self._arrivals))]
            self._changed.set()

    async def _stored(self, flag_id: str, node: str) -> int:
        """The revision `node`'s own durable record says it applied (0: none, or unreadable)."""
        try:
            value, _ = await self._plane.get_record(Bucket.FLAGS, applied_key(flag_id, node))
        except ControlPlaneUnavailable as exc:
            self.unread[node] = str(exc)
            return 0
        self.unread.pop(node, None)
        if value is None:
            return 0
        try:
            applied = APPLIED_DECODER.decode(value)
        except UNDECODABLE:
            return 0
        if applied.node != node or applied.flag_id != flag_id:
            return 0
        return applied.revision

    async def wait(
        self, flag_id: str, revision: int, nodes: Sequence[str], t0_ns: int, timeout_s: float
    ) -> tuple[dict[str, float], list[str]]:
        """Per-node latency (ms since `t0_ns`) of confirming `revision` or later; missing nodes
        (those of them in `unread` were not read: the plane did not answer)."""
        self.unread = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        confirmed: dict[str, float] = {}
        while True:
            for n in nodes:
                got = self._arrivals.get((flag_id, n))
                if n in confirmed or got is None or got[0] < revision:
                    continue
                if await self._stored(flag_id, n) >= revision:
                    confirmed[n] = (got[1] - t0_ns) / 1e6
            if len(confirmed) == len(nodes) or loop.time() >= deadline:
                break
            self._changed.clear()
            # a claim whose record has not landed yet is read again shortly
            claimed = any(
                (got := self._arrivals.get((flag_id, n))) is not None and got[0] >= revision
                for n in nodes
                if n not in confirmed
            )
            remaining = max(deadline - loop.time(), 0.0)
            wake = min(remaining, _RECHECK_S) if claimed else remaining
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wake)
        for n in nodes:  # no fast path heard (lost, or never sent): the record alone
            if n in confirmed:
                continue
            if self.unread and n not in self.unread:
                # the plane stopped answering: each read would wait out its own timeout
                self.unread[n] = next(iter(self.unread.values()))
                continue
            if await self._stored(flag_id, n) >= revision:
                confirmed[n] = (self._clock.monotonic_ns() - t0_ns) / 1e6
        return confirmed, sorted(set(nodes) - confirmed.keys())
