"""Guardrail layers: each one is real code switched into the replay's loop.

A layer configures a run before it starts: it turns on Guard rule groups
(by giving their `Limits` keys the scenario's values; everything off is
``None``, which the Guard reads as "rule off"), gives the router its hard
bounds, asks the replay to register parents with the Guard, or schedules an
action on the simulated clock. The release and flag
governance layers (attestation, flag schema, rollout) switch on checks of the
replay's `Governance` (`setup.governance`). The control-plane layers (kill
switch, supervisor) ask for the replay's control plane (`use_control_plane`):
every node's Guard then runs inside the live node runtime with a lease, and
halts reach it only through the kill switch (`knightwatch.sim.fleet`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from knightwatch.errors import KnightwatchError
from knightwatch.flags.rollout import Metrics
from knightwatch.limits import layer_keys
from knightwatch.sim.setup import LayerSetup, ReplayHooks


class LayerError(KnightwatchError, ValueError):
    """An unknown layer name in `--guards`."""


class Layer(ABC):
    """A guardrail that can be switched on for a replay."""

    name = ""
    title = ""

    @abstractmethod
    def configure(self, setup: LayerSetup) -> None: ...


class GuardRuleLayer(Layer):
    """One rule group of the real `Guard`, on with the scenario's limits table."""

    def __init__(self, name: str, title: str, keys: tuple[str, ...]) -> None:
        self.name = name
        self.title = title
        self.keys = keys

    def configure(self, setup: LayerSetup) -> None:
        setup.turn_on(self.keys)


class ParentReconciliationLayer(GuardRuleLayer):
    """Children compared with the parent that entered (SEC order, para. 21): the replay
    registers every parent with its node's Guard (it does with any Guard layer: that is also
    what tells a customer's fill from the firm's), which then refuses children beyond the
    parent's quantity and children of parents it was never told of."""

    def configure(self, setup: LayerSetup) -> None:
        setup.turn_on(self.keys)
        setup.limit_keys["require_registered_parent"] = True  # whatever the scenario table says


class RouterBoundsLayer(Layer):
    name = "router_bounds"
    title = "router hard bounds (children and quantity per parent)"

    def configure(self, setup: LayerSetup) -> None:
        setup.router_bounds = setup.scenario.router


class KillSwitchLayer(Layer):
    """A person kills the whole fleet with the one command, `timeline.notice_s` (alarms)
    plus `reaction_s` (decide and type) after the runaway began: the real `KillSwitch` on
    the replay's control plane, applied by every node's runtime to its Guard and confirmed
    back; leases on, heartbeats on the simulated clock. With no runaway there is nothing to
    notice, and nobody kills a healthy fleet; nor one whose runaway another layer already
    stopped before the person got there.

    With `timeline.resume_after_s` the same person resumes the fleet that long after the
    kill, whatever caused it still in place (through the `[ramp]` unless `resume_ramp =
    false`); if the runaway is back and still going `notice_s + reaction_s` after the
    resume, they kill again, and do not resume a second time."""

    name = "kill_switch"
    title = "one-command fleet kill (control plane, confirmed) at human reaction time"

    def configure(self, setup: LayerSetup) -> None:
        setup.use_control_plane()
        tl = setup.scenario.timeline
        delay = tl.notice_s + tl.reaction_s
        planned: list[float] = []
        resumed: list[float] = []

        def kill(replay: ReplayHooks) -> None:
            if not replay.runaway_running:
                replay.mark(self.name, "*", "no kill: the runaway was already stopped")
                return
            replay.operator_kill(
                self.name,
                f"manual kill {delay:g}s after the runaway began "
                f"({round(replay.now_s(), 3):g}s after the open)",
            )
            if tl.resume_after_s is not None and not resumed:
                resumed.append(round(replay.now_s() + tl.resume_after_s, 3))
                replay.schedule(resumed[0], self.name, resume, hold=True)

        def resume(replay: ReplayHooks) -> None:
            replay.operator_resume(
                self.name, f"manual resume {tl.resume_after_s:g}s after the kill: it looks calm"
            )
            replay.schedule(round(replay.now_s() + delay, 3), self.name, kill_again)

        def kill_again(replay: ReplayHooks) -> None:
            if not replay.runaway_running:
                replay.mark(self.name, "*", "no second kill: nothing runs away after the resume")
                return
            replay.operator_kill(
                self.name, f"manual kill: the runaway is back {delay:g}s after the resume"
            )

        def notice(replay: ReplayHooks) -> None:
            start = replay.runaway_from_s
            if planned or start is None:
                return
            planned.append(round(start + delay, 3))
            replay.schedule(planned[0], self.name, kill)

        setup.watch(notice)


