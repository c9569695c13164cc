"""Rollout: promotes through stages when healthy, aborts (flag off where on) when not."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest

from knightwatch.clock import NS_PER_S, SimClock
from knightwatch.flags.activation import ActivationGate, ActivationPolicy, SecondApprover
from knightwatch.flags.fleet import FleetMember, StaticFleetView
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.rollout import (
    ADMITTED,
    HALTED,
    ORDERS,
    HaltTargets,
    HealthGate,
    RequestHalt,
    Rollout,
    RolloutPlan,
    RolloutRunner,
    RolloutStatus,
    SetFlag,
    Stage,
    plan_digest,
    rollout_nodes,
)
from knightwatch.flags.state import FlagState, MemoryFlagStateStore, StateUnavailable
from knightwatch.state import Scope

RLP = "trading.smars.rlp_enabled"
FIXTURES = Path(__file__).parent / "fixtures"
PLAN = RolloutPlan(
    stages=(
        Stage("canary", hold_s=60, nodes=1),
        Stage("quarter", hold_s=60, fraction=0.25),
        Stage("fleet", hold_s=60, fraction=1.0),
    ),
    gates=(HealthGate("order_rate_ratio", max=3.0),),
)


class HaltLog:
    def __init__(self) -> None:
        self.requests: list[tuple[Scope, str, str]] = []

    def halt(self, scope: Scope, key: str, reason: str, actor: str) -> None:
        self.requests.append((scope, key, actor))


class Fleet:
    """Healthy supervisor gauges with each node's cumulative order count (the evidence)."""

    def __init__(self, nodes: list[str]) -> None:
        self.orders = dict.fromkeys(nodes, 0)

    def trade(self, n: int, nodes: list[str] | None = None) -> None:
        for node in nodes or list(self.orders):
            self.orders[node] += n

    def metrics(self, **override: dict[str, float]) -> dict[str, dict[str, float]]:
        return {
            n: {"order_rate_ratio": 1.0, ORDERS: float(o), ADMITTED: 1.0, HALTED: 0.0}
            | override.get(n, {})
            for n, o in self.orders.items()
        }


def setup(
    flag_registry: FlagRegistry, fleet: object, clock: SimClock
) -> tuple[MemoryFlagStateStore, RolloutRunner, HaltLog]:
    store = MemoryFlagStateStore()
    never = ActivationPolicy(second_approver=SecondApprover.NEVER)
    gate = ActivationGate(flag_registry, fleet, store, clock, never)  # type: ignore[arg-type]
    halts = HaltLog()
    return store, RolloutRunner(gate, halts, "test"), halts


def test_healthy_rollout_promotes_one_node_quarter_fleet(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock
) -> None:
    clock = pre_market_clock
    store, runner, _ = setup(flag_registry, make_fleet(), clock)
    nodes = [f"n{i}" for i in range(1, 9)]
    fleet = Fleet(nodes)
    rollout, actions = Rollout.start("r#1", RLP, True, nodes, PLAN, clock, "alice")
    runner.execute(rollout, actions)
    assert store.get(RLP).node_values == {"n1": True}  # type: ignore[union-attr]
    assert runner.execute(rollout, rollout.step(fleet.metrics())) == []  # hold not over
    fleet.trade(50)
    clock.advance(61 * NS_PER_S)
    runner.execute(rollout, rollout.step(fleet.metrics()))
    assert rollout.state.exposed == ("n1", "n2") and rollout.stage.name == "quarter"
    fleet.trade(50)
    clock.advance(61 * NS_PER_S)
    runner.execute(rollout, rollout.step(fleet.metrics()))
    assert set(store.get(RLP).node_values) == set(nodes)  # type: ignore[union-attr]
    rollout.step(fleet.metrics())  # the fleet stage's baseline for the newly exposed nodes
    fleet.trade(50)
    clock.advance(61 * NS_PER_S)
    assert rollout.step(fleet.metrics()) == []
    assert rollout.state.status is RolloutStatus.COMPLETED
    assert [e.kind for e in rollout.state.events] == [
        "started",
        "promoted",
        "promoted",
        "completed",
    ]
    assert rollout.step(fleet.metrics()) == [] and rollout.abort("late") == []


