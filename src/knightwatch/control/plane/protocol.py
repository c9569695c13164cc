"""The control-plane contract every backend satisfies (one shared contract test suite).

Two kinds of traffic, following NATS's measured behaviour (docs/control-plane.md):

* durable state (kill/halt entries, membership) lives in key-value buckets with
  revisions and compare-and-swap, so it survives restarts and two operators
  cannot silently overwrite each other;
* immediate fan-out (kill announcements, confirmations, heartbeats, metrics)
  goes over plain subjects: sub-millisecond, no consensus round in the way, and
  still flowing while a clustered store elects a leader.

A node acts on either path and resyncs from the durable state after every
reconnect, so neither path alone is trusted for correctness.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Protocol, TypeVar, runtime_checkable

import msgspec

from knightwatch.control.plane.wire import (
    AuditEnvelope,
    Confirmation,
    NodeMetrics,
    NodeStatus,
    StateEntry,
)
from knightwatch.errors import KnightwatchError
from knightwatch.state import Scope

T_contra = TypeVar("T_contra", contravariant=True)


class Handler(Protocol[T_contra]):
    def __call__(self, message: T_contra, /) -> Awaitable[None]: ...


ConnectionHandler = Callable[[bool], Awaitable[None]]
"""Called with False when the plane becomes unreachable and True when it is back."""

Responder = Callable[[bytes], Awaitable[bytes]]
"""Answers one request (admission challenges and attestations) with a reply payload."""

Unsubscribe = Callable[[], Awaitable[None]]
"""Drops the subscription a `subscribe_*` call made: its handler is not called again.

