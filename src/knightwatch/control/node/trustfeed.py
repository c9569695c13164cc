"""The roster as stored on the control plane, followed by every process that verifies commands.

Versions are stored one per key (`control.plane.rosters`), created once and never
overwritten, so the chain from the pinned anchor can always be walked again by a
process that starts later. A version that does not verify is refused by `TrustStore`
and the one before stays in force.

A version read from the store at start is judged at the instant the store's
server wrote it (`ControlPlane.record_stored_ns`: the JetStream message's own time,
which no client sets), as a stored resume is: its signers' keys must be valid then, so a
version signed after their keys ended and dated back inside their validity is
refused by a process that starts later as a running one refused it live. A
version whose write time the server no longer holds is refused (fail closed),
except version 1, judged against the pinned anchor. The in-memory plane without
a clock (the replay) records no write times: there a stored version is judged at
its own date.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from knightwatch.control.plane.protocol import Bucket, ControlPlane, Record
from knightwatch.control.plane.rosters import stored_version
from knightwatch.release.dsse import Envelope
from knightwatch.trust.identity import Signer
from knightwatch.trust.roster import TrustError
from knightwatch.trust.store import TrustStore

log = logging.getLogger(__name__)


def _parse(key: str, value: bytes) -> tuple[int, Envelope] | None:
    try:
        return stored_version(key, value)
    except TrustError as exc:
        log.error("ROSTER_REFUSED key=%s %s", key, exc)
        return None


async def sync_roster(plane: ControlPlane, store: TrustStore) -> bool:
    """Read every stored version and accept those after the current one, each judged
    when the server wrote it (where the plane records it); True if it moved."""
    stored: dict[int, Envelope] = {}
    written: dict[int, tuple[str, int]] = {}
    for key, (value, revision) in (await plane.records(Bucket.ROSTER)).items():
        parsed = _parse(key, value)
        if parsed is not None:
            stored[parsed[0]] = parsed[1]
            written[parsed[0]] = (key, revision)
    if not plane.keeps_write_times:
        return store.follow(stored)
    published: dict[int, int] = {}
    for version, (key, revision) in sorted(written.items()):
        if version > store.version:
            at_ns = await plane.record_stored_ns(Bucket.ROSTER, key, revision)
            if at_ns is not None:
                published[version] = at_ns
    return store.follow(stored, published_ns=published)


async def follow_roster(
    plane: ControlPlane, store: TrustStore, on_change: Callable[[], None] | None = None
) -> None:
    """Sync now and on every new version (rotation and revocation need no restart)."""

    async def on_record(record: Record) -> None:
        parsed = _parse(record.key, record.value)
        if parsed is None:
            return
        # heard as it is published: judged now too (admins whose keys have ended cannot
        # sign a version dated back inside their validity)
        moved = store.follow({parsed[0]: parsed[1]}, received_ns=time.time_ns())
        if not moved and parsed[0] > store.version + 1:
            moved = await sync_roster(plane, store)  # a gap: read them all
        if moved and on_change is not None:
            on_change()

    await plane.subscribe_records(Bucket.ROSTER, on_record)
    await sync_roster(plane, store)
    if on_change is not None:
        on_change()


async def identify(plane: ControlPlane, signer: Signer, store: TrustStore) -> Signer:
    """Follow the roster and name the signer as the roster does (who acts is whoever signs)."""
    await follow_roster(plane, store)
    roster = store.roster
    member = roster.member(signer.key.key_id) if roster is not None else None
    if member is None:
        raise TrustError(
            f"key {signer.key.key_id[:16]} is not on the roster (version {store.version}); "
            "ask an admin to enrol it (`knightwatch identity add`)"
        )
    if not member.valid_at(time.time_ns()):
        raise TrustError(
            f"key {signer.key.key_id[:16]} of {member.name} is revoked or rotated out "
            f"(roster version {store.version}); use the key the roster holds now"
        )
    return Signer(member.name, signer.key)
