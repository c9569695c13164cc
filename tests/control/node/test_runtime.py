"""The node runtime on the deterministic backend: kill, resume, lease, resync, arming."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.clock import SimClock, SystemClock
from knightwatch.control.fleet.freeze import kill_in_force
from knightwatch.control.fleet.killswitch import CommandResult, KillSwitch, KillSwitchError
from knightwatch.control.node.flags import ENCODER, NodeFlags, state_key
from knightwatch.control.node.runtime import REPORT_DELAY_S, NodeError, NodeRuntime, stop_task
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import STATE_HISTORY, Bucket
from knightwatch.control.plane.wire import GUARD_ACTOR, Confirmation, NodeStatus, StateEntry
from knightwatch.decision import RejectReason
from knightwatch.flags.activation import ActivationRequest
from knightwatch.flags.state import FlagChange, FlagState
from knightwatch.release.dsse import encode_envelope
from knightwatch.state import Scope, TradingState, pair_key
from knightwatch.trust.approval import Approval, ApprovalKind, sign_approval
from knightwatch.trust.command import TrustReason
from knightwatch.trust.flagproof import FlagSealer

from ...identities import ALICE, BOB, signer, switch, trust
from ...incident.fixtures import fleet as release_fleet
from ...integration.fleet_release import REGISTRY, RLP
from ..fleet_fixtures import POLICY, OrderIds, S, make_node, mismatch, plane_on, relay_on, settle
from ..helpers import entry

MS = 1_000_000


async def fleet(n: int) -> tuple[MemoryFabric, SimClock, list[NodeRuntime], KillSwitch]:
    fabric = MemoryFabric()
    clock = SimClock(1_000 * MS)
    nodes = []
    for i in range(n):
        plane = MemoryControlPlane(fabric)
        await plane.connect()
        node = make_node(f"n{i + 1}", plane, clock)
        await node.start()
        nodes.append(node)
    operator = MemoryControlPlane(fabric)
    await operator.connect()
    return fabric, clock, nodes, switch(operator, clock, "alice")


async def stop_all(nodes: list[NodeRuntime]) -> None:
    for node in nodes:
        await node.stop()


async def test_fleet_kill_is_confirmed_by_every_node_and_blocks_orders() -> None:
    _, _, nodes, ks = await fleet(3)
    ids = OrderIds("o")
    assert all(n.check(ids.order()).accepted for n in nodes)
    result = await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    assert result.ok and result.targets == ["n1", "n2", "n3"] and not result.missing
    assert set(result.latencies_ms) == {"n1", "n2", "n3"}
    for n in nodes:
        d = n.check(ids.order())
        assert not d.accepted and d.reason is RejectReason.HALTED
    resumed = await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    assert resumed.ok
    assert all(n.check(ids.order()).accepted for n in nodes)
    await stop_all(nodes)


async def test_node_scope_touches_only_that_node_and_names_a_silent_target() -> None:
    _, _, nodes, ks = await fleet(2)
    ids = OrderIds("o")
    result = await ks.kill(Scope.NODE, "n2", "bad deploy", timeout_s=0.2)
    assert result.ok and result.targets == ["n2"]
    assert nodes[0].check(ids.order()).accepted
    assert nodes[1].check(ids.order()).reason is RejectReason.HALTED
    ghost = await ks.kill(Scope.NODE, "n9", "gone", timeout_s=0.05)
    assert ghost.missing == ["n9"] and not ghost.ok and ghost.revision is not None
    await stop_all(nodes)


async def test_strategy_and_symbol_scopes_and_drain() -> None:
    _, _, nodes, ks = await fleet(1)
    node = nodes[0]
    ids = OrderIds("o")
    node.on_price("MSFT", 50.0)
    await ks.kill(Scope.SYMBOL, "MSFT", "bad prints")
    assert node.check(ids.order("MSFT")).reason is RejectReason.HALTED
    assert node.check(ids.order("AAPL")).accepted
    await ks.kill(Scope.STRATEGY, "peg", "retired code woke up", state=TradingState.REDUCING)
    assert node.check(ids.order("AAPL", strategy="peg")).reason is RejectReason.REDUCING_ONLY
    assert node.guard.trading_state(Scope.STRATEGY, "peg") is TradingState.REDUCING
    await stop_all(nodes)


async def test_resume_refuses_what_is_not_halted_and_needs_reason() -> None:
    _, _, nodes, ks = await fleet(1)
    with pytest.raises(KillSwitchError, match="not halted"):
        await ks.resume(Scope.FLEET, "", "nothing to do", approvers=(BOB,))
    with pytest.raises(KillSwitchError, match="reason"):
        await ks.kill(Scope.FLEET, "", "  ")
    await stop_all(nodes)


async def test_kill_state_survives_node_restart() -> None:
    fabric, clock, nodes, ks = await fleet(1)
    await ks.kill(Scope.FLEET, "", "stop everything")
    await stop_all(nodes)
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    reborn = make_node("n1", plane, clock)
    await reborn.start()
    d = reborn.check(OrderIds("r").order())
    assert not d.accepted and d.reason is RejectReason.HALTED
    await reborn.stop()


async def test_outage_drops_admission_at_once_and_resync_readmits() -> None:
    fabric, clock, nodes, ks = await fleet(1)
    node = nodes[0]
    ids = OrderIds("o")
    await fabric.set_reachable(False)
    assert not node.admitted
    d = node.check(ids.order())
    assert not d.accepted and d.reason is RejectReason.LEASE_EXPIRED
    await node.heartbeat_once()  # still down: stays out
    assert not node.admitted
    await fabric.set_reachable(True)
    # While it was away someone stored a kill that the node never heard announced.
    await ks.plane.put_state(entry(command_id="while-away", issued_ns=clock.time_ns()))
    await node.heartbeat_once()
    assert node.admitted
    assert node.check(ids.order()).reason is RejectReason.HALTED
    await stop_all(nodes)


async def test_stalled_node_is_blocked_by_its_lease_until_a_fresh_round_trip() -> None:
    _, clock, nodes, _ = await fleet(1)
    node = nodes[0]
    ids = OrderIds("o")
    clock.advance(POLICY.lease_ns + MS)  # frozen past its lease (SIGSTOP)
    d = node.check(ids.order())
    assert not d.accepted and d.reason is RejectReason.LEASE_EXPIRED
    await node.heartbeat_once()
    assert node.check(ids.order()).accepted
    await stop_all(nodes)


async def test_errors_before_arming_refuse_arming() -> None:
    fabric = MemoryFabric()
    clock = SimClock()
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    node = make_node("n1", plane, clock)
    node.guard.disarm("test")
    node.report_error("Power Peg flag present on old binary")
    with pytest.raises(NodeError, match="before arming"):
        node.arm("ops")
    assert not node.guard.armed
    assert node.metrics().errors == 1 and not node.metrics().armed


def test_lease_must_match_guard_limits() -> None:
    from knightwatch.guard import Guard
    from knightwatch.limits import Limits

    with pytest.raises(NodeError, match="lease_timeout_s"):
        NodeRuntime(
            Guard(Limits(), node="n1"),
            MemoryControlPlane(MemoryFabric()),
            clock=SimClock(),
            trust=trust(),
            signer=signer("n1"),
        )


_entries = st.builds(
    lambda state, issued, cid: entry(
        Scope.SYMBOL,
        "AAPL",
        state,
        f"c{cid}",
        issued,
        supersedes="c-before" if state is TradingState.ACTIVE else "",
    ),
    st.sampled_from(list(TradingState)),
    st.integers(1, 20),
    st.integers(0, 99),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_entries, min_size=1, max_size=12, unique_by=lambda e: e.command_id), st.randoms())
async def test_any_delivery_order_keeps_the_newest_entry_or_stricter(
    entries: list[StateEntry], rnd: object
) -> None:
    fabric = MemoryFabric()
    clock = SimClock()
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    node = make_node("n1", plane, clock)
    delivered = entries + entries[: len(entries) // 2]  # duplicates from the second path
    rnd.shuffle(delivered)  # type: ignore[attr-defined]
    for e in delivered:
        await node._on_state(e)
    newest = max(entries, key=lambda e: e.order_key)
    final = node.guard.trading_state(Scope.SYMBOL, "AAPL")
    # Never less strict than the newest entry: a kill is not lost to reordering. A halt
    # first seen after a newer entry still applies (fail closed: its issuer's clock may
    # lag), so only when the newest entry was first seen last is the state exactly its.
    assert final >= newest.state
    # A resume lifts only the halt it names: a node holding another one refuses it as
    # stale (signed, but decided on a state this node no longer holds) and stays stricter.
    first_seen = list(dict.fromkeys(e.command_id for e in delivered))
    # A drain never loosens a halt held before it, however newer: the halt stays.
    if first_seen[-1] == newest.command_id:
        assert (
            final is newest.state
            or (newest.state is TradingState.ACTIVE and node.refused[TrustReason.STALE] > 0)
            or (
                newest.state is TradingState.REDUCING
                and final is TradingState.HALTED
                and any(e.state is TradingState.HALTED for e in entries)
            )
        )


async def test_unseen_halt_applies_even_if_it_orders_older_but_a_seen_one_does_not() -> None:
    fabric = MemoryFabric()
    node = make_node("n1", await plane_on(fabric), SimClock(1_000 * S))
    await node.start()
    kill = entry(command_id="k1", issued_ns=50)
    resume = entry(state=TradingState.ACTIVE, command_id="r1", issued_ns=100, supersedes="k1")
    await node._on_state(kill)
    await node._on_state(resume)
    assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    await node._on_state(kill)  # a late echo of a kill already resumed
    assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    await node._on_state(entry(command_id="k0", issued_ns=10))  # fast path, lagging issuer
    assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
    await node.stop()


async def test_an_older_halt_heard_after_a_newer_drain_is_the_one_its_resume_lifts() -> None:
    """A halt and a drain issued together: the drain, dated later, reaches the node first;
    the halt, dated earlier and never seen, second. The store keeps the stricter (the kill
    switch never loosens a stored halt), so the operators' resume names the halt. The node
    latched the halt but went on holding the drain as the slot's command, refused that
    resume as stale and stayed halted until it reconnected (a NATS race test caught it)."""
    fabric = MemoryFabric()
    node = make_node("n1", await plane_on(fabric), SimClock(1_000 * S))
    await node.start()
    drain = entry(state=TradingState.REDUCING, command_id="d1", issued_ns=200, actor="supervisor")
    halt = entry(command_id="h1", issued_ns=100)
    await node._on_state(drain)
    await node._on_state(halt)
    assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
    await node._on_state(drain)  # the drain heard again (the other path): the halt stays
    assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
    resume = entry(state=TradingState.ACTIVE, command_id="r1", issued_ns=300, supersedes="h1")
    await node._on_state(resume)
    assert node.refused[TrustReason.STALE] == 0
    assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    await node._on_state(drain)  # older than the resume and seen: nothing changes
    assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    await node.stop()


async def test_automatic_halt_is_stored_survives_restart_and_resume_lifts_it() -> None:
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    node = make_node("n1", await plane_on(fabric), clock)
    await node.start()
    await relay_on(fabric, clock)
    await mismatch(node, OrderIds("a"))
    assert node.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED
    ops = await plane_on(fabric)
    stored, _ = await ops.get_state(Scope.NODE, "n1")
    assert stored is not None and stored.state is TradingState.HALTED
    assert stored.actor == f"{GUARD_ACTOR}{RejectReason.FILL_MISMATCH.value}"
    assert stored.source is RejectReason.FILL_MISMATCH
    await node.stop()
    restarted = make_node("n1", await plane_on(fabric), clock)
    await restarted.start()
    assert restarted.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED
    ks = switch(ops, clock, "alice")
    result = await ks.resume(Scope.NODE, "n1", "reconciled", approvers=(BOB,))
    assert result.ok
    assert restarted.guard.trading_state(Scope.NODE, "n1") is TradingState.ACTIVE
    await restarted.stop()


async def test_resuming_an_operator_kill_keeps_the_guards_own_halt_and_shows_it() -> None:
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    node = make_node("n1", await plane_on(fabric), clock)
    await node.start()
    await relay_on(fabric, clock)
    ks = switch(await plane_on(fabric), clock, "alice")
    ids = OrderIds("b")
    working = ids.order()
    assert node.check(working).accepted
    await ks.kill(Scope.NODE, "n1", "look at it", timeout_s=0.2)
    await mismatch(node, ids, working.id)
    stored, _ = await node.plane.get_state(Scope.NODE, "n1")
    assert stored is not None and stored.actor == "alice"  # the operator's kill is kept
    clock.advance(S)
    await ks.resume(Scope.NODE, "n1", "kill done", approvers=(BOB,))
    await settle()
    assert node.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED
    stored, _ = await node.plane.get_state(Scope.NODE, "n1")
    assert stored is not None and stored.state is TradingState.HALTED
    assert stored.source is RejectReason.FILL_MISMATCH
    clock.advance(S)
    await ks.resume(Scope.NODE, "n1", "reconciled", approvers=(BOB,))
    assert node.guard.trading_state(Scope.NODE, "n1") is TradingState.ACTIVE
    await node.stop()


async def test_a_kill_is_confirmed_before_it_is_recorded_or_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fabric, _, nodes, ks = await fleet(1)
    node = nodes[0]
    rec = node.guard.recorder
    at_confirm: list[tuple[TradingState, int, int]] = []

    async def on_confirm(c: Confirmation) -> None:  # runs while the node publishes it
        halts = sum("HALT node=" in r.getMessage() for r in caplog.records)
        at_confirm.append((node.guard.trading_state(Scope.FLEET), rec.seq, halts))

    watcher = await plane_on(fabric)
    await watcher.subscribe_confirmations(on_confirm)
    before = rec.seq
    with caplog.at_level(logging.WARNING, logger="knightwatch.guard"):
        result = await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    assert result.ok
    # confirmed with the Guard already halted, before its record and its log line
    assert at_confirm == [(TradingState.HALTED, before, 0)]
    await asyncio.sleep(2 * REPORT_DELAY_S)  # its timer is due first: the loop runs it first
    assert rec.seq == before + 1  # then the halt record
    assert sum("HALT node=" in r.getMessage() for r in caplog.records) == 1
    await stop_all(nodes)


async def test_records_left_for_after_the_confirmation_keep_the_order_commands_applied() -> None:
    fabric = MemoryFabric()
    node = make_node("n1", await plane_on(fabric), SimClock(1_000 * S))
    await node.start()
    rec = node.guard.recorder
    kill = entry(command_id="k1", issued_ns=50)
    resume = entry(state=TradingState.ACTIVE, command_id="r1", issued_ns=100, supersedes="k1")
    await node._on_state(kill)  # confirmed; its record waits REPORT_DELAY_S
    await node._on_state(resume)  # ...which has not come: the resume is applied first
    await asyncio.sleep(0)
    rec.flush()
    kinds = [k for line in rec.lines for k in (b"halt", b"resume") if b'"kind":"%s"' % k in line]
    assert kinds == [b"halt", b"resume"]  # never a halt recorded after the resume lifting it
    assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    await node.stop()


async def test_each_kill_is_handled_once_though_it_arrives_twice() -> None:
    _, _, nodes, ks = await fleet(1)
    node = nodes[0]
    rec = node.guard.recorder
    before, confirmed = rec.seq, len(node.confirmed)
    result = await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    assert result.ok
    await asyncio.sleep(0)  # let the store's copy of the kill arrive too
    await asyncio.sleep(2 * REPORT_DELAY_S)  # and the record of the one handled
    assert len(node.confirmed) == confirmed + 1 and rec.seq == before + 1
    rec.flush()
    assert sum(b'"kind":"halt"' in line for line in rec.lines) == 1
    await stop_all(nodes)


async def test_an_automatic_halt_decided_on_a_thread_running_its_own_loop_is_stored() -> None:
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    node = make_node("n1", await plane_on(fabric), clock)
    await node.start()
    await relay_on(fabric, clock)

    async def halt() -> None:
        node.guard.flag_mismatch("the venue's leaves disagree")

    def elsewhere() -> None:  # a library's thread running a short-lived loop of its own
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(halt())
        finally:
            loop.close()  # whatever was scheduled on it never runs

    await asyncio.to_thread(elsewhere)
    ops = await plane_on(fabric)
    stored = None
    for _ in range(100):  # stored from the runtime's own loop, not the finished one
        await settle()
        stored, _ = await ops.get_state(Scope.NODE, "n1")
        if stored is not None:
            break
    assert stored is not None and stored.state is TradingState.HALTED
    assert stored.source is RejectReason.FILL_MISMATCH
    await node.stop()


def refusals(node: NodeRuntime) -> list[bytes]:
    node.guard.recorder.flush()
    return [line for line in node.guard.recorder.lines if b'"kind":"command_refused"' in line]


async def reborn(fabric: MemoryFabric, clock: SimClock, node_id: str = "n1") -> NodeRuntime:
    """A new runtime with an empty memory and no flight recorder to restore halts from."""
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    node = make_node(node_id, plane, clock)
    await node.start()
    return node


async def test_a_node_started_after_a_two_person_resume_trades() -> None:
    fabric, clock, nodes, ks = await fleet(1)
    await ks.kill(Scope.FLEET, "", "stop")
    assert (await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))).ok
    await stop_all(nodes)
    node = await reborn(fabric, clock)
    assert node.check(OrderIds("r").order()).accepted
    assert not node.refused and not refusals(node)
    await node.stop()


async def replay_over_a_second_kill(
    fabric: MemoryFabric, ks: KillSwitch
) -> tuple[CommandResult, int, MemoryControlPlane]:
    """K1, R1 (two people), K2, then R1's signed entry put back over K2 with a plain put,
    past the kill switch's checks: R1's result, the replay's revision, the plane used."""
    await ks.kill(Scope.FLEET, "", "first")
    r1 = await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    await ks.kill(Scope.FLEET, "", "second")
    operator = await plane_on(fabric)
    return r1, await operator.put_state(r1.entry), operator


