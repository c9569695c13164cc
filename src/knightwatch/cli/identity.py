"""`knightwatch identity ...`: people's keys and the roster, changed by a threshold of admins.

A person creates their own key (`identity new`, written 0600; the private key
never leaves their machine) and hands an admin the public half. A roster
change (add, revoke, rotate) is a proposal file: the next roster version,
signed by the admin who wrote it; every other admin adds their signature on
their own machine (`identity sign FILE`), and `identity publish FILE` stores
it once the roster's admin threshold has signed. Every process follows the
stored versions as they appear (nodes, the supervisor, the admission service,
the embedded server's users), so nothing restarts. Publishing is refused
while a fleet or strategy kill is in force if the version enrols a new node,
since a new node adds risk. A change that would leave nobody able to kill (revoking the
last operator or supervisor key) is refused before it is signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import stat
import time
from pathlib import Path

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from knightwatch.cli.fleet import (
    AnchorOpt,
    KeyOpt,
    NatsUrl,
    StateDir,
    _run,
    session,
    write_approval,
)
from knightwatch.cli.options import nonempty_path, when
from knightwatch.control.fleet.freeze import refuse_if_frozen
from knightwatch.control.plane.protocol import RevisionConflict
from knightwatch.control.plane.rosters import publish_roster
from knightwatch.errors import quoted
from knightwatch.inputs import JSON_MAX_BYTES, NAME_RULE, check_json_depth, is_name, read_bytes
from knightwatch.release.dsse import Envelope, encode_envelope
from knightwatch.release.keys import load_verify_key, write_key_pair
from knightwatch.trust.command import TrustReason
from knightwatch.trust.identity import Signer, default_key_path
from knightwatch.trust.kit import member_of_public
from knightwatch.trust.roster import (
    Member,
    Role,
    Roster,
    TrustError,
    admin_names,
    check_stop_kept,
    decode_roster,
    fleet_mismatch,
    granted,
    roster_envelope,
    sign_roster,
    signer_names,
)
from knightwatch.trust.store import TrustStore, decode_stored

console = Console()
app = typer.Typer(
    help="People's keys and the roster: create a key, show, add, revoke, rotate (admins sign).",
    no_args_is_help=True,
)

RoleOpt = typer.Option(
    ..., "--role", help="a role (repeat): viewer, operator, approver, admin, supervisor, node, ..."
)
OutOpt = typer.Option(..., "--out", help="where to write the proposal (the next roster version)")


def _now_ns() -> int:
    return time.time_ns()


def _roles(names: list[str]) -> tuple[Role, ...]:
    out = []
    for name in names:
        try:
            out.append(Role(name))
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise TrustError(f"--role {name!r}: not a role (one of {known})") from None
    return tuple(dict.fromkeys(out))


def _require_admin(store: TrustStore, signer: Signer) -> Roster:
    roster = store.roster
    if roster is None:
        raise TrustError("no verified roster yet: nothing to change")
    if not roster.has_role(signer.name, Role.ADMIN):
        raise TrustError(f"--key: {signer.name} is not an admin; only admins sign roster versions")
    return roster


def _check_out(out: Path) -> None:
    """Refuse an `--out` the proposal cannot be written to, before connecting: a missing
    directory was `[Errno 2] No such file or directory` after the roster was read and the
    version signed, naming no option."""
    if out.exists() or out.is_symlink():
        raise TrustError(f"--out {out}: already exists; refusing to overwrite")
    if not out.parent.is_dir():
        raise TrustError(f"--out {out}: {out.parent} is not a directory")


def _propose(
    roster: Roster, members: list[Member], signer: Signer, out: Path, *, fleet: str | None = None
) -> Roster:
    """The next version with `members`, signed by `signer`, written to `out` (never over a
    file that exists). It keeps the roster's fleet name (`fleet`: the name an unnamed fleet
    takes, `identity name`): before, every proposal left the name out, and a named fleet
    refused each of them at publish (a fleet's roster keeps its name)."""
    proposal = Roster(  # built, not replaced: the roster's own rules are checked here
        version=roster.version + 1,
        issued_ns=max(_now_ns(), roster.issued_ns + 1),
        members=tuple(members),
        admin_threshold=roster.admin_threshold,
        approvals=roster.approvals,
        fleet=roster.fleet if fleet is None else fleet,
    )
    check_stop_kept(roster, proposal)  # refused before it is signed, not at publish
    envelope = sign_roster(roster_envelope(proposal), signer.key)
    write_approval(out, encode_envelope(envelope))  # whole or not at all, never over a file
    needed = roster.admin_threshold
    if needed < 2 and len(admin_names(roster)) >= 2 and granted(roster, proposal):
        needed = 2  # a version that gives power takes two admins where there are two
    console.print(  # a path as given ("[/x].json"): shown, never read as markup
        escape(
            f"roster version {proposal.version} proposed in {out}, signed by {signer.name}; "
            f"{needed} admin signature(s) needed: the others run "
            f"`knightwatch identity sign {out}`, then `knightwatch identity publish {out}`"
        ),
        highlight=False,
    )
    return proposal


def _read_proposal(path: Path) -> Envelope:
    """A proposal file (bounded read): a DSSE envelope holding a roster, or TrustError
    naming the file."""
    data = read_bytes(path, "roster proposal", JSON_MAX_BYTES)
    check_json_depth(data, f"roster proposal {path}")
    try:
        envelope = decode_stored(data)
        decode_roster(envelope)
    except TrustError as exc:
        raise TrustError(f"roster proposal {path}: {exc}") from None
    return envelope


def revoked_members(members: tuple[Member, ...], name: str, now: int) -> list[Member]:
    """The members with every key of `name` revoked at `now` at the latest. A key whose
    own revocation lies later (a roster built by other tooling) is revoked now too:
    before, its later date was kept, and the key stayed valid until then."""
    return [
        msgspec.structs.replace(m, revoked_ns=min(m.revoked_ns, now) if m.revoked_ns else now)
        if m.name == name
        else m
        for m in members
    ]


def rotated_members(members: tuple[Member, ...], new_key: Member, now: int) -> list[Member]:
    """The members with `new_key` added and every key of its holder still valid at `now`
    ending then. A key with a later end of its own (a roster built by other tooling) ends
    now too: before, it was left valid beside the new key."""
    name = new_key.name
    out = [
        msgspec.structs.replace(m, valid_until_ns=now)
        if m.name == name and (m.valid_until_ns == 0 or m.valid_until_ns > now)
        else m
        for m in members
    ]
    out.append(new_key)
    return out


def _names(roster: Roster, name: str) -> list[Member]:
    found = roster.keys_of(name)
    if not found:
        raise TrustError(f"NAME {name!r}: not on the roster (version {roster.version})")
    return found


@app.command("new")
def new(
    name: str = typer.Argument(..., help="your name on the roster (the key file's stem)"),
    out: Path | None = typer.Option(
        None,
        "--dir",
        help="directory for NAME.key and NAME.pub (default ~/.knightwatch)",
        parser=nonempty_path,  # `--dir "$DIR"` with DIR unset: not the directory it ran in
    ),
) -> None:
    """Create your key: NAME.key (0600, stays on this machine) and NAME.pub (give it to an
    admin). Never overwrites a key."""
    directory = out if out is not None else default_key_path().parent

    async def go() -> tuple[str, Path, Path]:
        if not is_name(name):  # the roster would refuse it: no key under a name it cannot hold
            raise TrustError(f"NAME: a roster name must be {NAME_RULE} (got {quoted(name)})")
        key, private, public = write_key_pair(directory, name)
        return key.key_id, private, public

    key_id, private, public = _run(go)
    console.print(
        escape(
            f"key {key_id[:16]} for {name}: private {private} (0600), public {public}; "
            f"use it with --key {private} or KNIGHTWATCH_KEY"
        ),
        highlight=False,
    )


@app.command("show")
def show(
    proposal: Path | None = typer.Option(None, "--proposal", help="show a proposal file instead"),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """The verified roster in force (or a proposal): who, key, roles, validity, revocation."""

    async def go() -> tuple[Roster, list[str], list[str]]:
        envelope = _read_proposal(proposal) if proposal is not None else None
        async with session(nats_url, state_dir, "identity", key, anchor) as (_, _signer, store):
            if store.roster is None:
                raise TrustError("no verified roster")
            if envelope is None:
                return store.roster, [], store.refused
            signed = signer_names(envelope, store.roster.admins(decode_roster(envelope).issued_ns))
            return decode_roster(envelope), signed, []

    roster, signed, refused = _run(go)
    title = f"roster version {roster.version} (issued {when(roster.issued_ns)} UTC)"
    if proposal is not None:
        title = f"PROPOSED {title}, signed by {', '.join(signed) or 'nobody'}"
    table = Table(title=escape(title), highlight=False)
    for col in ("name", "key", "roles", "valid from", "valid until", "revoked"):
        table.add_column(col)
    for m in sorted(roster.members, key=lambda m: (m.name, m.valid_from_ns)):
        table.add_row(
            escape(m.name),
            m.key_id[:16],
            ", ".join(r.value for r in m.roles),
            when(m.valid_from_ns),
            when(m.valid_until_ns),
            f"[red]{when(m.revoked_ns)}[/red]" if m.revoked_ns else "-",
        )
    console.print(table)
    console.print(  # a name by the name rule: plain text, nothing to escape
        f"fleet {roster.fleet}"
        if roster.fleet
        else "fleet not named (`knightwatch identity name FLEET` names it)",
        highlight=False,
    )
    console.print(
        f"admin threshold {roster.admin_threshold}; resume needs a second person: "
        f"{roster.approvals.resume.value}",
        highlight=False,
    )
    for line in refused:  # the refused version's own text, quoted in the error: escaped
        console.print(f"[red]{escape(line)}[/red]", highlight=False)


@app.command("add")
def add(
    name: str = typer.Argument(..., help="the person or component to enrol"),
    public: Path = typer.Option(..., "--public", help="their public key (NAME.pub)"),
    role: list[str] = RoleOpt,
    out: Path = OutOpt,
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Propose a version that enrols NAME with --public and --role (a second key for a name
    already there keeps that name's roles)."""

    async def go() -> None:
        roles = _roles(role)
        verify = load_verify_key(public)
        _check_out(out)
        async with session(nats_url, state_dir, "identity", key, anchor) as (_, signer, store):
            roster = _require_admin(store, signer)
            if roster.member(verify.key_id) is not None:
                raise TrustError(f"--public {public}: key {verify.key_id[:16]} is already enrolled")
            _propose(roster, [*roster.members, member_of_public(name, verify, roles)], signer, out)

    _run(go)


@app.command("name")
def name_fleet(
    fleet: str = typer.Argument(
        ..., help=f"the fleet's name, e.g. prod-ldn or staging ({NAME_RULE})"
    ),
    out: Path = OutOpt,
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Propose the version naming this fleet FLEET, once: every later version keeps the
    name. Approvals, target requests and resumes then count only if made for FLEET (those
    made before, or for another fleet whose roster holds the same people, are refused:
    wrong_fleet). Kills are never checked for their fleet."""

    async def go() -> None:
        if not is_name(fleet):  # the roster would refuse it: said before connecting
            raise TrustError(f"FLEET: a fleet name must be {NAME_RULE} (got {quoted(fleet)})")
        _check_out(out)
        async with session(nats_url, state_dir, "identity", key, anchor) as (_, signer, store):
            roster = _require_admin(store, signer)
            if roster.fleet:
                raise TrustError(
                    f"FLEET: this fleet is named {roster.fleet!r} already (roster version "
                    f"{roster.version}); a fleet's roster keeps its name (re-anchor to rename)"
                )
            _propose(roster, list(roster.members), signer, out, fleet=fleet)
        console.print(
            "once published, approvals, target requests and resume requests made before it "
            "name no fleet and are refused (wrong_fleet): ask for new ones",
            highlight=False,
        )

    _run(go)


@app.command("revoke")
def revoke(
    name: str = typer.Argument(..., help="whose keys to revoke (every key of that name)"),
    out: Path = OutOpt,
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Propose a version revoking NAME now: nothing it signs from then on counts."""

    async def go() -> None:
        _check_out(out)
        async with session(nats_url, state_dir, "identity", key, anchor) as (_, signer, store):
            roster = _require_admin(store, signer)
            _names(roster, name)
            _propose(roster, revoked_members(roster.members, name, _now_ns()), signer, out)

    _run(go)


@app.command("rotate")
def rotate(
    name: str = typer.Argument(..., help="whose key to replace"),
    public: Path = typer.Option(..., "--public", help="the new public key (NAME.pub)"),
    out: Path = OutOpt,
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Propose a version where NAME's new key takes over: the old keys stop being valid at
    the version's instant, the roles stay."""

    async def go() -> None:
        verify = load_verify_key(public)
        _check_out(out)
        async with session(nats_url, state_dir, "identity", key, anchor) as (_, signer, store):
            roster = _require_admin(store, signer)
            old = _names(roster, name)
            if roster.member(verify.key_id) is not None:
                raise TrustError(f"--public {public}: key {verify.key_id[:16]} is already enrolled")
            new_key = member_of_public(name, verify, old[0].roles, valid_from_ns=0)
            _propose(roster, rotated_members(roster.members, new_key, _now_ns()), signer, out)

    _run(go)


def _replace_proposal(proposal: Path, data: bytes) -> None:
    """Put `data` in place of the proposal file, whole or not at all: written to a new file
    beside it (0600 until it takes the original's mode), fsynced, renamed over it. Written
    in place, a write that failed partway (a full disk, a file size limit) left a cut file:
    the other admins' signatures were lost with it."""
    target = proposal.resolve() if proposal.is_symlink() else proposal  # the file, not a link
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
        fd = os.open(tmp, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise TrustError(
            f"{proposal}: cannot write the signed proposal: {exc.strerror or exc}; "
            "the file is unchanged"
        ) from None


@app.command("sign")
def sign(
    proposal: Path = typer.Argument(..., help="a proposal file another admin wrote"),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Add your signature (an admin) to a proposal, after reading it (`show --proposal`).
    Refused (wrong_fleet) for a proposal that names another fleet than the roster in force
    here, or none on a named fleet: the same admins may sign for staging and production,
    and a production version signed "for staging" counted in production."""

    async def go() -> str:
        envelope = _read_proposal(proposal)
        async with session(nats_url, state_dir, "identity", key, anchor) as (_, signer, store):
            roster = _require_admin(store, signer)
            proposed = decode_roster(envelope)
            if proposed.version != roster.version + 1:
                raise TrustError(
                    f"{proposal}: version {proposed.version} does not follow the roster in "
                    f"force (version {roster.version}); it is stale, propose it again"
                )
            if roster.fleet:  # an unnamed fleet's next version may name it (`identity name`)
                wrong_fleet = fleet_mismatch("roster proposal", proposed.fleet, roster)
                if wrong_fleet is not None:
                    raise TrustError(
                        f"{proposal}: {TrustReason.WRONG_FLEET.value}: {wrong_fleet}; not signed"
                    )
            signed = sign_roster(envelope, signer.key)
            _replace_proposal(proposal, encode_envelope(signed))
            names = ", ".join(signer_names(signed, roster.admins(proposed.issued_ns)))
            if not proposed.fleet:
                fleet = "a fleet not named"
            elif not roster.fleet:
                fleet = f"naming this fleet {proposed.fleet}"  # read it: the name stays
            else:
                fleet = f"fleet {proposed.fleet}"
            return f"signed by {names} (roster version {proposed.version}, {fleet})"

    said = _run(go)
    console.print(escape(f"{proposal}: {said}"), highlight=False)


IN_FORCE_WAIT_S = 10.0
"""How long `publish` waits to hear the version it stored come back as the one in force."""


async def _in_force(store: TrustStore, published: Roster, proposal: Path) -> None:
    """That the version `publish` stored in its admin's slot is the one in force: another
    admin's record of the same version stored before it is read first by every process
    (`rosters.stored_rosters`), and then this one never takes effect. TrustError, one line,
    if another is in force or it is not heard within `IN_FORCE_WAIT_S` (the session's
    store follows the roster live)."""
    deadline = time.monotonic() + IN_FORCE_WAIT_S
    while store.version < published.version:
        if time.monotonic() > deadline:
            raise TrustError(
                f"{proposal}: version {published.version} stored, but not heard back as the "
                f"roster in force within {IN_FORCE_WAIT_S:g} s (still version "
                f"{store.version}); check `knightwatch identity show` before acting on it"
            )
        await asyncio.sleep(0.05)
    if store.version == published.version and store.roster != published:
        raise TrustError(
            f"{proposal}: another version {published.version} was stored before it and is the "
            "one in force; propose again on the roster in force"
        )


@app.command("publish")
def publish(
    proposal: Path = typer.Argument(..., help="a proposal signed by the admin threshold"),
    key: Path | None = KeyOpt,
    anchor: Path | None = AnchorOpt,
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Store a fully signed proposal as the next roster version; every process follows it
    without a restart. Refused if it does not verify, is stale, or (while a kill is in
    force) enrols a new node."""

    async def go() -> Roster:
        envelope = _read_proposal(proposal)
        async with session(nats_url, state_dir, "identity", key, anchor) as (plane, signer, store):
            current = _require_admin(store, signer)
            trial = TrustStore.of(store.anchor)
            trial.roster = current
            try:
                accepted = trial.accept(envelope, received_ns=time.time_ns())
            except TrustError as exc:
                raise TrustError(f"{proposal}: {exc}") from None
            new_nodes = set(accepted.names_with(Role.NODE)) - set(current.names_with(Role.NODE))
            if new_nodes:
                await refuse_if_frozen(
                    plane, f"enrolment of node(s) {', '.join(sorted(new_nodes))}", store
                )
            try:
                await publish_roster(plane, envelope, publisher=signer.key.key_id)
            except RevisionConflict:
                raise TrustError(
                    f"{proposal}: this key's slot of version {accepted.version} holds a record "
                    "already (published before); propose again on the roster in force"
                ) from None
            await _in_force(store, accepted, proposal)
            return accepted

    roster = _run(go)
    console.print(
        f"roster version {roster.version} published: {len(roster.members)} key(s); nodes, "
        "services and the server follow it without a restart",
        highlight=False,
    )


__all__ = ["app"]
