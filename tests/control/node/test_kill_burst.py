"""Kills in a burst: each is confirmed before the records of the ones before it are written.

A confirmed kill's record and log line wait `REPORT_DELAY_S`, past the fleet's
confirmations. Before, a kill arriving inside that wait (a supervisor halting
several scopes at once, an operator's second kill) first wrote the earlier kill's
record and log line, and woke the recorder's and the log writer's threads, then
confirmed: on every node, on the path to the confirmation. A halt's own record
waits behind the earlier ones, so they stay in the order the kills were applied;
a resume, which is recorded before it lifts anything, still writes them first.
"""

from __future__ import annotations

import asyncio

from knightwatch.clock import SimClock
from knightwatch.control.node.runtime import REPORT_DELAY_S
from knightwatch.control.plane.memory import MemoryFabric
from knightwatch.control.plane.wire import Confirmation
from knightwatch.state import Scope, TradingState

from ..fleet_fixtures import S, make_node, plane_on
from ..helpers import entry


def _halts(lines: list[bytes]) -> list[str]:
    """The keys of the halt records, in file order."""
    out = []
    for line in lines:
        if b'"kind":"halt"' in line:
            out.append(line.split(b'"key":"', 1)[1].split(b'"', 1)[0].decode())
    return out


async def test_a_kill_in_a_burst_is_confirmed_before_the_earlier_kills_record() -> None:
    fabric = MemoryFabric()
    node = make_node("n1", await plane_on(fabric), SimClock(1_000 * S))
    await node.start()
    rec = node.guard.recorder
    at_confirm: list[tuple[str, int]] = []

    async def on_confirm(c: Confirmation) -> None:  # runs while the node publishes it
        at_confirm.append((c.command_id, rec.seq))

    watcher = await plane_on(fabric)
    await watcher.subscribe_confirmations(on_confirm)
    before = rec.seq
    await node._on_state(entry(Scope.SYMBOL, "MSFT", command_id="k1", issued_ns=50))
    await node._on_state(entry(Scope.SYMBOL, "AAPL", command_id="k2", issued_ns=60))
    # the second confirmed with neither record written: nothing came before it
    assert at_confirm == [("k1", before), ("k2", before)]
    assert node.guard.trading_state(Scope.SYMBOL, "MSFT") is TradingState.HALTED
    assert node.guard.trading_state(Scope.SYMBOL, "AAPL") is TradingState.HALTED
    await asyncio.sleep(2 * REPORT_DELAY_S)
    assert rec.seq == before + 2
    rec.flush()
    assert _halts(rec.lines) == ["MSFT", "AAPL"]  # in the order they were applied
    await node.stop()


async def test_a_resume_in_a_burst_still_writes_the_earlier_kills_record_first() -> None:
    fabric = MemoryFabric()
    node = make_node("n1", await plane_on(fabric), SimClock(1_000 * S))
    await node.start()
    rec = node.guard.recorder
    await node._on_state(entry(Scope.SYMBOL, "MSFT", command_id="k1", issued_ns=50))
    await node._on_state(entry(Scope.SYMBOL, "AAPL", command_id="k2", issued_ns=60))
    resume = entry(Scope.SYMBOL, "MSFT", TradingState.ACTIVE, "r1", 100, supersedes="k1")
    await node._on_state(resume)
    await asyncio.sleep(2 * REPORT_DELAY_S)
    rec.flush()
    kinds = [
        (k, line.split(b'"key":"', 1)[1].split(b'"', 1)[0].decode())
        for line in rec.lines
        for k in ("halt", "resume")
        if f'"kind":"{k}"'.encode() in line
    ]
    assert kinds == [("halt", "MSFT"), ("halt", "AAPL"), ("resume", "MSFT")]
    assert node.guard.trading_state(Scope.SYMBOL, "MSFT") is TradingState.ACTIVE
    await node.stop()
