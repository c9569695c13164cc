"""Fleet commands: `knightwatch node`, `kill`, `resume`, `status`, `supervisor`, `up`, `drill`.

Every command talks to the control plane given by `--nats-url` (comma-separated
for a cluster), or else to the server `knightwatch up` recorded in the state
directory. Bad input exits non-zero with a message naming the option and the
rule, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import signal
import typing
import urllib.parse
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from knightwatch.cli import logs, memory
from knightwatch.cli.options import (
    KILL_TIMEOUT_DEFAULT,
    REASON_MAX,
    TIMEOUT_LEAST,
    TIMEOUT_MAX,
    OptionError,
    check_writable,
    nonempty_path,
    reason_value,
    scope_of,
    shown,
    wait_seconds,
    when,
)
from knightwatch.cli.release import MeasureEnvironmentOpt
from knightwatch.clock import SystemClock
from knightwatch.control.exposition import serve_supervisor_metrics
from knightwatch.control.fleet.admission import AdmissionService, request_target
from knightwatch.control.fleet.approvals import (
    PIN,
    Request,
    RequestMoved,
    Requests,
    RequestStatus,
)
from knightwatch.control.fleet.killswitch import (
    RUNBOOK_FALLBACK,
    CommandResult,
    KillSwitch,
    reached_no_one,
)
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import Supervisor, SupervisorConfig
from knightwatch.control.fleet.supervisor_service import SupervisorService
from knightwatch.control.node.attestor import Attestor, checked_measure
from knightwatch.control.node.lease import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_LEASE_TIMEOUT_S,
    LeaseError,
    LeasePolicy,
)
from knightwatch.control.node.runtime import MAX_ATTEST_S, MAX_METRICS_S
from knightwatch.control.node.trustfeed import identify
from knightwatch.control.plane.connect import URL_FILE, FleetError, control_plane
from knightwatch.control.plane.history import ResumeProofs
from knightwatch.control.plane.nats import LoginRefused, NatsControlPlane
from knightwatch.control.plane.protocol import Bucket, ControlPlaneUnavailable
from knightwatch.control.plane.wire import VERDICT_DECODER, StateEntry, TargetReply, Verdict
from knightwatch.control.serve import Trader, serve_node, wait_for_signal
from knightwatch.errors import KnightwatchError, quoted
from knightwatch.incident.ramp import RampOutcome, ramp_records
from knightwatch.incident.snapshot import SnapshotError
from knightwatch.inputs import (
    JSON_MAX_BYTES,
    NAME_RULE,
    UNDECODABLE,
    check_json_depth,
    is_name,
    read_bytes,
)
from knightwatch.release.dsse import Envelope, decode_envelope, encode_envelope
from knightwatch.release.flagfiles import load_flag_schema, load_registry_schema
from knightwatch.release.signing import load_trust_policy
from knightwatch.sim.drill.drill import DrillReport, fleet_claim, run_drill, run_up
from knightwatch.sim.drill.flow import MAX_FLOW_PER_S, synthetic_flow
from knightwatch.state import Scope, TradingState
from knightwatch.trust.approval import APPROVAL_TTL_S, decode_approval_file
from knightwatch.trust.command import Refused
from knightwatch.trust.identity import Signer, default_key_path, load_signer
from knightwatch.trust.policy import Action, decide
from knightwatch.trust.roster import TrustError
from knightwatch.trust.store import TrustStore, load_anchor
from knightwatch.trust.target import approve_target, release_ref

console = Console()
T = TypeVar("T")

_EXPECTED = (KnightwatchError, ValueError, OSError)
"""Every error knightwatch raises, bad values, and the OS saying no (a file, a port):
one line and exit 2, never a traceback."""


def _given_nats_url(ctx: typer.Context, param: typer.CallbackParam, value: str) -> str:
    """`--nats-url "$URL"` with URL unset arrives as "" (and "$A,$B" as ","): read as "not
    given", the command went to whatever server the state directory recorded (a local
    `up` fleet's, where a kill "confirmed" and production traded on). Given with no URL in
    it, the option is refused naming it (exit 2); left out, the recorded server is used."""
    source = ctx.get_parameter_source(param.name or "")
    # by name: the enum is the click typer runs on (its own copy, in recent typer)
    given = source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")
    if given and not value.replace(",", " ").strip():
        raise typer.BadParameter(
            "no URL in it (an unset shell variable?); leave the option out to use the "
            "server recorded in STATE_DIR/nats.url"
        )
    return value


NatsUrl = typer.Option(
    "",
    "--nats-url",
    envvar="KNIGHTWATCH_NATS_URL",
    help="server URL(s), comma-separated",
    callback=_given_nats_url,
)
StateDir = typer.Option(
    Path(".knightwatch"),
    "--state-dir",
    envvar="KNIGHTWATCH_STATE_DIR",
    help="state directory",
    parser=nonempty_path,  # `--state-dir "$DIR"` with DIR unset: not the directory it ran in
)
Replicas = typer.Option(1, "--replicas", min=1, max=5, help="JetStream replicas (3 for a cluster)")
KeyOpt = typer.Option(
    None,
    "--key",
    envvar="KNIGHTWATCH_KEY",
    help="your private key: who acts is whoever signs (default ~/.knightwatch/identity.key)",
)
AnchorOpt = typer.Option(
    None,
    "--anchor",
    envvar="KNIGHTWATCH_ANCHOR",
    help="the roster's trust anchor TOML (default STATE_DIR/trust/anchor.toml)",
)
MetricsPort = typer.Option(
    None,
    "--metrics-port",
    min=0,
    max=65535,
    help="serve Prometheus metrics on 127.0.0.1:PORT (0 = any free port, printed; default off)",
)


def _webhook(value: str | None) -> str | None:
    """`--webhook`, checked before any key is read, anything connects or a fleet starts: a
    URL no page can be posted to was refused only after connecting (`up` after claiming
    its state directory), as "webhook_url: ...", naming no option."""
    if value is not None:
        try:
            Pager(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc).removeprefix("webhook_url: ")) from None
    return value


def webhook_option(help: str) -> Any:
    """A `--webhook` option (`_webhook` checks it) whose help says what it pages."""
    return typer.Option(None, "--webhook", help=help, callback=_webhook)


def _url_problem(url: str) -> str | None:
    """Why `url` is no server URL a client can connect to, or None. Checked before anything
    connects: `nats://[::1` ended a kill with "error: Invalid IPv6 URL" naming neither the
    option nor that nothing was sent, and a port past 65535 or a URL without a host was
    tried as a server and reported "unreachable"."""
    if not url.startswith(("nats://", "tls://")):
        return "each URL must start with nats:// or tls://"
    if not url.isprintable() or any(c.isspace() for c in url):
        return "a URL holds no spaces or control characters"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        return f"not a URL ({exc})"
    if not parts.hostname:
        return "each URL names a host (nats://HOST:PORT)"
    if port == 0:
        return "the port must be 1-65535"
    return None


def _urls(text: str) -> list[str]:
    urls = [u.strip() for u in text.split(",") if u.strip()]
    for u in urls:
        problem = _url_problem(u)
        if problem is not None:
            raise FleetError(f"--nats-url: {problem} (got {quoted(u)})")
    return urls


def _targets(nats_url: str, state_dir: Path) -> list[str]:
    """`--nats-url`'s servers, else the ones `knightwatch up` recorded in the state directory,
    held to the same rule; [] if none is recorded (connecting then says so). A record that
    cannot be read names its file: it was "'utf-8' codec can't decode byte 0xff" or
    "[Errno 21] Is a directory" naming nothing, and "unreachable at garbage" for a word
    that is no URL."""
    urls = _urls(nats_url)
    if urls:
        return urls
    path = state_dir / URL_FILE
    fix = "pass --nats-url, or restart `knightwatch up`"
    try:
        text = path.read_bytes().decode()
    except (FileNotFoundError, NotADirectoryError):
        return []
    except UnicodeDecodeError:
        raise FleetError(f"{path}: not a server URL (not UTF-8 text); {fix}") from None
    except OSError as exc:
        raise FleetError(f"{path}: cannot read ({exc.strerror or exc}); {fix}") from None
    recorded = text.split()
    for u in recorded:
        problem = _url_problem(u)
        if problem is not None:
            raise FleetError(f"{path}: {problem} (got {quoted(u)}); {fix}")
    return recorded


async def _cancelled_on_sigterm(
    make: Callable[[], Coroutine[Any, Any, T]], stopped: list[bool]
) -> T:
    """`make()`, its task cancelled by the first SIGTERM as asyncio cancels it on Ctrl-C, so
    every `finally` of the command runs: the processes it started are stopped. Python's
    default SIGTERM ended the process at once, and a `drill`'s nats-server and its node
    processes, one of them trading on a runaway flow, ran on as orphans. A second SIGTERM
    while those stop is not let end the process half way."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def on_term() -> None:
        if not stopped and task is not None:
            stopped.append(True)
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_term)
    except (ValueError, RuntimeError):  # run off the main thread: no signal reaches it here
        return await make()
    try:
        return await make()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _run(
    make: Callable[[], Coroutine[Any, Any, T]],
    *,
    serves: bool = False,
    stops: bool = False,
    stopped_says: str = "",
) -> T:
    """Run one async command; expected failures become a red message and exit code 2.

    `serves`: a command that runs until stopped (a node, the gateway, the supervisor)
    and reads a socket per message: its socket reads come from the heap, and the code it
    has loaded is frozen out of the garbage collector's walk (`knightwatch.cli.memory`).

    `stops`: a kill or drain. A bad `KNIGHTWATCH_LOG` refuses every other command, but a
    stop is never gated on how it would be logged (`KNIGHTWATCH_LOG=debug` in an
    operator's shell refused the kill, exit 2, nothing sent): it is said, and the kill
    goes on logging at WARNING.

    `stopped_says`: what is left when the command is stopped midway, said then (a drill: the
    processes it started were stopped; an approve: the ramp's scope stays at its stage). A
    SIGTERM stops it as Ctrl-C does (`_cancelled_on_sigterm`: its `finally`s run), exit 143;
    Ctrl-C exit 130."""
    if serves:
        memory.serve_reads_from_heap()
        memory.freeze_startup_objects()
    try:
        logs.configure(os.environ.get("KNIGHTWATCH_LOG", "WARNING"))
    except ValueError as exc:
        if not stops:
            console.print(f"[red]error:[/red] KNIGHTWATCH_LOG: {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        console.print(
            f"[yellow]warning:[/yellow] KNIGHTWATCH_LOG: {escape(str(exc))}; "
            "the kill goes on, logging at WARNING",
            highlight=False,
            soft_wrap=True,
        )
        logs.configure("WARNING")
    stopped: list[bool] = []
    try:
        if not stopped_says:
            return asyncio.run(make())
        value = asyncio.run(_cancelled_on_sigterm(make, stopped))
    except asyncio.CancelledError:
        if not stopped:
            raise
        _stopped("SIGTERM", stopped_says, 143)
    except _EXPECTED as exc:  # a message quoting input ("[/x]") is shown, not read as markup
        if stopped:  # an error the stop itself caused is not the command's failure
            _stopped("SIGTERM", stopped_says, 143)
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        if stopped_says:
            _stopped("Ctrl-C", stopped_says, 130)
        raise typer.Exit(130) from None
    if stopped:  # whatever it returned on its way out: a report of a run cut short is none
        _stopped("SIGTERM", stopped_says, 143)
    return value


