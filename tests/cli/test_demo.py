"""`make demo` runs `knightwatch demo`: it must work end to end and report both runs."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from knightwatch.cli.app import app

WIDE = {"COLUMNS": "200"}


def test_demo_replays_unguarded_then_guarded_and_writes_reports(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["demo", "--report", str(tmp_path)], env=WIDE)
    assert out.exit_code == 0, out.output
    assert "replay vs SEC record" in out.output
    assert "guards: none" in out.output and "guards: parent_reconciliation" in out.output
    assert (tmp_path / "none" / "index.html").is_file()
    assert (tmp_path / "all" / "index.html").is_file()


def test_demo_refuses_an_unwritable_report_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = CliRunner().invoke(app, ["demo", "--report", str(blocker / "sub")], env=WIDE)
    assert out.exit_code == 2
    assert "not a writable directory" in out.output
    assert "Traceback" not in out.output
