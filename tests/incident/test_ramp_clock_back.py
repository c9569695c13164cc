"""A ramp whose approver's wall clock steps back mid-ramp still reaches full limits.

Nodes ignore a ramp record that would loosen what they hold when it is dated before
the record held (a replay of an earlier record). The controller dated each record by
the wall clock, so a clock stepped back mid-ramp (NTP correcting a clock that ran
ahead) dated the later stages and "done" before stage one: `approve` said "complete:
full limits" while every node held stage one's 10% for good.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.plane.wire import RampRecord
from knightwatch.incident.ramp import RampController, RampPlan
from knightwatch.state import Scope

from ..identities import BOB
from .fixtures import fleet


class _SteppedBack(SystemClock):
    """The host clocks, with the wall clock an hour behind once `back` is set."""

    def __init__(self) -> None:
        self.back = False

    def time_ns(self) -> int:  # type: ignore[override]
        return time.time_ns() - (3600 * 10**9 if self.back else 0)


@pytest.mark.parametrize("after_records", [1, 2])
async def test_a_wall_clock_stepped_back_mid_ramp_still_ends_at_full_limits(
    after_records: int,
) -> None:
    f = await fleet("n1", "n2")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    clock = _SteppedBack()
    stored: list[RampRecord] = []

    def heard(record: RampRecord) -> None:
        stored.append(record)
        if len(stored) == after_records:
            clock.back = True  # stage one (or two) stored, then the clock steps back

    ctl = RampController(
        await f.plane(), ks, clock, RampPlan.instant((0.1, 0.5, 1.0), 0.3), on_stage=heard
    )
    outcome = await ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,), timeout_s=10.0)
    assert outcome.completed
    assert [(r.stage, r.status) for r in stored] == [
        (0, "ramping"),
        (1, "ramping"),
        (2, "ramping"),
        (2, "done"),
    ]
    deadline = time.monotonic() + 15  # the nodes' own hold of the signed stages runs out
    while time.monotonic() < deadline and any(n.guard.limits.version != "desk" for n in f.nodes):
        await asyncio.sleep(0.05)
    assert [n.guard.limits.version for n in f.nodes] == ["desk", "desk"]
    assert all(n.ramp_fraction() == 1.0 for n in f.nodes)
    assert all(a.since_ns < b.since_ns for a, b in itertools.pairwise(stored))
    await f.stop()
