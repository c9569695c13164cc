"""Orders a stopped scope refuses are no runaway that halts the whole node.

The order-rate rules judge what a node offered, refusals included, so a strategy hammering
a Guard that throttles it is still seen. But an operator who kills (or drains) one strategy
leaves its nodes ACTIVE, and a strategy that does not know it was killed resends what the
Guard refuses (`halted`), often faster than it traded: those refusals, counted as offered
orders, halted each node it ran on (every other strategy there with it) as an order-rate
runaway, the stop direction triggering a wider halt. Orders refused by a stopped scope
reach no market: they are left out of the offered rate, as the reject spike leaves them out.
"""

from __future__ import annotations

import pytest

from knightwatch.clock import SimClock
from knightwatch.control.fleet.supervisor import Action, Rule, Supervisor, SupervisorConfig
from knightwatch.control.plane.wire import NodeMetrics

S = 1_000_000_000
TICK = S // 5


class Desk:
    """Nodes offering orders a second: (accepted, refused by a stopped scope under `reason`,
    refused by a rate limit)."""

    def __init__(self, nodes: int = 3) -> None:
        self.clock = SimClock(10 * S)
        self.sup = Supervisor(SupervisorConfig(), self.clock)
        self.acc = {f"n{i}": [0.0, 0.0, 0.0] for i in range(1, nodes + 1)}

    def run(
        self,
        seconds: float,
        flow: dict[str, tuple[float, float, float]] | None = None,
        reason: str = "halted",
    ) -> list[Action]:
        out: list[Action] = []
        for _ in range(round(seconds * S / TICK)):
            self.clock.advance(TICK)
            for n, a in self.acc.items():
                for i, r in enumerate((flow or {}).get(n, (30.0, 0.0, 0.0))):
                    a[i] += r * TICK / S
                accepted, stopped, throttled = (int(v) for v in a)
                refused = stopped + throttled
                blocks = {k: v for k, v in ((reason, stopped), ("rate_node", throttled)) if v}
                # fmt: off
                out += self.sup.observe(NodeMetrics(
                    n, 0, accepted + refused, accepted, refused, accepted, 0.0, 0.0, True, 0,
                    blocks, notional=accepted * 2_000.0, instance=f"{n}-1",
                ))
                # fmt: on
        return out


@pytest.mark.parametrize("reason", ["halted", "reducing_only"])
def test_a_killed_strategy_resending_into_its_kill_does_not_halt_the_node(reason: str) -> None:
    """n1's strategy `mm` (half its flow) is killed (drained) and resends what is refused at
    200 orders a second, 7x n1's normal offered rate: nothing fires, n1's other half trades
    on. The same 200 a second refused by a rate limit is a runaway the Guard is hiding, and
    is halted as before."""
    desk = Desk()
    assert desk.run(120) == []
    assert desk.run(20, {"n1": (15.0, 200.0, 0.0)}, reason) == []
    fired = desk.run(5, {"n1": (15.0, 0.0, 200.0)}, reason)
    assert (Rule.BASELINE_ORDER_RATE, "n1") in {(a.rule, a.key) for a in fired}, fired
    assert all(a.key == "n1" for a in fired), fired
