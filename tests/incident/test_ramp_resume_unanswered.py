"""A resume whose store write goes unanswered is never left in force unwatched.

The ramp applies the approved resume with one compare-and-set write. A store that
does not answer it (a JetStream leader election: the request times out, the write may
have landed or not) raised `ControlPlaneUnavailable` straight out of `apply`: the ramp
stopped watching, its record stayed "ramping" at stage one, and when the write had
landed the scope traded with nothing left to trip it back. Now the scope is killed
at once and paged: over a resume that landed it halts it, and before one still in
flight it moves the slot's revision, so that write is refused.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from knightwatch.control.plane.protocol import (
    Bucket,
    ControlPlane,
    ControlPlaneUnavailable,
)
from knightwatch.control.plane.wire import FLEET_KEY, RAMP_DECODER, StateEntry, slot_of
from knightwatch.incident.ramp import RampController, RampPlan
from knightwatch.state import Scope, TradingState

from ..identities import BOB
from .fixtures import fleet


@pytest.mark.parametrize("landed", [True, False])
async def test_a_resume_write_the_store_does_not_answer_is_not_left_unwatched(
    monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    f = await fleet("n1")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    plane = ks.plane
    real_put = plane.put_state

    async def unanswered(
        self: ControlPlane, entry: StateEntry, expected_revision: int | None = None
    ) -> int:
        if entry.state is TradingState.ACTIVE:
            if landed:
                await real_put(entry, expected_revision)
            raise ControlPlaneUnavailable("put: timeout (leader election)")
        return await real_put(entry, expected_revision)

    monkeypatch.setattr(plane, "put_state", unanswered.__get__(plane))
    ctl = RampController(plane, ks, f.clock, RampPlan.instant((0.1, 1.0), 30.0))
    reader = await f.plane()
    try:
        outcome = await ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,), timeout_s=10)
        assert not outcome.completed and outcome.trip is not None, outcome
        assert outcome.resume is None and "did not answer" in outcome.trip_reason, outcome
        entry, _ = await reader.get_state(Scope.FLEET, FLEET_KEY)
        assert entry is not None and entry.state is TradingState.HALTED, entry
        assert entry.reason.startswith("ramp tripped: the store did not answer"), entry.reason
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and f.order(f.nodes[0]):
            await asyncio.sleep(0.05)  # n1 applies the kill as its loop gets to it
        assert not f.order(f.nodes[0])
        value, _ = await reader.get_record(Bucket.RAMP, slot_of(Scope.FLEET, FLEET_KEY))
        assert value is not None
        record = RAMP_DECODER.decode(value)
        assert record.status == "tripped", record  # not left "ramping" at stage one
    finally:
        await f.stop()
