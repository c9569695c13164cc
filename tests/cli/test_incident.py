"""`knightwatch incident` options: a `--config` that cannot be used is one line and exit 2.

The `[preflight]` bounds and the `[ramp]` trip are what a resume is judged by; a
NaN bound passes every comparison (a NaN clock bound passed every node), and a
misspelt table leaves its defaults in force, so each is refused before anything
connects, naming the file, the table and the field.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.cli.incident import incident_config, print_outcome
from knightwatch.control.fleet.killswitch import CommandResult
from knightwatch.control.plane.wire import StateEntry
from knightwatch.control.site import Site
from knightwatch.incident.preflight import PreflightConfig
from knightwatch.incident.ramp import RampOutcome
from knightwatch.incident.snapshot import seal
from knightwatch.release.keys import SigningKey
from knightwatch.state import Scope, TradingState

NOWHERE = "nats://127.0.0.1:1"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[preflight]\nlisten_s = nan\n", "preflight: listen_s: must be a number in (0, 60]"),
        ("[preflight]\nmax_clock_offset_ms = inf\n", "preflight: max_clock_offset_ms: must be"),
        ("[preflight]\nmax_verdict_age_s = -1\n", "preflight: max_verdict_age_s: must be"),
        ("[preflight]\nmax_metrics_age_s = 0\n", "preflight: max_metrics_age_s: must be"),
        ("[preflight]\ncrash_loop_window_s = nan\n", "preflight: crash_loop_window_s: must be"),
        ("[preflight]\ncrash_loop_starts = 0\n", "preflight: crash_loop_starts: must be in 1..15"),
        ("[preflight]\ncrash_loop_starts = 16\n", "preflight: crash_loop_starts: must be in 1..15"),
        ("[preflight]\nlisten_s = 1\nbogus = 2\n", "unknown field `bogus`"),
        ("[prefligth]\nlisten_s = 1\n", "prefligth: unknown table"),
        ("[ramp]\napply_timeout_s = inf\n", "ramp: apply_timeout_s: must be in (0, 300]"),
        ("[ramp]\nspike_blocks_per_s = nan\n", "ramp: spike_blocks_per_s: must be a finite"),
        ("[ramp]\nspike_ratio = nan\n", "ramp: spike_ratio: must be in (0, 1]"),
        # a wrong type names its table too (before: "Expected `int`, got `bool` - at
        # `$.crash_loop_starts`", which table's?)
        (
            "[preflight]\ncrash_loop_starts = true\n",
            "preflight: Expected `int`, got `bool` - at `preflight.crash_loop_starts`",
        ),
        (
            "[ramp]\nstages = [{fraction = 0.1, hold_s = 1}, {fraction = 1.0}]\n",
            "ramp: Object missing required field `hold_s` - at `ramp.stages[1]`",
        ),
        ("ramp = 5\n", "ramp: Expected `object`, got `int`"),
    ],
)
def test_a_bad_config_is_one_line_naming_file_table_and_field(
    tmp_path: Path, text: str, needle: str
) -> None:
    config = tmp_path / "incident.toml"
    config.write_text(text)
    result = CliRunner().invoke(
        app, ["incident", "preflight", "--config", str(config), "--nats-url", NOWHERE]
    )
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())  # rich wraps long lines
    assert f"--config {config}" in out and needle in out, out
    assert "ramp: ramp:" not in out and "preflight: preflight:" not in out, out
    assert "Traceback" not in result.output


def test_a_sound_config_is_taken_as_written(tmp_path: Path) -> None:
    config = tmp_path / "incident.toml"
    config.write_text(
        "[preflight]\nlisten_s = 2.5\ncrash_loop_starts = 5\n[ramp]\nspike_ratio = 0.4\n"
    )
    plan, cfg = incident_config(config)
    assert cfg == PreflightConfig(listen_s=2.5, crash_loop_starts=5)
    assert plan.spike_ratio == 0.4


@pytest.mark.parametrize("taken_ns", [10**30, -5])
def test_verify_names_a_taken_time_out_of_range_instead_of_a_traceback(
    tmp_path: Path, taken_ns: int
) -> None:
    """The archive's `taken_ns` is its own claim: one no clock can hold (or before 1970)
    dates nothing, and `verify` says so (exit 1) rather than crash formatting it."""
    archive = tmp_path / "snapshot.tar"
    key = SigningKey.generate()
    archive.write_bytes(
        seal({"kills.json": b"{}"}, key, actor="alice", reason="r", taken_ns=taken_ns)
    )
    result = CliRunner().invoke(app, ["incident", "verify", str(archive)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert f"FAIL {archive}: taken_ns {taken_ns} is out of range" in out, out


@pytest.mark.timeout(90)
def test_snapshot_never_overwrites_earlier_evidence(fleet_up: Path) -> None:
    earlier = fleet_up / "evidence.tar"
    earlier.write_bytes(b"the first snapshot, taken before the restart")
    result = CliRunner().invoke(
        app,
        ["incident", "snapshot", "--out", str(earlier), "--state-dir", str(fleet_up),
         "--key", str(fleet_up / "trust" / "keys" / "alice.key")],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "already exists; refusing to overwrite" in " ".join(result.output.split())
    assert earlier.read_bytes() == b"the first snapshot, taken before the restart"


@pytest.mark.timeout(90)
def test_an_automatic_snapshot_that_fails_after_a_kill_says_the_kill_was_sent(
    nats_server: Site, tmp_path: Path
) -> None:
    """The snapshot `kill` takes by itself runs after the kill went out. A snapshot key
    left readable by others (0644), or a snapshot directory that cannot be made, ended
    the kill with a bare "private key ...: permissions 0644" or "[Errno 20] Not a
    directory": read as the kill failing, it named neither the setting nor the kill."""
    key = tmp_path / "snapshots.key"
    key.write_bytes(nats_server.key_path("alice").read_bytes())
    key.chmod(0o644)
    (tmp_path / "a-file").write_text("")
    env = {**nats_server.cli_env("alice"), "COLUMNS": "400"}
    for setting, value, said in (
        ("KNIGHTWATCH_SNAPSHOT_KEY", str(key), f"KNIGHTWATCH_SNAPSHOT_KEY: private key {key}: "
         "permissions 0644"),
        ("KNIGHTWATCH_SNAPSHOT_DIR", str(tmp_path / "a-file" / "ev"),
         f"KNIGHTWATCH_SNAPSHOT_DIR {tmp_path / 'a-file' / 'ev'}: cannot make the directory"),
    ):  # fmt: skip
        snapshots = {"KNIGHTWATCH_SNAPSHOT_KEY": str(nats_server.key_path("alice")),
                     "KNIGHTWATCH_SNAPSHOT_DIR": str(tmp_path / "ev"), setting: value}  # fmt: skip
        result = CliRunner().invoke(app, ["kill", "--reason", "runaway"], env={**env, **snapshots})
        assert result.exception is None or isinstance(result.exception, SystemExit)
        out = " ".join(result.output.split())
        assert result.exit_code == 3, out  # sent and confirmed: not 2 ("NOT sent"), not 0
        assert "stored at revision" in out, out
        assert "error: the kill was sent (command " in out, out
        assert "evidence snapshot was NOT" in out and said in out, out
        assert "take the evidence now: knightwatch incident snapshot" in out, out
        assert "Traceback" not in result.output


