"""The streams every node writes to are bounded below the server's file store, so no
node's flood (or a busy day's shipping) can fill it: a full store refuses every JetStream
write, the kill state's included. Real nats-server, authorization on."""

from __future__ import annotations

import dataclasses

from nats.js.api import DiscardPolicy

from knightwatch.control.plane.nats import (
    AUDIT_MAX_BYTES,
    AUDIT_STREAM,
    METRICS_MAX_BYTES,
    METRICS_STREAM,
    NatsControlPlane,
    connect_as,
)
from knightwatch.control.site import Site
from knightwatch.state import Scope

from ..helpers import entry

GIB = 1 << 30


async def test_the_shipped_streams_are_bounded_below_the_store_and_drop_their_oldest(
    site: Site,
) -> None:
    """Before, KW_AUDIT had no byte bound and KW_METRICS only an age: with a gigabyte of
    store, nodes shipping every decision filled it within hours of a busy day."""
    nc = await connect_as(site.server.provisioner, [site.server.url])
    try:
        js = nc.jetstream()
        for stream, bound in ((AUDIT_STREAM, AUDIT_MAX_BYTES), (METRICS_STREAM, METRICS_MAX_BYTES)):
            config = (await js.stream_info(stream)).config
            assert config.max_bytes == bound and config.discard == DiscardPolicy.OLD, stream
        assert AUDIT_MAX_BYTES + METRICS_MAX_BYTES <= GIB // 2  # half the store left to state
    finally:
        await nc.close()


async def test_a_stream_provisioned_unbounded_is_bounded_at_the_next_start(site: Site) -> None:
    nc = await connect_as(site.server.provisioner, [site.server.url])
    try:
        js = nc.jetstream()
        config = (await js.stream_info(AUDIT_STREAM)).config
        await js.update_stream(dataclasses.replace(config, max_bytes=-1))  # as an earlier version
        assert (await js.stream_info(AUDIT_STREAM)).config.max_bytes == -1
        plane = NatsControlPlane(
            [site.server.url], name="provisioner", signer=site.server.provisioner, provision=True
        )
        await plane.connect()
        await plane.close()
        assert (await js.stream_info(AUDIT_STREAM)).config.max_bytes == AUDIT_MAX_BYTES
    finally:
        await nc.close()


async def test_a_full_audit_stream_drops_its_oldest_and_kills_are_still_stored(site: Site) -> None:
    """A stream at its bound takes the next message by dropping its oldest (never by
    refusing it), and the kill state is stored meanwhile. Shrunk to 64 KiB here so the
    flood is quick; the rule is the provisioned one."""
    nc = await connect_as(site.server.provisioner, [site.server.url])
    alice = await site.connect("alice")
    try:
        js = nc.jetstream()
        config = (await js.stream_info(AUDIT_STREAM)).config
        await js.update_stream(dataclasses.replace(config, max_bytes=64 << 10))
        payload = b"x" * 8192
        for i in range(40):  # 320 KiB into 64 KiB, each stored (acknowledged) before the next
            await js.publish(f"kw.audit.flood{i}", payload)
        state = (await js.stream_info(AUDIT_STREAM)).state
        assert state.bytes <= 64 << 10 and state.first_seq > 1
        assert await alice.put_state(entry(scope=Scope.SYMBOL, key="AAPL")) > 0
    finally:
        await alice.close()
        await nc.close()
