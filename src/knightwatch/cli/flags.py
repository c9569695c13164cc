"""`knightwatch flags ...`: lint, inspect, switch and roll out flags.

Until the control plane holds flag state, `set` and `rollout` keep it in a
local JSON file and read the fleet (admitted nodes and their release flag
schemas) from a fleet file; both sit behind the `FlagStateStore` and
`FleetView` protocols, so the control-plane-backed versions plug in unchanged.
"""

from __future__ import annotations

import getpass
import json
import socket
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from knightwatch.clock import NS_PER_S, SystemClock
from knightwatch.flags.activation import ActivationGate, ActivationPolicy, ActivationRequest
from knightwatch.flags.fleet import FleetFileError, StaticFleetView
from knightwatch.flags.lint import DEFAULT_ACCESSORS, LintConfig, run_lint
from knightwatch.flags.registry import REGISTRY_FILENAME, FlagRegistry, RegistryError
from knightwatch.flags.rollout import (
    Rollout,
    RolloutPlan,
    RolloutRunner,
    RolloutState,
    RolloutStatus,
)
from knightwatch.flags.state import FileFlagStateStore, StateUnavailable
from knightwatch.state import Scope

app = typer.Typer(help="Flag governance: registry lint, inspection, gated activation.")
rollout_app = typer.Typer(help="Staged rollouts with health gates and automatic abort.")
app.add_typer(rollout_app, name="rollout")

STATE_DIR = Path(".knightwatch")
REGISTRY_OPT = typer.Option(Path(REGISTRY_FILENAME), "--registry", help="flag registry file")
STATE_OPT = typer.Option(STATE_DIR / "flag-state.json", "--state", help="flag state file")
FLEET_OPT = typer.Option(
    STATE_DIR / "fleet.yaml", "--fleet", help="fleet file: admitted nodes and flag schemas"
)
ROLLOUTS_OPT = typer.Option(STATE_DIR / "rollouts.json", "--rollouts", help="rollout state file")
POLICY_OPT = typer.Option(None, "--policy", help="activation policy TOML")
_ACCESSORS = ", ".join(DEFAULT_ACCESSORS)
ACTOR_OPT = typer.Option(None, "--actor", help="who is making the change (default: login)")


class _WallClock:
    """Rollout hold times persist across CLI invocations, so both readings are wall time."""

    def monotonic_ns(self) -> int:
        return SystemClock().time_ns()

    def time_ns(self) -> int:
        return SystemClock().time_ns()


class _RolloutFile(msgspec.Struct):
    rollouts: list[RolloutState] = []
    halt_requests: list[dict[str, str]] = []


class _HaltRequestLog:
    """Halt requests the CLI cannot execute itself; recorded for the kill switch."""

    def __init__(self, data: _RolloutFile) -> None:
        self._data = data

    def halt(self, scope: Scope, key: str, reason: str, actor: str) -> None:
        self._data.halt_requests.append(
            {"scope": str(scope), "key": key, "reason": reason, "actor": actor}
        )


