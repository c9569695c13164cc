"""After the store loses a slot's entries, each halt the Guard holds on it is stored in turn.

The Guard keeps one latch per source (an operator's kill, a loss stop, a fill mismatch).
When the kill-state store loses its entries (a single server's disk, a purged stream),
the node stores again what it holds so `status` shows it and `knightwatch resume` can
lift it (`_store_lost`). It registered only the worst latch per slot, and skipped a slot
it had stored an automatic halt of before: the other sources were held by the Guard
alone, and once the one stored was resumed (or at once) the store read ACTIVE while the
node blocked every order for good (`knightwatch resume`: nothing to resume).
Memory plane, real flight recorders on disk, restarts in-process.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from knightwatch.audit.standing import standing
from knightwatch.clock import SimClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.decision import RejectReason
from knightwatch.order import Fill, Side
from knightwatch.state import Scope, TradingState

from ...identities import BOB, switch
from ..fleet_fixtures import (
    OrderIds,
    S,
    mismatch,
    plane_on,
    recorded_node_on,
    relay_on,
    settle,
)
from ..helpers import eventually, until


async def held_as(plane: MemoryControlPlane, source: RejectReason) -> bool:
    entry, _ = await plane.get_state(Scope.NODE, "n1")
    return entry is not None and entry.state is TradingState.HALTED and entry.source is source


def latched(node: NodeRuntime) -> set[RejectReason]:
    """The sources of the latches n1's Guard holds on itself."""
    return {
        code
        for code in RejectReason
        if node.guard._halts.source((Scope.NODE, "n1"), code) is not None
    }


async def loss_and_mismatch(node: NodeRuntime) -> None:
    """n1 loses 500 over its max_loss 100, and a fill contradicts an order: two latches."""
    ids = OrderIds("o")
    first, second = ids.order(), ids.order()
    assert node.check(first).accepted and node.check(second).accepted
    node.on_fill(Fill(second.id, "AAPL", Side.BUY, 10, 100.0))
    node.on_price("AAPL", 50.0)
    await mismatch(node, ids, first.id)
    assert latched(node) == {RejectReason.LOSS_LIMIT, RejectReason.FILL_MISMATCH}


async def resume_each(
    node: NodeRuntime, ks: KillSwitch, plane: MemoryControlPlane, clock: SimClock, n: int
) -> None:
    """Resume, one at a time, each of the `n` halts the store shows for n1, waiting for each
    to be stored; n1 trades again only after the last."""
    for i in range(n):
        await until(lambda: held_as_any(plane), f"halt {i + 1} of {n} stored for someone to resume")
        entry, _ = await plane.get_state(Scope.NODE, "n1")
        assert entry is not None
        assert node.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED
        clock.advance(S)
        resumed = await ks.resume(Scope.NODE, "n1", f"{entry.source.value} done", approvers=(BOB,))
        assert resumed.ok, resumed
    await settle()
    assert latched(node) == set()
    assert node.guard.trading_state(Scope.NODE, "n1") is TradingState.ACTIVE


async def held_as_any(plane: MemoryControlPlane) -> bool:
    entry, _ = await plane.get_state(Scope.NODE, "n1")
    return entry is not None and entry.state is TradingState.HALTED


def storing() -> bool:
    """Whether a loop storing an automatic halt is still running."""
    return any(t.get_name().endswith("-auto-halt") and not t.done() for t in asyncio.all_tasks())


async def lose_store(fabric: MemoryFabric, node: NodeRuntime) -> None:
    """The store loses every kill entry; n1 is cut off meanwhile and resyncs on return."""
    await fabric.set_reachable(False)
    fabric._states.clear()
    fabric._history.clear()
    await fabric.set_reachable(True)
    await node.heartbeat_once()
    assert node.admitted


async def test_a_running_nodes_two_automatic_halts_are_stored_again_after_a_store_loss(
    tmp_path: Path,
) -> None:
    fabric, clock = MemoryFabric(), SimClock(1_000 * S)
    node = await recorded_node_on(fabric, clock, tmp_path / "n1.jsonl")
    await relay_on(fabric, clock)
    ks = switch(await plane_on(fabric), clock, "alice")
    assert isinstance(ks.plane, MemoryControlPlane)
    plane = ks.plane
    try:
        await loss_and_mismatch(node)
        await until(lambda: held_as_any(plane), "n1's first halt stored")
        await eventually(lambda: not storing(), what="n1's automatic halt loops done")
        clock.advance(S)
        await lose_store(fabric, node)
        await resume_each(node, ks, plane, clock, 2)
    finally:
        await node.stop()


