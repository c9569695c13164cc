"""A node's restart keeps a kill it heard on the fast path alone, whatever the clocks said.

The node's flight recorder holds the kill as the command it was (`_carrying`). At a
restart the store's resume in force lifts it only if it names it, or if the store's kept
history held that kill before the resume: a resume dated after the recorded halt (its
signers' clocks ahead, the kill's issuer's behind, or simply decided later by operators
who never saw the kill in the store) no longer drops it, as the same resume heard live or
at a resync is refused as stale. A node whose recorder holds an old kill the store did
lift (before its kept history, many writes ago) still trades.
"""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.audit.standing import StandingHalt
from knightwatch.clock import SimClock
from knightwatch.control.node.runtime import NodeRuntime, _carrying
from knightwatch.control.plane.history import unverified_id
from knightwatch.control.plane.memory import MemoryFabric
from knightwatch.control.plane.protocol import STATE_HISTORY, ControlPlane
from knightwatch.control.plane.wire import StateEntry, slot_of
from knightwatch.state import Scope, TradingState

from ...identities import sign
from ..fleet_fixtures import S, make_node, plane_on
from ..helpers import entry

START = 1_000 * S


def resume(
    scope: Scope, key: str, command_id: str, issued_ns: int, lifts: str, on: int
) -> StateEntry:
    """alice's resume, approved by bob, of `lifts`, decided on revision `on`."""
    unsigned = entry(scope, key, TradingState.ACTIVE, command_id, issued_ns, supersedes=lifts)
    return sign(msgspec.structs.replace(unsigned, decided_on=on, proof=None))


def recorded(scope: Scope, key: str, command_id: str, ts: int, seq: int = 7) -> StandingHalt:
    """The halt record the node's flight recorder kept of the kill `command_id` it applied."""
    return StandingHalt(
        scope=scope.value,
        key=key,
        state="HALTED",
        code="halted",
        reason=_carrying("runaway", command_id),
        actor="supervisor",
        ts=ts,
        seq=seq,
    )


async def restarted(
    fabric: MemoryFabric, clock: SimClock, halts: list[StandingHalt]
) -> NodeRuntime:
    """n1 started again from its flight recorder's `halts`."""
    node = make_node("n1", await plane_on(fabric), clock)
    node.recovered = tuple(halts)
    await node.start()
    return node


async def kill_then_resume(
    ops: ControlPlane, clock: SimClock, scope: Scope, key: str, n: int, revision: int | None
) -> int:
    """alice's kill `k<n>` and its resume `r<n>`, each stored a second after the last."""
    clock.advance(S)
    kill = entry(scope, key, command_id=f"k{n}", issued_ns=clock.time_ns())
    if revision is None:
        revision = await ops.put_state(kill)
    else:
        revision = await ops.put_state(kill, expected_revision=revision)
    clock.advance(S)
    lift = resume(scope, key, f"r{n}", clock.time_ns(), f"k{n}", revision)
    return await ops.put_state(lift, expected_revision=revision)


SCOPES = [(Scope.FLEET, "fleet"), (Scope.STRATEGY, "mm")]


@pytest.mark.parametrize(("scope", "key"), SCOPES)
@pytest.mark.parametrize("ahead_s", [0, 4])
async def test_a_restart_keeps_a_kill_heard_live_only_under_a_resume_dated_after_it(
    scope: Scope, key: str, ahead_s: int
) -> None:
    """The store went k1, r1 (of k1); the supervisor's k2 reached n1 on the fast path only
    (its store write failed) before r1 was signed, or r1's signers' clocks ran ahead. n1
    crashed holding k2. Restarted, it read r1 (dated after its record of k2) as lifting
    k2 and traded, though r1 never named k2 and the store never held it."""
    clock = SimClock(START)
    fabric = MemoryFabric(clock=clock)
    ops = await plane_on(fabric)
    revision = await ops.put_state(entry(scope, key, command_id="k1", issued_ns=START - 60 * S))
    heard = clock.time_ns()  # n1 latched k2 here (its record's time)
    clock.advance(10 * S)  # (r1's signers' clocks `ahead_s` ahead, within the skew allowed)
    r1 = resume(scope, key, "r1", clock.time_ns() + ahead_s * S, "k1", revision)
    await ops.put_state(r1, expected_revision=revision)
    clock.advance(10 * S)
    node = await restarted(fabric, clock, [recorded(scope, key, "k2", heard)])
    try:
        assert node.guard.trading_state(scope, key) is TradingState.HALTED, "k2 was dropped"
        held = node.held(scope, key)
        assert held is not None and held.command_id == "k2"
        # heard again (a reconnect's resync, its announcement), r1 still lifts nothing
        await node._on_state(r1)
        await node._resync()
        assert node.guard.trading_state(scope, key) is TradingState.HALTED
        # the resume of k2 lifts it, as before the restart
        clock.advance(S)
        now = clock.time_ns()
        current, on = await ops.get_state(scope, key)
        assert current == r1
        await node._on_state(resume(scope, key, "r2", now, "k2", on))
        assert node.guard.trading_state(scope, key) is TradingState.ACTIVE, node.last_refusal
    finally:
        await node.stop()