class SupervisorLayer(Layer):
    """The fleet `Supervisor` watches every node's published metrics and halts through the
    kill switch (node scope, or the fleet's exposure) on the scenario's `[supervisor]`
    thresholds: order rate against the fleet median, P&L against peers, fleet gross
    exposure, block/reject spikes, errors before arming."""

    name = "supervisor"
    title = "supervisor: automatic halt on node metrics (control plane)"

    def configure(self, setup: LayerSetup) -> None:
        setup.use_control_plane(supervisor=True)


class AttestationLayer(Layer):
    """Before the open every node's runtime attests the release it really runs, through its
    `Attestor`, to the control plane's `AdmissionService` against the signed target
    manifest. A refused node takes no lease and cannot be armed (its runtime refuses), and
    order flow goes only to admitted nodes. A rollback is a new target release and goes
    through the same service, which checks it against the flag registry first."""

    name = "attestation"
    title = "release attestation and admission (rollback included)"

    def configure(self, setup: LayerSetup) -> None:
        setup.governance.attestation = True
        setup.use_control_plane()

        def report(replay: ReplayHooks) -> None:
            admitted = 0
            for node in replay.nodes:
                verdict = replay.verdict(node.id)
                if verdict is not None and verdict.admitted:
                    admitted += 1
                    continue
                if verdict is None:
                    replay.mark(self.name, node.id, "refused admission: no verdict")
                    continue
                reasons = ", ".join(dict.fromkeys(f.reason.value for f in verdict.findings))
                replay.mark(self.name, node.id, f"refused admission ({reasons}): {verdict.detail}")
            replay.mark(self.name, "*", f"{admitted}/{len(replay.nodes)} nodes admitted")

        setup.schedule(0.0, self.name, report)


class FlagSchemaLayer(Layer):
    """Every node presents the flag table it was built with; switching the deploy flag on
    goes through the `ActivationGate`, which refuses it while any targeted node holds the
    id with another meaning (the reused id) and names that node."""

    name = "flag_schema"
    title = "flag schema check on activation (no reused id)"

    def configure(self, setup: LayerSetup) -> None:
        setup.governance.flag_schema = True


class RolloutLayer(Layer):
    """The deploy flag goes on through staged `Rollout` (one node, a quarter, the fleet)
    with health gates read from the control plane's Supervisor (watching, or acting when
    the supervisor layer is on too); a failing gate puts the flag back to its safe default
    where it was on and halts, through the kill switch, the nodes where it was on."""

    name = "rollout"
    title = "staged flag rollout with health gates"

    def configure(self, setup: LayerSetup) -> None:
        setup.governance.rollout = True
        setup.use_control_plane(watch=True)

        def step(replay: ReplayHooks, metrics: Metrics) -> None:
            replay.step_rollout(metrics)

        setup.on_sample(step)


REGISTRY: dict[str, Layer] = {}


def register(layer: Layer) -> Layer:
    if layer.name in REGISTRY:
        raise ValueError(f"layer {layer.name!r} is already registered")
    REGISTRY[layer.name] = layer
    return layer


for _layer in (
    ParentReconciliationLayer(
        "parent_reconciliation",
        "parent/child reconciliation (children never exceed the parent)",
        layer_keys("parent_reconciliation"),
    ),
    GuardRuleLayer(
        "execution_throttle", "repeated-execution throttle", layer_keys("execution_throttle")
    ),
    GuardRuleLayer("rates", "order-rate limits (node, strategy, symbol)", layer_keys("rates")),
    GuardRuleLayer(
        "exposure",
        "position and exposure limits (incl. working orders)",
        layer_keys("exposure"),
    ),
    GuardRuleLayer("loss_limit", "loss limit", layer_keys("loss_limit")),
    GuardRuleLayer("order_size", "order size and price collar", layer_keys("order_size")),
    RouterBoundsLayer(),
    KillSwitchLayer(),
    SupervisorLayer(),
    AttestationLayer(),
    FlagSchemaLayer(),
    RolloutLayer(),
):
    register(_layer)


GOVERNANCE = ("attestation", "flag_schema", "rollout")
"""The deploy-time layers; every other layer acts while trading (`runtime`)."""


def runtime_layers() -> tuple[Layer, ...]:
    """Every Guard rule, the router bounds, the supervisor and the kill switch."""
    return tuple(layer for name, layer in REGISTRY.items() if name not in GOVERNANCE)


def resolve(spec: str) -> tuple[Layer, ...]:
    """`none`, `all`, `runtime` (all but attestation, flag schema and rollout), or a
    comma-separated list of layer names."""
    s = spec.strip()
    if s == "none":
        return ()
    if s == "all":
        return tuple(REGISTRY.values())
    if s == "runtime":
        return runtime_layers()
    names = [n.strip() for n in s.split(",") if n.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown or not names:
        raise LayerError(
            f"--guards: unknown layer {', '.join(unknown) or repr(spec)}; expected none, all, "
            f"runtime or a comma-separated list of: {', '.join(REGISTRY)}"
        )
    return tuple(REGISTRY[n] for n in dict.fromkeys(names))
