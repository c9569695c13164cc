"""A ramp's trip does not wait for the store its bookkeeping reads.

The ramp reads every stored halt again each second and re-checks its record. A store
slow to answer (a JetStream leader election: every read waits out its request timeout,
while announcements and metrics still flow) held the ramp in that read, and a trip
heard meanwhile (a Guard halt, a block-rate spike) sent its kill of the scope only once
the read came back: the rest of the scope traded on at the stage's limits. The trip's
kill now goes out as soon as the trip is heard; the read is abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.control.plane.wire import StateEntry
from knightwatch.incident.ramp import RampController, RampPlan
from knightwatch.state import Scope, TradingState

from ..identities import BOB
from .fixtures import fleet


async def test_a_halt_heard_while_the_store_is_slow_trips_the_ramp_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = await fleet("n1", "n2")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    plane = await f.plane()
    slow = asyncio.Event()
    stuck = asyncio.Event()
    real_states = plane.states

    async def slow_states(self: ControlPlane) -> dict[str, tuple[StateEntry | None, int]]:
        if slow.is_set():
            stuck.set()
            await asyncio.sleep(60)  # a store that does not answer for a long while
        return await real_states()

    monkeypatch.setattr(plane, "states", slow_states.__get__(plane))
    ctl = RampController(plane, ks, f.clock, RampPlan.instant((0.1, 1.0), 30.0))
    ctl.on_resumed = lambda _: slow.set()
    task = asyncio.create_task(ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)))
    try:
        await asyncio.wait_for(stuck.wait(), 15)  # the ramp is in its second's read
        supervisor = await f.killswitch("supervisor")
        await supervisor.kill(Scope.NODE, "n1", "guard: loss_limit", timeout_s=0.5)
        reader = await f.plane()
        deadline = time.monotonic() + 15
        tripped = None
        while time.monotonic() < deadline:
            entry, _ = await reader.get_state(Scope.FLEET, "fleet")
            if entry is not None and entry.state is TradingState.HALTED:
                tripped = entry
                break
            await asyncio.sleep(0.05)
        assert tripped is not None, "the ramp's trip did not kill the fleet"
        assert tripped.reason.startswith("ramp tripped: supervisor alert node 'n1'")
        outcome = await asyncio.wait_for(task, 15)
        assert not outcome.completed and outcome.trip is not None and outcome.trip.sent
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and f.order(f.nodes[1]):
            await asyncio.sleep(0.05)  # n2 applies the fleet kill as its loop gets to it
        assert not f.order(f.nodes[1])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await f.stop()
