"""Two kill-switch commands for one scope at the same instant, on both backends.

Ordering must not depend on random command ids, and a node that already
blocks what a command asks must confirm it instead of letting the issuer
report it unconfirmed.
"""

from __future__ import annotations

import asyncio

import pytest

from knightwatch.clock import Clock, SimClock, SystemClock
from knightwatch.control.fleet.killswitch import RECONNECT_GRACE_S, KillSwitchError
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryFabric
from knightwatch.control.plane.wire import FLEET_KEY, StateEntry, decode_entry
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import TrustReason

from ...identities import ALICE, BOB, switch
from ..conftest import Backend
from ..fleet_fixtures import OrderIds, S, make_node, plane_on, settle
from ..helpers import entry, eventually, until

MS = 1_000_000


async def _fleet(backend: Backend, clock: Clock, n: int) -> list[NodeRuntime]:
    nodes = []
    for i in range(n):
        node = make_node(f"n{i + 1}", await backend.plane(f"n{i + 1}"), clock)
        await node.start()
        nodes.append(node)
    return nodes


async def test_same_instant_kills_are_ordered_and_all_confirmed(backend: Backend) -> None:
    clock = SimClock(5_000 * MS)  # frozen: every command below is issued at the same instant
    nodes = await _fleet(backend, clock, 2)
    operator = switch(await backend.plane("alice"), clock, "alice")
    supervisor = switch(await backend.plane("supervisor"), clock, "supervisor")
    targets = ["n1", "n2"]
    try:
        halt = await operator.kill(Scope.FLEET, "", "stop", timeout_s=10.0, targets=targets)
        # Same instant, other issuer, milder state: ordered below the halt (stricter wins),
        # not applied, yet confirmed by both nodes, which do block.
        drain = await supervisor.kill(
            Scope.FLEET,
            "",
            "drain",
            timeout_s=10.0,
            state=TradingState.REDUCING,
            targets=targets,
        )
        assert halt.entry.issued_ns == drain.entry.issued_ns
        assert halt.ok and drain.ok, (halt.missing, drain.missing)
        assert drain.missing == [] and set(drain.latencies_ms) == set(targets)
        for node in nodes:
            assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        # Same instant, same issuer: the later command is newer, whatever its id.
        again = await supervisor.kill(
            Scope.FLEET, "", "drain again", timeout_s=10.0, state=TradingState.HALTED
        )
        assert again.entry.issued_ns > drain.entry.issued_ns and again.ok
        resumed = await operator.resume(Scope.FLEET, "", "fixed", timeout_s=10.0, approvers=(BOB,))
        assert resumed.entry.issued_ns > again.entry.issued_ns and resumed.ok
        for node in nodes:
            assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    finally:
        for node in nodes:
            await node.stop()


async def test_a_kill_superseded_by_a_resume_is_not_confirmed(backend: Backend) -> None:
    clock = SimClock(5_000 * MS)
    node = make_node("n1", await backend.plane("n1"), clock)
    await node.start()
    sent: list[str] = []
    try:
        await node._on_state(entry(state=TradingState.HALTED, command_id="kill", issued_ns=8))
        resume = entry(
            state=TradingState.ACTIVE, command_id="resume", issued_ns=9, supersedes="kill"
        )
        await node._on_state(resume)
        before = len(node.confirmed)
        await node._on_state(entry(state=TradingState.HALTED, command_id="kill", issued_ns=8))
        sent = [c.command_id for c in node.confirmed[before:]]
        assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    finally:
        await node.stop()
    assert sent == []  # the kill is not in effect: confirming it would be a lie


async def test_an_unseen_kill_older_than_a_resume_still_halts_and_confirms(
    backend: Backend,
) -> None:
    """Its issuer's clock lags (or the store was unreachable to order it): fail closed."""
    clock = SimClock(5_000 * MS)
    node = make_node("n1", await backend.plane("n1"), clock)
    await node.start()
    try:
        resume = entry(state=TradingState.ACTIVE, command_id="resume", issued_ns=9, supersedes="k0")
        await node._on_state(resume)
        await node._on_state(entry(state=TradingState.HALTED, command_id="late", issued_ns=8))
        assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        assert node.confirmed[-1].command_id == "late"
    finally:
        await node.stop()