async def test_an_approved_resume_stored_again_over_a_newer_kill_is_refused() -> None:
    """K1, R1 (two people), K2, then R1's signed entry put back over K2: it verifies, but
    the store shows it was not written over the halt it lifts. Running nodes keep K2; a
    node starting now holds the slot halted and reports the replay."""
    fabric, clock, nodes, ks = await fleet(1)
    r1, _, _ = await replay_over_a_second_kill(fabric, ks)
    ids = OrderIds("o")
    assert nodes[0].check(ids.order()).reason is RejectReason.HALTED
    node = await reborn(fabric, clock, "n2")
    assert node.check(ids.order()).reason is RejectReason.HALTED
    assert node.refused == {TrustReason.REPLAYED: 1}
    assert "decided on revision" in node.last_refusal
    (line,) = refusals(node)
    assert b'"reason":"replayed"' in line and r1.entry.command_id[:12].encode() in line
    await node.stop()
    await stop_all(nodes)


async def test_after_a_replayed_resume_the_operator_sees_a_halt_and_can_lift_it() -> None:
    """The kill switch judges the stored resume as nodes do: the replay reads as a halt.
    A running node holds the newer kill and a restarted one its own fail-closed halt, so
    the request first halts the slot again (one signed kill every node then holds) and a
    two-person resume of that kill lifts both. Before, the replay read as ACTIVE:
    "nothing to resume" while a restarted node stayed halted."""
    fabric, clock, nodes, ks = await fleet(1)
    r1, replay, operator = await replay_over_a_second_kill(fabric, ks)
    node = await reborn(fabric, clock, "n2")
    ids = OrderIds("o")
    assert node.check(ids.order()).reason is RejectReason.HALTED
    stored, revision, trusted = await ks.current(Scope.FLEET, r1.entry.key)
    assert stored == r1.entry and revision == replay and not trusted
    assert await kill_in_force(operator, trust()) is not None
    resumed = await ks.resume(Scope.FLEET, "", "really fixed", approvers=(BOB,))
    assert resumed.ok and resumed.revision is not None
    halt, at = await operator.previous_state(Scope.FLEET, "fleet", resumed.revision) or (None, 0)
    assert halt is not None and halt.state is TradingState.HALTED and halt.actor == "alice"
    assert resumed.entry.supersedes == halt.command_id and at == resumed.entry.decided_on > replay
    assert nodes[0].check(ids.order()).accepted
    assert node.check(ids.order()).accepted
    await node.stop()
    await stop_all(nodes)


