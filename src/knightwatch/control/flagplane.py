"""Flag state and the fleet view on the control plane (issue 5 on a live fleet).

* `PlaneFlagStore`: the `FlagStateStore` operators' tools use. Each flag's
  state is one record with compare-and-swap on its store revision, so two
  operators cannot overwrite each other; each change is kept under its own
  key. The flag gate is synchronous, so the store is called from a worker
  thread and bridges onto the event loop that owns the connection.
* `fleet_snapshot`: the `FleetView` the gate judges against, built from
  membership and the admission service's verdicts. A node's flag schema is
  the one in the signed manifest it was admitted on, never its own claim.
* `NodeFlags`: a node's cached view of flag state. It applies each new
  revision the moment it is stored, confirms it (fast path and durably), and
  serves the OpenFeature provider from memory; it fails closed (unavailable)
  while the node is disconnected or not yet resynced.
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
from knightwatch.control.node import NodeRuntime
from knightwatch.control.protocol import Bucket, ControlPlane, ControlPlaneUnavailable, Record
from knightwatch.control.protocol import RevisionConflict as PlaneConflict
from knightwatch.control.verdict import VERDICT_DECODER
from knightwatch.flags.fleet import FleetMember, StaticFleetView
from knightwatch.flags.state import FlagChange, FlagState, StateConflict, StateUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

SUBJECT_APPLIED = "flags.applied"
_BRIDGE_TIMEOUT_S = 5.0


class FlagApplied(msgspec.Struct, frozen=True):
    """A node's proof that it now evaluates this revision of a flag."""

    flag_id: str
    node: str
    revision: int
    at_ns: int


def state_key(flag_id: str) -> str:
    return f"state.{flag_id}"


def change_key(flag_id: str, revision: int) -> str:
    return f"change.{flag_id}.{revision}"


def applied_key(flag_id: str, node: str) -> str:
    return f"applied.{flag_id}.{node}"


_STATE = msgspec.json.Decoder(FlagState)
_CHANGE = msgspec.json.Decoder(FlagChange)
_APPLIED = msgspec.json.Decoder(FlagApplied)
_ENC = msgspec.json.Encoder()


def assemble(flag_id: str, records: dict[str, tuple[bytes, int]]) -> FlagState | None:
    """The flag's state with every node's applied revision, from one bucket snapshot."""
    stored = records.get(state_key(flag_id))
    if stored is None:
        return None
    state = _STATE.decode(stored[0])
    prefix = f"applied.{flag_id}."
    for key, (value, _) in records.items():
        if key.startswith(prefix):
            applied = _APPLIED.decode(value)
            state = state.with_applied(applied.node, applied.revision)
    return state


def changes_of(flag_id: str, records: dict[str, tuple[bytes, int]]) -> list[FlagChange]:
    prefix = f"change.{flag_id}."
    found = [_CHANGE.decode(v) for k, (v, _) in records.items() if k.startswith(prefix)]
    return sorted(found, key=lambda c: c.revision)


async def record_applied(plane: ControlPlane, applied: FlagApplied) -> None:
    """Fast path first (whoever waits on `flags set`), then the durable record for `show`."""
    payload = _ENC.encode(applied)
    await plane.publish(SUBJECT_APPLIED, payload)
    await plane.put_record(Bucket.FLAGS, applied_key(applied.flag_id, applied.node), payload)


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
        try:
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_BRIDGE_TIMEOUT_S)
        except (ControlPlaneUnavailable, TimeoutError) as exc:
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
        return assemble(flag_id, records)

    def changes(self, flag_id: str) -> Sequence[FlagChange]:
        return changes_of(flag_id, self._call(self._plane.records(Bucket.FLAGS)))

    def commit(self, change: FlagChange, expected_revision: int) -> FlagState:
        return self._call(self._commit(change, expected_revision))

    async def _commit(self, change: FlagChange, expected_revision: int) -> FlagState:
        key = state_key(change.flag_id)
        stored, store_revision = await self._plane.get_record(Bucket.FLAGS, key)
        current = _STATE.decode(stored) if stored is not None else FlagState(change.flag_id)
        if current.revision != expected_revision:
            raise StateConflict(
                f"flag {change.flag_id!r} is at revision {current.revision}, "
                f"the change was checked against {expected_revision}"
            )
        updated = current.with_change(change)
        try:
            await self._plane.put_record(
                Bucket.FLAGS, key, _ENC.encode(updated), expected_revision=store_revision
            )
        except PlaneConflict as exc:
            raise StateConflict(str(exc)) from None
        recorded = msgspec.structs.replace(change, revision=updated.revision)
        await self._plane.put_record(
            Bucket.FLAGS, change_key(change.flag_id, updated.revision), _ENC.encode(recorded)
        )
        return updated

    def confirm_applied(self, flag_id: str, node: str, revision: int) -> None:
        self._call(
            record_applied(self._plane, FlagApplied(flag_id, node, revision, self._clock.time_ns()))
        )


