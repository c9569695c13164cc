"""A ramp is not over until the nodes are told: its last records are stored, or it waits.

Nodes trade at the tighter of the resume's signed stages and the slot's ramp record, so
they hold the last stage stored. A store that did not answer the last stage's and the
"done" writes (a leader election, the approver's link down) left every node at the stage
before for good, while `approve` said "complete: full limits" and `status` showed the
ramp "ramping", watched by no one. Now a record the store did not answer is written again
at every rescan, and the ramp keeps watching (a halt still trips it) until "done" is
stored. Memory plane, live clocks, nodes in-process (as the other ramp tests).
"""

from __future__ import annotations

import asyncio

import pytest

from knightwatch.control.plane.protocol import Bucket, ControlPlane, ControlPlaneUnavailable
from knightwatch.control.plane.wire import FLEET_KEY, RAMP_DECODER, RampRecord, slot_of
from knightwatch.incident.ramp import RampController, RampOutcome, RampPlan
from knightwatch.state import Scope

from ..control.helpers import eventually
from ..identities import BOB
from .fixtures import Fleet, fleet

SLOT = slot_of(Scope.FLEET, FLEET_KEY)
PLAN = RampPlan.instant((0.1, 0.5, 1.0), 0.3)


class _Outage:
    """The store answers no ramp record write once stage two is stored, while `down`."""

    def __init__(self, plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
        self.down = False
        self.tried: list[RampRecord] = []
        real = plane.put_record

        async def put(
            self: ControlPlane,
            bucket: Bucket,
            key: str,
            value: bytes,
            expected_revision: int | None = None,
        ) -> int:
            record = RAMP_DECODER.decode(value) if bucket is Bucket.RAMP else None
            if record is not None and outage.down:
                outage.tried.append(record)
                raise ControlPlaneUnavailable("put: timeout (leader election)")
            revision = await real(bucket, key, value, expected_revision)
            if record is not None and record.stage == 1:
                outage.down = True
            return revision

        outage = self
        monkeypatch.setattr(plane, "put_record", put.__get__(plane))

    def tried_done(self) -> bool:
        return any(r.status == "done" for r in self.tried)


async def _ramping(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Fleet, _Outage, asyncio.Task[RampOutcome]]:
    f = await fleet("n1", "n2")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=10.0)
    outage = _Outage(ks.plane, monkeypatch)
    ctl = RampController(ks.plane, ks, f.clock, PLAN)
    task: asyncio.Task[RampOutcome] = asyncio.create_task(
        ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,), timeout_s=10.0)
    )
    await eventually(outage.tried_done, what="the ramp's time ran out and 'done' was tried")
    return f, outage, task


async def test_a_done_the_store_did_not_take_is_written_again_before_the_ramp_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f, outage, task = await _ramping(monkeypatch)
    try:
        # the nodes hold stage two, the last stored: the ramp is not complete yet
        await eventually(
            lambda: all(n.ramp_fraction() == 0.5 for n in f.nodes), what="stage two held"
        )
        outage.down = False
        outcome = await asyncio.wait_for(task, 15.0)
        assert outcome.completed, outcome
        value, _ = await (await f.plane()).get_record(Bucket.RAMP, SLOT)
        assert value is not None
        record = RAMP_DECODER.decode(value)
        # before: still "ramping" at stage two (50%), while the ramp said complete
        assert (record.status, record.fraction) == ("done", 1.0), record
        await eventually(lambda: all(n.ramp_fraction() == 1.0 for n in f.nodes), what="full limits")
    finally:
        task.cancel()
        await f.stop()


async def test_a_halt_while_done_is_not_stored_still_trips_the_ramp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f, _, task = await _ramping(monkeypatch)
    try:
        erin = await f.killswitch("erin")
        await erin.kill(Scope.NODE, "n1", "runaway again", timeout_s=10.0)
        outcome = await asyncio.wait_for(task, 15.0)
        # before: "complete" as soon as 'done' was tried, the halt unseen
        assert not outcome.completed, outcome
        assert "halt by erin node 'n1'" in outcome.trip_reason
    finally:
        task.cancel()
        await f.stop()
