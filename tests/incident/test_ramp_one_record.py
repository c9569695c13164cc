"""One slot, one ramp record: a ramp writes it only over its own last write.

Two approvals of two resume requests for the same halt (one from the CLI, one from a
console) both stored stage one; one resume went through, and the other approval wrote
"tripped: resume not issued" over the running ramp's record: the strategy traded again
while `status` and the console showed its ramp as tripped. And a stage held 1e-300 s
passed, was skipped, and was shown to both people as "10% for 1e-300 s".
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from knightwatch.control.fleet.killswitch import KillSwitchError
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import ENCODER, RAMP_DECODER, RampRecord, slot_of
from knightwatch.errors import KnightwatchError
from knightwatch.incident.ramp import (
    RampController,
    RampError,
    RampOutcome,
    RampPlan,
    Stage,
)
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import MIN_HOLD_S

from ..identities import ALICE, BOB
from .fixtures import fleet

SLOT = slot_of(Scope.FLEET, "fleet")


async def _stored(plane: MemoryControlPlane) -> RampRecord:
    value, _ = await plane.get_record(Bucket.RAMP, SLOT)
    assert value is not None
    return RAMP_DECODER.decode(value)


async def test_the_losing_approval_of_the_same_halt_never_overwrites_the_running_ramp() -> None:
    """Approval A stores stage one; approval B (another request for the same halt) stores
    its own stage one over it. A's resume goes through; B's is stale. Before, B then wrote
    "tripped: resume not issued" over the slot's one record and it stood until A's next
    stage (minutes by default) while the fleet traded. Now B writes only over its own
    write, A takes the slot's record back (its resume is what the slot holds), and B's
    error says in one line that another approval's resume went first."""
    f = await fleet("n1")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    plane = await f.plane()
    first = (await ks.request_resume(Scope.FLEET, "fleet", "fixed (cli)")).cosigned(BOB.key)
    second = (await ks.request_resume(Scope.FLEET, "fleet", "fixed (console)")).cosigned(BOB.key)
    # stage one held 6 s: the record is taken back within a rescan (1 s), with room for a
    # loaded machine before the stage ends
    plan = RampPlan.instant((0.1, 1.0), 6.0)
    started: list[asyncio.Task[RampOutcome]] = []
    b = RampController(plane, ks, f.clock, plan)

    def on_stage(record: RampRecord) -> None:
        if record.stage == 0 and record.status == "ramping" and not started:
            started.append(asyncio.create_task(b.apply(second)))  # B starts once A's is stored

    a = RampController(plane, ks, f.clock, plan, on_stage=on_stage)
    running = asyncio.create_task(a.apply(first))
    try:
        while not started:
            await asyncio.sleep(0.01)
        results = await asyncio.wait(
            [running, started[0]], timeout=15.0, return_when=asyncio.FIRST_COMPLETED
        )
        loser = next(iter(results[0]))
        winner, winner_request = (started[0], second) if loser is running else (running, first)
        state, _ = await plane.get_state(Scope.FLEET, "fleet")
        assert state is not None and state.state is TradingState.ACTIVE
        assert state.command_id == winner_request.command_id
        # the running ramp's record stands (taken back within a rescan, far within a stage)
        record = await _stored(plane)
        deadline = asyncio.get_running_loop().time() + 4.5  # within the stage's 6 s
        while record.ramp_id != winner_request.command_id[:12]:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.01)
            record = await _stored(plane)
        assert (record.ramp_id, record.status) == (winner_request.command_id[:12], "ramping")
        error = loser.exception()
        assert isinstance(error, KnightwatchError), error
        assert "\n" not in str(error)
        assert "another approval" in str(error), str(error)
        assert not winner.done()
        outcome = await asyncio.wait_for(winner, 30.0)
        assert outcome.completed, outcome
        done = await _stored(plane)
        assert (done.ramp_id, done.status) == (winner_request.command_id[:12], "done")
    finally:
        for task in (running, *started):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await f.stop()


