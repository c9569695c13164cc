"""A node whose clock runs behind is checked like any other, not taken for a fenced one.

A membership record's lease expiry is written on its node's clock. A node whose clock
ran a few seconds behind ours (still within the 5 s a resume may be ahead of it, so it
takes the resume) looked expired: the preflight listed it as fenced, checked nothing on
it (its clock least of all) and passed; after the resume it traded.
"""

from __future__ import annotations

import asyncio
import time

from knightwatch.clock import NS_PER_S, SystemClock
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.guard import Guard
from knightwatch.incident.preflight import PreflightConfig, run_preflight
from knightwatch.incident.ramp import RampController, RampPlan
from knightwatch.state import Scope

from ..identities import BOB, signer, trust
from .fixtures import LIMITS, POLICY, fleet


class Behind(SystemClock):
    """A node's wall clock three seconds behind everyone else's."""

    def time_ns(self) -> int:
        return super().time_ns() - 3 * NS_PER_S


async def test_a_node_with_its_clock_seconds_behind_fails_clocks_and_is_not_fenced() -> None:
    f = await fleet("n1")
    clock = Behind()
    guard = Guard(LIMITS, node="n2", clock=clock)
    guard.on_price("AAPL", 100.0)
    n2 = NodeRuntime(
        guard, await f.plane(), clock=clock, policy=POLICY, metrics_s=0.05,
        trust=trust(), signer=signer("n2"),
    )  # fmt: skip
    await n2.start()
    n2.arm("test")
    f.nodes.append(n2)
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    plane = await f.plane()
    checklist = await run_preflight(
        plane, Scope.FLEET, "", clock=f.clock, config=PreflightConfig(listen_s=0.3)
    )
    assert not checklist.passed, "a node 3 s behind passed the clock check unseen"
    assert [i.name for i in checklist.failures] == ["clocks"], checklist.summary()
    assert "n2: clock off by -3" in checklist.summary(), checklist.summary()
    assert checklist.trading_nodes == ("n1", "n2")
    # what the preflight stands between: n2 takes the resume and trades
    ramp = RampController(plane, ks, f.clock, RampPlan.instant((0.1, 1.0), 0.3))
    assert (await ramp.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))).completed
    deadline = time.monotonic() + 15  # n2 renews its lease at its next heartbeat
    while not f.order(n2):
        assert time.monotonic() < deadline, "n2 never traded after the resume"
        await asyncio.sleep(0.05)
    await f.stop()
