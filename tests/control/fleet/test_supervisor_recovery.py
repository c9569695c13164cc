"""The supervisor across an incident's recovery and a long day: normal flows it must not halt.

Most of a fleet halted (a blip that silenced their metrics, say) and resumed later, or an
agency router working parents registered at the open all day, are what a desk does every
week; a supervisor that halts the healthy rest on top, or halts a VWAP desk every afternoon,
is turned off. Each test also checks that the runaway of the same shape is still halted.
"""

from __future__ import annotations

from collections.abc import Callable

from knightwatch.clock import SimClock
from knightwatch.control.fleet.supervisor import Action, Rule, Supervisor, SupervisorConfig
from knightwatch.control.plane.wire import NodeMetrics
from knightwatch.state import TradingState

S = 1_000_000_000

Flow = Callable[[str, float], tuple[float, bool]]
"""(node, seconds since start) -> (orders a second, halted)."""


def _run(flow: Flow, seconds: float, *, nodes: int = 8, parents: int = 0) -> list[Action]:
    """Nodes sampled every second at `flow`'s rates, each order filled at $1,000; a halted
    node reports HALTED and sends nothing. Stops at the first action."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(), clock)
    names = [f"n{i}" for i in range(nodes)]
    orders = dict.fromkeys(names, 0.0)
    for k in range(1, int(seconds) + 1):
        clock.advance(S)
        for n in names:
            rate, halted = flow(n, float(k))
            orders[n] += 0.0 if halted else rate
            done = int(orders[n])
            state = int(TradingState.HALTED) if halted else 0
            m = NodeMetrics(
                n, 0, done, done, 0, done, 0.0, 0.0, True, 0,
                notional=done * 1_000.0, parents=parents, node_state=state, instance=n,
            )  # fmt: skip
            fired = sup.observe(m)
            if fired:
                return fired
    return []


def _halted(count: int, start: float, end: float, rate: float) -> Flow:
    """Nodes n0..n{count-1} halted from `start` to `end`; every node at `rate` otherwise."""

    def flow(node: str, t: float) -> tuple[float, bool]:
        return rate, int(node[1:]) < count and start <= t < end

    return flow


def test_the_nodes_left_trading_when_most_of_the_fleet_is_halted_are_not_halted() -> None:
    """Five of eight nodes halted: their 0 orders/s made the fleet median 0, and each of the
    three still trading at its normal 30/s (over the 20/s floor) was halted as a 5x runaway
    one second later. A halted peer is left out of the median as an unarmed one is."""
    assert _run(_halted(5, 60.0, 10_000.0, 30.0), 180.0) == []
    # the same survivors running away are still halted by name, and only they
    fired = _run(
        lambda n, t: (200.0 if n == "n7" and t >= 120 else 30.0, int(n[1:]) < 5 and t >= 60),
        180.0,
    )
    assert fired and {a.key for a in fired} == {"n7"}, fired


def test_most_of_a_fleet_resumed_after_twenty_minutes_does_not_halt_the_fleet() -> None:
    """Seven of eight nodes at 30/s halted for 20 minutes, then resumed at the same 30/s:
    the fleet's baseline was learned as a total, so the one node left became its normal
    (34/s), and the fleet back at 240/s was halted as a 7x runaway, the node that never
    stopped with it. Learned per node taking part, the fleet is back to its normal."""
    assert _run(_halted(7, 600.0, 1_800.0, 30.0), 1_920.0) == []
    # the whole fleet running away at once after the resume is still halted
    fired = _run(
        lambda n, t: (
            30.0 * (6 if t >= 1_860 else 1),
            int(n[1:]) < 7 and 600 <= t < 1_800,
        ),
        1_920.0,
    )
    assert fired and {a.rule for a in fired} <= {
        Rule.BASELINE_ORDER_RATE,
        Rule.BASELINE_NOTIONAL_RATE,
    }, fired


def test_an_agency_router_working_its_parents_all_day_is_not_halted() -> None:
    """Ten parents registered at the open, one child a second each, every child filled: the
    node's accepted orders over its parents (a running average since it started) grow all
    day. Its learned baseline was held to the first limit (100 children a parent), so at
    500 children a parent, 8 minutes in, every such node was halted. A runaway of children
    on one of them is still halted, by name, within a minute."""
    assert _run(lambda n, t: (10.0, False), 3_600.0, nodes=4, parents=10) == []
    fired = _run(
        lambda n, t: (2_000.0 if n == "n1" and t > 900 else 10.0, False),
        960.0,
        nodes=4,
        parents=10,
    )
    assert fired and {(a.rule, a.key) for a in fired} == {
        (Rule.BASELINE_CHILDREN_PER_PARENT, "n1")
    }, fired
