"""The fleet inside a replay: the live node runtime, kill switch and supervisor, on sim time.

The `kill_switch` and `supervisor` layers never halt a Guard themselves: they
run `SimulatedFleet`, every node's Guard inside a real `NodeRuntime` on a
`MemoryControlPlane`, the real `KillSwitch`, and the real `Supervisor` behind
its `SupervisorService`. A halt reaches a Guard the way it does live (kill
switch, plane, node runtime, Guard) and is confirmed back.

A replay is synchronous and runs on a `SimClock`. This wraps the live
components around the replay's Guards on a `MemoryFabric` and steps them
explicitly: `step()` renews leases (a heartbeat per call) and, every
`metrics_interval_s` of simulated time, publishes each node's metrics to the
supervisor, which halts through the kill switch exactly as it does live.

With a `FleetAdmission`, the live `AdmissionService` runs on the same fabric
and every node runtime has an `Attestor`: a node joins by attesting what it
runs, and a refused node takes no lease and cannot be armed because its
runtime says so; nodes re-attest every `attest_s` of simulated time and when
the target release changes (`set_target`, which is what a rollback is).
A resume goes through `SimulatedRamp`: the ramp record stored first, every
node's runtime applying the stage's limits, the resume, then the live
controller's own `RampWatch` deciding the stages and the trip on the same
metrics and stored halts. Nothing here re-implements a rule (principle 1 in
docs/architecture.md); only the clock and the transport differ. Trust too: the
replay provisions a roster (`trust.Kit`) on the fabric, every node follows and
verifies it, every kill is signed and every resume co-signed by a second person
and checked by the same code as on a live fleet. Coroutines run to completion
on a private event loop, which never waits on real time because memory
delivery is inline.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import msgspec

from knightwatch.clock import NS_PER_S, SimClock, to_ns
from knightwatch.control.fleet.admission import AdmissionService, request_target
from knightwatch.control.fleet.flagstore import fleet_snapshot
from knightwatch.control.fleet.killswitch import CommandResult, KillSwitch
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.rollout import rollout_metrics
from knightwatch.control.fleet.supervisor import Action, NodeHealth, Supervisor, SupervisorConfig
from knightwatch.control.fleet.supervisor_service import SupervisorService
from knightwatch.control.node.attestor import Attestor
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeError, NodeRuntime
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.rosters import publish_roster
from knightwatch.control.plane.wire import (
    ENCODER,
    NodeMetrics,
    RampRecord,
    StateEntry,
    TargetReply,
    Verdict,
    slot_of,
)
from knightwatch.flags.fleet import FleetMember, StaticFleetView
from knightwatch.flags.rollout import Metrics
from knightwatch.flags.schema import RegistrySchema
from knightwatch.guard import Guard
from knightwatch.incident.ramp import RampPlan, RampWatch
from knightwatch.limits import ramp_percent, scaled_percent
from knightwatch.release.dsse import Envelope
from knightwatch.release.signing import TrustPolicy
from knightwatch.state import Scope, TradingState
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role
from knightwatch.trust.store import TrustStore
from knightwatch.trust.target import approve_target

T = TypeVar("T")
_SETTLE_TIMEOUT_S = 10.0


class FleetAdmission(NamedTuple):
    """Release admission for a simulated fleet: the live service's inputs and each node's
    attestor (its enrolled key and a measurement of what it really runs)."""

    trust: TrustPolicy
    registry: RegistrySchema
    target: Envelope
    attestors: Mapping[str, Attestor]
    attest_s: float = 5.0


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


class SimulatedFleet:
    """The live fleet components around a replay's Guards, stepped on its `SimClock`.

    The replay calls `ticks_before` to learn the heartbeat instants due in a
    step and `step` at each (a heartbeat from every node, metrics when due,
    re-attestation when due), which returns the supervisor's new actions with
    the kill switch's result for each.
    """

    def __init__(
        self,
        clock: SimClock,
        guards: Sequence[Guard],
        *,
        policy: LeasePolicy | None = None,
        supervisor: SupervisorConfig | None = None,
        metrics_interval_s: float = 0.2,
        supervisor_acts: bool = True,
        admission: FleetAdmission | None = None,
    ) -> None:
        """`supervisor` runs the Supervisor on the nodes' metrics; with `supervisor_acts`
        False it only watches (its `health()` feeds rollout gates) and halts nothing.
        `admission` judges every node's attestation before it may take a lease."""
        self.clock = clock
        self.policy = policy or LeasePolicy()
        self._tick_ns = self.policy.heartbeat_ns
        self._next_tick = clock.monotonic_ns()
        self.fabric = MemoryFabric()
        self._loop = asyncio.new_event_loop()
        self._metrics_ns = to_ns(metrics_interval_s)
        self._next_metrics = clock.monotonic_ns()  # the first step reports a baseline
        operator = MemoryControlPlane(self.fabric)
        self._run(operator.connect())
        self._operator = operator
        node_keys = {n: a.key for n, a in admission.attestors.items()} if admission else {}
        self.kit = Kit(
            now_ns=0,
            people={"operator": (Role.OPERATOR, Role.APPROVER), "approver": (Role.APPROVER,)},
            nodes=[g.node for g in guards],
            node_keys=node_keys,
        )
        for envelope in self.kit.envelopes:
            self._run(publish_roster(operator, envelope))
        self.admission: AdmissionService | None = None
        self._attest_ns = 0
        self._next_attest = 0
        if admission is not None:
            self._start_admission(admission)
        self.nodes: list[NodeRuntime] = []
        for guard in guards:
            plane = MemoryControlPlane(self.fabric)
            self._run(plane.connect())
            attestor = admission.attestors[guard.node] if admission is not None else None
            node = NodeRuntime(
                guard,
                plane,
                clock=clock,
                trust=TrustStore(self.kit.anchor),
                signer=self.kit.signer(guard.node),
                policy=self.policy,
                attestor=attestor,
                attest_s=admission.attest_s if admission is not None else 5.0,
            )
            self._run(node.join())
            self.nodes.append(node)
        self._by_id = {n.node_id: n for n in self.nodes}
        self._published: dict[str, NodeMetrics] = {}
        self._run(operator.subscribe_metrics(self._on_published))
        self._run(operator.subscribe_states(self._on_state))
        self.ramp: SimulatedRamp | None = None
        self.killswitch = KillSwitch(operator, clock, self.kit.signer("operator"), self.kit.store())
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
                    KillSwitch(sup_plane, clock, self.kit.signer("supervisor"), self.kit.store()),
                    Pager(),
                    confirm_timeout_s=0.01,
                )
                self._run(self.service.start())
            else:
                self._run(sup_plane.subscribe_metrics(self._watch))

    def _start_admission(self, admission: FleetAdmission) -> None:
        """The admission service on its own connection, the roster enrolled and the target
        set through the service's request subject, as `knightwatch admission` does."""
        plane = MemoryControlPlane(self.fabric)
        self._run(plane.connect())
        self.admission = AdmissionService(
            plane,
            admission.trust,
            admission.registry,
            clock=self.clock,
            roster=TrustStore(self.kit.anchor),
        )
        self._run(self.admission.start())
        reply = self.set_target(admission.target, "fleet target release")
        if not reply.accepted:
            why = "; ".join(str(f) for f in reply.findings)
            raise ValueError(f"admission target {reply.release_id or '?'} refused: {why}")
        self._attest_ns = round(admission.attest_s * NS_PER_S)
        self._next_attest = self.clock.monotonic_ns() + self._attest_ns

    def set_target(self, envelope: Envelope, reason: str) -> TargetReply:
        """Ask the admission service to make `envelope` the fleet's target release, as two
        people do: requested and signed by the replay's operator, approved by its approver.
        Nodes re-attest against it before this returns (a refused target changes nothing)."""
        now = self.clock.time_ns()
        approval = approve_target(envelope, self.kit.signer("approver"), "operator", reason, now)
        requested = request_target(
            self._operator,
            envelope,
            self.kit.signer("operator"),
            reason,
            now_ns=now,
            approval=approval,
            timeout_s=1.0,
        )
        reply = self._run(requested)
        self._run(self._settle())
        return reply

    def admitted(self, node_id: str) -> bool:
        """Whether the node's runtime holds a fresh verdict admitting it on the target."""
        return self.runtime(node_id).release_admitted

    def attest_all(self) -> None:
        """Every node attests now (after its code changed, as a deploy's restart would)."""
        for node in self.nodes:
            self._run(node.attest_once())

    def members(self) -> Sequence[FleetMember]:
        """The fleet as the control plane sees it: membership and stored verdicts."""
        return self.fleet().members()

    def fleet(self) -> StaticFleetView:
        """The fleet view the flag gate judges against, from membership and stored verdicts."""
        return self._run(fleet_snapshot(self._operator, self.clock))

    def runtime(self, node_id: str) -> NodeRuntime:
        return self._by_id[node_id]

    def arm(self, node_id: str, pre_open_errors: int) -> str | None:
        """Report the node's pre-open errors to its runtime, then arm through it; the
        runtime's refusal (why it stays disarmed) or None once armed."""
        runtime = self.runtime(node_id)
        for i in range(pre_open_errors):
            runtime.report_error(f"pre-open error {i + 1} of {pre_open_errors} (scenario)")
        try:
            runtime.arm("replay")
        except NodeError as exc:
            return str(exc)
        return None

    def verdict(self, node_id: str) -> Verdict | None:
        """The admission service's last verdict on the node, as its runtime holds it."""
        return self.runtime(node_id).verdict

    async def _settle(self) -> None:
        """Let background work the last call started (re-attestations) finish."""
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me]
        if pending:
            await asyncio.wait(pending, timeout=_SETTLE_TIMEOUT_S)

    async def _on_published(self, metrics: NodeMetrics) -> None:
        self._published[metrics.node_id] = metrics
        if self.ramp is not None:
            self.ramp.watch.on_metrics(metrics)

    async def _on_state(self, entry: StateEntry) -> None:
        if self.ramp is not None:
            self.ramp.watch.on_state(entry)

    def rollout_metrics(self) -> Metrics:
        """What a rollout judges each node on: the same function the live driver uses."""
        members = self._run(self._operator.members())
        return rollout_metrics(self.health(), self._published, members)

    async def _watch(self, metrics: NodeMetrics) -> None:
        assert self.supervisor is not None
        self.supervisor.record(metrics)

    def health(self) -> dict[str, NodeHealth]:
        """The supervisor's read-only view of every node (empty without a supervisor)."""
        return self.supervisor.health() if self.supervisor is not None else {}

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def ticks_before(self, t_ns: int) -> list[int]:
        """The heartbeat instants due before `t_ns` (each is returned once)."""
        out = []
        while self._next_tick < t_ns:
            out.append(self._next_tick)
            self._next_tick += self._tick_ns
        return out

    def step(self) -> list[tuple[Action, CommandResult]]:
        """One control-plane tick at the clock's current time: heartbeats, metrics and
        re-attestation when due; the supervisor's new actions, each with its result."""
        before = len(self.service.results) if self.service else 0
        now = self.clock.monotonic_ns()
        if self._attest_ns and now >= self._next_attest:
            self._next_attest = now + self._attest_ns
            for node in self.nodes:
                self._run(node.attest_once())
        publish = now >= self._next_metrics
        if publish:
            self._next_metrics = now + self._metrics_ns
        self._run(self._tick(publish))
        return list(self.service.results[before:]) if self.service else []

    async def _tick(self, publish: bool) -> None:
        """Every node's heartbeat, then (when due) its metrics, in node order: one pass of
        the loop per tick rather than one per node (the same order, a fraction of the cost)."""
        for node in self.nodes:
            await node.heartbeat_once()
        if publish:
            for node in self.nodes:
                await node.publish_once()

    def kill(
        self,
        scope: Scope,
        key: str,
        reason: str,
        actor: str = "operator",
        state: TradingState = TradingState.HALTED,
    ) -> CommandResult:
        """An operator's kill at the current simulated instant (confirmed before it returns).

        Signed by the replay's operator identity; `actor` (the layer that asked) goes into
        the reason, since who acted is whoever signed."""
        why = reason if actor == "operator" else f"{actor}: {reason}"
        return self._run(self.killswitch.kill(scope, key, why, timeout_s=0.01, state=state))

    def resume(self, scope: Scope, key: str, reason: str, actor: str) -> CommandResult:
        """A resume at the current simulated instant, requested by the replay's operator
        and co-signed by its approver (two people, as every resume needs)."""
        why = reason if actor == "operator" else f"{actor}: {reason}"
        approver = self.kit.signer("approver")
        return self._run(
            self.killswitch.resume(scope, key, why, timeout_s=0.01, approvers=(approver,))
        )

    def put_ramp(self, record: RampRecord) -> None:
        """Store a ramp record as the live controller does (signed by the replay's
        operator); nodes verify and apply it at once."""
        signed = record.signed(self.killswitch.signer.key)
        self._run(
            self._operator.put_record(
                Bucket.RAMP, slot_of(record.scope, record.key), ENCODER.encode(signed)
            )
        )
        self._run(self._settle())

    def close(self) -> None:
        for node in self.nodes:
            self._run(node.stop())
        self._loop.close()


