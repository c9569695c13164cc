"""`Rollout`: a flag leaves its safe default one observed stage at a time.

Had SMARS gone on for one server first, with a gate on that server's order
rate against the fleet, the eighth server would have tripped it in seconds.
A rollout is a clock-driven state machine: `step(metrics)` judges the nodes
already exposed against the health gates, promotes after the stage's hold time
when they are healthy, and aborts when they are not.

Healthy is not the same as proven. A canary that sent no order passes every
gate, so promotion also needs evidence: at least `min_orders_per_node` orders
from every exposed node since the stage began, and every exposed node admitted
and not halted. Until then the rollout holds; it never promotes on silence, a
fleet kill, or a node the control plane does not trust. It returns actions instead
of performing them, so the replay, the supervisor and the CLI drive the same
logic; `RolloutRunner` applies them through the activation gate.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Protocol

import msgspec

from knightwatch.clock import NS_PER_S, Clock
from knightwatch.errors import quoted
from knightwatch.flags.activation import ActivationGate, ActivationRequest
from knightwatch.flags.fleet import FleetMember
from knightwatch.state import Scope

log = logging.getLogger(__name__)

Metrics = Mapping[str, Mapping[str, float]]
"""node -> metric name -> value, as the supervisor reports them."""

ORDERS = "orders"
"""Evidence: orders the node has sent through its Guard since it started (cumulative)."""
ADMITTED = "admitted"
"""Evidence: 1.0 while the node holds its admission and lease, else 0.0."""
HALTED = "halted"
"""Evidence: 1.0 while the node (or the fleet) is not ACTIVE for it, else 0.0."""


class Stage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Exactly one of `nodes` (a count) or `fraction` (of the fleet) sizes the stage."""

    name: str
    hold_s: float
    nodes: int = 0
    fraction: float = 0.0

    def __post_init__(self) -> None:
        # NaN passes every comparison (a NaN hold never ends, a NaN fraction sizes nothing)
        for field, value in (("hold_s", self.hold_s), ("fraction", self.fraction)):
            if not math.isfinite(value):
                raise ValueError(
                    f"stage {quoted(self.name)}: {field} must be a finite number, got {value}"
                )
        if self.nodes < 0 or self.fraction < 0:  # -1 nodes read as 1 node, the fraction ignored
            raise ValueError(
                f"stage {quoted(self.name)}: nodes and fraction must not be negative "
                f"(got nodes={self.nodes}, fraction={self.fraction})"
            )
        if (self.nodes > 0) == (self.fraction > 0):
            raise ValueError(f"stage {quoted(self.name)}: set exactly one of nodes>0 or fraction>0")
        if self.fraction > 1.0:
            raise ValueError(
                f"stage {quoted(self.name)}: fraction must be <= 1, got {self.fraction}"
            )
        if self.hold_s < 0:
            raise ValueError(f"stage {quoted(self.name)}: hold_s must be >= 0, got {self.hold_s}")
        if not math.isfinite(self.hold_s * NS_PER_S):  # `step` counts the hold in nanoseconds
            raise ValueError(
                f"stage {quoted(self.name)}: hold_s {self.hold_s:g} is too long to count "
                "in nanoseconds"
            )

    def size(self, fleet_size: int) -> int:
        wanted = self.nodes if self.nodes else math.ceil(self.fraction * fleet_size)
        return max(1, min(fleet_size, wanted))


