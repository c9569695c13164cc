"""`knightwatch demo` (what `make demo` runs): the Knight 2012 replay, unguarded then guarded."""

from __future__ import annotations

import tempfile
from pathlib import Path

import msgspec
import typer
from rich.console import Console
from rich.markup import escape

from knightwatch.cli import runner
from knightwatch.cli.options import OptionError, check_writable
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
        console.print(escape(f"HTML report: {path}"), highlight=False)
    return reports


def demo(
    report_dir: Path | None = typer.Option(
        None, "--report", help="where to write the HTML reports (default: a new temp dir)"
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="also write both runs' figures here (keys: none, all)"
    ),
) -> None:
    """Replay 2012-08-01 with no guards, then with every guardrail layer, and compare."""
    console = Console()
    out = report_dir or Path(tempfile.mkdtemp(prefix="knightwatch-replay-"))
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:  # the paths as given: "[/x]" in one is shown, not read as markup
        console.print(
            f"[red]error:[/red] {escape(f'--report {out}: not a writable directory ({exc})')}",
            highlight=False,
        )
        raise typer.Exit(2) from None
    if json_out is not None:
        try:  # said before both replays run, not after them
            check_writable("--json", json_out)
        except OptionError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
    reports = run_demo(console, out)
    if json_out is not None:
        figures = {spec: report.json() for spec, report in reports.items()}
        try:
            json_out.write_bytes(msgspec.json.format(msgspec.json.encode(figures), indent=2))
        except OSError as exc:
            console.print(
                f"[red]error:[/red] {escape(f'--json {json_out}: cannot write ({exc})')}",
                highlight=False,
            )
            raise typer.Exit(2) from None
