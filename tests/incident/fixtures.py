"""A small live-clock fleet on the memory plane, for the incident workflow's unit tests."""

from __future__ import annotations

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Order, Side

POLICY = LeasePolicy(lease_timeout_s=0.5, heartbeat_s=0.05)
LIMITS = Limits(
    lease_timeout_s=POLICY.lease_timeout_s,
    max_orders_per_s_node=100,
    max_orders_per_min_node=None,
    max_orders_per_s_strategy=None,
    max_orders_per_min_strategy=None,
    max_orders_per_s_symbol=None,
    max_orders_per_min_symbol=None,
    version="desk",
)


class Fleet:
    def __init__(self) -> None:
        self.fabric = MemoryFabric()
        self.clock = SystemClock()
        self.nodes: list[NodeRuntime] = []
        self.n = 0

    async def plane(self) -> MemoryControlPlane:
        plane = MemoryControlPlane(self.fabric)
        await plane.connect()
        return plane

    async def add(self, node_id: str, limits: Limits = LIMITS) -> NodeRuntime:
        guard = Guard(limits, node=node_id, clock=self.clock)
        guard.on_price("AAPL", 100.0)
        guard.arm("test")
        node = NodeRuntime(
            guard, await self.plane(), clock=self.clock, policy=POLICY, metrics_s=0.05
        )
        await node.start()
        self.nodes.append(node)
        return node

    async def killswitch(self, actor: str = "alice") -> KillSwitch:
        return KillSwitch(await self.plane(), self.clock, actor)

    def order(self, node: NodeRuntime, strategy: str = "mm") -> bool:
        self.n += 1
        return node.check(Order(f"o{self.n}", strategy, "AAPL", Side.BUY, 1, 100.0)).accepted

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()


async def fleet(*ids: str) -> Fleet:
    f = Fleet()
    for node_id in ids:
        await f.add(node_id)
    return f
