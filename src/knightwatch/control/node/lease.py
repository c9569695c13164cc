"""A node's lease: its right to trade, kept alive by heartbeats to the control plane.

The lease is held by the node, not granted by a store, because a store-held
lease would halt the whole fleet for every JetStream leader election (4-9 s
measured); instead the node renews only after a full round trip to the
server succeeds and its kill state is in sync, and lets the Guard's own
deadline stop it when renewals stop. Halting is cheap, resuming is expensive.
"""

from __future__ import annotations

import msgspec

from knightwatch.errors import KnightwatchError

DEFAULT_LEASE_TIMEOUT_S = 0.75
DEFAULT_HEARTBEAT_S = 0.15


class LeaseError(KnightwatchError, ValueError):
    """Lease settings that cannot keep a node safe; names the field and the rule."""


class LeasePolicy(msgspec.Struct, frozen=True):
    """How long a lease lasts and how often a node renews it.

    At least three heartbeats fit in a lease so one late heartbeat (GC pause,
    busy core) does not stop a healthy node, while a lost server still stops it
    within `lease_timeout_s`.
    """

    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S
    heartbeat_s: float = DEFAULT_HEARTBEAT_S

    def __post_init__(self) -> None:
        if not (0.01 <= self.heartbeat_s <= 10):
            raise LeaseError(f"heartbeat_s: must be between 0.01 and 10 (got {self.heartbeat_s})")
        if not (self.lease_timeout_s >= 3 * self.heartbeat_s):
            raise LeaseError(
                f"lease_timeout_s: must be >= 3 x heartbeat_s = {3 * self.heartbeat_s:g} "
                f"(got {self.lease_timeout_s})"
            )
        if self.lease_timeout_s > 60:
            raise LeaseError(f"lease_timeout_s: must be <= 60 (got {self.lease_timeout_s})")

    @property
    def lease_ns(self) -> int:
        return int(self.lease_timeout_s * 1e9)

    @property
    def heartbeat_ns(self) -> int:
        return int(self.heartbeat_s * 1e9)

    @property
    def ping_timeout_s(self) -> float:
        """A round trip slower than this cannot renew a lease before it runs out."""
        return max(self.heartbeat_s, self.lease_timeout_s / 3)
