"""The console's snapshot judges the kill state as nodes do, and names what it cannot read."""

from __future__ import annotations

import asyncio

import msgspec

from knightwatch.clock import SimClock, SystemClock
from knightwatch.console.view import Watch, build, source_of
from knightwatch.control.fleet.approvals import Requests
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import (
    ENCODER,
    UNDECODABLE_ACTOR,
    NodeStatus,
    RampRecord,
    StateEntry,
)
from knightwatch.control.site import Site
from knightwatch.state import Scope, TradingState

from ..identities import BOB, sign, switch, trust

S = 1_000_000_000


async def plane() -> MemoryControlPlane:
    p = MemoryControlPlane(MemoryFabric())
    await p.connect()
    return p


def member(node: str, clock: SimClock, lease_s: float) -> NodeStatus:
    now = clock.time_ns()
    return NodeStatus(node, "h", 1, now, now, now + int(lease_s * S), True, True,
                      TradingState.ACTIVE)  # fmt: skip


async def test_verified_and_forged_entries_and_their_sources() -> None:
    clock = SimClock(start_ns=10 * S)
    p = await plane()
    await switch(p, clock, "alice").kill(Scope.STRATEGY, "MOMO", "runaway", timeout_s=0.01)
    await switch(p, clock, "supervisor").kill(Scope.NODE, "n1", "rate", timeout_s=0.01)
    forged = StateEntry(Scope.FLEET, "fleet", TradingState.ACTIVE, "lift it", "alice", "f1",
                        clock.time_ns(), clock.time_ns() + S)  # fmt: skip
    await p.put_state(forged)  # unsigned: a node holds the slot HALTED
    snap = await build(p, trust(), clock)
    rows = {(h.scope, h.key): h for h in snap.halts}
    assert rows["strategy", "MOMO"].verified and rows["strategy", "MOMO"].source == "operator"
    assert rows["node", "n1"].source == "supervisor"
    fleet = rows["fleet", "fleet"]
    assert not fleet.verified and fleet.state == "HALTED" and "unsigned" in fleet.refusal


async def test_a_signed_resume_stored_again_over_a_newer_kill_is_shown_held_halted() -> None:
    """Its signatures verify; only the slot's history shows it lifts nothing. The console
    shows what the nodes hold (HALTED), not what the entry says."""
    clock = SimClock(start_ns=10 * S)
    p = await plane()
    ks = switch(p, clock, "alice")
    await ks.kill(Scope.STRATEGY, "MOMO", "first", timeout_s=0.01)
    r1 = await ks.resume(Scope.STRATEGY, "MOMO", "fixed", approvers=(BOB,))
    snap = await build(p, trust(), clock)
    (row,) = snap.halts
    assert row.verified and row.state == "ACTIVE" and row.approvers == ["bob"]
    clock.advance(S)
    await ks.kill(Scope.STRATEGY, "MOMO", "second", timeout_s=0.01)
    await p.put_state(r1.entry)  # a plain put, past the kill switch's checks
    snap = await build(p, trust(), clock)
    (row,) = snap.halts
    assert not row.verified and row.state == "HALTED"
    assert "replayed" in row.refusal and "stored again over a later write" in row.refusal


async def test_ramp_records_show_their_signer_or_what_nodes_do_instead() -> None:
    clock = SimClock(start_ns=10 * S)
    p = await plane()
    base = RampRecord(Scope.STRATEGY, "MOMO", "r1", 0, (0.1, 1.0), 0.1, "ramping", "alice+bob",
                      "fixed", clock.time_ns())  # fmt: skip
    done = msgspec.structs.replace(base, status="done", fraction=1.0)
    await p.put_record(Bucket.RAMP, "strategy.MOMO", ENCODER.encode(base.signed(BOB.key)))
    await p.put_record(Bucket.RAMP, "strategy.MM", ENCODER.encode(base))
    await p.put_record(Bucket.RAMP, "strategy.XX", ENCODER.encode(done))
    snap = await build(p, trust(), clock)
    rows = {r.slot: r for r in snap.ramps}
    assert rows["strategy.MOMO"].signed_by == "bob" and rows["strategy.MOMO"].refusal == ""
    held = rows["strategy.MM"]
    assert held.signed_by == "" and held.refusal.startswith("unsigned")
    assert held.refusal.endswith("; nodes hold 10%")
    finished = rows["strategy.XX"]  # a node holding no ramp there counts it as none
    assert finished.refusal.endswith("others count it as no ramp")


def test_sources() -> None:
    assert source_of("guard:throttle") == "guard:throttle"
    assert source_of("supervisor") == "supervisor"
    assert source_of("alice") == "operator"
    assert source_of(UNDECODABLE_ACTOR) == "store"  # no person's: listed with the alerts