def _stopped(by: str, says: str, code: int) -> typing.NoReturn:
    """A command stopped midway (`_run(stopped_says=...)`): one line saying what is left."""
    console.print(f"[yellow]stopped by {by}:[/yellow] {escape(says)}", highlight=False)
    raise typer.Exit(code)


SPAWNED_STOPPED = "the processes it started were stopped"
"""What a stopped drill leaves: nothing running."""
RAMP_STOPPED = (
    "if its ramp had begun (a `ramp ... stage` line above), the scope stays at the stage it "
    "reached (never more) and nothing watches it for a trip: kill it, or resume again after "
    "a new kill"
)
"""What a stopped `approve` leaves (docs/runbook.md, the ramp): before, Ctrl-C or a SIGTERM
ended it with nothing said, and the operator took the scope for ramping under watch."""


def _key_path(key: Path | None) -> Path:
    return key if key is not None else default_key_path()


def _anchor(anchor: Path | None, state_dir: Path) -> TrustStore:
    return TrustStore(load_anchor(anchor or state_dir / "trust" / "anchor.toml"))


@contextlib.asynccontextmanager
async def session(
    nats_url: str, state_dir: Path, name: str, key: Path | None, anchor: Path | None
) -> AsyncIterator[tuple[NatsControlPlane, Signer, TrustStore]]:
    """A plane connected as the key's owner, the roster followed, the owner named by it."""
    urls = _targets(nats_url, state_dir)  # where to go is checked before whose key goes there
    unnamed = load_signer(_key_path(key), "unnamed")
    store = _anchor(anchor, state_dir)
    async with control_plane(urls, state_dir, name, signer=unnamed) as plane:
        yield plane, await identify(plane, unnamed, store), store


