"""`rollout start --confirm-timeout` and the unconfirmed nodes in `rollout status`.

The driver waits `confirm_s` for the exposed nodes' confirmations before a promotion, but
the command offered no way to set it: on a fleet whose nodes confirm slower than 5 s every
promotion held. And `rollout status` named the nodes that had not confirmed their stage
only once a promotion was judged: through a stage's whole hold it showed "2/2 node(s) on",
healthy, with a node that refused the stage sitting at the safe default.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import msgspec
import pytest
from click.testing import Result
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.clock import SimClock, SystemClock
from knightwatch.control.fleet import rollout as fleet_rollout
from knightwatch.control.node.flags import FlagApplied, applied_key, state_key
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import NodeMetrics, NodeStatus, Verdict
from knightwatch.control.site import Site
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.rollout import (
    HealthGate,
    Rollout,
    RolloutPlan,
    RolloutState,
    RolloutStatus,
    Stage,
)
from knightwatch.flags.state import FlagState
from knightwatch.state import TradingState

CLEAN = Path(__file__).parents[1] / "flags" / "fixtures" / "clean_repo"
DARK = "ops.dashboard.dark_mode"
RLP_ID = "trading.smars.rlp_enabled"


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "301", "5s", ""])
def test_a_bad_confirm_timeout_is_refused_naming_the_option_before_anything_starts(
    value: str,
) -> None:
    result = CliRunner().invoke(
        app, ["rollout", "start", "ops.a", "--confirm-timeout", value], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--confirm-timeout'" in result.output, result.output
    assert "Traceback" not in result.output


def test_the_confirm_timeout_given_is_the_drivers_wait(
    nats_server: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver the command builds waits what `--confirm-timeout` says (the rollout
    itself is refused here, the flag not in the registry: nothing starts)."""
    waits: list[float] = []
    real = fleet_rollout.RolloutDriver.__init__

    def spy(self: fleet_rollout.RolloutDriver, *args: object, **kwargs: object) -> None:
        real(self, *args, **kwargs)  # type: ignore[arg-type]
        waits.append(self.confirm_s)

    monkeypatch.setattr(fleet_rollout.RolloutDriver, "__init__", spy)
    env = {"COLUMNS": "300", **nats_server.cli_env("alice")}
    args = ["rollout", "start", "ops.none", "--registry", str(CLEAN / "feature-flags.yaml")]
    for given, expected in (["--confirm-timeout", "30"], 30.0), ([], 5.0):
        result = CliRunner().invoke(app, [*args, *given], env=env)
        assert result.exit_code == 2, result.output
        assert "ops.none: not in the flag registry" in result.output, result.output
        assert waits[-1] == expected, waits