def test_gate_breach_aborts_flag_off_where_on_and_halts(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock
) -> None:
    clock = pre_market_clock
    store, runner, halts = setup(flag_registry, make_fleet(), clock)
    nodes = [f"n{i}" for i in range(1, 9)]
    fleet = Fleet(nodes)
    rollout, actions = Rollout.start("r#1", RLP, True, nodes, PLAN, clock, "alice")
    runner.execute(rollout, actions)
    rollout.step(fleet.metrics())
    fleet.trade(50)
    clock.advance(61 * NS_PER_S)
    runner.execute(rollout, rollout.step(fleet.metrics()))
    metrics = fleet.metrics()
    metrics["n2"]["order_rate_ratio"] = 15.5  # server 8 in 2012: 4800/min vs 310/min
    actions = rollout.step(metrics)
    assert actions[0] == SetFlag(RLP, False, ("n1", "n2"), "rollout r#1 aborted")
    assert {a.key for a in actions if isinstance(a, RequestHalt)} == {"n1", "n2"}
    runner.execute(rollout, actions)
    assert rollout.state.status is RolloutStatus.ABORTED
    assert "n2: order_rate_ratio=15.5 > 3" in rollout.state.abort_reason
    assert store.get(RLP).node_values == {"n1": False, "n2": False}  # type: ignore[union-attr]
    assert halts.requests == [(Scope.NODE, "n1", "rollout:r#1"), (Scope.NODE, "n2", "rollout:r#1")]


def test_missing_metrics_fail_closed_within_failure_limit(pre_market_clock: SimClock) -> None:
    plan = RolloutPlan(stages=PLAN.stages, gates=PLAN.gates, failure_limit=1, halt_on_abort=False)
    rollout, _ = Rollout.start("r#1", RLP, True, ["n1", "n2"], plan, pre_market_clock, "alice")
    assert rollout.step({}) == []
    assert rollout.state.failures == 1 and rollout.state.status is RolloutStatus.PROGRESSING
    actions = rollout.step({"n1": {}})
    assert actions == [SetFlag(RLP, False, ("n1",), "rollout r#1 aborted")]
    assert "no order_rate_ratio reported" in rollout.state.abort_reason


@pytest.mark.parametrize(
    ("targets", "halted"),
    [(HaltTargets.SWITCHED_ON, ["n1"]), (HaltTargets.EXPOSED, ["n1", "n2"])],
)
def test_refused_stage_aborts_the_rollout_halting_only_nodes_that_were_on(
    flag_registry: FlagRegistry,
    make_fleet,
    pre_market_clock: SimClock,
    targets: HaltTargets,
    halted: list[str],
) -> None:
    """n2 refuses the quarter stage (its release lacks the flag): it never ran the new path,
    so by default the abort halts only the canary n1, where the flag was on."""
    clock = pre_market_clock
    store, runner, halts = setup(flag_registry, make_fleet(n2={}), clock)
    nodes = [f"n{i}" for i in range(1, 9)]
    plan = msgspec.structs.replace(PLAN, halt_targets=targets)
    fleet = Fleet(nodes)
    rollout, actions = Rollout.start("r#1", RLP, True, nodes, plan, clock, "alice")
    runner.execute(rollout, actions)
    assert rollout.state.switched_on == ("n1",)
    rollout.step(fleet.metrics())
    fleet.trade(50)
    clock.advance(61 * NS_PER_S)
    outcomes = runner.execute(rollout, rollout.step(fleet.metrics()))
    assert outcomes[0].startswith("schema_missing_flag") and "node n2" in outcomes[0]
    assert rollout.state.status is RolloutStatus.ABORTED
    assert rollout.state.exposed == ("n1", "n2") and rollout.state.switched_on == ("n1",)
    assert store.get(RLP).node_values == {"n1": False, "n2": False}  # type: ignore[union-attr]
    assert [key for _, key, _ in halts.requests] == halted


def test_plan_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="exactly one of nodes>0 or fraction>0"):
        Stage("x", hold_s=1)
    with pytest.raises(ValueError, match="fraction must be <= 1"):
        Stage("x", hold_s=1, fraction=2.0)
    with pytest.raises(ValueError, match="set max, min or both"):
        HealthGate("order_rate_ratio")
    with pytest.raises(ValueError, match="at least one stage"):
        RolloutPlan(stages=())
    with pytest.raises(ValueError, match=r"plan\.min_orders_per_node: must be >= 1"):
        RolloutPlan(min_orders_per_node=0)


