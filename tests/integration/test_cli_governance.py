"""The governance CLI on a live fleet: admission serve/target, status, flags, rollout.

A real nats-server with authorization on, `knightwatch admission serve` as its
own process (logged in with the admission service's key), two nodes (one on
the release, one that missed the deploy) as NodeRuntimes with their enrolled
keys, and every operator command run through the real CLI as alice (her key
and the anchor from the environment), refusal paths and bad input included.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import IO

import msgspec
import pytest
import yaml
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.clock import SystemClock
from knightwatch.control.node.flags import NodeFlags
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.site import Site
from knightwatch.release.dsse import encode_envelope
from knightwatch.sim.drill.local_release import policy_toml

from ..identities import KIT
from .fleet_release import NEW_ROUTER, OLD_ROUTER, REDEFINED_RLP, REGISTRY, RLP, Signers, deploy
from .fleet_release import node as make_node
from .test_fleet_governance import eventually

pytestmark = pytest.mark.timeout(120)  # a hang guard: the whole story takes ~12 s idle
runner = CliRunner()
WIDE = {"COLUMNS": "250"}
KNIGHTWATCH = [sys.executable, "-c", "from knightwatch.cli.app import main; main()"]


async def cli(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """One CLI command, off the test's event loop (the command runs its own)."""
    result = await asyncio.to_thread(
        runner.invoke, app, [str(a) for a in args], env={**WIDE, **(env or {})}
    )
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


async def status_once_refused(opts: list[str | Path], node: str) -> tuple[dict[str, str], str]:
    """`knightwatch status`, read again until `node`'s row says refused (15 s at most: a
    refusal is sent before a slow store holds it): each node's row by id, and the output."""
    deadline = time.monotonic() + 15
    while True:
        code, out = await cli("status", *opts)
        assert code == 0 and "release admission" in out, out
        row = {line.split("│")[1].strip(): line for line in out.splitlines() if "│ n" in line}
        if "refused" in row.get(node, "") or time.monotonic() > deadline:
            return row, out
        await asyncio.sleep(0.1)


class Governed:
    def __init__(self, root: Path, server: Site) -> None:
        self.root = root
        self.server = server
        self.url = server.url
        self.signers = Signers()
        self.registry = root / "feature-flags.yaml"
        flags = [msgspec.to_builtins(f, builtin_types=(date,)) for f in REGISTRY.flags()]
        self.registry.write_text(yaml.safe_dump({"version": 1, "flags": flags}), encoding="utf-8")
        self.policy = root / "policy.toml"
        self.policy.write_text(policy_toml(self.signers.trust), encoding="utf-8")
        good = deploy(root / "good", NEW_ROUTER)
        self.release = root / "r2.dsse.json"
        self.release.write_bytes(
            encode_envelope(self.signers.release("r2", good, REGISTRY.schema()))
        )
        self.rollback = root / "r1.dsse.json"
        rollback = self.signers.release("r1", good, {RLP: REDEFINED_RLP})
        self.rollback.write_bytes(encode_envelope(rollback))

    def opts(self) -> list[str | Path]:
        return ["--nats-url", self.url, "--state-dir", self.root / "state"]


def drain(pipe: IO[str], lines: list[str]) -> threading.Thread:
    """Read `pipe` to its end in a thread, into `lines`: a process whose log lines fill a
    pipe nobody reads stalls mid-test (the admission service logs every attestation)."""

    def read() -> None:
        for line in pipe:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


@pytest.fixture
async def site(nats_server: Site, tmp_path: Path) -> AsyncIterator[Governed]:
    s = Governed(tmp_path, nats_server)
    serve = subprocess.Popen(
        [*KNIGHTWATCH, "admission", "serve", "--policy",
         str(s.policy), "--registry", str(s.registry), "--nats-url", s.url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **nats_server.cli_env("admission")},
    )  # fmt: skip
    assert serve.stdout is not None
    lines: list[str] = []
    reader = drain(serve.stdout, lines)
    try:
        while not lines and reader.is_alive():  # bounded by the test timeout
            await asyncio.sleep(0.05)
        assert lines and "admission service running" in lines[0], lines
        yield s
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
        reader.join(timeout=30)
        assert serve.returncode == 0, "".join(lines)


