"""The control plane inside a replay: same node runtime, kill switch and supervisor, sim time.

A replay is synchronous and runs on a `SimClock`. This wraps the live
components around the replay's Guards on a `MemoryFabric` and steps them
explicitly: `step()` renews leases (a heartbeat per call) and, every
`metrics_interval_s` of simulated time, publishes each node's metrics to the
supervisor, which halts through the kill switch exactly as it does live.
Nothing here re-implements a rule (DESIGN principle 1); only the clock and the
transport differ. Coroutines run to completion on a private event loop, which
never waits on real time because memory delivery is inline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from knightwatch.clock import SimClock
from knightwatch.control.killswitch import CommandResult, KillSwitch
from knightwatch.control.lease import LeasePolicy
from knightwatch.control.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.messages import NodeMetrics
from knightwatch.control.node import NodeRuntime
from knightwatch.control.pager import Pager
from knightwatch.control.supervisor import Action, NodeHealth, Supervisor, SupervisorConfig
from knightwatch.control.supervisor_service import SupervisorService
from knightwatch.guard import Guard
from knightwatch.state import Scope, TradingState

T = TypeVar("T")


class SimulatedControl:
    def __init__(
        self,
        clock: SimClock,
        guards: Sequence[Guard],
        *,
        policy: LeasePolicy | None = None,
        supervisor: SupervisorConfig | None = None,
        metrics_interval_s: float = 0.2,
        supervisor_acts: bool = True,
    ) -> None:
        """`supervisor` runs the Supervisor on the nodes' metrics; with `supervisor_acts`
        False it only watches (its `health()` feeds rollout gates) and halts nothing."""
        self.clock = clock
        self.policy = policy or LeasePolicy()
        self.fabric = MemoryFabric()
        self._loop = asyncio.new_event_loop()
        self._metrics_ns = int(metrics_interval_s * 1e9)
        self._next_metrics = clock.monotonic_ns()  # the first step reports a baseline
        self.nodes: list[NodeRuntime] = []
        for guard in guards:
            plane = MemoryControlPlane(self.fabric)
            self._run(plane.connect())
            node = NodeRuntime(guard, plane, clock=clock, policy=self.policy)
            self._run(node.join())
            self.nodes.append(node)
        operator = MemoryControlPlane(self.fabric)
        self._run(operator.connect())
        self.killswitch = KillSwitch(operator, clock, actor="operator")
        self.service: SupervisorService | None = None
        self.supervisor: Supervisor | None = None
        if supervisor is not None:
            sup_plane = MemoryControlPlane(self.fabric)
            self._run(sup_plane.connect())
            self.supervisor = Supervisor(supervisor, clock)
            if supervisor_acts:
                self.service = SupervisorService(
                    sup_plane,
                    self.supervisor,
                    KillSwitch(sup_plane, clock, "supervisor"),
                    Pager(),
                    confirm_timeout_s=0.01,
                )
                self._run(self.service.start())
            else:
                self._run(sup_plane.subscribe_metrics(self._watch))

    async def _watch(self, metrics: NodeMetrics) -> None:
        assert self.supervisor is not None
        self.supervisor.record(metrics)

    def health(self) -> dict[str, NodeHealth]:
        """The supervisor's read-only view of every node (empty without a supervisor)."""
        return self.supervisor.health() if self.supervisor is not None else {}

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def step(self) -> list[Action]:
        """One control-plane tick at the clock's current time; returns new supervisor actions."""
        before = len(self.service.results) if self.service else 0
        for node in self.nodes:
            self._run(node.heartbeat_once())
        now = self.clock.monotonic_ns()
        if now >= self._next_metrics:
            self._next_metrics = now + self._metrics_ns
            for node in self.nodes:
                self._run(node.publish_once())
        return [a for a, _ in self.service.results[before:]] if self.service else []

    def kill(
        self,
        scope: Scope,
        key: str,
        reason: str,
        actor: str = "operator",
        state: TradingState = TradingState.HALTED,
    ) -> CommandResult:
        """An operator's kill at the current simulated instant (confirmed before it returns)."""
        self.killswitch.actor = actor
        return self._run(self.killswitch.kill(scope, key, reason, timeout_s=0.01, state=state))

    def close(self) -> None:
        for node in self.nodes:
            self._run(node.stop())
        self._loop.close()
