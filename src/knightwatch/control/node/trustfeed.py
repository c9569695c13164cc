"""The roster as stored on the control plane, followed by every process that verifies commands.

Versions are stored under keys created once (`control.plane.rosters`: the version's key
and each admin's own slot of it), so the chain from the pinned anchor can always be
walked again by a process that starts later. Of a version's records the first the store
wrote that verifies is accepted (`TrustStore.follow_records`); when none does, the one
before stays in force.

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

import asyncio
import logging
import time
from collections.abc import Callable

from knightwatch.control.plane.protocol import Bucket, ControlPlane, Record
from knightwatch.control.plane.rosters import parse_stored, stored_rosters
from knightwatch.errors import KnightwatchError
from knightwatch.trust.identity import Signer
from knightwatch.trust.roster import TrustError
from knightwatch.trust.store import TrustStore

log = logging.getLogger(__name__)

GAP_SYNC_EVERY_S = 1.0
"""At most one full read of the roster bucket a second for records heard past the next
version (a gap: this process missed one). Admins may write the next `ROSTER_AHEAD`
versions' keys, and every junk record there made every following process read the whole
bucket again: one admin's writes cost the fleet a read each. The next version itself is
accepted as it is heard, never waiting for this (revocations are not slowed)."""


async def sync_roster(plane: ControlPlane, store: TrustStore) -> bool:
    """Read every stored record of the versions after the current one and accept them
    (the first record of each version that verifies), each judged when the server wrote
    it (where the plane records it); True if it moved."""
    records = await stored_rosters(plane, after=store.version)
    return bool(store.follow_records(records, stamped=plane.keeps_write_times))


class _GapSync:
    """Full reads for gaps, one at a time and at most one each `GAP_SYNC_EVERY_S`: requests
    while one runs, or within the interval after it started, are served by one read."""

    def __init__(
        self, plane: ControlPlane, store: TrustStore, on_change: Callable[[], None] | None
    ) -> None:
        self.plane = plane
        self.store = store
        self.on_change = on_change
        self.task: asyncio.Task[None] | None = None
        self.pending = False
        self.last: float | None = None

    def request(self) -> None:
        self.pending = True
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self.pending:
            if self.last is not None:
                await asyncio.sleep(max(0.0, self.last + GAP_SYNC_EVERY_S - time.monotonic()))
            self.pending = False
            self.last = time.monotonic()
            try:
                moved = await sync_roster(self.plane, self.store)
            except KnightwatchError as exc:
                log.error("ROSTER_SYNC_FAILED %s", exc)
                continue
            if moved and self.on_change is not None:
                self.on_change()


async def follow_roster(
    plane: ControlPlane, store: TrustStore, on_change: Callable[[], None] | None = None
) -> None:
    """Sync now and on every new version (rotation and revocation need no restart)."""
    gaps = _GapSync(plane, store, on_change)

    async def on_record(record: Record) -> None:
        parsed = parse_stored(record.key, record.value)
        if parsed is None:
            return
        # heard as it is published: judged now too (admins whose keys have ended cannot
        # sign a version dated back inside their validity)
        moved = store.follow({parsed[0]: parsed[1]}, received_ns=time.time_ns())
        if not moved and parsed[0] > store.version + 1:
            gaps.request()  # a gap: read them all, at most once a second
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
