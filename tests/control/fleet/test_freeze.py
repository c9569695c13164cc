"""The freeze reads the kill state as nodes do: a forged or unverifiable entry thaws nothing."""

from __future__ import annotations

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.freeze import (
    UNVERIFIED_ACTOR,
    FrozenByKill,
    kill_in_force,
    refuse_if_frozen,
)
from knightwatch.control.plane.memory import MemoryFabric
from knightwatch.control.plane.wire import StateEntry
from knightwatch.state import Scope, TradingState

from ...identities import BOB, switch, trust
from ..fleet_fixtures import plane_on


async def test_a_forged_active_entry_does_not_thaw_the_freeze() -> None:
    clock = SystemClock()
    plane = await plane_on(MemoryFabric())
    ks = switch(plane, clock)
    kill = await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.1, targets=[])
    assert kill.revision is not None
    assert (await kill_in_force(plane, trust())) is not None
    # what anyone holding kill-state write credentials could store: ACTIVE, unsigned
    forged = StateEntry(
        Scope.FLEET, "fleet", TradingState.ACTIVE, "thaw", "alice", "f1", clock.time_ns()
    )
    await plane.put_state(forged)
    assert await kill_in_force(plane) is None, "a reader that does not verify is fooled"
    held = await kill_in_force(plane, trust())
    assert held is not None and held.actor == UNVERIFIED_ACTOR
    with pytest.raises(FrozenByKill, match="does not verify"):
        await refuse_if_frozen(plane, "rollout of ops.x", trust())
    # a resume signed by two people lifts it
    await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    assert await kill_in_force(plane, trust()) is None
    await refuse_if_frozen(plane, "rollout of ops.x", trust())
