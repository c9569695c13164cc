"""`knightwatch audit`: verify a flight-recorder file, explain an order, show the tail."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from knightwatch.audit.chain import Seal
from knightwatch.audit.errors import OrderNotFound
from knightwatch.audit.read import (
    MAX_LINE_BYTES,
    data_end,
    decode_record,
    last_lines,
    read_lines,
)
from knightwatch.audit.record import DecisionRecord, EventRecord
from knightwatch.audit.record import format_ts as _format_ts
from knightwatch.audit.verify import Problem, ProblemKind, VerifyReport, ends_cut, verify_lines
from knightwatch.audit.why import Explanation, explain_order
from knightwatch.cli.options import OptionError, scope_value
from knightwatch.control.node.trustfeed import sync_roster
from knightwatch.control.plane.connect import control_plane
from knightwatch.control.plane.protocol import Bucket
from knightwatch.errors import KnightwatchError, quoted
from knightwatch.release.checkpoint import (
    SIDECAR_SUFFIX,
    Checkpoint,
    check_checkpoints,
    read_sidecar,
    wanted_seqs,
)
from knightwatch.release.dsse import Envelope, decode_envelope
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.keys import VerifyKey, load_verify_key
from knightwatch.trust.identity import default_key_path, load_signer
from knightwatch.trust.store import TrustStore, load_anchor

EXIT_INTACT = 0
EXIT_TAMPERED = 1
EXIT_UNREADABLE = 2
SHOWN_PROBLEMS = 50
"""Rows of the problem table printed; `--json` carries every problem found."""

app = typer.Typer(
    help="Flight recorder: verify the hash chain, explain an order, show recent records.",
    no_args_is_help=True,
)
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

FileArg = Annotated[Path, typer.Argument(help="A flight-recorder file (JSON lines).")]


def _ts(ns: int) -> str:
    """A record's time, or what is wrong with it: an edited file can hold any integer, and
    a time no calendar can show must not end `tail` or `why` with a traceback."""
    try:
        return _format_ts(ns)
    except (OverflowError, ValueError, OSError):
        return "[red]? (out of range)[/red]"


def _shown(text: str | Path) -> str:
    """A file name as text that can be printed and put in JSON: a name that is not UTF-8
    (its bytes kept as surrogates) ended `audit verify --json` with a UnicodeEncodeError
    traceback. Such bytes are shown escaped (`\\xff`)."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _safe(text: str) -> str:
    """A string from the file, made safe to print: markup escaped, and every control
    character (ESC, CR, C1, bidi overrides) shown as its escape (`\\x1b`). A record's
    fields hold what an order or a message carried: an ESC sequence in a strategy or an
    order id reached the operator's terminal raw, and could move the cursor and overwrite
    the verdict printed above it (BLOCKED rewritten as ACCEPTED)."""
    return escape(_CONTROL.sub(lambda m: repr(m.group())[1:-1], text))


def _printable(report: VerifyReport) -> VerifyReport:
    """The report with its file names (its path, and problems naming a file) made `_shown`."""
    problems = tuple(msgspec.structs.replace(p, detail=_shown(p.detail)) for p in report.problems)
    return msgspec.structs.replace(report, path=_shown(report.path), problems=problems)


def _unreadable(path: Path, exc: OSError) -> typer.Exit:
    err.print(f"[red]cannot read {escape(_shown(path))}: {escape(str(exc.strerror or exc))}[/red]")
    return typer.Exit(EXIT_UNREADABLE)


