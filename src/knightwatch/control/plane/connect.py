"""Connecting to the control plane: the URL given, the one `knightwatch up` recorded, or a new one.

Every process (nodes, the supervisor, operators' commands, the drill) connects
the same way, so a command that cannot reach the server fails fast with the
same message everywhere, and only processes that may embed a server do.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import (
    Bucket,
    ControlPlane,
    ControlPlaneUnavailable,
    Record,
    RevisionConflict,
)
from knightwatch.control.plane.rosters import parse_stored, publish_roster, stored_rosters
from knightwatch.control.plane.server import EmbeddedNatsServer
from knightwatch.errors import KnightwatchError
from knightwatch.release.dsse import Envelope
from knightwatch.release.signing import TrustPolicy
from knightwatch.trust.identity import Signer
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import TrustError, decode_roster
from knightwatch.trust.store import TrustStore

log = logging.getLogger(__name__)

URL_FILE = "nats.url"
_RELOAD_WAIT_S = 5.0
"""How long a start waits for its server to serve the stored roster's users."""


class FleetError(KnightwatchError, RuntimeError):
    """A fleet operation that cannot proceed; the message names what to fix."""


Amend = Callable[[Kit, list[Envelope]], None]
"""Given a kit and the roster history its server holds: takes it in, adds to it (`store_roster`)."""


def recorded_url(state_dir: Path) -> list[str]:
    """The server URL(s) `knightwatch up` (or an embedding node) wrote into the state dir."""
    path = state_dir / URL_FILE
    if not path.exists():
        return []
    return [u for u in path.read_text().split() if u]


@contextlib.asynccontextmanager
async def control_plane(
    urls: list[str],
    state_dir: Path,
    name: str,
    *,
    signer: Signer,
    replicas: int = 1,
    embed: Kit | None = None,
    amend: Amend | None = None,
) -> AsyncIterator[NatsControlPlane]:
    """A connected plane as `signer`: to `urls`, else to the state dir's server, else (given
    `embed`, the fleet's identities) a new one with their authorization, provisioned and
    holding their roster.

    `amend` (with `embed`, a local fleet's own): given the kit and the roster history the
    server holds, verified from the kit's anchor, before the kit's versions are stored
    (`store_roster`); on a server reached by URL they are stored as the kit's first admin.

    An embedded server is stopped, and its URL file removed, on exit; while it
    runs it serves every new roster version's users without a restart.
    """
    server: EmbeddedNatsServer | None = None
    targets = urls or recorded_url(state_dir)
    plane: NatsControlPlane | None = None
    if targets:
        plane = NatsControlPlane(targets, name=name, replicas=replicas, signer=signer)
        try:
            await plane.connect()
        except ControlPlaneUnavailable:
            if urls or not embed:
                raise
            plane = None
        if plane is not None and embed is not None and amend is not None:
            try:
                await _amended_as_admin(targets, name, embed, amend, replicas)
            except BaseException:
                await plane.close()
                raise
    if plane is None:
        if embed is None:
            raise FleetError(
                f"no control plane: pass --nats-url, or start one with `knightwatch up` "
                f"(looked for {state_dir / URL_FILE})"
            )
        server = EmbeddedNatsServer(state_dir / "nats", roster=embed.roster)
        url = server.start()
        (state_dir / URL_FILE).write_text(url + "\n")
        started = embed.roster
        try:  # a start that fails leaves no server running (nor its URL recorded)
            await provision(url, server.provisioner, embed, replicas=replicas, amend=amend)
            if embed.roster is not started:  # its users served before anyone logs in as one
                await asyncio.to_thread(server.reload, embed.roster, _RELOAD_WAIT_S)
            plane = NatsControlPlane(url, name=name, replicas=replicas, signer=signer)
            await plane.connect()
            await serve_roster_changes(plane, server, TrustStore.of(embed.anchor, *embed.envelopes))
        except BaseException:
            if plane is not None:
                await plane.close()
            with contextlib.suppress(FileNotFoundError):
                (state_dir / URL_FILE).unlink()
            server.stop()
            raise
    try:
        yield plane
    finally:
        await plane.close()
        if server is not None:
            with contextlib.suppress(FileNotFoundError):
                (state_dir / URL_FILE).unlink()
            server.stop()


async def provision(
    urls: str | list[str],
    provisioner: Signer,
    kit: Kit,
    *,
    replicas: int = 1,
    amend: Amend | None = None,
) -> None:
    """Create the buckets and streams and store the roster versions not stored yet
    (`store_roster`)."""
    plane = NatsControlPlane(urls, name="provisioner", replicas=replicas, signer=provisioner,
                             provision=True)  # fmt: skip
    await plane.connect()
    try:
        await store_roster(plane, kit, amend)
    finally:
        await plane.close()