async def test_a_restarted_nodes_two_automatic_halts_are_stored_in_turn_on_a_lost_store(
    tmp_path: Path,
) -> None:
    fabric, clock, path = MemoryFabric(), SimClock(1_000 * S), tmp_path / "n1.jsonl"
    node = await recorded_node_on(fabric, clock, path)
    await relay_on(fabric, clock)
    await loss_and_mismatch(node)
    await node.stop()
    node.guard.recorder.close()
    halts = standing(path).halts
    assert {h.code for h in halts} == {"loss_limit", "fill_mismatch"}
    fabric = MemoryFabric()  # the store is lost
    clock.advance(S)
    node = await recorded_node_on(fabric, clock, path, halts)
    await relay_on(fabric, clock)
    ks = switch(await plane_on(fabric), clock, "alice")
    assert isinstance(ks.plane, MemoryControlPlane)
    try:
        assert latched(node) == {RejectReason.LOSS_LIMIT, RejectReason.FILL_MISMATCH}
        await resume_each(node, ks, ks.plane, clock, 2)
    finally:
        await node.stop()


@pytest.mark.parametrize("kill_first", [False, True], ids=["loss-then-kill", "kill-then-loss"])
async def test_an_operators_kill_and_a_loss_stop_are_both_stored_on_a_lost_store(
    tmp_path: Path, kill_first: bool
) -> None:
    fabric, clock, path = MemoryFabric(), SimClock(1_000 * S), tmp_path / "n1.jsonl"
    node = await recorded_node_on(fabric, clock, path)
    await relay_on(fabric, clock)
    ks = switch(await plane_on(fabric), clock, "alice")
    order = OrderIds("o").order()
    assert node.check(order).accepted
    if kill_first:
        assert (await ks.kill(Scope.NODE, "n1", "look at it", timeout_s=5.0)).ok
    node.on_fill(Fill(order.id, "AAPL", Side.BUY, 10, 100.0))
    node.on_price("AAPL", 50.0)
    await settle()
    if not kill_first:
        clock.advance(S)
        assert (await ks.kill(Scope.NODE, "n1", "look at it", timeout_s=5.0)).ok
    assert latched(node) == {RejectReason.HALTED, RejectReason.LOSS_LIMIT}
    await node.stop()
    node.guard.recorder.close()
    halts = standing(path).halts
    assert {h.code for h in halts} == {"halted", "loss_limit"}
    fabric = MemoryFabric()  # the store is lost
    clock.advance(S)
    node = await recorded_node_on(fabric, clock, path, halts)
    await relay_on(fabric, clock)
    ks = switch(await plane_on(fabric), clock, "alice")
    assert isinstance(ks.plane, MemoryControlPlane)
    try:
        assert latched(node) == {RejectReason.HALTED, RejectReason.LOSS_LIMIT}
        await resume_each(node, ks, ks.plane, clock, 2)
    finally:
        await node.stop()


async def test_halts_stored_again_with_the_clock_not_past_the_entry_held_are_resumable(
    tmp_path: Path,
) -> None:
    """The store lost, nothing stored dates the halt stored again: dated by a clock that has
    not moved past the entry the node still holds (stepped back, or frozen), it was ignored
    as older and its resume refused as stale, and the node stayed blocked for good."""
    fabric, clock = MemoryFabric(), SimClock(1_000 * S)
    node = await recorded_node_on(fabric, clock, tmp_path / "n1.jsonl")
    await relay_on(fabric, clock)
    ks = switch(await plane_on(fabric), clock, "alice")
    assert isinstance(ks.plane, MemoryControlPlane)
    plane = ks.plane
    try:
        await loss_and_mismatch(node)
        await until(lambda: held_as_any(plane), "n1's first halt stored")
        await eventually(lambda: not storing(), what="n1's automatic halt loops done")
        await lose_store(fabric, node)  # the clock has not moved since the halt was stored
        await resume_each(node, ks, plane, clock, 2)
    finally:
        await node.stop()