def test_a_plan_without_gates_is_refused_naming_the_field() -> None:
    """A runaway canary sends the most orders, so it supplies the promotion evidence
    fastest: with `gates = []` nothing judged its health and it was promoted to the fleet."""
    plan = msgspec.convert(
        {"gates": [], "stages": [{"name": "c", "hold_s": 1, "nodes": 1}]}, RolloutPlan
    )  # decodes: a rollout stored before the rule must still load, to be aborted
    with pytest.raises(ValueError, match=r"plan\.gates: at least one health gate is required"):
        plan.check_gated()
    with pytest.raises(ValueError, match=r"plan\.gates: at least one health gate is required"):
        Rollout.start("r", RLP, True, ["n1"], plan, SimClock(), "alice")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_plan_with_a_non_finite_number_is_refused_naming_it(bad: float) -> None:
    """NaN passes every comparison: a NaN gate bound was never breached (the gate passed
    anything), a NaN or infinite hold never ended or raised deep in a promotion."""
    with pytest.raises(ValueError, match=r"gate 'reject_ratio': max must be a finite number"):
        HealthGate("reject_ratio", max=bad)
    with pytest.raises(ValueError, match=r"gate 'reject_ratio': min must be a finite number"):
        HealthGate("reject_ratio", min=bad)
    with pytest.raises(ValueError, match=r"stage 'x': hold_s must be a finite number"):
        Stage("x", hold_s=bad, nodes=1)
    with pytest.raises(ValueError, match=r"stage 'x': fraction must be a finite number"):
        Stage("x", hold_s=1, nodes=1, fraction=bad)
    plan = {"stages": [{"name": "c", "hold_s": 1, "nodes": 1}],
            "gates": [{"metric": "reject_ratio", "max": bad}]}  # fmt: skip
    with pytest.raises(msgspec.ValidationError, match="must be a finite number"):
        msgspec.convert(plan, RolloutPlan)


def test_a_hold_too_long_to_count_is_refused_not_raised_in_a_step(
    pre_market_clock: SimClock,
) -> None:
    """`hold_s = 1e300` is finite, but its nanoseconds are not: every step raised."""
    with pytest.raises(ValueError, match=r"stage 'x': hold_s 1e\+300 is too long to count"):
        Stage("x", hold_s=1e300, nodes=1)
    plan = {"stages": [{"name": "x", "hold_s": 1e300, "nodes": 1}]}
    with pytest.raises(msgspec.ValidationError, match="too long to count in nanoseconds"):
        msgspec.convert(plan, RolloutPlan)
    long = RolloutPlan(stages=(Stage("x", hold_s=1e12, nodes=1),), gates=PLAN.gates)
    rollout, _ = Rollout.start("r", RLP, True, ["n1", "n2"], long, pre_market_clock, "alice")
    assert rollout.step({"n1": {"order_rate_ratio": 1.0}}) == []


@pytest.mark.parametrize(("nodes", "fraction"), [(-1, 0.5), (2, -0.25)])
def test_a_stage_with_a_negative_size_is_refused(nodes: int, fraction: float) -> None:
    """`nodes = -1, fraction = 0.5` met "exactly one of" and sized the stage at one node."""
    with pytest.raises(ValueError, match=r"stage 'q': nodes and fraction must not be negative"):
        Stage("q", hold_s=1, nodes=nodes, fraction=fraction)


def test_a_healthy_canary_without_orders_is_never_promoted(pre_market_clock: SimClock) -> None:
    """The 2012 replay's defect: the canary sent nothing, passed every gate, and the
    rollout moved on. Silence is not evidence: it holds, and says why once."""
    clock = pre_market_clock
    nodes = [f"n{i}" for i in range(1, 9)]
    fleet = Fleet(nodes)
    rollout, _ = Rollout.start("r#1", RLP, True, nodes, PLAN, clock, "alice")
    for _ in range(5):
        clock.advance(61 * NS_PER_S)
        assert rollout.step(fleet.metrics()) == []
    assert rollout.stage.name == "canary" and rollout.state.status is RolloutStatus.PROGRESSING
    held = [e.detail for e in rollout.state.events if e.kind == "held"]
    assert held == ["stage canary: n1: fewer than 50 orders in the stage"]
    fleet.trade(49, ["n1"])
    assert rollout.step(fleet.metrics()) == [] and rollout.stage.name == "canary"
    fleet.trade(1, ["n1"])
    assert rollout.step(fleet.metrics()) == [SetFlag(RLP, True, ("n2",), "rollout r#1 quarter")]


