"""`make demo` runs `knightwatch demo`: it must work end to end and report both runs."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from knightwatch.cli.app import app

from ..conftest import DemoRun

WIDE = {"COLUMNS": "200"}


def test_demo_replays_unguarded_then_guarded_and_writes_reports(knight_demo: DemoRun) -> None:
    assert knight_demo.exit_code == 0, knight_demo.output
    assert "replay vs SEC record" in knight_demo.output
    out = knight_demo.output
    assert "guards: none" in out and "guards: parent_reconciliation" in out
    assert (knight_demo.report_dir / "none" / "index.html").is_file()
    assert (knight_demo.report_dir / "all" / "index.html").is_file()
    assert knight_demo.figures["none"]["guards"] == ["none"]
    assert knight_demo.figures["all"]["executions"] < knight_demo.figures["none"]["executions"]


def test_demo_refuses_an_unwritable_report_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = CliRunner().invoke(app, ["demo", "--report", str(blocker / "sub")], env=WIDE)
    assert out.exit_code == 2
    assert "not a writable directory" in out.output
    assert "Traceback" not in out.output
