"""What the generated NATS authorization lets each identity read, against a real nats-server
with authorization on: a node ships its flight-recorder lines to the fleet stream, but
reading them back (every node's orders, strategies and sizes) is for those who watch the
fleet, never for another node."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.fleet.supervisor import DAY_KEY_PREFIX
from knightwatch.control.plane.connect import control_plane, recorded_url
from knightwatch.control.plane.nats import AUDIT_STREAM, METRICS_STREAM, connect_as
from knightwatch.control.plane.protocol import Bucket, ControlPlaneUnavailable
from knightwatch.control.plane.wire import (
    ENCODER,
    KNOWN_GOOD_KEY,
    AuditEnvelope,
    KnownGood,
    NodeMetrics,
    NodeStarts,
    starts_key,
)
from knightwatch.control.site import Site
from knightwatch.release.dsse import encode_envelope
from knightwatch.release.keys import SigningKey
from knightwatch.state import Scope, TradingState
from knightwatch.trust.identity import Signer
from knightwatch.trust.kit import Kit, member_of
from knightwatch.trust.roster import Role

from ...identities import KIT
from ..helpers import eventually

SECRET = b'{"kind":"decision","order":"n1-secret","strategy":"mm","qty":5000}\n'


async def test_a_node_cannot_read_another_nodes_audit_records(nats_server: Site) -> None:
    """n1 ships a decision; n2's credentials get none of it, by message get (what
    `audit()` does) or by a push consumer delivering to its own inbox, while the
    supervisor and a viewer read it. Before, every identity held the JetStream read API on
    every stream, so any node read the whole fleet's decisions."""
    n1 = await nats_server.connect("n1")
    n2 = await nats_server.connect("n2")
    carol = await nats_server.connect("carol")
    supervisor = await nats_server.connect("supervisor")
    spy = await connect_as(nats_server.signer("n2"), [nats_server.url], name="n2-spy")
    try:
        seq = await n1.append_audit(AuditEnvelope("n1", "i1", 1, SECRET))
        await n1.publish_metrics(NodeMetrics("n1", 5, 10, 9, 1, 4, 1000.0, -3.5, True, 0, {}))
        assert [env.lines() for _, env in await carol.audit()] == [[SECRET.strip()]]
        assert [env.lines() for _, env in await supervisor.audit()] == [[SECRET.strip()]]
        with pytest.raises(ControlPlaneUnavailable):
            await n2.audit()
        js = spy.jetstream(timeout=1.0)
        for stream in (AUDIT_STREAM, METRICS_STREAM):
            with pytest.raises(nats.errors.TimeoutError):
                await js.get_msg(stream, seq=seq if stream == AUDIT_STREAM else 1)
        got: list[bytes] = []

        async def on_msg(msg: Msg) -> None:
            got.append(msg.data)

        deliver = spy.new_inbox()
        await spy.subscribe(deliver, cb=on_msg)
        for filtered in ("kw.audit.n1", "kw.audit.>"):
            with pytest.raises(nats.errors.TimeoutError):
                await js.add_consumer(
                    AUDIT_STREAM,
                    ConsumerConfig(
                        deliver_subject=deliver,
                        deliver_policy=DeliverPolicy.ALL,
                        filter_subject=filtered,
                        inactive_threshold=5.0,
                    ),
                )
        info = await carol._require_js().stream_info(AUDIT_STREAM)
        assert info.state.consumer_count == 0  # the server made no consumer for n2
        await spy.flush()
        assert got == []
        # what a node needs of the streams still works: binding to them and shipping
        assert await n2.append_audit(AuditEnvelope("n2", "i2", 1, b"own\n")) > seq
    finally:
        await spy.close()
        for plane in (n1, n2, carol, supervisor):
            await plane.close()


async def test_only_the_node_writes_its_start_history_operators_only_the_known_good_record(
    nats_server: Site,
) -> None:
    """The resume preflight keeps a crash-looping node halted by its start history
    (`kw_incident` `starts.<node>`). Operators write the known-good record of the same
    bucket, and held every key of it: one operator could erase or rewrite n1's starts
    and pass it through a two-person resume's preflight. Now only n1 writes its own."""
    n1 = await nats_server.connect("n1")
    alice = await nats_server.connect("alice")
    bob = await nats_server.connect("bob")
    try:
        mine = ENCODER.encode(NodeStarts("n1", (1, 2, 3, 4, 5)))
        revision = await n1.put_record(Bucket.INCIDENT, starts_key("n1"), mine)
        erased = ENCODER.encode(NodeStarts("n1", ()))
        for operator in (alice, bob):
            with pytest.raises(ControlPlaneUnavailable):
                await operator.put_record(Bucket.INCIDENT, starts_key("n1"), erased)
        assert await alice.get_record(Bucket.INCIDENT, starts_key("n1")) == (mine, revision)
        good = ENCODER.encode(KnownGood("r1", "k1", 1))
        assert await alice.put_record(Bucket.INCIDENT, KNOWN_GOOD_KEY, good) > revision
    finally:
        for plane in (n1, alice, bob):
            await plane.close()