def test_equal_instants_order_by_severity_then_actor_not_by_id() -> None:
    def e(state: TradingState, actor: str, cid: str) -> StateEntry:
        return entry(state=state, command_id=cid, issued_ns=7, actor=actor)

    halted, reducing = e(TradingState.HALTED, "b", "0"), e(TradingState.REDUCING, "a", "f")
    assert halted.newer_than(reducing) and not reducing.newer_than(halted)
    by_a, by_b = e(TradingState.HALTED, "a", "f"), e(TradingState.HALTED, "b", "0")
    assert by_b.newer_than(by_a) and not by_a.newer_than(by_b)


async def test_kill_from_a_lagging_clock_still_halts_and_is_stored_newest() -> None:
    fabric = MemoryFabric()
    clock = SimClock(5_000 * S)  # in step with alice; bob's clock lags
    node = make_node("n1", await plane_on(fabric), clock)
    await node.start()
    ahead = switch(await plane_on(fabric), SimClock(5_000 * S), "alice")
    lagging = switch(await plane_on(fabric), SimClock(10 * S), "bob")
    await ahead.kill(Scope.FLEET, "", "first", timeout_s=0.2)
    await ahead.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    result = await lagging.kill(Scope.FLEET, "", "again", timeout_s=0.2)
    assert result.ok
    assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
    stored, _ = await (await plane_on(fabric)).get_state(Scope.FLEET, "fleet")
    assert stored is not None and stored.state is TradingState.HALTED
    assert stored.command_id == result.entry.command_id
    assert stored.issued_ns > 5_000 * S
    # A restarted node resyncs the kill from the store and is halted.
    await node.stop()
    again = make_node("n1", await plane_on(fabric), clock)
    await again.start()
    assert again.guard.trading_state(Scope.FLEET) is TradingState.HALTED
    await again.stop()


async def test_kill_after_another_switch_wrote_the_slot_still_stores_newest() -> None:
    """The switch's remembered revision is stale: its CAS must fail, re-read and bump."""
    fabric = MemoryFabric()
    clock = SimClock(5_000 * S)  # in step with alice; bob's clock lags
    node = make_node("n1", await plane_on(fabric), clock)
    await node.start()
    lagging = switch(await plane_on(fabric), SimClock(10 * S), "bob")
    ahead = switch(await plane_on(fabric), SimClock(5_000 * S), "alice")
    await lagging.kill(Scope.FLEET, "", "first", timeout_s=0.2)  # bob remembers this write
    await ahead.resume(
        Scope.FLEET, "", "fixed", approvers=(BOB,)
    )  # alice writes the slot after him
    assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    result = await lagging.kill(Scope.FLEET, "", "again", timeout_s=0.2)
    assert result.ok and node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
    stored, _ = await (await plane_on(fabric)).get_state(Scope.FLEET, "fleet")
    assert stored is not None and stored.command_id == result.entry.command_id
    assert stored.state is TradingState.HALTED and stored.issued_ns > 5_000 * S
    await node.stop()


async def test_strategy_symbol_scope_halts_one_pair_on_every_node() -> None:
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    node = make_node("n1", await plane_on(fabric), clock)
    await node.start()
    ks = switch(await plane_on(fabric), clock, "alice")
    result = await ks.kill(Scope.STRATEGY_SYMBOL, "mm/AAPL", "pair", timeout_s=0.2)
    assert result.ok and result.targets == ["n1"]
    ids = OrderIds("c")
    assert not node.check(ids.order("AAPL", "mm")).accepted
    node.on_price("MSFT", 100.0)
    assert node.check(ids.order("MSFT", "mm")).accepted
    assert node.check(ids.order("AAPL", "other")).accepted
    await node.stop()


async def test_a_kill_is_stored_even_when_a_target_never_confirms(backend: Backend) -> None:
    """The store write waits for the confirmations (the stop first, the record second), but
    only briefly: a node that never answers does not keep the kill out of the store. (n1
    must confirm within the timeout: over NATS on a loaded machine that takes up to seconds.)"""
    clock = SystemClock()
    nodes = await _fleet(backend, clock, 1)
    operator = switch(await backend.plane("alice"), clock, "alice")
    try:
        result = await operator.kill(
            Scope.FLEET, "", "stop", timeout_s=5.0, targets=["n1", "ghost"]
        )
        assert result.missing == ["ghost"] and "n1" in result.latencies_ms
        assert result.revision is not None, result.durable_error
        stored, revision = await (await backend.plane("carol")).get_state(Scope.FLEET, "fleet")
        assert stored is not None and stored.command_id == result.entry.command_id
        assert revision == result.revision
    finally:
        for node in nodes:
            await node.stop()


