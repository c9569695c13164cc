"""`identity publish` stores a version in the publishing admin's own slot
(`rosters.roster_slot`): one admin's junk at the next version's key does not keep the
real next version (a revocation, signed by the admin threshold) out of the store.

Before, publish wrote only the version's key, created once: with another admin's junk
there it answered "published meanwhile" and nothing was stored until the provisioner
purged the junk."""

from __future__ import annotations

import asyncio
from pathlib import Path

from knightwatch.control.plane.nats import connect_as
from knightwatch.control.plane.rosters import roster_key
from knightwatch.trust.identity import load_signer

from .test_identity import change, invoke


async def _junk_at(url: str, key: Path, version: int) -> None:
    raw = await connect_as(load_signer(key, "admin2"), [url], name="admin2")
    try:
        ack = await raw.jetstream(timeout=10.0).publish(
            f"$KV.kw_roster.{roster_key(version)}", b"junk"
        )
        assert ack.seq > 0
    finally:
        await raw.close()


def test_a_revocation_is_published_past_another_admins_junk(fleet_up: Path, tmp_path: Path) -> None:
    keys = fleet_up / "trust" / "keys"
    code, out = invoke(
        "identity", "show", "--state-dir", str(fleet_up), "--key", str(keys / "admin1.key")
    )
    assert code == 0, out
    version = int(out.split("version ")[1].split()[0].rstrip(",:)"))
    url = (fleet_up / "nats.url").read_text().split()[0]
    asyncio.run(_junk_at(url, keys / "admin2.key", version + 1))
    out = change(fleet_up, tmp_path, "revoke", "alice")
    assert f"roster version {version + 1} published" in out, out