def _outcome(trip: CommandResult | None) -> RampOutcome:
    return RampOutcome("r1", False, 0, 0.1, "spike: 40 blocks", None, trip, 1, 2)


def _kill(
    *, sent: bool = True, revision: int | None = 7, missing: tuple[str, ...] = ()
) -> CommandResult:
    entry = StateEntry(
        Scope.FLEET, "fleet", TradingState.HALTED, "ramp tripped", "alice", "c" * 32, 1
    )
    return CommandResult(entry, ["n1", "n2"], {}, list(missing), revision, sent=sent)


@pytest.mark.parametrize(
    ("trip", "said"),
    [
        (_kill(), "the scope is HALTED again"),
        (None, "its kill was NOT sent"),
        (_kill(sent=False, revision=None), "its kill was NOT sent"),
        (_kill(missing=("n2",)), "its kill is not confirmed by n2: kill the scope again now"),
        (_kill(revision=None), "its kill is not confirmed by the store"),
    ],
)
def test_a_tripped_ramp_says_halted_only_when_its_kill_went_out_and_was_confirmed(
    trip: CommandResult | None, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trip whose kill never left (the control plane gone at that instant) or was not
    confirmed printed "the scope is HALTED again" all the same."""
    print_outcome(_outcome(trip))
    out = " ".join(capsys.readouterr().out.split())
    assert "TRIPPED at stage 1 (10% limits): spike: 40 blocks" in out
    assert said in out
    if "HALTED again" not in said:
        assert "HALTED again" not in out


def test_a_done_ramp_whose_nodes_hold_less_says_so_not_full_limits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nodes that refused the ramp's records hold 10% once "done" is stored: `approve`
    printed "complete: full limits" all the same (`RampOutcome.held`)."""
    done = msgspec.structs.replace(
        _outcome(None), completed=True, fraction=1.0, held=(("n1", 10), ("n2", None))
    )
    print_outcome(done)
    out = " ".join(capsys.readouterr().out.split())
    assert "NOT at full limits on every node" in out
    assert "n1 holds 10% of its limits" in out
    assert "n2 reported no limits since 'done' was stored" in out
    assert "full limits" not in out.replace("NOT at full limits", "")
    print_outcome(msgspec.structs.replace(done, held=()))
    assert "complete: full limits" in " ".join(capsys.readouterr().out.split())