async def _login(site: Site, signer: Signer) -> Client:
    """A raw connection as `signer`, no reconnecting: a refused login raises."""
    return await _login_at(site.url, signer)


async def _login_at(url: str, signer: Signer) -> Client:
    """A raw connection as `signer` to `url`: the server's answer, a client or its refusal.
    A server closing a refused login can reset the socket before the client has read its
    `Authorization Violation` (seen on a loaded CI machine): that is no answer, so ask
    again, a few times, rather than read it as either."""
    for _ in range(20):
        try:
            return await connect_as(
                signer, [url], name=signer.name, allow_reconnect=False, connect_timeout=5
            )
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"{signer.name}: 20 logins in a row reset before any answer")


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `check` until true; fail after 30 s."""
    deadline = asyncio.get_running_loop().time() + 30.0
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)


async def test_a_key_loses_its_login_when_its_validity_ends_not_at_the_next_version(
    tmp_path: Path,
) -> None:
    """A roster version ends n1's key shortly after it is stored, and enrols a key whose
    validity starts later. The server re-renders its users at each boundary by itself:
    n1's live connection is closed and it cannot log in again, the early key is refused
    until its start, and one starting in an hour is refused now. Before, users were
    judged at the version's issue time: n1 kept its login and its publish permissions
    until the next version, and a key not yet valid logged in at once."""
    site = Site(tmp_path / "site", ("n1", "n2"))
    await site.astart()
    n1 = await _login(site, site.signer("n1"))
    soon, later = Signer("soon", SigningKey.generate()), Signer("later", SigningKey.generate())
    try:
        await n1.publish("kw.hb.n1", b"alive")
        await n1.flush()
        now = SystemClock().time_ns()
        members = [
            msgspec.structs.replace(m, valid_until_ns=now + 1_500_000_000) if m.name == "n1" else m
            for m in site.kit.roster.members
        ]
        members.append(member_of("soon", soon.key, [Role.NODE], valid_from_ns=now + 1_500_000_000))
        members.append(member_of("later", later.key, [Role.NODE], valid_from_ns=now + 3600 * 10**9))
        await site.publish(site.kit.next_version(members, now))

        async def n1_dropped() -> bool:
            if n1.is_closed:
                return True
            try:
                await n1.publish("kw.hb.n1", b"alive")
                await n1.flush(timeout=5)  # a live server answers; loaded, in seconds
            except (nats.errors.ConnectionClosedError, nats.errors.TimeoutError):
                return True
            return False

        await _eventually(n1_dropped, "n1's connection outlived its key")
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await _login(site, site.signer("n1"))
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await _login(site, later)

        async def soon_logs_in() -> bool:
            try:
                nc = await _login(site, soon)
            except nats.errors.Error:
                return False
            await nc.publish("kw.hb.soon", b"alive")
            await nc.flush()
            await nc.close()
            return True

        await _eventually(soon_logs_in, "a key whose validity started cannot log in")
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await _login(site, later)
    finally:
        await n1.close()
        site.stop()


_HOSTILE_API = (
    "$JS.API.STREAM.DELETE.KV_kw_state",
    "$JS.API.STREAM.PURGE.KV_kw_state",
    "$JS.API.STREAM.UPDATE.KV_kw_state",
    "$JS.API.STREAM.CREATE.KW_EVIL",
    "$JS.API.STREAM.MSG.DELETE.KV_kw_state",
    "$JS.API.CONSUMER.CREATE.KV_kw_state.evil",
    "$JS.API.CONSUMER.CREATE.KV_kw_state.evil.$KV.kw_state.x",
    "$JS.API.CONSUMER.DURABLE.CREATE.KV_kw_state.evil",
    "$JS.API.CONSUMER.LIST.KV_kw_state",
    "$JS.API.CONSUMER.NAMES.KV_kw_state",
    "$JS.API.CONSUMER.RESET.KV_kw_state.evil",
    "$JS.API.CONSUMER.PAUSE.KV_kw_state.evil",
)
"""JetStream API calls no role makes: each deletes, purges or rewrites a stream, makes a
consumer of a chosen name (a durable one outlives its creator; an existing one of that
name is rewritten), or lists the consumers (whose names are what deleting one takes)."""


@pytest.mark.parametrize("name", ["n1", "supervisor", "carol", "alice", "admission", "venue"])
async def test_no_role_deletes_purges_or_names_a_consumer_through_the_jetstream_api(
    nats_server: Site, name: str
) -> None:
    """Every identity held `$JS.API.CONSUMER.CREATE.>`: any node could create a durable
    consumer of its chosen name on the kill state's stream (the server kept it after the
    node left) or rewrite one of that name. The server now refuses each of these calls as
    a permissions violation, for every role, and nothing is created; the ephemeral
    consumer a snapshot uses still works, and is deleted by its creator."""
    hostile = await _login(nats_server, nats_server.signer(name))
    config = {"durable_name": "evil", "name": "evil", "ack_policy": "none"}
    body = msgspec.json.encode({"stream_name": "KV_kw_state", "config": config})
    plane = await nats_server.connect(name)
    owner = await _login(nats_server, nats_server.server.provisioner)

    async def refused(subject: str) -> bool:
        try:
            await hostile.request(subject, body, timeout=1.0)
        except nats.errors.TimeoutError:  # a permissions violation: no answer at all
            return True
        return False

    try:
        answered = await asyncio.gather(*(refused(s) for s in _HOSTILE_API))
        assert dict(zip(_HOSTILE_API, answered, strict=True)) == dict.fromkeys(_HOSTILE_API, True)
        js = owner.jetstream(timeout=10.0)  # answers expected: generous on a loaded machine
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.consumer_info("KV_kw_state", "evil")
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.stream_info("KW_EVIL")
        # what every role does with the streams: snapshots through ephemeral consumers
        assert isinstance(await plane.states(), dict)
        assert (await js.stream_info("KV_kw_state")).state.consumer_count == 0
    finally:
        await hostile.close()
        await owner.close()
        await plane.close()


@pytest.mark.parametrize(
    ("name", "subject"),
    [("erin", "$KV.kw_state.fleet.fleet"), ("n1", "$KV.kw_incident.starts.n1")],
)
async def test_a_write_to_a_key_one_may_write_cannot_roll_up_the_bucket(
    nats_server: Site, name: str, subject: str
) -> None:
    """Publish permissions cannot see headers: a `Nats-Rollup: all` header on a write to the
    one key an identity may write erased every other key of the bucket. One operator (erin,
    neither of a resume's two people) erased the stored fleet kill, a one-person resume; a
    node writing its own start history erased `known_good` and every other node's. The
    provisioned buckets now refuse roll-ups, and what was stored stays."""
    alice = await nats_server.connect("alice")
    raw = await _login(nats_server, nats_server.signer(name))
    try:
        js = raw.jetstream(timeout=10.0)  # an answer (the refusal) is expected
        await alice.put_record(
            Bucket.INCIDENT, KNOWN_GOOD_KEY, ENCODER.encode(KnownGood("r1", "k1", 1))
        )
        killed = await KillSwitch(
            alice, SystemClock(), nats_server.signer("alice"), KIT.store()
        ).kill(Scope.FLEET, "fleet", "runaway", timeout_s=0.1)
        assert killed.revision is not None
        with pytest.raises(nats.js.errors.APIError, match=r"(?i)rollup"):
            await js.publish(subject, b"x", headers={"Nats-Rollup": "all"})
        entry, _ = (await alice.states())["fleet.fleet"]
        assert entry is not None and entry.state is TradingState.HALTED
        assert KNOWN_GOOD_KEY in await alice.records(Bucket.INCIDENT)
    finally:
        await raw.close()
        await alice.close()


async def test_the_supervisor_alone_writes_its_day_history(nats_server: Site) -> None:
    """A restarted supervisor reads back the day its daily rule counted
    (`supervisor_day.<node>` in `kw_incident`). Its role may publish the kill state only,
    so on a real server its writes were refused and every restart gave each node a fresh
    day. Now it writes them, and neither the node judged nor an operator can."""
    supervisor = await nats_server.connect("supervisor")
    n1 = await nats_server.connect("n1")
    alice = await nats_server.connect("alice")
    key = f"{DAY_KEY_PREFIX}n1"
    try:
        day = b'{"node_id":"n1"}'
        revision = await supervisor.put_record(Bucket.INCIDENT, key, day)
        for other in (n1, alice):
            with pytest.raises(ControlPlaneUnavailable):
                await other.put_record(Bucket.INCIDENT, key, b'{"node_id":"n1","value":0}')
        assert await supervisor.get_record(Bucket.INCIDENT, key) == (day, revision)
    finally:
        for plane in (supervisor, n1, alice):
            await plane.close()


async def test_a_node_cannot_make_another_nodes_audit_envelope_vanish(nats_server: Site) -> None:
    """The audit stream drops any message whose id it holds from the last 2 minutes, whoever
    sent it. The id was `node:instance:seq`, and every identity reads the instance in the
    membership record: n2, on its own subject, sent junk under n1's next id, and n1's real
    envelope was dropped as a duplicate with nothing said. Now each id carries a tag keyed
    by a secret of n1's process."""
    n1 = await nats_server.connect("n1")
    carol = await nats_server.connect("carol")
    n2 = await _login(nats_server, nats_server.signer("n2"))
    try:
        js = n2.jetstream(timeout=10.0)
        for guess in ("n1:i1:1", "n1:i1:1:", "n1:i1:2"):
            await js.publish("kw.audit.n2", b"junk", headers={"Nats-Msg-Id": guess})
        first = AuditEnvelope("n1", "i1", 1, SECRET)
        seq = await n1.append_audit(first)
        assert await n1.append_audit(first) == seq  # its own retry still lands once
        shipped = [env for _, env in await carol.audit() if env.node_id == "n1"]
        assert shipped == [first]
    finally:
        await n2.close()
        for plane in (n1, carol):
            await plane.close()


async def test_closing_a_plane_on_purpose_warns_of_no_disconnection(
    nats_server: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Every CLI command closes its plane on the way out, and each printed `WARNING ...
    control plane <name>: disconnected` after its answer: a one-line error became two.
    A close on purpose is logged at DEBUG; a lost connection still warns."""
    plane = await nats_server.connect("alice")

    def said_now() -> list[tuple[int, str]]:
        records = caplog.records
        return [(r.levelno, r.getMessage()) for r in records if "disconnected" in r.getMessage()]

    with caplog.at_level(logging.DEBUG, logger="knightwatch.control.plane.nats"):
        await plane.close()
        await eventually(lambda: bool(said_now()), what="the close was logged")
        await asyncio.sleep(0.2)  # and nothing louder follows
    said = said_now()
    assert said and all(level == logging.DEBUG for level, _ in said), said


async def test_a_restarted_embedded_server_serves_the_stored_roster_not_its_owners_copy(
    tmp_path: Path,
) -> None:
    """Admins revoke n1 with a roster version stored in the bucket (`identity publish`
    writes nowhere else). The process that embeds the server (`knightwatch up`) restarts
    with its own copy of the cast, which predates the revocation: its server served that
    copy's users and only listened for versions stored after, so n1's revoked key logged
    in again with its permissions (the only check on some of its writes) until the next
    version. Now the server serves the stored versions once it is up."""
    state = tmp_path / "state"
    kit = Kit(now_ns=SystemClock().time_ns() - 1, nodes=("n1", "n2"))
    kit.write(state / "trust", private=list(kit.signers))
    admins = Kit.read(state / "trust")  # the admins' own copy: it moves on, `kit` does not
    admin = kit.signer("admin1")  # who stores roster versions
    async with control_plane([], state, "up", signer=admin, embed=kit) as plane:
        [url] = recorded_url(state)
        revoked = admins.revoke("n1", SystemClock().time_ns())
        key = f"v{admins.roster.version:06d}"
        await plane.put_record(Bucket.ROSTER, key, encode_envelope(revoked))

        async def n1_refused() -> bool:
            try:
                nc = await _login_at(url, kit.signer("n1"))
            except nats.errors.Error:
                return True
            await nc.close()
            return False

        await _eventually(n1_refused, "the running server kept serving a revoked key")
    assert kit.roster.version == 1  # what the restarted owner holds
    async with control_plane([], state, "up", signer=admin, embed=kit):
        [url] = recorded_url(state)
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await _login_at(url, kit.signer("n1"))
        n2 = await _login_at(url, kit.signer("n2"))
        await n2.close()
