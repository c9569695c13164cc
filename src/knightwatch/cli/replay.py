"""`knightwatch replay`: run an incident scenario with chosen guardrail layers.

The output paths are checked before the run: a replay can take minutes, and an
answer lost at the end to `--json /tmp` (a directory) wastes all of them. So is a
resume the run could not make: `--resume-after` is the kill_switch layer's person's,
and without that layer (or `--compare`, whose rows have it) the report came back with
no resume and no word that the option had done nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from knightwatch.cli import runner
from knightwatch.cli.options import OptionError, check_output, nonempty_path, wrong_kind
from knightwatch.sim.layers import REGISTRY, Layer, LayerError, resolve
from knightwatch.sim.report import ReplayReport
from knightwatch.sim.scenario import ScenarioError, load, with_resume


def replay(
    scenario: Annotated[
        str, typer.Argument(help="built-in scenario name (knight-2012) or a scenario TOML file")
    ],
    guards: Annotated[
        str,
        typer.Option(help=f"none, all, or a comma-separated list of: {', '.join(REGISTRY)}"),
    ] = "none",
    seed: Annotated[
        int | None, typer.Option(help="seed for the universe and parents (default: scenario's)")
    ] = None,
    json_file: Annotated[
        Path | None,
        typer.Option(
            "--json", help="write the machine-readable summary here", parser=nonempty_path
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            help="write an HTML report with plots into this directory",
            # `--report "$DIR"` with DIR unset: the report, summary and recorder files went
            # into the directory it ran in, said only as "HTML report: index.html"
            parser=nonempty_path,
        ),
    ] = None,
    compare: Annotated[
        bool, typer.Option(help="also run no guards, each layer alone and all layers")
    ] = False,
    resume_after: Annotated[
        float | None,
        typer.Option(
            help="the person who killed (kill_switch layer) resumes this many seconds later, "
            "the cause still in place (scenario timeline.resume_after_s)"
        ),
    ] = None,
    ramp: Annotated[
        bool | None,
        typer.Option(
            help="resume through the scenario's \\[ramp] (default) or, with --no-ramp, at "
            "full limits (scenario timeline.resume_ramp)"
        ),
    ] = None,
) -> None:
    """Replay an incident on a simulated market with the project's real Guard in the loop."""
    console = Console()
    try:
        if json_file is not None:
            check_output("--json", json_file, directory=False)
        sc = with_resume(load(scenario), resume_after, ramp)
        if report is not None:
            _check_report(report, sc.node_ids())
        layers = resolve(guards)
        _check_resume(resume_after, ramp, layers, compare, sc.timeline.resume_after_s)
    except (ScenarioError, LayerError, OptionError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    audit_dir = report / "audit" if report is not None else None
    try:
        result = runner.run(sc, layers, seed, console, audit_dir)
    except OSError as exc:  # the recorder files: checked above, but the disk can still say no
        console.print(f"error: cannot write {exc.filename}: {exc.strerror or exc}", markup=False)
        raise typer.Exit(2) from None
    comparison = runner.compare(sc, seed, console) if compare else None
    rep = ReplayReport(result, sc.record, comparison)
    for table in rep.tables():
        console.print(table)
    try:
        if json_file is not None:
            rep.write_json(json_file)
            console.print(f"summary: {json_file}", markup=False, highlight=False)
        if report is not None:
            console.print(f"HTML report: {rep.write_html(report)}", markup=False, highlight=False)
    except OSError as exc:  # checked above, but the disk can still say no
        console.print(f"error: cannot write {exc.filename}: {exc.strerror or exc}", markup=False)
        raise typer.Exit(2) from None
    if audit_dir is not None and audit_dir.is_dir():
        files = sorted(audit_dir.glob("*.jsonl"))
        console.print(
            f"flight recorder: {len(files)} node files in {audit_dir} "
            f"(knightwatch audit why ORDER_ID {audit_dir}/n1.jsonl)",
            markup=False,
            highlight=False,
        )


def _check_resume(
    after_s: float | None,
    ramp: bool | None,
    layers: tuple[Layer, ...],
    compare: bool,
    scenario_after_s: float | None,
) -> None:
    """A `--resume-after` or `--ramp/--no-ramp` the run would silently not act on: the
    resume is made by the kill_switch layer's person (no such layer, no kill, no
    resume), and a ramp needs a resume to ramp."""
    given = "--resume-after" if after_s is not None else "--ramp/--no-ramp"
    killer = any(layer.name == "kill_switch" for layer in layers)
    if (after_s is not None or ramp is not None) and not (compare or killer):
        raise OptionError(
            f"{given}: the person who killed resumes (the kill_switch layer), and "
            "--guards has no kill_switch: nothing would be resumed (add kill_switch, or "
            "--compare)"
        )
    if ramp is not None and after_s is None and scenario_after_s is None:
        raise OptionError(
            "--ramp/--no-ramp: there is no resume to ramp (give --resume-after or set the "
            "scenario's timeline.resume_after_s)"
        )


def _check_report(report: Path, nodes: list[str]) -> None:
    """The report's directory and every path it writes there (before: one that was a
    directory where a file goes, or the reverse, failed at the end of the run, or as a
    traceback when the recorders opened)."""
    check_output("--report", report, directory=True)
    audit = report / "audit"
    inside = [(audit, True), (report / "index.html", False), (report / "summary.json", False)]
    inside += [(audit / f"{node}.jsonl", False) for node in nodes]
    for path, directory in inside:
        got = wrong_kind(path, directory=directory)
        if got:
            want = "a directory" if directory else "a file"
            raise OptionError(f"--report {report}: {path} is {got}; the report writes {want} there")
