"""Control-plane layers in the replay: the real Supervisor and KillSwitch on the memory plane."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.clock import SimClock
from knightwatch.control.fleet.supervisor import Rule, SupervisorConfig
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard
from knightwatch.incident.ramp import RampPlan
from knightwatch.limits import Limits
from knightwatch.order import Order, Side
from knightwatch.sim.fleet import SimulatedFleet, SimulatedRamp
from knightwatch.sim.layers import Layer, resolve
from knightwatch.sim.replay import Replay, ReplayResult
from knightwatch.sim.report import ReplayReport
from knightwatch.sim.scenario import Scenario, ScenarioError, load, loads
from knightwatch.sim.setup import LayerSetup
from knightwatch.state import Scope, TradingState

from ..control.fleet_fixtures import POLICY

MS = 1_000_000

SMALL = Path(__file__).parents[2] / "examples" / "scenario-small.toml"


def replay(guards: str, scenario: Scenario | None = None) -> tuple[Replay, ReplayResult]:
    rep = Replay(scenario or load(SMALL), resolve(guards))
    return rep, rep.run()


def comparable(r: ReplayResult) -> dict[str, Any]:
    s = r.summary()
    del s["wall_seconds"]
    return s


@pytest.mark.parametrize(("scenario", "stale"), [(SMALL, "n4"), ("knight-2012", "n8")])
def test_supervisor_alone_halts_the_stale_node_seconds_after_its_runaway_starts(
    scenario: Path | str, stale: str
) -> None:
    rep, r = replay("supervisor", load(scenario))
    assert r.runaway_from_s is not None and r.automatic_halt_s is not None
    assert 0 < r.automatic_halt_s - r.runaway_from_s <= 1.5
    first = r.control_actions[0]
    # the first overfills are the firm's own flow, and an agency router has none normally
    assert (first.actor, first.rule, first.scope, first.key) == (
        "supervisor",
        Rule.PRINCIPAL_FLOW.value,
        "node",
        stale,
    )
    assert "principal_notional" in first.reason and "learned baseline" in first.reason
    assert first.confirmed == [stale] and not first.missing
    # The halt reached the stale node's Guard through the control plane, and only that node.
    guard = rep.node(stale).guard
    assert guard is not None
    assert guard.trading_state(Scope.NODE, stale) is TradingState.HALTED
    assert guard.halts()[(Scope.NODE, stale)].actor == "supervisor"
    runtime = next(n for n in rep.control.nodes if n.node_id == stale)  # type: ignore[union-attr]
    assert any(c.node_id == stale and c.state is TradingState.HALTED for c in runtime.confirmed)
    none = Replay(load(scenario), ()).run()
    assert r.loss_usd < none.loss_usd / 10
    assert first.orders_before < none.per_node[stale].orders / 100


def test_kill_switch_halts_every_node_at_the_reaction_time_with_a_confirmation_from_each() -> None:
    sc = load(SMALL)
    rep, r = replay("kill_switch", sc)
    assert r.runaway_from_s is not None
    at = round(r.runaway_from_s + sc.timeline.notice_s + sc.timeline.reaction_s, 3)
    assert [(a.t_s, a.rule, a.scope, a.state) for a in r.control_actions] == [
        (at, "manual_kill", "fleet", "HALTED")
    ]
    assert r.control_actions[0].confirmed == ["n1", "n2", "n3", "n4"]
    assert r.automatic_halt_s is None, "an operator's kill is not an automatic halt"
    assert r.contained_after_s is not None and r.contained_after_s <= at
    for node in rep.nodes:
        assert node.guard is not None
        assert node.guard.limits.lease_timeout_s == sc.control.lease_timeout_s
        assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        halt = node.guard.halts()[(Scope.FLEET, "fleet")]
        assert halt.actor == "operator", "who acted is whoever signed: the replay's operator"
        assert halt.reason.startswith("operator:kill_switch: "), "the layer that asked, in the why"
        assert RejectReason.LEASE_EXPIRED.value not in node.first_block, "heartbeats keep leases"


class _ServerLost(Layer):
    """The control plane becomes unreachable 10 s after the open."""

    name = "server_lost"

    def configure(self, setup: LayerSetup) -> None:
        def lose(replay: Replay) -> None:
            assert replay.control is not None
            replay.control.fabric.reachable = False

        setup.schedule(10.0, self.name, lose)


def test_with_the_control_plane_gone_every_lease_runs_out_and_nothing_more_trades() -> None:
    sc = load(SMALL)
    rep = Replay(sc, (*resolve("kill_switch"), _ServerLost()))
    r = rep.run()
    # The fleet stopped by itself within its lease: by the person's kill there is nothing left
    # running, and a kill sent now could not be delivered anyway.
    assert not r.control_actions
    kills = [e.what for e in r.events if e.layer == "kill_switch"]
    assert kills == ["no kill: the runaway was already stopped"]
    assert all(n.first_block.get(RejectReason.LEASE_EXPIRED.value) for n in rep.nodes if n.sent)
    assert r.contained_after_s is not None
    assert r.contained_after_s <= 10.0 + sc.control.lease_timeout_s
    assert r.longest_runaway_s is not None


class _KillDuringOutage(Layer):
    name = "kill_during_outage"

    def configure(self, setup: LayerSetup) -> None:
        setup.schedule(15.0, self.name, lambda r: r.operator_kill("kill_switch", "at 15 s"))


def test_a_kill_sent_while_the_control_plane_is_down_is_reported_not_delivered() -> None:
    r = Replay(load(SMALL), (*resolve("kill_switch"), _ServerLost(), _KillDuringOutage())).run()
    assert not r.control_actions
    assert any(
        e.what.startswith("kill not delivered") for e in r.events if e.layer == "kill_switch"
    )


def test_errors_before_arming_keep_the_node_disarmed_and_the_supervisor_halts_it() -> None:
    text = SMALL.read_text().replace(
        'strategy = "router"', 'strategy = "router"\npre_open_errors = { n4 = 3 }'
    )
    _, r = replay("supervisor", loads(text))
    assert r.per_node["n4"].executions == 0 and r.runaway_from_s is not None
    first = r.control_actions[0]
    # the nodes' first metrics go out at the open: the supervisor acts on them at once
    assert (first.rule, first.key, first.t_s) == (Rule.ERRORS_BEFORE_ARMING.value, "n4", 0.0)
    assert any(e.what.startswith("arming refused") and e.node == "n4" for e in r.events)
    # Without the control plane nobody reads them (2012): the node arms and runs away.
    assert Replay(loads(text), ()).run().per_node["n4"].executions > 1000


def test_control_layers_are_deterministic_and_in_all_and_the_report() -> None:
    a = replay("kill_switch,supervisor")[1]
    b = replay("kill_switch,supervisor")[1]
    assert comparable(a) == comparable(b)
    # the supervisor stops every node before the person's kill at 60 s: the run ends there
    assert {x.actor for x in a.control_actions} == {"supervisor"}
    sc = load(SMALL)
    assert a.simulated_s < sc.timeline.notice_s + sc.timeline.reaction_s
    names = [layer.name for layer in resolve("all")]
    assert "supervisor" in names and "kill_switch" in names and "manual_kill" not in names
    report = ReplayReport(a, load(SMALL).record)
    titles = [title for title, _, _ in report.sections()]
    assert any(t.startswith("control-plane commands") for t in titles)
    out = report.json()
    assert out["automatic_halt_s"] == a.automatic_halt_s
    assert out["control_actions"][0]["confirmed"]


def test_cli_writes_control_actions_to_json_and_html(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "replay",
            str(SMALL),
            "--guards",
            "supervisor,kill_switch",
            "--json",
            str(tmp_path / "s.json"),
            "--report",
            str(tmp_path / "rep"),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["automatic_halt_s"] is not None
    assert {a["rule"] for a in data["control_actions"]} >= {"supervisor_principal_flow"}
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "control-plane commands" in page and "supervisor_principal_flow" in page


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("rate_multiple = 5.0", "rate_multiple = 0.5", "supervisor.rate_multiple: must be > 1"),
        ("rate_multiple = 5.0", "rate_multipel = 6", "supervisor.rate_multipel: unknown key"),
        ("heartbeat_s = 0.15", "heartbeat_s = 0.5", "control.lease_timeout_s: must be >= 3 x"),
        (
            "metrics_s = 0.2",
            "metrics_s = 0.01",
            "control.metrics_s: must be in control.heartbeat_s",
        ),
        ('strategy = "router"', "pre_open_errors = { n9 = 1 }", "fleet.pre_open_errors.n9: must"),
    ],
)
def test_control_and_supervisor_tables_are_checked(old: str, new: str, message: str) -> None:
    text = SMALL.read_text()
    assert old in text
    with pytest.raises(ScenarioError) as err:
        loads(text.replace(old, new))
    assert message in str(err.value)


def test_lease_timeout_in_limits_is_refused_for_one_lease_policy() -> None:
    text = SMALL.read_text().replace("[limits]\n", "[limits]\nlease_timeout_s = 1.0\n")
    with pytest.raises(ScenarioError, match=r"limits.lease_timeout_s: set control.lease_timeout_s"):
        loads(text)


def test_supervisor_halts_a_simulated_runaway_and_a_kill_reaches_every_guard() -> None:
    clock = SimClock(1_000 * MS)
    guards = []
    for i in range(1, 5):
        g = Guard(Limits(lease_timeout_s=POLICY.lease_timeout_s), node=f"n{i}", clock=clock)
        g.on_price("AAPL", 100.0)
        g.arm("replay")
        guards.append(g)
    sim = SimulatedFleet(clock, guards, policy=POLICY, supervisor=SupervisorConfig())
    n = 0
    halted_at: int | None = None
    runaway_from = 1_000 * MS + 2_000 * MS
    for tick in range(500):  # 5 s of simulated time in 10 ms ticks
        clock.advance(10 * MS)
        for node in sim.nodes:
            per_tick = 4 if node.node_id == "n2" and clock.monotonic_ns() >= runaway_from else 0
            per_tick += 1 if tick % 5 == 0 else 0  # 20 orders/s
            for _ in range(per_tick):
                n += 1
                side = Side.BUY if n % 2 else Side.SELL
                node.check(Order(f"o{n}", "mm", "AAPL", side, 1, 100.0))
        for action, _ in sim.step():
            # Any signal of the runaway may come first: its rate, its Guard's blocks, or
            # what it offered (refused orders included) against its learned baseline.
            assert (
                action.rule
                in (
                    Rule.ORDER_RATE,
                    Rule.REJECT_SPIKE,
                    Rule.BASELINE_ORDER_RATE,
                )
                and action.key == "n2"
            )
            if halted_at is None:
                halted_at = clock.monotonic_ns()
    assert halted_at is not None
    assert 0 < halted_at - runaway_from <= 2_000 * MS  # within window + metrics cadence
    blocked = sim.nodes[1].check(Order("late", "mm", "AAPL", Side.BUY, 1, 100.0))
    assert blocked.reason is RejectReason.HALTED
    assert sim.nodes[0].check(Order("ok", "mm", "AAPL", Side.BUY, 1, 100.0)).accepted
    result = sim.kill(Scope.FLEET, "fleet", "operator kill in replay")
    assert result.ok and sorted(result.latencies_ms) == ["n1", "n2", "n3", "n4"]
    assert all(v == 0 for v in result.latencies_ms.values())  # simulated time does not move
    sim.close()


def test_nobody_kills_a_fleet_that_never_ran_away() -> None:
    """The person reacts to a runaway; with the stale node's flag off there is none."""
    text = SMALL.read_text().replace('missed_deploy = ["n4"]', "missed_deploy = []")
    text = text.replace("rollback_s = 30\n", "")  # and no rollback
    r = replay("kill_switch", loads(text, "clean.toml"))[1]
    assert r.runaway_from_s is None and not r.control_actions


