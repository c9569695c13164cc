"""A roster version is read under its one key (`rosters.roster_key`) only.

Every reader took "v2", "v02" or "v0000002" as version 2 beside "v000002": whichever was
read last stood in for the version, and a copy of version 1 there (written by an admin
before admins were held to the next versions' keys, or by a store with no permissions)
stopped every process that started afterwards at version 1: the revocation in version 2
undone."""

from __future__ import annotations

from knightwatch.control.node.trustfeed import follow_roster, sync_roster
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.rosters import publish_roster
from knightwatch.release.dsse import encode_envelope
from knightwatch.trust.kit import Kit
from knightwatch.trust.store import TrustStore


async def test_a_copy_under_another_spelling_of_a_versions_key_is_not_read() -> None:
    kit = Kit(now_ns=1_000, admins=2)
    v2 = kit.revoke("carol", 2_000)
    fabric = MemoryFabric()
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    await publish_roster(plane, kit.envelopes[0])
    await publish_roster(plane, v2)
    for key in ("v2", "v02", "v0000002"):
        await plane.put_record(Bucket.ROSTER, key, encode_envelope(kit.envelopes[0]))
    fresh = TrustStore(kit.anchor)
    assert await sync_roster(plane, fresh)
    assert fresh.version == 2, fresh.refused
    live = TrustStore(kit.anchor)
    await follow_roster(plane, live)
    await plane.put_record(Bucket.ROSTER, "v3", encode_envelope(v2))
    assert live.version == 2 and not live.refused, live.refused
