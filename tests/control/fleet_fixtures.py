"""Building blocks for node tests: a guarded node on a control plane, on a simulated clock."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Sequence
from pathlib import Path

from knightwatch.audit import FlightRecorder
from knightwatch.audit.standing import StandingHalt
from knightwatch.clock import NS_PER_S, Clock, SimClock
from knightwatch.control.fleet.supervisor_service import AutoHaltRelay
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.flags.activation import MarketHours
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Fill, Order, Side

from ..identities import signer, switch, trust

POLICY = LeasePolicy(lease_timeout_s=0.3, heartbeat_s=0.05)


async def recorded_node_on(
    fabric: MemoryFabric,
    clock: SimClock,
    path: Path,
    recovered: Sequence[StandingHalt] | None = None,
) -> NodeRuntime:
    """n1 started on `fabric`, max_loss 100, its flight recorder at `path`, restored from
    `recovered` (what that recorder read back at a restart)."""
    guard = Guard(
        Limits(
            lease_timeout_s=POLICY.lease_timeout_s, max_orders_per_s_symbol=None, max_loss=100.0
        ),
        node="n1",
        clock=clock,
        recorder=FlightRecorder(path, clock=clock),
    )
    guard.on_price("AAPL", 100.0)
    guard.arm("test")
    node = NodeRuntime(
        guard,
        await plane_on(fabric),
        clock=clock,
        policy=POLICY,
        trust=trust(),
        signer=signer("n1"),
        recovered=recovered or (),
    )
    await node.start()
    return node


def make_node(node_id: str, plane: ControlPlane, clock: Clock) -> NodeRuntime:
    guard = Guard(
        Limits(lease_timeout_s=POLICY.lease_timeout_s, max_orders_per_s_symbol=None),
        node=node_id,
        clock=clock,
    )
    guard.on_price("AAPL", 100.0)
    guard.arm("test")
    return NodeRuntime(
        guard, plane, clock=clock, policy=POLICY, trust=trust(), signer=signer(node_id)
    )


class OrderIds:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.n = 0

    def order(self, symbol: str = "AAPL", strategy: str = "mm") -> Order:
        self.n += 1
        return Order(f"{self.prefix}-{self.n}", strategy, symbol, Side.BUY, 10, 100.0)


S = NS_PER_S


async def plane_on(fabric: MemoryFabric) -> MemoryControlPlane:
    """A connected memory plane on `fabric` (one per component, as live)."""
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    return plane


async def relay_on(fabric: MemoryFabric, clock: Clock) -> AutoHaltRelay:
    """The supervisor's relay that stores nodes' signed automatic halts (nodes cannot)."""
    relay = AutoHaltRelay(switch(await plane_on(fabric), clock, "supervisor"))
    await relay.start()
    return relay


async def settle() -> None:
    """Let inline memory delivery and the tasks it started run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def mismatch(node: NodeRuntime, ids: OrderIds, order_id: str = "") -> None:
    """A venue fill whose side contradicts the order: the Guard halts the node itself."""
    if not order_id:
        order = ids.order()
        assert node.check(order).accepted
        order_id = order.id
    node.on_fill(Fill(order_id, "AAPL", Side.SELL, 10, 100.0))
    await settle()


def hours_open_now_closed_12h_ago() -> MarketHours:
    """Hours 12:00-23:59 in a fixed-offset zone where it is 18:xx now: open now,
    closed 12 hours ago (06:xx), whatever the test machine's clock says."""
    utc_hour = datetime.datetime.now(datetime.UTC).hour
    west = (utc_hour - 18) % 24
    west = west - 24 if west > 12 else west
    zone = f"Etc/GMT+{west}" if west >= 0 else f"Etc/GMT-{-west}"  # Etc/GMT+N is UTC-N
    return MarketHours(timezone=zone, open="12:00", close="23:59", weekdays=tuple(range(7)))
