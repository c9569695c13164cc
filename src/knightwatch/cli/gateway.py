"""`knightwatch gateway` and `knightwatch venue --fix`: the FIX risk gateway and a venue for it.

The gateway is a fleet node (same lease, kill, flags, metrics and recorder
as `knightwatch node`) whose orders come from FIX client sessions; the venue
is the simulated market behind a QuickFIX acceptor, for tests, the demo and
the drill. Both bind 127.0.0.1 only (see knightwatch.gateway.containment).
"""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from knightwatch.cli.fleet import (
    SPAWNED_STOPPED,
    AnchorOpt,
    MetricsPort,
    NatsUrl,
    StateDir,
    _run,
    _urls,
    lease_policy_or_exit,
)
from knightwatch.cli.options import nonempty_path
from knightwatch.cli.release import MeasureEnvironmentOpt
from knightwatch.clock import SystemClock
from knightwatch.control.node.attestor import Attestor, checked_measure
from knightwatch.control.node.lease import DEFAULT_HEARTBEAT_S, DEFAULT_LEASE_TIMEOUT_S
from knightwatch.control.serve import stop_requested
from knightwatch.gateway.config import GatewayConfig
from knightwatch.gateway.engine import GatewayError
from knightwatch.release.flagfiles import load_flag_schema
from knightwatch.trust.identity import load_signer
from knightwatch.trust.store import load_anchor

console = Console()


def _fail(text: str) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(text)}", highlight=False)
    raise typer.Exit(2)


def gateway(
    config_file: Path = typer.Argument(..., help="gateway TOML: sessions, venue, policies"),
    limits: Path | None = typer.Option(None, "--limits", help="limits TOML file"),
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
    lease_timeout: float = typer.Option(DEFAULT_LEASE_TIMEOUT_S, "--lease-timeout", help="seconds"),
    heartbeat: float = typer.Option(DEFAULT_HEARTBEAT_S, "--heartbeat", help="seconds"),
    recorder: Path | None = typer.Option(
        None, "--recorder", help="flight recorder file (default: STATE_DIR/audit/NODE.jsonl)"
    ),
    metrics_port: int | None = MetricsPort,
    fix_log: bool = typer.Option(True, "--fix-log/--no-fix-log", help="QuickFIX message logs"),
    artifacts: Path | None = typer.Option(
        None, "--artifacts", help="release: installed files", parser=nonempty_path
    ),
    release_config: Path | None = typer.Option(None, "--release-config", help="release: config"),
    flags: Path | None = typer.Option(None, "--flags", help="release: compiled-in flag table"),
    key: Path = typer.Option(
        ..., "--key", help="the gateway node's enrolled key (identity, NATS login, attestations)"
    ),
    anchor: Path | None = AnchorOpt,
    measure_environment: bool = MeasureEnvironmentOpt,
) -> None:
    """Run the FIX risk gateway as a fleet node: clients in, the Guard, the venue out."""
    policy = lease_policy_or_exit(lease_timeout, heartbeat)
    if measure_environment and artifacts is None:
        _fail("--measure-environment: used only with release admission (--artifacts, ...)")
    try:
        cfg = GatewayConfig.from_toml(config_file)
    except GatewayError as exc:
        _fail(str(exc))
    release_inputs = (artifacts, release_config, flags)
    if any(x is not None for x in release_inputs) and None in release_inputs:
        _fail("--artifacts, --release-config, --flags: give all three (release admission) or none")

    async def go() -> None:
        from knightwatch.gateway.service import serve_gateway

        state_dir.mkdir(parents=True, exist_ok=True)
        signer = load_signer(key, cfg.node)
        trust_anchor = load_anchor(anchor or state_dir / "trust" / "anchor.toml")
        attestor = None
        if artifacts and release_config and flags:
            table = load_flag_schema(flags)
            measure = checked_measure(
                artifacts, release_config, table, environment=measure_environment
            )
            attestor = Attestor(cfg.node, signer.key, measure, clock=SystemClock())
        try:
            await serve_gateway(
                cfg,
                _urls(nats_url),
                state_dir,
                signer=signer,
                anchor=trust_anchor,
                limits_path=limits,
                policy=policy,
                recorder_path=recorder,
                metrics_port=metrics_port,
                attestor=attestor,
                log_messages=fix_log,
            )
        except GatewayError as exc:
            _fail(str(exc))

    _run(go, serves=True)