def _regular(path: Path) -> None:
    """A flight recorder is a regular file: a device or pipe could be read forever."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if not stat.S_ISREG(mode):
        what = "a directory" if stat.S_ISDIR(mode) else "a device, pipe or socket"
        err.print(
            f"[red]cannot read {escape(_shown(path))}: {what}, not a flight-recorder file[/red]"
        )
        raise typer.Exit(EXIT_UNREADABLE)


def _lines_with_progress(f: BinaryIO, progress: Progress) -> Iterator[bytes]:
    """The file's lines to its data's end, as `verify_file` reads them: a crashed
    recorder's torn last line was read with the 64 MiB of zeros allocated after it
    (one "malformed" line of megabytes, not a torn one), and a sparse file (cut to
    64 GiB) was read through its whole hole."""
    size = data_end(f)
    f.seek(0)
    task = progress.add_task("verifying", total=size)
    done = 0
    for n, line in enumerate(read_lines(f, end=size)):
        done += len(line)
        if n & 0x3FFF == 0:
            progress.update(task, completed=done)
        yield line
    progress.update(task, completed=done)


@app.command("verify")
def verify_cmd(
    file: FileArg,
    anchor: Annotated[
        str | None,
        typer.Option(help="A head hash noted earlier; reports records cut from the end."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    checkpoints: Annotated[
        Path | None,
        typer.Option(help="Signed checkpoints (default: FILE.checkpoints, if it exists)."),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            help="The node's enrolled public key (NAME.pub) the checkpoints are signed with."
        ),
    ] = None,
    nats_url: Annotated[
        str | None,
        typer.Option(
            "--nats-url",
            help="Also take the node's latest checkpoint and enrolled key from the control plane.",
        ),
    ] = None,
    node: Annotated[
        str | None, typer.Option(help="The node that wrote FILE (default: its first record's).")
    ] = None,
    identity: Annotated[
        Path | None,
        typer.Option(
            envvar="KNIGHTWATCH_KEY",
            help="With --nats-url: your private key, to log in (default ~/.knightwatch).",
        ),
    ] = None,
    trust_anchor: Annotated[
        Path | None,
        typer.Option(
            envvar="KNIGHTWATCH_ANCHOR",
            help="With --nats-url: the fleet's trust anchor, to verify the roster's keys.",
        ),
    ] = None,
) -> None:
    """Check the hash chain and the node's signed checkpoints; exit 0 intact, 1 tampered or
    empty, 2 unreadable.

    A chain alone cannot show a rewrite from some record on, or records appended
    with fresh hashes. The node's signed checkpoints can: give its public key
    (`--key`, or `--nats-url` to read the enrolled one and the latest checkpoint
    from the control plane).
    """
    if anchor is not None and (len(anchor) != 64 or anchor.strip("0123456789abcdef")):
        err.print("[red]--anchor: must be a 64-character lowercase hex hash[/red]")
        raise typer.Exit(EXIT_UNREADABLE)
    try:
        node = scope_value("--node", node, absent="to use FILE's first record's node")
    except OptionError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(EXIT_UNREADABLE) from None
    urls = _plane_urls(nats_url)
    _regular(file)
    signed = _signed_checkpoints(file, checkpoints, key, urls, node, identity, trust_anchor)
    try:
        with (
            open(file, "rb") as f,
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
                disable=not err.is_terminal,
            ) as progress,
        ):
            # a closed file cut inside a line is `cut`: a live writer's has zeros after it
            ended = ends_cut(f, data_end(f))
            report = verify_lines(
                _lines_with_progress(f, progress),
                str(file),
                anchor=anchor,
                note=wanted_seqs(signed.envelopes),
                ended=ended,
            )
    except OSError as exc:
        raise _unreadable(file, exc) from None
    newest = None
    if signed.key is None:
        # Nothing can be checked without the key, but a checkpoints file that cannot even be
        # decoded is not evidence of anything: it fails, never an INTACT beside it.
        undecodable = [
            Problem(ProblemKind.CHECKPOINT_INVALID, report.lines, None, e)
            for e in signed.envelopes
            if isinstance(e, str)
        ]
        if undecodable:
            problems = sorted((*report.problems, *undecodable), key=lambda p: p.line)
            report = msgspec.structs.replace(report, problems=tuple(problems))
    else:
        found, newest = check_checkpoints(
            report, report.noted, signed.envelopes, signed.key, file.name
        )
        if newest is None:
            found.append(
                Problem(
                    ProblemKind.CHECKPOINT_MISSING,
                    report.lines,
                    None,
                    f"no checkpoint signed by key {signed.key.key_id[:16]} for {file.name} "
                    f"(looked in: {', '.join(signed.sources) or 'nothing found'}): "
                    "a rewrite or an appended record could not be detected",
                )
            )
        if found:
            problems = sorted((*report.problems, *found), key=lambda p: p.line)
            report = msgspec.structs.replace(report, problems=tuple(problems))
    report = _printable(report)
    if as_json:
        console.print_json(msgspec.json.encode(report).decode())
    else:
        _print_report(report)
    if _unfinished_end(report):
        unsealed = (
            f"{report.unsealed} record(s) at the end are not sealed yet" if report.unsealed else ""
        )
        cut = any(p.kind is ProblemKind.TRUNCATED for p in report.problems)
        torn = "its last line is cut short" if cut else ""
        err.print(
            f"[yellow]{'; '.join(x for x in (unsealed, torn) if x)}: a recorder is writing "
            "this file, or crashed (reopening it seals the records and cuts the torn line); "
            "nothing before that end was found altered, but the end is not proven "
            "(verify again once sealed, or give --anchor or checkpoints)[/yellow]"
        )
    if report.intact and report.records == 0:
        # an empty file proves nothing: a fully truncated record looks exactly like this
        err.print("[red]no records: nothing was verified (a truncated file looks like this)[/red]")
        raise typer.Exit(EXIT_TAMPERED)
    if not as_json:
        _print_coverage(report, signed, newest, anchor)
    raise typer.Exit(EXIT_INTACT if report.intact else EXIT_TAMPERED)


def _plane_urls(nats_url: str | None) -> list[str]:
    """`--nats-url`'s servers, checked before anything is read ([] when not given). Given
    empty (`--nats-url "$NATS_URL"`, the variable unset) it asked for the control plane's
    checkpoint and key: that check was skipped without a word, and the chain alone was
    reported INTACT."""
    if nats_url is None:
        return []
    from knightwatch.cli.fleet import _urls  # only here: it loads the fleet commands

    try:
        urls = _urls(nats_url)
        if not urls:
            raise OptionError(
                f"--nats-url: no server URL in {quoted(nats_url)} (an unset shell variable?); "
                "leave the option out to verify without the control plane"
            )
    except KnightwatchError as exc:
        err.print(f"[red]error:[/red] {_safe(_shown(str(exc)))}")
        raise typer.Exit(EXIT_UNREADABLE) from None
    return urls


def _unfinished_end(report: VerifyReport) -> bool:
    """Is every problem what a recorder still writing the file (or one that crashed)
    leaves at its end: records not sealed yet, and a last line cut short mid-copy? Only a
    note for the first was printed, and a live file read mid-copy, its torn last line
    beside its unsealed records, was shown as a table of faults with no word of it."""
    return bool(report.problems) and all(
        p.kind is ProblemKind.UNSEALED
        or (p.kind is ProblemKind.TRUNCATED and p.line == report.lines)
        for p in report.problems
    )


class _Signed(msgspec.Struct, frozen=True):
    envelopes: list[Envelope | str]
    key: VerifyKey | None
    sources: list[str]


def _signed_checkpoints(
    file: Path,
    checkpoints: Path | None,
    key: Path | None,
    urls: list[str],
    node: str | None,
    identity: Path | None = None,
    trust_anchor: Path | None = None,
) -> _Signed:
    """Gather checkpoint envelopes (file beside FILE, control plane) and the node's key."""
    envelopes: list[Envelope | str] = []
    sources: list[str] = []
    verify_key: VerifyKey | None = None
    sidecar = checkpoints or file.with_name(file.name + SIDECAR_SUFFIX)
    try:
        if checkpoints is not None or sidecar.exists():
            read = read_sidecar(sidecar)
            envelopes += [e for e in read if isinstance(e, Envelope)]
            bad = [e for e in read if isinstance(e, str)]
            if bad:  # one problem naming the file, not one per line of a random file
                envelopes.append(
                    f"checkpoints {sidecar}: {len(bad)} line(s) cannot be decoded as signed "
                    f"checkpoints (first: {bad[0]})"
                )
            sources.append(str(sidecar))
        if key is not None:
            verify_key = load_verify_key(key)
    except OSError as exc:
        raise _unreadable(sidecar, exc) from None
    except ReleaseInputError as exc:
        # it quotes the operator's path: shown as written ("[/x]" is no markup), escaped
        err.print(f"[red]error:[/red] {_safe(_shown(str(exc)))}")
        raise typer.Exit(EXIT_UNREADABLE) from None
    if urls:
        node_id = node or _first_node(file)
        try:
            latest, enrolled = asyncio.run(_from_plane(urls, node_id, identity, trust_anchor))
        except (KnightwatchError, ValueError) as exc:
            why = str(exc)  # one naming its option already ("--trust-anchor: ...") keeps it
            named = why if why.startswith("--") else f"--nats-url: {why}"
            err.print(f"[red]error:[/red] {_safe(_shown(named))}")
            raise typer.Exit(EXIT_UNREADABLE) from None
        if latest is not None:
            envelopes.append(latest)
            sources.append(f"control plane (node {node_id})")
        if verify_key is None:
            verify_key = enrolled
    return _Signed(envelopes, verify_key, sources)