async def test_a_kill_with_the_control_plane_down_answers_at_once_that_it_was_not_sent(
    backend: Backend,
) -> None:
    """Nothing can be sent: the answer comes within the reconnect grace (it took the store
    write's 15 s), says not sent, names no lease it cannot know, and nothing goes out later
    (nats-py would have queued the store write and sent it once the server was back)."""
    clock = SystemClock()
    nodes = await _fleet(backend, clock, 1)
    plane = await backend.plane("alice")
    operator = switch(plane, clock, "alice")
    loop = asyncio.get_running_loop()
    try:
        # the normal path does not wait for the grace: given a long one, it answers well
        # before it ends (a bound below the default 0.5 s grace flaked on a loaded machine)
        started = loop.time()
        first = await operator.kill(
            Scope.STRATEGY, "s1", "while up", timeout_s=10.0, reconnect_grace_s=10.0
        )
        assert first.ok and first.sent and not first.unreachable, first
        took = loop.time() - started
        assert took < 5.0, f"the normal path answered after {took:.2f} s"
        await backend.outage()
        await eventually(lambda: not plane.connected, what="the plane saw the outage")
        started = loop.time()
        result = await operator.kill(Scope.STRATEGY, "s1", "while down", timeout_s=10.0)
        took = loop.time() - started
        # the promise is the grace; 1.5 s is a loaded machine's event-loop margin, still
        # far from the confirmation timeout (10 s) and the store write's 15 s
        assert took < RECONNECT_GRACE_S + 1.5, f"answered after {took:.2f} s"
        assert not result.sent and result.unreachable and not result.ok, result
        assert result.revision is None and result.latencies_ms == {}
        assert result.missing == result.targets  # those heard before the outage, if any
        assert not any(result.leases.values())  # unknown: no lease judged on stale news
        await backend.restore()
        await eventually(lambda: plane.connected, what="the plane reconnected")
        await asyncio.sleep(0.5)  # a queued write would have landed by now
        stored, revision = await plane.get_state(Scope.STRATEGY, "s1")
        assert stored is not None and stored.command_id == first.entry.command_id
        assert revision == first.revision
    finally:
        for node in nodes:
            await node.stop()


async def test_a_kill_whose_connection_returns_within_the_grace_is_sent_and_stored(
    backend: Backend,
) -> None:
    clock = SystemClock()
    nodes = await _fleet(backend, clock, 1)
    plane = await backend.plane("alice")
    operator = switch(plane, clock, "alice")
    await operator.start()  # as every switch is, once connected (the console's, the CLI's)
    try:
        await backend.outage()
        await eventually(lambda: not plane.connected, what="the plane saw the outage")
        killing = asyncio.create_task(
            operator.kill(Scope.STRATEGY, "s2", "reconnecting", timeout_s=30.0,
                          reconnect_grace_s=30.0)
        )  # fmt: skip
        await asyncio.sleep(0.2)
        await backend.restore()
        result = await killing
        assert result.sent and not result.unreachable, result
        assert result.revision is not None, result.durable_error
    finally:
        for node in nodes:
            await node.stop()


async def test_a_kill_sent_before_the_control_plane_went_is_partial_not_unsent(
    backend: Backend,
) -> None:
    """Sent and stored, one target silent, then the connection goes: the answer comes within
    the grace instead of at the confirmation timeout, and says sent, stored, who confirmed."""
    clock = SystemClock()
    nodes = await _fleet(backend, clock, 1)
    plane = await backend.plane("alice")
    operator = switch(plane, clock, "alice")
    loop = asyncio.get_running_loop()
    try:
        killing = asyncio.create_task(
            operator.kill(Scope.FLEET, "", "then down", timeout_s=10.0, targets=["n1", "ghost"])
        )
        # n1 confirmed and the kill is stored; "ghost" never answers
        await eventually(lambda: any("n1" in heard for heard in operator._arrivals.values()))
        await eventually(lambda: nodes[0].guard.trading_state(Scope.FLEET) is TradingState.HALTED)

        async def stored() -> bool:
            return (await plane.get_state(Scope.FLEET, FLEET_KEY))[0] is not None

        await until(stored, "the kill was stored")
        started = loop.time()
        await backend.outage()
        result = await killing
        took = loop.time() - started
        # the grace, plus a loaded machine's margin to notice the lost socket and wake up
        assert took < RECONNECT_GRACE_S + 1.5, f"answered {took:.2f} s after the outage"
        assert result.sent and result.unreachable and not result.ok, result
        assert "n1" in result.latencies_ms and result.missing == ["ghost"]
        assert result.revision is not None, result.durable_error
    finally:
        for node in nodes:
            await node.stop()


