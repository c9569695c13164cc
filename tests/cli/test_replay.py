"""`knightwatch replay` output options: checked before the run, one line, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app

SMALL = Path(__file__).parents[2] / "examples" / "scenario-small.toml"


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("option", "make", "message"),
    [
        ("--json", lambda p: p.mkdir(), "is a directory; --json must name a file"),
        ("--report", lambda p: p.write_text("x"), "is a file; --report must name a directory"),
    ],
)
def test_an_unusable_output_path_is_refused_before_the_run(
    tmp_path: Path, option: str, make: object, message: str
) -> None:
    target = tmp_path / "out"
    make(target)  # type: ignore[operator]
    code, out = run("replay", SMALL, option, target)
    assert code == 2, out
    assert f"{option} {target}: {message}" in out
    assert "small-runaway" not in out  # no run, no tables: refused up front
    assert len(out.strip().splitlines()) == 1


def test_an_output_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    code, out = run("replay", SMALL, "--json", tmp_path / "afile" / "s.json")
    assert code == 2 and "is not a directory" in out, out


@pytest.mark.parametrize(
    ("inside", "make", "message"),
    [
        ("audit", lambda p: p.write_text("x"), "is a file; the report writes a directory there"),
        ("index.html", lambda p: p.mkdir(), "is a directory; the report writes a file there"),
        ("summary.json", lambda p: p.mkdir(), "is a directory; the report writes a file there"),
        (
            "audit/n1.jsonl",
            lambda p: p.mkdir(parents=True),
            "is a directory; the report writes a file there",
        ),
    ],
)
def test_a_path_the_report_writes_that_is_unusable_is_refused_before_the_run(
    tmp_path: Path, inside: str, make: object, message: str
) -> None:
    """`--report DIR` with DIR/audit a file was a traceback (FileExistsError) once the
    recorders opened; DIR/index.html a directory failed only after the whole run."""
    report = tmp_path / "rep"
    report.mkdir()
    make(report / inside)  # type: ignore[operator]
    code, out = run("replay", SMALL, "--guards", "all", "--report", report)
    assert code == 2, out
    assert f"--report {report}: {report / inside} {message}" in out
    assert "small-runaway" not in out  # no run, no tables: refused up front
    assert len(out.strip().splitlines()) == 1


def test_a_scenario_and_paths_that_look_like_markup_are_shown_as_written(
    tmp_path: Path,
) -> None:
    """A scenario named `[/x] [red]boom[/red]`, reported into a directory whose path reads
    like markup: before, the run ended in a rich MarkupError at its report tables, after
    the whole replay, and `[red]` was rendered as styling."""
    text = SMALL.read_text().replace('name = "small-runaway"', 'name = "[/x] [red]boom[/red]"', 1)
    scenario = tmp_path / "hostile.toml"
    scenario.write_text(text)
    report = tmp_path / "[/r]"
    code, out = run("replay", scenario, "--guards", "all", "--report", report)
    assert code == 0, out
    assert "[/x] [red]boom[/red]" in out and "Traceback" not in out
    assert f"HTML report: {report / 'index.html'}" in out


def test_a_release_id_no_manifest_can_hold_is_refused_before_the_run(tmp_path: Path) -> None:
    """`[releases."o/ld"]`: the attestation layer signs every release of the scenario, and
    the run ended in a ReleaseInputError traceback (exit 1) instead of naming the key."""
    text = SMALL.read_text().replace('[releases.old]\nid = "old"', '[releases."o/ld"]\nid = "o/ld"')
    text = text.replace('previous = "old"', 'previous = "o/ld"')
    scenario = tmp_path / "slash.toml"
    scenario.write_text(text)
    code, out = run("replay", scenario, "--guards", "attestation")
    assert code == 2, out
    assert f"{scenario}: invalid scenario" in out
    assert "releases.o/ld: 'o/ld' must be 1-128 characters of letters" in out
    assert "Traceback" not in out


def test_compare_and_json_state_no_runaway_when_nothing_runs_away(tmp_path: Path) -> None:
    """No stale node and no rollback: nothing runs away. The terminal said "no runaway";
    the JSON had only `contained_after_s: 0.0`, read as "stopped at the open"."""
    text = SMALL.read_text().replace('missed_deploy = ["n4"]', "missed_deploy = []")
    scenario = tmp_path / "quiet.toml"
    scenario.write_text(text.replace("rollback_s = 30", ""))
    out_json = tmp_path / "s.json"
    code, out = run("replay", scenario, "--compare", "--json", out_json)
    assert code == 0 and "Traceback" not in out, out
    assert "no runaway" in out
    summary = json.loads(out_json.read_text())
    assert summary["runaway"] is False and summary["containment"] == "no runaway"
    assert summary["comparison"] and all(
        row["runaway"] is False and row["containment"] == "no runaway"
        for row in summary["comparison"]
    )


def test_a_scenario_file_that_cannot_be_read_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty.toml").write_text("")
    (tmp_path / "latin1.toml").write_bytes(b'[scenario]\nname = "caf\xe9"\n')
    for path, rule in (
        (tmp_path, "is a directory, not a file"),
        (tmp_path / "empty.toml", "the file is empty"),
        (tmp_path / "latin1.toml", "not UTF-8 text"),
    ):
        code, out = run("replay", path)
        assert code == 2 and rule in out and str(path) in out and "Traceback" not in out, out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--guards", "rates", "--resume-after", "10"),
            "--resume-after: the person who killed resumes (the kill_switch layer), and "
            "--guards has no kill_switch: nothing would be resumed",
        ),
        (
            ("--resume-after", "10"),  # --guards none
            "--resume-after: the person who killed resumes (the kill_switch layer)",
        ),
        (
            ("--guards", "exposure", "--no-ramp"),
            "--ramp/--no-ramp: the person who killed resumes (the kill_switch layer)",
        ),
        (
            ("--guards", "kill_switch", "--no-ramp"),
            "--ramp/--no-ramp: there is no resume to ramp",
        ),
    ],
)
def test_a_resume_the_run_cannot_make_is_refused_before_the_run(
    args: tuple[str, ...], message: str
) -> None:
    """Without the kill_switch layer nobody kills, so nobody resumes: `--guards rates
    --resume-after 10` ran and printed its report with no resume and no word that the
    option had done nothing, read as "the fleet came back and nothing happened"."""
    code, out = run("replay", SMALL, *args)
    assert code == 2, out
    assert message in out and "small-runaway" not in out, out
    assert len(out.strip().splitlines()) == 1


def test_a_resume_with_the_kill_switch_runs(tmp_path: Path) -> None:
    """With the layer, `--resume-after` resumes; `--no-ramp` ramps nothing but a resume the
    scenario's timeline sets is one it acts on."""
    code, out = run("replay", SMALL, "--guards", "kill_switch,rates", "--resume-after", "10")
    assert code == 0 and "after the resume" in out, out
    scenario = tmp_path / "resumes.toml"
    text = SMALL.read_text().replace("reaction_s = 40\n", "reaction_s = 40\nresume_after_s = 10\n")
    scenario.write_text(text)
    code, out = run("replay", scenario, "--guards", "kill_switch", "--no-ramp")
    assert code == 0 and "full limits" in out, out