def _fail(console: Console, message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _load_registry(console: Console, path: Path) -> FlagRegistry:
    try:
        return FlagRegistry.load(path)
    except RegistryError as exc:
        raise _fail(console, str(exc)) from None


def _origin() -> str:
    return f"{socket.gethostname()} knightwatch-cli"


@app.command("lint")
def lint(
    registry: Path = REGISTRY_OPT,
    src: Annotated[
        list[Path] | None,
        typer.Option("--src", help="source roots to scan (default: the registry's directory)"),
    ] = None,
    accessor: Annotated[
        list[str] | None,
        typer.Option("--accessor", help=f"accessor call names (default: {_ACCESSORS})"),
    ] = None,
    history: bool = typer.Option(False, "--history", help="also check the registry's git history"),
    today: str = typer.Option(None, "--today", help="date for expiry checks, YYYY-MM-DD"),
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write findings as JSON to this file")
    ] = None,
) -> None:
    """Exit 1 on any error: reused/re-defined ids, hygiene gaps, dead flag references."""
    console = Console()
    try:
        as_of = date.fromisoformat(today) if today else _today()
    except ValueError:
        raise _fail(console, f"--today: expected YYYY-MM-DD, got {today!r}") from None
    roots = src or [registry.parent]
    missing = [str(r) for r in roots if not r.exists()]
    if missing:
        raise _fail(console, f"--src: no such path: {', '.join(missing)}")
    config = LintConfig(accessors=tuple(accessor)) if accessor else LintConfig()
    with Progress(
        TextColumn("scanning sources"), BarColumn(), MofNCompleteColumn(), console=console
    ) as progress:
        task = progress.add_task("scan", total=None)

        def advance(_: Path, total: int) -> None:
            progress.update(task, total=total, advance=1)

        report = run_lint(registry, roots, as_of, history=history, config=config, on_file=advance)
    for finding in report.findings:
        colour = "red" if finding.severity == "error" else "yellow"
        console.print(
            f"[{colour}]{escape(finding.render())}[/{colour}]", highlight=False, soft_wrap=True
        )
    if json_out is not None:
        json_out.write_bytes(msgspec.json.format(msgspec.json.encode(report)))
    errors = sum(1 for f in report.findings if f.severity == "error")
    summary = (
        f"{errors} error(s), {len(report.findings) - errors} warning(s); "
        f"{report.files_scanned} file(s), {report.versions_checked} registry version(s)"
    )
    if report.failed:
        console.print(f"[red]flags lint failed:[/red] {summary}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"[green]flags lint passed:[/green] {summary}", highlight=False)


def _today() -> date:
    return datetime.fromtimestamp(SystemClock().time_ns() / NS_PER_S, UTC).date()


@app.command("list")
def list_flags(registry: Path = REGISTRY_OPT) -> None:
    """Every flag in the registry, tombstones included."""
    console = Console()
    reg = _load_registry(console, registry)
    table = Table(title=str(registry))
    for column in ("id", "lifecycle", "owner", "expires", "trading", "safe default", "hash"):
        table.add_column(column)
    for flag in reg.flags():
        table.add_row(
            flag.id,
            str(flag.lifecycle),
            flag.owner or "-",
            flag.expires.isoformat() if flag.expires else "-",
            "yes" if flag.trading_behaviour else "no",
            "on" if flag.safe_default else "off",
            flag.meaning_hash[:12],
        )
    console.print(table)


@app.command("show")
def show(flag_id: str, registry: Path = REGISTRY_OPT, state: Path = STATE_OPT) -> None:
    """One flag: definition, hash, history, current per-node values and changes."""
    console = Console()
    reg = _load_registry(console, registry)
    flag = reg.get(flag_id)
    if flag is None:
        raise _fail(console, f"{flag_id}: not in {registry}")
    console.print(f"[bold]{flag.id}[/bold] ({flag.lifecycle})", highlight=False)
    console.print(f"  {flag.description}", highlight=False)
    console.print(f"  owner {flag.owner or '-'}, created {flag.created}, expires {flag.expires}")
    console.print(
        f"  safe default {'on' if flag.safe_default else 'off'}, "
        f"trading behaviour {'yes' if flag.trading_behaviour else 'no'}"
    )
    console.print(f"  definition hash {flag.meaning_hash}", highlight=False)
    for entry in flag.history:
        console.print(f"  {entry.at} {entry.actor}: {entry.action} {entry.note}", highlight=False)
    store = FileFlagStateStore(state)
    try:
        current = store.get(flag.id)
        changes = store.changes(flag.id)
    except StateUnavailable as exc:
        raise _fail(console, str(exc)) from None
    if current is None:
        console.print("  no state: every node evaluates the safe default")
        return
    console.print(f"  revision {current.revision}: {current.node_values}", highlight=False)
    console.print(f"  applied: {current.applied or '-'}", highlight=False)
    for change in changes:
        console.print(
            f"  r{change.revision} {'on' if change.value else 'off'} {','.join(change.nodes)} "
            f"by {change.actor} approver {change.approver or '-'} from {change.origin}: "
            f"{change.reason}",
            highlight=False,
        )


def _gate(
    console: Console, registry: Path, fleet: Path, state: Path, policy: Path | None
) -> tuple[ActivationGate, StaticFleetView]:
    reg = _load_registry(console, registry)
    try:
        view = StaticFleetView.load(fleet)
        pol = ActivationPolicy.load(policy) if policy else ActivationPolicy()
    except (FleetFileError, ValueError) as exc:
        raise _fail(console, str(exc)) from None
    return ActivationGate(reg, view, FileFlagStateStore(state), SystemClock(), pol), view


def _on_off(console: Console, value: str) -> bool:
    if value.lower() not in ("on", "off"):
        raise _fail(console, f"VALUE must be 'on' or 'off', got {value!r}")
    return value.lower() == "on"


@app.command("set")
def set_flag(
    flag_id: str,
    value: str = typer.Argument(..., help="on or off"),
    nodes: str = typer.Option(None, "--nodes", help="comma-separated nodes (default: fleet)"),
    reason: str = typer.Option(..., "--reason", help="why, for the record"),
    actor: str = ACTOR_OPT,
    approver: str = typer.Option(None, "--approver", help="second approver"),
    registry: Path = REGISTRY_OPT,
    fleet: Path = FLEET_OPT,
    state: Path = STATE_OPT,
    policy: Path = POLICY_OPT,
) -> None:
    """Refused unless every targeted node is admitted on a release that knows this flag."""
    console = Console()
    target = _on_off(console, value)
    gate, _ = _gate(console, registry, fleet, state, policy)
    request = ActivationRequest(
        flag_id=flag_id,
        value=target,
        actor=actor or getpass.getuser(),
        reason=reason,
        origin=_origin(),
        nodes=tuple(n.strip() for n in nodes.split(",") if n.strip()) if nodes else (),
        approver=approver,
    )
    try:
        result = gate.apply(request)
    except StateUnavailable as exc:
        raise _fail(console, str(exc)) from None
    if not result.accepted:
        raise _fail(console, f"refused [{result.code}] {result.detail}")
    revision = result.state.revision if result.state else 0
    console.print(f"[green]applied[/green] {result.detail}, revision {revision}", highlight=False)


def _read_rollouts(console: Console, path: Path) -> _RolloutFile:
    if not path.exists():
        return _RolloutFile()
    try:
        return msgspec.json.decode(path.read_bytes(), type=_RolloutFile)
    except (OSError, msgspec.DecodeError) as exc:
        raise _fail(console, f"{path}: rollout state unreadable: {exc}") from None


def _write_rollouts(path: Path, data: _RolloutFile) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(data)))
    tmp.replace(path)


