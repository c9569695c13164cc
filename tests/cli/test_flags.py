"""`knightwatch flags` command-line behaviour: bad options are one line, never a traceback."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import msgspec
import pytest
from click.testing import Result
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.clock import SimClock, SystemClock
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import NodeStatus, Verdict
from knightwatch.control.site import Site
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.rollout import HealthGate, Rollout, RolloutEvent, RolloutPlan, Stage
from knightwatch.state import TradingState

CLEAN = Path(__file__).parents[1] / "flags" / "fixtures" / "clean_repo"
RLP = "trading.smars.rlp_enabled"


def test_lint_json_to_a_directory_is_refused_before_the_scan(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(CLEAN, repo)
    result = CliRunner().invoke(
        app,
        ["flags", "lint", "--registry", str(repo / "feature-flags.yaml"), "--json", str(tmp_path)],
        env={"COLUMNS": "300"},
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    assert f"--json {tmp_path}: is a directory; --json must name a file" in result.output
    assert "scanning sources" not in result.output


def test_lint_with_an_empty_src_or_today_is_refused_not_widened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--src "$DIR"` with DIR unset must not scan the directory lint runs in (here one
    holding dead Power Peg code, which would fail the lint for the wrong tree), and
    `--today ""` is not today."""
    repo = tmp_path / "repo"
    shutil.copytree(CLEAN, repo)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "peg.py").write_text('if flags.is_enabled("trading.smars.power_peg"):\n    pass\n')
    monkeypatch.chdir(elsewhere)
    registry = str(repo / "feature-flags.yaml")
    for args, message in (
        (["--src", ""], "'--src': empty path"),
        (["--src", str(repo), "--today", ""], "--today: expected YYYY-MM-DD, got ''"),
    ):
        result = CliRunner().invoke(
            app, ["flags", "lint", "--registry", registry, *args], env={"COLUMNS": "300"}
        )
        assert result.exit_code in (1, 2) and message in result.output, result.output
        assert "scanning sources" not in result.output


# A URL nothing listens on: a command that got past its options would fail differently.
NOWHERE = "nats://127.0.0.1:1"


