"""What a ramp tells people: a stage line that cannot be printed stops nothing, and a
trip's page says whether its kill took.

The ramp hands each stage to its caller (`approve` prints it) and pages when it trips.
A caller whose print raised (a closed stdout, a full disk under a redirected one) ended
the ramp mid-way with the resume in force and its trip disarmed; and a trip's page said
only "tripped", read by whoever is paged as a halted scope when its kill never went out.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from knightwatch.control.fleet.pager import Pager
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import RAMP_DECODER, RampRecord, StateEntry, slot_of
from knightwatch.errors import KnightwatchError
from knightwatch.incident.ramp import RampController, RampPlan
from knightwatch.state import Scope, TradingState

from ..identities import BOB
from .fixtures import fleet


async def test_a_stage_line_that_cannot_be_printed_leaves_the_ramp_watching(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = await fleet("n1", "n2")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    plane = await f.plane()
    printed: list[RampRecord] = []

    def print_stage(record: RampRecord) -> None:
        printed.append(record)
        if len(printed) > 1:  # stage one printed, then stdout is gone
            raise BrokenPipeError(32, "Broken pipe")

    ctl = RampController(
        plane, ks, f.clock, RampPlan.instant((0.1, 0.5, 1.0), 0.5), on_stage=print_stage
    )
    task = asyncio.create_task(ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)))
    slot = slot_of(Scope.FLEET, "fleet")
    while True:  # stage two stored (its line failed to print)
        value, _ = await plane.get_record(Bucket.RAMP, slot)
        if (value is not None and RAMP_DECODER.decode(value).stage == 1) or task.done():
            break
        await asyncio.sleep(0.02)
    with contextlib.suppress(KnightwatchError):
        await (await f.killswitch("supervisor")).kill(Scope.NODE, "n2", "rate", timeout_s=0.2)
    outcome = await asyncio.wait_for(task, 5.0)
    assert not outcome.completed
    assert outcome.trip_reason.startswith("supervisor alert node 'n2'"), outcome.trip_reason
    assert outcome.trip is not None and outcome.trip.ok
    assert any("PAGE rule=ramp_trip" in r.getMessage() for r in caplog.records)
    await f.stop()


async def _tripped_page(caplog: pytest.LogCaptureFixture, *, plane_goes: bool) -> str:
    """A fleet ramp of n1 tripped by a supervisor alert (the plane going with it, or not):
    the PAGE line logged."""
    f = await fleet("n1")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    ctl = RampController(
        await f.plane(), ks, f.clock, RampPlan.instant((0.1, 1.0), 5.0), pager=Pager()
    )
    resumed = asyncio.Event()
    ctl.on_resumed = lambda _: resumed.set()
    task = asyncio.create_task(ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)))
    await resumed.wait()

    async def on_state(e: StateEntry) -> None:
        if plane_goes and e.actor == "supervisor" and e.state is TradingState.HALTED:
            await f.fabric.set_reachable(False)

    await (await f.plane()).subscribe_states(on_state)
    with contextlib.suppress(KnightwatchError):
        await (await f.killswitch("supervisor")).kill(Scope.NODE, "n1", "rate", timeout_s=0.2)
    outcome = await asyncio.wait_for(task, 5.0)
    assert not outcome.completed
    await f.fabric.set_reachable(True)
    await f.stop()
    pages = [r.getMessage() for r in caplog.records if "PAGE rule=ramp_trip" in r.getMessage()]
    assert len(pages) == 1, pages
    return pages[0]


async def test_a_trip_whose_kill_was_not_sent_pages_that_it_was_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    page = await _tripped_page(caplog, plane_goes=True)
    assert "outcome=" in page and "NOT sent" in page, page


async def test_a_trip_whose_kill_took_pages_that_it_took(
    caplog: pytest.LogCaptureFixture,
) -> None:
    page = await _tripped_page(caplog, plane_goes=False)
    assert "outcome='confirmed by all 1 targets, stored at" in page, page
