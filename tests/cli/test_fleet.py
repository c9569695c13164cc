"""The fleet CLI end to end: `up` as a real process, then status, kill, resume, drill."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.cli.options import OptionError, scope_of
from knightwatch.control.plane.connect import control_plane, recorded_url
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import (
    ENCODER,
    RAMP_DECODER,
    NodeMetrics,
    StateEntry,
    slot_of,
)
from knightwatch.release.keys import write_key_pair
from knightwatch.state import Scope, TradingState
from knightwatch.trust.identity import Signer, load_signer

from ..identities import KIT

runner = CliRunner()
pytestmark = pytest.mark.timeout(90)
WAIT = ("--timeout", "20")
"""For a kill or an approval every node must confirm: the default 2 s is thin on a loaded
2-core CI machine, and the command returns as soon as the last node confirms."""


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_up_status_kill_resume(fleet_up: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = str(fleet_up)

    def as_(name: str) -> list[str]:
        return ["--state-dir", state, "--key", str(fleet_up / "trust" / "keys" / f"{name}.key")]

    code, out = invoke("status", *as_("carol"))
    assert code == 0 and "n1" in out and "n2" in out, out
    assert out.count("admitted") >= 2 and "local-" in out  # judged on the release `up` built
    _, key, _ = write_key_pair(fleet_up / "operator", "snapshots")
    monkeypatch.setenv("KNIGHTWATCH_SNAPSHOT_KEY", str(key))
    monkeypatch.setenv("KNIGHTWATCH_SNAPSHOT_DIR", str(fleet_up / "evidence"))
    code, out = invoke("kill", "--reason", "cli test", *as_("carol"))
    assert code == 2 and "carol" in out, out  # a viewer cannot kill
    code, out = invoke("kill", "--reason", "cli test", *WAIT, *as_("alice"))
    assert code == 0, out
    assert "n1" in out and "n2" in out and " ms" in out and "stored at revision" in out
    (snapshot,) = (fleet_up / "evidence").glob("snapshot-*.tar")
    assert "evidence snapshot written to" in out
    code, out = invoke("incident", "verify", str(snapshot))
    assert code == 0 and "intact" in out and "alice" in out, out
    code, out = invoke("status", *as_("carol"))
    assert "HALTED" in out and "alice" in out and "cli test" in out
    ramp = fleet_up / "ramp.toml"
    ramp.write_text(
        "[ramp]\nstages = [{fraction = 0.1, hold_s = 0.3}, {fraction = 1.0, hold_s = 0.3}]\n"
    )
    code, out = invoke("resume", "--reason", "all clear", "--config", str(ramp), *as_("alice"))
    assert code == 0 and "preflight fleet 'fleet': PASS" in out, out
    assert "resume requested" in out, out
    assert "ramp (signed with the request): 10% for 0.3 s, then 100%" in out, out
    request = re.search(r"approve (\w+)", out)
    assert request is not None, out
    code, out = invoke("requests", *as_("carol"))
    assert request.group(1) in out and "passed" in out, out  # the preflight, recorded
    code, out = invoke("approve", request.group(1), *as_("alice"))
    assert code == 2 and "never counts" in out, out  # the requester is not a second person
    assert "preflight" not in out, out  # refused before anything runs for the approval
    # the approver's own [ramp] stages do not replace the ones signed with the request
    slow = fleet_up / "slow.toml"
    slow.write_text(
        "[ramp]\nstages = [{fraction = 0.1, hold_s = 900}, {fraction = 1.0, hold_s = 1}]\n"
    )
    code, out = invoke("approve", request.group(1), "--config", str(slow), *WAIT, *as_("bob"))
    assert code == 0, out
    flat = " ".join(out.split())
    assert "are not the request's; the request's stages apply" in flat, out
    assert "ramp (signed with the request): 10% for 0.3 s, then 100%" in flat, out
    assert "preflight fleet 'fleet': PASS" in out and "stage 1/2: 10% of limits" in out, out
    assert "complete" in out and "full limits" in out, out
    code, out = invoke("status", *as_("carol"))
    assert "resume ramps" in out and "done" in out, out
    # the node processes took every signed stage: full limits now; a "ramping" record
    # written over it without a signature is held as the tightest stage, not as what it says
    alice = load_signer(fleet_up / "trust" / "keys" / "alice.key", "alice")
    assert asyncio.run(limits_seen(fleet_up, lambda v: "@" not in v))
    asyncio.run(put_unsigned_ramp(fleet_up, alice, fraction=0.5))
    assert asyncio.run(limits_seen(fleet_up, lambda v: v.endswith("@10%")))
    code, out = invoke("status", *as_("carol"))
    ramps = out[out.index("resume ramps") :]
    assert "UNVERIFIED" in ramps and "unsigned" in ramps and "10%" in ramps, out
    code, out = invoke("resume", "--reason", "again", *as_("alice"))
    assert code == 1 and "not halted" in out and "REFUSED" in out, out
    code, out = invoke(
        "kill", "--node", "ghost", "--reason", "x", "--timeout", "0.2", *as_("alice")
    )
    assert code == 1 and "not confirmed" in out and "ghost" in out
    # a log level no command takes ("debug") refuses the others, never a kill: it was
    # exit 2 with nothing sent
    monkeypatch.setenv("KNIGHTWATCH_LOG", "debug")
    code, out = invoke("status", *as_("carol"))
    assert code == 2 and "KNIGHTWATCH_LOG" in out, out
    code, out = invoke("kill", "--symbol", "LOGGED", "--reason", "log typo", *WAIT, *as_("alice"))
    assert code == 0 and "warning: KNIGHTWATCH_LOG" in out and "stored at revision" in out, out
    monkeypatch.delenv("KNIGHTWATCH_LOG")
    code, out = invoke("status", "--symbol", "LOGGED", *as_("carol"))
    assert code == 0 and "HALTED" in out and "log typo" in out, out


async def limits_seen(state: Path, want: Callable[[str], bool]) -> dict[str, str]:
    """The limits version each of `up`'s nodes reports, once both satisfy `want` (30 s)."""
    carol = load_signer(state / "trust" / "keys" / "carol.key", "carol")
    seen: dict[str, str] = {}

    async def on_metrics(m: NodeMetrics) -> None:
        seen[m.node_id] = m.limits_version

    async with control_plane(recorded_url(state), state, "t", signer=carol) as plane:
        await plane.subscribe_metrics(on_metrics)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(seen) == 2 and all(want(v) for v in seen.values()):
                break
            await asyncio.sleep(0.1)
    assert len(seen) == 2 and all(want(v) for v in seen.values()), seen
    return seen


