"""The control-plane contract every backend satisfies (one shared contract test suite).

Two kinds of traffic, following the measured NATS behaviour in the fleet research:

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
from typing import Protocol, TypeVar

from knightwatch.control.messages import (
    AuditEnvelope,
    Confirmation,
    NodeMetrics,
    NodeStatus,
    StateEntry,
)
from knightwatch.state import Scope

T_contra = TypeVar("T_contra", contravariant=True)


class Handler(Protocol[T_contra]):
    def __call__(self, message: T_contra, /) -> Awaitable[None]: ...


ConnectionHandler = Callable[[bool], Awaitable[None]]
"""Called with False when the plane becomes unreachable and True when it is back."""


class ControlPlaneUnavailable(RuntimeError):
    """The control plane could not be reached or did not answer in time.

    Callers treat this as "uncertain", which in knightwatch means blocked.
    """


class RevisionConflict(RuntimeError):
    """A compare-and-swap lost: somebody changed the entry since it was read."""

    def __init__(self, slot: str, expected: int) -> None:
        self.slot = slot
        self.expected = expected
        super().__init__(f"{slot}: changed since revision {expected}; re-read and decide again")


ABSENT = 0
"""`expected_revision` meaning "only if nobody has ever written this slot"."""


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
        """The stored entry and its revision (`ABSENT` when never written)."""
        ...

    async def states(self) -> dict[str, tuple[StateEntry, int]]:
        """Every stored entry by slot, read from the store of record (used to resync)."""
        ...

    async def subscribe_states(self, handler: Handler[StateEntry]) -> None: ...

    # --- confirmations -----------------------------------------------------
    async def confirm(self, confirmation: Confirmation) -> None: ...

    async def subscribe_confirmations(self, handler: Handler[Confirmation]) -> None: ...

    # --- membership --------------------------------------------------------
    async def heartbeat(self, status: NodeStatus) -> None:
        """Fast path: announce liveness to whoever listens now."""
        ...

    async def put_member(self, status: NodeStatus) -> None:
        """Durable path: the membership record `members()` reads back."""
        ...

    async def members(self) -> list[NodeStatus]: ...

    async def subscribe_heartbeats(self, handler: Handler[NodeStatus]) -> None: ...

    # --- metrics and audit -------------------------------------------------
    async def publish_metrics(self, metrics: NodeMetrics) -> None: ...

    async def subscribe_metrics(self, handler: Handler[NodeMetrics]) -> None: ...

    async def append_audit(self, envelope: AuditEnvelope) -> int:
        """Store a flight-recorder record in the fleet stream; returns its stream sequence."""
        ...

    async def audit(self, start_seq: int = 1, limit: int = 1000) -> list[tuple[int, AuditEnvelope]]:
        """Records from `start_seq` on, in stream order."""
        ...
