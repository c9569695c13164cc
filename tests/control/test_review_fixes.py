"""Regressions from the control-plane review: skewed kill clocks, durable automatic halts,
per-source resumes, the strategy/symbol scope and the node's default flight recorder."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from knightwatch.cli.fleet import _scope
from knightwatch.clock import SimClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.connect import FleetError
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.wire import GUARD_ACTOR
from knightwatch.control.serve import default_recorder_path
from knightwatch.decision import RejectReason
from knightwatch.order import Fill, Side
from knightwatch.state import Scope, TradingState

from .fleet_fixtures import OrderIds, make_node
from .helpers import entry

S = 1_000_000_000


async def _plane(fabric: MemoryFabric) -> MemoryControlPlane:
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    return plane


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_kill_from_a_lagging_clock_still_halts_and_is_stored_newest() -> None:
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    node = make_node("n1", await _plane(fabric), clock)
    await node.start()
    ahead = KillSwitch(await _plane(fabric), SimClock(5_000 * S), actor="alice")
    lagging = KillSwitch(await _plane(fabric), SimClock(10 * S), actor="bob")
    await ahead.kill(Scope.FLEET, "", "first", timeout_s=0.2)
    await ahead.resume(Scope.FLEET, "", "fixed")
    assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    result = await lagging.kill(Scope.FLEET, "", "again", timeout_s=0.2)
    assert result.ok
    assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
    stored, _ = await (await _plane(fabric)).get_state(Scope.FLEET, "fleet")
    assert stored is not None and stored.state is TradingState.HALTED
    assert stored.command_id == result.entry.command_id
    assert stored.issued_ns > 5_000 * S
    # A restarted node resyncs the kill from the store and is halted.
    await node.stop()
    again = make_node("n1", await _plane(fabric), clock)
    await again.start()
    assert again.guard.trading_state(Scope.FLEET) is TradingState.HALTED
    await again.stop()


async def test_kill_after_another_switch_wrote_the_slot_still_stores_newest() -> None:
    """The switch's remembered revision is stale: its CAS must fail, re-read and bump."""
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    node = make_node("n1", await _plane(fabric), clock)
    await node.start()
    lagging = KillSwitch(await _plane(fabric), SimClock(10 * S), actor="bob")
    ahead = KillSwitch(await _plane(fabric), SimClock(5_000 * S), actor="alice")
    await lagging.kill(Scope.FLEET, "", "first", timeout_s=0.2)  # bob remembers this write
    await ahead.resume(Scope.FLEET, "", "fixed")  # alice writes the slot after him
    assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    result = await lagging.kill(Scope.FLEET, "", "again", timeout_s=0.2)
    assert result.ok and node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
    stored, _ = await (await _plane(fabric)).get_state(Scope.FLEET, "fleet")
    assert stored is not None and stored.command_id == result.entry.command_id
    assert stored.state is TradingState.HALTED and stored.issued_ns > 5_000 * S
    await node.stop()


async def test_unseen_halt_applies_even_if_it_orders_older_but_a_seen_one_does_not() -> None:
    fabric = MemoryFabric()
    node = make_node("n1", await _plane(fabric), SimClock(1_000 * S))
    await node.start()
    kill = entry(command_id="k1", issued_ns=50)
    resume = entry(state=TradingState.ACTIVE, command_id="r1", issued_ns=100)
    await node._on_state(kill)
    await node._on_state(resume)
    assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    await node._on_state(kill)  # a late echo of a kill already resumed
    assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    await node._on_state(entry(command_id="k0", issued_ns=10))  # fast path, lagging issuer
    assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
    await node.stop()


async def _mismatch(node: NodeRuntime, ids: OrderIds, order_id: str = "") -> None:
    """A venue fill whose side contradicts the order: the Guard halts the node itself."""
    if not order_id:
        order = ids.order()
        assert node.check(order).accepted
        order_id = order.id
    node.on_fill(Fill(order_id, "AAPL", Side.SELL, 10, 100.0))
    await _settle()


async def test_automatic_halt_is_stored_survives_restart_and_resume_lifts_it() -> None:
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    node = make_node("n1", await _plane(fabric), clock)
    await node.start()
    await _mismatch(node, OrderIds("a"))
    assert node.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED
    ops = await _plane(fabric)
    stored, _ = await ops.get_state(Scope.NODE, "n1")
    assert stored is not None and stored.state is TradingState.HALTED
    assert stored.actor == f"{GUARD_ACTOR}{RejectReason.FILL_MISMATCH.value}"
    assert stored.source is RejectReason.FILL_MISMATCH
    await node.stop()
    restarted = make_node("n1", await _plane(fabric), clock)
    await restarted.start()
    assert restarted.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED
    ks = KillSwitch(ops, clock, actor="alice")
    result = await ks.resume(Scope.NODE, "n1", "reconciled")
    assert result.ok
    assert restarted.guard.trading_state(Scope.NODE, "n1") is TradingState.ACTIVE
    await restarted.stop()


async def test_resuming_an_operator_kill_keeps_the_guards_own_halt_and_shows_it() -> None:
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    node = make_node("n1", await _plane(fabric), clock)
    await node.start()
    ks = KillSwitch(await _plane(fabric), clock, actor="alice")
    ids = OrderIds("b")
    working = ids.order()
    assert node.check(working).accepted
    await ks.kill(Scope.NODE, "n1", "look at it", timeout_s=0.2)
    await _mismatch(node, ids, working.id)
    stored, _ = await node.plane.get_state(Scope.NODE, "n1")
    assert stored is not None and stored.actor == "alice"  # the operator's kill is kept
    clock.advance(S)
    await ks.resume(Scope.NODE, "n1", "kill done")
    await _settle()
    assert node.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED
    stored, _ = await node.plane.get_state(Scope.NODE, "n1")
    assert stored is not None and stored.state is TradingState.HALTED
    assert stored.source is RejectReason.FILL_MISMATCH
    clock.advance(S)
    await ks.resume(Scope.NODE, "n1", "reconciled")
    assert node.guard.trading_state(Scope.NODE, "n1") is TradingState.ACTIVE
    await node.stop()


async def test_strategy_symbol_scope_halts_one_pair_on_every_node() -> None:
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    node = make_node("n1", await _plane(fabric), clock)
    await node.start()
    ks = KillSwitch(await _plane(fabric), clock, actor="alice")
    result = await ks.kill(Scope.STRATEGY_SYMBOL, "mm/AAPL", "pair", timeout_s=0.2)
    assert result.ok and result.targets == ["n1"]
    ids = OrderIds("c")
    assert not node.check(ids.order("AAPL", "mm")).accepted
    node.on_price("MSFT", 100.0)
    assert node.check(ids.order("MSFT", "mm")).accepted
    assert node.check(ids.order("AAPL", "other")).accepted
    await node.stop()


def test_default_flight_recorder_lives_under_the_state_dir(tmp_path: Path) -> None:
    assert default_recorder_path(tmp_path, "n7") == tmp_path / "audit" / "n7.jsonl"


def test_cli_strategy_and_symbol_together_name_the_pair_scope() -> None:
    assert _scope(None, "mm", "AAPL") == (Scope.STRATEGY_SYMBOL, "mm/AAPL")
    assert _scope(None, "mm", None) == (Scope.STRATEGY, "mm")
    with pytest.raises(FleetError, match="--node stands alone"):
        _scope("n1", "mm", None)