def test_status_names_an_exposed_node_that_did_not_confirm_its_stage_between_steps(
    nats_server: Site,
) -> None:
    """The canary stage exposed n1 and n2 at flag state revision 3; n1 confirmed it, n2
    refused it. No promotion was judged yet (no hold reason): status said the rollout was
    progressing with 2/2 nodes on and nothing else."""
    plan = RolloutPlan(
        stages=(Stage("canary", hold_s=600, nodes=2), Stage("fleet", hold_s=1, fraction=1.0)),
        gates=(HealthGate("reject_ratio", max=0.05),),
    )
    rollout, _ = Rollout.start("ops.a-1", "ops.a", True, ["n1", "n2"], plan, SimClock(0), "alice")
    state = msgspec.structs.replace(rollout.state, switched_on=("n1", "n2"))
    assert state.exposed == ("n1", "n2") and state.hold_reason == ""
    refusal = "ops.a r3: approval_invalid: the approval does not cover n2"

    async def store() -> None:
        now = SystemClock().time_ns()
        alice = await nats_server.connect("alice")
        n1 = await nats_server.connect("n1")
        n2 = await nats_server.connect("n2")
        try:
            await alice.put_record(Bucket.ROLLOUTS, "ops.a", msgspec.json.encode(state))
            flag = FlagState("ops.a", 3, {"n1": True, "n2": True})
            await alice.put_record(Bucket.FLAGS, state_key("ops.a"), msgspec.json.encode(flag))
            applied = FlagApplied("ops.a", "n1", 3, now)
            await n1.put_record(
                Bucket.FLAGS, applied_key("ops.a", "n1"), msgspec.json.encode(applied)
            )
            for plane, node, last in ((n1, "n1", ""), (n2, "n2", refusal)):
                await plane.put_member(
                    NodeStatus(node, "h", 1, now, now, now + 10**12, True, True,
                               TradingState.ACTIVE, refused=int(bool(last)), last_refusal=last)
                )  # fmt: skip
        finally:
            for plane in (alice, n1, n2):
                await plane.close()

    asyncio.run(store())
    env = {"COLUMNS": "300", **nats_server.cli_env("alice")}
    result = CliRunner().invoke(app, ["rollout", "status", "ops.a"], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "ops.a-1: progressing stage canary, 2/2 node(s) on" in result.output, result.output
    assert f"n2 (refused: {refusal})" in result.output, result.output
    assert "flag state revision 3 not confirmed by" in result.output, result.output
    assert "n1 (" not in result.output, result.output
    as_json = CliRunner().invoke(app, ["rollout", "status", "ops.a", "--json"], env=env)
    shown = json.loads(as_json.stdout)
    assert shown[0]["unconfirmed"] == {"n2": f"refused: {refusal}"}, shown


def test_a_held_rollout_of_zero_holds_is_judged_once_a_tick_not_in_a_busy_loop(
    nats_server: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan whose stages hold 0 s (a test fleet's): `rollout start` ran the driver with
    a timeout of the plan's total hold, 0, so a rollout holding for evidence (no orders yet)
    was stepped again at once, forever: a core spent, and the control plane asked for the
    rollout, the members and the kill state as fast as it answered. Now once a tick (1 s)."""
    registry = tmp_path / "feature-flags.yaml"  # dark mode active: no second person asked
    text = (CLEAN / "feature-flags.yaml").read_text()
    registry.write_text(text.replace("lifecycle: proposed", "lifecycle: active", 1))
    schema = FlagRegistry.load(registry).schema()
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[[stages]]\nname = "canary"\nhold_s = 0\nnodes = 1\n'
        '[[stages]]\nname = "fleet"\nhold_s = 0\nfraction = 1.0\n'
        '[[gates]]\nmetric = "reject_ratio"\nmax = 0.05\n'
    )
    steps: list[float] = []
    real = fleet_rollout.RolloutDriver.step

    async def counted(self: fleet_rollout.RolloutDriver, flag_id: str) -> RolloutState:
        steps.append(time.monotonic())
        return await real(self, flag_id)

    monkeypatch.setattr(fleet_rollout.RolloutDriver, "step", counted)

    async def fleet_of_n1() -> None:
        now = SystemClock().time_ns()
        n1 = await nats_server.connect("n1")
        admission = await nats_server.connect("admission")
        try:
            await n1.put_member(
                NodeStatus("n1", "h", 1, now, now, now + 10**12, True, True, TradingState.ACTIVE)
            )
            verdict = Verdict("n1", True, "admitted", "r2", "d" * 64, (), now, schema)
            await admission.put_record(Bucket.ADMISSION, "n1", msgspec.json.encode(verdict))
        finally:
            await n1.close()
            await admission.close()

    async def stored() -> tuple[RolloutState | None, int]:
        plane = await nats_server.connect("alice")
        try:
            value, revision = await plane.get_record(Bucket.ROLLOUTS, DARK)
        finally:
            await plane.close()
        return (None if value is None else msgspec.json.decode(value, type=RolloutState)), revision

    async def aborted() -> None:  # as `rollout abort` records it (its switch-off aside)
        plane = await nats_server.connect("alice")
        try:
            value, revision = await plane.get_record(Bucket.ROLLOUTS, DARK)
            assert value is not None
            state = msgspec.json.decode(value, type=RolloutState)
            done = msgspec.structs.replace(state, status=RolloutStatus.ABORTED)
            await plane.put_record(
                Bucket.ROLLOUTS, DARK, msgspec.json.encode(done), expected_revision=revision
            )
        finally:
            await plane.close()

    asyncio.run(fleet_of_n1())
    quiet = threading.Event()

    async def publish() -> None:  # n1 trades cleanly, too little yet to be promoted
        n1 = await nats_server.connect("n1")
        try:
            orders = 0
            while not quiet.is_set():
                orders += 1
                await n1.publish_metrics(
                    NodeMetrics("n1", SystemClock().time_ns(), orders, orders, 0, 0, 0.0, 0.0,
                                True, 0)
                )  # fmt: skip
                await asyncio.sleep(0.5)  # a node's default metrics interval
        finally:
            await n1.close()

    metrics = threading.Thread(target=asyncio.run, args=(publish(),), daemon=True)
    metrics.start()
    env = {"COLUMNS": "300", **nats_server.cli_env("alice")}
    results: list[Result] = []
    args = ["rollout", "start", DARK, "--plan", str(plan), "--registry", str(registry)]
    runner = threading.Thread(
        target=lambda: results.append(CliRunner().invoke(app, args, env=env)), daemon=True
    )
    runner.start()
    deadline = time.monotonic() + 20
    while (state := asyncio.run(stored())[0]) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state is not None and state.status is RolloutStatus.PROGRESSING, state
    time.sleep(0.5)
    first = len(steps)
    time.sleep(2.0)
    during = len(steps) - first
    held = asyncio.run(stored())[0]
    assert held is not None and held.status is RolloutStatus.PROGRESSING, held
    assert not any(e.kind == "gate_failed" for e in held.events), held.events
    asyncio.run(aborted())
    runner.join(20)
    quiet.set()
    metrics.join(5)
    assert not runner.is_alive()
    assert results and results[0].exit_code == 1, results and results[0].output
    assert "dark_mode-1: aborted" in results[0].output, results[0].output
    assert during <= 4, f"{during} steps in 2 s"


def test_an_abort_names_the_exposed_nodes_that_did_not_confirm_the_switch_off(
    nats_server: Site,
) -> None:
    """`rollout abort` wrote the switch-off and said "aborted" (exit 0) whether or not the
    exposed nodes took it: a node partitioned from the store stayed on the new path while
    the operator read the stop as done. `flags set off` waits for its nodes and names the
    missing ones; the abort now does too (`--timeout`), exit 1 when one did not confirm."""
    plan = RolloutPlan(
        stages=(Stage("canary", hold_s=600, nodes=2),),
        gates=(HealthGate("reject_ratio", max=0.05),),
        halt_on_abort=False,
    )
    rollout, _ = Rollout.start(RLP_ID, RLP_ID, True, ["n1", "n2"], plan, SimClock(0), "alice")
    state = msgspec.structs.replace(rollout.state, rollout_id=f"{RLP_ID}-1")

    async def store() -> None:
        now = SystemClock().time_ns()
        alice = await nats_server.connect("alice")
        n1 = await nats_server.connect("n1")
        try:
            await alice.put_record(Bucket.ROLLOUTS, RLP_ID, msgspec.json.encode(state))
            # n1 has confirmed every revision this test will write (its own record)
            applied = FlagApplied(RLP_ID, "n1", 1_000, now)
            await n1.put_record(
                Bucket.FLAGS, applied_key(RLP_ID, "n1"), msgspec.json.encode(applied)
            )
        finally:
            await alice.close()
            await n1.close()

    asyncio.run(store())
    env = {"COLUMNS": "300", **nats_server.cli_env("alice")}
    result = CliRunner().invoke(
        app,
        ["rollout", "abort", RLP_ID, "--reason", "stop", "--timeout", "0.3", "--registry",
         str(CLEAN / "feature-flags.yaml")],
        env=env,
    )  # fmt: skip
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert f"{RLP_ID}-1: aborted" in result.output, result.output
    assert "not confirmed: flag state revision 1 not confirmed by n2 (no confirmation within " \
        "0.3 s)" in result.output, result.output  # fmt: skip
    assert "may still be on the new path" in result.output, result.output
    assert "n1 (" not in result.output, result.output
    assert result.exit_code == 1, result.output