def _current(data: _RolloutFile, flag_id: str) -> int | None:
    for index in range(len(data.rollouts) - 1, -1, -1):
        if data.rollouts[index].flag_id == flag_id:
            return index
    return None


def _report(console: Console, outcomes: list[str], state: RolloutState) -> None:
    for line in outcomes:
        console.print(f"  {line}", highlight=False)
    colour = {"progressing": "cyan", "completed": "green", "aborted": "red"}[state.status]
    stage = state.plan.stages[state.stage_index]
    console.print(
        f"[{colour}]{state.rollout_id}: {state.status}[/{colour}] stage {stage.name}, "
        f"{len(state.exposed)}/{len(state.nodes)} node(s) on"
        + (f", abort reason: {state.abort_reason}" if state.abort_reason else ""),
        highlight=False,
    )


@rollout_app.command("start")
def rollout_start(
    flag_id: str,
    plan: Annotated[
        Path | None, typer.Option("--plan", help="rollout plan TOML (stages, gates)")
    ] = None,
    actor: str = ACTOR_OPT,
    approver: str = typer.Option(None, "--approver", help="second approver"),
    registry: Path = REGISTRY_OPT,
    fleet: Path = FLEET_OPT,
    state: Path = STATE_OPT,
    rollouts: Path = ROLLOUTS_OPT,
    policy: Path = POLICY_OPT,
) -> None:
    """Move the flag off its safe default on the first stage's nodes."""
    console = Console()
    try:
        rollout_plan = msgspec.toml.decode(plan.read_bytes(), type=RolloutPlan) if plan else None
    except (OSError, msgspec.DecodeError, ValueError) as exc:
        raise _fail(console, f"{plan}: {exc}") from None
    gate, view = _gate(console, registry, fleet, state, policy)
    flag = _load_registry(console, registry).get(flag_id)
    if flag is None:
        raise _fail(console, f"{flag_id}: not in {registry}")
    data = _read_rollouts(console, rollouts)
    index = _current(data, flag_id)
    if index is not None and data.rollouts[index].status is RolloutStatus.PROGRESSING:
        raise _fail(console, f"{flag_id}: rollout {data.rollouts[index].rollout_id} in progress")
    clock = _WallClock()
    try:
        rollout, actions = Rollout.start(
            f"{flag_id}#{len(data.rollouts) + 1}",
            flag_id,
            not flag.safe_default,
            [m.node for m in view.members()],
            rollout_plan or RolloutPlan(),
            clock,
            started_by=actor or getpass.getuser(),
            approver=approver,
        )
    except ValueError as exc:
        raise _fail(console, str(exc)) from None
    outcomes = RolloutRunner(gate, _HaltRequestLog(data), _origin()).execute(rollout, actions)
    data.rollouts.append(rollout.state)
    _write_rollouts(rollouts, data)
    _report(console, outcomes, rollout.state)
    if rollout.state.status is RolloutStatus.ABORTED:
        raise typer.Exit(1)


