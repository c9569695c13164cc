"""A restarted node holds its Guard's own halt until a resume of that halt, whatever is on top.

The Guard keeps one latch per source: a loss stop and an operator's kill of the same node
are two latches, and the operator's resume lifts only the kill (the node then stores its
loss stop again for someone to resume). At a restart the node read its own flight record
back and latched again only what the store had no word on: with the operator's kill
stored over the loss stop, the kill came back alone, and its resume let the node trade
with the loss never resumed. Memory plane, real flight recorders on disk, restarts
in-process.
"""

from __future__ import annotations

from pathlib import Path

from knightwatch.audit.standing import StandingHalt, standing
from knightwatch.clock import SimClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.decision import RejectReason
from knightwatch.order import Fill, Side
from knightwatch.state import Scope, TradingState

from ...identities import BOB, switch
from ..fleet_fixtures import OrderIds, S, plane_on, recorded_node_on, relay_on
from ..helpers import until


async def stopped(node: NodeRuntime, path: Path) -> list[StandingHalt]:
    """Stop `node` and read back what its flight recorder says was in force."""
    await node.stop()
    node.guard.recorder.close()
    return standing(path).halts


async def stored_as(plane: MemoryControlPlane, actor: str) -> bool:
    entry, _ = await plane.get_state(Scope.NODE, "n1")
    return entry is not None and entry.state is TradingState.HALTED and entry.actor == actor


async def loss_stop_stored_then_killed(
    fabric: MemoryFabric, clock: SimClock, path: Path
) -> tuple[NodeRuntime, KillSwitch]:
    """n1 loses 500 over its max_loss 100 (its loss stop is stored by the relay), then
    alice kills n1 on top of it."""
    node = await recorded_node_on(fabric, clock, path)
    await relay_on(fabric, clock)
    ks = switch(await plane_on(fabric), clock, "alice")
    ids = OrderIds("o")
    order = ids.order()
    assert node.check(order).accepted
    node.on_fill(Fill(order.id, "AAPL", Side.BUY, 10, 100.0))
    node.on_price("AAPL", 50.0)
    assert isinstance(ks.plane, MemoryControlPlane)
    plane = ks.plane
    await until(lambda: stored_as(plane, "guard:loss_limit"), "n1's loss stop stored")
    clock.advance(S)
    killed = await ks.kill(Scope.NODE, "n1", "look at it", timeout_s=5.0)
    assert killed.ok, killed
    await until(lambda: stored_as(plane, "alice"), "alice's kill stored over it")
    return node, ks


def latched(node: NodeRuntime) -> set[RejectReason]:
    """The sources of the latches n1's Guard holds on itself."""
    return {
        code
        for code in (RejectReason.HALTED, RejectReason.LOSS_LIMIT)
        if node.guard._halts.source((Scope.NODE, "n1"), code) is not None
    }


async def test_a_loss_stop_under_an_operators_kill_is_held_after_a_restart(
    tmp_path: Path,
) -> None:
    fabric, clock, path = MemoryFabric(), SimClock(1_000 * S), tmp_path / "n1.jsonl"
    node, ks = await loss_stop_stored_then_killed(fabric, clock, path)
    assert isinstance(ks.plane, MemoryControlPlane)
    plane = ks.plane
    halts = await stopped(node, path)
    assert {h.code for h in halts} == {"halted", "loss_limit"}
    clock.advance(S)
    node = await recorded_node_on(fabric, clock, path, halts)
    try:
        assert latched(node) == {RejectReason.HALTED, RejectReason.LOSS_LIMIT}
        clock.advance(S)
        resumed = await ks.resume(Scope.NODE, "n1", "kill looked at", approvers=(BOB,))
        assert resumed.ok, resumed
        assert node.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED
        assert latched(node) == {RejectReason.LOSS_LIMIT}
        await until(lambda: stored_as(plane, "guard:loss_limit"), "the loss stop stored again")
        clock.advance(S)
        resumed = await ks.resume(Scope.NODE, "n1", "loss reconciled", approvers=(BOB,))
        assert resumed.ok, resumed
        assert node.guard.trading_state(Scope.NODE, "n1") is TradingState.ACTIVE
    finally:
        await node.stop()


async def test_a_loss_stop_is_held_after_a_restart_when_the_kill_over_it_was_resumed_meanwhile(
    tmp_path: Path,
) -> None:
    """alice and bob resume alice's kill while n1 is down: the store reads ACTIVE under a
    resume of her kill, which never named the loss stop. n1 comes back with it latched
    and stores it again. Before, the resume (dated after the loss stop) dropped it."""
    fabric, clock, path = MemoryFabric(), SimClock(1_000 * S), tmp_path / "n1.jsonl"
    node, ks = await loss_stop_stored_then_killed(fabric, clock, path)
    assert isinstance(ks.plane, MemoryControlPlane)
    plane = ks.plane
    halts = await stopped(node, path)
    clock.advance(S)
    await ks.resume(Scope.NODE, "n1", "kill looked at", approvers=(BOB,), timeout_s=0.1)
    entry, _ = await plane.get_state(Scope.NODE, "n1")
    assert entry is not None and entry.state is TradingState.ACTIVE
    clock.advance(S)
    node = await recorded_node_on(fabric, clock, path, halts)
    try:
        assert latched(node) == {RejectReason.LOSS_LIMIT}
        await until(lambda: stored_as(plane, "guard:loss_limit"), "the loss stop stored again")
    finally:
        await node.stop()


async def test_a_loss_stop_resumed_while_the_node_was_down_stays_lifted_under_a_later_kill(
    tmp_path: Path,
) -> None:
    """The counter-case: alice and bob resume the loss stop itself while n1 is down, then
    alice kills n1. n1 comes back halted by her kill alone: the store's history shows the
    loss stop resumed."""
    fabric, clock, path = MemoryFabric(), SimClock(1_000 * S), tmp_path / "n1.jsonl"
    node = await recorded_node_on(fabric, clock, path)
    await relay_on(fabric, clock)
    ks = switch(await plane_on(fabric), clock, "alice")
    assert isinstance(ks.plane, MemoryControlPlane)
    plane = ks.plane
    order = OrderIds("o").order()
    assert node.check(order).accepted
    node.on_fill(Fill(order.id, "AAPL", Side.BUY, 10, 100.0))
    node.on_price("AAPL", 50.0)
    await until(lambda: stored_as(plane, "guard:loss_limit"), "n1's loss stop stored")
    halts = await stopped(node, path)
    assert [h.code for h in halts] == ["loss_limit"]
    clock.advance(S)
    await ks.resume(Scope.NODE, "n1", "loss reconciled", approvers=(BOB,), timeout_s=0.1)
    clock.advance(S)
    await ks.kill(Scope.NODE, "n1", "hold it", timeout_s=0.1)
    await until(lambda: stored_as(plane, "alice"), "alice's kill stored")
    clock.advance(S)
    node = await recorded_node_on(fabric, clock, path, halts)
    try:
        assert latched(node) == {RejectReason.HALTED}
    finally:
        await node.stop()
