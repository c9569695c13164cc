"""A bucket whose stream is gone is an unreadable store, never an empty one, against a real
nats-server: nats-py raises the same "key not found" for a missing key and a missing stream.
Before, a lost `kw_release` read as "no target release set" (the resume preflight's release
item passed) and a lost `kw_state` as a slot nobody halted."""

from __future__ import annotations

from pathlib import Path

import pytest

from knightwatch.control.plane.nats import STATE_BUCKET, NatsControlPlane
from knightwatch.control.plane.protocol import Bucket, ControlPlaneUnavailable
from knightwatch.control.site import Site
from knightwatch.state import Scope


async def test_a_lost_bucket_is_unreadable_and_a_missing_key_is_absent(tmp_path: Path) -> None:
    site = Site(tmp_path / "site", ("n1",))
    await site.astart()
    admin = NatsControlPlane(
        site.url, name="provisioner", signer=site.server.provisioner, provision=True
    )
    await admin.connect()
    alice = await site.connect("alice")
    try:
        assert await alice.get_record(Bucket.RELEASE, "target") == (None, 0)
        assert await alice.get_state(Scope.STRATEGY, "never") == (None, 0)
        js = admin._require_js()
        for bucket in (Bucket.RELEASE, Bucket.INCIDENT, Bucket.ADMISSION):
            name = alice._keyed(bucket, "k")[0]
            await js.delete_stream(f"KV_{name}")
            with pytest.raises(ControlPlaneUnavailable, match=f"bucket {name} not found"):
                await alice.get_record(bucket, "k")
        await js.delete_stream(f"KV_{STATE_BUCKET}")
        with pytest.raises(ControlPlaneUnavailable, match=f"bucket {STATE_BUCKET} not found"):
            await alice.get_state(Scope.STRATEGY, "never")
    finally:
        await alice.close()
        await admin.close()
        site.stop()
