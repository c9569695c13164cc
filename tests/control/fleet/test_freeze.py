"""The freeze reads the kill state as nodes do: a forged or unverifiable entry thaws nothing."""

from __future__ import annotations

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.freeze import FrozenByKill, kill_in_force, refuse_if_frozen
from knightwatch.control.plane.history import UNVERIFIED_ACTOR
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
    # even a reader without the roster is not fooled: the slot's history shows the entry
    # was not stored over the kill it would lift (it names none)
    unsigned = await kill_in_force(plane)
    assert unsigned is not None and unsigned.actor == UNVERIFIED_ACTOR
    held = await kill_in_force(plane, trust())
    assert held is not None and held.actor == UNVERIFIED_ACTOR
    with pytest.raises(FrozenByKill, match="does not verify"):
        await refuse_if_frozen(plane, "rollout of ops.x", trust())
    # a resume signed by two people lifts it
    await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    assert await kill_in_force(plane, trust()) is None
    await refuse_if_frozen(plane, "rollout of ops.x", trust())


async def test_a_signed_resume_stored_again_over_a_newer_kill_keeps_the_freeze() -> None:
    """It verifies (two people signed it, for the first kill), but the slot's history
    shows it was not stored over the kill in force: the freeze holds, naming the slot."""
    clock = SystemClock()
    plane = await plane_on(MemoryFabric())
    ks = switch(plane, clock)
    await ks.kill(Scope.FLEET, "", "first", timeout_s=0.1, targets=[])
    r1 = await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    assert await kill_in_force(plane, trust()) is None
    await ks.kill(Scope.FLEET, "", "second", timeout_s=0.1, targets=[])
    await plane.put_state(r1.entry)
    held = await kill_in_force(plane, trust())
    assert held is not None and held.actor == UNVERIFIED_ACTOR
    with pytest.raises(FrozenByKill, match="replayed"):
        await refuse_if_frozen(plane, "flag ops.x on", trust())