async def test_admission_status_flags_rollout_through_the_cli(
    site: Governed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = site.opts()
    for name, value in site.server.cli_env("alice").items():
        monkeypatch.setenv(name, value)  # every command below runs as alice
    # alice alone cannot set the target; bob approves exactly r2 for her with his own key
    code, out = await cli("admission", "target", site.release, "--reason", "deploy r2", *opts)
    assert code == 1 and "target_not_approved" in out and "second person" in out, out
    approval = tmp_path / "r2-approval.json"
    bob_key = ["--key", site.server.key_path("bob")]
    code, out = await cli(
        "admission", "approve", site.release, "--for", "alice", "--reason", "reviewed",
        "--out", approval, *bob_key, *opts,
    )  # fmt: skip
    assert code == 0 and "approved by bob: target release r2 for alice" in out, out
    code, out = await cli(
        "admission", "target", site.release, "--reason", "deploy r2", "--approval", approval,
        *opts,
    )  # fmt: skip
    assert code == 0 and "target release r2 set" in out, out
    # Knight's rollback: a release whose flag id means something else is refused, whatever
    # approval comes with it (here bob's, of r2)
    code, out = await cli(
        "admission", "target", site.rollback, "--reason", "rollback", "--approval", approval,
        *opts,
    )  # fmt: skip
    assert code == 1 and "REFUSED" in out and "flag_redefined_in_registry" in out, out

    clock = SystemClock()
    planes: list[NatsControlPlane] = []
    nodes: list[NodeRuntime] = []
    try:
        for name, router in (("n1", NEW_ROUTER), ("n2", OLD_ROUTER)):
            plane = await site.server.connect(name)
            planes.append(plane)
            runtime = make_node(name, plane, deploy(tmp_path / name, router), clock)
            await runtime.start()
            await NodeFlags(runtime).start()
            nodes.append(runtime)
        # an attestation a loaded machine did not answer in time is made again
        await eventually(lambda: nodes[0].release_admitted and nodes[1].verdict is not None)
        assert not nodes[1].release_admitted

        row, out = await status_once_refused(opts, "n2")
        assert "admitted" in row["n1"] and "r2" in row["n1"]
        assert "refused" in row["n2"] and "file_mismatch: smars/router.py" in out

        # the second person is whoever signed an approval: bob, with his own key
        bob = ["--key", site.server.key_path("bob")]

        async def approval(name: str, *what: str) -> Path:
            path = tmp_path / f"{name}.json"
            code, out = await cli("flags", "approve", RLP, "on", *what, "--for", "alice",
                                  "--reason", "checked", "--out", path, *opts, *bob)  # fmt: skip
            assert code == 0 and "approved by bob" in out, out
            return path

        code, out = await cli("flags", "approve", RLP, "on", "--for", "alice", "--reason", "me",
                              "--out", tmp_path / "self.json", *opts)  # fmt: skip
        assert code == 2 and "approve your own" in out, out  # alice cannot approve herself
        fleet = await approval("fleet")
        # a second person at any hour (the default asks for one in market hours only, and
        # this test must not depend on when it runs)
        always = tmp_path / "activation.toml"
        always.write_text('second_approver = "always"\n')
        flags = ["--registry", site.registry, "--reason", "RLP launch", "--policy", always]
        code, out = await cli("flags", "set", RLP, "on", "--nodes", "n1", *flags, *opts)
        assert code == 1 and "second_approver_required" in out, out
        # skewed fleet: refused, naming the node that missed the deploy
        code, out = await cli("flags", "set", RLP, "on", *flags, "--approval", fleet, *opts)
        assert code == 1 and "node_not_admitted" in out and "n2" in out, out
        # an approval binds what it approves: the fleet-wide one does not cover n1 alone
        code, out = await cli(
            "flags", "set", RLP, "on", "--nodes", "n1", *flags, "--approval", fleet, *opts
        )
        assert code == 2 and "not this change" in out, out
        only_n1 = await approval("n1", "--nodes", "n1")
        code, out = await cli(
            "flags", "set", RLP, "on", "--nodes", "n1", *flags, "--approval", only_n1,
            "--timeout", "15", *opts,
        )  # fmt: skip
        assert code == 0 and "n1: confirmed r1" in out, out
        code, out = await cli("flags", "show", RLP, "--registry", site.registry, *opts)
        assert code == 0 and "revision 1" in out and "'n1': 1" in out and "by " in out, out

        plan = tmp_path / "plan.toml"
        plan.write_text(  # a gate that judges nothing here: any reject ratio, data missing
            "failure_limit = 1000000\n[[gates]]\nmetric = 'reject_ratio'\nmax = 1.0\n"
            "[[stages]]\nname = 'fleet'\nhold_s = 0\nfraction = 1.0\n"
        )
        # bob's approval names the plan: one for the built-in plan does not start this one
        default_plan = await approval("ro-default", "--rollout")
        code, out = await cli("rollout", "start", RLP, "--plan", plan, "--registry",
                              site.registry, "--approval", default_plan, *opts)  # fmt: skip
        assert code == 2 and "not this change" in out, out
        rollout = ["--registry", site.registry, "--approval",
                   await approval("ro", "--rollout", "--plan", str(plan)), *opts]  # fmt: skip
        # the refused node is left out by name (it would refuse the stage and abort the
        # rollout for n1); the rollout runs on n1 and holds for evidence until aborted
        # its output goes to a file: a pipe read only at the end could fill and stall it
        start_log = tmp_path / "rollout-start.log"
        with start_log.open("wb") as log:
            start = await asyncio.create_subprocess_exec(
                *KNIGHTWATCH, "rollout", "start", RLP, "--plan", str(plan), *map(str, rollout),
                stdout=log, stderr=asyncio.subprocess.STDOUT, env={**os.environ, **WIDE},
            )  # fmt: skip
        out = ""
        deadline = time.monotonic() + 30  # a fresh interpreter starting on a loaded machine
        while time.monotonic() < deadline:
            code, out = await cli("rollout", "status", RLP, *opts)
            if code == 0 and "started" in out:
                break
            await asyncio.sleep(0.1)
        assert "progressing" in out and "1/1 node(s) on" in out, out
        assert "excluded: not admitted, left out of the rollout: n2" in out, out
        code, out = await cli(
            "rollout", "abort", RLP, "--reason", "x", "--registry", site.registry, *opts
        )
        assert code == 0, out
        await asyncio.wait_for(start.wait(), timeout=30)
        started = start_log.read_text()
        assert start.returncode == 1 and "aborted" in started, started
        code, out = await cli(
            "rollout", "abort", RLP, "--reason", "x", "--registry", site.registry, *opts
        )
        assert code == 2 and "already aborted" in out, out
    finally:
        for runtime in nodes:
            await runtime.stop()
        for plane in planes:
            await plane.close()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["admission", "target", "missing.json", "--reason", "x"], 2, "missing.json: no such file"),
        (["kill", "--reason", "x", "--key", "missing.key"], 2, "missing.key"),
        (["flags", "set", RLP, "maybe", "--reason", "x"], 1, "'on' or 'off'"),
        (["rollout", "status", "nope.flag"], 1, "no rollout for nope.flag"),
    ],
)
async def test_bad_input_is_a_message(
    site: Governed, args: list[str], code: int, message: str, tmp_path: Path
) -> None:
    extra: list[str | Path] = ["--registry", site.registry] if args[0] == "flags" else []
    got, out = await cli(*args, *extra, *site.opts(), env=site.server.cli_env("alice"))
    assert got == code and message in out, out