async def test_leases_and_undecodable_records_are_shown_not_dropped() -> None:
    clock = SimClock(start_ns=10 * S)
    p = await plane()
    await p.put_member(member("n1", clock, 1.0))
    await p.put_member(member("n2", clock, -2.0))
    await p.put_record(Bucket.APPROVALS, "junk", b"{not json")
    await p.put_record(Bucket.ADMISSION, "n1", b"[]")
    snap = await build(p, trust(), clock)
    nodes = {n.node: n for n in snap.nodes}
    assert not nodes["n1"].expired and nodes["n1"].lease_ms > 0
    assert nodes["n2"].expired and nodes["n2"].lease_ms < 0
    assert any("approvals junk" in problem for problem in snap.problems)
    assert any("admission n1" in problem for problem in snap.problems)


async def test_requests_pending_stale_and_who_is_still_needed() -> None:
    clock = SimClock(start_ns=10 * S)
    p = await plane()
    ks = switch(p, clock, "alice")
    await ks.kill(Scope.NODE, "n1", "one", timeout_s=0.01)
    request = await Requests(ks).create(
        Scope.NODE, "n1", "fixed", ramp=((0.1, 300.0), (0.5, 120.0), (1.0, 60.0))
    )
    snap = await build(p, trust(), clock)
    row = next(r for r in snap.requests if r.id == request.id)
    assert row.status == "pending" and "other than alice" in row.needed
    assert row.ramp == "10% for 300 s, 50% for 120 s, then 100%"  # what the approver signs
    await ks.kill(Scope.NODE, "n1", "again", timeout_s=0.01)  # the halt it was decided on moved
    snap = await build(p, trust(), clock)
    row = next(r for r in snap.requests if r.id == request.id)
    assert row.status == "stale" and row.needed == "" and "changed" in row.detail
    clock.advance(25 * 3600 * S)
    snap = await build(p, trust(), clock)
    assert next(r for r in snap.requests if r.id == request.id).status == "expired"


async def test_an_applied_resume_shows_its_request_applied_and_its_approver() -> None:
    clock = SimClock(start_ns=10 * S)
    p = await plane()
    ks = switch(p, clock, "alice")
    await ks.kill(Scope.NODE, "n3", "one", timeout_s=0.01)
    request = await Requests(ks).create(Scope.NODE, "n3", "fixed")
    await p.put_state(sign(request.entry), expected_revision=request.entry.decided_on)
    snap = await build(p, trust(), clock)
    assert next(r for r in snap.requests if r.id == request.id).status == "applied"
    halt = next(h for h in snap.halts if h.key == "n3")
    assert halt.state == "ACTIVE" and halt.approvers == ["bob"]


async def test_unreadable_members_and_malformed_keys_are_shown_as_such(
    nats_server: Site,
) -> None:
    """What the store lists but cannot read is shown as unreadable, with its reason code,
    never as a node or a slot: a membership record that does not decode or names another
    node (`members()` lists it under its key, host "unreadable"), a kill-state key that is
    no slot (`strategy.a.b`: an entry or a delete marker) and a deleted slot (shown by the
    scope it halts, so its resume button names it; it was shown with no scope at all)."""
    n1 = await nats_server.connect("n1")
    n2 = await nats_server.connect("n2")
    n3 = await nats_server.connect("n3")
    alice = await nats_server.connect("alice")
    clock = SystemClock()
    try:
        await n1._members.put("n1", b'{"node_id": "n1", "pid": "oops"')  # type: ignore[union-attr]
        forged = member("<b>n3</b>", clock, 5.0)
        await n2._members.put("n2", ENCODER.encode(forged))  # type: ignore[union-attr]
        await n3.put_member(member("n3", clock, 5.0))
        kv = alice._state_kv()
        await kv.put("strategy.a.b", ENCODER.encode(sign(StateEntry(
            Scope.STRATEGY, "a.b", TradingState.ACTIVE, "lift", "alice", "c1", 1, 2))))  # fmt: skip
        await kv.put("strategy.x.y", b"{}")
        await kv.delete("strategy.x.y")
        await kv.put("strategy.MOMO", b"{}")
        await kv.delete("strategy.MOMO")
        snap = await build(alice, trust(), clock)
        nodes = {n.node: n for n in snap.nodes}
        assert sorted(nodes) == ["n1", "n2", "n3"]  # the readable one is still there
        assert nodes["n1"].unreadable.startswith("member_undecodable: ")
        assert nodes["n2"].unreadable.startswith("member_forged: ")
        assert "'<b>n3</b>'" in nodes["n2"].unreadable
        assert nodes["n3"].unreadable == "" and nodes["n3"].state == "ACTIVE"
        halts = {h.slot: h for h in snap.halts}
        ab, xy = halts["strategy.a.b"], halts["strategy.x.y"]
        assert ab.malformed.startswith("state_key_malformed: 'strategy.a.b' is no slot")
        assert ab.state == "HALTED" and not ab.verified and ab.source == "store"
        assert xy.malformed.startswith("state_key_malformed: 'strategy.x.y'")
        assert xy.state == "MALFORMED" and "held by no reader" in xy.refusal
        momo = halts["strategy.MOMO"]
        assert (momo.scope, momo.key, momo.state, momo.malformed) == (
            "strategy", "MOMO", "HALTED", "")  # fmt: skip
        assert "deleted" in momo.refusal
    finally:
        for p in (n1, n2, n3, alice):
            await p.close()


