"""An admin's NATS permissions on the roster bucket: the next versions only, never one stored.

Every process follows the stored roster versions in order from its pinned anchor, and a
version missing or unreadable stops the walk. Before, one admin (one key of two, at any
threshold) could write any key of `kw_roster` with a raw publish: garbage over a stored
version (or a copy of an older version under another spelling of its key, `v5` for
`v000005`), and every process that started afterwards stopped at the version before it:
a revocation it held was undone there, by one person, with no admin's threshold."""

from __future__ import annotations

import nats.errors
import nats.js.errors
import pytest

from knightwatch.control.node.trustfeed import sync_roster
from knightwatch.control.plane.authz import ROSTER_AHEAD, permissions
from knightwatch.control.plane.nats import connect_as
from knightwatch.control.plane.rosters import roster_key, roster_slot, roster_version
from knightwatch.control.site import Site
from knightwatch.trust.roster import Role, TrustError
from knightwatch.trust.store import TrustStore

from ...identities import KIT


async def test_an_admin_cannot_overwrite_a_stored_roster_version(nats_server: Site) -> None:
    admin = nats_server.signer(KIT.admin_names[0])
    latest = KIT.roster.version
    raw = await connect_as(admin, [nats_server.url], name=admin.name, allow_reconnect=False)
    try:
        js = raw.jetstream(timeout=2.0)
        for key in (roster_key(latest), roster_key(1), f"v{latest}", "v1"):
            with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
                await js.publish(f"$KV.kw_roster.{key}", b"not a roster")
        # the next version's key stays writable: admins publish there
        ack = await js.publish(f"$KV.kw_roster.{roster_key(latest + 1)}", b"not a roster")
        assert ack.seq > 0
    finally:
        await raw.close()
    plane = await nats_server.connect("alice")
    try:
        fresh = TrustStore(KIT.anchor)
        await sync_roster(plane, fresh)
        assert fresh.version == latest  # a process starting now still reaches the latest
    finally:
        await plane.close()


def test_an_admin_may_write_only_the_next_versions_keys() -> None:
    perms = permissions("admin1", [Role.ADMIN], "ab" * 32, roster_version=7)
    publish = perms["publish"]
    assert isinstance(publish, dict)
    allowed = [s for s in publish["allow"] if s.startswith("$KV.kw_roster.")]
    # each next version's key and this admin's own slot of it (`roster_slot`), no other's
    expected = [f"$KV.kw_roster.{roster_slot(v, k)}" for v in range(8, 8 + ROSTER_AHEAD)
                for k in (None, "ab" * 32)]  # fmt: skip
    assert allowed == sorted(expected)
    assert f"$KV.kw_roster.{roster_key(8)}.{'ab' * 8}" in allowed
    operator = permissions("alice", [Role.OPERATOR], "cd" * 32, roster_version=7)["publish"]
    assert isinstance(operator, dict)
    assert not [s for s in operator["allow"] if s.startswith("$KV.kw_roster.")]


@pytest.mark.parametrize(
    "key",
    [
        "v5", "v05", "v0000005", "v000000", "v٠٠٠٠٠٥", "V000005", "v000005.x", "v-00005", "",
        "v5.0123456789abcdef", "v000005.0123456789abcde", "v000005.0123456789abcdef0",
        "v000005.0123456789ABCDEF", "v000005.0123456789abcdeg", "v000005.", "v000005.a.b",
    ],
)  # fmt: skip
def test_a_roster_key_other_than_its_versions_one_spelling_is_refused(key: str) -> None:
    """Every reader took "v5", "v05" or "v0000005" as version 5 beside "v000005": one
    version under two keys, whichever was read last standing in for it (a copy of an older
    version there stopped the walk before a revocation). Only `roster_key`'s spelling names
    a version; anything else is a one-line refusal naming the key."""
    assert roster_version(roster_key(5)) == 5
    assert roster_version(roster_key(1_234_567)) == 1_234_567
    assert roster_version(roster_slot(5, "0123456789abcdef" * 4)) == 5  # an admin's slot
    with pytest.raises(TrustError, match=r"roster key .*: not a version's key") as e:
        roster_version(key)
    assert "\n" not in str(e.value)
