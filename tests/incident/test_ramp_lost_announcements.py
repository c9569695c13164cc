"""A halt whose announcement the ramp never heard still trips it: the ramp reads the store.

A halt's announcement is delivered at most once, to connections that are up. The ramp
learned of halts only from announcements, so one stored while the approver's connection
was down for a moment, or while the ramp read the halts already in force, was never
seen: the ramp stepped on to full limits past an open supervisor alert and said
"complete".
"""

from __future__ import annotations

import asyncio

import pytest

from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.wire import StateEntry
from knightwatch.incident.ramp import RampController, RampError, RampPlan
from knightwatch.state import Scope, TradingState

from ..identities import BOB
from .fixtures import fleet


async def test_a_halt_stored_while_the_approvers_connection_was_down_trips_the_ramp() -> None:
    f = await fleet("n1", "n2")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    plane = await f.plane()
    resumed = asyncio.Event()
    ctl = RampController(
        plane, ks, f.clock, RampPlan.instant((0.1, 1.0), 1.5), on_resumed=lambda _: resumed.set()
    )
    task = asyncio.create_task(ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)))
    await asyncio.wait_for(resumed.wait(), 5.0)
    await plane._set_connected(False)  # the approver's connection drops for a moment
    supervisor = await f.killswitch("supervisor")
    await supervisor.kill(Scope.NODE, "n1", "supervisor_order_rate", timeout_s=0.3)
    await plane._set_connected(True)
    outcome = await asyncio.wait_for(task, 10.0)
    assert not outcome.completed, "a supervisor alert stored during the ramp must trip it"
    assert outcome.trip_reason.startswith("supervisor alert node 'n1'"), outcome.trip_reason
    entry, _ = await plane.get_state(Scope.FLEET, "fleet")
    assert entry is not None and entry.state is TradingState.HALTED
    await f.stop()


class _AlertWhileRead(MemoryControlPlane):
    """A connection on which a supervisor alert is stored (and announced) just after the
    ramp's first read of the halts in force, before it has a watch to hear it with."""

    def __init__(self, fabric: MemoryFabric, supervisor: KillSwitch) -> None:
        super().__init__(fabric)
        self.supervisor: KillSwitch | None = supervisor

    async def states(self) -> dict[str, tuple[StateEntry | None, int]]:
        out = await super().states()
        if self.supervisor is not None:
            supervisor, self.supervisor = self.supervisor, None
            await supervisor.kill(Scope.NODE, "n1", "supervisor_order_rate", timeout_s=0.3)
        return out


async def test_a_halt_stored_while_the_halts_in_force_were_read_refuses_the_resume() -> None:
    f = await fleet("n1", "n2")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    plane = _AlertWhileRead(f.fabric, await f.killswitch("supervisor"))
    await plane.connect()
    ctl = RampController(plane, ks, f.clock, RampPlan.instant((0.1, 1.0), 1.0))
    try:
        outcome = await asyncio.wait_for(
            ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)), 10.0
        )
    except RampError as exc:
        assert "supervisor alert node 'n1'" in str(exc) and "resume not issued" in str(exc)
    else:
        raise AssertionError(f"resumed past a supervisor alert: {outcome}")
    entry, _ = await plane.get_state(Scope.FLEET, "fleet")
    assert entry is not None and entry.state is TradingState.HALTED
    await f.stop()


class _Deleted(MemoryControlPlane):
    """A connection whose store shows slot `node.n3` deleted (what the NATS plane's
    `states` gives for a key whose latest operation was a delete) once `deleted` is set."""

    def __init__(self, fabric: MemoryFabric, deleted: bool) -> None:
        super().__init__(fabric)
        self.deleted = deleted

    async def states(self) -> dict[str, tuple[StateEntry | None, int]]:
        out = await super().states()
        if self.deleted:
            out["node.n3"] = (None, 10_000)
        return out


@pytest.mark.parametrize("before", [True, False])
async def test_a_deleted_slot_trips_the_ramp_only_when_it_is_new(before: bool) -> None:
    """Every reader holds a deleted slot halted. One deleted before the ramp is no new
    halt: reading the store again must not trip on it; one deleted while it runs is."""
    f = await fleet("n1", "n2")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    plane = _Deleted(f.fabric, before)
    await plane.connect()

    def on_resumed(_: object) -> None:
        plane.deleted = True

    ctl = RampController(
        plane, ks, f.clock, RampPlan.instant((0.1, 1.0), 1.2), on_resumed=on_resumed
    )
    outcome = await asyncio.wait_for(ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)), 10.0)
    if before:
        assert outcome.completed, outcome.trip_reason
    else:
        assert not outcome.completed
        assert "node 'n3'" in outcome.trip_reason and "deleted" in outcome.trip_reason
    await f.stop()