Every subscription lives as long as its connection unless dropped. A reader that listens
for a while on a long-lived connection (a preflight or snapshot on a console session's
link, a ramp's watch) drops its own when done: else each run left its handlers on the
connection for good, and every heartbeat called all of them. Calling it again, or after
the connection closed, does nothing; it never raises. Callers that listen for the
connection's life may ignore it."""


class Bucket(StrEnum):
    """Durable record buckets beside the kill-switch state, one concept each.

    Keys are node ids, flag ids or fixed names: NATS KV keys, `[-_=.A-Za-z0-9]`.
    """

    RELEASE = "release"
    """`target`: the fleet's target release envelope (DSSE JSON), set through admission."""
    ROSTER = "roster"
    """`v<version>`: each signed roster version (people, components, keys, roles)."""
    APPROVALS = "approvals"
    """request id -> a pending two-person request and its signatures so far."""
    ADMISSION = "admission"
    """node id -> the admission service's latest `Verdict` on it."""
    FLAGS = "flags"
    """`state.<flag>`, `change.<flag>.<rev>`, `applied.<flag>.<node>`: flag state."""
    ROLLOUTS = "rollouts"
    """flag id -> the latest `RolloutState` for that flag."""
    CHECKPOINTS = "checkpoints"
    """node id -> the node's latest signed flight-recorder checkpoint (DSSE JSON)."""
    RAMP = "ramp"
    """scope slot -> the `RampRecord` of a resume ramping back (the limits nodes apply)."""
    INCIDENT = "incident"
    """`known_good` (the release a kill froze on), `starts.<node>` (a node's recent starts)."""


class Record(msgspec.Struct, frozen=True):
    """One stored record as a subscriber sees it: which bucket and key, value, revision."""

    bucket: Bucket
    key: str
    value: bytes
    revision: int


class ControlPlaneUnavailable(KnightwatchError, RuntimeError):
    """The control plane could not be reached or did not answer in time.

    Callers treat this as "uncertain", which in knightwatch means blocked.
    """


class ControlPlaneRefused(ControlPlaneUnavailable):
    """The control plane answered a write with a refusal: nothing of it is stored (its bucket
    at its byte bound, the server's store full, a value over its bucket's bound, or a
    bucket's last share kept for the stop direction, `RoomKept`).

    Still `ControlPlaneUnavailable` to callers that only know "blocked"; callers that must
    tell "not stored" from "sent, not answered: it may be stored" (a flag change) catch
    this type, never the message's text."""


class RevisionConflict(KnightwatchError, RuntimeError):
    """A compare-and-swap lost: somebody changed the entry since it was read."""

    def __init__(self, slot: str, expected: int) -> None:
        self.slot = slot
        self.expected = expected
        super().__init__(f"{slot}: changed since revision {expected}; re-read and decide again")


ABSENT = 0
"""`expected_revision` meaning "only if nobody has ever written this slot"."""

STATE_HISTORY = 16
"""Writes the store keeps per kill-state slot, the latest included (`previous_state`)."""


class ControlPlane(Protocol):
    @property
    def connected(self) -> bool: ...

    def on_connection(self, handler: ConnectionHandler) -> None: ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self, timeout_s: float) -> None:
        """A full round trip to the server; proves the connection is live, not just open."""
        ...

    # --- kill switch state -------------------------------------------------
    async def announce_state(self, entry: StateEntry) -> None:
        """Fast path: fan the entry out to every subscriber now, without storing it."""
        ...

    async def put_state(self, entry: StateEntry, expected_revision: int | None = None) -> int:
        """Durable path: store the entry and return its revision.

        `expected_revision=None` writes unconditionally (a kill always wins);
        an int writes only if the slot is still at that revision (`ABSENT` for
        never written), else `RevisionConflict`. Stored entries also reach
        `subscribe_states` handlers.
        """
        ...

    async def get_state(self, scope: Scope, key: str) -> tuple[StateEntry | None, int]:
        """The stored entry and its revision (`ABSENT` when never written).

        None with a revision: something is stored there that is not an entry (a
        delete marker, garbage); readers treat that slot as halted (fail closed).
        Entries are returned as stored: readers verify them (`knightwatch.trust`).
        """
        ...

    async def previous_state(
        self, scope: Scope, key: str, revision: int
    ) -> tuple[StateEntry | None, int] | None:
        """What the slot held immediately before its write at `revision`, and its revision.

        A node adopting a stored resume it did not see being written checks here that the
        resume was stored right over the halt it lifts (not replayed over a newer kill).
        None when the store keeps nothing of the slot before `revision` (its first write,
        or older than the last `STATE_HISTORY` writes); None with a revision: a delete
        marker. A value that is no entry reads as `get_state` reads it (a halt).
        """
        ...

    async def state_history(
        self, scope: Scope, key: str, revision: int
    ) -> list[tuple[StateEntry | None, int]]:
        """Every write the store keeps of the slot before `revision`, oldest first, as
        `previous_state` reads each (a node restarting after resumes learns from them
        which kills froze flag changes)."""
        ...

    async def stored_ns(self, scope: Scope, key: str, revision: int) -> int | None:
        """When the store wrote the slot's write at `revision`, by the server's clock (no
        client sets it, unlike an entry's own times): a reader adopting a stored resume
        judges it at this instant (`check_state(stored_ns=...)`). None when the store no
        longer holds that write of the slot."""
        ...

    async def states(self) -> dict[str, tuple[StateEntry | None, int]]:
        """Every stored slot (the store's key) with its entry, or None if it holds no
        decodable entry, and its revision, from the store of record (used to resync)."""
        ...

    async def subscribe_states(self, handler: Handler[StateEntry]) -> Unsubscribe: ...

    # --- confirmations -----------------------------------------------------
    async def confirm(self, confirmation: Confirmation) -> None: ...

    async def subscribe_confirmations(self, handler: Handler[Confirmation]) -> Unsubscribe: ...

    # --- membership --------------------------------------------------------
    async def heartbeat(self, status: NodeStatus) -> None:
        """Fast path: announce liveness to whoever listens now."""
        ...

    async def put_member(self, status: NodeStatus) -> None:
        """Durable path: the membership record `members()` reads back."""
        ...

    async def members(self) -> list[NodeStatus]: ...

    async def subscribe_heartbeats(
        self, handler: Handler[NodeStatus], node_id: str | None = None
    ) -> Unsubscribe:
        """Every node's heartbeats, or with `node_id` that node's only (what a node listens
        to: its own subject is where a second process holding its key shows up, and all a
        node's credentials allow it)."""
        ...

    # --- metrics and audit -------------------------------------------------
    async def publish_metrics(self, metrics: NodeMetrics) -> None: ...

    async def subscribe_metrics(self, handler: Handler[NodeMetrics]) -> Unsubscribe: ...

    async def append_audit(self, envelope: AuditEnvelope) -> int:
        """Store a flight-recorder record in the fleet stream; returns its stream sequence."""
        ...

    async def audit(self, start_seq: int = 1, limit: int = 1000) -> list[tuple[int, AuditEnvelope]]:
        """Records from `start_seq` on, in stream order."""
        ...

    # --- durable records (release, admission, flags, rollouts) ----------------
    async def put_record(
        self, bucket: Bucket, key: str, value: bytes, expected_revision: int | None = None
    ) -> int:
        """Store a record; compare-and-swap like `put_state` when `expected_revision` is given."""
        ...

    async def get_record(self, bucket: Bucket, key: str) -> tuple[bytes | None, int]:
        """The stored value and its revision (`ABSENT` when never written)."""
        ...

    async def records(self, bucket: Bucket) -> dict[str, tuple[bytes, int]]:
        """Every key's latest value and revision, from the store of record."""
        ...

    async def record_stored_ns(self, bucket: Bucket, key: str, revision: int) -> int | None:
        """When the store wrote `key` of `bucket` at `revision`, by the server's clock (no
        client sets it): a reader judges a stored signed record (a roster version) at this
        instant, not at the date its signer chose. None when the store no longer holds
        that write of the key, or keeps no write times (`keeps_write_times`)."""
        ...

    @property
    def keeps_write_times(self) -> bool:
        """Whether the store stamps each write with its own clock (`record_stored_ns`): a
        NATS server does; the in-memory fabric only when given a clock."""
        ...

    async def subscribe_records(self, bucket: Bucket, handler: Handler[Record]) -> Unsubscribe:
        """Every record stored in `bucket` from now on (a core subscription, no consumer)."""
        ...

    # --- plain messages and request/reply --------------------------------------
    async def publish(self, subject: str, payload: bytes) -> None: ...

    async def subscribe(self, subject: str, handler: Handler[bytes]) -> Unsubscribe: ...

    async def request(self, subject: str, payload: bytes, timeout_s: float) -> bytes:
        """One reply from whoever serves `subject`; ControlPlaneUnavailable if nobody answers."""
        ...

    async def serve(self, subject: str, responder: Responder) -> None: ...


@runtime_checkable
class RoomKept(Protocol):
    """A plane whose bounded record buckets keep their last share for the stop direction.

    A bucket at its byte bound refuses every write, a change back to a flag's safe default
    included; so writers that add risk ask `check_room` first and stop short of the bound,
    and the rest stays for the writes that take risk away. A plane without bounds (the
    memory fabric) has nothing to keep."""

    async def check_room(self, bucket: Bucket) -> None:
        """`ControlPlaneRefused` naming the bucket, its bytes and the rule when `bucket` is
        past the share a write away from the safe direction may fill."""
        ...