@rollout_app.command("step")
def rollout_step(
    flag_id: str,
    metrics: Annotated[Path, typer.Option("--metrics", help="JSON: {node: {metric: value}}")],
    registry: Path = REGISTRY_OPT,
    fleet: Path = FLEET_OPT,
    state: Path = STATE_OPT,
    rollouts: Path = ROLLOUTS_OPT,
    policy: Path = POLICY_OPT,
) -> None:
    """Judge the exposed nodes' metrics: promote, hold, complete or abort."""
    console = Console()
    try:
        sample = msgspec.json.decode(metrics.read_bytes(), type=dict[str, dict[str, float]])
    except (OSError, msgspec.DecodeError) as exc:
        raise _fail(console, f"{metrics}: {exc}") from None
    _advance(console, flag_id, rollouts, registry, fleet, state, policy, sample, None)


@rollout_app.command("abort")
def rollout_abort(
    flag_id: str,
    reason: str = typer.Option(..., "--reason", help="why, for the record"),
    registry: Path = REGISTRY_OPT,
    fleet: Path = FLEET_OPT,
    state: Path = STATE_OPT,
    rollouts: Path = ROLLOUTS_OPT,
    policy: Path = POLICY_OPT,
) -> None:
    """Put the flag back to its safe default wherever this rollout turned it on."""
    console = Console()
    _advance(console, flag_id, rollouts, registry, fleet, state, policy, None, reason)


def _advance(
    console: Console,
    flag_id: str,
    rollouts: Path,
    registry: Path,
    fleet: Path,
    state: Path,
    policy: Path | None,
    sample: dict[str, dict[str, float]] | None,
    abort_reason: str | None,
) -> None:
    data = _read_rollouts(console, rollouts)
    index = _current(data, flag_id)
    if index is None:
        raise _fail(console, f"{flag_id}: no rollout in {rollouts}")
    gate, _ = _gate(console, registry, fleet, state, policy)
    rollout = Rollout(data.rollouts[index], _WallClock())
    if abort_reason is not None:
        actions = rollout.abort(f"operator: {abort_reason}")
    else:
        actions = rollout.step(sample or {})
    outcomes = RolloutRunner(gate, _HaltRequestLog(data), _origin()).execute(rollout, actions)
    data.rollouts[index] = rollout.state
    _write_rollouts(rollouts, data)
    _report(console, outcomes, rollout.state)
    for request in data.halt_requests:
        console.print(
            f"[red]halt requested[/red] {request['scope']} {request['key']}: {request['reason']}",
            highlight=False,
        )


@rollout_app.command("status")
def rollout_status(
    flag_id: str = typer.Argument(None, help="one flag (default: all rollouts)"),
    rollouts: Path = ROLLOUTS_OPT,
    as_json: bool = typer.Option(False, "--json", help="print the rollout state as JSON"),
) -> None:
    """Where each rollout stands, with its event log."""
    console = Console()
    data = _read_rollouts(console, rollouts)
    chosen = [r for r in data.rollouts if flag_id is None or r.flag_id == flag_id]
    if not chosen:
        raise _fail(console, f"no rollout{' for ' + flag_id if flag_id else ''} in {rollouts}")
    if as_json:
        print(json.dumps(msgspec.to_builtins(chosen), indent=2))
        return
    for state_ in chosen:
        _report(console, [], state_)
        for event in state_.events:
            at = datetime.fromtimestamp(event.at_ns / NS_PER_S, UTC).isoformat(timespec="seconds")
            console.print(f"  {at} {event.kind}: {event.detail}", highlight=False)