async def test_a_supervisor_reduce_is_shown_reducing_with_its_rule() -> None:
    """`supervisor_node_gross_exposure` puts a node in REDUCING by name: shown as REDUCING
    (not HALTED), from the supervisor, with the rule and its numbers as the reason."""
    clock = SimClock(start_ns=10 * S)
    p = await plane()
    await p.put_member(
        msgspec.structs.replace(member("n1", clock, 5.0), node_state=TradingState.REDUCING)
    )
    sv = switch(p, clock, "supervisor")
    why = "supervisor_node_gross_exposure: node n1 gross $2,100,000 over $2,000,000"
    await sv.kill(Scope.NODE, "n1", why, timeout_s=0.01, state=TradingState.REDUCING)
    day = "supervisor_principal_day: principal $9,000,000 over a day (10x principal_floor)"
    await sv.kill(Scope.NODE, "n2", day, timeout_s=0.01)
    snap = await build(p, trust(), clock)
    rows = {h.key: h for h in snap.halts}
    assert (rows["n1"].state, rows["n1"].source, rows["n1"].reason) == (
        "REDUCING", "supervisor", why)  # fmt: skip
    assert (rows["n2"].state, rows["n2"].reason) == ("HALTED", day)
    assert {n.node: n.state for n in snap.nodes} == {"n1": "REDUCING"}


async def test_a_request_no_slot_holds_or_a_rollout_past_its_plan_is_a_problem_not_a_crash() -> (
    None
):
    """Operators write the approvals bucket: a request naming a key no slot holds (empty, or
    longer than any slot's) raised out of `build`, and so did a rollout whose stage_index is
    past its plan. One such record left every snapshot unbuilt: /api/snapshot answered 500
    and the page's stream stayed on its last snapshot, LIVE, with no halt shown after it."""
    clock = SimClock(start_ns=10 * S)
    p = await plane()
    ks = switch(p, clock, "alice")
    await ks.kill(Scope.STRATEGY, "MOMO", "runaway", timeout_s=0.01)
    for rid, key in (("r-empty", ""), ("r-long", "k" * 5000)):
        entry = {"scope": "strategy", "key": key, "state": 0, "reason": "x", "actor": "alice",
                 "command_id": rid, "issued_ns": clock.time_ns()}  # fmt: skip
        await p.put_record(Bucket.APPROVALS, rid, msgspec.json.encode({"id": rid, "entry": entry}))
    for flag, index in (("f-past", 3), ("f-far", 99)):
        rollout = {"rollout_id": flag, "flag_id": flag, "target_value": True, "nodes": ["n1"],
                   "plan": {}, "started_by": "alice", "approver": None, "status": "progressing",
                   "stage_index": index, "stage_started_ns": 1}  # fmt: skip
        await p.put_record(Bucket.ROLLOUTS, flag, msgspec.json.encode(rollout))
    snap = await build(p, trust(), clock)
    assert [(h.scope, h.key, h.state) for h in snap.halts] == [("strategy", "MOMO", "HALTED")]
    assert snap.requests == []
    for named in ("approvals r-empty", "approvals r-long", "rollouts f-past", "rollouts f-far"):
        assert any(problem.startswith(named) for problem in snap.problems), snap.problems
    assert {r.flag: r.stage for r in snap.rollouts} == {"f-past": "", "f-far": ""}


async def test_a_snapshot_that_cannot_be_built_is_told_to_the_streams_not_kept_silent() -> None:
    """Whatever makes a rebuild fail (here a member whose state is no trading state), the
    page must learn it: the watch only logged it, and the stream's beats kept the page LIVE
    on its last snapshot, showing no halt made after it."""
    clock = SystemClock()
    p = await plane()
    watch = Watch(p, trust(), clock, every_s=0.05)
    told: list[tuple[str, bytes]] = []
    watch.listen(lambda event, data: told.append((event, data)))
    await watch.start()
    try:
        bad = msgspec.structs.replace(member("n1", SimClock(start_ns=clock.time_ns()), 5.0),
                                      node_state=7)  # fmt: skip
        await p.put_member(bad)
        for _ in range(100):
            if any(event == "problem" for event, _ in told):
                break
            await asyncio.sleep(0.02)
        problems = [msgspec.json.decode(d)["error"] for e, d in told if e == "problem"]
        assert problems and "could not be rebuilt" in problems[-1], told[-3:]
    finally:
        await watch.stop()
