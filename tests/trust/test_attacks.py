"""The attacks from the issue, each against real processes and a real nats-server with
authorization on: none of them does harm any more."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import nats.errors
import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.approvals import Requests
from knightwatch.control.fleet.killswitch import KillSwitch, KillSwitchError
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.plane.nats import NatsControlPlane, connect_as
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.plane.wire import (
    ENCODER,
    FLEET_KEY,
    Confirmation,
    NodeStatus,
    StateEntry,
)
from knightwatch.control.site import Site
from knightwatch.release.keys import SigningKey
from knightwatch.sim.drill.processes import NodeProcesses, wait_admitted
from knightwatch.state import Scope, TradingState
from knightwatch.trust.identity import Signer

NODES = ["n1", "n2", "n3"]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = Site(tmp_path, NODES)
    await s.astart()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
async def fleet(site: Site, tmp_path: Path) -> AsyncIterator[NodeProcesses]:
    procs = NodeProcesses([site.url], tmp_path, policy=LeasePolicy(), trust_dir=site.trust_dir)
    for n in NODES:
        procs.spawn(n)
    plane = await site.connect("carol")
    try:
        await wait_admitted(plane, NODES, SystemClock())
        yield procs
    finally:
        await plane.close()
        procs.stop()


async def states_of(plane: NatsControlPlane) -> dict[str, TradingState]:
    return {m.node_id: m.node_state for m in await plane.members()}


async def until(plane: NatsControlPlane, want: TradingState, timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if all(s is want for s in (await states_of(plane)).values()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nodes not all {want.name}: {await states_of(plane)}")


async def test_unauthenticated_client_cannot_connect(site: Site) -> None:
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(site.url, allow_reconnect=False, max_reconnect_attempts=0)


async def test_unknown_key_cannot_connect(site: Site) -> None:
    stranger = Signer("n2", SigningKey.generate())
    plane = NatsControlPlane(site.url, name="stranger", signer=stranger)
    with pytest.raises(ControlPlaneUnavailable):
        await plane.connect()


async def test_forged_resume_and_bucket_write_do_not_lift_a_kill(
    site: Site, fleet: NodeProcesses
) -> None:
    alice = await site.connect("alice")
    carol = await site.connect("carol")
    try:
        ks = site.killswitch(alice, "alice")
        kill = await ks.kill(Scope.FLEET, FLEET_KEY, "incident")
        assert kill.ok and sorted(kill.latencies_ms) == NODES
        await until(carol, TradingState.HALTED)
        now = SystemClock().time_ns()
        forged = StateEntry(
            Scope.FLEET, FLEET_KEY, TradingState.ACTIVE, "lift", "alice", uuid.uuid4().hex, now,
            now + 10**10, supersedes=kill.entry.command_id,
        )  # fmt: skip
        # alice's NATS credentials, but no second signature: on the fast path and in the store
        await alice.announce_state(forged.signed(site.signer("alice").key))
        await alice.put_state(forged.signed(site.signer("alice").key))
        # a viewer cannot even publish on the kill-state subject (the server drops it)
        await carol.announce_state(forged)
        await asyncio.sleep(0.5)
        assert set((await states_of(carol)).values()) == {TradingState.HALTED}
        refused = {m.node_id: m.refused for m in await carol.members()}
        assert all(refused[n] >= 1 for n in NODES), refused
    finally:
        await alice.close()
        await carol.close()


async def test_forged_halt_by_a_viewer_is_refused(site: Site, fleet: NodeProcesses) -> None:
    alice = await site.connect("alice")
    carol = await site.connect("carol")
    try:
        now = SystemClock().time_ns()
        halt = StateEntry(
            Scope.FLEET, FLEET_KEY, TradingState.HALTED, "forged", "carol", uuid.uuid4().hex,
            now, now + 10**10,
        ).signed(site.signer("carol").key)  # fmt: skip
        await alice.announce_state(halt)  # delivered by someone allowed to publish
        await asyncio.sleep(0.5)
        assert set((await states_of(carol)).values()) == {TradingState.ACTIVE}
        assert all(m.refused >= 1 for m in await carol.members())
    finally:
        await alice.close()
        await carol.close()


async def test_forged_confirmation_and_membership_cannot_be_sent(
    site: Site, fleet: NodeProcesses
) -> None:
    """n1's identity cannot speak for n3: the server refuses n3's subjects to it."""
    p = await site.connect("carol")
    n3 = {m.node_id: m for m in await p.members()}["n3"]
    await p.close()
    os.kill(fleet.procs["n3"].pid, signal.SIGSTOP)  # frozen: a forger covers for it
    nc = await connect_as(site.signer("n1"), [site.url], name="forger")
    alice = await site.connect("alice")
    try:
        ks = site.killswitch(alice, "alice")
        await ks.start()
        task = asyncio.create_task(
            ks.kill(Scope.FLEET, FLEET_KEY, "frozen n3", targets=NODES, timeout_s=1.0)
        )
        await asyncio.sleep(0.1)
        for command_id in list(ks._arrivals):
            fake = Confirmation(command_id, "n3", Scope.FLEET, FLEET_KEY, TradingState.HALTED, 1)
            await nc.publish("kw.confirm.n3", ENCODER.encode(fake))
            await nc.publish("kw.confirm.n1", ENCODER.encode(fake))
        left = msgspec.structs.replace(n3, left=True)
        await nc.publish("$KV.kw_members.n3", ENCODER.encode(left))
        result = await task
        assert result.missing == ["n3"], result
        members = {m.node_id: m for m in await alice.members()}
        assert not members["n3"].left
    finally:
        await nc.close()
        await alice.close()


async def test_duplicate_node_id_is_refused_at_join(site: Site, fleet: NodeProcesses) -> None:
    other = fleet.state_dir / "elsewhere.jsonl"
    proc = fleet.spawn("n2", ["--recorder", str(other)])  # the same key, a second process
    await asyncio.to_thread(proc.wait, 20)
    assert proc.returncode != 0
    log = (fleet.state_dir / "logs" / "n2.log").read_text()
    assert "node id n2 is held by a live process" in log


async def test_a_refused_duplicate_leaves_the_live_holders_membership_alone(
    site: Site, fleet: NodeProcesses
) -> None:
    """The refused process's stop wrote `left` over the live holder's membership: until
    the holder put it again, kills, the resume preflight and the console took n2 for gone."""
    proc = fleet.spawn("n2", ["--recorder", str(fleet.state_dir / "again.jsonl")])
    await asyncio.to_thread(proc.wait, 20)
    assert proc.returncode != 0
    p = await site.connect("carol")
    try:
        n2 = {m.node_id: m for m in await p.members()}["n2"]
        assert not n2.left, n2
        assert n2.pid == fleet.procs["n2"].pid  # the live holder's record, as it put it
    finally:
        await p.close()


async def test_a_node_hears_another_process_heartbeating_under_its_id(site: Site) -> None:
    """A node may subscribe only to its own heartbeat subject: that is where a second
    process holding its key shows up (a wildcard would be refused by the server)."""
    mine = await site.connect("n1")
    other = await site.connect("n1")  # the same key in a second process
    heard: list[NodeStatus] = []

    async def on_heartbeat(status: NodeStatus) -> None:
        heard.append(status)

    try:
        await mine.subscribe_heartbeats(on_heartbeat, node_id="n1")
        now = SystemClock().time_ns()
        status = NodeStatus("n1", "elsewhere", 4242, now, now, now + 10**9, True, True,
                            TradingState.ACTIVE, instance="second")  # fmt: skip
        for _ in range(40):
            await other.heartbeat(status)
            if heard:
                break
            await asyncio.sleep(0.05)
        assert [h.instance for h in heard[:1]] == ["second"]
    finally:
        await mine.close()
        await other.close()


async def test_two_person_resume_self_approval_and_stale(site: Site, fleet: NodeProcesses) -> None:
    alice = await site.connect("alice")
    bob = await site.connect("bob")
    carol = await site.connect("carol")
    try:
        ks_a = site.killswitch(alice, "alice")
        assert (await ks_a.kill(Scope.FLEET, FLEET_KEY, "incident")).ok
        request = await Requests(ks_a).create(Scope.FLEET, FLEET_KEY, "fixed")
        with pytest.raises(KillSwitchError, match="requester never counts"):
            await Requests(ks_a).approve(request.id)
        with pytest.raises(KillSwitchError, match="approver role"):
            await Requests(site.killswitch(carol, "carol")).approve(request.id)
        # a second kill moves the slot: the request is stale
        assert (await ks_a.kill(Scope.FLEET, FLEET_KEY, "again")).ok
        with pytest.raises(KillSwitchError, match="stale"):
            await Requests(site.killswitch(bob, "bob")).approve(request.id)
        await until(carol, TradingState.HALTED)
        fresh = await Requests(ks_a).create(Scope.FLEET, FLEET_KEY, "fixed, really")
        result = await Requests(site.killswitch(bob, "bob")).approve(fresh.id)
        assert result.ok and sorted(result.latencies_ms) == NODES
        await until(carol, TradingState.ACTIVE)
    finally:
        for p in (alice, bob, carol):
            await p.close()


async def test_one_person_with_two_keys_is_one_person(site: Site, fleet: NodeProcesses) -> None:
    second = SigningKey.generate()
    envelope = site.kit.add("alice", site.kit.roster.keys_of("alice")[0].roles, key=second)
    await site.publish(envelope)
    alice = await site.connect("alice")
    carol = await site.connect("carol")
    try:
        ks = site.killswitch(alice, "alice")
        await asyncio.sleep(0.3)
        assert (await ks.kill(Scope.FLEET, FLEET_KEY, "incident")).ok
        ks.trust = site.store()
        entry = (await ks.request_resume(Scope.FLEET, FLEET_KEY, "me twice")).cosigned(second)
        with pytest.raises(KillSwitchError, match="approval_missing"):
            await ks.apply_resume(entry)
        await alice.put_state(entry)  # straight into the store: the nodes refuse it
        await asyncio.sleep(0.5)
        assert set((await states_of(carol)).values()) == {TradingState.HALTED}
    finally:
        await alice.close()
        await carol.close()


async def test_revoked_key_and_rotation_without_restart(site: Site, fleet: NodeProcesses) -> None:
    carol = await site.connect("carol")
    try:
        now = SystemClock().time_ns()
        _, rotated = site.kit.rotate("alice", now)
        await site.publish(rotated)
        await asyncio.sleep(0.5)
        new_alice = await site.connect("alice")
        ks = site.killswitch(new_alice, "alice")
        assert (await ks.kill(Scope.FLEET, FLEET_KEY, "new key works")).ok
        await until(carol, TradingState.HALTED)
        await ks.resume(Scope.FLEET, FLEET_KEY, "ok", approvers=(site.signer("bob"),))
        await until(carol, TradingState.ACTIVE)
        revoked = site.kit.revoke("bob", SystemClock().time_ns())
        await site.publish(revoked)
        await asyncio.sleep(0.5)
        assert (await ks.kill(Scope.FLEET, FLEET_KEY, "again")).ok
        entry = await ks.request_resume(Scope.FLEET, FLEET_KEY, "bob is gone")
        await new_alice.put_state(entry.cosigned(site.signer("bob").key))
        await asyncio.sleep(0.5)
        assert set((await states_of(carol)).values()) == {TradingState.HALTED}
        await new_alice.close()
    finally:
        await carol.close()


async def test_replayed_and_expired_resumes_are_refused(site: Site, fleet: NodeProcesses) -> None:
    alice = await site.connect("alice")
    carol = await site.connect("carol")
    try:
        kill = await site.killswitch(alice, "alice").kill(Scope.FLEET, FLEET_KEY, "stop")
        assert kill.ok
        await until(carol, TradingState.HALTED)
        now = SystemClock().time_ns()
        old = StateEntry(
            Scope.FLEET, FLEET_KEY, TradingState.ACTIVE, "yesterday", "alice", uuid.uuid4().hex,
            now - 3 * 10**9, now - 2 * 10**9, supersedes=kill.entry.command_id,
        ).signed(site.signer("alice").key, site.signer("bob").key)  # fmt: skip
        await alice.announce_state(old)
        await asyncio.sleep(0.5)
        assert set((await states_of(carol)).values()) == {TradingState.HALTED}
        reasons = {m.last_refusal.split(":")[0] for m in await carol.members()}
        assert reasons == {"expired"}
    finally:
        await alice.close()
        await carol.close()


async def test_a_kill_from_a_lagging_clock_still_stops_every_node(
    site: Site, fleet: NodeProcesses
) -> None:
    """The stop direction is never refused for its clock: an hour-old kill still halts."""
    alice = await site.connect("alice")
    carol = await site.connect("carol")
    try:
        now = SystemClock().time_ns()
        late = StateEntry(
            Scope.FLEET, FLEET_KEY, TradingState.HALTED, "lagging clock", "alice",
            uuid.uuid4().hex, now - 3600 * 10**9, now - 3540 * 10**9,
        ).signed(site.signer("alice").key)  # fmt: skip
        await alice.announce_state(late)
        await until(carol, TradingState.HALTED)
    finally:
        await alice.close()
        await carol.close()


async def replace(fleet: NodeProcesses, plane: NatsControlPlane, node: str) -> None:
    """Stop `node`'s process and start it again on an empty disk (a replacement host: no
    flight recorder to restore halts from), so all it knows comes from the store."""
    before = {m.node_id: m.instance for m in await plane.members()}[node]
    fleet.stop(node)
    wiped = list((fleet.state_dir / "audit").glob(f"{node}.*"))
    assert wiped, "the node's flight recorder was not where expected"
    for path in wiped:
        path.unlink()
    fleet.spawn(node)
    for _ in range(200):
        now = {m.node_id: m for m in await plane.members()}[node]
        if now.instance != before and now.admitted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{node} did not come back admitted")


async def test_a_fleet_restarted_after_a_two_person_resume_trades(
    site: Site, fleet: NodeProcesses
) -> None:
    """The resume's history is intact (stored right over the kill it lifts): a node
    starting with an empty memory adopts it."""
    alice = await site.connect("alice")
    carol = await site.connect("carol")
    try:
        ks = site.killswitch(alice, "alice")
        assert (await ks.kill(Scope.FLEET, FLEET_KEY, "incident")).ok
        resumed = await ks.resume(Scope.FLEET, FLEET_KEY, "fixed", approvers=(site.signer("bob"),))
        assert resumed.ok
        await until(carol, TradingState.ACTIVE)
        await replace(fleet, carol, "n3")
        await asyncio.sleep(0.3)
        n3 = {m.node_id: m for m in await carol.members()}["n3"]
        assert n3.node_state is TradingState.ACTIVE and n3.admitted
        assert n3.refused == 0, n3.last_refusal
    finally:
        await alice.close()
        await carol.close()


async def test_an_old_approved_resume_stored_again_over_a_new_kill_lifts_nothing(
    site: Site, fleet: NodeProcesses
) -> None:
    """Kill K1, resume R1 (two people), kill K2; then someone with kill-state write rights
    puts R1's exact signed entry back. R1 verifies (signatures, roles, freshness), but the
    store's history shows it was decided on K1, not written over K2: running nodes and a
    node restarting with an empty memory all stay halted and report the replay, and a new
    two-person resume still lifts the slot on every node."""
    alice = await site.connect("alice")
    carol = await site.connect("carol")
    try:
        ks = site.killswitch(alice, "alice")
        assert (await ks.kill(Scope.FLEET, FLEET_KEY, "first incident")).ok
        r1 = await ks.resume(Scope.FLEET, FLEET_KEY, "fixed", approvers=(site.signer("bob"),))
        assert r1.ok
        await until(carol, TradingState.ACTIVE)
        assert (await ks.kill(Scope.FLEET, FLEET_KEY, "second incident")).ok
        await until(carol, TradingState.HALTED)
        await alice.put_state(r1.entry)  # a plain put, as an attacker would
        stored, _ = await carol.get_state(Scope.FLEET, FLEET_KEY)
        assert stored == r1.entry
        await asyncio.sleep(0.5)
        assert set((await states_of(carol)).values()) == {TradingState.HALTED}
        await replace(fleet, carol, "n3")
        await asyncio.sleep(0.5)
        members = {m.node_id: m for m in await carol.members()}
        assert {m.node_state for m in members.values()} == {TradingState.HALTED}
        assert members["n3"].refused == 1
        assert members["n3"].last_refusal.startswith("replayed:"), members["n3"].last_refusal
        assert "decided on revision" in members["n3"].last_refusal
        log_text = (fleet.state_dir / "logs" / "n3.log").read_text()
        assert "reason=replayed" in log_text
        # The operator's kill switch reads the slot as the nodes do (not trusted), so a
        # new two-person resume can be made: it halts the slot again with one signed kill
        # (the running nodes hold K2, n3 its own fail-closed halt) and lifts that on all.
        assert not (await ks.current(Scope.FLEET, FLEET_KEY))[2]
        again = await ks.resume(Scope.FLEET, FLEET_KEY, "fixed", approvers=(site.signer("bob"),))
        assert again.ok, (again.missing, again.durable_error)
        await until(carol, TradingState.ACTIVE)
    finally:
        await alice.close()
        await carol.close()


async def _deliver_as(nc: nats.NATS, stored_on: str, payload: bytes, deliver_to: str) -> int:
    """Store `payload` on a subject `nc`'s identity may write and ask the server to deliver
    it to `deliver_to` through a push consumer (anyone may create one, to any subject);
    returns how much of the stream the consumer delivered after a while. The streams live in
    an account of their own (`authz.STORE_ACCOUNT`): its deliveries reach the roster's
    account on inboxes alone, never on `deliver_to`."""
    ack = json.loads((await nc.request(stored_on, payload, timeout=2)).data)
    stream = ack["stream"]
    config = {"deliver_subject": deliver_to, "filter_subject": stored_on, "ack_policy": "none"}
    reply = await nc.request(
        f"$JS.API.CONSUMER.CREATE.{stream}",
        json.dumps({"stream_name": stream, "config": config}).encode(),
        timeout=2,
    )
    created = json.loads(reply.data)
    assert "error" not in created, created
    await asyncio.sleep(0.5)
    info = json.loads(
        (await nc.request(f"$JS.API.CONSUMER.INFO.{stream}.{created['name']}", b"")).data
    )
    return int(info["delivered"]["stream_seq"])


async def test_a_node_cannot_have_the_server_deliver_its_bytes_on_other_subjects(
    site: Site,
) -> None:
    """The server refuses n1 the subjects of n3 and the kill state, but anyone may create a
    push consumer delivering to any subject. n1 stores a heartbeat of n3, an old signed
    fleet kill and garbage on its own flag-confirmation subjects and asks for them on
    `kw.hb.n3`, `kw.state` and the stored kill state's republish subject: n3 must not hear
    a duplicate of itself, nor a node a kill or a stored halt from n1 (a node never halts
    the fleet). In one account with the streams the server delivered them; now the store's
    account delivers to inboxes alone, and the plane's own checks stand behind that."""
    n3 = await site.connect("n3")
    alice = await site.connect("alice")
    heard: list[NodeStatus] = []
    states: list[StateEntry] = []

    async def on_heartbeat(status: NodeStatus) -> None:
        heard.append(status)

    async def on_state(entry: StateEntry) -> None:
        states.append(entry)

    nc = await connect_as(site.signer("n1"), [site.url], name="forger")
    try:
        await n3.subscribe_heartbeats(on_heartbeat, node_id="n3")
        await n3.subscribe_states(on_state)
        now = SystemClock().time_ns()
        forged = NodeStatus("n3", "elsewhere", 4242, now, now, now + 10**9, True, True,
                            TradingState.ACTIVE, instance="forged")  # fmt: skip
        kill = StateEntry(
            Scope.FLEET, FLEET_KEY, TradingState.HALTED, "an old kill", "alice",
            uuid.uuid4().hex, now - 10**9, now + 59 * 10**9,
        ).signed(site.signer("alice").key)  # fmt: skip
        delivered = [
            await _deliver_as(
                nc, "$KV.kw_flags_applied.applied.n1.n3", ENCODER.encode(forged), "kw.hb.n3"
            ),
            await _deliver_as(
                nc, "$KV.kw_flags_applied.applied.n1.k", ENCODER.encode(kill), "kw.state"
            ),
            await _deliver_as(
                nc, "$KV.kw_flags_applied.applied.n1.r", b"garbage", "kw.repub.state.fleet.fleet"
            ),
        ]
        assert delivered == [0, 0, 0], "the store account delivered outside an inbox"
        # what n3's own process and an operator really send arrive after what was delivered
        real = msgspec.structs.replace(forged, instance="real")
        mark = msgspec.structs.replace(kill, scope=Scope.SYMBOL, key="MARK").signed(
            site.signer("alice").key
        )
        await n3.heartbeat(real)
        await alice.announce_state(mark)
        for _ in range(200):
            if [h.instance for h in heard] == ["real"] and [s.key for s in states] == ["MARK"]:
                break
            if len(heard) > 1 or len(states) > 1:
                break
            await asyncio.sleep(0.02)
        assert [h.instance for h in heard] == ["real"]
        assert [s.key for s in states] == ["MARK"]
    finally:
        await nc.close()
        await n3.close()
        await alice.close()