@pytest.mark.parametrize("blank", ["", "  "])
@pytest.mark.parametrize(
    "command",
    [
        ["flags", "set", "ops.dashboard.dark_mode", "on"],
        ["flags", "set", "trading.smars.rlp_enabled", "off"],
        [
            "flags",
            "approve",
            "trading.smars.rlp_enabled",
            "on",
            "--for",
            "alice",
            "--out",
            "a.json",
        ],
        ["rollout", "abort", "trading.smars.rlp_enabled"],
    ],
)
def test_a_change_with_a_blank_reason_is_refused_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], blank: str
) -> None:
    """`--reason "$WHY"` with WHY unset: every flag change and approval is on the record
    with why, so an empty reason is an error naming the option, not an unexplained change."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(CLEAN / "feature-flags.yaml", tmp_path / "feature-flags.yaml")
    result = CliRunner().invoke(
        app, [*command, "--reason", blank, "--nats-url", NOWHERE], env={"COLUMNS": "300"}
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    assert "--reason: empty; say why, for the record" in result.output, result.output
    assert not (tmp_path / "a.json").exists()


def test_a_rollout_plan_without_gates_is_refused_naming_the_file(tmp_path: Path) -> None:
    """A stage would be promoted on order counts alone: a runaway canary passes that."""
    plan = tmp_path / "plan.toml"
    plan.write_text("gates = []\n[[stages]]\nname = 'fleet'\nhold_s = 0\nfraction = 1.0\n")
    for command in (
        ["rollout", "start", "trading.smars.rlp_enabled", "--plan", str(plan)],
        ["flags", "approve", "trading.smars.rlp_enabled", "on", "--for", "alice", "--rollout",
         "--plan", str(plan), "--reason", "r", "--out", str(tmp_path / "a.json")],
    ):  # fmt: skip
        result = CliRunner().invoke(app, [*command, "--nats-url", NOWHERE], env={"COLUMNS": "300"})
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert result.exit_code == 1, result.output
        assert f"rollout plan {plan}: plan.gates: at least one health gate" in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_rollout_approval_is_not_narrowed_by_nodes_it_ignores(tmp_path: Path) -> None:
    """`flags approve --rollout --nodes n1` signed an approval of the rollout on every
    admitted node: the approver read n1, the file said the fleet."""
    out = tmp_path / "a.json"
    result = CliRunner().invoke(
        app,
        ["flags", "approve", "trading.smars.rlp_enabled", "on", "--for", "alice", "--rollout",
         "--nodes", "n1", "--reason", "r", "--out", str(out), "--nats-url", NOWHERE],
        env={"COLUMNS": "300"},
    )  # fmt: skip
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    assert "--nodes: not with --rollout" in result.output, result.output
    assert not out.exists()


def test_lint_with_an_empty_accessor_is_refused_not_narrowed(tmp_path: Path) -> None:
    """`--accessor "$NAME"` with NAME unset replaced the default accessors with one that
    matches no call, so a reference to an unknown flag through `is_enabled` passed."""
    repo = tmp_path / "repo"
    shutil.copytree(CLEAN, repo)
    (repo / "legacy.py").write_text('if flags.is_enabled("legacy.peg"):\n    route()\n')
    registry = str(repo / "feature-flags.yaml")
    base = ["flags", "lint", "--registry", registry, "--today", "2012-08-01"]
    found = CliRunner().invoke(app, base, env={"COLUMNS": "300"})
    assert found.exit_code == 1 and "[unknown_flag_reference]" in found.output, found.output
    result = CliRunner().invoke(app, [*base, "--accessor", ""], env={"COLUMNS": "300"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    assert "--accessor: empty name; leave the option out for the defaults" in result.output
    assert "scanning sources" not in result.output


def test_rollout_status_reports_an_unreadable_record_and_shows_the_others(
    nats_server: Site, tmp_path: Path
) -> None:
    """The rollouts bucket is operator-writable: a record that does not decode (or a
    plan the rules refuse) was a traceback that hid every other rollout, and text in a
    record was read as console markup (`[/x]` raised)."""
    plan = RolloutPlan(
        stages=(Stage("canary", hold_s=1, nodes=1),), gates=(HealthGate("x", max=1),)
    )
    rollout, _ = Rollout.start("ro-[/x]", "ops.a", True, ["n1"], plan, SimClock(0), "alice")
    good = msgspec.structs.replace(
        rollout.state, events=(RolloutEvent(10**30, "[/odd]", "[bold]detail"),)
    )
    no_gates: dict[str, object] = msgspec.to_builtins(rollout.state)
    no_gates["plan"] = {**msgspec.to_builtins(plan), "gates": []}

    async def store() -> None:
        plane = await nats_server.connect("alice")
        try:
            await plane.put_record(Bucket.ROLLOUTS, "ops.a", msgspec.json.encode(good))
            await plane.put_record(Bucket.ROLLOUTS, "ops.b", b"{not json")
            await plane.put_record(Bucket.ROLLOUTS, "ops.c", msgspec.json.encode(no_gates))
        finally:
            await plane.close()

    asyncio.run(store())
    env = {"COLUMNS": "300", **nats_server.cli_env("alice")}
    result = CliRunner().invoke(app, ["rollout", "status"], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    assert "ro-[/x]: progressing stage canary, 1/1 node(s) on" in result.output, result.output
    assert "at_ns=1000000000000000000000000000000 [/odd]: [bold]detail" in result.output
    assert "error: rollout 'ops.b': undecodable record (JSON is malformed" in result.output
    # a rollout stored without gates (before they were required) still loads, to be aborted
    assert "ops.c" not in result.output
    assert result.output.count("ro-[/x]: progressing stage canary") == 2, result.output
    single = CliRunner().invoke(app, ["rollout", "status", "ops.b", "--json"], env=env)
    assert single.exit_code == 1 and "rollout 'ops.b': undecodable" in single.output


def test_an_approval_switches_a_flag_on_once_not_again_after_a_stop(
    nats_server: Site, tmp_path: Path
) -> None:
    """bob approved alice's switch-on of RLP on n1; erin stopped it. Within the approval's
    hour alice switched it back on alone with the same file: the resume needed no second
    person. The used approval is refused naming the change that used it; a new one works."""
    registry = tmp_path / "feature-flags.yaml"
    shutil.copy(CLEAN / "feature-flags.yaml", registry)
    schema = FlagRegistry.load(registry).schema()
    always = tmp_path / "policy.toml"
    always.write_text('second_approver = "always"\n')

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

    asyncio.run(fleet_of_n1())

    def run(who: str, *args: str | Path) -> Result:
        env = {"COLUMNS": "300", **nats_server.cli_env(who)}
        result = CliRunner().invoke(app, [str(a) for a in args], env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return result

    def approve(out: Path) -> None:
        done = run("bob", "flags", "approve", RLP, "on", "--for", "alice", "--nodes", "n1",
                   "--reason", "reviewed", "--out", out)  # fmt: skip
        assert done.exit_code == 0 and "approved by bob" in done.output, done.output

    first = tmp_path / "bob-1.json"
    approve(first)
    on = ["flags", "set", RLP, "on", "--nodes", "n1", "--reason", "RLP launch", "--registry",
          registry, "--policy", always, "--timeout", "0.05"]  # fmt: skip
    done = run("alice", *on, "--approval", first)
    assert "applied" in done.output and "revision 1" in done.output, done.output
    off = run("erin", "flags", "set", RLP, "off", "--reason", "stop", "--registry", registry,
              "--timeout", "0.05")  # fmt: skip
    assert "applied" in off.output and "revision 2" in off.output, off.output
    again = run("alice", *on, "--approval", first)
    assert again.exit_code == 1, again.output
    assert "refused [approval_used]" in again.output, again.output
    assert "used already, by revision 1 (on by alice, approver bob)" in again.output
    second = tmp_path / "bob-2.json"
    approve(second)
    done = run("alice", *on, "--approval", second)
    assert "applied" in done.output and "revision 3" in done.output, done.output


def test_a_rollout_abort_whose_switch_off_is_refused_says_so_and_exits_1(
    nats_server: Site, tmp_path: Path
) -> None:
    """`rollout abort` given a registry without the flag (the wrong file, or the default
    `feature-flags.yaml` of another directory): the switch-off was refused `unknown_flag`,
    yet the command printed "aborted" and exited 0, with the exposed node still on. What
    was not done is named, and the exit is 1."""
    plan = RolloutPlan(
        stages=(Stage("canary", hold_s=1, nodes=1),), gates=(HealthGate("x", max=1),)
    )
    rollout, _ = Rollout.start("ops.a-1", "ops.a", True, ["n1"], plan, SimClock(0), "alice")

    async def store() -> None:
        plane = await nats_server.connect("alice")
        try:
            await plane.put_record(Bucket.ROLLOUTS, "ops.a", msgspec.json.encode(rollout.state))
        finally:
            await plane.close()

    asyncio.run(store())
    env = {"COLUMNS": "300", **nats_server.cli_env("alice")}
    result = CliRunner().invoke(
        app,
        ["rollout", "abort", "ops.a", "--reason", "stop", "--registry",
         str(CLEAN / "feature-flags.yaml")],
        env=env,
    )  # fmt: skip
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "ops.a-1: aborted" in result.output, result.output
    assert "not done: switch-off of n1 refused: unknown_flag" in result.output, result.output
    assert result.exit_code == 1, result.output