class SimulatedRamp:
    """One resume through the ramp on a `SimulatedFleet`, stepped on its clock.

    What `RampController.resume` does live, without its real-time waits: store
    stage one, check every node's Guard holds the stage's limits (otherwise no
    resume), resume, then on each control tick move to the stage `RampWatch`
    says is due and trip (one kill of the scope) on what it says trips it.
    """

    def __init__(
        self,
        fleet: SimulatedFleet,
        plan: RampPlan,
        scope: Scope,
        key: str,
        reason: str,
        actor: str,
    ) -> None:
        self.fleet = fleet
        self.plan = plan
        self.actor = actor
        now = fleet.clock.time_ns()
        # named by what it resumes and when, on the simulated clock: a random id made two
        # runs of one scenario and seed print different events, control actions and JSON
        ramp_id = hashlib.sha256(f"{scope.value}\0{key}\0{now}".encode()).hexdigest()[:12]
        self.record = RampRecord(
            scope,
            key,
            ramp_id,
            0,
            plan.fractions,
            plan.stages[0].fraction,
            "ramping",
            actor,
            reason,
            now,
        )
        nodes = [n.node_id for n in fleet.nodes]
        self.watch = RampWatch(scope, key, plan, now, nodes)
        self.resumed: CommandResult | None = None
        self.trip: CommandResult | None = None
        self.done = False
        self.refused = ""

    def start(self) -> CommandResult | None:
        """Stage one stored and applied by every node, then the resume (None if refused)."""
        fleet = self.fleet
        fleet.put_ramp(self.record)
        stage = ramp_percent(self.record.fraction)  # a node at it or tighter applied it
        missing = [n.node_id for n in fleet.nodes if scaled_percent(n.guard.limits.version) > stage]
        if missing:
            self.refused = f"stage 1 limits not applied by {', '.join(missing)}; resume not issued"
            self._close("tripped", self.refused)
            return None
        fleet.ramp = self
        self.resumed = fleet.resume(
            self.record.scope,
            self.record.key,
            f"{self.record.reason} [ramp {self.record.ramp_id}]",
            self.actor,
        )
        self.watch.start_ns = self.resumed.entry.issued_ns + 1
        return self.resumed

    @property
    def stage(self) -> int:
        return self.record.stage

    def step(self) -> CommandResult | None:
        """After a control tick: the trip's kill if it tripped now, else None."""
        if self.done:
            return None
        if self.watch.tripped:
            self.trip = self.fleet.kill(
                self.record.scope,
                self.record.key,
                f"ramp tripped: {self.watch.tripped}",
                actor="ramp",
            )
            self._close("tripped", self.watch.tripped)
            return self.trip
        now = self.fleet.clock.time_ns()
        stage = self.watch.stage_at(now)
        if stage is None:
            self.record = msgspec.structs.replace(
                self.record, stage=len(self.plan.stages) - 1, fraction=1.0
            )
            self._close("done", "")
        elif stage != self.record.stage:
            self.record = msgspec.structs.replace(
                self.record, stage=stage, fraction=self.plan.stages[stage].fraction, since_ns=now
            )
            self.fleet.put_ramp(self.record)
        return None

    def _close(self, status: str, why: str) -> None:
        self.done = True
        if self.fleet.ramp is self:
            self.fleet.ramp = None
        self.record = msgspec.structs.replace(
            self.record, status=status, trip_reason=why, since_ns=self.fleet.clock.time_ns()
        )
        self.fleet.put_ramp(self.record)