def _first_node(file: Path) -> str:
    try:
        with open(file, "rb") as f:
            end = data_end(f)
            f.seek(0)
            for line in read_lines(f, end=end):
                with contextlib.suppress(msgspec.DecodeError):
                    rec = decode_record(line)
                    if not isinstance(rec, Seal) and (node := rec.node):
                        return node
    except OSError as exc:
        raise _unreadable(file, exc) from None
    err.print("[red]error:[/red] --node: FILE names no node; give --node")
    raise typer.Exit(EXIT_UNREADABLE)


async def _from_plane(
    urls: list[str], node_id: str, identity: Path | None, trust_anchor: Path | None
) -> tuple[Envelope | str | None, VerifyKey]:
    """The node's latest checkpoint and its current enrolled key, from the verified roster."""
    if trust_anchor is None:
        raise ValueError("--trust-anchor: the fleet's trust anchor file is needed to read keys")
    store = TrustStore(load_anchor(trust_anchor))
    signer = load_signer(identity or default_key_path(), "unnamed")
    async with control_plane(urls, Path("."), "audit-verify", signer=signer) as plane:
        await sync_roster(plane, store)
        raw, _ = await plane.get_record(Bucket.CHECKPOINTS, node_id)
    roster = store.roster
    current = [m for m in roster.keys_of(node_id) if not m.revoked_ns] if roster else []
    found = roster.key(current[-1].key_id) if roster is not None and current else None
    if found is None:
        raise ValueError(
            f"node {node_id} is not enrolled on the roster (version {store.version}): "
            "no key to check its checkpoints"
        )
    verify_key = found[1]
    latest: Envelope | str | None = None
    if raw is not None:
        try:
            latest = decode_envelope(raw, source="control plane checkpoint")
        except ReleaseInputError as exc:
            latest = str(exc)
    return latest, verify_key


