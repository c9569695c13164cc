"""Ramp records of two ramps are ordered by ramp, not by two hosts' clocks.

A node compared every ramp record with the one it held by the dates their writers'
clocks gave them. Across hosts that mis-ordered records of different ramps: a losing
approval's "tripped" (or an earlier ramp's), written by a clock an hour ahead, held the
slot at its stage, and every record of the ramp whose resume was in force, its "done"
too, was older: the node traded at 10% of its limits for good. And an old ramp's "done"
dated ahead passed over the running ramp as newer. Now a record of the ramp in force is
judged by that ramp's own order, another ramp's record never loosens it, and a new
ramp's stage passed over before its resume is taken once the resume is in force.
Memory plane, live clock, one in-process node (as the incident ramp tests).
"""

from __future__ import annotations

import pytest

from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryControlPlane
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import ENCODER, RampRecord, StateEntry, slot_of
from knightwatch.state import Scope

from ...identities import ALICE, BOB
from ...incident.fixtures import Fleet, fleet
from ..helpers import eventually

HOUR_NS = 3600 * 10**9
SLOT = slot_of(Scope.FLEET, "fleet")
STAGES = (0.1, 0.25, 0.5, 1.0)


def _record(ramp_id: str, fraction: float, status: str, since_ns: int) -> RampRecord:
    return RampRecord(
        Scope.FLEET, "fleet", ramp_id, 1, STAGES, fraction, status, "alice", "r", since_ns
    )


async def _put(plane: MemoryControlPlane, record: RampRecord) -> None:
    await plane.put_record(Bucket.RAMP, SLOT, ENCODER.encode(record.signed(ALICE.key)))


async def _holds(node: NodeRuntime, fraction: float, what: str) -> None:
    await eventually(lambda: node.ramp_fraction() == fraction, what=what)


async def _halted(f: Fleet) -> tuple[KillSwitch, StateEntry]:
    """The fleet killed, and a two-person resume of it requested (stage-less: the node
    ramps by the records alone)."""
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=10.0)
    return ks, (await ks.request_resume(Scope.FLEET, "fleet", "fixed")).cosigned(BOB.key)


async def test_the_ramp_in_force_ramps_back_over_another_ramps_record_dated_ahead(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = await fleet("n1")
    node = f.nodes[0]
    plane = await f.plane()
    try:
        ks, resume = await _halted(f)
        ours = resume.command_id[:12]
        now = f.clock.time_ns()
        # a losing approval's "tripped: resume not issued", its host's clock an hour ahead
        await _put(plane, _record("r-loser", 0.1, "tripped", now + HOUR_NS))
        await _holds(node, 0.1, "the other ramp's tripped stage held")
        await ks.apply_resume(resume, timeout_s=10.0)
        # the running ramp takes the slot's record back, stage by stage, then "done"
        await _put(plane, _record(ours, 0.5, "ramping", now))
        await _holds(node, 0.5, "the running ramp's stage (before: 0.1, stale)")
        caplog.clear()
        # an old ramp's "done", dated by a clock ahead, replayed over the running ramp
        await _put(plane, _record("r-old", 1.0, "done", now + 2 * HOUR_NS))
        await eventually(
            lambda: "RAMP_STALE node=n1" in caplog.text and "ramp=r-old" in caplog.text,
            what="the replay passed over as stale",
        )
        assert node.ramp_fraction() == 0.5  # before: 1.0, the replay was "newer"
        await _put(plane, _record(ours, 1.0, "done", now + 1))
        await _holds(node, 1.0, "the running ramp's done (before: 0.1 for good)")
        await eventually(lambda: node.guard.limits.version == "desk", what="full limits")
    finally:
        await plane.close()
        await f.stop()


async def test_a_new_ramps_stage_passed_over_before_its_resume_is_taken_once_it_is_in_force(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = await fleet("n1")
    node = f.nodes[0]
    plane = await f.plane()
    try:
        ks, resume = await _halted(f)
        now = f.clock.time_ns()
        # an earlier ramp tripped at its first stage, written by a clock an hour ahead
        await _put(plane, _record("r-earlier", 0.1, "tripped", now + HOUR_NS))
        await _holds(node, 0.1, "the earlier ramp's tripped stage held")
        caplog.clear()
        # the new ramp's stage one (25%), stored before its resume: no resume in force
        # here to order it by, so its date passes it over
        await _put(plane, _record(resume.command_id[:12], 0.25, "ramping", now))
        await eventually(lambda: "RAMP_STALE node=n1" in caplog.text, what="passed over")
        assert node.ramp_fraction() == 0.1
        await ks.apply_resume(resume, timeout_s=10.0)
        await _holds(node, 0.25, "the new ramp's stage once its resume is in force")
    finally:
        await plane.close()
        await f.stop()


async def test_a_record_heard_while_the_store_is_read_is_not_undone_by_the_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resync (a reconnect) reads every ramp record; one heard live meanwhile, newer
    than what the read returned for its slot, stands. Before, the read's older record
    replaced it: the ramp's "done" heard during the read was undone by its stage 50%,
    and the node traded at half its limits until the slot was next written."""
    f = await fleet("n1")
    node = f.nodes[0]
    plane = await f.plane()
    try:
        now = f.clock.time_ns()
        await _put(plane, _record("r-1", 0.5, "ramping", now))
        await _holds(node, 0.5, "stage 50% held")
        real = node.plane.records

        async def read_then_hear(bucket: Bucket) -> dict[str, tuple[bytes, int]]:
            read = await real(bucket)  # the store as it was: stage 50%
            if bucket is Bucket.RAMP:
                await _put(plane, _record("r-1", 1.0, "done", now + 1))  # heard meanwhile
                await _holds(node, 1.0, "the done heard live")
            return read

        monkeypatch.setattr(node.plane, "records", read_then_hear)
        await node._resync()
        assert node.ramp_fraction() == 1.0  # before: 0.5 until the next write
        assert node.guard.limits.version == "desk"
    finally:
        await plane.close()
        await f.stop()
