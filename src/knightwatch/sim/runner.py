"""Running replays for people: a progress bar per run, and the layer-by-layer comparison."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from knightwatch.sim.layers import REGISTRY, Layer
from knightwatch.sim.replay import Replay, ReplayResult
from knightwatch.sim.scenario import Scenario


def run(
    scenario: Scenario, layers: tuple[Layer, ...], seed: int | None, console: Console
) -> ReplayResult:
    label = ",".join(layer.name for layer in layers) or "none"
    with Progress(
        TextColumn(f"[bold]{scenario.name}[/] guards={label}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% of the simulated window"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("replay", total=1.0)
        result = Replay(scenario, layers, seed).run(
            progress=lambda f: bar.update(task, completed=f)
        )
    return result


def comparison_sets() -> list[tuple[Layer, ...]]:
    """No guards, each layer alone, all layers: the report's comparison rows."""
    layers = tuple(REGISTRY.values())
    return [(), *((layer,) for layer in layers), layers]


def compare(scenario: Scenario, seed: int | None, console: Console) -> list[ReplayResult]:
    return [run(scenario, layers, seed, console) for layers in comparison_sets()]
