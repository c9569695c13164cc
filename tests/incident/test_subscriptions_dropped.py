"""Preflights, snapshots and ramps drop the subscriptions they listen on when done.

The console runs them on a person's session link, which lives as long as the session.
Each one subscribed to heartbeats and metrics (the ramp: metrics and states) and never
let go: every resume request, approval or preflight left two more live subscriptions and
handlers on that connection for good, and each heartbeat then called all of them.
"""

from __future__ import annotations

from pathlib import Path

from knightwatch.clock import SystemClock
from knightwatch.control.plane.memory import MemoryFabric
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.site import Site
from knightwatch.incident.preflight import PreflightConfig, run_preflight
from knightwatch.incident.ramp import RampController, RampPlan
from knightwatch.incident.snapshot import take_snapshot
from knightwatch.release.keys import SigningKey
from knightwatch.state import Scope

from ..identities import BOB
from .fixtures import fleet

RUNS = 3


def _live(plane: NatsControlPlane) -> int:
    assert plane._nc is not None
    return len(plane._nc._subs)


def _handlers(fabric: MemoryFabric) -> int:
    return sum(len(subs) for subs in fabric._subs.values())


async def test_preflights_and_snapshots_on_one_nats_link_leave_no_subscriptions(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path / "site", ("n1",))
    await site.astart()
    alice = await site.connect("alice")
    try:
        clock = SystemClock()
        before = _live(alice)
        for _ in range(RUNS):
            await run_preflight(
                alice, Scope.FLEET, "", clock=clock, config=PreflightConfig(listen_s=0.05)
            )
        assert _live(alice) == before, "preflights left subscriptions on the link"
        key = SigningKey.generate()
        for _ in range(RUNS):
            await take_snapshot(alice, clock, key, actor="alice", reason="r", listen_s=0.05)
        assert _live(alice) == before, "snapshots left subscriptions on the link"
    finally:
        await alice.close()
        site.stop()


async def test_preflights_and_snapshots_on_the_memory_plane_leave_no_handlers() -> None:
    f = await fleet("n1")
    try:
        plane = await f.plane()
        before = _handlers(f.fabric)
        for _ in range(RUNS):
            await run_preflight(
                plane, Scope.FLEET, "", clock=f.clock, config=PreflightConfig(listen_s=0.01)
            )
            await take_snapshot(
                plane, f.clock, SigningKey.generate(), actor="a", reason="r", listen_s=0.01
            )
        assert _handlers(f.fabric) == before
    finally:
        await f.stop()


async def test_ramps_by_one_controller_leave_no_handlers_on_its_plane() -> None:
    """A controller's watch (metrics, states) is dropped when each ramp ends."""
    f = await fleet("n1")
    try:
        plane = await f.plane()
        ks = await f.killswitch()
        ctl = RampController(plane, ks, f.clock, RampPlan.instant((0.1, 1.0), 0.3))
        await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
        before = _handlers(f.fabric)  # with the kill switch's own (confirmations)
        for _ in range(2):
            outcome = await ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
            assert outcome.completed, outcome
            assert _handlers(f.fabric) == before, "the ramp's watch left its handlers"
            await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    finally:
        await f.stop()