def venue(
    fix: bool = typer.Option(False, "--fix", help="serve the simulated market over FIX"),
    port: int = typer.Option(9880, "--port", min=1, max=65535, help="127.0.0.1 port"),
    sessions: str = typer.Option("KWGW", "--sessions", help="order-entry CompIDs, comma-separated"),
    drop_copy: str = typer.Option("", "--drop-copy", help="drop-copy CompIDs, comma-separated"),
    begin_string: str = typer.Option("FIX.4.4", "--begin-string", help="FIX.4.4 or FIX.4.2"),
    clip: int = typer.Option(0, "--clip", min=0, help="max quantity per execution (0: whole)"),
    lots: str = typer.Option("", "--lots", help="SYMBOL=LOT,... quantity increments"),
    store: str = typer.Option("file", "--store", help="session store: file or memory"),
    fix_log: bool = typer.Option(True, "--fix-log/--no-fix-log", help="QuickFIX message logs"),
    state_dir: Path = typer.Option(Path(".knightwatch/venue"), "--state-dir", parser=nonempty_path),
) -> None:
    """Serve the simulated market as a FIX venue (order books, fills, cancels, rejects)."""
    if not fix:
        _fail(
            "--fix: the only standalone venue is the FIX one (the drill's NATS venue runs in `up`)"
        )
    if store not in ("file", "memory"):
        _fail(f"--store: must be file or memory (got {store!r})")
    ids = [s.strip() for s in sessions.split(",") if s.strip()]
    dc = [s.strip() for s in drop_copy.split(",") if s.strip()]
    for cid in ids + dc:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", cid):
            _fail(f"--sessions/--drop-copy: {cid!r} is not a CompID (letters, digits, _.-)")
    lot_map: dict[str, Decimal] = {}
    for part in filter(None, (p.strip() for p in lots.split(","))):
        sym, _, text = part.partition("=")
        try:
            lot = Decimal(text)
        except InvalidOperation:
            _fail(f"--lots: {part!r} is not SYMBOL=DECIMAL")
        if not sym.strip() or not lot.is_finite() or lot <= 0:
            _fail(f"--lots: {part!r}: a symbol and a lot size > 0 (a finite decimal)")
        lot_map[sym] = lot

    async def go() -> None:
        from knightwatch.gateway.venue import FixVenue

        try:
            v = FixVenue(
                state_dir,
                port=port,
                sessions=ids,
                drop_copy=dc,
                begin_string=begin_string,
                clip=clip,
                lots=lot_map,
                store=store,
                log_messages=fix_log,
            )
            v.start()
        except GatewayError as exc:
            _fail(str(exc))
        quotes = ", ".join(f"{s} {b.mid():.2f}" for s, b in sorted(v.books.items()))
        print(f"venue {v.comp_id} on 127.0.0.1:{port} ({begin_string}); {quotes}", flush=True)
        try:
            with stop_requested() as stop:
                await stop.wait()
        finally:
            await asyncio.get_running_loop().run_in_executor(None, v.stop)
            print(
                f"venue: {v.stats.orders} orders, {v.stats.executions} executions, "
                f"{v.stats.rejected} rejected, {v.stats.cancels} cancelled",
                flush=True,
            )

    _run(go, serves=True)


def fix_drill(state_dir: Path, json_out: Path | None) -> None:
    """`knightwatch drill --fix` (see knightwatch.gateway.drill)."""
    import msgspec

    async def go() -> object:
        from knightwatch.gateway.drill import run_fix_drill

        try:
            return await run_fix_drill(state_dir, console)
        except GatewayError as exc:
            _fail(str(exc))

    report = _run(go, stopped_says=SPAWNED_STOPPED)
    if json_out is not None:
        try:  # checked before the run (`drill`), but the disk can still say no
            json_out.write_bytes(msgspec.json.encode(report))
        except OSError as exc:
            _fail(f"--json {json_out}: cannot write it: {exc.strerror or exc}")
    if not getattr(report, "passed", False):
        raise typer.Exit(1)