def _scope_or_exit(node: str | None, strategy: str | None, symbol: str | None) -> tuple[Scope, str]:
    """The scope the options name, checked before anything connects (exit 2 naming the option)."""
    try:
        return scope_of(node, strategy, symbol)
    except OptionError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def _reason_or_exit(reason: str) -> str:
    """`--reason`, checked before any key is read or anything connects (exit 2 naming it):
    an empty one was refused only after connecting, as "reason:", and one of megabytes
    was sent, its store write waited out for 15 s."""
    try:
        return reason_value("--reason", reason)
    except OptionError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _kill_reason(reason: str) -> str:
    """A kill's `--reason`, never a reason to hold the kill back: blank is refused (exit 2,
    as before: say why), but one over `REASON_MAX` characters or with control characters
    is sent cleaned (each control character as its escape, cut to the bound), and the
    operator is told what went out. Refusing those held the stop direction back on a
    pasted log line."""
    try:
        return reason_value("--reason", reason)
    except OptionError:
        if not reason.strip():
            return _reason_or_exit(reason)
    cleaned = shown(reason)
    if len(cleaned) > REASON_MAX:
        cleaned = cleaned[: REASON_MAX - 1] + "…"
    console.print(
        f"[yellow]--reason: sent cleaned (one line, at most {REASON_MAX} characters): "
        f"{escape(cleaned)}[/yellow]",
        highlight=False,
        soft_wrap=True,
    )
    return cleaned


def _kill_timeout(text: str) -> float:
    """A kill's `--timeout`, never a reason to hold the kill back (`options.wait_seconds`:
    one too long waits `TIMEOUT_MAX`, one that is no usable number the default); what is
    waited instead is said. Read as a typed float option, `0`, `-1`, `nan`, `5s` or an
    unset variable's `""` was refused at parsing (exit 2): the kill was not sent."""
    wait, why = wait_seconds("--timeout", text, KILL_TIMEOUT_DEFAULT, TIMEOUT_MAX)
    if why:
        console.print(f"[yellow]{escape(why)}[/yellow]", highlight=False, soft_wrap=True)
    return wait


def _text(value: object) -> str:
    """A record's text (a node's, a kill's signer's, the store's, a venue's) for the
    terminal: markup escaped and every character that is not printable written as an
    escape (`shown`), so an escape sequence or a carriage return in a stored reason or key
    cannot rewrite the operator's screen (erase a HALTED row, redraw a node as healthy)."""
    return escape(shown(value))


def _print_result(result: CommandResult, verb: str) -> None:
    """What a kill, drain or resume did. Every key, node id, order id and error is the
    store's or the venue's text: escaped, shown as written (a scope key "[/x]" ended a kill
    that was already sent with a traceback)."""
    e = result.entry
    title = f"{verb} {e.scope.value} {e.key!r}: {TradingState(e.state).name}"
    table = Table(title=_text(title))
    table.add_column("node")
    table.add_column("confirmed", justify="right")
    for node_id in result.targets:
        latency = result.latencies_ms.get(node_id)
        confirmed = f"{latency:.2f} ms" if latency is not None else "[red]NO[/red]"
        table.add_row(_text(node_id), confirmed)
    console.print(table)
    if result.members_error:
        # not "no members": the members never heard from were not awaited, and may trade on
        console.print(
            f"[red]the fleet's membership could not be read ({_text(result.members_error)}): "
            "nodes never heard from were not awaited; check `knightwatch status`[/red]",
            highlight=False,
        )
    elif result.reached_none:
        color = "red" if result.missed_its_node else "yellow"
        console.print(
            f"[{color}]{_text(reached_no_one(result, verb))}[/{color}]",
            highlight=False,
            soft_wrap=True,
        )
    for node_id in result.missing:
        expires = result.leases.get(node_id, 0)
        if result.not_member(node_id):
            why = "not a member of this fleet (no node of that id has joined)"
        elif not expires:
            why = "no membership record: never seen, so its lease is unknown"
        elif result.lease_expired(node_id):
            at = when(expires, millis=True)
            why = f"lease expired at {at} UTC: it stopped trading by itself then"
        else:
            at = when(expires, millis=True)
            why = f"lease still LIVE until {at} UTC: it may be trading until then"
        console.print(f"[red]not confirmed:[/red] {_text(f'{node_id}: {why}')}", highlight=False)
    for node_id, orders in result.still_working.items():
        listed = ", ".join(orders[:20])
        console.print(
            f"[red]still working at the venue[/red] via {_text(f'{node_id}: {listed}')}"
            + (f" (+{len(orders) - 20} more)" if len(orders) > 20 else ""),
            highlight=False,
        )
    if result.revision is None:
        console.print(f"[red]NOT DURABLE:[/red] {_text(str(result.durable_error))}")
    else:
        console.print(f"stored at revision {result.revision} (command {e.command_id})")


def node(
    node_id: str = typer.Option(..., "--id", help="node id: letters, digits, - and _"),
    limits: Path | None = typer.Option(None, "--limits", help="limits TOML file"),
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
    lease_timeout: float = typer.Option(DEFAULT_LEASE_TIMEOUT_S, "--lease-timeout", help="seconds"),
    heartbeat: float = typer.Option(DEFAULT_HEARTBEAT_S, "--heartbeat", help="seconds"),
    recorder: Path | None = typer.Option(
        None, "--recorder", help="flight recorder file (default: STATE_DIR/audit/ID.jsonl)"
    ),
    metrics_interval: float = typer.Option(
        0.5, "--metrics-interval", min=0.05, max=MAX_METRICS_S, help="seconds"
    ),
    replicas: int = Replicas,
    artifacts: Path | None = typer.Option(
        None, "--artifacts", help="release: installed files", parser=nonempty_path
    ),
    config: Path | None = typer.Option(None, "--config", help="release: config file"),
    flags: Path | None = typer.Option(
        None, "--flags", help="release: compiled-in flag table (or feature-flags.yaml)"
    ),
    key: Path = typer.Option(
        ..., "--key", help="this node's enrolled key (its identity, NATS login, attestations)"
    ),
    anchor: Path | None = AnchorOpt,
    attest_interval: float = typer.Option(
        5.0, "--attest-interval", min=0.2, max=MAX_ATTEST_S, help="seconds between re-attestations"
    ),
    metrics_port: int | None = MetricsPort,
    measure_environment: bool = MeasureEnvironmentOpt,
) -> None:
    """Run a node: Guard, lease, kill state, metrics; blocks when the control plane is gone.

    The node trades nothing itself: the order flow of the process that embeds it
    does (see `knightwatch.control.serve`).

    With --artifacts/--config/--flags the node is admitted by the admission
    service before it takes a lease or arms, and re-attests for drift; without
    them it is refused whenever the fleet has a target release.
    """
    _serve_node_command(trader=None, **locals())