def test_orders_before_the_stage_do_not_count(pre_market_clock: SimClock) -> None:
    clock = pre_market_clock
    fleet = Fleet(["n1", "n2"])
    fleet.trade(10_000)
    rollout, _ = Rollout.start("r#1", RLP, True, ["n1", "n2"], PLAN, clock, "alice")
    rollout.step(fleet.metrics())  # baseline: 10,000 orders already sent before the flag
    clock.advance(61 * NS_PER_S)
    assert rollout.step(fleet.metrics()) == []
    assert rollout.state.hold_reason == "n1: fewer than 50 orders in the stage"


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({HALTED: 1.0}, "n1: halted"),
        ({ADMITTED: 0.0}, "n1: not admitted"),
        ({ADMITTED: float("nan")}, "n1: not admitted"),
    ],
)
def test_holds_while_an_exposed_node_is_halted_or_not_admitted(
    pre_market_clock: SimClock, override: dict[str, float], reason: str
) -> None:
    """A fleet kill or a refused node must not read as a quiet, healthy canary."""
    clock = pre_market_clock
    fleet = Fleet(["n1", "n2"])
    rollout, _ = Rollout.start("r#1", RLP, True, ["n1", "n2"], PLAN, clock, "alice")
    rollout.step(fleet.metrics())
    fleet.trade(500)
    clock.advance(600 * NS_PER_S)
    assert rollout.step(fleet.metrics(n1=override)) == []
    assert rollout.state.hold_reason == reason and rollout.stage.name == "canary"
    rollout.step(fleet.metrics())
    assert rollout.stage.name == "quarter" and rollout.state.hold_reason == ""


def test_missing_evidence_holds_instead_of_promoting(pre_market_clock: SimClock) -> None:
    clock = pre_market_clock
    rollout, _ = Rollout.start("r#1", RLP, True, ["n1"], PLAN, clock, "alice")
    clock.advance(61 * NS_PER_S)
    assert rollout.step({"n1": {"order_rate_ratio": 1.0, ADMITTED: 1.0, HALTED: 0.0}}) == []
    assert rollout.state.hold_reason == "n1: no order count reported"
    assert rollout.state.status is RolloutStatus.PROGRESSING


def test_a_rollout_leaves_out_members_that_are_not_admitted_by_name(
    flag_registry: FlagRegistry, pre_market_clock: SimClock
) -> None:
    """A refused node in the list would refuse the fleet stage and abort the rollout for
    the healthy ones; it is left out from the start, and the rollout says so."""
    schema = flag_registry.schema()
    members = [FleetMember(f"n{i}", True, "r2", schema) for i in range(1, 4)]
    members.append(FleetMember("n4", False, "r2", {}))
    nodes, excluded = rollout_nodes(members)
    assert nodes == ["n1", "n2", "n3"] and excluded == {"n4": "not admitted, judged against r2"}
    fleet = StaticFleetView(members)
    _, runner, halts = setup(flag_registry, fleet, pre_market_clock)
    rollout, actions = Rollout.start(
        "r-1", RLP, True, nodes, PLAN, pre_market_clock, started_by="ops", excluded=excluded
    )
    assert rollout.state.excluded == ("n4",)
    assert rollout.state.events[0].kind == "excluded" and "n4" in rollout.state.events[0].detail
    metrics = Fleet(nodes)
    runner.execute(rollout, actions)
    for _ in range(6):  # through every stage, the fleet stage included
        pre_market_clock.advance(61 * NS_PER_S)
        metrics.trade(60)
        runner.execute(rollout, rollout.step(metrics.metrics()))
    assert rollout.state.status is RolloutStatus.COMPLETED and not halts.requests
    assert rollout.state.switched_on == ("n1", "n2", "n3")


def test_a_rollout_with_no_admitted_member_refuses_to_start(pre_market_clock: SimClock) -> None:
    members = [FleetMember("n1", False, "r2", {}), FleetMember("n2", False, "", {})]
    nodes, excluded = rollout_nodes(members)
    with pytest.raises(ValueError, match=r"no admitted node .*n1: not admitted, judged against"):
        Rollout.start(
            "r-1", RLP, True, nodes, PLAN, pre_market_clock, started_by="ops", excluded=excluded
        )


def test_plan_digest_names_the_plan_not_its_spelling() -> None:
    """What a rollout approval signs: the same plan however it was built or stored, and
    another digest for any change of stage, fraction, hold or gate."""
    built = RolloutPlan()
    stored = msgspec.json.decode(msgspec.json.encode(built), type=RolloutPlan)
    from_toml = msgspec.convert(
        {
            "stages": [
                {"name": "canary", "hold_s": 300, "nodes": 1},
                {"name": "quarter", "hold_s": 600, "fraction": 0.25},
                {"name": "fleet", "hold_s": 600, "fraction": 1},
            ]
        },
        RolloutPlan,
    )
    assert plan_digest(built) == plan_digest(stored) == plan_digest(from_toml)
    canary, quarter, fleet = built.stages
    changed = [
        msgspec.structs.replace(built, stages=(msgspec.structs.replace(canary, hold_s=299),
                                               quarter, fleet)),
        msgspec.structs.replace(built, stages=(canary, msgspec.structs.replace(
            quarter, fraction=0.5), fleet)),
        msgspec.structs.replace(built, stages=(canary, fleet)),
        msgspec.structs.replace(built, gates=built.gates[:1]),
        msgspec.structs.replace(built, halt_on_abort=False),
    ]  # fmt: skip
    digests = {plan_digest(p) for p in changed}
    assert len(digests) == len(changed) and plan_digest(built) not in digests


