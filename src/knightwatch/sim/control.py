"""The fleet control plane inside a replay: the live kill switch, leases and supervisor.

The `kill_switch` and `supervisor` layers never halt a Guard themselves. They
run `knightwatch.control.simulated.SimulatedControl`: every node's Guard inside
a real `NodeRuntime` on a `MemoryControlPlane`, the real `KillSwitch`, and the
real `Supervisor` behind its `SupervisorService`. The replay steps it on its
`SimClock`: a heartbeat from every node each `control.heartbeat_s` (so leases
are live and a node that stopped renewing would block), metrics each
`control.metrics_s`. A halt reaches a Guard the way it does live (kill switch,
plane, node runtime, Guard) and is confirmed back; only the clock and the
transport differ (DESIGN principle 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from knightwatch.clock import SimClock
from knightwatch.control.fleet.killswitch import CommandResult
from knightwatch.control.fleet.supervisor import Action, SupervisorConfig
from knightwatch.control.node.runtime import NodeError
from knightwatch.control.plane.wire import FLEET_KEY, TargetReply, Verdict
from knightwatch.flags.fleet import FleetMember
from knightwatch.flags.rollout import Metrics
from knightwatch.guard import Guard
from knightwatch.release.dsse import Envelope
from knightwatch.sim.fleet import FleetAdmission, SimulatedControl
from knightwatch.sim.scenario import ControlParams
from knightwatch.state import Scope, TradingState


class ControlAction(msgspec.Struct, frozen=True):
    """One kill-switch command in a replay, by the supervisor or an operator.

    `orders_before` counts the child orders that got out (accepted) before it:
    the halted node's for a node-scope command, the fleet's otherwise.
    `loss_usd` is the loss after the exit had the book been unwound at that instant.
    """

    t_s: float
    actor: str
    rule: str
    scope: str
    key: str
    state: str
    reason: str
    confirmed: list[str]
    missing: list[str]
    orders_before: int
    loss_usd: float


class ReplayControl:
    """`SimulatedControl` around a replay's Guards, ticked at the heartbeat cadence."""

    def __init__(
        self,
        clock: SimClock,
        guards: Sequence[Guard],
        params: ControlParams,
        supervisor: SupervisorConfig | None,
        *,
        supervisor_acts: bool = True,
        admission: FleetAdmission | None = None,
    ) -> None:
        policy = params.policy()
        self.sim = SimulatedControl(
            clock,
            guards,
            policy=policy,
            supervisor=supervisor,
            metrics_interval_s=params.metrics_s,
            supervisor_acts=supervisor_acts,
            admission=admission,
        )
        self._tick_ns = policy.heartbeat_ns
        self._next_tick = clock.monotonic_ns()
        self._seen = 0

    def ticks_before(self, t_ns: int) -> list[int]:
        """The heartbeat instants due before `t_ns` (each is returned once)."""
        out = []
        while self._next_tick < t_ns:
            out.append(self._next_tick)
            self._next_tick += self._tick_ns
        return out

    def tick(self) -> list[tuple[Action, CommandResult]]:
        """Heartbeats (and metrics when due) at the clock's instant; the supervisor's new
        actions with the kill-switch result each one produced."""
        self.sim.step()
        service = self.sim.service
        if service is None:
            return []
        new = service.results[self._seen :]
        self._seen = len(service.results)
        return new

    def arm(self, node_id: str, pre_open_errors: int) -> str | None:
        """Report the node's pre-open errors to its runtime, then arm through it; the
        runtime's refusal (why it stays disarmed) or None once armed."""
        runtime = self.sim.runtime(node_id)
        for i in range(pre_open_errors):
            runtime.report_error(f"pre-open error {i + 1} of {pre_open_errors} (scenario)")
        try:
            runtime.arm("replay")
        except NodeError as exc:
            return str(exc)
        return None

    def admitted(self, node_id: str) -> bool:
        """Whether the node's runtime is admitted on the target release (order flow goes
        only to such members)."""
        return self.sim.admitted(node_id)

    def attest_all(self) -> None:
        self.sim.attest_all()

    def verdict(self, node_id: str) -> Verdict | None:
        """The admission service's last verdict on the node, as its runtime holds it."""
        return self.sim.runtime(node_id).verdict

    def set_target(self, envelope: Envelope, actor: str, reason: str) -> TargetReply:
        """A new fleet target release (a rollback is one) through the admission service."""
        return self.sim.set_target(envelope, actor, reason)

    def members(self) -> Sequence[FleetMember]:
        """The fleet as the control plane sees it: membership and stored verdicts."""
        return self.sim.fleet().members()

    def kill(self, reason: str, actor: str) -> CommandResult:
        """An operator's fleet kill through the kill switch, confirmed before it returns."""
        return self.sim.kill(Scope.FLEET, FLEET_KEY, reason, actor=actor)

    def halt(self, scope: Scope, key: str, reason: str, actor: str) -> CommandResult:
        """A halt requested by another component (a rollout abort), through the kill switch."""
        return self.sim.kill(scope, key, reason, actor=actor)

    def gate_metrics(self) -> Metrics:
        """Every node's health gauges as the control plane's Supervisor computes them, with
        the evidence a rollout needs to promote (orders, admitted, halted) from the plane."""
        return self.sim.rollout_metrics()

    def close(self) -> None:
        self.sim.close()


def action_of(
    result: CommandResult, t_s: float, rule: str, orders_before: int, loss_usd: float
) -> ControlAction:
    e = result.entry
    return ControlAction(
        t_s=round(t_s, 3),
        actor=e.actor,
        rule=rule,
        scope=Scope(e.scope).value,
        key=e.key,
        state=TradingState(e.state).name,
        reason=e.reason,
        confirmed=sorted(result.latencies_ms),
        missing=list(result.missing),
        orders_before=orders_before,
        loss_usd=round(loss_usd, 2) + 0.0,
    )
