"""`knightwatch incident ...` and the resume path: snapshot, verify, preflight, ramp.

The commands an operator runs after a kill, in the order of docs/runbook.md:
take the evidence snapshot before anything restarts, check the preflight, then
`knightwatch resume`, which runs the same preflight and, if it passes, stores a
signed request; `knightwatch approve ID` by a second person runs the preflight
again and ramps the resume back in stages.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from knightwatch.audit.log import sync_dir
from knightwatch.cli.fleet import (
    AnchorOpt,
    KeyOpt,
    NatsUrl,
    StateDir,
    _run,
    _scope_or_exit,
    _text,
    session,
)
from knightwatch.cli.options import OptionError, check_output, when
from knightwatch.clock import SystemClock
from knightwatch.control.fleet.approvals import PIN, Request, Requests, digest, pinned
from knightwatch.control.fleet.freeze import record_known_good
from knightwatch.control.fleet.killswitch import CommandResult, KillSwitch, KillSwitchError
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.plane.protocol import ControlPlane, ControlPlaneUnavailable
from knightwatch.control.plane.wire import RampRecord
from knightwatch.errors import KnightwatchError, quoted
from knightwatch.incident import workflow
from knightwatch.incident.preflight import (
    Checklist,
    PreflightConfig,
    PreflightConfigError,
    run_preflight,
)
from knightwatch.incident.ramp import (
    HEARTBEAT_S,
    RampError,
    RampOutcome,
    RampPlan,
    RampWatch,
    driver_silent,
    ramp_signer,
    unverified_effect,
)
from knightwatch.incident.snapshot import (
    SNAPSHOT_MAX_BYTES,
    SnapshotError,
    take_snapshot,
    verify_snapshot,
)
from knightwatch.inputs import load_toml, read_bytes
from knightwatch.release.keys import load_signing_key, load_verify_key
from knightwatch.state import Scope
from knightwatch.trust.roster import Roster

console = Console()
app = typer.Typer(
    help="After a kill: evidence snapshot, verify it, preflight before resuming.",
    no_args_is_help=True,
)

_T = TypeVar("_T")
LAST_MAX = 1_000_000
"""The most flight-recorder records `snapshot --last` keeps per node. Unbounded, a count past
what a C size holds was taken, the stores were read, and the command ended with an
OverflowError traceback at the first flight-recorder record, no snapshot written. A
million records of a few hundred bytes each is already more than the archive
`incident verify` reads (`SNAPSHOT_MAX_BYTES`): the tails are cut to fit it, and the
archive says so (`incident.snapshot`)."""
SNAPSHOT_KEY_ENV = "KNIGHTWATCH_SNAPSHOT_KEY"
SNAPSHOT_DIR_ENV = "KNIGHTWATCH_SNAPSHOT_DIR"


def incident_config(path: Path | None) -> tuple[RampPlan, PreflightConfig]:
    """`[ramp]` and `[preflight]` tables of one TOML file (defaults for a missing table)."""
    if path is None:
        return RampPlan(), PreflightConfig()
    data = load_toml(path, "--config")
    if unknown := sorted(set(data) - {"ramp", "preflight"}):
        # a misspelt table would leave its defaults in force, silently
        raise RampError(
            f"--config {path}: {unknown[0]}: unknown table (expected [ramp] and [preflight])"
        )
    try:
        plan = _table(data, "ramp", RampPlan)
        cfg = _table(data, "preflight", PreflightConfig)
    except (RampError, PreflightConfigError) as exc:
        raise RampError(f"--config {path}: {exc}") from None
    return plan, cfg


def _table(data: dict[str, object], table: str, kind: type[_T]) -> _T:
    """One table as `kind`; a type error names the table and the field in it
    (`ramp: Expected `float`, got `str` - at `ramp.stages[0].fraction``)."""
    try:
        return msgspec.convert(data.get(table, {}), kind)
    except msgspec.ValidationError as exc:
        why = str(exc).replace("`$", f"`{table}", 1)
        # the plan's own checks already name their table ("ramp: stages[0]...")
        raise RampError(why if why.startswith(f"{table}: ") else f"{table}: {why}") from None


def config_or_exit(path: Path | None) -> None:
    """Check `--config` before anything connects: a bad file is one line and exit 2."""
    try:
        incident_config(path)
    except (KnightwatchError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def print_checklist(checklist: Checklist, out: Console = console) -> None:
    """The checklist; its key and details quote the store (a halt's reason, node ids,
    verdicts): escaped, so "[/x]" in a kill reason is shown, not a traceback that blocks
    the resume of that very halt, and a control character is written as its escape
    (`cli.fleet._text`), so a stored "\\x1b[1A" cannot redraw a FAIL row as ok."""
    verdict = "[green]PASS[/green]" if checklist.passed else "[red]REFUSED[/red]"
    title = f"preflight {checklist.scope.value} {escape(repr(checklist.key))}: {verdict}"
    table = Table(title=title, highlight=False)
    table.add_column("check")
    table.add_column("")
    table.add_column("detail / what to fix")
    for item in checklist.items:
        table.add_row(
            _text(item.name), "[green]ok[/green]" if item.ok else "[red]FAIL[/red]",
            _text(item.detail),
        )  # fmt: skip
    out.print(table)


def _stage_line(record: RampRecord) -> None:
    at = datetime.fromtimestamp(record.since_ns / 1e9, tz=UTC).strftime("%H:%M:%S")
    console.print(
        f"{at} ramp {_text(record.ramp_id)} stage {record.stage + 1}/{len(record.stages)}: "
        f"{record.fraction:.0%} of limits ({_text(record.status)})",
        highlight=False,
    )


def _print_preflight(checklist: Checklist, halted: list[str]) -> None:
    print_checklist(checklist)
    if halted:
        console.print(
            f"[red]crash loop:[/red] {escape(', '.join(halted))} halted and paged",
            highlight=False,
        )
    # a crash-looping node whose halt was not stored is not "halted": it rejoins to trade
    if unhalted := [n for n in checklist.crash_looping if n not in halted]:
        console.print(
            f"[red]crash loop:[/red] {escape(', '.join(unhalted))} NOT halted (the halt was "
            "not stored; paged): halt each by hand with knightwatch kill --node",
            highlight=False,
        )


async def resume_flow(
    plane: ControlPlane,
    ks: KillSwitch,
    scope: Scope,
    key: str,
    reason: str,
    *,
    acknowledged: Collection[str] = (),
    config: Path | None = None,
    webhook: str | None = None,
    shown: int = 0,
) -> tuple[Checklist, Request | None]:
    """The requester's half (`incident.workflow.request_resume`), printed. The request
    carries the `[ramp]` stages of `config` (the defaults without one). `shown`: the
    halt's revision the requester looked at (`resume --revision`): a request decided on
    another is not made (`RequestMoved`)."""
    plan, cfg = incident_config(config)
    checklist, halted, request = await workflow.request_resume(
        plane,
        ks,
        scope,
        key,
        reason,
        acknowledged=acknowledged,
        cfg=cfg,
        pager=Pager(webhook),
        plan=plan,
        shown=shown,
    )
    _print_preflight(checklist, halted)
    if request is not None:
        console.print(f"ramp (signed with the request): {plan.describe()}", highlight=False)
    return checklist, request


async def approve_flow(
    plane: ControlPlane,
    ks: KillSwitch,
    request_id: str,
    *,
    timeout_s: float,
    acknowledged: Collection[str] = (),
    config: Path | None = None,
    webhook: str | None = None,
) -> tuple[Checklist, RampOutcome | None]:
    """The approver's half (`incident.workflow.approve_resume`), printed as it goes.
    The stages are the request's (signed with it); `config`'s `[ramp]` gives the trip
    rules, and stages of its own that differ are named, not used."""
    plan, cfg = incident_config(config)
    try:
        request, _ = await Requests(ks).get(request_id)
    except KillSwitchError:
        request = None  # approve_resume says why, in its own words
    if request is not None and request.entry.ramp:
        signed = plan.following(request.entry)
        if config is not None and signed.stages != plan.stages:
            console.print(
                f"[yellow]note:[/yellow] --config {escape(str(config))} \\[ramp] stages "
                f"({plan.describe()}) are not the request's; the request's stages apply",
                highlight=False,
            )
        plan = signed
    source = "signed with the request" if request is not None and request.entry.ramp else "--config"
    if request is not None:
        # what is printed here is what is co-signed: a record swapped in under the id after
        # this read is refused, not approved (an ID@DIGEST argument pins it earlier still)
        console.print(
            escape(
                f"approving request {request.id}: resume of {request.entry.scope.value} "
                f"{request.entry.key} requested by {request.requester}: {request.entry.reason}"
            ),
            highlight=False,
        )
        if PIN not in request_id:
            request_id = pinned(request.id, digest(request.entry))

    def heard(checklist: Checklist, halted: list[str]) -> None:
        _print_preflight(checklist, halted)
        if checklist.passed:
            watch = RampWatch(checklist.scope, checklist.key, plan, 0, [])
            console.print(f"ramp ({source}): {plan.describe()}", highlight=False)
            console.print(f"ramp trips on: {escape(watch.would_trip())}", highlight=False)

    return await workflow.approve_resume(
        plane,
        ks,
        request_id,
        timeout_s=timeout_s,
        plan=plan,
        cfg=cfg,
        pager=Pager(webhook),
        acknowledged=acknowledged,
        on_preflight=heard,
        on_stage=_stage_line,
    )


def print_outcome(outcome: RampOutcome) -> None:
    if outcome.completed and outcome.held:
        # "done" is stored, but a node says otherwise: what it holds is what is true
        console.print(
            f"[red]ramp {escape(outcome.ramp_id)} done, NOT at full limits on every node[/red]:"
            f" {escape(outcome.short_of())}; a node logging RAMP_REFUSED holds 10% until a "
            "record it can verify replaces it: kill the scope and resume again (two people)",
            highlight=False,
        )
        return
    if outcome.completed:
        console.print(
            f"[green]ramp {escape(outcome.ramp_id)} complete[/green]: full limits",
            highlight=False,
        )
        return
    trip = outcome.trip
    if trip is None or not trip.sent:
        # the nodes hold the stage's limits (and lose their leases once the plane is gone)
        after = (
            "its kill was NOT sent (the control plane was out of reach): kill the scope again now"
        )
    elif trip.revision is None or trip.missing:
        unconfirmed = escape(", ".join(trip.missing)) or "the store"
        after = f"its kill is not confirmed by {unconfirmed}: kill the scope again now"
    else:
        after = "the scope is HALTED again"
    console.print(
        f"[red]ramp {escape(outcome.ramp_id)} TRIPPED[/red] at stage {outcome.stage + 1} "
        f"({outcome.fraction:.0%} limits): {escape(outcome.trip_reason)}; {after}",
        highlight=False,
    )


async def snapshot_after_kill(
    plane: ControlPlane, result: CommandResult, key_path: Path, out_dir: Path
) -> Path:
    """What `kill` does after it returned, when configured: known-good release, then evidence.

    Whatever fails here fails after the kill went out: the `SnapshotError` says so first
    (a bare "private key ...: permissions 0644" or "Not a directory" after a kill read as
    the kill failing, on the very command that must be trusted), then names the setting
    at fault and the command that takes the evidence instead.

    Each part is taken whatever became of the other: a known-good write that failed (its
    bucket lost, a refused write) skipped the evidence too, the one record an incident
    cannot take again later. The snapshot is still taken and written, and the error then
    names both the archive written and the known-good release not recorded."""
    sent = f"the kill was sent (command {result.entry.command_id[:12]})"
    clock = SystemClock()
    lost = ""  # the known-good release's failure, said with whatever follows
    try:
        await record_known_good(plane, result.entry, clock.time_ns())
    except ControlPlaneUnavailable as exc:
        lost = f"; its known-good release was NOT recorded: {exc}"

    def failed(what: str) -> SnapshotError:
        return SnapshotError(
            f"{sent}{lost}; its automatic evidence snapshot was NOT {what}"
            "; take the evidence now: knightwatch incident snapshot"
        )

    try:
        key = load_signing_key(key_path)
    except (KnightwatchError, OSError) as exc:
        why = str(exc) if isinstance(exc, KnightwatchError) else f"{key_path}: {exc.strerror}"
        raise failed(f"taken: {SNAPSHOT_KEY_ENV}: {why}") from None
    try:
        data = await take_snapshot(
            plane,
            clock,
            key,
            actor=result.entry.actor,
            reason=f"automatic, after kill {result.entry.command_id}: {result.entry.reason}",
            listen_s=0.5,
        )
    except (ControlPlaneUnavailable, SnapshotError) as exc:
        raise failed(f"taken: {exc}") from None
    stamp = datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"snapshot-{stamp}-{result.entry.command_id[:8]}.tar"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in its place, too (FileExistsError)
        raise failed(
            f"written: {SNAPSHOT_DIR_ENV} {out_dir}: cannot make the directory: {exc.strerror}"
        ) from None
    try:
        # exclusive: never overwrites earlier evidence, never follows a planted symlink
        write_new(path, data)
    except FileExistsError:
        raise failed(
            f"written: {SNAPSHOT_DIR_ENV} {path}: already exists (or is a link); "
            "refusing to overwrite it"
        ) from None
    except OSError as exc:
        raise failed(
            f"written: {SNAPSHOT_DIR_ENV} {out_dir}: cannot write {path.name}: {exc.strerror}"
        ) from None
    if lost:
        # the evidence is on disk; the known-good record is not (its reader, the preflight,
        # then names the target in force without it): said, never lost
        raise SnapshotError(
            f"{sent}; its evidence snapshot was written to {path}{lost}; the evidence names "
            "the release target in force (release/target.json)"
        )
    return path


DEFAULT_NAMES = 100
"""How many default archive names (`snapshot-<stamp>.tar`, then `-2` ...) a snapshot tries."""


def _write_default(data: bytes, stamp: str) -> Path:
    """Write evidence taken without `--out` under the first free default name in the
    working directory, and return it.

    The default name holds only the second it was taken in: a second snapshot in that
    second (two operators, a script's) found it taken and threw its evidence away with
    "choose another --out", after it had been collected. Each name is still written
    exclusively (`write_new`): nothing is overwritten, no link followed."""
    for n in range(1, DEFAULT_NAMES + 1):
        path = Path(f"snapshot-{stamp}.tar" if n == 1 else f"snapshot-{stamp}-{n}.tar")
        try:
            write_new(path, data)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise SnapshotError(f"{path}: cannot write: {exc.strerror}") from None
    raise SnapshotError(
        f"snapshot-{stamp}.tar to snapshot-{stamp}-{DEFAULT_NAMES}.tar: all exist; "
        "refusing to overwrite them: give --out"
    )


def write_new(path: Path, data: bytes) -> None:
    """Put `data` at `path` whole or not at all, as a new file: never over an existing one
    or through a link (FileExistsError), never a cut archive left behind.

    Written in place, a write that failed partway (a full disk, a file size limit) left a
    cut archive under the evidence's name: `verify` could not read it, and the next try
    was refused as "already exists (it may be earlier evidence)". So the bytes go to a
    new file beside it, fsynced, then take the name by a hard link (which refuses a name
    that exists, a link included), and the directory is fsynced: a machine crash right
    after leaves the whole archive or none. A file system without hard links reserves
    the name exclusively and renames the written file over its own reservation.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o666)  # the umask applies, as it did to a plain write
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                raise
            os.close(os.open(path, flags, 0o666))  # FileExistsError as above
            os.replace(tmp, path)
        sync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def auto_snapshot_settings() -> tuple[Path, Path] | None:
    """(key, directory) when automatic snapshots after a kill are configured in the environment."""
    key = os.environ.get(SNAPSHOT_KEY_ENV)
    if not key:
        return None
    return Path(key), Path(os.environ.get(SNAPSHOT_DIR_ENV) or ".knightwatch/snapshots")


