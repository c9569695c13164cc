"""`make demo`: the Knight 2012 replay with no guards, then with every guardrail layer."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console

from knightwatch.sim import runner
from knightwatch.sim.layers import resolve
from knightwatch.sim.report import ReplayReport
from knightwatch.sim.scenario import load


def run_demo(console: Console, report_dir: Path | None = None) -> None:
    """Print both summaries and where the HTML report (of the guarded run) was written."""
    scenario = load("knight-2012")
    out = report_dir or Path(tempfile.mkdtemp(prefix="knightwatch-replay-"))
    for spec in ("none", "all"):
        result = runner.run(scenario, resolve(spec), None, console)
        report = ReplayReport(result, scenario.record)
        for table in report.tables():
            console.print(table)
        path = report.write_html(out / spec)
        console.print(f"HTML report: {path}")
