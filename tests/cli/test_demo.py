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


def test_demo_refuses_an_empty_report_dir_rather_than_writing_where_it_runs(
    tmp_path: Path,
) -> None:
    """`--report "$DIR"` with DIR unset arrives as "": read as `.`, the reports went into
    whatever directory the demo was started in."""
    args = ["demo", "--report", "", "--json", str(tmp_path / "no-such-dir" / "figures.json")]
    out = CliRunner().invoke(app, args, env=WIDE)
    assert out.exit_code == 2
    assert "--report" in out.output and "empty path" in out.output, out.output
    assert not (Path.cwd() / ".write-test").exists()


def test_demo_refusals_are_one_line_naming_the_option_and_the_rule(tmp_path: Path) -> None:
    """At the default 80 columns, with a long path, a file given for the report directory
    and a directory given for the figures: one line each, never wrapped."""
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    blocker = deep / "file"
    blocker.write_text("not a directory")
    cases = [
        (
            ["--report", str(blocker)],
            f"--report {blocker}: is a file; --report must name a directory",
        ),
        (["--report", str(deep), "--json", str(deep)], f"--json {deep}: is a directory"),
    ]
    for args, said in cases:
        out = CliRunner().invoke(app, ["demo", *args])
        assert out.exit_code == 2, out.output
        assert out.output.strip().splitlines() == [out.output.strip()], out.output
        assert said in out.output, out.output


def test_demo_escapes_control_characters_in_the_paths_it_names(tmp_path: Path) -> None:
    """A path is shown as given, but an escape sequence or carriage return in it does not
    reach the terminal (it would clear the screen or overwrite the error)."""
    bad = tmp_path / "a\x1b[2J\rb" / "figures.json"
    out = CliRunner().invoke(app, ["demo", "--report", str(tmp_path), "--json", str(bad)], env=WIDE)
    assert out.exit_code == 2, out.output
    assert "\x1b" not in out.output and "\r" not in out.output, repr(out.output)
    assert "a\\x1b[2J\\rb/figures.json: cannot write" in out.output, out.output


def test_demo_names_a_report_dir_that_is_a_symlink_loop_as_one(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    out = CliRunner().invoke(app, ["demo", "--report", str(loop)], env=WIDE)
    assert out.exit_code == 2, out.output
    assert f"--report {loop}: not a writable directory (a symbolic link" in out.output
    assert "dangling or a loop" in out.output and "File exists" not in out.output