def _ramp_fleet() -> tuple[SimClock, SimulatedFleet]:
    clock = SimClock(1_000 * MS)
    guards = []
    for i in range(1, 4):
        limits = Limits(lease_timeout_s=POLICY.lease_timeout_s, max_orders_per_s_node=100)
        g = Guard(limits, node=f"n{i}", clock=clock)
        g.on_price("AAPL", 100.0)
        g.arm("replay")
        guards.append(g)
    return clock, SimulatedFleet(clock, guards, policy=POLICY)


def test_a_simulated_ramp_applies_each_stage_before_and_after_the_resume_and_completes() -> None:
    clock, sim = _ramp_fleet()
    sim.kill(Scope.FLEET, "fleet", "incident")
    plan = RampPlan.instant((0.1, 0.5, 1.0), 1.0)
    ramp = SimulatedRamp(sim, plan, Scope.FLEET, "fleet", "preflight passed", "operator:alice")
    resumed = ramp.start()
    assert resumed is not None and resumed.ok
    # stage one was in every Guard before the resume reached it
    assert all(n.guard.limits.max_orders_per_s_node == 10 for n in sim.nodes)
    assert all(n.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE for n in sim.nodes)
    seen = []
    for _ in range(400):  # 4 s of 10 ms ticks
        clock.advance(10 * MS)
        sim.step()
        assert ramp.step() is None
        seen.append(sim.nodes[0].guard.limits.max_orders_per_s_node)
        if ramp.done:
            break
    assert ramp.done and ramp.record.status == "done" and ramp.trip is None
    assert list(dict.fromkeys(seen)) == [10, 50, 100]
    assert all(n.guard.limits.version.find("@") < 0 for n in sim.nodes)


