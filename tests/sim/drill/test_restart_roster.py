"""A local fleet started on a server whose roster moved on since its files were written.

The fleet's own versions were stored only where the server held none of that number: one
it held otherwise (the admins' `identity publish`, or a record that does not verify) was
skipped without a word, and the roster in force never held what the fleet added. Now the
stored versions that verify are taken in first (`local_amend`), the fleet's additions go on
top, and a version is never stored where the server holds another record of its number.
Real nats-server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from knightwatch.control.node.trustfeed import sync_roster
from knightwatch.control.plane.connect import FleetError, control_plane, provision
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import ABSENT, Bucket
from knightwatch.control.site import Site
from knightwatch.sim.drill.drill import local_amend, local_cast, local_kit
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role
from knightwatch.trust.store import TrustStore


async def test_a_fleet_on_a_given_server_takes_in_what_its_admins_published(
    tmp_path: Path,
) -> None:
    state = tmp_path / "fleet"
    kit = local_kit(state, ["n1"])
    site = Site(state, kit=kit)
    await site.astart()
    try:
        kit.add("dave", [Role.OPERATOR])
        await site.publish(kit.latest)  # on the server alone: the files as they were
        published = kit.roster.version
        assert Kit.read(state / "trust").roster.version == published - 1
        cast = local_cast(state, ["n1", "n2"])
        amend = local_amend(state, ["n1", "n2"])
        async with control_plane(
            [site.url], state, "t", signer=cast.signer("supervisor"), embed=cast, amend=amend
        ) as plane:
            store = TrustStore(cast.anchor)
            await sync_roster(plane, store)
    finally:
        site.stop()
    assert store.roster is not None and store.version == published + 1
    assert {"dave", "n2"} <= {m.name for m in store.roster.members}
    files = Kit.read(state / "trust")  # the server's history and the version on top
    assert [e.payload for e in files.envelopes] == [e.payload for e in cast.envelopes]
    assert files.roster.version == published + 1


async def test_a_version_is_not_stored_over_a_record_that_does_not_verify(
    tmp_path: Path,
) -> None:
    kit = Kit(now_ns=1, nodes=["n1"])
    kit.add("venue", [Role.VENUE])
    site = Site(tmp_path, kit=kit)
    await site.astart()
    try:
        plane = NatsControlPlane(site.url, name="t", signer=site.server.provisioner, provision=True)
        await plane.connect()
        try:
            await plane.put_record(Bucket.ROSTER, "v000003", b"{}", expected_revision=ABSENT)
        finally:
            await plane.close()
        kit.add("n2", [Role.NODE])  # version 3: that number's record is the junk one
        with pytest.raises(
            FleetError,
            match=r"^roster version 3: the server holds a record of it that does not verify",
        ):
            await provision(site.url, site.server.provisioner, kit)
    finally:
        site.stop()


async def test_a_node_the_admins_revoked_is_not_enrolled_again(tmp_path: Path) -> None:
    """Its key file left in the state dir (from a version of its own the server never
    held): enrolled again on top of the admins' revocation, it would log in again."""
    state = tmp_path / "fleet"
    kit = local_kit(state, ["n1"])
    site = Site(state, kit=kit)
    await site.astart()
    try:
        kit.add("n2", [Role.NODE])
        await site.publish(kit.latest)
        kit.revoke("n2", kit.roster.issued_ns + 1)
        await site.publish(kit.latest)
        (state / "trust" / "keys" / "n2.key").write_bytes(kit.signer("n2").key.private_pem())
        (state / "trust" / "keys" / "n2.key").chmod(0o600)
        cast = local_cast(state, ["n1", "n2"])
        with pytest.raises(FleetError, match=r"n2\.key: n2 is on the roster \(version \d+\)"):
            async with control_plane(
                [site.url],
                state,
                "t",
                signer=cast.signer("supervisor"),
                embed=cast,
                amend=local_amend(state, ["n1", "n2"]),
            ):
                pass
        store = site.store()
        assert store.roster is not None and store.version == kit.roster.version
    finally:
        site.stop()