class FlakyStore(MemoryFlagStateStore):
    """The in-memory store behind a link that drops: while `down`, every call fails as the
    plane's store does when it cannot be reached (`StateUnavailable`)."""

    down = False

    def get(self, flag_id: str) -> FlagState | None:
        if self.down:
            raise StateUnavailable("flag state unreachable: timed out")
        return super().get(flag_id)


class FlakyHalts(HaltLog):
    """Halts through a kill switch that times out for the nodes in `failing`."""

    def __init__(self, failing: set[str]) -> None:
        super().__init__()
        self.failing = failing

    def halt(self, scope: Scope, key: str, reason: str, actor: str) -> None:
        if key in self.failing:
            raise TimeoutError(f"kill of {key} not confirmed")
        super().halt(scope, key, reason, actor)


def _canary_on(
    flag_registry: FlagRegistry, make_fleet, clock: SimClock, halts: HaltLog
) -> tuple[FlakyStore, RolloutRunner, Rollout, Fleet]:
    store = FlakyStore()
    never = ActivationPolicy(second_approver=SecondApprover.NEVER)
    gate = ActivationGate(flag_registry, make_fleet(), store, clock, never)
    runner = RolloutRunner(gate, halts, "test")
    nodes = [f"n{i}" for i in range(1, 9)]
    fleet = Fleet(nodes)
    rollout, actions = Rollout.start("r#1", RLP, True, nodes, PLAN, clock, "alice")
    runner.execute(rollout, actions)
    rollout.step(fleet.metrics())
    fleet.trade(50)
    clock.advance(61 * NS_PER_S)
    runner.execute(rollout, rollout.step(fleet.metrics()))  # quarter: n1, n2 on
    assert rollout.state.switched_on == ("n1", "n2")
    return store, runner, rollout, fleet


def test_an_abort_requests_its_halts_when_the_switch_off_cannot_be_written(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock
) -> None:
    """The abort's switch-off raised (the flag store unreachable) and the halts after it were
    never requested: the runaway canary kept trading with the flag on. The halts go through
    the kill switch, another path: they are requested whatever the store does, and the
    failure is recorded with the rollout, not lost."""
    halts = HaltLog()
    store, runner, rollout, fleet = _canary_on(flag_registry, make_fleet, pre_market_clock, halts)
    store.down = True
    metrics = fleet.metrics()
    metrics["n2"]["order_rate_ratio"] = 15.5
    outcomes = runner.execute(rollout, rollout.step(metrics))
    assert [key for _, key, _ in halts.requests] == ["n1", "n2"]
    assert rollout.state.status is RolloutStatus.ABORTED
    assert any("flag state unreachable" in line for line in outcomes), outcomes
    failed = [e for e in rollout.state.events if e.kind == "action_failed"]
    assert failed and "flag state unreachable" in failed[0].detail


def test_one_halt_that_fails_does_not_keep_the_next_from_being_requested(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock
) -> None:
    halts = FlakyHalts({"n1"})
    _, runner, rollout, _ = _canary_on(flag_registry, make_fleet, pre_market_clock, halts)
    outcomes = runner.execute(rollout, rollout.abort("operator: stop"))
    assert [key for _, key, _ in halts.requests] == ["n2"]
    assert any("n1" in line and "not confirmed" in line for line in outcomes), outcomes


def test_a_promotion_that_cannot_be_written_aborts_and_halts_what_may_be_on(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock
) -> None:
    """A stage whose switch-on raised may have landed (a timeout after the write): it is
    judged as a refused stage, so the rollout aborts, and its nodes are halted with the
    ones already on, never left running a path nobody is watching."""
    halts = HaltLog()
    store, runner, rollout, fleet = _canary_on(flag_registry, make_fleet, pre_market_clock, halts)
    rollout.step(fleet.metrics())
    fleet.trade(50)
    pre_market_clock.advance(61 * NS_PER_S)
    actions = rollout.step(fleet.metrics())  # the fleet stage: n3..n8
    assert actions and isinstance(actions[0], SetFlag) and actions[0].value is True
    store.down = True
    runner.execute(rollout, actions)
    assert rollout.state.status is RolloutStatus.ABORTED
    assert "flag state unreachable" in rollout.state.abort_reason
    assert [key for _, key, _ in halts.requests] == [f"n{i}" for i in range(1, 9)]