async def test_a_kill_of_a_key_that_cannot_be_stored_is_refused_before_anything_is_sent(
    backend: Backend,
) -> None:
    """An empty or over-long key names no slot: the kill is refused at once, naming the key
    rule, and nothing is signed or announced. Before, the announcement went out first (every
    node failed on it with a traceback), the command waited out its timeout for
    confirmations, and only then raised from the store write."""
    clock = SimClock(5_000 * MS)
    listener = await backend.plane("n1")
    heard: list[StateEntry] = []

    async def on_state(e: StateEntry) -> None:
        heard.append(e)

    await listener.subscribe_states(on_state)
    operator = switch(await backend.plane("alice"), clock, "alice")
    for key, rule in (
        ("", "must be a non-empty string"),
        ("X" * 130, "must be at most 129 characters"),
    ):
        with pytest.raises(KillSwitchError, match=f"symbol key: {rule}"):
            await operator.kill(Scope.SYMBOL, key, "typo", timeout_s=10.0, targets=["n1"])
        with pytest.raises(KillSwitchError, match=f"strategy key: {rule}"):
            await operator.request_resume(Scope.STRATEGY, key, "typo")
    # a kill that can be stored is heard, and it is the first thing heard
    await operator.kill(Scope.SYMBOL, "MARK", "sentinel", timeout_s=0.1, targets=[])
    await eventually(lambda: bool(heard))
    assert {e.key for e in heard} == {"MARK"}


async def test_a_resume_of_the_fleet_under_another_key_lifts_nothing(backend: Backend) -> None:
    """Every fleet command is about key "fleet": the Guard holds one fleet latch whatever
    key a command names. An operator stores a halt of the fleet under key "x" (its own
    slot) and a two-person resume of it; later a new fleet kill stops the fleet. Approving
    the old request must not lift the new kill, which nobody decided to lift: a resume
    lifts the halt it names, or is stale. Before, the resume passed every check (its own
    slot had not moved, its node-side stale check looked at that slot) and the node's
    fleet latch lifted, while the store still held the new kill: nodes traded under a
    HALTED fleet."""
    clock = SystemClock()
    node = make_node("n1", await backend.plane("n1"), clock)
    await node.start()
    alice = await backend.plane("alice")
    try:
        now = clock.time_ns()
        halt = StateEntry(
            Scope.FLEET, "x", TradingState.HALTED, "my own fleet slot", "alice", "h" * 32,
            now, now + 60 * S,
        ).signed(ALICE.key)  # fmt: skip
        revision = await alice.put_state(halt, expected_revision=0)
        lift = StateEntry(
            Scope.FLEET, "x", TradingState.ACTIVE, "approved long ago", "alice", "r" * 32,
            now + 1, now + 900 * S, supersedes=halt.command_id, decided_on=revision,
        ).signed(ALICE.key, BOB.key)  # fmt: skip
        kill = await switch(alice, clock, "erin").kill(
            Scope.FLEET, FLEET_KEY, "a new incident", timeout_s=10.0, targets=["n1"]
        )
        assert kill.ok
        await alice.put_state(lift, expected_revision=revision)
        await alice.announce_state(lift)
        await eventually(
            lambda: (
                node.refused[TrustReason.MALFORMED] >= 1
                or node.guard.trading_state(Scope.FLEET) is not TradingState.HALTED
            )
        )
        assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        assert "key: a fleet command names key 'fleet'" in node.last_refusal
    finally:
        await node.stop()