async def _amended_as_admin(
    urls: list[str], name: str, kit: Kit, amend: Amend, replicas: int
) -> None:
    """`store_roster` on a server reached by URL, as the kit's first admin whose key it holds
    (the admins alone may store a roster version there)."""
    admin = next((n for n in kit.admin_names if n in kit.signers), None)
    if admin is None:
        raise FleetError(f"roster version {kit.roster.version}: no admin key to store it with")
    signer = kit.signer(admin)
    plane = NatsControlPlane(urls, name=f"{name}-roster", replicas=replicas, signer=signer)
    await plane.connect()
    try:
        await store_roster(plane, kit, amend, publisher=signer.key.key_id)
    finally:
        await plane.close()


async def stored_history(plane: ControlPlane, anchor: TrustPolicy) -> list[Envelope]:
    """The roster versions the store holds that verify from `anchor` (version 1 on, the
    first record of each that verifies, each judged when the server wrote it, as every
    follower judges them: `rosters.stored_rosters`)."""
    store = TrustStore(anchor)
    records = await stored_rosters(plane)
    return store.follow_records(records, stamped=plane.keeps_write_times)


async def store_roster(
    plane: ControlPlane, kit: Kit, amend: Amend | None = None, *, publisher: str | None = None
) -> None:
    """Store the kit's roster versions the server does not hold, on top of the ones it does.

    The stored versions that verify from the kit's anchor are its history: `amend` takes
    them into the kit first (a local fleet's admins may have published versions since its
    files were written); each of the kit's versions that the history holds must be the same
    one, and those after it must verify on top of it: a version of the kit's own numbered
    like a stored one was skipped, and the roster in force never held what it added (nodes
    of a bigger local fleet never admitted). Stored under each version's key, or in the
    `publisher` admin's own slot (`rosters.publish_roster`). FleetError, one line, naming
    the version."""
    history = await stored_history(plane, kit.anchor)
    if amend is not None:
        amend(kit, history)
    for version, (mine, theirs) in enumerate(zip(kit.envelopes, history, strict=False), 1):
        if mine.payload != theirs.payload:
            raise FleetError(
                f"roster version {version}: the one to store ({describe_version(mine)}) is "
                f"not the one the server holds ({describe_version(theirs)})"
            )
    trial = TrustStore.of(kit.anchor, *history)
    for envelope in kit.envelopes[len(history) :]:
        version = decode_roster(envelope).version
        try:
            trial.accept(envelope, received_ns=time.time_ns())
        except TrustError as exc:
            raise FleetError(f"roster version {version}: not stored: {exc}") from None
        try:
            await publish_roster(plane, envelope, publisher=publisher)
        except RevisionConflict:
            raise FleetError(
                f"roster version {version}: the server holds a record of it that does not "
                "verify from the anchor; not stored over it"
            ) from None


def describe_version(envelope: Envelope) -> str:
    """A roster version in a few words: when issued, its keys, its payload's digest."""
    roster = decode_roster(envelope)
    when = datetime.datetime.fromtimestamp(roster.issued_ns / 1e9, datetime.UTC)
    digest = hashlib.sha256(envelope.payload.encode()).hexdigest()[:12]
    return f"issued {when:%Y-%m-%d %H:%M:%S} UTC, {len(roster.members)} keys, sha256 {digest}"


async def serve_roster_changes(
    plane: NatsControlPlane, server: EmbeddedNatsServer, store: TrustStore
) -> None:
    """Reload the server's users whenever a new roster version verifies (rotation, revocation),
    starting with the versions already stored.

    The embedding process starts its server with its own copy of the roster, which can
    predate versions the admins stored since (`identity publish` writes only the bucket): a
    key those revoked would log in again, with its permissions, until the next version.
    The stored versions are followed (each judged when the server wrote it) once the
    subscription is up, and the server waits until it serves them."""

    async def on_record(record: Record) -> None:
        parsed = parse_stored(record.key, record.value)
        if parsed is None:
            return
        moved = store.follow({parsed[0]: parsed[1]}, received_ns=time.time_ns())
        if moved and store.roster is not None:
            server.reload(store.roster)
            log.warning("nats-server: roster version %d served", store.version)

    await plane.subscribe_records(Bucket.ROSTER, on_record)
    records = await stored_rosters(plane, after=store.version)
    moved = bool(store.follow_records(records, stamped=plane.keeps_write_times))
    if moved and store.roster is not None:
        await asyncio.to_thread(server.reload, store.roster, _RELOAD_WAIT_S)
        log.warning("nats-server: stored roster version %d served", store.version)
