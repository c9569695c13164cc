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
halts reach it only through the kill switch (`knightwatch.sim.control`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from knightwatch.errors import KnightwatchError
from knightwatch.flags.rollout import Metrics
from knightwatch.limits import Limits, layer_keys
from knightwatch.sim.governance import GovernanceMode
from knightwatch.sim.router import RouterBounds

if TYPE_CHECKING:
    from knightwatch.sim.replay import Replay
    from knightwatch.sim.scenario import Scenario

Action = Callable[["Replay"], None]
SampleHook = Callable[["Replay", "Metrics"], None]


class LayerError(KnightwatchError, ValueError):
    """An unknown layer name in `--guards`."""


class LayerSetup:
    """What the enabled layers ask of one run."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.limit_keys: dict[str, Any] = {}
        self.guarded = False
        self.register_parents = False
        self.router_bounds: RouterBounds | None = None
        self.actions: list[tuple[float, str, Action]] = []
        self.governance = GovernanceMode()
        self.sample_hooks: list[SampleHook] = []
        self.control_plane = False
        self.supervisor = False
        self.watch_health = False

    def turn_on(self, keys: tuple[str, ...]) -> None:
        """Enable Guard rule groups with the scenario's values (Limits defaults if unset)."""
        self.guarded = True
        defaults = Limits()
        for key in keys:
            self.limit_keys[key] = self.scenario.limits.get(key, getattr(defaults, key))

    def use_control_plane(self, *, supervisor: bool = False, watch: bool = False) -> None:
        """Run the fleet control plane: leases on (the Guard's `lease_timeout_s` is the
        scenario's `control.lease_timeout_s`, the value the node runtime's `LeasePolicy`
        renews against); with `supervisor` the Supervisor halts on node metrics, with
        `watch` it only computes their health (the gates' input) and halts nothing."""
        self.guarded = True
        self.control_plane = True
        self.supervisor = self.supervisor or supervisor
        self.watch_health = self.watch_health or watch
        self.limit_keys["lease_timeout_s"] = self.scenario.control.lease_timeout_s

    def schedule(self, at_s: float, label: str, action: Action) -> None:
        self.actions.append((at_s, label, action))

    def on_sample(self, hook: SampleHook) -> None:
        """Call `hook(replay, metrics)` at every sample (`scenario.sample_s`) with each
        node's health as the control plane's Supervisor computes it (`NodeHealth.gauges()`:
        `order_rate_ratio`, `reject_ratio`, ...); the hook's layer must run the control plane."""
        self.sample_hooks.append(hook)

    def limits(self) -> Limits:
        """All rule groups off, then the enabled ones on; fail-closed basics stay on."""
        table = self.scenario.limits
        base: dict[str, Any] = {
            "version": f"replay:{self.scenario.name}",
            "require_registered_parent": False,
            "max_price_age_s": table.get("max_price_age_s", Limits().max_price_age_s),
        }
        for key in ("require_reference_price", "tick_size", "max_tracked_order_ids"):
            if key in table:
                base[key] = table[key]
        return Limits.off(**{**base, **self.limit_keys})


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
    """Children compared with the parent that entered (SEC C2): the replay registers every
    parent with its node's Guard, which then refuses children beyond the parent's quantity."""

    def configure(self, setup: LayerSetup) -> None:
        setup.turn_on(self.keys)
        setup.limit_keys["require_registered_parent"] = True  # whatever the scenario table says
        setup.register_parents = True


class RouterBoundsLayer(Layer):
    name = "router_bounds"
    title = "router hard bounds (children and quantity per parent)"

    def configure(self, setup: LayerSetup) -> None:
        setup.router_bounds = setup.scenario.router


class KillSwitchLayer(Layer):
    """A person kills the whole fleet at the scenario's human reaction time with the one
    command: the real `KillSwitch` on the replay's control plane, applied by every node's
    runtime to its Guard and confirmed back; leases on, heartbeats on the simulated clock."""

    name = "kill_switch"
    title = "one-command fleet kill (control plane, confirmed) at human reaction time"

    def configure(self, setup: LayerSetup) -> None:
        setup.use_control_plane()
        tl = setup.scenario.timeline
        at = tl.notice_s + tl.reaction_s

        def kill(replay: Replay) -> None:
            replay.operator_kill(self.name, f"manual kill {at:g}s after the open")

        setup.schedule(at, self.name, kill)


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

        def report(replay: Replay) -> None:
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

        def step(replay: Replay, metrics: Metrics) -> None:
            replay.governance.step_rollout(replay, metrics)

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


def resolve(spec: str) -> tuple[Layer, ...]:
    """`none`, `all`, or a comma-separated list of layer names."""
    s = spec.strip()
    if s == "none":
        return ()
    if s == "all":
        return tuple(REGISTRY.values())
    names = [n.strip() for n in s.split(",") if n.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown or not names:
        raise LayerError(
            f"--guards: unknown layer {', '.join(unknown) or repr(spec)}; expected none, all "
            f"or a comma-separated list of: {', '.join(REGISTRY)}"
        )
    return tuple(REGISTRY[n] for n in dict.fromkeys(names))