def _print_incomplete(gaps: tuple[str, ...]) -> None:
    """Evidence the snapshot could not collect (its `incomplete.json`), one line each,
    control characters escaped: the archive's text, whoever signed it."""
    for gap in gaps:
        console.print(f"[yellow]incomplete:[/yellow] {_text(gap)}", highlight=False)


def _out_or_exit(out: Path) -> None:
    """`--out`, checked before anything connects (exit 2, one line): an archive path that
    exists (earlier evidence, a link) or cannot be a file was refused only after the
    evidence was collected, and the collected evidence was thrown away with it. The
    write at the end stays exclusive (`write_new`): this check only refuses earlier."""
    try:
        check_output("--out", out)  # a directory, or a parent that is no directory
        if os.path.lexists(out):  # a link too, dangling or not
            raise SnapshotError(
                f"--out {out}: already exists; refusing to overwrite it (it may be earlier "
                "evidence): choose another --out"
            )
    except (SnapshotError, OptionError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command("snapshot")
def snapshot(
    out: Path | None = typer.Option(None, "--out", help="archive file (default: timestamped)"),
    reason: str = typer.Option("incident evidence", "--reason"),
    last: int = typer.Option(
        200, "--last", min=1, max=LAST_MAX, help="flight-recorder records kept per node"
    ),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Collect the evidence (kills, confirmations, verdicts, flags, recorder heads) and sign
    it with your key (--key): the snapshot names whoever signed it."""
    if out is not None:
        _out_or_exit(out)

    async def go() -> Path:
        clock = SystemClock()
        async with session(nats_url, state_dir, "snapshot", key, anchor) as (plane, signer, _):
            data = await take_snapshot(
                plane, clock, signer.key, actor=signer.name, reason=reason, last_records=last
            )
        if out is None:
            path = _write_default(data, datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%SZ"))
        else:
            path = out
            try:
                write_new(path, data)  # evidence already taken is never overwritten
            except FileExistsError:
                raise SnapshotError(
                    f"--out {path}: already exists; refusing to overwrite it (it may be "
                    "earlier evidence): choose another --out"
                ) from None
            except OSError as exc:
                raise SnapshotError(f"--out {path}: cannot write: {exc.strerror}") from None
        check = verify_snapshot(data, source=str(path))
        console.print(
            escape(f"snapshot {path}: {check.files} files, signed by {check.signer[:16]}"),
            highlight=False,
        )
        _print_incomplete(check.incomplete)
        return path

    _run(go)


@app.command("verify")
def verify(
    archive: Path = typer.Argument(..., help="snapshot archive"),
    trusted: list[Path] = typer.Option([], "--trusted", help="public key(s) the signer must be"),
) -> None:
    """Check the signature and every file's hash; exit 1 naming each problem."""
    try:
        data = read_bytes(archive, "snapshot", SNAPSHOT_MAX_BYTES)
        keys = {k.key_id: k for k in (load_verify_key(p) for p in trusted)} or None
        check = verify_snapshot(data, source=str(archive), trusted=keys)
    except OSError as exc:
        console.print(
            f"[red]error:[/red] {escape(f'{archive}: cannot read: {exc.strerror}')}",
            highlight=False,
        )
        raise typer.Exit(2) from None
    except (KnightwatchError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    problems = list(check.problems)
    try:
        if check.taken_ns <= 0:
            raise ValueError
        taken = datetime.fromtimestamp(check.taken_ns / 1e9, tz=UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        # the archive's own claim (signed or not): out of range, it dated nothing
        taken = ""
        problems.append(f"{archive}: taken_ns {check.taken_ns} is out of range (not a real time)")
    if not check.ok or problems:
        for problem in problems:
            # an archive's member names are its maker's text: a name's "\x1b[2K" erased this
            # FAIL line and drew an OK in its place; written as escapes (`_text`)
            console.print(f"[red]FAIL[/red] {_text(problem)}", highlight=False)
        raise typer.Exit(1)
    # The actor is the archive's own claim: only a --trusted key makes the signer someone.
    who = (
        f"signed by trusted key {check.signer[:16]}"
        if keys is not None
        else f"signature valid for key {check.signer[:16]}; signer not checked: pass --trusted FILE"
    )
    console.print(
        f"[green]OK[/green] {escape(str(archive))}: {check.files} files intact, {who}; "
        f"actor as claimed in the archive: {escape(quoted(check.actor))}, taken at {taken}",
        highlight=False,
    )
    _print_incomplete(check.incomplete)


@app.command("preflight")
def preflight(
    node_id: str | None = typer.Option(None, "--node"),
    strategy: str | None = typer.Option(None, "--strategy"),
    symbol: str | None = typer.Option(None, "--symbol"),
    ack: list[str] = typer.Option([], "--ack", help="acknowledge a Guard halt's cause (its code)"),
    config: Path | None = typer.Option(
        None, "--config", help="TOML with \\[preflight] and \\[ramp]"
    ),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """The checklist `resume` runs, without resuming (exit 1 if any item fails)."""

    scope, slot_key = _scope_or_exit(node_id, strategy, symbol)

    async def go() -> Checklist:
        _, cfg = incident_config(config)
        async with session(nats_url, state_dir, "preflight", key, anchor) as (plane, _, store):
            return await run_preflight(
                plane,
                scope,
                slot_key,
                clock=SystemClock(),
                config=cfg,
                acknowledged=ack,
                trust=store,
            )

    checklist = _run(go)
    print_checklist(checklist)
    if not checklist.passed:
        raise typer.Exit(1)


def ramp_rows(
    records: list[RampRecord], plan: RampPlan, roster: Roster | None, now_ns: int | None = None
) -> Table:
    """The ramp table `knightwatch status` prints: each record as nodes take it.

    A ramping record is watched by the `approve` that applied its resume, by the rules of
    its `--config` (`plan` gives the defaults, named as such): no record keeps them. Before,
    `status` showed `plan`'s rules as the ramp's own, also for a ramp whose `approve` was
    gone, where nothing trips it and the scope stays at the stage it reached
    (`cli.fleet.RAMP_STOPPED`). That `approve` writes the record every `HEARTBEAT_S`: one
    not written for `DRIVER_SILENT_S` by `now_ns` (the wall clock by default) is shown as
    its driver silent since its last write."""
    now = SystemClock().time_ns() if now_ns is None else now_ns
    table = Table(title="resume ramps", highlight=False)
    for col in ("scope", "key", "ramp", "stage", "limits", "status"):
        table.add_column(col)
    table.add_column("signed by", min_width=10, overflow="fold")
    table.add_column("trips on / why")
    for r in records:
        signer = ramp_signer(r, roster)
        signed = (
            signer
            if isinstance(signer, str)
            else f"[red]UNVERIFIED[/red] {signer.reason.value}: {unverified_effect(r)}"
        )
        why = r.trip_reason if r.status == "tripped" else ""
        status = _text(r.status) if r.status != "tripped" else f"[red]{r.status}[/red]"
        last = when(r.since_ns)
        if driver_silent(r, now):
            status = "[red]ramping, driver silent[/red]"
            why = (
                f"driver silent since {last} UTC (the `approve` that runs it writes this "
                f"record every {HEARTBEAT_S:g} s): nothing trips this ramp and the scope "
                "stays at this stage: kill the scope to end it"
            )
        elif r.status == "ramping":
            why = (
                f"driver last heard {last} UTC; "
                "while the `approve` that runs it is up: any halt in the scope, or a "
                "block-rate spike by that approve's --config [ramp] rules (not recorded; by "
                f"default {RampWatch(r.scope, r.key, plan, 0, []).spike()}); with that "
                "process gone, nothing trips it and the scope stays at this stage: kill the "
                "scope to end it"
            )
        # the record's text (key, id, status, trip reason) is its writer's: shown as written,
        # control characters escaped (a trip reason's "\x1b[2K\x1b[1A" erased the HALTED
        # row above it in `status`)
        table.add_row(
            r.scope.value,
            _text(r.key),
            _text(r.ramp_id),
            f"{r.stage + 1}/{len(r.stages)}",
            f"{r.fraction:.0%}",
            status,
            _text(signed) if isinstance(signer, str) else signed,
            _text(why),
        )
    return table


__all__ = [
    "app",
    "approve_flow",
    "auto_snapshot_settings",
    "print_outcome",
    "ramp_rows",
    "resume_flow",
    "snapshot_after_kill",
]
