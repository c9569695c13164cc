"""A drain over a slot holding an undecodable value, then the resume of that drain.

A stored value that is no entry is a halt of its slot on every node that reads it
(`decode_entry`). A drain issued over it must not loosen what a node holds (the halt
stays, the drain is confirmed). The kill switch no longer stores a drain over a value
it cannot verify (`tests/control/fleet/test_killswitch.py`), but one with kill-state
write rights can, and an older switch did; the operators' two-person resume then names
the drain: a node running through all of it must lift its halt with that resume, as its
own resync does (the store held the undecodable halt before the resume). Before, it
refused the resume live as stale and stayed halted, with the store reading ACTIVE,
until it next reconnected.
"""

from __future__ import annotations

import uuid

from knightwatch.clock import SimClock
from knightwatch.control.plane.memory import MemoryFabric
from knightwatch.control.plane.wire import StateEntry, decode_entry
from knightwatch.state import Scope, TradingState

from ...identities import ALICE, BOB, switch
from ..fleet_fixtures import S, make_node, plane_on, settle


async def test_a_resume_of_a_drain_stored_over_an_undecodable_halt_lifts_it_live() -> None:
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    node = make_node("n1", await plane_on(fabric), clock)
    drained: list[str] = []

    async def drain(kill: StateEntry) -> list[str]:
        drained.append(kill.command_id)
        return []

    node.drain = drain  # a gateway: a kill is confirmed once the venue is drained
    await node.start()
    ks = switch(await plane_on(fabric), clock)
    ops = await plane_on(fabric)
    try:
        await ops.put_state(decode_entry("strategy.mm", b"{not an entry", 0))
        assert node.guard.trading_state(Scope.STRATEGY, "mm") is TradingState.HALTED
        _, revision = await ops.get_state(Scope.STRATEGY, "mm")
        now = clock.time_ns()
        drain = StateEntry(
            Scope.STRATEGY, "mm", TradingState.REDUCING, "drain", "alice", uuid.uuid4().hex,
            now, now + 3600 * S,
        ).signed(ALICE.key)  # fmt: skip
        await ops.put_state(drain, expected_revision=revision)  # written over it, as before
        await ops.announce_state(drain)
        await settle()
        assert node.guard.trading_state(Scope.STRATEGY, "mm") is TradingState.HALTED
        assert drained == ["undecodable-strategy.mm-0"]  # the halt drained the venue
        resumed = await ks.resume(Scope.STRATEGY, "mm", "fixed", timeout_s=0.5, approvers=(BOB,))
        assert resumed.entry.supersedes == drain.command_id
        assert node.guard.trading_state(Scope.STRATEGY, "mm") is TradingState.ACTIVE, (
            node.last_refusal
        )
        assert not resumed.missing
        assert not node.refused
    finally:
        await node.stop()
