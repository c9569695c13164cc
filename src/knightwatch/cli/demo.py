"""`knightwatch demo` (what `make demo` runs): the Knight 2012 replay, unguarded then guarded."""

from __future__ import annotations

import tempfile
from pathlib import Path

import msgspec
import typer
from rich.console import Console
from rich.markup import escape

from knightwatch.cli import runner
from knightwatch.cli.options import (
    OptionError,
    check_output,
    check_writable,
    nonempty_path,
    shown,
    wrong_kind,
)
from knightwatch.sim.layers import resolve
from knightwatch.sim.replay import ReplayResult
from knightwatch.sim.report import ReplayReport
from knightwatch.sim.scenario import load


def run_demo(console: Console, out: Path) -> dict[str, ReplayReport]:
    """Both runs' tables and the HTML report of each under `out`; the reports by guard spec."""
    scenario = load("knight-2012")
    reports: dict[str, ReplayReport] = {}
    for spec in ("none", "all"):
        result: ReplayResult = runner.run(scenario, resolve(spec), None, console)
        report = reports[spec] = ReplayReport(result, scenario.record)
        for table in report.tables():
            console.print(table)
        path = report.write_html(out / spec)
        console.print(escape(f"HTML report: {shown(path)}"), highlight=False, soft_wrap=True)
    return reports


def demo(
    report_dir: Path | None = typer.Option(
        None,
        "--report",
        help="where to write the HTML reports (default: a new temp dir)",
        parser=nonempty_path,  # `--report "$DIR"` with DIR unset: not the directory it ran in
    ),
    json_out: Path | None = typer.Option(
        None,
        "--json",
        help="also write both runs' figures here (keys: none, all)",
        parser=nonempty_path,
    ),
) -> None:
    """Replay 2012-08-01 with no guards, then with every guardrail layer, and compare."""
    console = Console()

    def refuse(message: str) -> typer.Exit:
        # one line, never wrapped; the paths as given: "[/x]" in one is shown, not read as
        # markup, and a control character in one is escaped, not sent to the terminal
        console.print(
            f"[red]error:[/red] {escape(shown(message))}", highlight=False, soft_wrap=True
        )
        return typer.Exit(2)

    out = report_dir or Path(tempfile.mkdtemp(prefix="knightwatch-replay-"))
    if got := wrong_kind(out, directory=True):
        raise refuse(f"--report {out}: is {got}; --report must name a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        why = exc.strerror or exc
        if isinstance(exc, FileExistsError) and out.is_symlink():  # not "File exists"
            why = "a symbolic link that leads to no directory: dangling or a loop"
        raise refuse(f"--report {out}: not a writable directory ({why})") from None
    if json_out is not None:
        try:  # said before both replays run, not after them
            check_output("--json", json_out)
            check_writable("--json", json_out)
        except OptionError as exc:
            raise refuse(str(exc)) from None
    reports = run_demo(console, out)
    if json_out is not None:
        figures = {spec: report.json() for spec, report in reports.items()}
        try:
            json_out.write_bytes(msgspec.json.format(msgspec.json.encode(figures), indent=2))
        except OSError as exc:
            raise refuse(f"--json {json_out}: cannot write ({exc.strerror or exc})") from None