async def test_a_replayed_resume_heard_live_by_a_node_that_never_held_the_halt() -> None:
    """A node whose memory lost the slot checks the store's history on the live path too;
    without it, the replay would lift the Guard's latch of the newer kill."""
    fabric, _, nodes, ks = await fleet(1)
    node = nodes[0]
    await ks.kill(Scope.FLEET, "", "first")
    r1 = await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    await ks.kill(Scope.FLEET, "", "second")
    node._applied.clear()  # it never held the newer kill (as after losing its memory)
    operator = MemoryControlPlane(fabric)
    await operator.connect()
    await operator.put_state(r1.entry)
    assert node.check(OrderIds("o").order()).reason is RejectReason.HALTED
    assert node.refused == {TrustReason.REPLAYED: 1}
    assert len(refusals(node)) == 1
    await stop_all(nodes)


async def test_the_longest_strategy_and_symbol_an_order_may_name_can_be_killed() -> None:
    """A strategy and a symbol of 64 characters each make a valid order, and their joined
    key 129 characters: a slot held at most 128, so `kill --strategy S --symbol Y` was
    refused and that lane could trade on with no kill able to name it."""
    _, _, nodes, ks = await fleet(1)
    node = nodes[0]
    strategy, symbol = "s" * 64, "Y" * 64
    ids = OrderIds("o")
    node.on_price(symbol, 100.0)
    assert node.check(ids.order(symbol=symbol, strategy=strategy)).accepted
    await ks.kill(Scope.STRATEGY_SYMBOL, pair_key(strategy, symbol), "runaway")
    assert node.check(ids.order(symbol=symbol, strategy=strategy)).reason is RejectReason.HALTED
    assert node.check(ids.order(symbol="AAPL", strategy=strategy)).accepted
    await stop_all(nodes)


