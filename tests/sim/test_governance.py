"""Release and flag governance in the replay: attestation, flag schema and rollout layers."""

from __future__ import annotations

from pathlib import Path

import msgspec
from typer.testing import CliRunner

from knightwatch.audit.chain import SEAL, Seal
from knightwatch.cli.app import app
from knightwatch.flags.rollout import RolloutPlan, Stage
from knightwatch.sim.layers import resolve
from knightwatch.sim.recording import TailSink
from knightwatch.sim.replay import Replay, ReplayResult
from knightwatch.sim.scenario import Scenario, load, loads

SMALL = Path(__file__).parents[2] / "examples" / "scenario-small.toml"


def run(guards: str, scenario: Scenario | None = None) -> ReplayResult:
    return Replay(scenario or load(SMALL), resolve(guards)).run()


def what(r: ReplayResult, layer: str) -> list[str]:
    return [e.what for e in r.events if e.layer == layer]


def test_attestation_refuses_the_stale_node_and_the_rollback() -> None:
    none, r = run("none"), run("attestation")
    assert none.per_node["n4"].executions > 0
    stale = r.per_node["n4"]
    assert not stale.admitted and stale.orders == 0 and stale.executions == 0
    assert all(s.admitted for n, s in r.per_node.items() if n != "n4")
    refusals = what(r, "attestation")
    assert any("refused admission" in w and "flag_schema_mismatch" in w for w in refusals)
    assert any("rollback to old refused: flag_redefined_in_registry" in w for w in refusals)
    assert all(s.release == "new" for n, s in r.per_node.items() if n != "n4")
    assert r.runaway_executions == 0 and r.loss_usd == 0


def test_flag_schema_refuses_activation_on_the_skewed_fleet_naming_the_node() -> None:
    r = run("flag_schema")
    refused = what(r, "flag_schema")
    assert len(refused) == 1
    assert "schema_hash_mismatch" in refused[0] and "node n4" in refused[0]
    assert r.runaway_executions == 0 and r.loss_usd == 0
    # The rollback still happens (no admission), but the flag is at its safe default.
    assert any(w.startswith("rollback: every node now runs old") for w in what(r, "operator"))


def test_rollout_gate_aborts_when_the_rollback_wakes_power_peg_on_the_canary() -> None:
    none, r = run("none"), run("rollout")
    rollout = what(r, "rollout")
    assert rollout[0].startswith("started: stage canary: 1/4")
    aborted = [w for w in rollout if w.startswith("aborted: health gate failed: n1")]
    assert aborted, rollout
    assert r.contained_after_s is not None and 30.0 <= r.contained_after_s <= 32.0
    assert r.loss_usd < none.loss_usd / 10


def test_rollout_with_the_stale_node_first_aborts_right_after_the_open() -> None:
    sc = load(SMALL)
    stale_first = msgspec.structs.replace(
        sc,
        fleet=msgspec.structs.replace(sc.fleet, missed_deploy=["n1"]),
        timeline=msgspec.structs.replace(sc.timeline, rollback_s=None),
    )
    rp = Replay(stale_first, resolve("rollout"))
    r = rp.run()
    assert any(w.startswith("aborted: health gate failed: n1") for w in what(r, "rollout"))
    # Gates read the supervisor's 1 s window every 1 s sample: the canary's ratio is 2.8 at
    # 1.1 s (its first window is mostly before the runaway) and 15 at 2.1 s, when it aborts.
    assert r.contained_after_s is not None and r.contained_after_s <= 2.2
    assert not rp.node("n1").flag_on, "the flag went back to its safe default on the canary"
    state = rp.governance.store.get(sc.deploy.flag)
    assert state is not None and state.value_for("n1") is False


def test_every_knight_parent_arrives_before_the_open() -> None:
    sc = load("knight-2012")
    rp = Replay(sc, ())
    parents = sc.parent_orders(rp.symbols, rp.seed)
    assert len(parents) == 212 and all(p.arrival_ns <= sc.open_ns for p in parents)


def test_replays_without_a_report_keep_only_the_chain_head_in_memory() -> None:
    rp = Replay(load(SMALL), resolve("parent_reconciliation"))
    rp.run()
    guard = rp.nodes[0].guard
    assert guard is not None
    sink = guard.recorder._sink
    assert isinstance(sink, TailSink)
    assert guard.recorder.seq > 10 and sink.last is not None
    seal = msgspec.json.decode(sink.last, type=Seal)
    assert seal.kind == SEAL and seal.hash == guard.recorder.head


