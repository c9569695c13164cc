"""The streams and buckets every node writes to are bounded below the server's file store,
so no node's flood (or a busy day's shipping) can fill it: a full store refuses every
JetStream write, the kill state's included. Real nats-server, authorization on."""

from __future__ import annotations

import dataclasses

from nats.js.api import DiscardPolicy

from knightwatch.control.plane.nats import (
    APPLIED_BUCKET,
    APPLIED_MAX_BYTES,
    APPLIED_MAX_VALUE,
    AUDIT_MAX_BYTES,
    AUDIT_STREAM,
    METRICS_MAX_BYTES,
    METRICS_STREAM,
    RECORD_MAX_BYTES,
    NatsControlPlane,
    connect_as,
)
from knightwatch.control.plane.protocol import Bucket, ControlPlaneUnavailable
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
        assert (await js.stream_info(f"KV_{APPLIED_BUCKET}")).config.max_bytes == APPLIED_MAX_BYTES
        # half the store left to the kill state and the operators' records
        assert AUDIT_MAX_BYTES + METRICS_MAX_BYTES + APPLIED_MAX_BYTES <= GIB // 2
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


async def _shrink_store(site: Site) -> None:
    """Every bound 256 times smaller and the server's store 8 MB (a restart: the server
    refuses to lower its store on a reload), so a flood past it takes a second."""
    nc = await connect_as(site.server.provisioner, [site.server.url])
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.max_bytes and info.config.max_bytes > 0:
                await js.update_stream(
                    dataclasses.replace(info.config, max_bytes=info.config.max_bytes >> 8)
                )
    finally:
        await nc.close()
    site.server.stop()
    site.server.port = int(site.server.url.rsplit(":", 1)[1])
    site.server.max_file = "8MB"
    site.server.start()


async def test_a_node_flooding_flag_confirmations_cannot_stop_a_kill_being_stored(
    site: Site,
) -> None:
    """A node may write a confirmation key per flag (`applied.<node>.<flag>`). Before, they
    were in `kw_flags`, which had no bound: n1 wrote keys until the store was full, and
    then the server refused alice's kill (`insufficient resources`) and her flag change
    back to the safe default. Now n1's writes stop at their own bucket's bound."""
    await _shrink_store(site)
    n1 = await site.connect("n1")
    alice = await site.connect("alice")
    try:
        value = b"x" * (APPLIED_MAX_VALUE - 96)
        stored = 0
        for i in range(4200):  # ~16 MiB at most: twice the store
            try:
                await n1.put_record(Bucket.FLAGS, f"applied.n1.flood{i}", value)
            except ControlPlaneUnavailable:
                break
            stored += 1
        assert 0 < stored < 4200, stored  # refused before the store was full
        assert await alice.put_state(entry(scope=Scope.SYMBOL, key="AAPL")) > 0
        assert await alice.put_record(Bucket.FLAGS, "state.some.flag", b"{}") > 0
    finally:
        await n1.close()
        await alice.close()


async def test_applied_records_of_an_earlier_version_move_to_their_bucket_at_provisioning(
    site: Site,
) -> None:
    """A fleet provisioned by an earlier version kept them in `kw_flags`: the next
    provisioning start creates the bounded bucket and copies them, so readers (the flag
    store, the console, a node remembering what it applied) still see them."""
    nc = await connect_as(site.server.provisioner, [site.server.url])
    try:
        js = nc.jetstream()
        await js.delete_key_value(APPLIED_BUCKET)  # as an earlier version provisioned it
        flags = await js.key_value("kw_flags")
        await flags.put("applied.n1.some.flag", b'{"old":1}')
        plane = NatsControlPlane(
            [site.server.url], name="provisioner", signer=site.server.provisioner, provision=True
        )
        await plane.connect()
        await plane.close()
        info = await js.stream_info(f"KV_{APPLIED_BUCKET}")
        assert info.config.max_bytes == APPLIED_MAX_BYTES and info.config.deny_delete
    finally:
        await nc.close()
    n1 = await site.connect("n1")
    try:
        records = await n1.records(Bucket.FLAGS)
        assert records["applied.n1.some.flag"][0] == b'{"old":1}'
        assert (await n1.get_record(Bucket.FLAGS, "applied.n1.some.flag"))[0] == b'{"old":1}'
    finally:
        await n1.close()


async def test_a_node_cannot_write_its_confirmations_into_the_flags_bucket(site: Site) -> None:
    """Only into the bounded bucket: `kw_flags` itself (unbounded: the operators' flag
    states and changes) takes nothing from a node."""
    nc = await connect_as(site.signer("n1"), [site.server.url])
    try:
        js = nc.jetstream(timeout=1.0)
        try:
            await js.publish("$KV.kw_flags.applied.n1.x", b"{}")
        except Exception as exc:  # the server drops it: no acknowledgement comes back
            assert "timeout" in type(exc).__name__.lower() or "NoResponders" in repr(exc), exc
        else:
            raise AssertionError("a node stored a record in kw_flags")
    finally:
        await nc.close()


async def test_an_operators_flood_of_records_is_refused_at_its_bucket_and_the_kill_is_stored(
    site: Site,
) -> None:
    """Before, the record buckets an operator writes keys of its choosing in were unbounded:
    alice's 1 MiB pending requests filled the 1 GB store in 5 s, and the fleet kill's store
    write was refused ('insufficient resources'). Now the flood stops at its bucket's bound."""
    alice = await site.connect("alice")
    nc = await connect_as(site.server.provisioner, [site.server.url])
    try:
        js = nc.jetstream()
        for bucket, bound in RECORD_MAX_BYTES.items():
            assert (await js.stream_info(f"KV_kw_{bucket.value}")).config.max_bytes == bound
        total = AUDIT_MAX_BYTES + METRICS_MAX_BYTES + APPLIED_MAX_BYTES
        assert total + sum(RECORD_MAX_BYTES.values()) <= GIB * 3 // 4
        payload = b"x" * (1 << 20)
        bound = RECORD_MAX_BYTES[Bucket.APPROVALS]
        stored = 0
        try:
            for i in range(2 * bound // len(payload)):
                await alice.put_record(Bucket.APPROVALS, f"flood{i}", payload)
                stored += 1
        except ControlPlaneUnavailable as exc:
            assert "refused the write: the bucket is at its byte bound" in str(exc), exc
        assert stored < bound // len(payload), stored  # refused at the bound, not beyond
        assert await alice.put_state(entry(Scope.FLEET, "fleet")) > 0
    finally:
        await nc.close()
