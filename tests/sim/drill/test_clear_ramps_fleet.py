"""The drill's end-of-drill ramp records count on a named fleet.

The drill ends by marking every ramp record done, at full limits (`clear_ramps`). Those
records were signed naming no fleet, and a named fleet's nodes refuse a ramp record that
names none (`wrong_fleet`): they held the scope at the ramp's tightest stage, 10 % of its
limits, after a drill that reported itself passed. They are now signed for the fleet the
roster in force names. Real nats-server.
"""

from __future__ import annotations

import time
from pathlib import Path

from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import ENCODER, RampRecord, slot_of
from knightwatch.control.site import Site
from knightwatch.incident.ramp import ramp_records, ramp_signer, signed_for
from knightwatch.sim.drill.resume_phase import clear_ramps
from knightwatch.state import Scope


async def test_the_drills_done_ramp_records_are_taken_on_a_named_fleet(tmp_path: Path) -> None:
    site = Site(tmp_path / "site", fleet="drill-ldn")
    kit = site.kit
    await site.astart()
    try:
        plane = await site.connect("alice")
        try:
            record = RampRecord(
                Scope.STRATEGY, "alpha", "r" * 12, 0, (0.1, 0.5, 1.0), 0.1, "ramping",
                "alice+bob", "fixed", time.time_ns(),
            )  # fmt: skip
            ramping = signed_for(record, kit.signer("alice").key, kit.roster)
            slot = slot_of(record.scope, record.key)
            await plane.put_record(Bucket.RAMP, slot, ENCODER.encode(ramping))
            assert ramp_signer((await ramp_records(plane))[0], kit.roster) == "alice"
            await clear_ramps(plane, kit.signer("alice"), kit.roster.fleet)
            (done,) = await ramp_records(plane)
        finally:
            await plane.close()
    finally:
        site.stop()
    assert done.status == "done" and done.fraction == 1.0
    # what a node of this fleet does with it: takes it (a refusal holds the scope at 10 %)
    assert ramp_signer(done, kit.roster) == "alice"
