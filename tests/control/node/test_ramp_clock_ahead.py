"""A node's own wall clock never runs a stored resume's ramp forward.

A node that adopts a resume from the store (it starts, or resyncs, after the resume was
applied) cannot have heard when it came into force, so it held the resume's signed ramp
from its expiry as read on its own wall clock. A clock 20 minutes or an hour ahead read
that expiry as long past: the node traded at full limits at once while the fleet held
stage one (and an early "done" record, which the signed stages exist to overrule, left
nothing holding it). Now the ramp is held from the node's start until the server's own
write times show how far it has run. Memory plane with a server clock (as JetStream
stamps each write), live clocks, nodes in-process (as the incident ramp tests).
"""

from __future__ import annotations

import pytest

from knightwatch.clock import NS_PER_S, SystemClock
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryFabric
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import ENCODER, RampRecord, StateEntry, slot_of
from knightwatch.state import Scope

from ...identities import ALICE, BOB
from ...incident.fixtures import Fleet
from ..helpers import eventually

MINUTE_NS = 60 * NS_PER_S
SLOT = slot_of(Scope.FLEET, "fleet")


class _Ahead(SystemClock):
    """The host's clocks, the wall clock `ahead_ns` ahead (monotonic untouched)."""

    def __init__(self, ahead_ns: int) -> None:
        self.ahead_ns = ahead_ns

    def time_ns(self) -> int:  # type: ignore[override]
        return SystemClock.time_ns() + self.ahead_ns


async def _resumed(ramp: tuple[tuple[float, float], ...]) -> tuple[Fleet, StateEntry]:
    """n1 (a sane clock) on a plane whose server stamps writes; the fleet killed, then
    resumed by alice and bob with `ramp` (no ramp driver: the nodes' own clocks run it)."""
    f = Fleet()
    f.fabric = MemoryFabric(SystemClock())
    await f.add("n1")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=10.0)
    request = await ks.request_resume(Scope.FLEET, "fleet", "fixed", ramp=ramp)
    resume = request.cosigned(BOB.key)
    await ks.apply_resume(resume, timeout_s=10.0)
    return f, resume


async def _started_ahead(f: Fleet, ahead_ns: int, caplog: pytest.LogCaptureFixture) -> NodeRuntime:
    """n2 started with its wall clock `ahead_ns` ahead, once it has bounded the ramp."""
    f.clock = _Ahead(ahead_ns)
    node = await f.add("n2")
    await eventually(  # bounded, or (what it did before) at full limits at once
        lambda: "RAMP_PLAN_BOUND node=n2" in caplog.text or node.ramp_fraction() == 1.0,
        what="n2 asked the store",
    )
    return node


@pytest.mark.parametrize("ahead_ns", [20 * MINUTE_NS, 60 * MINUTE_NS])
async def test_a_node_started_with_its_clock_ahead_holds_the_stored_resumes_ramp(
    ahead_ns: int, caplog: pytest.LogCaptureFixture
) -> None:
    f, resume = await _resumed(((0.1, 300.0), (1.0, 60.0)))
    try:
        plane = await f.plane()
        # an early "done" by the requester alone: the signed stages overrule it
        done = RampRecord(
            Scope.FLEET, "fleet", resume.command_id[:12], 1, (0.1, 1.0), 1.0, "done", "alice",
            "r", SystemClock().time_ns(),
        )  # fmt: skip
        await plane.put_record(Bucket.RAMP, SLOT, ENCODER.encode(done.signed(ALICE.key)))
        await eventually(lambda: f.nodes[0].ramp_fraction() == 0.1, what="n1 holds stage one")
        node = await _started_ahead(f, ahead_ns, caplog)
        # before: 1.0 at once, the resume's expiry long past by n2's clock
        assert node.ramp_fraction() == 0.1
        assert node.guard.limits.version == "desk@10%"
    finally:
        await f.stop()


async def test_a_node_started_ahead_after_the_ramp_ran_trades_at_full_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store's own times prove the ramp over: n2 does not run it again."""
    f, _ = await _resumed(((0.1, 0.3), (1.0, 0.1)))
    try:
        await eventually(lambda: f.nodes[0].ramp_fraction() == 1.0, what="n1 ran the ramp")
        node = await _started_ahead(f, 60 * MINUTE_NS, caplog)
        await eventually(lambda: node.ramp_fraction() == 1.0, what="n2 at full limits")
    finally:
        await f.stop()