async def test_a_fleet_slot_under_another_key_halts_no_starting_node(backend: Backend) -> None:
    """A halt written under `fleet.x` (kill-state write rights suffice) verifies nowhere,
    and no tool can address that slot to resume it. A node starting afterwards must not
    hold the fleet halted for it: it would stay halted for good, the kill switch answering
    "not halted; nothing to resume" for the fleet. Before, the node held the fleet halted
    for it (applied, or refused and held as the slot's fail-closed halt)."""
    clock = SystemClock()
    alice = await backend.plane("alice")
    now = clock.time_ns()
    halt = StateEntry(
        Scope.FLEET, "x", TradingState.HALTED, "unliftable", "alice", "h" * 32, now,
        now + 60 * S,
    ).signed(ALICE.key)  # fmt: skip
    await alice.put_state(halt, expected_revision=0)
    node = make_node("n1", await backend.plane("n1"), clock)
    await node.start()
    try:
        assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
        with pytest.raises(KillSwitchError, match="not halted"):
            await switch(alice, clock, "alice").request_resume(Scope.FLEET, FLEET_KEY, "x")
        # the fleet's own slot still stops and resumes it
        kill = await switch(alice, clock, "erin").kill(
            Scope.FLEET, FLEET_KEY, "incident", timeout_s=10.0, targets=["n1"]
        )
        assert kill.ok and node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        resumed = await switch(alice, clock, "alice").resume(
            Scope.FLEET, FLEET_KEY, "fixed", timeout_s=10.0, approvers=(BOB,)
        )
        assert resumed.ok and node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    finally:
        await node.stop()


async def test_a_kill_dated_an_hour_ahead_is_resumed_now_by_two_people() -> None:
    """erin's clock runs an hour ahead: her kill halts every node at once. alice and bob
    resume it now. Before, the resume was dated after the kill (an hour ahead) and every
    check refused it as issued in the future: the fleet stayed halted until the clocks got
    there. Now it names the kill and lifts it on every node, on the fast path and on a
    start-up read, while the kill switch's own view trusts it; the kill heard again lifts
    nothing, and a kill issued after the resume (dated before erin's) still halts."""
    fabric = MemoryFabric()
    clock = SimClock(5_000 * S)
    nodes = [make_node(n, await plane_on(fabric), clock) for n in ("n1", "n2")]
    for node in nodes:
        await node.start()
    ahead = switch(await plane_on(fabric), SimClock(5_000 * S + 3_600 * S), "erin")
    alice = switch(await plane_on(fabric), clock, "alice")
    late: NodeRuntime | None = None
    try:
        kill = await ahead.kill(Scope.FLEET, "", "incident", timeout_s=0.2)
        assert kill.ok and kill.entry.issued_ns > clock.time_ns() + 3_000 * S
        assert all(n.guard.trading_state(Scope.FLEET) is TradingState.HALTED for n in nodes)
        resumed = await alice.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
        assert resumed.ok, (resumed.missing, resumed.durable_error)
        assert resumed.entry.issued_ns < kill.entry.issued_ns  # dated now, by its own clock
        assert resumed.entry.supersedes == kill.entry.command_id
        assert all(n.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE for n in nodes)
        stored, _, trusted = await alice.current(Scope.FLEET, FLEET_KEY)
        assert trusted and stored == resumed.entry
        # the lifted kill re-announced (as its switch does while it waits) changes nothing
        await (await plane_on(fabric)).announce_state(kill.entry)
        await settle()
        assert all(n.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE for n in nodes)
        late = make_node("n3", await plane_on(fabric), clock)
        await late.start()  # reads the resume from the store
        assert late.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
        clock.advance(S)
        again = await switch(await plane_on(fabric), clock, "bob").kill(
            Scope.FLEET, "", "a new incident", timeout_s=0.2
        )
        assert again.ok and again.entry.issued_ns < kill.entry.issued_ns
        for node in [*nodes, late]:
            assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
    finally:
        for node in [*nodes, *([late] if late is not None else [])]:
            await node.stop()


async def test_an_old_resume_replayed_over_a_kill_dated_behind_it_lifts_nothing() -> None:
    """A resume of erin's kill (dated an hour ahead) is dated now; a later kill is dated
    before erin's. Announcing the old resume again, or putting it back over the new kill,
    must not lift that kill (it names erin's), on running nodes or a starting one."""
    fabric = MemoryFabric()
    clock = SimClock(5_000 * S)
    node = make_node("n1", await plane_on(fabric), clock)
    await node.start()
    ahead = switch(await plane_on(fabric), SimClock(5_000 * S + 3_600 * S), "erin")
    alice = switch(await plane_on(fabric), clock, "alice")
    plane = await plane_on(fabric)
    late: NodeRuntime | None = None
    try:
        await ahead.kill(Scope.FLEET, "", "incident", timeout_s=0.2)
        old = await alice.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
        assert old.ok and node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
        clock.advance(S)
        again = await alice.kill(Scope.FLEET, "", "a new incident", timeout_s=0.2)
        assert again.ok and node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        await plane.announce_state(old.entry)
        await settle()
        assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        assert node.refused[TrustReason.STALE] == 1
        await plane.put_state(old.entry)
        await settle()
        assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        late = make_node("n2", await plane_on(fabric), clock)
        await late.start()
        assert late.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        assert late.refused[TrustReason.REPLAYED] == 1
        assert not (await alice.current(Scope.FLEET, FLEET_KEY))[2]
    finally:
        await node.stop()
        if late is not None:
            await late.stop()


