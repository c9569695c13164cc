"""A running ramp writes its record again while a stage holds: its driver's heartbeat.

`status` could not tell a ramp whose `approve` had died from one still ramping: the record
was written only at stage changes, minutes apart in production, and said nothing of the
process behind it. The driver now writes it again every `heartbeat_s` (`since_ns` the time
of that write), and `status` reads a record not written for `DRIVER_SILENT_S` as its
driver silent. The approver is told each stage once, not each heartbeat.
"""

from __future__ import annotations

import asyncio
import time

from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import RAMP_DECODER, RampRecord, slot_of
from knightwatch.incident.ramp import RampController, RampPlan, driver_silent
from knightwatch.state import Scope

from ..identities import BOB
from .fixtures import fleet


async def test_a_held_stage_is_written_again_and_told_once() -> None:
    f = await fleet("n1")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    plane = await f.plane()
    seen: list[tuple[int, str]] = []
    ctl = RampController(
        plane,
        ks,
        f.clock,
        RampPlan.instant((0.1, 1.0), 4.0),
        on_stage=lambda r: seen.append((r.stage, r.status)),
        heartbeat_s=0.5,
    )
    task = asyncio.create_task(ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)))
    written: list[RampRecord] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and not task.done():
            value, _ = await plane.get_record(Bucket.RAMP, slot_of(Scope.FLEET, "fleet"))
            if value is not None:
                record = RAMP_DECODER.decode(value)
                if record.stage == 0 and record.status == "ramping":
                    written.append(record)
                    if len({r.since_ns for r in written}) >= 3:
                        break
            await asyncio.sleep(0.05)
        outcome = await asyncio.wait_for(task, 30)
    finally:
        await f.stop()
    # stage one, held for 4 s, was written again while it held: each write dated anew
    since = sorted({r.since_ns for r in written})
    assert len(since) >= 3, since
    assert {(r.ramp_id, r.fraction) for r in written} == {(outcome.ramp_id, 0.1)}
    assert not any(driver_silent(r, since[-1]) for r in written)
    assert outcome.completed
    assert seen == [(0, "ramping"), (1, "ramping"), (1, "done")], seen