def _print_coverage(
    report: VerifyReport, signed: _Signed, newest: Checkpoint | None, anchor: str | None
) -> None:
    """Say what the verdict rests on: signed checkpoints, an anchor, or the chain alone."""
    if signed.envelopes and signed.key is None:
        err.print(
            f"note: {len(signed.envelopes)} checkpoint(s) in {', '.join(signed.sources)} were "
            "NOT checked: give --key (the node's enrolled public key) or --nats-url"
        )
    elif newest is not None:
        covered = f"signed checkpoint: seq {newest.seq} at {_ts(newest.at_ns)}"
        if newest.final:
            covered += " (final: the node closed the file there)"
        err.print(f"checkpoints: every record through seq {newest.seq} is vouched for ({covered})")
        if report.last_seq > newest.seq and not newest.final:
            err.print(
                f"note: records seq {newest.seq + 1}..{report.last_seq} come after the newest "
                "checkpoint and are not covered yet (the node signs every few seconds)"
            )
    if report.intact and anchor is None and newest is None:
        err.print(
            "note: without signed checkpoints or --anchor, records rewritten from some point "
            "on or cut from the end cannot be detected; keep the head hash "
            f"({report.head[:16]}...) elsewhere or check the node's checkpoints"
        )


def _print_report(report: VerifyReport) -> None:
    if report.intact:
        console.print(
            Panel(
                f"[bold green]INTACT[/bold green]  {report.records} records, "
                f"{report.seals} seals\nhead {report.head}",
                title=escape(f"audit verify {report.path}"),
            )
        )
        return
    table = Table(title=escape(f"audit verify {report.path}: TAMPERED"), title_style="bold red")
    table.add_column("line", justify="right")
    table.add_column("seq", justify="right")
    table.add_column("problem", style="red")
    table.add_column("detail")
    for p in report.problems[:SHOWN_PROBLEMS]:
        seq = "-" if p.seq is None else str(p.seq)
        table.add_row(str(p.line), seq, p.kind.value, escape(p.detail))
    console.print(table)
    if len(report.problems) > SHOWN_PROBLEMS:
        console.print(
            f"... and {len(report.problems) - SHOWN_PROBLEMS} more (--json lists them all)"
        )
    more = " (list capped)" if report.problems_capped else ""
    console.print(
        f"[bold red]{len(report.problems)} problem(s){more}[/bold red] in {report.lines} lines, "
        f"{report.records} records"
    )


