"""`knightwatch up` on a named fleet: its own target request names the fleet it runs as.

A roster may name its fleet (`identity name`, `Roster.fleet`), and the admission service
then refuses a target request or approval naming another fleet or none (`wrong_fleet`).
`up` set its release as the target with a request naming no fleet, so a local fleet whose
roster was named could not start: "release local-... refused as target: wrong_fleet". And
nothing let `up` name the fleet it starts. Now `up --fleet NAME` names a new local fleet
(once: a fleet's roster keeps its name), and `up` requests its target for the fleet its
roster in force names, also one the admins named with `identity name` while it ran.
Real processes and a real nats-server throughout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.trust.kit import Kit

from .test_fleet_up_running import _stop, _until_up

pytestmark = pytest.mark.timeout(240)
ENV = {**os.environ, "COLUMNS": "300"}
runner = CliRunner()


def _up(state: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "knightwatch", "up", "--nodes", "1", "--flow", "0",
         "--state-dir", str(state), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )  # fmt: skip


@pytest.fixture
def fleets() -> Iterator[list[subprocess.Popen[str]]]:
    """Every `up` a test starts, stopped (SIGTERM stops its fleet) at the end."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            _stop(proc)


def _started(fleets: list[subprocess.Popen[str]], state: Path, *options: str) -> str:
    """`up` started and up (its output so far); AssertionError with its output if it ended."""
    proc = _up(state, *options)
    fleets.append(proc)
    return _until_up(proc)


def _identity(state: Path, who: str, *args: str | Path) -> tuple[int, str]:
    result = runner.invoke(
        app,
        ["identity", *(str(a) for a in args), "--state-dir", str(state)],
        env={"COLUMNS": "250", "KNIGHTWATCH_KEY": str(state / "trust" / "keys" / f"{who}.key")},
    )
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def test_up_names_a_new_fleet_and_keeps_the_name(
    tmp_path: Path, fleets: list[subprocess.Popen[str]]
) -> None:
    state = tmp_path / "state"
    for bad in ("prod ldn", ""):  # "": `--fleet "$FLEET"` with FLEET unset
        done = subprocess.run(
            [sys.executable, "-m", "knightwatch", "up", "--fleet", bad, "--state-dir", str(state)],
            capture_output=True, text=True, env=ENV, timeout=60,
        )  # fmt: skip
        said = (done.stdout + done.stderr).strip()
        assert done.returncode == 2 and said.startswith("error: --fleet: a fleet name"), said
        assert not state.exists()  # refused before anything is written
    out = _started(fleets, state, "--fleet", "dev-ldn")
    assert "for fleet dev-ldn on" in out, out
    code, out = _identity(state, "carol", "show")
    assert code == 0 and "fleet dev-ldn" in out, out
    assert _stop(fleets.pop()) == 0
    # restarted without --fleet: the roster's name, and its target request names it
    out = _started(fleets, state)
    assert "for fleet dev-ldn on" in out, out
    assert _stop(fleets.pop()) == 0
    # another name for it is refused at once, naming both
    done = subprocess.run(
        [sys.executable, "-m", "knightwatch", "up", "--nodes", "1", "--fleet", "prod-ldn",
         "--state-dir", str(state)],
        capture_output=True, text=True, env=ENV, timeout=60,
    )  # fmt: skip
    said = (done.stdout + done.stderr).strip()
    assert done.returncode == 2 and len(said.splitlines()) == 1, said
    assert "--fleet prod-ldn" in said and "'dev-ldn'" in said, said


def test_up_runs_a_fleet_its_admins_named(
    tmp_path: Path, fleets: list[subprocess.Popen[str]]
) -> None:
    """The name published with `identity name` on a running `up` (not in its files)."""
    state = tmp_path / "state"
    _started(fleets, state)
    proposal = tmp_path / "name.json"
    code, out = _identity(state, "admin1", "name", "dev-ldn", "--out", proposal)
    assert code == 0, out
    code, out = _identity(state, "admin2", "sign", proposal)
    assert code == 0, out
    code, out = _identity(state, "admin1", "publish", proposal)
    assert code == 0 and "published" in out, out
    assert _stop(fleets.pop()) == 0
    out = _started(fleets, state)
    assert "for fleet dev-ldn on" in out, out


def test_the_drill_runs_as_a_named_fleet(tmp_path: Path) -> None:
    """Its release is the named fleet's target and its kill reaches every node (whether the
    supervisor halts the runaway in time on a loaded machine is the drill tests' concern)."""
    state = tmp_path / "drill"
    report = tmp_path / "report.json"
    result = runner.invoke(
        app,
        ["drill", "--nodes", "3", "--no-resume", "--fleet", "drill-ldn",
         "--state-dir", str(state), "--json", str(report)],
        env={"COLUMNS": "250"},
    )  # fmt: skip
    assert result.exit_code in (0, 1) and "wrong_fleet" not in result.output, result.output
    figures = json.loads(report.read_text())
    assert figures["release_id"].startswith("local-"), figures
    assert set(figures["kill_latencies_ms"]) == {"n1", "n2", "n3"}, figures
    assert Kit.read(state / "trust").roster.fleet == "drill-ldn"


def test_the_fix_drill_refuses_a_fleet_name(tmp_path: Path) -> None:
    """The FIX drill runs no named fleet: `--fleet` is refused, not left out silently."""
    state = tmp_path / "drill"
    result = runner.invoke(
        app, ["drill", "--fix", "--fleet", "drill-ldn", "--state-dir", str(state)]
    )
    assert result.exit_code == 2 and "--fleet: not with --fix" in result.output, result.output
    assert not state.exists()