def lease_policy_or_exit(lease_timeout: float, heartbeat: float) -> LeasePolicy:
    """`--lease-timeout` and `--heartbeat` as a lease policy, checked before any file is read
    or anything connects; one the policy refuses is one line naming the options (exit 2).
    It was "heartbeat_s: must be between 0.01 and 10", a field no command has, and a
    gateway said so only after reading its key and hashing its release tree."""
    try:
        return LeasePolicy(lease_timeout_s=lease_timeout, heartbeat_s=heartbeat)
    except LeaseError as exc:
        why = str(exc)
        for field, option in (
            ("lease_timeout_s", "--lease-timeout"),
            ("heartbeat_s", "--heartbeat"),
        ):
            why = why.replace(field, option)
        console.print(f"[red]error:[/red] {escape(why)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _serve_node_command(
    *,
    trader: Trader | None,
    node_id: str,
    limits: Path | None,
    nats_url: str,
    state_dir: Path,
    lease_timeout: float,
    heartbeat: float,
    recorder: Path | None,
    metrics_interval: float,
    replicas: int,
    artifacts: Path | None,
    config: Path | None,
    flags: Path | None,
    key: Path,
    anchor: Path | None,
    attest_interval: float,
    metrics_port: int | None,
    measure_environment: bool,
) -> None:
    """`node`'s body, with the order flow (`trader`) the process runs once armed."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", node_id):
        console.print(
            "[red]error:[/red] --id: must be 1-64 letters, digits, - or _ "
            f"(got {escape(quoted(node_id))})",
            highlight=False,
        )
        raise typer.Exit(2)

    release_inputs = (artifacts, config, flags)
    if any(x is not None for x in release_inputs) and None in release_inputs:
        console.print(
            "[red]error:[/red] --artifacts, --config, --flags: give all three "
            "(release admission) or none"
        )
        raise typer.Exit(2)
    if measure_environment and artifacts is None:
        console.print(
            "[red]error:[/red] --measure-environment: used only with release admission "
            "(--artifacts, --config, --flags)"
        )
        raise typer.Exit(2)

    policy = lease_policy_or_exit(lease_timeout, heartbeat)

    async def go() -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        signer = load_signer(key, node_id)
        trust_anchor = load_anchor(anchor or state_dir / "trust" / "anchor.toml")
        attestor = None
        if artifacts is not None and config is not None and flags is not None:
            table = load_flag_schema(flags)
            # unreadable inputs stop the node here, before it connects
            measure = checked_measure(artifacts, config, table, environment=measure_environment)
            attestor = Attestor(node_id, signer.key, measure, clock=SystemClock())
        await serve_node(
            node_id,
            _urls(nats_url),
            state_dir,
            signer=signer,
            anchor=trust_anchor,
            limits_path=limits,
            policy=policy,
            trader=trader,
            recorder_path=recorder,
            metrics_s=metrics_interval,
            replicas=replicas,
            attestor=attestor,
            attest_s=attest_interval,
            metrics_port=metrics_port,
        )

    _run(go, serves=True)


def _drill_node_command() -> Callable[..., None]:
    """`drill-node`: every option of `node`, plus `--flow`, the drill's synthetic order flow.

    Built from `node`'s own signature so the two can never drift apart, while the
    production `node` command itself carries no flow at all.
    """
    flow = inspect.Parameter(
        "flow",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(
            20.0, "--flow", min=0, max=MAX_FLOW_PER_S, help="drill order flow, orders/s"
        ),
        annotation=float,
    )
    base = inspect.signature(node)
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in base.parameters.values()]

    def drill_node(**options: Any) -> None:
        rate = options.pop("flow")
        _serve_node_command(trader=synthetic_flow(rate) if rate > 0 else None, **options)

    drill_node.__signature__ = base.replace(parameters=[*params, flow])  # type: ignore[attr-defined]
    drill_node.__annotations__ = {**typing.get_type_hints(node), "flow": float}
    drill_node.__doc__ = "A drill node: the production node service plus the drill's order flow."
    return drill_node


def kill(
    reason: str = typer.Option(..., "--reason", help="why; recorded with the command"),
    node_id: str | None = typer.Option(None, "--node", help="only this node"),
    strategy: str | None = typer.Option(None, "--strategy", help="only this strategy"),
    symbol: str | None = typer.Option(None, "--symbol", help="only this symbol"),
    drain: bool = typer.Option(
        False, "--drain", help="REDUCING instead of HALTED: only reducing orders"
    ),
    timeout: str = typer.Option(
        f"{KILL_TIMEOUT_DEFAULT:g}",
        "--timeout",
        # text, judged by `_kill_timeout`: a float option refused `0` or `nan` (kill not sent)
        help=f"seconds to wait for confirmations ({TIMEOUT_LEAST:g} to {TIMEOUT_MAX:g})",
    ),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Stop a scope fleet-wide; returns when every live targeted node confirmed (exit 1 if not).

    One person (an operator), never waiting on an approval. A control plane out of
    reach is one line naming it and the runbook's fallback, exit 2, within about a
    second: the kill was not sent."""
    scope, slot_key = _scope_or_exit(node_id, strategy, symbol)
    reason = _kill_reason(reason)
    wait_s = _kill_timeout(timeout)

    from knightwatch.cli.incident import auto_snapshot_settings, snapshot_after_kill

    evidence: list[Path] = []
    no_evidence: list[str] = []
    printed: list[bool] = []
    issued: list[bool] = []
    where: list[str] = []

    async def go() -> CommandResult:
        async with session(nats_url, state_dir, "kill", key, anchor) as (plane, signer, store):
            verdict = decide(store.roster, signer.name, Action.KILL)
            if not verdict.allowed:
                raise FleetError(f"--key: {verdict.why} (nodes and the server would refuse it)")
            ks = KillSwitch(plane, SystemClock(), signer, store)
            state = TradingState.REDUCING if drain else TradingState.HALTED
            issued.append(True)
            where.extend(plane.servers)
            result = await ks.kill(scope, slot_key, reason, timeout_s=wait_s, state=state)
            if not result.sent:
                return result  # nothing went out: no evidence of a kill to take
            # after the kill returned, never on its path: freeze point and evidence
            auto = auto_snapshot_settings()
            if auto is not None and result.revision is not None:
                _print_result(result, "drain" if drain else "kill")
                printed.append(True)
                try:
                    evidence.append(await snapshot_after_kill(plane, result, *auto))
                except SnapshotError as exc:  # says the kill was sent: exit 3, never 2
                    no_evidence.append(str(exc))
            return result

    async def sent_or_why() -> CommandResult | str:
        try:
            return await go()
        except ControlPlaneUnavailable as exc:
            if issued:
                raise  # after the kill (its evidence): the error names that step
            refused.append(isinstance(exc, LoginRefused))
            return str(exc)  # before it: connecting, or reading the roster

    refused: list[bool] = []
    outcome = _run(sent_or_why, stops=True)
    if isinstance(outcome, str):
        _not_sent(outcome, login_refused=any(refused))
    result = outcome
    if not result.sent:
        why = result.unreachable or result.durable_error
        _not_sent(f"control plane unreachable at {', '.join(where)}: {why}")
    if not printed:
        _print_result(result, "drain" if drain else "kill")
    if evidence:
        console.print(escape(f"evidence snapshot written to {evidence[0]}"), highlight=False)
    _warn_symbol_case(scope, slot_key)
    if not result.ok or result.missed_its_node:
        raise typer.Exit(1)  # stored, but the node it names is no member: never success
    if no_evidence:
        # sent and confirmed, its evidence not taken: neither 2 (not sent) nor 1 (not
        # confirmed), and never 0 (the snapshot the settings ask for is missing)
        console.print("[red]error:[/red] " + escape(no_evidence[0]), highlight=False,
                      soft_wrap=True)  # fmt: skip
        raise typer.Exit(3)


