"""What the resume path and the rest of the CLI print when the values they show are hostile.

A halt's reason and scope key, a resume request, a ramp record, a file name someone
passed: text someone else wrote. Printed through console markup unescaped, "[/x]"
ended `resume` (and `approve`, and `status` with a ramp) with a traceback, so a kill
reason with brackets blocked the resume of the halt it was about; "[red]" or
"[link=...]" was rendered instead of shown. A real nats-server (`nats_server`), records
written as the identities that may write them, the commands run as an operator runs them.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from knightwatch.cli import runner as runner_module
from knightwatch.cli.app import app
from knightwatch.control.fleet.approvals import Requests
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import ENCODER, RampRecord, slot_of
from knightwatch.control.site import Site
from knightwatch.incident.snapshot import seal
from knightwatch.release.keys import SigningKey
from knightwatch.sim.layers import resolve
from knightwatch.sim.scenario import loads
from knightwatch.state import Scope

from ..identities import ALICE

pytestmark = pytest.mark.timeout(90)

runner = CliRunner()
HOSTILE = ("[/x]", "[red]boom[/red]", "[link=https://evil]x[/link]")
"""A closing tag that matches nothing (a MarkupError), a style, a link: each shown as is."""


def run(who: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "400", **who})
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (
        f"{args[:2]}: {type(exc).__name__}: {exc}"  # an exception escaped: a traceback
    )
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def flat(out: str) -> str:
    """The output without its line breaks and table borders' padding (rich wraps)."""
    return "".join(out.split())


@pytest.mark.parametrize("text", HOSTILE)
def test_resume_and_preflight_show_a_hostile_halt_as_written(text: str, nats_server: Site) -> None:
    """A kill whose reason and key carry markup can still be resumed from the CLI: the
    preflight checklist (refused here: no node would trade) shows both as written."""
    alice, bob = nats_server.cli_env("alice"), nats_server.cli_env("bob")
    code, out = run(alice, "kill", "--symbol", text, "--reason", f"r {text}")
    # stored for the nodes that join, and said to reach no node: this fleet has no members
    assert code == 0 and "stored at revision 1" in out and "reached no node" in out, out
    for args in (
        ("resume", "--symbol", text, "--reason", "go"),
        ("incident", "preflight", "--symbol", text),
    ):
        code, out = run(bob, *args)
        assert code == 1, out
        assert flat(f"preflight symbol {text!r}: REFUSED") in flat(out), out
        assert flat(f"HALTED by alice: 'r {text}'") in flat(out), out


@pytest.mark.parametrize("text", HOSTILE)
def test_approve_shows_a_hostile_request_as_written(text: str, nats_server: Site) -> None:
    async def store() -> str:
        plane = await nats_server.connect("alice")
        try:
            ks = nats_server.killswitch(plane, "alice")
            await ks.kill(Scope.SYMBOL, text, f"halted {text}", timeout_s=0.1)
            request = await Requests(ks).create(Scope.SYMBOL, text, f"go {text}")
            return request.id
        finally:
            await plane.close()

    request_id = asyncio.run(store())
    code, out = run(nats_server.cli_env("bob"), "approve", request_id)
    assert code == 1, out
    said = f"resume of symbol {text} requested by alice: go {text}"
    assert flat(said) in flat(out), out
    assert flat(f"preflight symbol {text!r}: REFUSED") in flat(out), out


def test_status_shows_a_hostile_ramp_record_as_written(nats_server: Site) -> None:
    """A ramp record (written by an operator, as `approve` writes it) with markup in its
    key, id and trip reason: `status` shows it, no traceback."""

    async def store() -> None:
        plane = await nats_server.connect("alice")
        try:
            record = RampRecord(
                Scope.SYMBOL, "[/k]", "[red]r1", 0, (0.1, 1.0), 0.1, "tripped", "alice",
                "why", 1, trip_reason="[/x] [link=https://evil]t[/link]",
            ).signed(ALICE.key)  # fmt: skip
            await plane.put_record(
                Bucket.RAMP, slot_of(Scope.SYMBOL, "[/k]"), ENCODER.encode(record)
            )
        finally:
            await plane.close()

    asyncio.run(store())
    code, out = run(nats_server.cli_env("carol"), "status")
    assert code == 0, out
    row = next(line for line in out.splitlines() if "tripped" in line)
    for shown in ("│ [/k] ", "│ [red]r1 ", "[/x] [link=https://evil]t[/link]"):
        assert shown in row, (shown, out)


@pytest.mark.parametrize("request_id", ["[/x]", ".", "a.", "a b", "x" * 65, "[/x]@abc"])
def test_approve_refuses_an_id_no_request_can_have(request_id: str, nats_server: Site) -> None:
    """An id the approvals bucket cannot hold was sent to it and answered "control plane
    did not answer" (its InvalidKeyError); it is a bad request id, named as such."""
    code, out = run(nats_server.cli_env("bob"), "approve", request_id)
    assert code == 2, out
    assert out.startswith("error: request id ") and request_id in out, out
    assert "did not answer" not in out and len(out.strip().splitlines()) == 1, out


def test_a_kill_not_sent_names_a_hostile_url_as_written(nats_server: Site) -> None:
    """A control plane out of reach at a URL quoting markup: the one line says so."""
    code, out = run(
        nats_server.cli_env("alice"),
        "kill",
        "--reason",
        "r",
        "--nats-url",
        "nats://127.0.0.1:1/[/x]",
    )
    assert code == 2, out
    assert out.startswith("error: kill NOT sent") and "[/x]" in out, out