async def test_a_drain_issued_after_a_halt_never_loosens_it(backend: Backend) -> None:
    """A drain (REDUCING) issued after a halt of the same scope was the newer kill: stored
    over the halt and applied by every node, it loosened the halt on one signature. The
    halt stays stored and held; the drain is confirmed (the nodes block more than it
    asks); only a resume (two people) lifts the halt."""
    clock = SimClock(5_000 * MS)
    nodes = await _fleet(backend, clock, 2)
    operator = switch(await backend.plane("alice"), clock, "alice")
    supervisor = switch(await backend.plane("supervisor"), clock, "supervisor")
    targets = ["n1", "n2"]
    try:
        halt = await operator.kill(Scope.FLEET, "", "stop", timeout_s=10.0, targets=targets)
        clock.advance(1_000 * MS)  # later, by another issuer
        drain = await supervisor.kill(
            Scope.FLEET, "", "drain", timeout_s=10.0, state=TradingState.REDUCING,
            targets=targets,
        )  # fmt: skip
        assert halt.ok and drain.ok, (halt.missing, drain.missing)
        stored, _ = await (await backend.plane("bob")).get_state(Scope.FLEET, FLEET_KEY)
        assert stored is not None and stored.command_id == halt.entry.command_id
        for node in nodes:
            assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        resumed = await operator.resume(Scope.FLEET, "", "fixed", timeout_s=10.0, approvers=(BOB,))
        assert resumed.ok
        for node in nodes:
            assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    finally:
        for node in nodes:
            await node.stop()


async def test_a_drain_over_an_entry_it_cannot_verify_keeps_the_halt_every_node_holds(
    backend: Backend,
) -> None:
    """A stored value that is no entry, or one no roster member signed, is a halt of its slot
    on every node (fail closed). The kill switch overwrote it as if the slot were empty, so a
    drain (supervisor or operator, one signature) stored REDUCING there, and a node started
    afterwards traded reduce-only where every running node held the slot halted. The halt it
    reads as stays the record; the drain is confirmed; a kill still replaces it, signed."""
    clock = SimClock(5_000 * MS)
    nodes = await _fleet(backend, clock, 2)
    writer = await backend.plane("alice")
    supervisor = switch(await backend.plane("supervisor"), clock, "supervisor")
    operator = switch(await backend.plane("alice"), clock, "alice")
    targets = ["n1", "n2"]
    late: NodeRuntime | None = None
    try:
        for value in (b"{not an entry", b'{"scope": "fleet"}'):
            _, revision = await writer.get_state(Scope.FLEET, FLEET_KEY)
            await writer.put_state(
                decode_entry("fleet.fleet", value, revision + 1), expected_revision=revision
            )
            # over NATS the write reaches each node on its own watch: wait for both
            await eventually(
                lambda: all(
                    n.guard.trading_state(Scope.FLEET) is TradingState.HALTED for n in nodes
                )
            )
            drain = await supervisor.kill(
                Scope.FLEET, "", "drain", timeout_s=10.0, state=TradingState.REDUCING,
                targets=targets,
            )  # fmt: skip
            assert drain.ok, drain.missing
            stored, _ = await writer.get_state(Scope.FLEET, FLEET_KEY)
            assert stored is not None and stored.state is TradingState.HALTED, stored
            assert stored.command_id != drain.entry.command_id
            late = make_node("n3", await backend.plane("n3"), clock)
            await late.start()
            assert late.guard.trading_state(Scope.FLEET) is TradingState.HALTED
            await late.stop()
            late = None
            kill = await operator.kill(Scope.FLEET, "", "stop", timeout_s=10.0, targets=targets)
            assert kill.ok
            stored, _ = await writer.get_state(Scope.FLEET, FLEET_KEY)
            assert stored is not None and stored.command_id == kill.entry.command_id
            resumed = await operator.resume(
                Scope.FLEET, "", "fixed", timeout_s=10.0, approvers=(BOB,)
            )
            assert resumed.ok
    finally:
        for node in [*nodes, *([late] if late is not None else [])]:
            await node.stop()
