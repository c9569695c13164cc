"""`knightwatch flags` command-line behaviour: bad options are one line, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

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