async def put_unsigned_ramp(state: Path, who: Signer, fraction: float) -> None:
    """A plain put of a fresh, unsigned ramp record over the fleet's (as an attacker would)."""
    async with control_plane(recorded_url(state), state, "t", signer=who) as plane:
        slot = slot_of(Scope.FLEET, "fleet")
        raw, _ = await plane.get_record(Bucket.RAMP, slot)
        assert raw is not None
        record = RAMP_DECODER.decode(raw)
        forged = msgspec.structs.replace(
            record, status="ramping", fraction=fraction, since_ns=time.time_ns(), proof=None
        )
        await plane.put_record(Bucket.RAMP, slot, ENCODER.encode(forged))


def test_status_shows_a_replayed_resume_held_halted_and_resume_lifts_it(fleet_up: Path) -> None:
    """Kill, a two-person resume, a second kill; then the resume's signed entry is put back
    over it. Status shows the slot as the nodes hold it (UNVERIFIED, held HALTED, replayed),
    and `resume` + `approve` make a resume that lifts it on every node."""
    state = str(fleet_up)
    ramp = fleet_up / "ramp.toml"
    ramp.write_text("[ramp]\nstages = [{fraction = 1.0, hold_s = 0.1}]\n")

    def as_(name: str) -> list[str]:
        return ["--state-dir", state, "--key", str(fleet_up / "trust" / "keys" / f"{name}.key")]

    def resume_with_two_people(reason: str) -> None:
        code, out = invoke("resume", "--reason", reason, "--config", str(ramp), *as_("alice"))
        assert code == 0 and "resume requested" in out, out
        request = re.search(r"approve (\w+)", out)
        assert request is not None, out
        code, out = invoke("approve", request.group(1), "--config", str(ramp), *WAIT, *as_("bob"))
        assert code == 0 and "complete" in out, out

    alice = load_signer(fleet_up / "trust" / "keys" / "alice.key", "alice")

    async def stored() -> StateEntry | None:
        async with control_plane(recorded_url(fleet_up), fleet_up, "t", signer=alice) as plane:
            return (await plane.get_state(Scope.FLEET, "fleet"))[0]

    async def put_back(entry: StateEntry) -> None:  # a plain put, as an attacker would
        async with control_plane(recorded_url(fleet_up), fleet_up, "t", signer=alice) as plane:
            await plane.put_state(entry)

    assert invoke("kill", "--reason", "first", *WAIT, *as_("alice"))[0] == 0
    resume_with_two_people("fixed")
    r1 = asyncio.run(stored())
    assert r1 is not None and r1.state is TradingState.ACTIVE
    assert invoke("kill", "--reason", "second", *WAIT, *as_("alice"))[0] == 0
    asyncio.run(put_back(r1))
    code, out = invoke("status", *as_("carol"))
    assert code == 0 and "UNVERIFIED" in out and "(held HALTED)" in out, out
    assert "replayed:" in out and "stored again" in out, out
    resume_with_two_people("really fixed")
    code, out = invoke("status", *as_("carol"))
    assert "UNVERIFIED" not in out and "really fixed" in out, out
    # the nodes' rows come from their membership records, rewritten every few heartbeats
    deadline = time.monotonic() + 30
    while out.count("ACTIVE") < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        code, out = invoke("status", *as_("carol"))
    assert out.count("ACTIVE") >= 3, out  # the entry and both nodes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["kill", "--reason", "x", "--node", "a", "--symbol", "b"], "--node stands alone"),
        (["kill", "--reason", "x"], "no control plane"),
        (["kill", "--reason", "x", "--nats-url", "http://127.0.0.1:1"], "must start with nats://"),
        (["node", "--id", "bad id!"], "--id: must be"),
        (["node", "--id", "n1", "--lease-timeout", "0.1", "--heartbeat", "0.1"], "--lease-timeout"),
        (["status"], "no control plane"),
    ],
)
def test_bad_input_is_a_message_not_a_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    KIT.write(tmp_path / "trust", private=["alice", "n1"])
    who = "n1" if args[0] == "node" else "alice"
    key = ["--key", str(tmp_path / "trust" / "keys" / f"{who}.key")]
    code, out = invoke(*args, *key, "--state-dir", str(tmp_path))
    assert code == 2, out
    assert message in out and "Traceback" not in out


