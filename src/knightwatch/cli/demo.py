"""`knightwatch demo` (what `make demo` runs): the Knight 2012 replay, unguarded then guarded."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from knightwatch.sim.demo import run_demo


def demo(
    report_dir: Path | None = typer.Option(
        None, "--report", help="where to write the HTML reports (default: a new temp dir)"
    ),
) -> None:
    """Replay 2012-08-01 with no guards, then with every guardrail layer, and compare."""
    run_demo(Console(), report_dir)
