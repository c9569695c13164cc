"""The freeze reads the kill state as nodes do: a forged or unverifiable entry thaws nothing."""

from __future__ import annotations

import logging

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.freeze import FrozenByKill, held, kill_in_force, refuse_if_frozen
from knightwatch.control.plane.history import MALFORMED_KEY, UNVERIFIED_ACTOR
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


def test_a_deleted_kill_state_key_that_is_no_slot_is_logged_once_not_skipped_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`fleet.x` (written by hand, then deleted) is no slot: no kill or resume addresses
    it, so the freeze holds it by no reader, as before; but it says so, once per write
    with the key and the reason code, however often the freeze is checked. Before, the
    key vanished from the freeze without a word."""
    caplog.set_level(logging.ERROR, logger="knightwatch.control.fleet.freeze")
    states: dict[str, tuple[StateEntry | None, int]] = {
        "fleet.x": (None, 41),
        "strategy.a.b": (None, 42),
        "node.n1": (None, 43),
    }
    for _ in range(3):
        out = held(states, trust())
        assert sorted(out) == ["node.n1"]  # the canonical slot is held halted
        assert out["node.n1"][0].state is TradingState.HALTED
    logged = [r.getMessage() for r in caplog.records]
    assert sorted(line.split()[:3] for line in logged) == [
        [MALFORMED_KEY.upper(), "key=fleet.x", "revision=41:"],
        [MALFORMED_KEY.upper(), "key=strategy.a.b", "revision=42:"],
    ]


async def test_a_hand_made_resume_naming_the_kill_does_not_let_a_node_arm_looser() -> None:
    """An unsigned ACTIVE entry that names the kill it would lift and the revision it was
    decided on passes the slot's history; only its signature tells it apart. A node
    restarting with looser limits judges the kill state with its roster (`trust`), as it
    judges the kill itself: it stays refused."""
    from knightwatch.control.fleet.freeze import refuse_raised_limits
    from knightwatch.limits import Limits

    clock = SystemClock()
    plane = await plane_on(MemoryFabric())
    ks = switch(plane, clock)
    kill = await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.1, targets=[])
    assert kill.revision is not None
    forged = StateEntry(
        Scope.FLEET,
        "fleet",
        TradingState.ACTIVE,
        "thaw",
        "alice",
        "f2",
        clock.time_ns(),
        supersedes=kill.entry.command_id,
        decided_on=kill.revision,
    )
    await plane.put_state(forged)
    assert await kill_in_force(plane) is None  # the history alone is fooled
    armed, looser = Limits(max_order_qty=100), Limits(max_order_qty=1_000)
    await refuse_raised_limits(plane, "n1", armed, looser)  # what the node did before
    with pytest.raises(FrozenByKill, match="looser than it last armed with"):
        await refuse_raised_limits(plane, "n1", armed, looser, trust())
