"""A rollout driver just started does not read "not heard from yet" as a failed gate.

Node metrics are news (a subscription, no history): `rollout start`, a new process, began
the rollout and judged its first step before any exposed node's metrics had reached it.
Every gate read "no reject_ratio reported", the rollout was aborted at once and its canary
halted. Now a node not heard from is not judged while the driver is younger than the
supervisor's `stale_after_s` (in which every live node publishes), unless a node it has
heard from breaches a gate; after that a silent node fails its gates, as before.
"""

from __future__ import annotations

import asyncio

from knightwatch.clock import NS_PER_S, SimClock
from knightwatch.control.fleet.rollout import RolloutDriver
from knightwatch.control.fleet.supervisor import SupervisorConfig
from knightwatch.control.plane.wire import NodeMetrics
from knightwatch.control.site import Site
from knightwatch.flags.rollout import HealthGate, Rollout, RolloutPlan, Stage

from ...identities import switch
from ...integration.fleet_release import REGISTRY, RLP

PLAN = RolloutPlan(
    stages=(Stage("canary", hold_s=0, fraction=1.0),),
    gates=(HealthGate("reject_ratio", max=0.05),),
)


async def test_nodes_not_heard_from_are_not_judged_until_the_driver_could_have_heard_them(
    nats_server: Site,
) -> None:
    clock = SimClock(1_000 * NS_PER_S)
    ops = await nats_server.connect("alice")
    n1 = await nats_server.connect("n1")
    try:
        driver = RolloutDriver(
            ops, REGISTRY, clock, switch(ops, clock), health=SupervisorConfig(stale_after_s=5.0)
        )
        rollout, _ = Rollout.start("r-1", RLP, True, ["n1", "n2"], PLAN, clock, "alice")
        state = rollout.state
        assert state.exposed == ("n1", "n2")
        assert driver.unheard(state, await driver.metrics()) == []  # not started: judged
        await driver.start()
        metrics = await driver.metrics()
        assert driver.unheard(state, metrics) == ["n1", "n2"]
        assert Rollout(state, clock).step(metrics) != []  # judged now, it would abort

        async def heard(orders: int, rejected: int) -> None:
            sample = NodeMetrics("n1", clock.time_ns(), orders, orders - rejected, rejected, 0,
                                 0.0, 0.0, True, 0)  # fmt: skip
            await n1.publish_metrics(sample)
            for _ in range(100):
                if (await driver.metrics()).get("n1", {}).get("orders") == orders:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("n1's metrics never reached the driver")

        await heard(10, 0)
        assert driver.unheard(state, await driver.metrics()) == ["n2"]
        # a heard node's breach is judged at once: the stop direction never waits
        clock.advance(NS_PER_S // 2)
        await heard(20, 10)  # half of its orders in the window refused
        assert driver.unheard(state, await driver.metrics()) == []
        # past the supervisor's stale_after_s a node still silent fails its gates
        driver2 = RolloutDriver(
            ops, REGISTRY, clock, switch(ops, clock), health=SupervisorConfig(stale_after_s=5.0)
        )
        await driver2.start()
        assert driver2.unheard(state, await driver2.metrics()) == ["n1", "n2"]
        clock.advance(5 * NS_PER_S)
        assert driver2.unheard(state, await driver2.metrics()) == []
    finally:
        await n1.close()
        await ops.close()
