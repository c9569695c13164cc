"""Running replays for people: a progress bar per run, and the layer-by-layer comparison.

The comparison runs its configurations in worker processes (one per core):
each run is independent and deterministic, so running them side by side
changes nothing but the wall time.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from knightwatch.sim.layers import REGISTRY, Layer, resolve, runtime_layers
from knightwatch.sim.replay import Replay, ReplayResult
from knightwatch.sim.scenario import Scenario


def run(
    scenario: Scenario,
    layers: tuple[Layer, ...],
    seed: int | None,
    console: Console,
    audit_dir: Path | None = None,
) -> ReplayResult:
    label = ",".join(layer.name for layer in layers) or "none"
    with Progress(
        # a scenario file's own name ("[/x]"): shown as written, never read as markup
        TextColumn(f"[bold]{escape(scenario.name)}[/] guards={escape(label)}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% of the simulated window"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("replay", total=1.0)
        result = Replay(scenario, layers, seed, audit_dir=audit_dir).run(
            progress=lambda f: bar.update(task, completed=f)
        )
    return result


def comparison_sets() -> list[tuple[Layer, ...]]:
    """No guards, each layer alone, the runtime layers together, all layers: the report's
    comparison rows."""
    layers = tuple(REGISTRY.values())
    return [(), *((layer,) for layer in layers), runtime_layers(), layers]


def _run_named(scenario: Scenario, spec: str, seed: int | None) -> ReplayResult:
    return Replay(scenario, resolve(spec), seed).run()


def compare(
    scenario: Scenario, seed: int | None, console: Console, workers: int | None = None
) -> list[ReplayResult]:
    """Every comparison row, in worker processes; results in `comparison_sets()` order."""
    specs = [",".join(layer.name for layer in ls) or "none" for ls in comparison_sets()]
    n = max(1, min(workers or os.cpu_count() or 1, len(specs)))
    with (
        Progress(
            TextColumn(f"[bold]{escape(scenario.name)}[/] comparison ({n} workers)"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar,
        ProcessPoolExecutor(max_workers=n) as pool,
    ):
        task = bar.add_task("compare", total=len(specs))
        futures = [pool.submit(_run_named, scenario, spec, seed) for spec in specs]
        for future in futures:
            future.add_done_callback(lambda _: bar.advance(task))
        return [f.result() for f in futures]
