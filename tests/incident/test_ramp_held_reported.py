"""A completed ramp reports what each node holds, not what its records say.

Nodes take a ramp record only if they can verify it (`NodeRuntime._take_ramp`); one
they refuse (the controller's key expired or was revoked mid-ramp, or it is signed by
someone who had no part in the resume) leaves them at 10%. The controller stored its
stages and "done" all the same, and `approve` said "complete: full limits" while every
node still traded at 10%. Now, once "done" is stored, the ramp waits (at most its
`apply_timeout_s`) for each node's next metrics to show full limits, and the outcome
names every node that does not, with what it holds. Memory plane, live clocks, nodes
in-process (as the other ramp tests).
"""

from __future__ import annotations

import asyncio

import pytest

from knightwatch.control.plane.wire import RampRecord
from knightwatch.incident.ramp import RampController, RampPlan
from knightwatch.state import Scope

from ..identities import BOB
from .fixtures import fleet

PLAN = RampPlan.instant((0.1, 0.5, 1.0), 0.3, apply_timeout_s=2.0)


async def test_a_ramp_whose_records_nodes_refuse_reports_the_nodes_held_at_10pc(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = await fleet("n1", "n2")
    try:
        alice = await f.killswitch()
        await alice.kill(Scope.FLEET, "", "runaway", timeout_s=1.0)
        resume = await alice.request_resume(Scope.FLEET, "fleet", "fixed", ramp=PLAN.signed)
        # the records are signed by erin, who neither requested nor approved the resume:
        # every node refuses each one stepping the ramp up and holds stage one's 10%
        erin = await f.killswitch("erin")
        ctl = RampController(erin.plane, erin, f.clock, PLAN)
        outcome = await ctl.apply(resume.cosigned(BOB.key), timeout_s=2.0)
        assert all(n.ramp_fraction() == 0.1 for n in f.nodes)
        assert outcome.completed, outcome  # its stages ran and "done" is stored
        # before: nothing in the outcome said so, and `approve` printed "full limits"
        assert outcome.held == (("n1", 10), ("n2", 10)), outcome.held
        assert outcome.short_of() == "n1 holds 10% of its limits, n2 holds 10% of its limits"
        assert "RAMP_NOT_AT_FULL_LIMITS" in caplog.text
    finally:
        await f.stop()


async def test_a_ramp_every_node_follows_reports_none_held() -> None:
    f = await fleet("n1", "n2")
    try:
        alice = await f.killswitch()
        await alice.kill(Scope.FLEET, "", "runaway", timeout_s=1.0)
        ctl = RampController(alice.plane, alice, f.clock, PLAN)
        outcome = await ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,), timeout_s=2.0)
        assert outcome.completed and outcome.held == () and outcome.short_of() == ""
        assert all(n.guard.limits.version == "desk" for n in f.nodes)
    finally:
        await f.stop()


async def test_a_node_gone_before_done_is_reported_as_not_reporting() -> None:
    f = await fleet("n1", "n2")
    try:
        alice = await f.killswitch()
        await alice.kill(Scope.FLEET, "", "runaway", timeout_s=1.0)
        gone = f.nodes.pop()
        stopping: list[asyncio.Task[None]] = []

        def on_stage(record: RampRecord) -> None:
            if record.stage == 1 and not stopping:  # n2 stops mid-ramp
                stopping.append(asyncio.create_task(gone.stop()))

        # stages of 1 s: n2 is long gone (stopped at stage two) before "done" is stored
        plan = RampPlan.instant((0.1, 0.5, 1.0), 1.0, apply_timeout_s=2.0)
        ctl = RampController(alice.plane, alice, f.clock, plan, on_stage=on_stage)
        outcome = await ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,), timeout_s=2.0)
        await asyncio.gather(*stopping)
        assert outcome.completed
        assert outcome.held == (("n2", None),), outcome.held
        assert outcome.short_of() == "n2 reported no limits since 'done' was stored"
    finally:
        await f.stop()