async def test_the_supervisor_cannot_lift_a_halt_and_a_node_cannot_write_the_kill_state(
    site: Site, fleet: NodeProcesses
) -> None:
    """The supervisor's credentials may write the kill state (it kills), but a resume it
    signs, even co-signed by an approver, lifts nothing, on the fast path or in the store,
    and deleting the slot leaves every node halted (a slot nobody can trust is held
    halted) while two people can still resume it. Before, the kill switch read a deleted
    slot as never written and refused that resume ("not halted; nothing to resume"). A
    node's credentials cannot write the kill state at all: an operator's signed fleet kill
    it replays on the fast path or into the store reaches nobody."""
    alice = await site.connect("alice")
    supervisor = await site.connect("supervisor")
    carol = await site.connect("carol")
    n1 = await connect_as(site.signer("n1"), [site.url], name="n1-forger")
    try:
        kill = await site.killswitch(alice, "alice").kill(Scope.FLEET, FLEET_KEY, "incident")
        assert kill.ok
        await until(carol, TradingState.HALTED)
        _, revision = await carol.get_state(Scope.FLEET, FLEET_KEY)
        now = SystemClock().time_ns()
        lift = StateEntry(
            Scope.FLEET, FLEET_KEY, TradingState.ACTIVE, "all clear", "supervisor",
            uuid.uuid4().hex, now, now + 60 * 10**9, supersedes=kill.entry.command_id,
            decided_on=revision,
        ).signed(site.signer("supervisor").key, site.signer("bob").key)  # fmt: skip
        await supervisor.announce_state(lift)
        await supervisor.put_state(lift, expected_revision=revision)
        await until(carol, TradingState.HALTED)
        for _ in range(100):
            members = await carol.members()
            if all(m.last_refusal.startswith("role_not_allowed") for m in members):
                break
            await asyncio.sleep(0.05)
        assert {m.last_refusal.split(":")[0] for m in members} == {"role_not_allowed"}
        # a delete marker is no resume either
        await supervisor._state_kv().delete(kill.entry.slot)
        stored, _ = await carol.get_state(Scope.FLEET, FLEET_KEY)
        assert stored is None
        await replace(fleet, carol, "n3")  # a node starting now learns only from the store
        await until(carol, TradingState.HALTED)
        # n1's credentials: the server drops the announcement and refuses the store write
        resumed = await site.killswitch(alice, "alice").resume(
            Scope.FLEET, FLEET_KEY, "fixed", approvers=(site.signer("bob"),)
        )
        assert resumed.ok, (resumed.missing, resumed.durable_error)
        await until(carol, TradingState.ACTIVE)
        payload = ENCODER.encode(kill.entry)
        await n1.publish("kw.state", payload)
        with pytest.raises(nats.errors.Error):
            await n1.request(f"$KV.kw_state.{kill.entry.slot}", payload, timeout=1)
        await n1.flush()
        stored, _ = await carol.get_state(Scope.FLEET, FLEET_KEY)
        assert stored == resumed.entry
        await replace(fleet, carol, "n2")  # nothing n1 sent is in the store either
        assert set((await states_of(carol)).values()) == {TradingState.ACTIVE}
    finally:
        await n1.close()
        for p in (alice, supervisor, carol):
            await p.close()