def test_bad_supervisor_config_names_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "sup.toml"
    cfg.write_text("[supervisor]\nrate_multiple = 0.5\n")
    code, out = invoke("supervisor", "--config", str(cfg), "--state-dir", str(tmp_path))
    assert code == 2 and "rate_multiple" in out and "Traceback" not in out


def test_drill_halts_the_runaway_and_kills_the_fleet(tmp_path: Path) -> None:
    report_path = tmp_path / "drill.json"
    t0 = time.monotonic()
    code, out = invoke(
        "drill", "--nodes", "4", "--stale", "1", "--state-dir", str(tmp_path / "drill"),
        "--json", str(report_path), "--no-resume",
    )  # fmt: skip
    assert code == 0, out
    report = json.loads(report_path.read_text())
    # halted on its rate: against its peers, or against its own (warm-up) baseline,
    # whichever rule the supervisor judged first
    assert report["halted"] and report["rule"] in (
        "supervisor_order_rate",
        "supervisor_baseline_order_rate",
    )
    assert report["time_to_halt_ms"] < 5_000
    assert {"n1", "n2", "n3"} <= set(report["kill_latencies_ms"]) and not report["kill_missing"]
    assert list(report["stale_refused"]) == ["n4"] and report["stale_armed"] == []
    assert "file_mismatch: knightwatch/sim/drill/flow.py" in report["stale_refused"]["n4"]
    assert report["orders_attempted"] > report["orders_escaped"] > 0
    assert time.monotonic() - t0 < 60
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "drill")], capture_output=True)
    assert leftover.returncode == 1, leftover.stdout  # no node or server process left behind


async def test_drill_refuses_a_fleet_left_halted(tmp_path: Path) -> None:
    """A drill on a server whose store still holds a halt refuses to start, naming it."""
    from knightwatch.control.site import Site
    from knightwatch.sim.drill.drill import local_kit

    state = tmp_path / "d"
    kit = local_kit(state, ["n1", "n2", "n3"])  # the cast the drill will find and reuse
    site = Site(state, kit=kit)
    await site.astart()
    try:
        plane = await site.connect("alice")
        killed = await site.killswitch(plane, "alice").kill(
            Scope.NODE, "n3", "left halted", timeout_s=0.1
        )
        assert killed.revision is not None
        await plane.close()
        result = await asyncio.to_thread(
            runner.invoke, app, ["drill", "--nodes", "3", "--nats-url", site.url,
                                 "--state-dir", str(state)],
        )  # fmt: skip
    finally:
        site.stop()
    assert (
        result.exit_code == 2 and "already halted" in result.output and "node 'n3'" in result.output
    ), result.output