@app.command("why")
def why_cmd(
    order_id: Annotated[str, typer.Argument(help="The client order id.")],
    file: FileArg,
) -> None:
    """Explain why an order was accepted or blocked; exit 1 if the chain is broken or the
    records used are not sealed yet.

    The hash chain is verified from the first line through the last record the
    explanation uses, and the result is printed with it; the rest of the file is verified
    too (a later fill or decision of the order, edited so it no longer names it, cannot be
    found by its id). Records not sealed yet at the file's end (a recorder writing it) are
    said to be so, not reported as tampering.
    """
    _regular(file)
    try:
        exp = explain_order(file, order_id)
    except OrderNotFound as exc:  # it quotes the order id given: shown, not read as markup
        err.print(f"[red]{escape(_shown(str(exc)))}[/red]")
        raise typer.Exit(1) from None
    except OSError as exc:
        raise _unreadable(file, exc) from None
    _print_explanation(exp)
    chain, whole = exp.chain, exp.file or exp.chain
    if chain.intact:
        console.print(
            f"[green]chain verified[/green]: lines 1-{chain.lines} ({chain.records} records) "
            f"are intact, through the last record used above (head {chain.head[:16]}...)"
        )
        if whole.intact:
            return
        if _unfinished_end(whole):  # a recorder writing the file: its newest records
            err.print(
                f"[yellow]note: lines {whole.problems[0].line}-{whole.lines} are not sealed "
                "yet, or their last is cut short (a recorder is writing the file, or "
                "crashed): the answer does not rest on them, but a fill or event of this "
                "order among them is not proven yet[/yellow]"
            )
            return
        # A record after those used, edited so it no longer names the order (a fill, a
        # later decision), cannot be found by its id: the answer's "none" is not proven.
        later = next(p for p in whole.problems if p.kind is not ProblemKind.UNSEALED)
        err.print(
            f"[bold red]CHAIN BROKEN[/bold red] after the records used: "
            f"{len(whole.problems)} problem(s) in the file, first at line {later.line}: "
            f"{later.kind.value}: {escape(_shown(later.detail))}; a later decision, fill or "
            "event of this order may have been altered or removed there (run "
            "`knightwatch audit verify`)"
        )
        raise typer.Exit(EXIT_TAMPERED)
    first = chain.problems[0]
    if _unfinished_end(chain) and _unfinished_end(whole):
        # a recorder still writing the file (or crashed): not tampering, but not proven
        before = f"lines 1-{first.line - 1} were found intact, but " if first.line > 1 else ""
        err.print(
            f"[yellow]NOT SEALED YET[/yellow]: lines {first.line}-{chain.lines}, records "
            "used above among them, are not sealed yet (a recorder is writing this file, or "
            f"crashed; reopening it seals them); {before}the answer is not proven until they "
            "are sealed (ask again then)"
        )
        raise typer.Exit(EXIT_TAMPERED)
    err.print(
        f"[bold red]CHAIN BROKEN[/bold red] in lines 1-{chain.lines}: {len(chain.problems)} "
        f"problem(s), first at line {first.line}: {first.kind.value}: "
        f"{escape(_shown(first.detail))}; the records above cannot be trusted (run "
        "`knightwatch audit verify`)"
    )
    raise typer.Exit(EXIT_TAMPERED)


def _ctx(rec: DecisionRecord | EventRecord) -> str:
    return (
        f"node {rec.node}, release {rec.release_id or '-'}, "
        f"flag snapshot {rec.flag_snapshot_id or '-'}, limits {rec.limits_version or '-'}"
    )