def test_snapshot_verify_names_a_hostile_file_as_written(tmp_path: Path) -> None:
    (tmp_path / "[").mkdir()
    archive = tmp_path / "[" / "x].tar"  # the path reads ".../[/x].tar"
    code, out = run({}, "incident", "verify", str(archive))
    assert code == 2 and flat(f"error: snapshot {archive}: no such file") in flat(out), out
    key = SigningKey.generate()
    archive.write_bytes(seal({"kills.json": b"{}"}, key, actor="[/a]", reason="r", taken_ns=1))
    code, out = run({}, "incident", "verify", str(archive))
    assert code == 0 and str(archive) in out and "'[/a]'" in out, out


def markup_dir(tmp_path: Path, leaf: str = "x]") -> Path:
    """A path that reads ".../[/x]": a closing tag no markup opened."""
    (tmp_path / "[").mkdir(exist_ok=True)
    return tmp_path / "[" / leaf


def test_identity_commands_show_hostile_paths_as_written(nats_server: Site, tmp_path: Path) -> None:
    """The key files `identity new` wrote and the proposal files `revoke` and `sign` wrote,
    named as given (each printed its message through markup after the file was written)."""
    where = markup_dir(tmp_path)
    code, out = run({}, "identity", "new", "dave", "--dir", str(where))
    assert code == 0 and flat(f"--key {where / 'dave.key'}") in flat(out), out
    proposal = markup_dir(tmp_path, "p].json")
    code, out = run(nats_server.cli_env("admin1"), "identity", "revoke", "erin", "--out",
                    str(proposal))  # fmt: skip
    assert code == 0 and flat(f"proposed in {proposal}, signed by admin1") in flat(out), out
    code, out = run(nats_server.cli_env("admin2"), "identity", "sign", str(proposal))
    assert code == 0 and flat(f"{proposal}: signed by admin1, admin2") in flat(out), out


def test_demo_names_a_hostile_report_path_as_written(tmp_path: Path) -> None:
    (tmp_path / "[red]f").write_text("a file, not a directory")
    code, out = run({}, "demo", "--report", str(tmp_path / "[red]f" / "sub"))
    assert code == 2 and flat(f"--report {tmp_path}/[red]f/sub: not a writable") in flat(out)


def test_demo_refuses_an_unwritable_json_before_the_replays(tmp_path: Path) -> None:
    """Said before both replays ran (then: after them, through markup, a traceback)."""
    where = markup_dir(tmp_path)
    where.mkdir()
    code, out = run({}, "demo", "--report", str(tmp_path / "r"), "--json", str(where))
    assert code == 2 and flat(f"--json {where}: is a directory") in flat(out), out
    assert "HTML report" not in out, out


def test_drill_refuses_an_unwritable_json_before_it_runs(tmp_path: Path) -> None:
    """The report file is checked before the drill runs for a minute: after it, the
    write's OSError was a traceback (the drill's figures lost)."""
    where = markup_dir(tmp_path)
    where.mkdir()
    code, out = run({}, "drill", "--json", str(where), "--nats-url", "nats://127.0.0.1:1",
                    "--state-dir", str(tmp_path / "drill"))  # fmt: skip
    assert code == 2 and flat(f"--json {where}: cannot write") in flat(out), out
    assert not (tmp_path / "drill").exists()
    fresh = tmp_path / "report.json"
    code, out = run({}, "drill", "--json", str(fresh), "--nats-url", "nats://127.0.0.1:1",
                    "--state-dir", str(tmp_path / "drill"))  # fmt: skip
    assert code == 2 and "--json" not in out and not fresh.exists(), out  # checked, not left


@pytest.mark.timeout(120)
def test_up_prints_a_hostile_state_dir_as_written(tmp_path: Path) -> None:
    """`up` with a state directory reading ".../[/up]" runs and says where its state is."""
    state = markup_dir(tmp_path, "up]")
    proc = subprocess.Popen(
        [sys.executable, "-m", "knightwatch", "up", "--nodes", "1", "--flow", "0",
         "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "2000"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # bounded by the test timeout; `up` prints once ready
            lines.append(line)
            if line.startswith("fleet up"):
                break
        said = "".join(lines)
        assert f"(state in {state})" in said and "Traceback" not in said, said
        line = proc.stdout.readline()
        assert f"KNIGHTWATCH_KEY={state}/trust/keys/alice.key" in line, line
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)  # read on: never a stall on a full pipe
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_replay_progress_bar_shows_a_hostile_scenario_name_as_written() -> None:
    """A scenario file names itself: its progress bar showed "[/x]" as a traceback. (The
    report's tables after the run are knightwatch.sim.report's.)"""
    builtin = resources.files("knightwatch.sim") / "scenarios" / "knight-2012.toml"
    text = builtin.read_text(encoding="utf-8")
    for plain, hostile in (
        ('name = "knight-2012"', 'name = "[/x]"'),
        ("duration_s = 2700 ", "duration_s = 180 "),  # the bar, not the whole morning
    ):
        assert plain in text
        text = text.replace(plain, hostile, 1)
    console = Console(file=io.StringIO(), force_terminal=True, width=200)
    result = runner_module.run(loads(text, "hostile.toml"), resolve("none"), None, console)
    assert result.scenario == "[/x]"
    shown = console.file.getvalue()
    assert "[/x]" in shown and "guards=none" in shown, shown