class HealthGate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A bound on one supervisor metric for every exposed node; missing data fails."""

    metric: str
    max: float | None = None
    min: float | None = None

    def __post_init__(self) -> None:
        if self.max is None and self.min is None:
            raise ValueError(f"gate {quoted(self.metric)}: set max, min or both")
        for field, bound in (("max", self.max), ("min", self.min)):
            if bound is not None and not math.isfinite(bound):
                # a NaN bound is never breached: the gate would pass anything
                raise ValueError(
                    f"gate {quoted(self.metric)}: {field} must be a finite number, got {bound}"
                )

    def breach(self, node: str, metrics: Metrics) -> str | None:
        value = metrics.get(node, {}).get(self.metric)
        if value is None or math.isnan(value):
            return f"{node}: no {self.metric} reported"
        if self.max is not None and value > self.max:
            return f"{node}: {self.metric}={value:g} > {self.max:g}"
        if self.min is not None and value < self.min:
            return f"{node}: {self.metric}={value:g} < {self.min:g}"
        return None


class HaltTargets(StrEnum):
    """Which nodes an abort halts (with `halt_on_abort`)."""

    SWITCHED_ON = "switched_on"
    """Only nodes where the flag was actually switched on: the ones that ran the new path."""
    EXPOSED = "exposed"
    """Every node the rollout reached, including one whose stage was refused."""


class RolloutPlan(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    stages: tuple[Stage, ...] = (
        Stage("canary", hold_s=300, nodes=1),
        Stage("quarter", hold_s=600, fraction=0.25),
        Stage("fleet", hold_s=600, fraction=1.0),
    )
    gates: tuple[HealthGate, ...] = (
        HealthGate("order_rate_ratio", max=3.0),
        HealthGate("reject_ratio", max=0.05),
    )
    failure_limit: int = 0
    halt_on_abort: bool = True
    halt_targets: HaltTargets = HaltTargets.SWITCHED_ON
    min_orders_per_node: int = 50
    """Orders every exposed node must have sent within the stage before it is promoted."""

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("plan.stages: at least one stage is required")
        if self.failure_limit < 0:
            raise ValueError("plan.failure_limit: must be >= 0")
        if self.min_orders_per_node < 1:
            raise ValueError(
                f"plan.min_orders_per_node: must be >= 1 (a stage needs evidence), "
                f"got {self.min_orders_per_node}"
            )

    def check_gated(self) -> None:
        """Refuse a new rollout without a health gate: promotion needs evidence (orders),
        and a runaway canary supplies that fastest, so without a gate nothing would judge
        what the exposed nodes do with the flag. Checked where a rollout starts (and where
        a plan file is read), not on decoding: a stored rollout must still load, so that
        it can be aborted."""
        if not self.gates:
            raise ValueError(
                "plan.gates: at least one health gate is required (without one a stage is "
                "promoted on its order count alone, its health unchecked)"
            )


def stage_slices(plan: RolloutPlan, count: int) -> list[tuple[int, int]]:
    """Per stage of `plan` over `count` rollout nodes, the slice `[start, end)` of them it
    adds (empty where a stage reaches no node an earlier one did not): each stage the
    first `size` nodes, less those an earlier stage took. The one rule for both the
    driver (`Rollout._enter_stage`) and every node checking a stage's signed nodes
    (`trust.flagproof`), so the two cannot drift apart."""
    slices: list[tuple[int, int]] = []
    reached = 0
    for stage in plan.stages:
        end = max(reached, stage.size(count))
        slices.append((reached, end))
        reached = end
    return slices


def plan_digest(plan: RolloutPlan) -> str:
    """sha256 of the plan's canonical JSON (stages, fractions, holds, gates, abort policy):
    what a second person's rollout approval names, so a promotion runs the approved plan.
    Typed once through JSON first, so `hold_s=300` and a stored `300.0` are one plan."""
    typed = msgspec.json.decode(msgspec.json.encode(plan), type=RolloutPlan)
    canonical = msgspec.json.encode(msgspec.to_builtins(typed, order="sorted"))
    return hashlib.sha256(canonical).hexdigest()


class RolloutStatus(StrEnum):
    PROGRESSING = "progressing"
    COMPLETED = "completed"
    ABORTED = "aborted"


class SetFlag(msgspec.Struct, frozen=True, tag="set_flag"):
    flag_id: str
    value: bool
    nodes: tuple[str, ...]
    reason: str


class RequestHalt(msgspec.Struct, frozen=True, tag="request_halt"):
    scope: Scope
    key: str
    reason: str


RolloutAction = SetFlag | RequestHalt


class RolloutEvent(msgspec.Struct, frozen=True):
    at_ns: int
    kind: str
    detail: str


class RolloutState(msgspec.Struct, frozen=True):
    rollout_id: str
    flag_id: str
    target_value: bool
    nodes: tuple[str, ...]
    plan: RolloutPlan
    started_by: str
    approver: str | None
    status: RolloutStatus
    stage_index: int
    stage_started_ns: int
    failures: int = 0
    exposed: tuple[str, ...] = ()
    """Nodes a stage asked to switch on (whether or not the activation went through)."""
    switched_on: tuple[str, ...] = ()
    """Nodes where an activation to the target value was accepted."""
    abort_reason: str = ""
    events: tuple[RolloutEvent, ...] = ()
    stage_baseline: dict[str, int] = {}
    """Each exposed node's `orders` when the stage first saw it: evidence counts from here."""
    hold_reason: str = ""
    """Why the rollout is holding past its hold time (empty when it is not)."""
    excluded: tuple[str, ...] = ()
    """Fleet members left out when it started because they were not admitted."""
    approval: str = ""
    """The second person's signed approval (a DSSE envelope, JSON) naming this plan's
    digest, as checked when the rollout started; re-checked before every promotion."""
    approved_at_ns: int = 0
    """The wall-clock instant the approval was checked (and found unexpired) at the start."""