def _warn_symbol_case(scope: Scope, key: str) -> None:
    """After a symbol kill has been sent and confirmed (never before, never gating it): a
    symbol typed with lowercase letters. Nodes halt a symbol's kill in every case (`ibm`
    halts `IBM`: fail closed), but the kill is stored as typed and a resume lifts exactly
    the key it names, so the operator is told which key lifts it, one line."""
    if scope is Scope.SYMBOL:
        symbol = key
    elif scope is Scope.STRATEGY_SYMBOL:
        symbol = key.partition("/")[2]  # a strategy holds no '/': the rest is the symbol
    else:
        return
    if not any(c.islower() for c in symbol):
        return
    console.print(
        "[yellow]warning:[/yellow] "
        + escape(
            f"symbol {quoted(symbol)} has lowercase letters: nodes halt it in every case "
            f"({quoted(symbol.upper())} too); the kill is stored as typed, and only a resume "
            f"of {quoted(key)} exactly lifts it"
        ),
        highlight=False,
        soft_wrap=True,
    )


def _not_sent(why: str, *, login_refused: bool = False) -> typing.NoReturn:
    """A kill that never reached the control plane: one line (never wrapped), exit 2. `why`
    quotes the server's answer and the URLs given: shown as written. A login the server
    refused is no outage: waiting for it to answer helps nothing, another enrolled
    operator's key does (the runbook's other steps still hold)."""
    then = RUNBOOK_FALLBACK
    if login_refused:
        then = (
            "repeat the kill now with an enrolled operator's key (--key, or "
            "KNIGHTWATCH_KEY), or have another operator kill; if none can, follow "
            "docs/runbook.md section 1.1 (cancel working orders at the venue, stop node "
            "processes that may still trade)"
        )
    console.print(
        "[red]error:[/red] kill NOT sent: no node received it and nothing was stored; "
        f"{escape(why)}; {escape(then)}",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(2)


REVISION_MAX = 2**63 - 1
"""The largest `--revision` (the console's bound too): past it, no store's revision."""


def resume(
    reason: str = typer.Option(..., "--reason", help="why; recorded with the command"),
    node_id: str | None = typer.Option(None, "--node"),
    strategy: str | None = typer.Option(None, "--strategy"),
    symbol: str | None = typer.Option(None, "--symbol"),
    ack: list[str] = typer.Option(
        [], "--ack", help="acknowledge the cause of a halt the Guard raised (its reason code)"
    ),
    config: Path | None = typer.Option(
        None, "--config", help="TOML with \\[preflight] bounds (and the \\[ramp] approve uses)"
    ),
    webhook: str | None = webhook_option("URL to POST pages to"),
    revision: int | None = typer.Option(
        None,
        "--revision",
        min=1,
        max=REVISION_MAX,
        help="the halt's revision you reviewed (`status`, its rev column): refused if the "
        "scope was stored again since (a new kill on top)",
    ),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Request a resume of a halted scope: preflight first; a second person applies it
    with `approve ID`, which ramps it back in stages.

    Refused (exit 1) unless every preflight item passes, and with --revision unless the
    halt stored is still the one at that revision. The request is bound to the halt
    stored now: if that changes before it is approved, it is stale and cannot be
    applied. Requests expire."""
    from knightwatch.cli.incident import config_or_exit, resume_flow

    scope, slot_key = _scope_or_exit(node_id, strategy, symbol)
    _reason_or_exit(reason)
    config_or_exit(config)

    async def go() -> Request | str | None:
        async with session(nats_url, state_dir, "resume", key, anchor) as (plane, signer, store):
            ks = KillSwitch(plane, SystemClock(), signer, store)
            try:
                if revision is not None:  # moved already: refused before a preflight pages
                    _, now = await plane.get_state(scope, slot_key)
                    if now != revision:
                        raise RequestMoved(revision, now)
                # checked again where the request is made (`Requests.create(shown=)`): a kill
                # stored while the preflight runs refuses it too
                _, request = await resume_flow(
                    plane, ks, scope, slot_key, reason, acknowledged=ack, config=config,
                    webhook=webhook, shown=revision or 0,
                )  # fmt: skip
            except RequestMoved as exc:
                stored, _ = await plane.get_state(scope, slot_key)
                return _moved(scope, slot_key, exc, stored)
            return request

    request = _run(go)
    if isinstance(request, str):
        console.print(f"[red]resume refused:[/red] {escape(request)}", highlight=False,
                      soft_wrap=True)  # fmt: skip
        raise typer.Exit(1)
    if request is None:
        console.print("[red]resume refused:[/red] fix the failing checks above", highlight=False)
        raise typer.Exit(1)
    console.print(
        f"resume requested: [bold]{escape(request.id)}[/bold] (of the halt at revision "
        f"{request.entry.decided_on}); a second person with the approver role runs "
        f"`knightwatch approve {escape(request.id)}`",
        highlight=False,
    )


def _moved(scope: Scope, key: str, moved: RequestMoved, stored: StateEntry | None) -> str:
    """`resume --revision N` refused: the halt stored now is not the one at N. One line
    naming both revisions and what is stored now, so the operator looks at it first."""
    if moved.now == 0:
        now = "has no entry stored (never killed): there is no halt to resume"
    else:
        held = (
            f"{TradingState(stored.state).name} by {quoted(stored.actor)}: {quoted(stored.reason)}"
            if stored is not None
            else "nothing readable (held halted)"
        )
        now = (
            f"was stored again since (revision {moved.now} now: {held}); look at it again "
            "with `knightwatch status` before requesting its resume"
        )
    return f"--revision {moved.shown}: {scope.value} {quoted(key)} {now}; no request was made"


REQUEST_ID = re.compile(r"(?![.])[-_=.a-zA-Z0-9]{1,64}(?<![.])")
"""A request id as the approvals bucket can hold it (ids are 12 hex digits), the rule the
console holds too (`knightwatch.console.app.REQUEST_ID`): any other id was sent to the
bucket and its InvalidKeyError answered as "control plane did not answer"."""
DIGEST = re.compile(r"[0-9a-f]{32}")
"""The pin of ID@DIGEST: `approvals.digest`, 32 hex digits."""


def _request_id_or_exit(request_id: str) -> None:
    """A request id (optionally ID@DIGEST) no request can have: one line, exit 2."""
    ident, pinned_to, pin = request_id.partition(PIN)
    if not REQUEST_ID.fullmatch(ident):
        why = "letters, digits, '-', '_', '=' or '.' (1-64, not starting or ending with '.')"
    elif pinned_to and not DIGEST.fullmatch(pin):
        why = f"the digest after {PIN} is 32 hex digits"
    else:
        return
    console.print(
        f"[red]error:[/red] request id {escape(quoted(request_id))}: {why}, as `requests` lists it",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(2)


def approve(
    request_id: str = typer.Argument(
        ..., help="the request id `resume` printed, or ID@DIGEST to approve only that resume"
    ),
    timeout: float = typer.Option(
        2.0,
        "--timeout",
        min=0.01,
        max=TIMEOUT_MAX,
        help=f"seconds to wait for the nodes to confirm the resume (at most {TIMEOUT_MAX:g})",
    ),
    ack: list[str] = typer.Option(
        [], "--ack", help="acknowledge the cause of a halt the Guard raised (its reason code)"
    ),
    config: Path | None = typer.Option(
        None, "--config", help="TOML with \\[ramp] stages and \\[preflight] bounds"
    ),
    webhook: str | None = webhook_option("URL to POST a trip's page to"),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Approve a pending resume (you must not be its requester): preflight again, then the
    resume applied as a staged ramp that trips back. Exit 1 if refused or tripped, or if a
    node is not at full limits once the ramp is done."""
    from knightwatch.cli.incident import approve_flow, config_or_exit, print_outcome

    _request_id_or_exit(request_id)
    config_or_exit(config)

    async def go() -> RampOutcome | None:
        async with session(nats_url, state_dir, "approve", key, anchor) as (plane, signer, store):
            ks = KillSwitch(plane, SystemClock(), signer, store)
            _, outcome = await approve_flow(
                plane, ks, request_id, timeout_s=timeout, acknowledged=ack, config=config,
                webhook=webhook,
            )  # fmt: skip
            return outcome

    outcome = _run(go, stopped_says=RAMP_STOPPED)
    if outcome is None:
        console.print("[red]resume refused:[/red] fix the failing checks above", highlight=False)
        raise typer.Exit(1)
    if outcome.resume is not None:
        _print_result(outcome.resume, "resume")
    print_outcome(outcome)
    if (
        not outcome.completed
        or outcome.held  # "done" stored, but a node is not at full limits
        or (outcome.resume is not None and not outcome.resume.ok)
    ):
        raise typer.Exit(1)


def requests(
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Resume requests: pending ones first, with who asked, for what and until when."""

    from knightwatch.incident.ramp import describe_ramp

    async def go() -> list[tuple[str, ...]]:
        async with session(nats_url, state_dir, "requests", key, anchor) as (plane, signer, store):
            found = await Requests(KillSwitch(plane, SystemClock(), signer, store)).list()
        return [  # the store's text, escaped: a reason "[/x]" is shown, not read as markup
            tuple(
                _text(cell)
                for cell in (
                    r.id,
                    str(r.status),
                    f"{r.entry.scope.value} {r.entry.key}",
                    r.requester + (f" + {', '.join(r.approvers)}" if r.approvers else ""),
                    r.entry.reason,
                    when(r.entry.expires_ns, millis=True)
                    if r.status is RequestStatus.PENDING
                    else r.detail,
                    r.preflight or "-",
                    describe_ramp(r.entry.ramp),
                )
            )
            for r in found
        ]

    rows = _run(go)
    table = Table(title="resume requests")
    table.add_column("id", no_wrap=True)
    for col in ("status", "scope", "by", "reason", "expires (UTC) / detail", "preflight", "ramp"):
        table.add_column(col)
    for row in sorted(rows, key=lambda r: r[1] != "pending"):
        table.add_row(*row)
    console.print(table)


def status(
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
    node_id: str | None = typer.Option(None, "--node", help="entries of this node only"),
    strategy: str | None = typer.Option(None, "--strategy", help="entries of this strategy"),
    symbol: str | None = typer.Option(None, "--symbol", help="entries of this symbol"),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
) -> None:
    """The fleet: nodes, leases, trading states, last confirmation; and every kill/halt entry.

    A scope option (as for kill/resume) shows only the kill switch entry of that scope.
    An entry's rev is what `resume --revision` takes to pin the halt you reviewed.
    """
    wanted = None
    if node_id is not None or strategy is not None or symbol is not None:
        wanted = _scope_or_exit(node_id, strategy, symbol)

    async def go() -> None:
        async with session(nats_url, state_dir, "status", key, anchor) as (plane, _, store):
            members = await plane.members()
            states = await plane.states()
            now = SystemClock().time_ns()
            proofs = ResumeProofs(plane)
            judged: dict[str, str | Refused] = {}  # who signed it, or why nodes hold it halted
            for slot, (e, rev) in states.items():
                if e is not None:
                    try:
                        judged[slot] = (await proofs.judge(e, rev, store.roster, now)).describe()
                    except Refused as exc:
                        judged[slot] = exc
            verdicts: dict[str, Verdict | str] = {}  # a verdict, or why it cannot be read
            for n, (raw, _) in (await plane.records(Bucket.ADMISSION)).items():
                try:
                    verdicts[n] = VERDICT_DECODER.decode(raw)
                except UNDECODABLE as exc:  # the bucket is writable: shown, not a traceback
                    verdicts[n] = f"record cannot be decoded: {exc}"
            ramps = await ramp_records(plane)
        nodes = Table(title="nodes")
        for col in (
            "node",
            "host:pid",
            "lease",
            "admitted",
            "armed",
            "state",
            "last confirmation",
            "refused commands",
        ):
            nodes.add_column(col)
        # every string below is a record's (a node's, the admission service's, a kill's
        # signer's): escaped, so a reason or key "[/x]" is shown, not read as markup
        for m in members:
            left_ns = m.lease_expires_ns - now  # an int of any size a record holds: no float
            live = f"{(left_ns + 500_000) // 1_000_000} ms" if left_ns > 0 else "[red]EXPIRED[/red]"
            lease = "left" if m.left else live
            nodes.add_row(
                _text(m.node_id),
                _text(f"{m.host}:{m.pid}"),
                lease,
                "yes" if m.admitted else "[red]no[/red]",
                "yes" if m.armed else "no",
                TradingState(m.node_state).name,
                _text(f"{m.last_command_id[:8]} {when(m.last_confirmed_ns, millis=True)}")
                if m.last_command_id
                else "-",
                (f"[red]{m.refused}[/red] ({_text(m.last_refusal)})" if m.refused else "0")
                + (f" [red]DUPLICATE id at {_text(m.duplicate)}[/red]" if m.duplicate else ""),
            )
        console.print(nodes)
        releases = Table(title="release admission")
        for col in ("node", "verdict", "release", "judged (UTC)", "findings"):
            releases.add_column(col)
        for node_id, v in sorted(verdicts.items()):
            if isinstance(v, str):
                releases.add_row(_text(node_id), "[red]UNDECODABLE[/red]", "-", "-", _text(v))
                continue
            releases.add_row(
                _text(node_id),
                _text(v.status) if v.admitted else f"[red]{_text(v.status)}[/red]",
                _text(v.release_id),
                when(v.at_ns, millis=True),
                "-" if v.admitted else _text(v.detail),
            )
        console.print(releases)
        table = Table(title="kill switch entries")
        for col in ("scope", "key", "state", "actor", "reason", "issued (UTC)", "rev"):
            table.add_column(col)
        for slot, (e, rev) in sorted(states.items(), key=lambda x: x[1][1]):
            if e is None:
                table.add_row(
                    _text(slot), "", "[red]UNVERIFIED[/red]", "-", "no entry", "-", str(rev)
                )
                continue
            if wanted is not None and (e.scope, e.key) != wanted:
                continue
            checked = judged[slot]
            if isinstance(checked, Refused):
                actor = f"[red]{_text(f'{e.actor} (REFUSED: {checked})')}[/red]"
                state_text = "[red]UNVERIFIED (held HALTED)[/red]"
            else:
                actor = _text(checked)
                state_text = TradingState(e.state).name
            table.add_row(
                e.scope.value,
                _text(e.key),
                state_text,
                actor,
                _text(e.reason),
                when(e.issued_ns, millis=True),
                str(rev),
            )
        console.print(table)
        if ramps:
            from knightwatch.cli.incident import ramp_rows
            from knightwatch.incident.ramp import RampPlan

            console.print(ramp_rows(ramps, RampPlan(), store.roster))

    _run(go)


def _supervisor_config(path: Path | None) -> SupervisorConfig:
    if path is None:
        return SupervisorConfig()
    try:
        return SupervisorConfig.from_toml(path)
    except ValueError as exc:
        raise FleetError(str(exc)) from None


def supervisor(
    config: Path | None = typer.Option(
        None, "--config", help="TOML file with a \\[supervisor] table"
    ),
    webhook: str | None = webhook_option("URL to POST pages to"),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
    metrics_port: int | None = MetricsPort,
) -> None:
    """Watch node metrics and halt anomalies automatically; pages every action.

    Runs as the supervisor identity (--key): it may kill and drain, nothing else."""

    async def go() -> None:
        cfg = _supervisor_config(config)
        clock = SystemClock()
        async with session(nats_url, state_dir, "supervisor", key, anchor) as (
            plane,
            signer,
            store,
        ):
            supervisor_ = Supervisor(cfg, clock)
            service = SupervisorService(
                plane,
                supervisor_,
                KillSwitch(plane, clock, signer, store),
                Pager(webhook),
                sweep_s=1.0,
                concurrent=True,
            )
            exposition = (
                serve_supervisor_metrics(supervisor_, metrics_port)
                if metrics_port is not None
                else None
            )
            try:
                await service.start()
                if exposition is not None:
                    console.print(f"supervisor metrics on {exposition.url}", highlight=False)
                console.print("supervisor running; Ctrl-C to stop")
                await wait_for_signal()
            finally:
                await service.stop()
                if exposition is not None:
                    exposition.close()

    _run(go, serves=True)


RegistryOpt = typer.Option(
    None,
    "--registry",
    help="feature-flags.yaml: the release's flag table and the admission check "
    "(default: none, the release understands no flags)",
)


FleetOpt = typer.Option(
    None,
    "--fleet",
    help="name the local fleet, e.g. dev-ldn (once: its roster keeps the name; default: the "
    f"name its roster has, if any; {NAME_RULE})",
)


def _check_fleet(fleet: str | None) -> None:
    """`--fleet`, checked before anything starts or is written ("" too: `--fleet "$FLEET"`
    with FLEET unset names no fleet, it does not leave the option out)."""
    if fleet is not None and not is_name(fleet):
        raise FleetError(f"--fleet: a fleet name must be {NAME_RULE} (got {quoted(fleet)})")


def up(
    nodes: int = typer.Option(3, "--nodes", min=1, max=64),
    flow: float = typer.Option(
        20.0, "--flow", min=0, max=MAX_FLOW_PER_S, help="orders/s per node (0 = idle nodes)"
    ),
    webhook: str | None = webhook_option("URL to POST pages to"),
    supervisor_config: Path | None = typer.Option(
        None, "--supervisor-config", help="TOML file with a \\[supervisor] table"
    ),
    registry: Path | None = RegistryOpt,
    fleet: str | None = FleetOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Run a local fleet: control plane, admission, supervisor, venue and N admitted nodes.

    Builds a release of this installation (signed by two fresh keys, threshold 2),
    makes it the fleet's target and starts every node with its release inputs.
    """

    async def go() -> None:
        cfg = _supervisor_config(supervisor_config)
        _check_fleet(fleet)
        if registry is not None:
            load_registry_schema(registry)  # refused here, before any server starts
        state_dir.mkdir(parents=True, exist_ok=True)
        urls = _urls(nats_url)
        with fleet_claim(state_dir, "up", probe=not urls):
            await run_up(
                nodes, flow, urls, state_dir, Pager(webhook), cfg, console, registry, fleet or ""
            )

    _run(go, serves=True)


def drill(
    nodes: int = typer.Option(8, "--nodes", min=3, max=64),
    flow: float = typer.Option(
        20.0, "--flow", min=1, max=MAX_FLOW_PER_S, help="normal orders/s per node"
    ),
    runaway_node: str = typer.Option("n3", "--runaway-node", help="node to turn into a runaway"),
    stale: int = typer.Option(
        0, "--stale", min=0, help="nodes (the last ones) started on a missed deploy"
    ),
    registry: Path | None = RegistryOpt,
    fleet: str | None = FleetOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = typer.Option(Path(".knightwatch/drill"), "--state-dir", parser=nonempty_path),
    json_out: Path | None = typer.Option(None, "--json", help="write the report as JSON"),
    resume_phase: bool = typer.Option(
        True, "--resume/--no-resume", help="after the kill: snapshot, preflight, ramp, trip"
    ),
    fix: bool = typer.Option(
        False, "--fix", help="the FIX drill: an OMS through the FIX gateway to a FIX venue"
    ),
) -> None:
    """Stale nodes refused at join; a runaway halted automatically; a fleet kill confirmed;
    then the resume: evidence snapshot, preflight, a ramp back and a ramp that trips.

    With --fix: a day of FIX flow and a Power Peg runaway through `knightwatch gateway`
    to `knightwatch venue --fix`, then a fleet kill that cancels at the venue.
    """
    if json_out is not None:  # said before a run of minutes, not with a traceback after it
        try:
            check_writable("--json", json_out)
        except OptionError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
    if fix and fleet is not None:  # not run as named: said, never left out silently
        console.print(
            "[red]error:[/red] --fleet: not with --fix (the FIX drill's fleet is not named)",
            highlight=False,
        )
        raise typer.Exit(2)
    if fix:
        from knightwatch.cli.gateway import fix_drill

        fix_drill(state_dir / "fix", json_out)
        return

    async def go() -> DrillReport:
        _check_fleet(fleet)
        if registry is not None:
            load_registry_schema(registry)  # refused here, before any server starts
        state_dir.mkdir(parents=True, exist_ok=True)
        urls = _urls(nats_url)
        with fleet_claim(state_dir, "drill", probe=not urls):
            return await run_drill(
                nodes,
                flow,
                runaway_node,
                urls,
                state_dir,
                console,
                stale=stale,
                registry=registry,
                resume_phase=resume_phase,
                fleet=fleet or "",
            )

    report = _run(go, stopped_says=SPAWNED_STOPPED)
    if json_out is not None:
        try:
            json_out.write_bytes(msgspec.json.encode(report))
        except OSError as exc:
            console.print(
                f"[red]error:[/red] {escape(f'--json {json_out}: cannot write: {exc.strerror}')}",
                highlight=False,
            )
            raise typer.Exit(2) from None
    if not report.passed:
        raise typer.Exit(1)


admission_app = typer.Typer(
    help="Release admission on the live fleet: serve, target release, enrol nodes.",
    no_args_is_help=True,
)


@admission_app.command("serve")
def admission_serve(
    policy: Path = typer.Option(..., "--policy", help="trust policy TOML (pinned here)"),
    registry: Path = typer.Option(..., "--registry", help="feature-flags.yaml"),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Judge node attestations against the fleet's target release (one per fleet)."""

    async def go() -> None:
        trust, schema = load_trust_policy(policy), load_registry_schema(registry)
        async with session(nats_url, state_dir, "admission", key, anchor) as (plane, _, store):
            await AdmissionService(
                plane, trust, schema, clock=SystemClock(), roster=TrustStore(store.anchor)
            ).start()
            console.print("admission service running; Ctrl-C to stop")
            await wait_for_signal()

    _run(go, serves=True)


def write_approval(out: Path, data: bytes) -> None:
    """A signed approval or proposal at `--out`, whole or not at all and never over a file
    that exists (`incident.write_new`). Written in place, a write that failed partway (a
    full disk, a file size limit) left a cut file under the name: the second person's
    signature was unreadable, and the next try was refused as "already exists"."""
    from knightwatch.cli.incident import write_new

    try:
        write_new(out, data)
    except FileExistsError:
        raise TrustError(f"--out {out}: already exists; refusing to overwrite") from None
    except OSError as exc:
        raise TrustError(f"--out {out}: cannot write: {exc.strerror or exc}") from None


def _release_file(path: Path) -> Envelope:
    data = read_bytes(path, "envelope", JSON_MAX_BYTES)
    return decode_envelope(data, source=f"envelope {path}")


@admission_app.command("approve")
def admission_approve(
    envelope: Path = typer.Argument(..., help="the signed release envelope you approve"),
    requester: str = typer.Option(..., "--for", help="who will set the target (roster name)"),
    reason: str = typer.Option(..., "--reason", help="why you approve, for the record"),
    out: Path = typer.Option(..., "--out", help="the signed approval file to hand over"),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Sign your approval (you: a second person with the approver role) of --for making
    exactly this release (its manifest digest) the fleet's target; they pass the file
    with `admission target --approval`. Valid for an hour."""
    _reason_or_exit(reason)

    async def go() -> tuple[str, str]:
        release = _release_file(envelope)
        release_id, _ = release_ref(release, f"envelope {envelope}")
        async with session(nats_url, state_dir, "admission-approve", key, anchor) as (
            _,
            signer,
            store,
        ):
            verdict = decide(store.roster, signer.name, Action.APPROVE, requester=requester)
            if not verdict.allowed:
                raise TrustError(f"--key: {verdict.why}")
            signed = approve_target(
                release,
                signer,
                requester,
                reason,
                SystemClock().time_ns(),
                fleet=store.roster.fleet if store.roster is not None else "",
            )
            write_approval(out, encode_envelope(signed))
            return signer.name, release_id

    who, release_id = _run(go)
    console.print(
        escape(
            f"approved by {who}: target release {release_id} for {requester}; written to {out} "
            f"(valid {APPROVAL_TTL_S / 60:.0f} min); they pass --approval {out}"
        ),
        highlight=False,
    )


@admission_app.command("target")
def admission_target(
    envelope: Path = typer.Argument(..., help="signed release envelope (DSSE JSON)"),
    reason: str = typer.Option(..., "--reason", help="why; recorded (a rollback says so)"),
    approval: Path | None = typer.Option(
        None,
        "--approval",
        help="a second person's signed approval of this release for you "
        "(`knightwatch admission approve`); not needed for a return to the known-good "
        "release while its kill is in force",
    ),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Set the fleet's target release (a rollback too), as a request you sign; refused
    unless it passes admission and (but for a known-good rollback) carries an approval."""
    _reason_or_exit(reason)

    async def go() -> TargetReply:
        release = _release_file(envelope)
        approved = None
        if approval is not None:
            data = read_bytes(approval, "approval", JSON_MAX_BYTES)
            check_json_depth(data, f"approval {approval}")
            approved = decode_approval_file(data, f"approval {approval}")
        async with session(nats_url, state_dir, "admission-target", key, anchor) as (
            plane,
            signer,
            store,
        ):
            return await request_target(
                plane,
                release,
                signer,
                reason,
                now_ns=SystemClock().time_ns(),
                approval=approved,
                fleet=store.roster.fleet if store.roster is not None else "",
            )

    result = _run(go)
    if not result.accepted:
        table = Table(title=_text(f"target release {result.release_id or '?'} REFUSED"))
        for col in ("reason", "subject", "detail"):
            table.add_column(col)
        for f in result.findings:  # the release's own names and ids: shown as written
            table.add_row(_text(str(f.reason)), _text(f.subject), _text(f.detail))
        console.print(table)
        raise typer.Exit(1)
    console.print(
        _text(f"target release {result.release_id} set (revision {result.revision}); ")
        + "every node re-attests now",
        highlight=False,
    )


COMMANDS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("node", node),
    ("drill-node", _drill_node_command()),
    ("kill", kill),
    ("resume", resume),
    ("approve", approve),
    ("requests", requests),
    ("status", status),
    ("supervisor", supervisor),
    ("up", up),
    ("drill", drill),
)
"""Top-level commands, registered on the main app."""
