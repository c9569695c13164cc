"""`knightwatch flags` command-line behaviour: bad options are one line, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app

CLEAN = Path(__file__).parents[1] / "flags" / "fixtures" / "clean_repo"


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