async def fleet_snapshot(
    plane: ControlPlane, clock: Clock, stale_after_s: float = 30.0
) -> StaticFleetView:
    """Every node that evaluates flags now, with the verdict the admission service stored.

    Members that left, or were not seen for `stale_after_s` (crashed), are out;
    a member without a verdict is in, not admitted, so activation names it.
    """
    now = clock.time_ns()
    verdicts = {
        node: VERDICT_DECODER.decode(value)
        for node, (value, _) in (await plane.records(Bucket.ADMISSION)).items()
    }
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


class AppliedWaiter:
    """Collects `FlagApplied` confirmations so `flags set` can report each node's latency."""

    def __init__(self, plane: ControlPlane, clock: Clock) -> None:
        self._plane = plane
        self._clock = clock
        self._arrivals: dict[tuple[str, str], tuple[int, int]] = {}
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self._plane.subscribe(SUBJECT_APPLIED, self._on_applied)

    async def _on_applied(self, payload: bytes) -> None:
        applied = _APPLIED.decode(payload)
        key = (applied.flag_id, applied.node)
        if applied.revision > self._arrivals.get(key, (0, 0))[0]:
            self._arrivals[key] = (applied.revision, self._clock.monotonic_ns())
            self._changed.set()

    async def wait(
        self, flag_id: str, revision: int, nodes: Sequence[str], t0_ns: int, timeout_s: float
    ) -> tuple[dict[str, float], list[str]]:
        """Per-node latency (ms since `t0_ns`) of confirming `revision` or later; missing nodes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s

        def done() -> dict[str, float]:
            return {
                n: (at - t0_ns) / 1e6
                for n in nodes
                if (got := self._arrivals.get((flag_id, n)))
                and (at := got[1])
                and got[0] >= revision
            }

        while len(done()) < len(nodes) and loop.time() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
        latencies = done()
        return latencies, sorted(set(nodes) - latencies.keys())


class NodeFlags:
    """A node's flag state and its own fleet membership, for the OpenFeature provider.

    Implements `FlagStateReader` (cached state, confirmations) and `FleetView`
    (just this node, admitted only while it holds both its release admission
    and its lease), so `KnightwatchProvider` fails closed on either.
    """

    def __init__(self, runtime: NodeRuntime) -> None:
        self.runtime = runtime
        self.plane = runtime.plane
        self.node = runtime.node_id
        self._states: dict[str, FlagState] = {}
        self._confirmed: dict[str, int] = {}
        self._synced = False

    async def start(self) -> None:
        self.plane.on_connection(self._on_connection)
        await self.plane.subscribe_records(Bucket.FLAGS, self._on_record)
        await self._resync()

    async def _on_connection(self, up: bool) -> None:
        self._synced = False
        if up:
            with contextlib.suppress(ControlPlaneUnavailable):
                await self._resync()

    async def _resync(self) -> None:
        records = await self.plane.records(Bucket.FLAGS)
        for key, (value, _) in records.items():
            if key.startswith("state."):
                await self._apply(_STATE.decode(value))
        self._synced = True

    async def _on_record(self, record: Record) -> None:
        if record.key.startswith("state."):
            await self._apply(_STATE.decode(record.value))

    async def _apply(self, state: FlagState) -> None:
        held = self._states.get(state.flag_id)
        if held is not None and held.revision >= state.revision:
            return
        self._states[state.flag_id] = state
        await self._confirm(state.flag_id, state.revision)

    async def _confirm(self, flag_id: str, revision: int) -> None:
        if self._confirmed.get(flag_id, 0) >= revision:
            return
        self._confirmed[flag_id] = revision
        applied = FlagApplied(flag_id, self.node, revision, self.runtime.clock.time_ns())
        try:
            await record_applied(self.plane, applied)
        except ControlPlaneUnavailable as exc:
            self._confirmed[flag_id] = 0
            log.warning("node %s: flag %s r%d not confirmed: %s", self.node, flag_id, revision, exc)

    # --- FlagStateReader ------------------------------------------------------
    def get(self, flag_id: str) -> FlagState | None:
        if not self._synced or not self.plane.connected:
            raise StateUnavailable(f"node {self.node}: flag state not in sync with the plane")
        return self._states.get(flag_id)

    def confirm_applied(self, flag_id: str, node: str, revision: int) -> None:
        """Revisions are confirmed when they arrive; only a lost confirmation is resent here."""
        if node == self.node and self._confirmed.get(flag_id, 0) < revision:
            task = asyncio.get_running_loop().create_task(self._confirm(flag_id, revision))
            self.runtime.track(task)

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