def test_report_writes_a_flight_recorder_per_node_that_audit_why_reads(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["replay", str(SMALL), "--guards", "parent_reconciliation", "--report", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    files = sorted((tmp_path / "audit").glob("*.jsonl"))
    assert [f.stem for f in files] == ["n1", "n2", "n3", "n4"]
    verify = CliRunner().invoke(app, ["audit", "verify", str(files[3])])
    assert verify.exit_code == 0, verify.output
    why = CliRunner().invoke(app, ["audit", "why", "n4-1", str(files[3])])
    assert why.exit_code == 0, why.output
    assert "n4-1" in why.output


def test_a_refused_node_takes_no_lease_and_never_arms_because_its_runtime_says_so() -> None:
    """Admission runs the live path: Attestor -> AdmissionService -> NodeRuntime."""
    rp = Replay(load(SMALL), resolve("attestation"))
    assert rp.control is not None
    stale = rp.control.runtime("n4")
    assert stale.verdict is not None and not stale.verdict.admitted
    assert not stale.admitted and not stale.release_admitted, "no lease, no admission"
    assert not stale.guard.armed
    good = rp.control.runtime("n1")
    assert good.admitted and good.release_admitted and good.guard.armed
    view = {m.node: m for m in rp.control.members()}
    assert not view["n4"].admitted and view["n4"].flag_schema == {}
    assert view["n1"].admitted and view["n1"].release_id == "new"
    r = rp.run()
    assert any(w.startswith("arming refused: node n4 cannot arm") for w in what(r, "attestation"))


def test_a_canary_that_sends_nothing_holds_the_rollout() -> None:
    """RLP parents rest, so the canary sends no order: healthy, but no evidence."""
    sc = load(SMALL)
    quiet = msgspec.structs.replace(
        sc,
        fleet=msgspec.structs.replace(sc.fleet, missed_deploy=[]),
        timeline=msgspec.structs.replace(sc.timeline, rollback_s=None),
        rollout=RolloutPlan(
            stages=(Stage("canary", hold_s=10, nodes=1), Stage("fleet", hold_s=10, fraction=1.0))
        ),
    )
    rp = Replay(quiet, resolve("rollout"))
    r = rp.run()
    rollout = what(r, "rollout")
    assert not any(w.startswith("promoted") for w in rollout), rollout
    assert any(w.endswith("n1: fewer than 50 orders in the stage") for w in rollout), rollout
    state = rp.governance.store.get(sc.deploy.flag)
    assert state is not None and dict(state.node_values) == {"n1": True}


def test_knight_2012_all_guards_never_promotes_and_the_stale_node_holds_no_lease() -> None:
    rp = Replay(load("knight-2012"), resolve("all"))
    assert rp.control is not None
    n8 = rp.control.runtime("n8")
    r = rp.run()
    assert not n8.admitted and not n8.guard.armed and not r.per_node["n8"].admitted
    rollout = what(r, "rollout")
    assert not any(w.startswith("promoted") for w in rollout), rollout
    # the canary's RLP parents rest: no evidence, no promotion; no runaway, so no kill either
    assert rollout[-1] == "held: stage canary: n1: fewer than 50 orders in the stage"
    assert not r.control_actions
    assert r.runaway_executions == 0 and r.loss_usd == 0


def test_a_rollout_on_a_fleet_with_a_refused_node_completes_on_the_others_and_halts_none() -> None:
    """n4 missed the deploy and is refused admission. Left in the rollout's list it would
    refuse the fleet stage, abort the rollout and halt the healthy nodes (and the
    supervisor would re-issue those halts); left out by name, the rollout completes."""
    text = SMALL.read_text(encoding="utf-8")
    for old, new in (
        ("duration_s = 120", "duration_s = 400"),
        ("rollback_s = 30\n", ""),
        ('flags = { "orders.rlp" = "rlp" }', 'flags = { "orders.rlp" = "smars" }'),
        ("arrival_end_s = 60", "arrival_end_s = 300"),
        ("count = 24", "count = 120"),
        ("rate_floor_per_s = 5.0", "rate_floor_per_s = 20.0"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    text += (
        "\n[rollout]\nmin_orders_per_node = 1\nstages = [\n"
        '  { name = "canary", hold_s = 10, nodes = 1 },\n'
        '  { name = "half", hold_s = 10, fraction = 0.5 },\n'
        '  { name = "fleet", hold_s = 10, fraction = 1.0 },\n]\n'
    )
    r = Replay(loads(text, "t.toml"), resolve("attestation,rollout,supervisor")).run()
    rollout = what(r, "rollout")
    assert rollout[0].startswith("excluded: not admitted, left out of the rollout: n4")
    assert "runs old" in rollout[0]
    assert rollout[-1] == "completed: 3 node(s) held healthy through every stage"
    assert not r.control_actions, r.control_actions  # no abort, no halt, nothing re-issued
    assert r.parents_completed == r.parents == 120
