"""One admin's junk where the next roster version goes cannot keep another admin's real
version (a revocation) out of the store, nor out of the nodes that follow it.

Every admin wrote the one key of the next version (`v000005`), created once: one admin's
junk there (a raw publish, which the server does not check) and the real next version,
signed by the admin threshold, could not be stored until the provisioner purged it, and a
raw publish over a stored version replaced it for every process that started later. Each
admin now stores a version in a slot of their own (`rosters.roster_slot`) that no other
admin may write, and readers take the first record of each version that verifies, in the
order the store wrote them (`rosters.stored_rosters`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import msgspec
import nats.errors
import nats.js.errors
import pytest

from knightwatch.control.node import trustfeed
from knightwatch.control.node.trustfeed import follow_roster, sync_roster
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.nats import connect_as
from knightwatch.control.plane.protocol import Bucket, ControlPlane, RevisionConflict
from knightwatch.control.plane.rosters import publish_roster, roster_key, roster_slot
from knightwatch.control.site import Site
from knightwatch.release.dsse import encode_envelope
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role, Roster, roster_envelope, sign_roster
from knightwatch.trust.store import TrustStore

S = 1_000_000_000


def _carol_revoked(roster: Roster) -> bool:
    return all(m.revoked_ns == 2 * S for m in roster.members if m.name == "carol")


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)
    assert condition(), what


async def test_one_admins_junk_at_the_next_key_does_not_keep_a_revocation_out(
    tmp_path: Path,
) -> None:
    """Three admins, threshold 2. admin3 writes junk at the next version's key and a
    version signed by admin3 alone in its own slot; admin1 stores the real next version
    (carol revoked, signed by admin1 and admin2) in its own slot, which admin3 cannot
    write over. A node following live and a node starting afterwards both reach it,
    both refuse admin3's version, and admin3's later write at the version's key does
    not take its place."""
    kit = Kit(now_ns=1 * S, admins=3, nodes=["n1", "n2"])
    kit.add("venue", [Role.VENUE])
    site = Site(tmp_path, kit=kit)
    await site.astart()
    planes: list[ControlPlane] = []
    try:
        admin1 = await site.connect("admin1")
        node = await site.connect("n1")
        planes += [admin1, node]
        live = TrustStore(kit.anchor)
        await follow_roster(node, live)
        current = kit.roster.version
        assert live.version == current, live.refused
        nxt = current + 1
        alone = msgspec.structs.replace(kit.roster, version=nxt, issued_ns=kit.roster.issued_ns + 1)
        forged = sign_roster(roster_envelope(alone), kit.signer("admin3").key)
        raw = await connect_as(site.signer("admin3"), [site.url], name="admin3")
        try:
            js = raw.jetstream(timeout=5.0)
            admin3_slot = roster_slot(nxt, kit.signer("admin3").key.key_id)
            await js.publish(f"$KV.kw_roster.{roster_key(nxt)}", b"junk")
            await js.publish(f"$KV.kw_roster.{admin3_slot}", encode_envelope(forged))
            revocation = kit.revoke("carol", 2 * S)
            admin1_id = kit.signer("admin1").key.key_id
            assert await publish_roster(admin1, revocation, publisher=admin1_id)
            # admin1's slot is admin1's: the server refuses admin3's write over it
            with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
                await js.publish(f"$KV.kw_roster.{roster_slot(nxt, admin1_id)}", b"junk")
            # written after the real one: never in its place
            await js.publish(f"$KV.kw_roster.{roster_key(nxt)}", encode_envelope(forged))
        finally:
            await raw.close()
        await _until(lambda: live.version == nxt, f"live follower at {nxt}: {live.refused}")
        assert live.roster is not None and _carol_revoked(live.roster)
        later = await site.connect("n2")
        planes.append(later)
        fresh = TrustStore(kit.anchor)
        assert await sync_roster(later, fresh)
        assert fresh.version == nxt, fresh.refused
        assert fresh.roster is not None and _carol_revoked(fresh.roster)
        # admin3's version, stored before the real one, was read and refused (one line)
        for store in (live, fresh):
            assert len(store.refused) == 1, store.refused
            assert store.refused[0].startswith(f"roster version {nxt} refused: "), store.refused
            assert "\n" not in store.refused[0]
        # admin1 cannot store a second record in its own slot either
        with pytest.raises(RevisionConflict):
            await publish_roster(admin1, revocation, publisher=kit.signer("admin1").key.key_id)
    finally:
        for plane in planes:
            await plane.close()
        site.stop()


async def test_no_record_of_the_next_version_that_verifies_leaves_the_roster_as_it_was() -> None:
    """Junk and a version signed below the admin threshold at the next version's key and
    in an admin's slot: none is accepted, each refusal is remembered, the version before
    stays in force."""
    kit = Kit(now_ns=1 * S, admins=3)
    fabric = MemoryFabric()
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    await publish_roster(plane, kit.envelopes[0])
    real = kit.revoke("carol", 2 * S)
    solo = sign_roster(roster_envelope(kit.roster), kit.signer("admin3").key)
    await plane.put_record(Bucket.ROSTER, roster_key(2), b"junk")
    await publish_roster(plane, solo, publisher=kit.signer("admin3").key.key_id)
    fresh = TrustStore(kit.anchor)
    await sync_roster(plane, fresh)
    assert fresh.version == 1
    assert len(fresh.refused) == 1 and fresh.refused[0].startswith("roster version 2 refused")
    await publish_roster(plane, real, publisher=kit.signer("admin1").key.key_id)
    assert await sync_roster(plane, fresh)
    assert fresh.version == 2


async def test_junk_past_the_next_version_costs_a_follower_one_read_not_one_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every record heard past the next version (a gap) made every follower read the
    whole bucket again: 15 junk records at the next 16 versions' keys, 15 full reads in
    each process. Now at most one read at a time and one each `GAP_SYNC_EVERY_S`: one for
    the first and at most one for all that came while it ran or waited."""
    monkeypatch.setattr(trustfeed, "GAP_SYNC_EVERY_S", 0.5)
    kit = Kit(now_ns=1 * S, admins=2)
    fabric = MemoryFabric()
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    await publish_roster(plane, kit.envelopes[0])
    reads = 0
    records = plane.records

    async def counted(bucket: Bucket) -> dict[str, tuple[bytes, int]]:
        nonlocal reads
        reads += bucket is Bucket.ROSTER
        return await records(bucket)

    monkeypatch.setattr(plane, "records", counted)
    store = TrustStore(kit.anchor)
    await follow_roster(plane, store)
    assert (store.version, reads) == (1, 1)
    copy = encode_envelope(kit.envelopes[0])  # an envelope: read as a record of each version
    for version in range(3, 18):
        await plane.put_record(Bucket.ROSTER, roster_key(version), copy)
    await _until(lambda: reads >= 2, "a read for the gap")
    assert reads <= 3, reads
    assert store.version == 1
