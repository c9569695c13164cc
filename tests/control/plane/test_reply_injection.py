"""Publish permissions judge a message's subject, never its reply subject, and JetStream
answers each API request and each stored publish (its ack) on the reply subject the sender
chose. With the streams in the roster's own account, that answer was stored wherever the
reply named: a node, or a viewer, wrote into the kill state, the roster, another node's
records. The streams now live in an account of their own (`authz.STORE_ACCOUNT`)."""

from __future__ import annotations

import asyncio

import pytest

from knightwatch.control.plane.nats import connect_as
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import ENCODER, SUBJECT_CHALLENGE, NodeStarts, starts_key
from knightwatch.control.site import Site

TARGETS = (
    "$KV.kw_state.fleet.fleet",
    "$KV.kw_state.strategy.mm",
    "$KV.kw_roster.v999999",
    "$KV.kw_release.target",
    "$KV.kw_members.n2",
    "$KV.kw_incident.starts.n2",
    "$KV.kw_flags.state.f1",
    "kw.audit.n2",
)
"""Subjects a stream stores: none is a node's or a viewer's to write."""


@pytest.mark.parametrize("name", ["n1", "carol"])
async def test_no_identity_stores_a_server_answer_by_naming_a_stream_subject_as_its_reply(
    nats_server: Site, name: str
) -> None:
    """n1 (a node) and carol (a viewer) each send a JetStream API request and a write to a
    subject they may write (n1 its membership key), with a reply subject in the kill state,
    the roster, the release, another node's records. Before, the server stored its answer
    there: the fleet slot read as an undecodable halt, n2's start history as garbage, a
    roster version 999999 appeared. Now nothing of it is stored, and what n2 wrote stays."""
    n2 = await nats_server.connect("n2")
    alice = await nats_server.connect("alice")
    mine = ENCODER.encode(NodeStarts("n2", (1, 2, 3)))
    revision = await n2.put_record(Bucket.INCIDENT, starts_key("n2"), mine)
    rogue = await connect_as(
        nats_server.signer(name), [nats_server.url], name=name, allow_reconnect=False
    )
    try:
        for reply in TARGETS:
            await rogue.publish("$JS.API.INFO", b"", reply=reply)
            await rogue.publish("$JS.API.STREAM.INFO.KV_kw_state", b"", reply=reply)
            if name == "n1":
                await rogue.publish("$KV.kw_members.n1", b"{}", reply=reply)
        await rogue.flush(timeout=10)
        # the server has answered the rogue's own requests since (answers come in order of
        # the requests' handling: a real one answered means the earlier ones were too)
        await rogue.request("$JS.API.INFO", b"", timeout=10)
        await asyncio.sleep(0.3)
        assert await alice.states() == {}
        roster = await alice.records(Bucket.ROSTER)
        assert "v999999" not in roster
        assert await alice.get_record(Bucket.RELEASE, "target") == (None, 0)
        assert await alice.get_record(Bucket.INCIDENT, starts_key("n2")) == (mine, revision)
        assert [m.node_id for m in await alice.members() if m.node_id == "n2"] == []
        assert await alice.get_record(Bucket.FLAGS, "state.f1") == (None, 0)
        assert [env for _, env in await alice.audit() if env.node_id == "n2"] == []
    finally:
        await rogue.close()
        await n2.close()
        await alice.close()


async def test_a_responder_never_answers_on_a_reply_that_is_no_inbox(nats_server: Site) -> None:
    """A responder may publish its answer on any reply subject (`allow_responses`: the
    server ignores deny lists for it), so n1 asking the admission service for a challenge
    with the reply `$KV.kw_state.fleet.fleet` had the service's answer stored as the
    fleet's kill state (undecodable: every node halted). Answers go to inboxes only."""
    admission = await nats_server.connect("admission")
    alice = await nats_server.connect("alice")
    answered: list[bytes] = []

    async def responder(data: bytes) -> bytes:
        answered.append(data)
        return b'{"junk": true}'

    await admission.serve(SUBJECT_CHALLENGE, responder)
    rogue = await connect_as(
        nats_server.signer("n1"), [nats_server.url], name="n1", allow_reconnect=False
    )
    try:
        for reply in TARGETS[:6]:
            await rogue.publish(f"kw.req.{SUBJECT_CHALLENGE}", b"x", reply=reply)
        await rogue.flush(timeout=10)
        # a real request is answered: the service heard the rogue's before it
        answer = await rogue.request(f"kw.req.{SUBJECT_CHALLENGE}", b"real", timeout=10)
        assert answer.data == b'{"junk": true}'
        assert answered == [b"real"]
        assert await alice.states() == {}
        assert "v999999" not in await alice.records(Bucket.ROSTER)
        assert await alice.get_record(Bucket.RELEASE, "target") == (None, 0)
    finally:
        await rogue.close()
        await admission.close()
        await alice.close()