def test_kill_with_the_control_plane_down_is_one_line_at_once(tmp_path: Path) -> None:
    """A stopped server: exit 2 within about a second, one line naming the URL, saying the
    kill was not sent and where the runbook's fallback is; no traceback."""
    import os
    import sys

    from knightwatch.control.site import Site

    site = Site(tmp_path / "site", kit=KIT)
    site.start()
    env = {**os.environ, **site.cli_env("alice"), "COLUMNS": "80"}  # a narrow terminal
    site.stop()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "knightwatch", "kill", "--strategy", "s1", "--reason", "down"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    out = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, out
    # no connect retries or timeouts waited out (those take 30 s and more); the bound is
    # loose because interpreter start on a loaded 2-core machine alone can take seconds
    assert took < 15.0, f"the error came after {took:.2f} s"
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert out.startswith("error: kill NOT sent") and env["KNIGHTWATCH_NATS_URL"] in out, out
    assert "docs/runbook.md section 1.1" in out and "venue" in out, out


def test_cli_strategy_and_symbol_together_name_the_pair_scope() -> None:
    assert scope_of(None, "mm", "AAPL") == (Scope.STRATEGY_SYMBOL, "mm/AAPL")
    assert scope_of(None, "mm", None) == (Scope.STRATEGY, "mm")
    with pytest.raises(OptionError, match="--node stands alone"):
        scope_of("n1", "mm", None)


@pytest.mark.parametrize(
    "args",
    [
        ["up", "--nodes", "1", "--flow", "0"],
        ["drill", "--nodes", "3", "--no-resume"],
        ["kill", "--reason", "x"],
        ["resume", "--reason", "x"],
        ["status"],
        ["requests"],
        ["supervisor"],
        ["node", "--id", "n1", "--key", "n1.key"],
        ["admission", "serve", "--policy", "p.toml", "--registry", "r.yaml"],
    ],
)
def test_an_empty_state_dir_is_refused_naming_it_and_nothing_is_written_where_it_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """`--state-dir "$DIR"` with DIR unset arrived as "", which `Path` reads as `.`: `up`
    built a fleet (keys, a server's store) in whatever directory it was started in, and
    `kill` failed later on a trust anchor missing there, naming no option."""
    monkeypatch.chdir(tmp_path)
    code, out = invoke(*args, "--state-dir", "", "--nats-url", "nats://127.0.0.1:1")
    flat = " ".join(out.replace("\u2502", " ").split())  # the error box's sides out
    assert code == 2 and "'--state-dir'" in flat and "empty path" in flat, out
    assert "Traceback" not in out and list(tmp_path.iterdir()) == [], out


def test_a_symbol_kill_in_lowercase_is_sent_then_warned_which_key_lifts_it(
    tmp_path: Path,
) -> None:
    """`kill --symbol ibm` halts `IBM` on the nodes (any case), but it is stored as typed and
    only a resume of `ibm` lifts it: the warning says so after the result, one line."""
    from knightwatch.control.site import Site

    site = Site(tmp_path / "site", kit=KIT)
    site.start()
    try:
        env = {**site.cli_env("alice"), "COLUMNS": "100"}

        def kill(*scope: str) -> str:
            result = runner.invoke(app, ["kill", *scope, "--reason", "case"], env=env)
            assert result.exit_code == 0, result.output
            return result.output

        for scope in (["--symbol", "ibm"], ["--strategy", "mm", "--symbol", "btc/usdt"]):
            out = kill(*scope)
            stored = out.index("stored at revision")
            warned = out.find("warning: symbol ")
            assert stored < warned, out  # after the kill was sent and confirmed
            line = out[warned:].splitlines()[0]
            assert repr(scope[-1]) in line and repr(scope[-1].upper()) in line, out
            assert "halt it in every case" in line and "only a resume of" in line, out
        for scope in (["--symbol", "IBM"], ["--strategy", "mm"], []):
            assert "lowercase" not in kill(*scope)
        code, out = invoke("status", "--symbol", "ibm", "--nats-url", env["KNIGHTWATCH_NATS_URL"],
                           "--key", env["KNIGHTWATCH_KEY"], "--anchor", env["KNIGHTWATCH_ANCHOR"],
                           "--state-dir", str(tmp_path))  # fmt: skip
        assert code == 0 and "HALTED" in out and " ibm " in out, out  # stored as typed
    finally:
        site.stop()


def test_the_venue_refuses_an_empty_state_dir_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`knightwatch venue --fix` had its own `--state-dir`, where "" still meant the
    directory it ran in (its FIX session stores and logs written there)."""
    monkeypatch.chdir(tmp_path)
    code, out = invoke("venue", "--fix", "--state-dir", "")
    flat = " ".join(out.replace("\u2502", " ").split())
    assert code == 2 and "'--state-dir'" in flat and "empty path" in flat, out
    assert "Traceback" not in out and list(tmp_path.iterdir()) == [], out