def test_a_simulated_ramp_trips_on_a_block_spike_with_one_kill_confirmed_by_every_node() -> None:
    clock, sim = _ramp_fleet()
    sim.kill(Scope.FLEET, "fleet", "incident")
    ramp = SimulatedRamp(sim, RampPlan(), Scope.FLEET, "fleet", "resume", "operator:alice")
    assert ramp.start() is not None
    n = 0
    trip = None
    for _ in range(100):  # a runaway at 1,000 orders/s on n2 against 10/s at stage one
        clock.advance(10 * MS)
        for _ in range(10):
            n += 1
            sim.nodes[1].check(Order(f"o{n}", "mm", "AAPL", Side.BUY, 1, 100.0))
        sim.step()
        trip = ramp.step()
        if trip is not None:
            break
    assert trip is not None and trip.ok and sorted(trip.latencies_ms) == ["n1", "n2", "n3"]
    assert ramp.record.status == "tripped" and "block-rate spike on node n2" in (
        ramp.record.trip_reason
    )
    assert clock.monotonic_ns() - ramp.resumed.entry.issued_ns <= 1_000 * MS  # type: ignore[union-attr]
    assert all(n.guard.trading_state(Scope.FLEET) is TradingState.HALTED for n in sim.nodes)
    # a tripped ramp keeps stage one's limits held until the next resume
    assert all(n.guard.limits.max_orders_per_s_node == 10 for n in sim.nodes)
