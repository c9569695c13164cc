"""A node's flag state: applied the moment it is stored, confirmed, served from memory.

`NodeFlags` is a node's cached view of flag state. It applies each new
revision the moment it is stored, confirms it (fast path and durably), and
serves the OpenFeature provider from memory; it fails closed (unavailable)
while the node is disconnected or not yet resynced. The record layout
(`state_key`, `change_key`, `applied_key`, `FlagApplied`) lives here, below
the operator's flag store, because both sides read and write it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TypeVar

import msgspec

from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.protocol import Bucket, ControlPlane, ControlPlaneUnavailable, Record
from knightwatch.flags.fleet import FleetMember
from knightwatch.flags.state import FlagChange, FlagState, StateUnavailable

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
    """Node first: flag ids hold dots, node ids never do, so a NATS permission can give
    each node `applied.<its id>.>` and nothing of another node's."""
    return f"applied.{node}.{flag_id}"


STATE_DECODER = msgspec.json.Decoder(FlagState)
CHANGE_DECODER = msgspec.json.Decoder(FlagChange)
APPLIED_DECODER = msgspec.json.Decoder(FlagApplied)
ENCODER = msgspec.json.Encoder()


def assemble(flag_id: str, records: dict[str, tuple[bytes, int]]) -> FlagState | None:
    """The flag's state with every node's applied revision, from one bucket snapshot."""
    stored = records.get(state_key(flag_id))
    if stored is None:
        return None
    state = STATE_DECODER.decode(stored[0])
    for key, (value, _) in records.items():
        node, _, flag = key.removeprefix("applied.").partition(".")
        if key.startswith("applied.") and flag == flag_id:
            applied = APPLIED_DECODER.decode(value)
            if applied.node == node and applied.flag_id == flag_id:  # stored under its own name
                state = state.with_applied(applied.node, applied.revision)
    return state


def changes_of(flag_id: str, records: dict[str, tuple[bytes, int]]) -> list[FlagChange]:
    prefix = f"change.{flag_id}."
    found = [CHANGE_DECODER.decode(v) for k, (v, _) in records.items() if k.startswith(prefix)]
    return sorted(found, key=lambda c: c.revision)


async def record_applied(plane: ControlPlane, applied: FlagApplied) -> None:
    """Fast path first (whoever waits on `flags set`), then the durable record for `show`."""
    payload = ENCODER.encode(applied)
    await plane.publish(SUBJECT_APPLIED, payload)
    await plane.put_record(Bucket.FLAGS, applied_key(applied.flag_id, applied.node), payload)


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
                await self._apply(STATE_DECODER.decode(value))
        self._synced = True

    async def _on_record(self, record: Record) -> None:
        if record.key.startswith("state."):
            await self._apply(STATE_DECODER.decode(record.value))

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