@pytest.mark.parametrize("key", ["", "k" * 130])
async def test_an_announcement_whose_key_no_slot_can_hold_is_a_counted_refusal(
    key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A signed command for a key no slot can hold (empty, over 129 characters) raised out
    of the node's handler on reading its slot, a traceback on every node and nothing
    counted. Now it is refused as malformed, counted and recorded like any bad command,
    and the node goes on applying the next kill."""
    fabric, _, nodes, ks = await fleet(1)
    node = nodes[0]
    operator = MemoryControlPlane(fabric)
    await operator.connect()
    with caplog.at_level(logging.ERROR):
        await operator.announce_state(entry(Scope.STRATEGY, key, command_id="bad"))
    assert node.refused == {TrustReason.MALFORMED: 1}
    assert "must be" in node.last_refusal
    assert len(refusals(node)) == 1
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
    await ks.kill(Scope.STRATEGY, "s1", "after it")
    assert node.check(OrderIds("o").order(strategy="s1")).reason is RejectReason.HALTED
    await stop_all(nodes)


async def test_a_resume_put_into_an_empty_store_lifts_nothing() -> None:
    """A store that lost its entries (or a new one) is given an old approved resume as the
    slot's first write: there is no halt before it to lift, so a starting node holds the
    slot halted."""
    _, _, nodes, ks = await fleet(1)
    await ks.kill(Scope.FLEET, "", "first")
    r1 = await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    await stop_all(nodes)
    empty = MemoryFabric()
    operator = MemoryControlPlane(empty)
    await operator.connect()
    await operator.put_state(r1.entry)
    node = await reborn(empty, SimClock(1_000 * MS))
    assert node.check(OrderIds("o").order()).reason is RejectReason.HALTED
    assert node.refused == {TrustReason.REPLAYED: 1}
    assert "keeps no earlier write" in node.last_refusal
    await node.stop()


async def test_a_long_slot_history_does_not_hide_a_replay() -> None:
    """More than STATE_HISTORY kills after the resume: its own kill is long gone from the
    history, and the write before the replay is the latest kill, not the one it lifts."""
    fabric, clock, nodes, ks = await fleet(1)
    await ks.kill(Scope.FLEET, "", "first")
    r1 = await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    for i in range(STATE_HISTORY + 1):
        await ks.kill(Scope.FLEET, "", f"again {i}")
    operator = MemoryControlPlane(fabric)
    await operator.connect()
    await operator.put_state(r1.entry)
    await stop_all(nodes)
    node = await reborn(fabric, clock)
    assert node.check(OrderIds("o").order()).reason is RejectReason.HALTED
    assert node.refused == {TrustReason.REPLAYED: 1}
    await node.stop()


class CountingMembers(MemoryControlPlane):
    """The memory backend, counting membership writes."""

    puts = 0

    async def put_member(self, status: NodeStatus) -> None:
        self.puts += 1
        await super().put_member(status)


async def test_the_membership_record_is_stored_when_it_changes_and_never_lapses() -> None:
    """Not a store write per heartbeat: a record that says nothing new waits until the stored
    one has half a lease left, and readers never see a live node's record lapse."""
    fabric = MemoryFabric()
    clock = SimClock(1_000 * MS)
    plane = CountingMembers(fabric)
    await plane.connect()
    node = make_node("n1", plane, clock)
    await node.start()
    reader = await plane_on(fabric)
    beat = POLICY.heartbeat_ns
    beats = 60
    plane.puts = 0
    for _ in range(beats):
        clock.advance(beat)
        await node.heartbeat_once()
        await settle()
        (record,) = await reader.members()
        assert record.live(clock.time_ns(), 0), "a live node's record lapsed"
    lease_halves = beats * beat / (POLICY.lease_ns / 2)
    assert 0 < plane.puts <= lease_halves + 1 < beats / 2
    before = plane.puts
    node.guard.disarm("ops")  # something new to say: stored at the next heartbeat
    clock.advance(beat)
    await node.heartbeat_once()
    await settle()
    assert plane.puts == before + 1
    (record,) = await reader.members()
    assert not record.armed
    await node.stop()


async def test_an_entry_whose_key_is_only_whitespace_is_refused_and_every_node_still_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A signed kill of strategy " " (a slot can hold it, the Guard refuses to latch it)
    stored next to a fleet kill: before, every node's resync raised ValueError out of
    `start` (no node could join the fleet) and the announcement raised out of the handler.
    Now it is refused as malformed, stored or live, and the fleet kill holds."""
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    ops = await plane_on(fabric)
    await ops.put_state(entry(Scope.STRATEGY, " ", command_id="blank", issued_ns=5))
    await ops.put_state(entry(command_id="k1", issued_ns=6))
    node = make_node("n1", await plane_on(fabric), clock)
    with caplog.at_level(logging.ERROR):
        await node.start()
        assert node.check(OrderIds("o").order()).reason is RejectReason.HALTED
        assert node.refused == {TrustReason.MALFORMED: 1}
        assert "whitespace" in node.last_refusal
        await ops.announce_state(entry(Scope.SYMBOL, "\t", command_id="tab", issued_ns=7))
    assert node.refused == {TrustReason.MALFORMED: 2}
    assert len(refusals(node)) == 2
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
    await node.stop()


async def test_a_kill_heard_after_the_resume_that_lifts_it_does_not_halt_again() -> None:
    """A node that starts (or resyncs after a disconnect) once a kill and its two-person
    resume are stored holds the resume; the kill switch, still waiting for that node's
    confirmation, then re-announces the kill. Before, the node had never seen that kill
    and latched it: it stayed halted under a resume it had confirmed, and `resume` said
    "not halted". The resume names the kill it lifts; that kill no longer halts."""
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    ks = switch(await plane_on(fabric), clock, "alice")
    kill = await ks.kill(Scope.FLEET, "", "stop", timeout_s=0.05)
    assert (await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))).ok
    node = make_node("n1", await plane_on(fabric), clock)
    await node.start()
    ids = OrderIds("o")
    assert node.check(ids.order()).accepted
    await ks.plane.announce_state(kill.entry)  # re-announced to a node that did not confirm
    await settle()
    assert node.check(ids.order()).accepted
    assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    await ks.kill(Scope.FLEET, "", "a new kill still stops it")
    assert node.check(ids.order()).reason is RejectReason.HALTED
    await node.stop()


class FlappingStates(MemoryControlPlane):
    """The memory backend whose connection drops once right after a kill-state read and
    comes back, while another client stores a kill this connection never hears."""

    def __init__(self, fabric: MemoryFabric) -> None:
        super().__init__(fabric)
        self.kill_while_away: StateEntry | None = None
        self.operator: MemoryControlPlane | None = None

    async def states(self) -> dict[str, tuple[StateEntry | None, int]]:
        read = await super().states()
        kill, self.kill_while_away = self.kill_while_away, None
        if kill is not None and self.operator is not None:
            await self._set_connected(False)
            await self.operator.put_state(kill)  # stored and republished: not delivered here
            await self._set_connected(True)
        return read


async def test_a_resync_read_across_a_second_disconnect_does_not_readmit_the_node() -> None:
    """The node reconnects and resyncs; its connection drops again right after the store
    was read, and a kill is stored in that gap. Before, the node renewed its lease on the
    read it had (the drop found it not yet admitted, so revoked nothing) and traded on
    through the stored kill: neither path would ever bring it. Now a drop during the
    resync admits nothing, and the next heartbeat's read brings the kill."""
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    plane = FlappingStates(fabric)
    await plane.connect()
    node = make_node("n1", plane, clock)
    await node.start()
    ids = OrderIds("o")
    await fabric.set_reachable(False)
    await fabric.set_reachable(True)
    plane.operator = await plane_on(fabric)
    plane.kill_while_away = entry(command_id="in-the-gap", issued_ns=clock.time_ns())
    await node.heartbeat_once()
    assert not node.admitted
    assert node.check(ids.order()).reason is RejectReason.LEASE_EXPIRED
    await node.heartbeat_once()
    assert node.admitted
    assert node.check(ids.order()).reason is RejectReason.HALTED
    await node.stop()


async def test_a_kill_stored_re_dated_past_a_later_write_is_handled_once() -> None:
    """alice's clock runs 3 s ahead: her kill and resume leave the slot dated ahead. bob's
    kill is announced at his time and stored re-dated past that resume (same command).
    Before, the node latched, confirmed and recorded it on the announcement, then again on
    the store's copy: two halt records and two confirmations of one kill."""
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    node = make_node("n1", await plane_on(fabric), clock)
    await node.start()
    alice = switch(await plane_on(fabric), SimClock(1_003 * S), "alice")
    bob = switch(await plane_on(fabric), clock, "bob")
    await alice.kill(Scope.FLEET, "", "first", timeout_s=0.2)
    assert (await alice.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))).ok
    rec = node.guard.recorder
    halts, confirmed = rec.seq, len(node.confirmed)
    kill = await bob.kill(Scope.FLEET, "", "second", timeout_s=0.2)
    assert kill.ok and kill.entry.issued_ns > clock.time_ns()  # the store's copy: re-dated
    await asyncio.sleep(2 * REPORT_DELAY_S)
    assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
    assert len(node.confirmed) == confirmed + 1 and rec.seq == halts + 1
    assert node._applied["fleet.fleet"] == kill.entry  # the slot's latest, for its resume
    assert (await bob.resume(Scope.FLEET, "", "done", approvers=(ALICE,))).ok
    assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    await node.stop()