def _print_explanation(exp: Explanation) -> None:
    n = len(exp.decisions)
    if n > 1:  # a reused id (a duplicate, a restart): the later decisions are the answer too
        last = exp.decision
        console.print(
            f"[bold]{n} decisions[/bold] recorded for order {_safe(exp.order_id)}, in file "
            f"order; the latest (seq {last.seq}): "
            + ("[bold green]ACCEPTED[/]" if last.accepted else "[bold red]BLOCKED[/]")
            + f" {_safe(last.reason)}"
        )
    for i, d in enumerate(exp.decisions):
        verdict = "[bold green]ACCEPTED[/]" if d.accepted else "[bold red]BLOCKED[/]"
        price = "market" if d.price is None else f"@ {d.price:g}"
        body = Table.grid(padding=(0, 2))
        body.add_column(style="bold")
        body.add_column()
        body.add_row("verdict", verdict)
        # every string below is the file's: `escape`, so a record's text is shown, not
        # read as markup (a reason like "[/x]" would end the command with a traceback)
        body.add_row("reason", _safe(d.reason))
        body.add_row("detail", _safe(d.detail))
        body.add_row("order", _safe(f"{d.strategy} {d.side} {d.qty} {d.symbol} {price}"))
        body.add_row("parent", _safe(d.parent_id or "-"))
        body.add_row("node", _safe(d.node))
        body.add_row("release", _safe(d.release_id or "-"))
        body.add_row("flag snapshot", _safe(d.flag_snapshot_id or "-"))
        body.add_row("limits version", _safe(d.limits_version or "-"))
        body.add_row("rules evaluated", _safe(", ".join(d.rules) or "-"))
        body.add_row("time", _ts(d.ts))
        line = f"line {exp.decision_lines[i]}, " if i < len(exp.decision_lines) else ""
        body.add_row("record", f"{line}seq {d.seq}, {_sealed_by(exp, i, d)}")
        title = f"order {exp.order_id}" + (f": decision {i + 1} of {n}" if n > 1 else "")
        console.print(Panel(body, title=_safe(title)))
    if exp.controls:
        t = Table(title="control actions before the " + ("latest " if n > 1 else "") + "decision")
        for col in ("seq", "time", "action", "details"):
            t.add_column(col)
        for c in exp.controls:
            t.add_row(str(c.seq), _ts(c.ts), _safe(c.kind), _fields(c))
        console.print(t)
    if exp.events:
        t = Table(title="messages and order events")
        for col in ("seq", "time", "event", "details"):
            t.add_column(col)
        for e in exp.events:
            t.add_row(str(e.seq), _ts(e.ts), _safe(e.kind), _fields(e, skip=("order_id",)))
        console.print(t)
    if exp.fills:
        t = Table(title="fills")
        for col in ("seq", "time", "qty", "price", "details"):
            t.add_column(col)
        for fill in exp.fills:
            t.add_row(
                str(fill.seq),
                _ts(fill.ts),
                _safe(str(fill.data.get("qty", "-"))),
                _safe(str(fill.data.get("price", "-"))),
                _fields(fill, skip=("order_id", "qty", "price")),
            )
        console.print(t)
    else:
        console.print("fills: none recorded")


def _sealed_by(exp: Explanation, i: int, d: DecisionRecord) -> str:
    """The seal covering decision `i`, by its line (`decision_seals`): two lines of an
    edited file can share a seq, and the unsealed one was shown sealed by the other's."""
    seal = exp.decision_seals[i] if i < len(exp.decision_seals) else exp.seals.get(d.seq)
    if seal is None:
        return "[yellow]not sealed yet[/yellow] (a running or crashed recorder; reopen to seal)"
    return f"sealed by seq {seal.seq}, hash {seal.hash[:16]}…"


def _fields(rec: EventRecord, skip: tuple[str, ...] = ()) -> str:
    return _safe(", ".join(f"{k}={v}" for k, v in rec.data.items() if k not in skip))


@app.command("tail")
def tail_cmd(
    file: FileArg,
    n: Annotated[int, typer.Option("-n", "--lines", min=1, help="How many records.")] = 20,
) -> None:
    """Show the last N records."""
    _regular(file)
    try:
        lines = last_lines(file, n)
    except OSError as exc:
        raise _unreadable(file, exc) from None
    table = Table(title=escape(f"last {len(lines)} records of {_shown(file)}"))
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("time", no_wrap=True)
    for col in ("kind", "node", "summary"):
        table.add_column(col)
    for line in lines:
        if len(line) > MAX_LINE_BYTES:  # cut by last_lines: no record is this long
            why = f"line longer than {MAX_LINE_BYTES} bytes"
            table.add_row("?", "", "[red]unreadable[/red]", "", why)
            continue
        try:
            rec = decode_record(line)
        except msgspec.DecodeError:
            shown = _safe(line[:60].decode(errors="replace"))
            table.add_row("?", "", "[red]unreadable[/red]", "", shown)
            continue
        if isinstance(rec, DecisionRecord):
            verdict = "accepted" if rec.accepted else f"[red]blocked {_safe(rec.reason)}[/red]"
            summary = f"{_safe(f'{rec.order_id} {rec.side} {rec.qty} {rec.symbol}')}: {verdict}"
        elif isinstance(rec, Seal):
            table.add_row(str(rec.seq), _ts(rec.ts), _safe(rec.kind), "", _seal_summary(rec))
            continue
        else:
            summary = _fields(rec)
        table.add_row(str(rec.seq), _ts(rec.ts), _safe(rec.kind), _safe(rec.node), summary)
    console.print(table)


def _seal_summary(seal: Seal) -> str:
    return f"{seal.records} record(s) sealed, hash {seal.hash[:16]}…"
