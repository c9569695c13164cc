"""What a replay's layers configure, and the narrow face of the replay they act on.

Layers and the governance model act on a running replay (mark an event, kill
the fleet, halt a scope through the kill switch, read a verdict, step a
rollout). They see it only through `ReplayHooks`, a protocol `Replay`
implements, so neither imports the replay and the three stay acyclic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from knightwatch.flags.rollout import Metrics
from knightwatch.limits import Limits
from knightwatch.sim.router import RouterBounds
from knightwatch.state import Scope

if TYPE_CHECKING:
    from knightwatch.control.plane.wire import Verdict
    from knightwatch.sim.node import Node
    from knightwatch.sim.scenario import Scenario


class ReplayHooks(Protocol):
    """What layers and governance may do to a running replay."""

    @property
    def nodes(self) -> Sequence[Node]: ...

    def mark(self, layer: str, node: str, what: str) -> None: ...

    def operator_kill(self, layer: str, reason: str) -> None: ...

    def operator_resume(self, layer: str, reason: str) -> None: ...

    def now_s(self) -> float: ...

    def control_halt(self, layer: str, scope: Scope, key: str, reason: str, actor: str) -> None: ...

    def verdict(self, node_id: str) -> Verdict | None: ...

    def step_rollout(self, metrics: Metrics) -> None: ...

    @property
    def runaway_from_s(self) -> float | None: ...

    @property
    def runaway_running(self) -> bool: ...

    def schedule(
        self, at_s: float, label: str, action: TimelineAction, *, hold: bool = False
    ) -> None: ...


TimelineAction = Callable[[ReplayHooks], None]
"""Something a layer schedules at a simulated instant (e.g. an operator's kill)."""
SampleHook = Callable[[ReplayHooks, Metrics], None]
Watcher = Callable[[ReplayHooks], None]


class GovernanceMode(msgspec.Struct):
    """Which governance checks the enabled layers switched on."""

    attestation: bool = False
    flag_schema: bool = False
    rollout: bool = False


class LayerSetup:
    """What the enabled layers ask of one run."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.limit_keys: dict[str, Any] = {}
        self.guarded = False
        self.router_bounds: RouterBounds | None = None
        self.actions: list[tuple[float, str, TimelineAction]] = []
        self.governance = GovernanceMode()
        self.sample_hooks: list[SampleHook] = []
        self.watchers: list[Watcher] = []
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

    def schedule(self, at_s: float, label: str, action: TimelineAction) -> None:
        self.actions.append((at_s, label, action))

    def on_sample(self, hook: SampleHook) -> None:
        """Call `hook(replay, metrics)` at every sample (`scenario.sample_s`) with each
        node's health as the control plane's Supervisor computes it (`NodeHealth.gauges()`:
        `order_rate_ratio`, `reject_ratio`, ...); the hook's layer must run the control plane."""
        self.sample_hooks.append(hook)

    def watch(self, watcher: Watcher) -> None:
        """Call `watcher(replay)` after every step: what a person at a screen sees (no
        control-plane read, so it works while the plane is down). Every step, not every
        sample: a kill planned `notice_s + reaction_s` after the runaway began was planned
        only at the next plot sample, and `sample_s = 30` moved a 2 s kill to 30 s."""
        self.watchers.append(watcher)

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