class _HourAhead(SystemClock):
    """A host whose wall clock runs an hour ahead."""

    def time_ns(self) -> int:
        return super().time_ns() + 3600 * 10**9


async def test_a_kill_dated_an_hour_ahead_is_resumed_now_and_its_resume_replays_nothing(
    site: Site, fleet: NodeProcesses
) -> None:
    """bob's host clock runs an hour ahead: his kill halts every node at once. alice and bob
    resume it now, and every node trades again, a replaced one too. Before, the resume was
    dated after the kill and refused as issued in the future until the clocks got there.
    A kill issued after the resume (dated before bob's) still halts, and the old resume,
    announced or stored again over it, lifts nothing: it names bob's kill."""
    alice = await site.connect("alice")
    bob = await site.connect("bob")
    carol = await site.connect("carol")
    try:
        ahead = KillSwitch(bob, _HourAhead(), site.signer("bob"), site.store())
        kill = await ahead.kill(Scope.FLEET, FLEET_KEY, "incident")
        assert kill.ok and kill.entry.issued_ns > SystemClock().time_ns() + 3000 * 10**9
        await until(carol, TradingState.HALTED)
        ks = site.killswitch(alice, "alice")
        resumed = await ks.resume(Scope.FLEET, FLEET_KEY, "fixed", approvers=(site.signer("bob"),))
        assert resumed.ok, (resumed.missing, resumed.durable_error)
        assert resumed.entry.issued_ns < kill.entry.issued_ns
        await until(carol, TradingState.ACTIVE)
        await replace(fleet, carol, "n3")
        await until(carol, TradingState.ACTIVE)
        again = await ks.kill(Scope.FLEET, FLEET_KEY, "a new incident")
        assert again.ok and again.entry.issued_ns < kill.entry.issued_ns
        await until(carol, TradingState.HALTED)
        await alice.announce_state(resumed.entry)
        await alice.put_state(resumed.entry)  # a plain put, as an attacker would
        await asyncio.sleep(0.5)
        assert set((await states_of(carol)).values()) == {TradingState.HALTED}
    finally:
        for p in (alice, bob, carol):
            await p.close()
