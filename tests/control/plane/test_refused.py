"""A write the store refuses for room is `ControlPlaneRefused`, a type of its own (callers
told it from "sent, not answered" by the message's text); a bounded record bucket keeps its
last share for the stop direction (`check_room`). Real nats-server, authorization on."""

from __future__ import annotations

import dataclasses

import pytest

from knightwatch.control.plane import ControlPlaneRefused, ControlPlaneUnavailable
from knightwatch.control.plane.nats import STOP_RESERVE_SHARE, connect_as
from knightwatch.control.plane.protocol import Bucket, RoomKept
from knightwatch.control.site import Site

BOUND = 64 << 10
"""The bucket's bound shrunk from its provisioned one, so the flood is quick."""


async def _bound(site: Site, bucket: Bucket, bound: int) -> None:
    nc = await connect_as(site.server.provisioner, [site.server.url])
    try:
        js = nc.jetstream()
        config = (await js.stream_info(f"KV_kw_{bucket.value}")).config
        await js.update_stream(dataclasses.replace(config, max_bytes=bound))
    finally:
        await nc.close()


@pytest.mark.parametrize("bucket", [Bucket.APPROVALS, Bucket.FLAGS])
async def test_a_write_refused_at_its_buckets_bound_is_control_plane_refused(
    site: Site, bucket: Bucket
) -> None:
    await _bound(site, bucket, BOUND)
    alice = await site.connect("alice")
    try:
        with pytest.raises(ControlPlaneRefused) as refused:
            for i in range(2 * BOUND // 4096):
                await alice.put_record(bucket, f"change.x.{i}", b"x" * 4096)
        assert isinstance(refused.value, ControlPlaneUnavailable)  # still "blocked" to all
        assert str(refused.value).startswith(
            "control plane refused the write: the bucket is at its byte bound"
        ), refused.value
        with pytest.raises(ControlPlaneRefused, match=f"bucket kw_{bucket.value} holds"):
            await alice.check_room(bucket)
    finally:
        await alice.close()


async def test_check_room_refuses_past_the_share_open_to_risk_and_names_the_rule(
    site: Site,
) -> None:
    await _bound(site, Bucket.FLAGS, BOUND)
    alice = await site.connect("alice")
    try:
        assert isinstance(alice, RoomKept)
        await alice.check_room(Bucket.FLAGS)  # empty: room
        await alice.check_room(Bucket.RELEASE)  # unbounded: always room
        open_to = BOUND - BOUND // STOP_RESERVE_SHARE
        line = ""
        for i in range(BOUND // 1024):
            try:
                await alice.check_room(Bucket.FLAGS)
            except ControlPlaneRefused as exc:
                line = str(exc)
                break
            await alice.put_record(Bucket.FLAGS, f"change.x.{i}", b"x" * 1024)
        assert 0 < i < BOUND // 1024 - 4, i  # refused short of the bound
        assert "bucket kw_flags holds" in line and f"of its {BOUND} bytes" in line, line
        assert f"past the {open_to} open to writes away from the safe direction" in line, line
        assert "nothing of it is stored" in line and "\n" not in line, line
        # the kept share still takes writes: the stop direction does not ask
        await alice.put_record(Bucket.FLAGS, "state.some.flag", b"{}" * 512)
    finally:
        await alice.close()


async def test_a_value_over_the_servers_message_bound_is_refused_not_in_doubt(
    site: Site,
) -> None:
    """nats-py refuses a payload over max_payload before sending it: nothing went out.
    It read as "did not answer" (a flag change over it: "may be stored and in force")."""
    alice = await site.connect("alice")
    try:
        with pytest.raises(ControlPlaneRefused, match=r"over the server's message bound"):
            await alice.put_record(Bucket.FLAGS, "change.x.big", b"x" * (2 << 20))
        assert await alice.get_record(Bucket.FLAGS, "change.x.big") == (None, 0)
    finally:
        await alice.close()
