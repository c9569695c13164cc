"""The operator's fleet services: the kill switch and everything that acts on many nodes.

`KillSwitch` kills a scope and collects each node's confirmation; the
`Supervisor` turns node metrics into automatic halts and pages, and
`SupervisorService` runs it on a live plane; `AdmissionService` judges each
node's attestation against the fleet's target release; `RolloutDriver` runs
staged flag rollouts with health gates; `PlaneFlagStore` keeps flag state with
compare-and-swap. These run in operators' processes, never inside a node.
"""

from knightwatch.control.fleet.admission import AdmissionService
from knightwatch.control.fleet.flagstore import AppliedWaiter, PlaneFlagStore, fleet_snapshot
from knightwatch.control.fleet.killswitch import CommandResult, KillSwitch, KillSwitchError
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.rollout import RolloutDriver, RolloutError, rollout_metrics
from knightwatch.control.fleet.supervisor import (
    Action,
    NodeHealth,
    Supervisor,
    SupervisorConfig,
    gate_metrics,
)
from knightwatch.control.fleet.supervisor_service import SupervisorService

__all__ = [
    "Action",
    "AdmissionService",
    "AppliedWaiter",
    "CommandResult",
    "KillSwitch",
    "KillSwitchError",
    "NodeHealth",
    "Pager",
    "PlaneFlagStore",
    "RolloutDriver",
    "RolloutError",
    "Supervisor",
    "SupervisorConfig",
    "SupervisorService",
    "fleet_snapshot",
    "gate_metrics",
    "rollout_metrics",
]
