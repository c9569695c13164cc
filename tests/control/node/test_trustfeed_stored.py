"""A roster version read from the store at a node's start is judged when the server wrote
it (the JetStream message's own time, which no client sets), never at the date its
signers chose: a version signed after their keys ended and dated back inside their
validity is refused by a node that starts later, as a running node refused it live."""

from __future__ import annotations

from pathlib import Path

import msgspec

from knightwatch.control.node.trustfeed import sync_roster
from knightwatch.control.plane.rosters import publish_roster
from knightwatch.control.site import Site
from knightwatch.release.dsse import Envelope
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role, Roster, roster_envelope, sign_roster
from knightwatch.trust.store import TrustStore

S = 1_000_000_000


def _by(kit: Kit, roster: Roster, *admins: str) -> Envelope:
    envelope = roster_envelope(roster)
    for name in admins:
        envelope = sign_roster(envelope, kit.signer(name).key)
    return envelope


async def test_a_stored_version_backdated_inside_expired_admin_keys_is_refused_at_start(
    tmp_path: Path,
) -> None:
    """Two admins, threshold 2, their keys ending at 50 s (1970: rotated out long ago, no
    successor yet). Written to the store now, a version dated 40 s and signed by them was
    accepted by every node that started afterwards (judged at its own date); judged at
    the server's write time it is refused, and the versions before it (written while their
    signers' keys were valid) still load: a valid fleet still starts."""
    kit = Kit(now_ns=1 * S, admins=2, nodes=["n1"])
    kit.add("venue", [Role.VENUE])
    site = Site(tmp_path, kit=kit)
    await site.astart()
    try:
        admin = await site.connect("admin1")
        ending = tuple(
            msgspec.structs.replace(m, valid_until_ns=50 * S) if m.name.startswith("admin") else m
            for m in kit.roster.members
        )
        v3 = msgspec.structs.replace(kit.roster, version=3, issued_ns=3 * S, members=ending)
        await publish_roster(admin, _by(kit, v3, "admin1", "admin2"))
        v4 = msgspec.structs.replace(v3, version=4, issued_ns=40 * S)
        await publish_roster(admin, _by(kit, v4, "admin1", "admin2"))
        node = await site.connect("n1")
        store = TrustStore(kit.anchor)
        await sync_roster(node, store)
        assert store.version == 3, store.refused
        assert len(store.refused) == 1
        assert store.refused[0].startswith("roster version 4 refused: roster version 4: ")
        assert "when received" in store.refused[0], store.refused
        assert "\n" not in store.refused[0]
        await node.close()
        await admin.close()
    finally:
        site.stop()
