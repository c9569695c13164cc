"""`knightwatch flags ...` and `knightwatch rollout ...`: lint, inspect, switch, roll out.

`lint`, `list` work on the registry file alone (CI). `show`, `set` and
`rollout` work on the live fleet: flag state in the control plane, the fleet
view from membership and admission verdicts, rollout gates on the metrics
nodes publish, halts through the kill switch.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from knightwatch.cli.fleet import AnchorOpt, KeyOpt, NatsUrl, StateDir, session, write_approval
from knightwatch.cli.options import (
    TIMEOUT_LEAST,
    TIMEOUT_MAX,
    OptionError,
    check_output,
    node_list,
    nonempty_path,
    shown,
    wait_seconds,
)
from knightwatch.clock import NS_PER_S, SystemClock
from knightwatch.control.fleet.activate import activate
from knightwatch.control.fleet.flagstore import ChangeInDoubt
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.fleet.rollout import (
    Confirmations,
    RolloutDriver,
    RolloutError,
    confirmations,
)
from knightwatch.control.fleet.supervisor import SupervisorConfig
from knightwatch.control.node.flags import assemble, changes_of
from knightwatch.control.plane.connect import FleetError
from knightwatch.control.plane.protocol import Bucket, ControlPlane, ControlPlaneUnavailable
from knightwatch.control.plane.wire import NodeStatus
from knightwatch.errors import quoted
from knightwatch.flags.activation import (
    ActivationPolicy,
    ActivationRequest,
    ActivationResult,
)
from knightwatch.flags.lint import DEFAULT_ACCESSORS, LintConfig, run_lint
from knightwatch.flags.registry import REGISTRY_FILENAME, FlagRegistry, RegistryError
from knightwatch.flags.rollout import (
    RolloutPlan,
    RolloutState,
    RolloutStatus,
    failed_actions,
    plan_digest,
)
from knightwatch.flags.state import StateUnavailable
from knightwatch.inputs import (
    JSON_MAX_BYTES,
    UNDECODABLE,
    InputFileError,
    check_json_depth,
    load_toml,
    read_bytes,
)
from knightwatch.release.dsse import Envelope, encode_envelope
from knightwatch.trust.approval import (
    APPROVAL_TTL_S,
    Approval,
    ApprovalKind,
    check_approval,
    decode_approval_file,
    sign_approval,
)
from knightwatch.trust.identity import Signer
from knightwatch.trust.roster import Role, TrustError
from knightwatch.trust.store import TrustStore

app = typer.Typer(help="Flag governance: registry lint, inspection, gated activation.")
rollout_app = typer.Typer(
    help="Staged rollouts with health gates and automatic abort.", no_args_is_help=True
)

REGISTRY_OPT = typer.Option(Path(REGISTRY_FILENAME), "--registry", help="flag registry file")
POLICY_OPT = typer.Option(None, "--policy", help="activation policy TOML")
_ACCESSORS = ", ".join(DEFAULT_ACCESSORS)
T = TypeVar("T")
IN_DOUBT_EXIT = 3
"""A change that went out while the control plane was lost before its end was seen: stored
(in force on the nodes that apply it) or maybe stored, as the line says. Never exit 2 (an
error before anything changed): an operator told that retried, or left it on."""


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
        typer.Option(
            "--src",
            help="source roots to scan (default: the registry's directory)",
            parser=nonempty_path,
        ),
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
        as_of = date.fromisoformat(today) if today is not None else _today()
    except ValueError:
        raise _fail(console, f"--today: expected YYYY-MM-DD, got {quoted(today)}") from None
    if json_out is not None:
        try:
            check_output("--json", json_out)
        except OptionError as exc:
            raise _fail(console, str(exc)) from None
    roots = src or [registry.parent]
    missing = [str(r) for r in roots if not r.exists()]
    if missing:
        raise _fail(console, f"--src: no such path: {', '.join(missing)}")
    if accessor is not None and any(not name.strip() for name in accessor):
        # `--accessor "$NAME"` with NAME unset would replace the default accessors with
        # one that matches no call: references through them would go unreported
        raise _fail(console, "--accessor: empty name; leave the option out for the defaults")
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
        try:
            json_out.write_bytes(msgspec.json.format(msgspec.json.encode(report)))
        except OSError as exc:
            raise _fail(
                console, f"--json {json_out}: cannot write: {exc.strerror or exc}"
            ) from None
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
    table = Table(title=escape(str(registry)))
    for column in ("id", "lifecycle", "owner", "expires", "trading", "safe default", "hash"):
        table.add_column(column)
    for flag in reg.flags():  # the registry file's text: shown as written, not as markup
        table.add_row(
            escape(flag.id),
            str(flag.lifecycle),
            escape(flag.owner or "-"),
            flag.expires.isoformat() if flag.expires else "-",
            "yes" if flag.trading_behaviour else "no",
            "on" if flag.safe_default else "off",
            flag.meaning_hash[:12],
        )
    console.print(table)


ApprovalOpt = typer.Option(
    None,
    "--approval",
    help="a second person's signed approval of this change (`knightwatch flags approve`)",
)


def _plan(console: Console, plan: Path | None) -> RolloutPlan:
    """The rollout plan file (the default plan without one)."""
    try:
        typed = (
            msgspec.convert(load_toml(plan, "rollout plan"), RolloutPlan) if plan else RolloutPlan()
        )
        typed.check_gated()
        return typed
    except InputFileError as exc:
        raise _fail(console, str(exc)) from None
    except (msgspec.ValidationError, ValueError) as exc:
        raise _fail(console, f"rollout plan {plan}: {exc}") from None


PlanOpt = typer.Option(
    None,
    "--plan",
    help="rollout plan TOML (stages, gates; default: the built-in plan); an approval names it",
)


def _read_approval(console: Console, path: Path | None) -> Envelope | None:
    """The approval file (bounded read), checked against the roster once logged in."""
    if path is None:
        return None
    try:
        data = read_bytes(path, "approval", JSON_MAX_BYTES)
        check_json_depth(data, f"approval {path}")
        return decode_approval_file(data, f"approval {path}")
    except (InputFileError, TrustError) as exc:
        raise _fail(console, str(exc)) from None


def _nodes_key(nodes: tuple[str, ...]) -> tuple[str, ...] | None:
    return tuple(sorted(nodes)) if nodes else None


def _plane_run(console: Console, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one control-plane command; expected failures exit 2 with the message, a change
    that went out and lost the plane before its end was seen exits 3 saying how far it got."""
    try:
        return asyncio.run(make())
    except ChangeInDoubt as exc:
        console.print(
            f"[red]in doubt:[/red] {escape(shown(str(exc)))}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(IN_DOUBT_EXIT) from None
    except (
        ControlPlaneUnavailable,
        FleetError,
        RolloutError,
        StateUnavailable,
        TrustError,
        ValueError,
    ) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command("show")
def show(
    flag_id: str,
    registry: Path = REGISTRY_OPT,
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """One flag: definition, hash, history, per-node values, applied revisions, changes."""
    console = Console()
    reg = _load_registry(console, registry)
    flag = reg.get(flag_id)
    if flag is None:
        raise _fail(console, f"{flag_id}: not in {registry}")
    # the registry's and the store's text below is shown as written: a description, an
    # actor or a change's reason "[/x]" is not console markup (it ended `show` with a
    # traceback, and "[link=...]" was rendered as a link)
    console.print(f"[bold]{escape(flag.id)}[/bold] ({flag.lifecycle})", highlight=False)
    console.print(f"  {escape(flag.description)}", highlight=False)
    console.print(
        escape(f"  owner {flag.owner or '-'}, created {flag.created}, expires {flag.expires}"),
        highlight=False,
    )
    console.print(
        f"  safe default {'on' if flag.safe_default else 'off'}, "
        f"trading behaviour {'yes' if flag.trading_behaviour else 'no'}"
    )
    console.print(f"  definition hash {flag.meaning_hash}", highlight=False)
    for entry in flag.history:
        console.print(
            escape(f"  {entry.at} {entry.actor}: {entry.action} {entry.note}"), highlight=False
        )

    async def go() -> dict[str, tuple[bytes, int]]:
        async with session(nats_url, state_dir, "flags-show", key, anchor) as (
            plane,
            _signer,
            _store,
        ):
            return await plane.records(Bucket.FLAGS)

    records = _plane_run(console, go)
    try:
        current = assemble(flag.id, records)
        changes = changes_of(flag.id, records)
    except StateUnavailable as exc:  # a stored record that does not decode: named, exit 2
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if current is None:
        console.print("  no state: every node evaluates the safe default")
        return
    # the store's records (node names, actors, reasons, origins) are written by others'
    # credentials: their control characters are shown as escapes, never sent to the terminal
    # ("\x1b[2K\x1b[1A" in a change's reason erased the line above it)
    console.print(
        escape(shown(f"  revision {current.revision}: {current.node_values}")), highlight=False
    )
    console.print(
        escape(shown(f"  applied (node: revision): {current.applied or '-'}")), highlight=False
    )
    for change in changes:
        console.print(
            escape(
                shown(
                    f"  r{change.revision} {'on' if change.value else 'off'} "
                    f"{','.join(change.nodes)} by {change.actor} approver "
                    f"{change.approver or '-'} from {change.origin}: {change.reason}"
                )
            ),
            highlight=False,
        )


def _policy(console: Console, policy: Path | None) -> ActivationPolicy:
    try:
        return ActivationPolicy.load(policy) if policy else ActivationPolicy()
    except ValueError as exc:
        raise _fail(console, str(exc)) from None


def _reason(console: Console, value: str) -> str:
    """`--reason`: recorded with the change; `--reason "$WHY"` with WHY unset is not one."""
    if not value.strip():
        raise _fail(console, "--reason: empty; say why, for the record")
    return value


def _on_off(console: Console, value: str) -> bool:
    if value.lower() not in ("on", "off"):
        raise _fail(console, f"VALUE must be 'on' or 'off', got {quoted(value)}")
    return value.lower() == "on"


@app.command("approve")
def approve_change(
    flag_id: str,
    value: str = typer.Argument(..., help="on or off"),
    requester: str = typer.Option(..., "--for", help="who will make the change (roster name)"),
    nodes: str = typer.Option(None, "--nodes", help="comma-separated nodes (default: fleet)"),
    rollout: bool = typer.Option(False, "--rollout", help="approve `rollout start` instead"),
    plan: Path | None = PlanOpt,
    reason: str = typer.Option(..., "--reason", help="why you approve, for the record"),
    out: Path = typer.Option(..., "--out", help="the signed approval file to hand over"),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Sign your approval (you: a second person with the approver role) of one flag change
    or rollout by --for; they pass the file with --approval. Valid for an hour. A rollout
    approval names the plan (--plan, the same file they start it with): every promotion
    runs that plan and no other."""
    console = Console()
    try:
        chosen = node_list("--nodes", nodes)
    except OptionError as exc:
        raise _fail(console, str(exc)) from None
    target = _on_off(console, value)
    reason = _reason(console, reason)
    if plan is not None and not rollout:
        raise _fail(console, "--plan: only with --rollout (a rollout approval names its plan)")
    if chosen and rollout:  # it would approve the rollout on every admitted node, not these
        raise _fail(
            console,
            "--nodes: not with --rollout (a rollout runs on every admitted node; its plan's "
            "stages size it)",
        )
    digest = plan_digest(_plan(console, plan)) if rollout else ""
    if not out.parent.is_dir():  # said before connecting, not as a traceback after signing
        raise _fail(console, f"--out {out}: {out.parent} is not a directory")

    async def go() -> str:
        async with session(nats_url, state_dir, "flags-approve", key, anchor) as (_, signer, store):
            roster = store.roster
            if roster is None or not roster.has_role(signer.name, Role.APPROVER):
                raise TrustError(f"--key: {signer.name} does not hold the approver role")
            if requester == signer.name:
                raise TrustError("--for: you cannot approve your own change")
            now = SystemClock().time_ns()
            approval = Approval(
                ApprovalKind.ROLLOUT if rollout else ApprovalKind.FLAG,
                flag_id,
                target,
                None if rollout else _nodes_key(chosen),
                requester,
                reason,
                now,
                now + int(APPROVAL_TTL_S * NS_PER_S),
                digest=digest,
                fleet=roster.fleet,  # it counts only in this fleet (`Roster.fleet`)
            )
            write_approval(out, encode_envelope(sign_approval(approval, signer)))
            return signer.name

    who = _plane_run(console, go)
    console.print(
        escape(
            f"approved by {who}: {flag_id} -> {value} for {requester}; written to {out} "
            f"(valid {APPROVAL_TTL_S / 60:.0f} min); they pass --approval {out}"
        ),
        highlight=False,
    )


@app.command("set")
def set_flag(
    flag_id: str,
    value: str = typer.Argument(..., help="on or off"),
    nodes: str = typer.Option(None, "--nodes", help="comma-separated nodes (default: fleet)"),
    reason: str = typer.Option(..., "--reason", help="why, for the record"),
    approval: Path | None = ApprovalOpt,
    timeout: str = typer.Option(  # text: `wait_seconds` judges it, never refusing the change
        "2", "--timeout", help=f"seconds to wait for nodes ({TIMEOUT_LEAST:g} to {TIMEOUT_MAX:g})"
    ),
    registry: Path = REGISTRY_OPT,
    policy: Path = POLICY_OPT,
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Refused unless every targeted node is admitted on a release that knows this flag.

    Judged against the live fleet (membership + admission verdicts); returns
    when every targeted node confirmed the new revision (exit 1 if not). Exit 3: the
    change went out but the control plane was lost before its end was seen; the line
    says whether it is stored (in force on the nodes that apply it) or may be: check
    `knightwatch flags show` before anything else. Exit 2: nothing was changed.
    """
    console = Console()
    try:
        chosen = node_list("--nodes", nodes)
    except OptionError as exc:
        raise _fail(console, str(exc)) from None
    target = _on_off(console, value)
    reason = _reason(console, reason)
    reg = _load_registry(console, registry)
    pol = _policy(console, policy)
    approved = _read_approval(console, approval)
    # a switch back to the safe default is never refused (nor held for good) for its wait:
    # `--timeout 0` was refused at parsing, and `inf` waited for a dead node forever
    wait_s, why = wait_seconds("--timeout", timeout, 2.0, TIMEOUT_MAX)
    if why:
        console.print(f"[yellow]{escape(why)}[/yellow]", highlight=False, soft_wrap=True)

    async def go() -> tuple[ActivationResult, dict[str, float], list[str]]:
        clock = SystemClock()
        async with session(nats_url, state_dir, "flags-set", key, anchor) as (
            plane,
            signer,
            trust,
        ):
            approver = None
            now = clock.time_ns()
            if approved is not None:
                approver = check_approval(
                    approved,
                    trust.roster,
                    kind=ApprovalKind.FLAG,
                    flag_id=flag_id,
                    value=target,
                    nodes=_nodes_key(chosen),
                    requester=signer.name,
                    now_ns=now,
                )
            request = ActivationRequest(
                flag_id=flag_id,
                value=target,
                actor=signer.name,
                reason=reason,
                origin=_origin(),
                nodes=chosen,
                approver=approver,
                approval=encode_envelope(approved).decode() if approved is not None else "",
                approval_nodes=_nodes_key(chosen),
            )
            return await activate(plane, trust, reg, pol, request, clock, wait_s, signer=signer)

    result, latencies, missing = _plane_run(console, go)
    if not result.accepted:
        raise _fail(console, f"refused [{result.code}] {result.detail}")
    revision = result.state.revision if result.state else 0
    shown = escape(f"{result.detail}, revision {revision}")
    console.print(f"[green]applied[/green] {shown}", highlight=False)
    for node, ms in sorted(latencies.items()):
        console.print(escape(f"  {node}: confirmed r{revision} in {ms:.1f} ms"), highlight=False)
    if missing:
        console.print(f"[red]not confirmed:[/red] {escape(', '.join(missing))}", highlight=False)
        raise typer.Exit(1)


def _report(console: Console, state: RolloutState) -> None:
    colour = {"progressing": "cyan", "completed": "green", "aborted": "red"}[state.status]
    stages = state.plan.stages
    name = stages[state.stage_index].name if 0 <= state.stage_index < len(stages) else "?"
    console.print(  # the record's text is not markup (the bucket is operator-writable)
        f"[{colour}]{escape(shown(state.rollout_id))}: {state.status}[/{colour}] stage "
        f"{escape(shown(name))}, {len(state.exposed)}/{len(state.nodes)} node(s) on"
        + (f", abort reason: {escape(shown(state.abort_reason))}" if state.abort_reason else ""),
        highlight=False,
    )
    for event in failed_actions(state):  # "aborted" alone read as if the nodes were off
        console.print(f"[red]not done:[/red] {escape(shown(event.detail))}", highlight=False)


def _health(console: Console, path: Path | None) -> SupervisorConfig:
    """The fleet supervisor's thresholds (the file `knightwatch supervisor --config` reads),
    so a rollout gate judges health exactly as an automatic halt would."""
    try:
        return SupervisorConfig.from_toml(path) if path is not None else SupervisorConfig()
    except ValueError as exc:
        raise _fail(console, str(exc)) from None


CONFIRM_DEFAULT_S = 5.0
"""How long `rollout start` waits, before each promotion, for the exposed nodes'
confirmations of their stage (`RolloutDriver.confirm_s`); `--confirm-timeout` sets it, from
0 to `TIMEOUT_MAX`. Before, 5 s was fixed: on a fleet slower to confirm, every promotion held."""


def _driver(
    plane: ControlPlane,
    signer: Signer,
    store: TrustStore,
    reg: FlagRegistry,
    pol: ActivationPolicy,
    health: SupervisorConfig | None = None,
    confirm_s: float = CONFIRM_DEFAULT_S,
) -> RolloutDriver:
    clock = SystemClock()
    return RolloutDriver(
        plane,
        reg,
        clock,
        KillSwitch(plane, clock, signer, store),
        policy=pol,
        health=health,
        confirm_s=confirm_s,
    )


@rollout_app.command("start")
def rollout_start(
    flag_id: str,
    plan: Path | None = PlanOpt,
    approval: Path | None = ApprovalOpt,
    registry: Path = REGISTRY_OPT,
    policy: Path = POLICY_OPT,
    supervisor_config: Annotated[
        Path | None,
        typer.Option(
            "--supervisor-config",
            help="TOML file with a \\[supervisor] table: the one `knightwatch supervisor "
            "--config` runs with, so gates and halts agree (default: its defaults)",
        ),
    ] = None,
    confirm_timeout: float = typer.Option(
        CONFIRM_DEFAULT_S,
        "--confirm-timeout",
        min=0.0,
        max=TIMEOUT_MAX,
        help="seconds to wait, before each promotion, for the nodes a stage exposed to "
        f"confirm it (0 to {TIMEOUT_MAX:g}); unconfirmed then, the rollout holds",
    ),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Roll the flag off its safe default stage by stage on live metrics, until done or aborted.

    Exit 1: aborted. Exit 3: the control plane was lost once the rollout was begun; the
    line says whether it is stored (its stage in force, nothing watching its gates) or may
    be: check `knightwatch rollout status`, abort it if unsure. Exit 2: nothing started."""
    console = Console()
    chosen = _plan(console, plan)
    reg = _load_registry(console, registry)
    pol = _policy(console, policy)
    health = _health(console, supervisor_config)
    approved = _read_approval(console, approval)

    async def go() -> RolloutState:
        async with session(nats_url, state_dir, "rollout", key, anchor) as (plane, signer, store):
            driver = _driver(plane, signer, store, reg, pol, health, confirm_timeout)
            await driver.start()
            _, before = await plane.get_record(Bucket.ROLLOUTS, flag_id)
            try:
                state = await driver.begin(flag_id, chosen, actor=signer.name, approval=approved)
            except (ControlPlaneUnavailable, StateUnavailable) as exc:
                await _begin_lost(plane, flag_id, before, exc)
                raise
            total = sum(stage.hold_s for stage in chosen.stages)
            with Progress(
                TextColumn("{task.description}"), BarColumn(), console=console
            ) as progress:
                task = progress.add_task(f"{state.rollout_id}", total=len(chosen.stages))
                while state.status is RolloutStatus.PROGRESSING:
                    try:
                        # at least a tick: a plan holding 0 s in all (a test fleet's) gave
                        # a timeout of 0, and a held rollout was stepped again at once,
                        # forever (a core spent, the control plane asked without pause)
                        state = await driver.run(
                            flag_id, tick_s=1.0, timeout_s=min(max(total, 1.0), 5.0)
                        )
                    except (ControlPlaneUnavailable, StateUnavailable) as exc:
                        raise ChangeInDoubt(_run_lost(state, exc)) from None
                    stage = state.plan.stages[state.stage_index]
                    progress.update(
                        task,
                        completed=state.stage_index,
                        description=f"{state.rollout_id} stage {stage.name}",
                    )
            return state

    final = _plane_run(console, go)
    _report(console, final)
    if final.status is RolloutStatus.ABORTED:
        raise typer.Exit(1)


def _watch_lost(flag_id: str) -> str:
    return (
        f"nothing watches its gates now: check `knightwatch rollout status {flag_id}` and "
        f"`knightwatch flags show {flag_id}`; abort it (`knightwatch rollout abort {flag_id}`) "
        "if unsure"
    )


async def _begin_lost(plane: ControlPlane, flag_id: str, before: int, exc: Exception) -> None:
    """A plane lost inside `begin`: its record read once more (a blink may be over) to say
    whether it was stored. Raises `ChangeInDoubt` unless the record is as it was (nothing
    started: the caller's error stands, exit 2)."""
    try:
        _, now = await asyncio.wait_for(plane.get_record(Bucket.ROLLOUTS, flag_id), 5.0)
    except (ControlPlaneUnavailable, TimeoutError):
        raise ChangeInDoubt(
            f"rollout of {flag_id}: the control plane was lost while it started ({exc}): it "
            f"may be stored, its first stage in force on the nodes that apply it; "
            + _watch_lost(flag_id)
        ) from None
    if now == before:  # nothing stored: the caller's error stands
        return
    raise ChangeInDoubt(
        f"rollout of {flag_id}: stored (its record at store revision {now}) but the control "
        f"plane was lost while it started ({exc}): its first stage may be in force; "
        + _watch_lost(flag_id)
    ) from None


def _run_lost(state: RolloutState, exc: Exception) -> str:
    """A plane lost while the rollout ran: it is stored, its exposed nodes on."""
    stages = state.plan.stages
    name = stages[state.stage_index].name if 0 <= state.stage_index < len(stages) else "?"
    on = ", ".join(sorted(state.exposed)) or "none"
    return (
        f"rollout {state.rollout_id} of {state.flag_id}: stored, stage {name} in force (on at "
        f"last sight: {on}); the control plane was lost ({exc}); " + _watch_lost(state.flag_id)
    )


@rollout_app.command("abort")
def rollout_abort(
    flag_id: str,
    reason: str = typer.Option(..., "--reason", help="why, for the record"),
    timeout: str = typer.Option(  # text: `wait_seconds` judges it, never refusing the abort
        "2",
        "--timeout",
        help="seconds to wait for the exposed nodes to confirm the switch-off "
        f"({TIMEOUT_LEAST:g} to {TIMEOUT_MAX:g})",
    ),
    registry: Path = REGISTRY_OPT,
    policy: Path = POLICY_OPT,
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Flag back to its safe default wherever this rollout turned it on; halt those nodes.

    Exit 1 when the stop did not fully land: a switch-off or halt not done, or an exposed
    node that did not confirm the switch-off within --timeout (named: it may still be on)."""
    console = Console()
    reason = _reason(console, reason)
    reg = _load_registry(console, registry)
    pol = _policy(console, policy)
    # the wait only reports: a bad value is the default, never a refused abort
    wait_s, why = wait_seconds("--timeout", timeout, 2.0, TIMEOUT_MAX)
    if why:
        console.print(f"[yellow]{escape(why)}[/yellow]", highlight=False, soft_wrap=True)

    async def go() -> tuple[RolloutState, str]:
        async with session(nats_url, state_dir, "rollout-abort", key, anchor) as (
            plane,
            signer,
            store,
        ):
            driver = _driver(plane, signer, store, reg, pol)
            await driver.start()
            final = await driver.abort(flag_id, reason)
            try:  # the abort is done: a plane lost now is no reason to hide its report
                off = await driver.switched_off(final, wait_s)
                return final, off.text("those nodes may still be on the new path")
            except ControlPlaneUnavailable as exc:
                return final, (
                    f"the switch-off's confirmations could not be read ({exc}); check "
                    f"`knightwatch flags show {flag_id}`"
                )

    final, unconfirmed = _plane_run(console, go)
    _report(console, final)
    if unconfirmed:
        console.print(f"[red]not confirmed:[/red] {escape(shown(unconfirmed))}", highlight=False)
    if failed_actions(final) or unconfirmed:  # the stop did not fully land: not a success
        raise typer.Exit(1)


@rollout_app.command("status")
def rollout_status(
    flag_id: str = typer.Argument(None, help="one flag (default: all rollouts)"),
    as_json: bool = typer.Option(False, "--json", help="print the rollout state as JSON"),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Where each rollout stands, with its event log.

    With --json, stdout holds the JSON alone (a list, empty when there is no rollout to
    show) and every error goes to stderr: an error line printed to stdout ("error: control
    plane unreachable ...") was what a script's JSON parser got instead.

    A progressing rollout's exposed nodes that have not confirmed the flag state their
    stage is in are named (`not confirmed:`; in JSON `unconfirmed`, node: why) between the
    driver's steps too: before, a node that refused its stage sat at the safe default
    while the rollout showed healthy until a promotion was judged over it."""
    console = Console(stderr=as_json)

    async def go() -> tuple[
        dict[str, tuple[bytes, int]], dict[str, tuple[bytes, int]], list[NodeStatus]
    ]:
        async with session(nats_url, state_dir, "rollout-status", key, anchor) as (
            plane,
            _signer,
            _store,
        ):
            rollouts = await plane.records(Bucket.ROLLOUTS)
            return rollouts, await plane.records(Bucket.FLAGS), await plane.members()

    records, flag_records, members = _plane_run(console, go)
    chosen: list[RolloutState] = []
    unreadable: list[str] = []
    for k, (v, _) in sorted(records.items()):
        if flag_id is not None and k != flag_id:
            continue
        try:  # the bucket is operator-writable: a record may be anything
            chosen.append(msgspec.json.decode(v, type=RolloutState))
        except UNDECODABLE as exc:
            unreadable.append(f"rollout {quoted(k)}: undecodable record ({exc})")
    errors = Console(stderr=True)
    for line in unreadable:
        errors.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    unconfirmed = [  # a progressing rollout's; an abort names its own (`rollout abort`)
        confirmations(s, flag_records, members)
        if s.status is RolloutStatus.PROGRESSING
        else Confirmations(0, {})
        for s in chosen
    ]
    if as_json:
        shown_json = [
            {**msgspec.to_builtins(s), "unconfirmed": c.missing}
            for s, c in zip(chosen, unconfirmed, strict=True)
        ]
        print(json.dumps(shown_json, indent=2))
    if not chosen and not unreadable:
        raise _fail(console, f"no rollout{' for ' + flag_id if flag_id else ''}")
    if as_json:
        if unreadable:
            raise typer.Exit(1)
        return
    for state_, confirmed in zip(chosen, unconfirmed, strict=True):
        _report(console, state_)
        if missing := confirmed.text():
            console.print(f"[red]not confirmed:[/red] {escape(shown(missing))}", highlight=False)
        for event in state_.events:
            try:
                when = datetime.fromtimestamp(event.at_ns / NS_PER_S, UTC)
                at = when.isoformat(timespec="seconds")
            except (OverflowError, ValueError, OSError):  # not a time this record could hold
                at = f"at_ns={event.at_ns}"
            console.print(
                f"  {at} {escape(shown(event.kind))}: {escape(shown(event.detail))}",
                highlight=False,
            )
    if unreadable:
        raise typer.Exit(1)
