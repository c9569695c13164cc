"""Connecting to the control plane: the URL given, the one `knightwatch up` recorded, or a new one.

Every process (nodes, the supervisor, operators' commands, the drill) connects
the same way, so a command that cannot reach the server fails fast with the
same message everywhere, and only processes that may embed a server do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import ABSENT, Bucket, ControlPlaneUnavailable, Record
from knightwatch.control.plane.server import EmbeddedNatsServer
from knightwatch.errors import KnightwatchError
from knightwatch.release.dsse import Envelope, encode_envelope
from knightwatch.trust.identity import Signer
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import TrustError, decode_roster
from knightwatch.trust.store import TrustStore, decode_stored

log = logging.getLogger(__name__)

URL_FILE = "nats.url"
_RELOAD_WAIT_S = 5.0
"""How long a start waits for its server to serve the stored roster's users."""


class FleetError(KnightwatchError, RuntimeError):
    """A fleet operation that cannot proceed; the message names what to fix."""


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
) -> AsyncIterator[NatsControlPlane]:
    """A connected plane as `signer`: to `urls`, else to the state dir's server, else (given
    `embed`, the fleet's identities) a new one with their authorization, provisioned and
    holding their roster.

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
    if plane is None:
        if embed is None:
            raise FleetError(
                f"no control plane: pass --nats-url, or start one with `knightwatch up` "
                f"(looked for {state_dir / URL_FILE})"
            )
        server = EmbeddedNatsServer(state_dir / "nats", roster=embed.roster)
        url = server.start()
        (state_dir / URL_FILE).write_text(url + "\n")
        await provision(url, server.provisioner, embed, replicas=replicas)
        plane = NatsControlPlane(url, name=name, replicas=replicas, signer=signer)
        await plane.connect()
        await serve_roster_changes(plane, server, TrustStore.of(embed.anchor, *embed.envelopes))
    try:
        yield plane
    finally:
        await plane.close()
        if server is not None:
            with contextlib.suppress(FileNotFoundError):
                (state_dir / URL_FILE).unlink()
            server.stop()


async def provision(
    urls: str | list[str], provisioner: Signer, kit: Kit, *, replicas: int = 1
) -> None:
    """Create the buckets and streams and store the roster versions not stored yet."""
    plane = NatsControlPlane(urls, name="provisioner", replicas=replicas, signer=provisioner,
                             provision=True)  # fmt: skip
    await plane.connect()
    try:
        stored = await plane.records(Bucket.ROSTER)
        for envelope in kit.envelopes:
            key = f"v{decode_roster(envelope).version:06d}"
            if key not in stored:
                await plane.put_record(
                    Bucket.ROSTER, key, encode_envelope(envelope), expected_revision=ABSENT
                )
    finally:
        await plane.close()


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
        try:
            version = int(record.key[1:])
            moved = store.follow({version: decode_stored(record.value)}, received_ns=time.time_ns())
        except (ValueError, TrustError) as exc:
            log.error("roster record %s ignored: %s", record.key, exc)
            return
        if moved and store.roster is not None:
            server.reload(store.roster)
            log.warning("nats-server: roster version %d served", store.version)

    await plane.subscribe_records(Bucket.ROSTER, on_record)
    stored: dict[int, Envelope] = {}
    published: dict[int, int] = {}
    for key, (value, revision) in (await plane.records(Bucket.ROSTER)).items():
        try:
            version = int(key[1:]) if key[:1] == "v" and key[1:].isdigit() else 0
            envelope = decode_stored(value) if version > store.version else None
        except TrustError as exc:
            log.error("roster record %s ignored: %s", key, exc)
            continue
        if envelope is not None:
            stored[version] = envelope
            at_ns = await plane.record_stored_ns(Bucket.ROSTER, key, revision)
            if at_ns is not None:
                published[version] = at_ns
    if store.follow(stored, published_ns=published) and store.roster is not None:
        await asyncio.to_thread(server.reload, store.roster, _RELOAD_WAIT_S)
        log.warning("nats-server: stored roster version %d served", store.version)