async def test_a_fleet_halt_held_on_a_lost_store_is_not_sent_to_the_relay_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node restored a fleet halt from its flight recorder onto an empty store. A node
    may not sign a fleet halt, so the relay refuses it: before, the node sent it again
    every 0.2 s for as long as it held it (the supervisor logging each refusal). Now it
    is held and named once; its own node halt is still stored."""
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    node = make_node("n1", await plane_on(fabric), clock)
    node.guard.halt(Scope.FLEET, "fleet", "restored from this node's flight recorder", "test")
    node.guard.halt(Scope.NODE, "n1", "restored from this node's flight recorder", "test")
    await relay_on(fabric, clock)
    with caplog.at_level(logging.ERROR):
        await node.start()
        await settle()
        node._store_lost({})  # a later resync on the same empty store: still once
    assert (Scope.FLEET, "fleet") not in node._auto
    assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
    assert sum("LOST_HALT_UNSTORABLE" in r.message for r in caplog.records) == 1
    stored, _ = await node.plane.get_state(Scope.NODE, "n1")
    assert stored is not None and stored.state is TradingState.HALTED
    fleet, _ = await node.plane.get_state(Scope.FLEET, "fleet")
    assert fleet is None
    await node.stop()


async def test_a_node_away_during_the_resume_of_a_kill_dated_ahead_resyncs_it() -> None:
    """erin's clock runs an hour ahead; the node holds her kill and is disconnected while
    alice and bob resume it (dated now, naming that kill). Its resync reads the resume
    from the store: before, the node kept the kill, which orders after the resume by issue
    time, and stayed halted under a stored resume until the clocks reached erin's."""
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    node = make_node("n1", await plane_on(fabric), clock)
    await node.start()
    erin = switch(await plane_on(fabric), SimClock(1_000 * S + 3_600 * S), "erin")
    alice = switch(await plane_on(fabric), clock, "alice")
    kill = await erin.kill(Scope.FLEET, "", "incident", timeout_s=0.2)
    assert kill.ok and node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
    assert isinstance(node.plane, MemoryControlPlane)
    await node.plane._set_connected(False)
    resumed = await alice.resume(Scope.FLEET, "", "fixed", timeout_s=0.05, approvers=(BOB,))
    assert resumed.revision is not None and resumed.missing == ["n1"]
    assert resumed.entry.issued_ns < kill.entry.issued_ns
    await node.plane._set_connected(True)
    await node.heartbeat_once()
    assert node.admitted
    assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    assert node._applied["fleet.fleet"] == resumed.entry
    await node.stop()