@pytest.mark.parametrize(("scope", "key"), SCOPES)
async def test_a_restart_under_a_resume_of_a_later_kill_lifts_a_halt_the_store_held(
    scope: Scope, key: str
) -> None:
    """n1 crashed holding k1; the store went on k1, r1, k3, r3 while it was down: r3 names
    k3, not k1, but the store held k1 before it, so n1 trades after its restart."""
    clock = SimClock(START)
    fabric = MemoryFabric(clock=clock)
    ops = await plane_on(fabric)
    revision = await ops.put_state(entry(scope, key, command_id="k1", issued_ns=START))
    heard = clock.time_ns() + 5 * S  # n1's clock ahead of everyone's: recorded "later"
    clock.advance(S)
    revision = await ops.put_state(
        resume(scope, key, "r1", clock.time_ns(), "k1", revision), expected_revision=revision
    )
    await kill_then_resume(ops, clock, scope, key, 3, revision)
    node = await restarted(fabric, clock, [recorded(scope, key, "k1", heard)])
    try:
        assert node.guard.trading_state(scope, key) is TradingState.ACTIVE, node.last_refusal
        assert not node.refused
    finally:
        await node.stop()


@pytest.mark.parametrize(("scope", "key"), SCOPES)
async def test_a_restart_long_after_its_kill_was_lifted_trades(scope: Scope, key: str) -> None:
    """n1 crashed holding k1; while it was down the store lifted k1 and went through so
    many kills and resumes that its kept history no longer reaches k1. Recorded before
    everything the store keeps, k1 is over: n1 trades after its restart."""
    clock = SimClock(START)
    fabric = MemoryFabric(clock=clock)
    ops = await plane_on(fabric)
    revision = await ops.put_state(entry(scope, key, command_id="k1", issued_ns=START))
    heard = clock.time_ns()
    clock.advance(60 * S)
    revision = await ops.put_state(
        resume(scope, key, "r1", clock.time_ns(), "k1", revision), expected_revision=revision
    )
    for n in range(2, 2 + STATE_HISTORY):
        revision = await kill_then_resume(ops, clock, scope, key, n, revision)
    kept = await ops.state_history(scope, key, revision)
    assert "k1" not in {e.command_id for e, _ in kept if e is not None}
    node = await restarted(fabric, clock, [recorded(scope, key, "k1", heard)])
    try:
        assert node.guard.trading_state(scope, key) is TradingState.ACTIVE, node.last_refusal
        assert not node.refused
    finally:
        await node.stop()


async def test_a_restart_keeps_a_live_only_kill_heard_after_what_a_full_history_keeps() -> None:
    """The slot is busy: its kept history is full. The supervisor's k9 reached n1 on the
    fast path only after the oldest write the store keeps: the history would show k9 had
    the store held it, so the resume in force (of another kill) does not lift it."""
    clock = SimClock(START)
    fabric = MemoryFabric(clock=clock)
    ops = await plane_on(fabric)
    revision: int | None = None
    for n in range(1, 1 + STATE_HISTORY):
        revision = await kill_then_resume(ops, clock, Scope.FLEET, "fleet", n, revision)
        if n == STATE_HISTORY - 2:
            heard = clock.time_ns()  # k_live heard here, between two stored writes
    assert revision is not None
    assert len(await ops.state_history(Scope.FLEET, "fleet", revision)) == STATE_HISTORY - 1
    node = await restarted(fabric, clock, [recorded(Scope.FLEET, "fleet", "k_live", heard)])
    try:
        assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED, "k_live dropped"
    finally:
        await node.stop()


async def test_a_restart_lifts_a_recorded_fail_closed_halt_the_store_held() -> None:
    """n1 held the fail-closed halt of a stored write it could not trust (unsigned) when
    it crashed; operators resumed that halt and later killed and resumed again. The store
    held it before the resume in force: n1 trades after its restart."""
    clock = SimClock(START)
    fabric = MemoryFabric(clock=clock)
    ops = await plane_on(fabric)
    unsigned = msgspec.structs.replace(entry(command_id="bad", issued_ns=START), proof=None)
    revision = await ops.put_state(unsigned)
    held = unverified_id(slot_of(Scope.FLEET, "fleet"), revision)
    heard = clock.time_ns()
    clock.advance(S)
    revision = await ops.put_state(
        resume(Scope.FLEET, "fleet", "r0", clock.time_ns(), held, revision),
        expected_revision=revision,
    )
    await kill_then_resume(ops, clock, Scope.FLEET, "fleet", 3, revision)
    node = await restarted(fabric, clock, [recorded(Scope.FLEET, "fleet", held, heard)])
    try:
        assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE, node.last_refusal
    finally:
        await node.stop()
