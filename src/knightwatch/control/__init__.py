"""The fleet control plane, in three rooms by audience.

- `plane/`: the transport and wire (the `ControlPlane` protocol, its NATS
  JetStream and memory backends, the embedded server, the messages);
- `node/`: the agent inside each trading process (runtime, lease, attestor,
  flags, shipping);
- `fleet/`: the operator's services (kill switch, supervisor, admission,
  rollout, flag store, pager);
- `serve`: one node as a process; `exposition`: Prometheus metrics for nodes
  and the supervisor.

Each room imports only the rooms listed before it; `make lint` checks it.
"""

from knightwatch.control.fleet import KillSwitch, Supervisor
from knightwatch.control.node import NodeRuntime
from knightwatch.control.plane import (
    ControlPlane,
    ControlPlaneUnavailable,
    MemoryControlPlane,
    NatsControlPlane,
)

__all__ = [
    "ControlPlane",
    "ControlPlaneUnavailable",
    "KillSwitch",
    "MemoryControlPlane",
    "NatsControlPlane",
    "NodeRuntime",
    "Supervisor",
]