class _HourAhead(SystemClock):
    """An issuer's wall clock an hour ahead of everyone else's."""

    def time_ns(self) -> int:
        return super().time_ns() + 3_600 * S


def _flag_on(at_ns: int) -> str:
    """alice's proof of turning RLP on for n1 and n2 at `at_ns`, approved by bob."""
    approval = Approval(
        ApprovalKind.FLAG, RLP, True, None, "alice", "ok", at_ns - 1, at_ns + 3_600 * S
    )
    change = FlagChange(RLP, True, ("n1", "n2"), "alice", None, "try it", "cli", at_ns, {})
    request = ActivationRequest(
        RLP,
        True,
        "alice",
        "try it",
        "cli",
        approval=encode_envelope(sign_approval(approval, BOB)).decode(),
    )
    definition = REGISTRY.get(RLP)
    assert definition is not None
    return FlagSealer(signer("alice"), trust().roster).seal(change, 1, request, definition)


async def _store_flag(plane: MemoryControlPlane, revision: int, proof: str) -> None:
    state = FlagState(RLP, revision, {"n1": True, "n2": True}, {}, {"n1": proof, "n2": proof})
    await plane.put_record(Bucket.FLAGS, state_key(RLP), ENCODER.encode(state))


async def test_a_flag_change_made_under_a_kill_dated_ahead_stays_refused_after_its_resume() -> None:
    """erin's clock runs an hour ahead. A risk-adding flag change approved while her kill
    holds is refused (frozen), and after alice and bob resume it (dated before the kill)
    it stays refused, on the node that ran through the kill and on one started after the
    resume, as for a kill with a sane date. Before, both remembered the kill as in force
    from its own claimed date to the resume's: an empty interval, and the change applied."""
    f = await release_fleet("n1", release="r1")
    f.fabric.clock = f.clock  # the store stamps each write with its own time
    plane = await f.plane()
    n1 = f.nodes[0]
    flags = NodeFlags(n1)
    await flags.start()
    try:
        kill = await switch(await f.plane(), _HourAhead(), "erin").kill(
            Scope.FLEET, "", "incident", timeout_s=0.5
        )
        assert kill.ok and kill.entry.issued_ns > f.clock.time_ns() + 3_000 * S
        proof = _flag_on(f.clock.time_ns())  # approved during the kill
        await _store_flag(plane, 1, proof)
        await settle()
        assert flags.refused[TrustReason.FROZEN_BY_KILL] == 1
        resumed = await switch(plane, f.clock).resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
        assert resumed.ok and resumed.entry.issued_ns < kill.entry.issued_ns
        assert n1.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
        await _store_flag(plane, 2, proof)  # the same change, written again after the resume
        await settle()
        assert flags.get(RLP) is None  # still the safe default
        assert flags.refused[TrustReason.FROZEN_BY_KILL] == 2
        assert "by erin, resumed since" in flags.last_refusal
        n2 = await f.add("n2")  # started after the resume: reads the kill from history
        late = NodeFlags(n2)
        await late.start()
        assert late.get(RLP) is None
        assert late.refused[TrustReason.FROZEN_BY_KILL] == 1
        assert "by erin, resumed since" in late.last_refusal
    finally:
        await f.stop()


