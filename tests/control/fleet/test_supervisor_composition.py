"""The fleet's totals when its nodes are not alike: a halt and resume of one of them is normal.

A fleet is rarely uniform: one node may do most of its notional, some work customers'
parents and some trade only for the firm. The fleet's rules must judge the total against
what those nodes normally do, not against one figure per node that the mix of the moment
taught (each test also checks the runaway of the same shape is still halted).
"""

from __future__ import annotations

from collections.abc import Callable

from knightwatch.clock import SimClock
from knightwatch.control.fleet.supervisor import Action, Rule, Supervisor, SupervisorConfig
from knightwatch.control.plane.wire import FLEET_KEY, NodeMetrics
from knightwatch.state import TradingState

S = 1_000_000_000

Flow = Callable[[str, float], tuple[float, float, int, bool]]
"""(node, seconds since start) -> (orders a second, $ per order, parents, halted)."""


def _run(flow: Flow, seconds: int, nodes: int) -> list[Action]:
    """Nodes sampled every second at `flow`'s rates, every order filled; a halted node
    reports HALTED and sends nothing. Stops at the first action."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(), clock)
    names = [f"n{i}" for i in range(nodes)]
    orders = dict.fromkeys(names, 0.0)
    notional = dict.fromkeys(names, 0.0)
    for k in range(1, seconds + 1):
        clock.advance(S)
        for n in names:
            rate, price, parents, halted = flow(n, float(k))
            if not halted:
                orders[n] += rate
                notional[n] += rate * price
            done = int(orders[n])
            state = int(TradingState.HALTED) if halted else 0
            m = NodeMetrics(
                n, 0, done, done, 0, done, 0.0, 0.0, True, 0,
                notional=notional[n], parents=parents, node_state=state, instance=n,
            )  # fmt: skip
            fired = sup.observe(m)
            if fired:
                return fired
    return []


def _dominant(times: float, halt: tuple[float, float]) -> Flow:
    """n0 does $1M/s (20 orders/s at $50k), n1..n3 $10k/s each (20 at $500): n0 is halted
    over `halt`, and every node's flow is `times` its normal once n0 is back a while."""

    def flow(node: str, t: float) -> tuple[float, float, int, bool]:
        rate = 20.0 * (times if t >= halt[1] + 300 else 1.0)
        price = 50_000.0 if node == "n0" else 500.0
        return rate, price, 0, node == "n0" and halt[0] <= t < halt[1]

    return flow


def test_a_node_doing_most_of_the_flow_resumed_after_its_halt_does_not_halt_the_fleet() -> None:
    """The fleet's notional was learned as one figure per node: while n0 (97% of it) was
    halted for 15 minutes, the three small nodes' $10k/s became every node's normal, and
    n0 back at its normal $1M/s put the fleet over 5x that (and its $1M/s floor for four
    nodes): the whole fleet was halted 1 s after the resume. Held to the sum of the nodes'
    own baselines, the fleet is back to its normal."""
    assert _run(_dominant(1.0, (600.0, 1_500.0)), 2_100, nodes=4) == []
    # the whole fleet running away at once after the resume is still halted
    fired = _run(_dominant(6.0, (600.0, 1_500.0)), 2_100, nodes=4)
    assert fired and {a.rule for a in fired} <= {
        Rule.BASELINE_ORDER_RATE,
        Rule.BASELINE_NOTIONAL_RATE,
    }, fired
    assert fired[0].at_ns >= (10 + 1_800) * S


def test_the_busier_of_two_nodes_resumed_after_its_halt_does_not_halt_the_fleet() -> None:
    """Two nodes (the peer rule needs two peers: off), n0 at 95 orders/s and n1 at 3/s:
    n0 halted for 10 minutes taught the fleet 3/s a node, and its resume at 95/s read as
    the fleet at 5.3x its baseline."""

    def flow(times: float) -> Flow:
        def f(node: str, t: float) -> tuple[float, float, int, bool]:
            rate = (95.0 if node == "n0" else 3.0) * (times if t >= 1_500 else 1.0)
            return rate, 1_000.0, 0, node == "n0" and 600 <= t < 1_200

        return f

    assert _run(flow(1.0), 1_800, nodes=2) == []
    fired = _run(flow(6.0), 1_800, nodes=2)
    assert fired and fired[0].rule is Rule.BASELINE_ORDER_RATE, fired


def _mixed(n3_halted: bool, n2_children: float) -> Flow:
    """n0 and n1 trade for the firm at 30 orders/s (no parents); n2 works 10 customer
    parents at `n2_children` a second from t=900 (2 before), n3 works 40 at 8 a second and
    is halted from t=600 to 900 when `n3_halted`."""

    def flow(node: str, t: float) -> tuple[float, float, int, bool]:
        if node in ("n0", "n1"):
            return 30.0, 1_000.0, 0, False
        if node == "n2":
            return (n2_children if t >= 900 else 2.0), 1_000.0, 10, False
        return 8.0, 1_000.0, 40, n3_halted and 600 <= t < 900

    return flow


def test_halting_one_agency_node_does_not_halt_the_fleet_through_the_firms_own_orders() -> None:
    """The fleet's children per parent summed every node's accepted orders over the parents
    of those that work any: the firm's own nodes' orders (no parents) read as children, so
    with the agency node holding 40 of the 50 parents halted, 60 orders/s of the firm's own
    flow over 10 parents put the fleet at 7.5x its learned ratio: halted 2 s later."""
    assert _run(_mixed(True, 2.0), 1_200, nodes=4) == []
    # the agency node left running away with children is still halted, by name
    fired = _run(_mixed(True, 2_000.0), 1_200, nodes=4)
    assert fired and {(a.rule, a.key) for a in fired} <= {
        (Rule.BASELINE_CHILDREN_PER_PARENT, "n2"),
        (Rule.BASELINE_CHILDREN_PER_PARENT, FLEET_KEY),
    }, fired
    assert (Rule.BASELINE_CHILDREN_PER_PARENT, "n2") in {(a.rule, a.key) for a in fired}