def test_unreachable_control_plane_fails_fast_naming_the_url(tmp_path: Path) -> None:
    KIT.write(tmp_path / "trust", private=["alice"])
    env = {
        "KNIGHTWATCH_KEY": str(tmp_path / "trust" / "keys" / "alice.key"),
        "KNIGHTWATCH_ANCHOR": str(tmp_path / "trust" / "anchor.toml"),
    }
    for args in (["kill", "--reason", "x", "--timeout", "0.5"], ["status"], ["rollout", "status"]):
        t0 = time.monotonic()
        result = runner.invoke(
            app, [*args, "--nats-url", "nats://127.0.0.1:1", "--state-dir", str(tmp_path)], env=env
        )
        assert time.monotonic() - t0 < 5
        assert result.exit_code == 2, result.output
        assert "control plane unreachable at nats://127.0.0.1:1" in result.output.replace("\n", "")


def test_sigterm_while_waiting_for_admission_leaves_cleanly(
    nats_server: Site, tmp_path: Path
) -> None:
    """No admission service answers: the node waits unadmitted, and SIGTERM still ends it."""
    tree = deploy(tmp_path / "n1", NEW_ROUTER)
    (tmp_path / "flags.json").write_text("{}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "knightwatch", "node", "--id", "n1", "--nats-url",
         nats_server.url, "--state-dir", str(tmp_path / "state"), "--artifacts", str(tree / "app"),
         "--config", str(tree / "config.toml"), "--flags", str(tmp_path / "flags.json"),
         "--key", str(nats_server.key_path("n1")), "--anchor", str(nats_server.anchor_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "KNIGHTWATCH_LOG": "INFO"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # bounded by the test timeout
            if "not admitted; no lease" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)  # read on: INFO lines must not fill the pipe
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
