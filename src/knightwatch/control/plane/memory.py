"""In-process control plane: deterministic, no threads, no sockets.

The replay and the unit tests run the same node runtime, kill switch and
supervisor on this backend that the live fleet runs on NATS; only the transport
differs (principle 1 in docs/architecture.md). A `MemoryFabric` plays the server: it holds the
durable state, and every `MemoryControlPlane` is one client connection to it.
Messages are delivered inline, in subscription order, before the publishing
call returns, so a simulated run is reproducible step by step.
"""

from __future__ import annotations

from typing import Any

from knightwatch.clock import Clock
from knightwatch.control.plane.protocol import (
    STATE_HISTORY,
    Bucket,
    ConnectionHandler,
    ControlPlaneUnavailable,
    Handler,
    Record,
    Responder,
    RevisionConflict,
    Unsubscribe,
)
from knightwatch.control.plane.wire import (
    AuditEnvelope,
    Confirmation,
    NodeMetrics,
    NodeStatus,
    StateEntry,
    slot_of,
)
from knightwatch.state import Scope


class _Sub:
    """One live subscription of a connection to a topic."""

    __slots__ = ("dropped", "handler", "plane")

    def __init__(self, plane: MemoryControlPlane, handler: Handler[Any]) -> None:
        self.plane = plane
        self.handler = handler
        self.dropped = False


