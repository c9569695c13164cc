"""A rollout driver made for one request stops listening when it is stopped.

The console's rollout abort makes a driver on the person's session connection, which
lives for the session. Before, a driver could not stop: its metrics subscription (a
watching supervisor fed every node's metrics) and its confirmation waiter stayed on the
connection, one more of each at every abort, for as long as the session lasted.
"""

from __future__ import annotations

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.fleet.rollout import RolloutDriver
from knightwatch.control.plane.wire import NodeMetrics
from knightwatch.control.site import Site
from knightwatch.flags.registry import FlagRegistry

from ..helpers import eventually
from .test_flagstore_waiter import _subscriptions


async def test_a_stopped_driver_hears_nothing_more(nats_server: Site) -> None:
    clock = SystemClock()
    plane = await nats_server.connect("alice")
    n1 = await nats_server.connect("n1")
    killswitch = KillSwitch(plane, clock, nats_server.signer("alice"), nats_server.store())
    registry = FlagRegistry.from_definitions((), "none")
    try:
        await killswitch.start()  # the session's own, shared by every request
        before = _subscriptions(plane)
        stopped = []
        for _ in range(3):
            driver = RolloutDriver(plane, registry, clock, killswitch)
            await driver.start()
            await driver._waiter.start()  # as a promotion or an abort's wait does
            await driver.stop()
            stopped.append(driver)
        assert _subscriptions(plane) == before
        listening = RolloutDriver(plane, registry, clock, killswitch)
        await listening.start()
        try:
            sample = NodeMetrics("n1", clock.time_ns(), 0, 0, 0, 0, 0.0, 0.0, True, 0)
            await n1.publish_metrics(sample)
            await eventually(lambda: "n1" in listening._published, what="n1's metrics heard")
            assert not any(d._published for d in stopped)
        finally:
            await listening.stop()
        assert _subscriptions(plane) == before
    finally:
        await n1.close()
        await plane.close()