def rollout_nodes(members: Sequence[FleetMember]) -> tuple[list[str], dict[str, str]]:
    """The members a rollout may include (admitted) and every other one with why not.

    A node that is not admitted would refuse its stage at the activation gate and abort
    the rollout for the healthy nodes; it is left out, by name, from the start.
    """
    nodes = [m.node for m in members if m.admitted]
    excluded = {
        m.node: "not admitted" + (f", judged against {m.release_id}" if m.release_id else "")
        for m in members
        if not m.admitted
    }
    return nodes, excluded


class Rollout:
    """The state machine over a `RolloutState`; all time comes from the clock."""

    def __init__(self, state: RolloutState, clock: Clock) -> None:
        self._state = state
        self._clock = clock

    @classmethod
    def start(
        cls,
        rollout_id: str,
        flag_id: str,
        target_value: bool,
        nodes: Sequence[str],
        plan: RolloutPlan,
        clock: Clock,
        started_by: str,
        approver: str | None = None,
        excluded: Mapping[str, str] | None = None,
    ) -> tuple[Rollout, list[RolloutAction]]:
        """`excluded`: members left out (node -> why), named in the rollout's first event;
        `rollout_nodes` splits a fleet view that way."""
        plan.check_gated()
        out = dict(excluded or {})
        if not nodes:
            why = "; ".join(f"{n}: {w}" for n, w in sorted(out.items()))
            raise ValueError(
                f"rollout {rollout_id}: the fleet has no admitted node to roll out to"
                + (f" (excluded {why})" if why else "")
            )
        now = clock.monotonic_ns()
        state = RolloutState(
            rollout_id=rollout_id,
            flag_id=flag_id,
            target_value=target_value,
            nodes=tuple(sorted(nodes)),
            plan=plan,
            started_by=started_by,
            approver=approver,
            status=RolloutStatus.PROGRESSING,
            stage_index=0,
            stage_started_ns=now,
            excluded=tuple(sorted(out)),
        )
        rollout = cls(state, clock)
        if out:
            rollout._log(
                "excluded",
                "not admitted, left out of the rollout: "
                + "; ".join(f"{n} ({w})" for n, w in sorted(out.items())),
            )
        return rollout, rollout._enter_stage(0, "started")

    @property
    def state(self) -> RolloutState:
        return self._state

    @property
    def stage(self) -> Stage:
        return self._state.plan.stages[self._state.stage_index]

    def step(self, metrics: Metrics) -> list[RolloutAction]:
        """Judge the exposed nodes; promote, complete, hold or abort."""
        s = self._state
        if s.status is not RolloutStatus.PROGRESSING:
            return []
        breaches = [
            b for node in s.exposed for gate in s.plan.gates if (b := gate.breach(node, metrics))
        ]
        if breaches:
            failures = s.failures + 1
            self._update(failures=failures)
            self._log(
                "gate_failed", f"{failures}/{s.plan.failure_limit + 1}: {'; '.join(breaches)}"
            )
            if failures > s.plan.failure_limit:
                return self.abort(f"health gate failed: {'; '.join(breaches)}")
            return []
        self._note_baselines(metrics)
        held_ns = self._clock.monotonic_ns() - s.stage_started_ns
        if held_ns < int(self.stage.hold_s * NS_PER_S):
            return []
        missing = self.missing_evidence(metrics)
        if missing:
            reason = "; ".join(missing)
            if reason != self._state.hold_reason:
                self._update(hold_reason=reason)
                self._log("held", f"stage {self.stage.name}: {reason}")
            return []
        if s.stage_index + 1 < len(s.plan.stages):
            return self._enter_stage(s.stage_index + 1, "promoted", metrics)
        self._update(status=RolloutStatus.COMPLETED)
        self._log("completed", f"{len(s.exposed)} node(s) held healthy through every stage")
        return []

    def missing_evidence(self, metrics: Metrics) -> list[str]:
        """Why the exposed nodes do not yet prove the stage (empty: they do).

        Missing evidence holds the rollout rather than aborting it: a node with
        nothing to show has not shown the new path is bad either.
        """
        s = self._state
        need = s.plan.min_orders_per_node
        out = []
        for node in s.exposed:
            m = metrics.get(node, {})
            if m.get(ADMITTED) != 1.0:
                out.append(f"{node}: not admitted")
            elif m.get(HALTED) != 0.0:
                out.append(f"{node}: halted")
            elif (orders := m.get(ORDERS)) is None or node not in s.stage_baseline:
                out.append(f"{node}: no order count reported")
            elif orders - s.stage_baseline[node] < need:
                out.append(f"{node}: fewer than {need} orders in the stage")
        return out

    def _note_baselines(self, metrics: Metrics) -> None:
        baseline = self._state.stage_baseline
        new = {
            n: int(orders)
            for n in self._state.exposed
            if n not in baseline and (orders := metrics.get(n, {}).get(ORDERS)) is not None
        }
        if new:
            self._update(stage_baseline={**baseline, **new})

    def abort(self, reason: str) -> list[RolloutAction]:
        """Flag back to safe default where the rollout turned it on, then halts if planned."""
        s = self._state
        if s.status is not RolloutStatus.PROGRESSING:
            return []
        self._update(status=RolloutStatus.ABORTED, abort_reason=reason)
        self._log("aborted", reason)
        actions: list[RolloutAction] = []
        if s.exposed:
            actions.append(
                SetFlag(s.flag_id, not s.target_value, s.exposed, f"rollout {s.rollout_id} aborted")
            )
            if s.plan.halt_on_abort:
                halted = s.exposed if s.plan.halt_targets is HaltTargets.EXPOSED else s.switched_on
                actions += [
                    RequestHalt(
                        Scope.NODE, node, f"rollout {s.rollout_id} of {s.flag_id}: {reason}"
                    )
                    for node in halted
                ]
        return actions

    def note_failure(self, detail: str) -> None:
        """Record an action that could not be carried out (`RolloutRunner`)."""
        self._log("action_failed", detail)

    def switched(self, nodes: Sequence[str]) -> None:
        """Record that the target value was accepted for `nodes` (so an abort halts them)."""
        new = tuple(n for n in nodes if n not in self._state.switched_on)
        if new:
            self._update(switched_on=self._state.switched_on + new)

    def _enter_stage(
        self, index: int, kind: str, metrics: Metrics | None = None
    ) -> list[RolloutAction]:
        s = self._state
        stage = s.plan.stages[index]
        _, end = stage_slices(s.plan, len(s.nodes))[index]
        new = tuple(n for n in s.nodes[:end] if n not in s.exposed)
        self._update(
            stage_index=index,
            stage_started_ns=self._clock.monotonic_ns(),
            failures=0,
            exposed=s.exposed + new,
            stage_baseline={},
            hold_reason="",
        )
        if metrics is not None:
            self._note_baselines(metrics)
        self._log(kind, f"stage {stage.name}: {len(s.exposed) + len(new)}/{len(s.nodes)} node(s)")
        if not new:
            return []
        return [SetFlag(s.flag_id, s.target_value, new, f"rollout {s.rollout_id} {stage.name}")]

    def _update(self, **changes: object) -> None:
        self._state = msgspec.structs.replace(self._state, **changes)

    def _log(self, kind: str, detail: str) -> None:
        event = RolloutEvent(self._clock.time_ns(), kind, detail)
        self._update(events=(*self._state.events, event))