class MemoryFabric:
    """The shared "server": durable buckets and streams plus live subscriptions.

    `set_reachable(False)` simulates losing the server (every connection sees a
    disconnect, every call fails); durable data survives it, as JetStream's
    file store does.

    `clock` is the "server's" clock: each kill-state and record write is stamped with
    its time (`stored_ns`, `record_stored_ns`), as JetStream stamps each message. Without
    one (a replay whose writers all read the one simulated clock) a kill-state write is
    stamped with its issue time and a record write with none (`keeps_write_times`).
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.reachable = True
        self.clock = clock
        self._revision = 0
        self._stored_ns: dict[int, tuple[str, int]] = {}
        """Per kill-state revision, its slot and when the fabric wrote it."""
        self._states: dict[str, tuple[StateEntry, int]] = {}
        self._history: dict[str, list[tuple[StateEntry, int]]] = {}
        """Per slot, its last `STATE_HISTORY` writes, oldest first (as the NATS bucket keeps)."""
        self._members: dict[str, NodeStatus] = {}
        self._audit: list[AuditEnvelope] = []
        self._audit_ids: dict[tuple[str, str, int], int] = {}
        self._records: dict[Bucket, dict[str, tuple[bytes, int]]] = {b: {} for b in Bucket}
        self._record_ns: dict[int, tuple[Bucket, str, int]] = {}
        """Per record revision, its bucket, key and when the fabric wrote it (with a clock)."""
        self._responders: dict[str, tuple[MemoryControlPlane, Responder]] = {}
        self._subs: dict[str, list[_Sub]] = {}
        self._planes: list[MemoryControlPlane] = []

    async def set_reachable(self, reachable: bool) -> None:
        if reachable == self.reachable:
            return
        self.reachable = reachable
        for plane in list(self._planes):
            await plane._set_connected(reachable)

    def next_revision(self) -> int:
        self._revision += 1
        return self._revision

    async def deliver(self, topic: str, message: object) -> None:
        for sub in list(self._subs.get(topic, ())):
            # one dropped by an earlier handler of this message is not called (as on NATS)
            if sub.plane.connected and not sub.dropped:
                await sub.handler(message)

    def attach(self, plane: MemoryControlPlane) -> None:
        self._planes.append(plane)

    def detach(self, plane: MemoryControlPlane) -> None:
        if plane in self._planes:
            self._planes.remove(plane)
        for topic, subs in self._subs.items():
            self._subs[topic] = [s for s in subs if s.plane is not plane]
        self._responders = {s: r for s, r in self._responders.items() if r[0] is not plane}

    def subscribe(
        self, topic: str, plane: MemoryControlPlane, handler: Handler[Any]
    ) -> Unsubscribe:
        sub = _Sub(plane, handler)
        self._subs.setdefault(topic, []).append(sub)

        async def unsubscribe() -> None:
            # this subscription's own entry (the same handler may be subscribed twice)
            sub.dropped = True
            subs = self._subs.get(topic, [])
            self._subs[topic] = [s for s in subs if s is not sub]

        return unsubscribe


class MemoryControlPlane:
    """One client connection to a `MemoryFabric`."""

    def __init__(self, fabric: MemoryFabric) -> None:
        self._fabric = fabric
        self._connected = False
        self._open = False
        self._connection_handlers: list[ConnectionHandler] = []

    @property
    def connected(self) -> bool:
        return self._connected

    def on_connection(self, handler: ConnectionHandler) -> None:
        self._connection_handlers.append(handler)

    async def _set_connected(self, connected: bool) -> None:
        if not self._open or connected == self._connected:
            return
        self._connected = connected
        for handler in list(self._connection_handlers):
            await handler(connected)

    def _require(self) -> MemoryFabric:
        if not self._connected or not self._fabric.reachable:
            raise ControlPlaneUnavailable("control plane unreachable (memory fabric down)")
        return self._fabric

    async def connect(self) -> None:
        if not self._fabric.reachable:
            raise ControlPlaneUnavailable("control plane unreachable (memory fabric down)")
        self._open = True
        self._connected = True
        self._fabric.attach(self)

    async def close(self) -> None:
        self._open = False
        self._connected = False
        self._fabric.detach(self)

    async def ping(self, timeout_s: float) -> None:
        self._require()

    async def announce_state(self, entry: StateEntry) -> None:
        await self._require().deliver("state", entry)

    async def put_state(self, entry: StateEntry, expected_revision: int | None = None) -> int:
        fabric = self._require()
        slot = entry.slot
        current = fabric._states.get(slot)
        current_rev = current[1] if current else 0
        if expected_revision is not None and expected_revision != current_rev:
            raise RevisionConflict(slot, expected_revision)
        revision = fabric.next_revision()
        fabric._states[slot] = (entry, revision)
        at = fabric.clock.time_ns() if fabric.clock is not None else entry.issued_ns
        fabric._stored_ns[revision] = (slot, at)
        kept = fabric._history.setdefault(slot, [])
        kept.append((entry, revision))
        for _, dropped in kept[:-STATE_HISTORY]:
            fabric._stored_ns.pop(dropped, None)
        del kept[:-STATE_HISTORY]
        await fabric.deliver("state", entry)
        return revision

    async def get_state(self, scope: Scope, key: str) -> tuple[StateEntry | None, int]:
        found = self._require()._states.get(slot_of(scope, key))
        return (found[0], found[1]) if found else (None, 0)

    async def previous_state(
        self, scope: Scope, key: str, revision: int
    ) -> tuple[StateEntry | None, int] | None:
        kept = await self.state_history(scope, key, revision)
        return kept[-1] if kept else None

    async def state_history(
        self, scope: Scope, key: str, revision: int
    ) -> list[tuple[StateEntry | None, int]]:
        kept = self._require()._history.get(slot_of(scope, key), [])
        return [(e, rev) for e, rev in kept if rev < revision]

    async def stored_ns(self, scope: Scope, key: str, revision: int) -> int | None:
        found = self._require()._stored_ns.get(revision)
        return found[1] if found is not None and found[0] == slot_of(scope, key) else None

    async def states(self) -> dict[str, tuple[StateEntry | None, int]]:
        return {slot: (e, rev) for slot, (e, rev) in self._require()._states.items()}

    async def subscribe_states(self, handler: Handler[StateEntry]) -> Unsubscribe:
        return self._require().subscribe("state", self, handler)

    async def confirm(self, confirmation: Confirmation) -> None:
        await self._require().deliver("confirm", confirmation)

    async def subscribe_confirmations(self, handler: Handler[Confirmation]) -> Unsubscribe:
        return self._require().subscribe("confirm", self, handler)

    async def heartbeat(self, status: NodeStatus) -> None:
        fabric = self._require()
        await fabric.deliver("heartbeat", status)
        await fabric.deliver(f"heartbeat:{status.node_id}", status)

    async def put_member(self, status: NodeStatus) -> None:
        self._require()._members[status.node_id] = status

    async def members(self) -> list[NodeStatus]:
        return sorted(self._require()._members.values(), key=lambda s: s.node_id)

    async def subscribe_heartbeats(
        self, handler: Handler[NodeStatus], node_id: str | None = None
    ) -> Unsubscribe:
        topic = "heartbeat" if node_id is None else f"heartbeat:{node_id}"
        return self._require().subscribe(topic, self, handler)

    async def publish_metrics(self, metrics: NodeMetrics) -> None:
        await self._require().deliver("metrics", metrics)

    async def subscribe_metrics(self, handler: Handler[NodeMetrics]) -> Unsubscribe:
        return self._require().subscribe("metrics", self, handler)

    async def append_audit(self, envelope: AuditEnvelope) -> int:
        fabric = self._require()
        # a retry of an envelope that landed lands once, as JetStream's Nats-Msg-Id makes it
        key = (envelope.node_id, envelope.instance, envelope.seq)
        seq = fabric._audit_ids.get(key)
        if seq is None:
            fabric._audit.append(envelope)
            seq = fabric._audit_ids[key] = len(fabric._audit)
        return seq

    async def audit(self, start_seq: int = 1, limit: int = 1000) -> list[tuple[int, AuditEnvelope]]:
        records = self._require()._audit
        first = max(start_seq, 1)
        return [(i, records[i - 1]) for i in range(first, min(len(records), first + limit - 1) + 1)]

    async def put_record(
        self, bucket: Bucket, key: str, value: bytes, expected_revision: int | None = None
    ) -> int:
        fabric = self._require()
        records = fabric._records[bucket]
        current_rev = records[key][1] if key in records else 0
        if expected_revision is not None and expected_revision != current_rev:
            raise RevisionConflict(f"{bucket}.{key}", expected_revision)
        revision = fabric.next_revision()
        records[key] = (value, revision)
        if fabric.clock is not None:
            fabric._record_ns[revision] = (bucket, key, fabric.clock.time_ns())
        await fabric.deliver(f"record:{bucket}", Record(bucket, key, value, revision))
        return revision

    async def record_stored_ns(self, bucket: Bucket, key: str, revision: int) -> int | None:
        found = self._require()._record_ns.get(revision)
        return found[2] if found is not None and found[:2] == (bucket, key) else None

    @property
    def keeps_write_times(self) -> bool:
        return self._require().clock is not None

    async def get_record(self, bucket: Bucket, key: str) -> tuple[bytes | None, int]:
        found = self._require()._records[bucket].get(key)
        return found if found else (None, 0)

    async def records(self, bucket: Bucket) -> dict[str, tuple[bytes, int]]:
        return dict(self._require()._records[bucket])

    async def subscribe_records(self, bucket: Bucket, handler: Handler[Record]) -> Unsubscribe:
        return self._require().subscribe(f"record:{bucket}", self, handler)

    async def publish(self, subject: str, payload: bytes) -> None:
        await self._require().deliver(f"msg:{subject}", payload)

    async def subscribe(self, subject: str, handler: Handler[bytes]) -> Unsubscribe:
        return self._require().subscribe(f"msg:{subject}", self, handler)

    async def request(self, subject: str, payload: bytes, timeout_s: float) -> bytes:
        served = self._require()._responders.get(subject)
        if served is None or not served[0].connected:
            raise ControlPlaneUnavailable(f"nobody serves {subject}")
        return await served[1](payload)

    async def serve(self, subject: str, responder: Responder) -> None:
        self._require()._responders[subject] = (self, responder)
