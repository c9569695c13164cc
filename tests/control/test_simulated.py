"""The control plane as a replay drives it: synchronous, simulated time, same components."""

from __future__ import annotations

from knightwatch.clock import SimClock
from knightwatch.control.fleet.supervisor import Rule, SupervisorConfig
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Order, Side
from knightwatch.sim.fleet import SimulatedFleet
from knightwatch.state import Scope

from .fleet_fixtures import POLICY

MS = 1_000_000


def test_supervisor_halts_a_simulated_runaway_and_a_kill_reaches_every_guard() -> None:
    clock = SimClock(1_000 * MS)
    guards = []
    for i in range(1, 5):
        g = Guard(Limits(lease_timeout_s=POLICY.lease_timeout_s), node=f"n{i}", clock=clock)
        g.on_price("AAPL", 100.0)
        g.arm("replay")
        guards.append(g)
    sim = SimulatedFleet(clock, guards, policy=POLICY, supervisor=SupervisorConfig())
    n = 0
    halted_at: int | None = None
    runaway_from = 1_000 * MS + 2_000 * MS
    for tick in range(500):  # 5 s of simulated time in 10 ms ticks
        clock.advance(10 * MS)
        for node in sim.nodes:
            per_tick = 4 if node.node_id == "n2" and clock.monotonic_ns() >= runaway_from else 0
            per_tick += 1 if tick % 5 == 0 else 0  # 20 orders/s
            for _ in range(per_tick):
                n += 1
                side = Side.BUY if n % 2 else Side.SELL
                node.check(Order(f"o{n}", "mm", "AAPL", side, 1, 100.0))
        for action, _ in sim.step():
            # Either signal of the runaway may come first: its rate, or its Guard's blocks.
            assert action.rule in (Rule.ORDER_RATE, Rule.REJECT_SPIKE) and action.key == "n2"
            if halted_at is None:
                halted_at = clock.monotonic_ns()
    assert halted_at is not None
    assert 0 < halted_at - runaway_from <= 2_000 * MS  # within window + metrics cadence
    blocked = sim.nodes[1].check(Order("late", "mm", "AAPL", Side.BUY, 1, 100.0))
    assert blocked.reason is RejectReason.HALTED
    assert sim.nodes[0].check(Order("ok", "mm", "AAPL", Side.BUY, 1, 100.0)).accepted
    result = sim.kill(Scope.FLEET, "fleet", "operator kill in replay")
    assert result.ok and sorted(result.latencies_ms) == ["n1", "n2", "n3", "n4"]
    assert all(v == 0 for v in result.latencies_ms.values())  # simulated time does not move
    sim.close()
