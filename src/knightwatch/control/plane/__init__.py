"""The control plane's transport and wire: what every fleet process talks through.

`ControlPlane` is the protocol (durable buckets with compare-and-swap, core
subjects for the fast path); `NatsControlPlane` runs it on NATS JetStream and
`MemoryControlPlane` in memory for the replay and unit tests, with one contract
suite run against both. `wire` holds every message that crosses it, as JSON an
operator can read during an incident; `history` answers the one question of
the store's history that every reader of a stored resume must ask (was it
stored right over the halt it lifts?). Nothing here knows what a node or an
operator does with the messages.
"""

from knightwatch.control.plane.connect import FleetError, control_plane, recorded_url
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import (
    Bucket,
    ControlPlane,
    ControlPlaneRefused,
    ControlPlaneUnavailable,
    Record,
    RevisionConflict,
)
from knightwatch.control.plane.server import EmbeddedNatsServer, ServerError

__all__ = [
    "Bucket",
    "ControlPlane",
    "ControlPlaneRefused",
    "ControlPlaneUnavailable",
    "EmbeddedNatsServer",
    "FleetError",
    "MemoryControlPlane",
    "MemoryFabric",
    "NatsControlPlane",
    "Record",
    "RevisionConflict",
    "ServerError",
    "control_plane",
    "recorded_url",
]