def failed_actions(state: RolloutState) -> list[RolloutEvent]:
    """The actions of the rollout's latest decision that were not carried out (a switch-off
    refused or unwritable, a halt not requested): what an operator must be told."""
    latest = max((i for i, e in enumerate(state.events) if e.kind != "action_failed"), default=-1)
    return [e for e in state.events[latest + 1 :] if e.kind == "action_failed"]


class HaltSink(Protocol):
    """Where halt requests go: the control plane's kill switch, or a Guard."""

    def halt(self, scope: Scope, key: str, reason: str, actor: str) -> None: ...


class RolloutRunner:
    """Applies a rollout's actions through the activation gate.

    Every stage is an activation like any other, so a skewed node refuses the
    stage; the rollout then aborts and the nodes already on go back to the safe
    default.
    """

    def __init__(self, gate: ActivationGate, halts: HaltSink, origin: str) -> None:
        self._gate = gate
        self._halts = halts
        self._origin = origin

    def execute(self, rollout: Rollout, actions: Sequence[RolloutAction]) -> list[str]:
        """Apply actions in order; returns one line per outcome for the operator.

        An action that fails (the flag store or the kill switch cannot be reached) never
        keeps the ones after it from being tried: an abort's halts are requested even when
        its switch-off could not be written (it raised, and the runaway canary was never
        halted), one halt that times out does not hold back the next, and a switch-on that
        failed is judged as a refused stage (the rollout aborts) with its nodes counted as
        switched on, since the write may have landed. Each failure is an outcome line, an
        `action_failed` event of the rollout and an error log line."""
        s = rollout.state
        actor = f"rollout:{s.rollout_id}"
        outcomes: list[str] = []
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, RequestHalt):
                try:
                    self._halts.halt(action.scope, action.key, action.reason, actor)
                except Exception as exc:  # the next halt is still requested
                    outcomes.append(
                        self._failed(rollout, f"halt of {action.scope} {action.key}", exc)
                    )
                    continue
                outcomes.append(f"halt requested: {action.scope} {action.key}")
                continue
            try:
                result = self._gate.apply(
                    ActivationRequest(
                        flag_id=action.flag_id,
                        value=action.value,
                        actor=s.started_by,
                        reason=action.reason,
                        origin=f"{self._origin} {actor}",
                        nodes=action.nodes,
                        approver=s.approver,
                        approval=s.approval,
                        approval_kind="rollout",
                        approval_digest=plan_digest(s.plan),
                        approved_ns=s.approved_at_ns,
                        rollout_id=s.rollout_id,
                        rollout_nodes=s.nodes,
                        rollout_stage=s.stage_index,
                        rollout_plan=msgspec.json.encode(s.plan).decode(),
                    )
                )
            except Exception as exc:  # unknown whether it landed: fail closed
                verb = "on" if action.value else "off"
                what = f"{action.flag_id} -> {verb} on {', '.join(action.nodes)}"
                outcomes.append(self._failed(rollout, what, exc))
                if action.value == s.target_value:
                    rollout.switched(action.nodes)
                    pending += rollout.abort(f"activation failed: {_failure(exc)}")
                continue
            outcomes.append(f"{result.code}: {result.detail}")
            if result.accepted and action.value == s.target_value:
                rollout.switched(action.nodes)
            if not result.accepted and action.value != s.target_value:
                # the switch-off itself refused (the flag not in the registry given): the
                # rollout reads "aborted" with the nodes still on unless this is said
                line = f"switch-off of {', '.join(action.nodes)} refused: {result.code}"
                log.error("ROLLOUT_ACTION_FAILED %s %s", s.rollout_id, line)
                rollout.note_failure(f"{line}: {result.detail}")
            if not result.accepted:
                pending += rollout.abort(f"activation refused: {result.code}: {result.detail}")
        return outcomes

    @staticmethod
    def _failed(rollout: Rollout, what: str, exc: Exception) -> str:
        line = f"failed: {what}: {_failure(exc)}"
        log.error("ROLLOUT_ACTION_FAILED %s %s", rollout.state.rollout_id, line)
        rollout.note_failure(line)
        return line


def _failure(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