class _OtherStageOneWhileRead(MemoryControlPlane):
    """A connection on which another approval's stage one is stored just after this ramp
    read the slot's record, before it stores its own."""

    def __init__(self, fabric: MemoryFabric, record: RampRecord) -> None:
        super().__init__(fabric)
        self.other: RampRecord | None = record

    async def get_record(self, bucket: Bucket, key: str) -> tuple[bytes | None, int]:
        out = await super().get_record(bucket, key)
        if bucket is Bucket.RAMP and self.other is not None:
            other, self.other = self.other, None
            await super().put_record(bucket, key, ENCODER.encode(other.signed(ALICE.key)))
        return out


async def test_stage_one_is_not_stored_over_another_ramp_stored_as_this_one_started() -> None:
    """Before, stage one was written whatever the slot held by then, over another
    approval's stage one stored a moment before, and the resume was issued. Now it is
    stored only over the record read before the halt was checked: no stage, no resume."""
    f = await fleet("n1")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    other = RampRecord(
        Scope.FLEET, "fleet", "0ther0ther00", 0, (0.1, 1.0), 0.1, "ramping", "alice+bob",
        "fixed", f.clock.time_ns(),
    )  # fmt: skip
    plane = _OtherStageOneWhileRead(f.fabric, other)
    await plane.connect()
    ctl = RampController(plane, ks, f.clock, RampPlan.instant((0.1, 1.0), 0.3))
    try:
        refused = r"another ramp .*0ther0ther00.*another approval.*resume not issued"
        with pytest.raises(RampError, match=refused):
            await ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
        stored = await _stored(plane)
        assert (stored.ramp_id, stored.status) == ("0ther0ther00", "ramping")
        state, _ = await plane.get_state(Scope.FLEET, "fleet")
        assert state is not None and state.state is TradingState.HALTED
    finally:
        await plane.close()
        await f.stop()


async def test_a_refused_resume_does_not_write_tripped_over_another_ramps_record() -> None:
    """A resume refused where it is applied (one person alone) writes "tripped" only
    over its own stage one: not over a record another ramp stored since."""
    f = await fleet("n1")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    plane = await f.plane()
    other = RampRecord(
        Scope.FLEET, "fleet", "0ther0ther00", 0, (0.1, 1.0), 0.1, "ramping", "alice+bob",
        "fixed", f.clock.time_ns(),
    )  # fmt: skip
    written: list[int] = []

    def on_stage(record: RampRecord) -> None:
        if record.status == "ramping" and not written:
            written.append(1)
            asyncio.get_running_loop().create_task(
                plane.put_record(Bucket.RAMP, SLOT, ENCODER.encode(other.signed(ALICE.key)))
            )

    ctl = RampController(plane, ks, f.clock, RampPlan.instant((0.1, 1.0), 0.3), on_stage=on_stage)
    alone = await ks.request_resume(Scope.FLEET, "fleet", "fixed")
    try:
        with pytest.raises(KillSwitchError, match=r"refused.*another ramp.*0ther0ther00") as exc:
            await ctl.apply(alone)
        assert "\n" not in str(exc.value)
        stored = await _stored(plane)
        assert (stored.ramp_id, stored.status) == ("0ther0ther00", "ramping")
    finally:
        await f.stop()


@pytest.mark.parametrize("hold", [1e-300, 5e-324, 1e-9, 0.001, 0.05, MIN_HOLD_S * 0.999])
def test_a_stage_held_too_short_to_judge_is_refused_naming_the_field(hold: float) -> None:
    with pytest.raises(RampError, match=rf"stages\[0\]\.hold_s: must be >= {MIN_HOLD_S:g} s"):
        RampPlan(stages=(Stage(0.1, hold), Stage(1.0, 60.0)))
    with pytest.raises(RampError, match=rf"stages\[1\]\.hold_s: must be >= {MIN_HOLD_S:g} s"):
        RampPlan(stages=(Stage(0.1, 60.0), Stage(1.0, hold)))


def test_every_shipped_plan_and_the_shortest_allowed_hold_stay_valid() -> None:
    from knightwatch.sim.drill.resume_phase import DRILL_RAMP

    assert RampPlan().describe() == "10% for 300 s, 50% for 300 s, then 100%"
    assert DRILL_RAMP.stages[0].hold_s >= MIN_HOLD_S
    RampPlan.instant((0.1, 1.0), MIN_HOLD_S)