async def test_a_node_started_during_a_kill_refuses_a_flag_change_made_under_it_earlier() -> None:
    """A risk-adding flag change approved during a kill, before a node (re)started: the
    node latches the kill when it starts, later than the change, yet the change was made
    under the kill and it refuses it as the nodes that ran through the kill do, during
    the kill and after the resume. Before, it judged the kill in force only from its own
    latch and applied the change."""
    f = await release_fleet("n1", release="r1")
    plane = await f.plane()
    try:
        kill = await switch(await f.plane(), f.clock).kill(
            Scope.FLEET, "", "incident", timeout_s=0.5
        )
        assert kill.ok
        await _store_flag(plane, 1, _flag_on(f.clock.time_ns()))  # approved during the kill
        await settle()
        n2 = await f.add("n2")  # started during the kill, after the change
        late = NodeFlags(n2)
        await late.start()
        assert n2.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        assert late.get(RLP) is None  # the safe default
        assert late.refused[TrustReason.FROZEN_BY_KILL] == 1
        assert "the fleet kill 'fleet' (by alice)" in late.last_refusal
    finally:
        await f.stop()


async def test_a_task_that_swallows_a_cancel_is_still_stopped() -> None:
    """Python 3.11's `wait_for` (inside nats-py's requests) can swallow a cancellation: a
    stopping node's checkpoint loop went on to its next round and the stop waited for good
    (a test hung under load). `stop_task` cancels again until the task has ended."""
    swallowed = 0

    async def loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # as a cancel lost inside `wait_for`

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_task(task), 10)
    assert task.cancelled() and swallowed == 1
