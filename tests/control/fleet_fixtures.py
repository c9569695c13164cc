"""Building blocks for node tests: a guarded node on a control plane, on a simulated clock."""

from __future__ import annotations

from knightwatch.clock import Clock
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Order, Side

POLICY = LeasePolicy(lease_timeout_s=0.3, heartbeat_s=0.05)


def make_node(node_id: str, plane: ControlPlane, clock: Clock) -> NodeRuntime:
    guard = Guard(
        Limits(lease_timeout_s=POLICY.lease_timeout_s, max_orders_per_s_symbol=None),
        node=node_id,
        clock=clock,
    )
    guard.on_price("AAPL", 100.0)
    guard.arm("test")
    return NodeRuntime(guard, plane, clock=clock, policy=POLICY)


class OrderIds:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.n = 0

    def order(self, symbol: str = "AAPL", strategy: str = "mm") -> Order:
        self.n += 1
        return Order(f"{self.prefix}-{self.n}", strategy, symbol, Side.BUY, 10, 100.0)
