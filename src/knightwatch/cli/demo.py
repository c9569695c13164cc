"""`knightwatch demo` (what `make demo` runs): the Knight 2012 replay, unguarded then guarded."""

from __future__ import annotations

import tempfile
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
    console = Console()
    out = report_dir or Path(tempfile.mkdtemp(prefix="knightwatch-replay-"))
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        console.print(f"[red]error:[/red] --report {out}: not a writable directory ({exc})")
        raise typer.Exit(2) from None
    run_demo(console, out)
