"""One contract, two backends: MemoryControlPlane and NatsControlPlane must agree."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from knightwatch.control.plane.history import MALFORMED_KEY, held_halted
from knightwatch.control.plane.protocol import (
    ABSENT,
    STATE_HISTORY,
    ControlPlaneUnavailable,
    RevisionConflict,
)
from knightwatch.control.plane.wire import (
    ENCODER,
    AuditEnvelope,
    Confirmation,
    NodeMetrics,
    NodeStatus,
    StateEntry,
)
from knightwatch.control.site import Site
from knightwatch.state import Scope, TradingState

from ...identities import NODE_IDS
from ..conftest import Backend
from ..helpers import entry, eventually


def status(node_id: str, seen_ns: int = 10) -> NodeStatus:
    return NodeStatus(
        node_id=node_id,
        host="h",
        pid=1,
        started_ns=1,
        seen_ns=seen_ns,
        lease_expires_ns=seen_ns + 100,
        admitted=True,
        armed=True,
        node_state=TradingState.ACTIVE,
    )


async def test_state_round_trip_and_revisions(backend: Backend) -> None:
    plane = await backend.plane()
    assert await plane.get_state(Scope.FLEET, "fleet") == (None, ABSENT)
    halted = entry()
    rev1 = await plane.put_state(halted)
    got, rev = await plane.get_state(Scope.FLEET, "fleet")
    assert got == halted and rev == rev1 > 0
    resumed = entry(state=TradingState.ACTIVE, command_id="c2", issued_ns=2)
    rev2 = await plane.put_state(resumed)
    assert rev2 > rev1
    assert (await plane.states())[halted.slot] == (resumed, rev2)


async def test_compare_and_swap_refuses_stale_revision(backend: Backend) -> None:
    a = await backend.plane()
    b = await backend.plane()
    rev = await a.put_state(entry(scope=Scope.SYMBOL, key="BRK.B"), expected_revision=ABSENT)
    with pytest.raises(RevisionConflict):
        await b.put_state(entry(scope=Scope.SYMBOL, key="BRK.B"), expected_revision=ABSENT)
    await b.put_state(entry(scope=Scope.SYMBOL, key="BRK.B", command_id="c2"), rev)
    with pytest.raises(RevisionConflict):
        await a.put_state(entry(scope=Scope.SYMBOL, key="BRK.B", command_id="c3"), rev)
    got, _ = await a.get_state(Scope.SYMBOL, "BRK.B")
    assert got is not None and got.command_id == "c2"


async def test_states_lists_every_slot_including_odd_keys(backend: Backend) -> None:
    plane = await backend.plane()
    keys = [(Scope.STRATEGY, "peg v2"), (Scope.SYMBOL, "BTC/USD"), (Scope.NODE, "n-1")]
    for scope, key in keys:
        await plane.put_state(entry(scope=scope, key=key))
    found = {(e.scope, e.key) for e, _ in (await plane.states()).values()}
    assert found == set(keys)


async def test_announce_and_put_both_reach_other_connections(backend: Backend) -> None:
    sender = await backend.plane()
    receiver = await backend.plane()
    seen: list[StateEntry] = []

    async def on_state(e: StateEntry) -> None:
        seen.append(e)

    await receiver.subscribe_states(on_state)
    fast = entry(command_id="fast")
    await sender.announce_state(fast)
    await eventually(lambda: fast in seen)
    durable = entry(command_id="durable", issued_ns=5)
    await sender.put_state(durable)
    await eventually(lambda: durable in seen)
    assert seen.count(fast) == 1  # announced, never stored
    assert await sender.get_state(Scope.FLEET, "fleet") == (
        durable,
        (await sender.states())[durable.slot][1],
    )


async def test_confirmations_heartbeats_metrics_fan_out(backend: Backend) -> None:
    node = await backend.plane("n1")
    operator = await backend.plane("alice")
    confirmations: list[Confirmation] = []
    beats: list[NodeStatus] = []
    metrics: list[NodeMetrics] = []

    async def on_confirm(c: Confirmation) -> None:
        confirmations.append(c)

    async def on_beat(s: NodeStatus) -> None:
        beats.append(s)

    async def on_metrics(m: NodeMetrics) -> None:
        metrics.append(m)

    await operator.subscribe_confirmations(on_confirm)
    await operator.subscribe_heartbeats(on_beat)
    await operator.subscribe_metrics(on_metrics)
    c = Confirmation("c1", "n1", Scope.FLEET, "all", TradingState.HALTED, 7)
    await node.confirm(c)
    await node.heartbeat(status("n1"))
    m = NodeMetrics("n1", 5, 10, 9, 1, 4, 1000.0, -3.5, True, 0, {"rate_node": 1})
    await node.publish_metrics(m)
    await eventually(lambda: confirmations == [c] and beats == [status("n1")] and metrics == [m])


async def test_a_node_hears_its_own_heartbeat_subject_only(backend: Backend) -> None:
    n1, n2 = await backend.plane("n1"), await backend.plane("n2")
    heard: list[str] = []

    async def on_beat(s: NodeStatus) -> None:
        heard.append(s.node_id)

    await n1.subscribe_heartbeats(on_beat, node_id="n1")
    await n2.heartbeat(status("n2"))
    await n1.heartbeat(status("n1"))
    await eventually(lambda: heard == ["n1"])
    await asyncio.sleep(0.05)
    assert heard == ["n1"], "another node's heartbeat reached a node"


async def test_membership_is_durable_and_sorted(backend: Backend) -> None:
    n1, n2 = await backend.plane("n1"), await backend.plane("n2")
    await n2.put_member(status("n2"))
    await n1.put_member(status("n1"))
    await n1.put_member(status("n1", seen_ns=20))
    plane = await backend.plane("carol")
    assert [(s.node_id, s.seen_ns) for s in await plane.members()] == [("n1", 20), ("n2", 10)]


async def test_audit_stream_keeps_order(backend: Backend) -> None:
    plane = await backend.plane("n1")
    viewer = await backend.plane("carol")  # a node ships its lines; it reads no one's back
    envelopes = [AuditEnvelope("n1", "i1", i, b"a%d\nb%d\n" % (i, i)) for i in range(1, 6)]
    seqs = [await plane.append_audit(env) for env in envelopes]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    got = await viewer.audit(start_seq=seqs[1], limit=3)
    assert [env for _, env in got] == envelopes[1:4]
    assert [line for _, env in got for line in env.lines()] == [
        b"a2",
        b"b2",
        b"a3",
        b"b3",
        b"a4",
        b"b4",
    ]
    assert [s for s, _ in got] == seqs[1:4]


async def test_audit_retry_lands_once_and_a_new_process_never_collides(backend: Backend) -> None:
    plane = await backend.plane("n1")
    first = AuditEnvelope("n1", "before-restart", 1, b"x\n")
    seq = await plane.append_audit(first)
    assert await plane.append_audit(first) == seq  # its acknowledgement was lost: sent again
    restarted = AuditEnvelope("n1", "after-restart", 1, b"y\n")
    assert await plane.append_audit(restarted) > seq
    viewer = await backend.plane("carol")
    assert [env for _, env in await viewer.audit()] == [first, restarted]


async def test_outage_fails_closed_and_durable_state_survives(backend: Backend) -> None:
    plane = await backend.plane()
    events: list[bool] = []

    async def on_connection(up: bool) -> None:
        events.append(up)

    plane.on_connection(on_connection)
    killed = entry(command_id="kill-1")
    await plane.put_state(killed)
    await backend.outage()
    await eventually(lambda: events[-1:] == [False], what="the plane said it was down")
    assert not plane.connected
    with pytest.raises(ControlPlaneUnavailable):
        await plane.ping(0.2)
    with pytest.raises(ControlPlaneUnavailable):
        await plane.announce_state(entry(command_id="lost"))
    await backend.restore()
    await eventually(lambda: events[-1:] == [True], what="the plane said it was back")
    await plane.ping(10.0)  # expected to answer: a loaded machine may take seconds
    assert (await plane.get_state(Scope.FLEET, "fleet"))[0] == killed
    fresh = await backend.plane()
    assert (await fresh.get_state(Scope.FLEET, "fleet"))[0] == killed


async def test_snapshots_are_complete_while_other_keys_change(backend: Backend) -> None:
    """Every listing holds every stored member and slot, even while writers keep updating.

    A listing that ended early would let a resyncing node miss a stored halt, or let a kill
    stop waiting for a member it did not list.
    """
    writer = await backend.plane()
    reader = await backend.plane()
    ids = sorted(NODE_IDS)  # each membership record is written by its own node's login
    nodes = {node_id: await backend.plane(node_id) for node_id in ids}
    for node_id in ids:
        await nodes[node_id].put_member(status(node_id))
        await writer.put_state(entry(scope=Scope.SYMBOL, key=f"S{node_id}"))
    stop = asyncio.Event()

    async def churn() -> None:
        seen = 10
        while not stop.is_set():
            seen += 1
            node_id = ids[seen % len(ids)]
            await nodes[node_id].put_member(status(node_id, seen_ns=seen))
            await asyncio.sleep(0)

    task = asyncio.create_task(churn())
    try:
        for _ in range(40):
            assert [m.node_id for m in await reader.members()] == ids
            assert len(await reader.states()) == len(ids)
    finally:
        stop.set()
        await task


async def test_previous_state_reads_the_write_just_before_a_revision(backend: Backend) -> None:
    plane = await backend.plane()
    other = await plane.put_state(entry(scope=Scope.SYMBOL, key="AAPL"))
    rev1 = await plane.put_state(entry(command_id="k1"))
    await plane.put_state(entry(scope=Scope.SYMBOL, key="AAPL", command_id="x"))
    rev2 = await plane.put_state(entry(state=TradingState.ACTIVE, command_id="r1", issued_ns=2))
    rev3 = await plane.put_state(entry(command_id="k2", issued_ns=3))
    assert await plane.previous_state(Scope.FLEET, "fleet", rev1) is None  # its first write
    assert await plane.previous_state(Scope.FLEET, "fleet", rev2) == (entry(command_id="k1"), rev1)
    before = await plane.previous_state(Scope.FLEET, "fleet", rev3)
    assert before is not None and before[1] == rev2 and before[0] is not None
    assert before[0].command_id == "r1"
    assert await plane.previous_state(Scope.FLEET, "fleet", rev3 + 1) is not None
    assert await plane.previous_state(Scope.SYMBOL, "AAPL", other) is None


async def test_previous_state_history_is_bounded(backend: Backend) -> None:
    """The store keeps the last STATE_HISTORY writes of a slot; older ones are gone."""
    plane = await backend.plane()
    revisions = [
        await plane.put_state(entry(command_id=f"c{i}", issued_ns=i + 1))
        for i in range(STATE_HISTORY + 2)
    ]
    kept = revisions[-STATE_HISTORY:]
    assert await plane.previous_state(Scope.FLEET, "fleet", kept[0]) is None
    assert await plane.previous_state(Scope.FLEET, "fleet", revisions[1]) is None
    found = await plane.previous_state(Scope.FLEET, "fleet", kept[1])
    assert found is not None and found[1] == kept[0]
    history = await plane.state_history(Scope.FLEET, "fleet", revisions[-1] + 1)
    assert [rev for _, rev in history] == kept  # oldest first, the kept ones only
    assert [e.command_id for e, _ in history if e is not None] == [
        f"c{i}" for i in range(2, STATE_HISTORY + 2)
    ]


async def test_state_history_lists_a_slot_s_writes_before_a_revision(backend: Backend) -> None:
    plane = await backend.plane()
    await plane.put_state(entry(scope=Scope.SYMBOL, key="AAPL"))
    rev1 = await plane.put_state(entry(command_id="k1"))
    rev2 = await plane.put_state(entry(state=TradingState.ACTIVE, command_id="r1", issued_ns=2))
    rev3 = await plane.put_state(entry(command_id="k2", issued_ns=3))
    assert await plane.state_history(Scope.FLEET, "fleet", rev1) == []
    history = await plane.state_history(Scope.FLEET, "fleet", rev3)
    assert [(e.command_id if e else None, rev) for e, rev in history] == [
        ("k1", rev1),
        ("r1", rev2),
    ]


async def test_stored_ns_is_the_store_s_write_time_not_the_entry_s(backend: Backend) -> None:
    """The time a resume is judged at when read from the store: the server's, which
    nothing in the stored bytes sets (this entry claims it was issued at 2 ns)."""
    plane = await backend.plane()
    before = time.time_ns()
    rev = await plane.put_state(entry(state=TradingState.ACTIVE, command_id="r1", issued_ns=2))
    other = await plane.put_state(entry(scope=Scope.SYMBOL, key="AAPL"))
    stored = await plane.stored_ns(Scope.FLEET, "fleet", rev)
    assert stored is not None and before - 1_000_000 <= stored <= time.time_ns()
    assert await plane.stored_ns(Scope.FLEET, "fleet", other) is None  # another slot's write
    assert await plane.stored_ns(Scope.FLEET, "fleet", other + 100) is None  # no such write


async def test_snapshots_leave_no_consumer_on_the_server(nats_server: Site) -> None:
    """Each listing reads through a consumer of its own, which the server would keep for
    minutes after the read: a console refreshing every second filled the stream's
    1,000-consumer limit, and every later watch, resume request and resync failed. The
    listing deletes its consumer as it ends."""
    plane = await nats_server.connect("alice")
    node = await nats_server.connect(sorted(NODE_IDS)[0])
    try:
        await node.put_member(status(sorted(NODE_IDS)[0]))
        await plane.put_state(entry(scope=Scope.SYMBOL, key="AAPL"))
        for _ in range(60):
            assert len(await plane.states()) == 1
            assert len(await plane.members()) == 1
        js = plane._require_js()
        for stream in ("KV_kw_state", "KV_kw_members"):
            assert (await js.stream_info(stream)).state.consumer_count == 0
    finally:
        await plane.close()
        await node.close()


async def test_a_deleted_slot_reads_as_written_not_as_never_written(nats_server: Site) -> None:
    """Kill-state write rights include deleting a slot (NATS cannot tell a delete from a
    put by subject). Every reader holds a deleted slot halted, and `get_state` must say it
    was written (the marker's revision, as `states` does), or the kill switch refuses to
    resume it as "not halted" while every node holds it halted. Before, nats-py's "key not
    found" for a delete marker read as `ABSENT`. (The memory backend has no deletes.)"""
    plane = await nats_server.connect("alice")
    try:
        halted = entry(scope=Scope.SYMBOL, key="DEL")
        written = await plane.put_state(halted)
        await plane._state_kv().delete(halted.slot)
        got, revision = await plane.get_state(Scope.SYMBOL, "DEL")
        assert got is None and revision > written
        assert (await plane.states())[halted.slot] == (None, revision)
        # what a resume decided on the marker compares against
        assert await plane.put_state(halted, expected_revision=revision) > revision
    finally:
        await plane.close()


async def test_an_unreadable_membership_record_is_listed_not_dropped(
    nats_server: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """A membership record that does not decode, or that names another node than its key,
    is listed under its key as unreadable (no lease, not admitted, halted, the reason code
    in `last_refusal`) and logged once per stored write, however often the fleet is read.
    Before, `members()` dropped it: the node vanished from `status`, the console and the
    kill switch's targets, and a kill reported every node confirmed without it. (The
    memory backend stores statuses, never bytes.)"""
    n1 = await nats_server.connect("n1")
    n2 = await nats_server.connect("n2")
    n3 = await nats_server.connect("n3")
    carol = await nats_server.connect("carol")
    try:
        await n1._members.put("n1", b'{"node_id": "n1", "pid": "oops"')  # type: ignore[union-attr]
        await n2._members.put("n2", ENCODER.encode(status("n3")))  # type: ignore[union-attr]
        await n3.put_member(status("n3"))
        caplog.set_level(logging.ERROR, logger="knightwatch.control.plane.nats")
        for _ in range(3):
            listed = {m.node_id: m for m in await carol.members()}
            assert sorted(listed) == ["n1", "n2", "n3"]
            assert listed["n3"] == status("n3")
            assert listed["n1"].last_refusal.startswith("member_undecodable: ")
            assert listed["n2"].last_refusal.startswith("member_forged: ")
            assert "'n3'" in listed["n2"].last_refusal
            for m in (listed["n1"], listed["n2"]):
                assert (m.admitted, m.armed, m.node_state) == (False, False, TradingState.HALTED)
                assert not m.live(time.time_ns(), 0)
        logged = [
            r.getMessage() for r in caplog.records if "listed as unreadable" in r.getMessage()
        ]
        assert len(logged) == 2
        assert any(line.startswith("MEMBER_UNDECODABLE key=n1 ") for line in logged)
        assert any(line.startswith("MEMBER_FORGED key=n2 ") for line in logged)
    finally:
        for plane in (n1, n2, n3, carol):
            await plane.close()


async def test_a_kill_state_key_with_extra_dots_is_listed_and_logged_once_as_malformed(
    nats_server: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Kill-state write rights reach any key of the bucket, and `strategy.a.b` is no slot
    (a strategy `a.b` is stored hex-encoded): no kill or resume addresses such a key. The
    store's reader lists every one, an entry or a delete marker, and logs it once per
    write as `STATE_KEY_MALFORMED` with its key, however often the fleet is read; the
    halt readers hold refuses it naming the same code. Before, nothing said so: a deleted
    one vanished from every reader without a word."""
    alice = await nats_server.connect("alice")
    try:
        kv = alice._state_kv()
        signed = ENCODER.encode(entry(scope=Scope.STRATEGY, key="a.b"))
        await kv.put("strategy.a.b", signed)
        await kv.put("strategy.x.y", signed)
        await kv.delete("strategy.x.y")
        await kv.put("fleet.x", signed)
        await kv.delete("fleet.x")  # a purge is a roll-up, which the bucket refuses
        caplog.set_level(logging.ERROR, logger="knightwatch.control.plane.nats")
        for _ in range(3):
            states = await alice.states()
            assert sorted(states) == ["fleet.x", "strategy.a.b", "strategy.x.y"]
            for slot, (_, revision) in states.items():
                with pytest.raises(ValueError, match=MALFORMED_KEY):
                    held_halted(slot, revision, "deleted")
        malformed = [
            r.getMessage()
            for r in caplog.records
            if r.getMessage().startswith(MALFORMED_KEY.upper())
        ]
        assert sorted(line.split()[1] for line in malformed) == [
            "key=fleet.x",
            "key=strategy.a.b",
            "key=strategy.x.y",
        ]
    finally:
        await alice.close()
