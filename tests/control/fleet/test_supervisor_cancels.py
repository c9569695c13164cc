"""Cancel storms seen by the supervisor.

A runaway that cancels (a cancel/replace loop that never fills, a quoter pulling and
re-posting every tick) moved no measure the supervisor held: its accepted orders stayed
inside the order-rate limit, its fills went on, and `NodeMetrics` carried no cancel
count. The node now reports its cancels (cumulative, never reset by the Guard's own
cancel-to-fill halt) and the supervisor holds each node's cancel rate to its learned
baseline and its floor, as it does the order rate.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from knightwatch.clock import SimClock
from knightwatch.control.fleet.supervisor import (
    Action,
    BaselineProfile,
    Rule,
    Supervisor,
    SupervisorConfig,
)
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.wire import ENCODER, METRICS_DECODER, NodeMetrics
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard, LockedGuard
from knightwatch.limits import Limits
from knightwatch.state import Scope, TradingState

from ...identities import signer, trust
from ..fleet_fixtures import POLICY, OrderIds

S = 1_000_000_000
TICK = S // 5


class Quoters:
    """Nodes quoting at given rates per second: accepted orders, fills, cancels."""

    def __init__(self, config: SupervisorConfig, nodes: int = 4) -> None:
        self.clock = SimClock(10 * S)
        self.sup = Supervisor(config, self.clock)
        self.nodes = [f"n{i}" for i in range(1, nodes + 1)]
        # accepted, fills, cancels, unknown cancels
        self.acc = {n: [0.0, 0.0, 0.0, 0.0] for n in self.nodes}
        self.state = {n: 0 for n in self.nodes}  # the node's own `TradingState`

    def run(
        self,
        seconds: float,
        flow: tuple[float, float, float],
        odd: dict[str, tuple[float, float, float]] | None = None,
        unknown: dict[str, float] | None = None,
    ) -> list[Action]:
        """`unknown`: a node's rate of cancel requests for orders its Guard does not hold."""
        out: list[Action] = []
        for _ in range(round(seconds * S / TICK)):
            self.clock.advance(TICK)
            for n in self.nodes:
                rates = (odd or {}).get(n, flow)
                a = self.acc[n]
                for i, r in enumerate((*rates, (unknown or {}).get(n, 0.0))):
                    a[i] += r * TICK / S
                accepted, fills, cancels, unknown_cancels = (int(v) for v in a)
                m = NodeMetrics(
                    n, 0, accepted, accepted, 0, fills, 0.0, 0.0, True, 0,
                    notional=fills * 2_000.0, cancels=cancels, instance="p1",
                    node_state=self.state[n], unknown_cancels=unknown_cancels,
                )  # fmt: skip
                out += self.sup.observe(m)
        return out


def test_a_cancel_storm_inside_the_order_rate_limit_is_halted_by_name() -> None:
    """Four nodes quote 30 orders/s with 27 fills and 3 cancels a second. n1 turns into a
    cancel/replace loop: 100 orders/s (under 5x its order-rate baseline, 150/s), 100
    cancels a second, fills as before. Before, nothing fired for good; now n1 alone is
    halted on its cancel rate within the rate window and its sustain, by name."""
    f = Quoters(SupervisorConfig())
    assert f.run(120, (30.0, 27.0, 3.0)) == []
    fired = f.run(5, (30.0, 27.0, 3.0), {"n1": (100.0, 27.0, 100.0)})
    halts = list(fired)
    assert {(a.rule, a.key, a.scope) for a in halts} == {
        (Rule.BASELINE_CANCEL_RATE, "n1", Scope.NODE)
    }, fired
    why = halts[0].reason
    assert "node n1 cancel_rate" in why and "its learned baseline 3.0 cancels/s" in why, why
    # once per episode: the storm going on fires nothing more
    assert f.run(5, (30.0, 27.0, 3.0), {"n1": (100.0, 27.0, 100.0)}) == []


def test_a_cancel_storm_from_the_first_second_is_held_to_the_floor() -> None:
    """A node that storms from its start is never learned as normal: during warm-up the
    cancel rate is held to its floor (20/s) as baseline, limit 100/s; 300/s is halted."""
    f = Quoters(SupervisorConfig(), nodes=2)
    fired = f.run(3, (30.0, 27.0, 3.0), {"n1": (300.0, 27.0, 300.0)})
    rules = {(a.rule, a.key) for a in fired}
    assert (Rule.BASELINE_CANCEL_RATE, "n1") in rules
    assert all(a.key == "n1" for a in fired)
    why = next(a.reason for a in fired if a.rule is Rule.BASELINE_CANCEL_RATE)
    assert "warm-up (floor)" in why, why


def test_busy_normal_quoting_is_not_halted() -> None:
    """A busy market maker cancels most of what it quotes: 45 orders/s, 43 cancels a
    second, 2 fills, from its start; then its pace swings 1x to 3x every few seconds for
    two minutes (the open, a news burst): nothing fires, on the cancel rule or any other."""
    f = Quoters(SupervisorConfig(), nodes=4)
    fired = f.run(60, (45.0, 2.0, 43.0))
    for step in range(40):
        k = 1.0 + (step % 3)  # 1x, 2x, 3x, 3 s each
        fired += f.run(3, (45.0 * k, 2.0 * k, 43.0 * k))
    assert fired == []


def test_under_the_floor_a_cancel_surge_is_not_halted() -> None:
    """A quiet node (1 cancel a second) cancelling 15 a second is 15x its baseline but
    under the 20/s floor: not halted."""
    f = Quoters(SupervisorConfig(), nodes=2)
    assert f.run(120, (10.0, 9.0, 1.0)) == []
    assert f.run(10, (10.0, 9.0, 1.0), {"n1": (15.0, 9.0, 15.0)}) == []


def test_a_configured_cancel_baseline_judges_from_the_first_sample() -> None:
    f = Quoters(SupervisorConfig(profile=BaselineProfile(cancel_rate=10.0)), nodes=2)
    fired = f.run(2, (20.0, 19.0, 1.0), {"n2": (60.0, 19.0, 60.0)})
    assert {(a.rule, a.key) for a in fired} == {(Rule.BASELINE_CANCEL_RATE, "n2")}
    assert "configured baseline 10.0 cancels/s" in fired[0].reason


def test_older_nodes_metrics_decode_with_no_cancels() -> None:
    """A node that predates the field sends no `cancels`: it decodes as 0."""
    doc = json.loads(ENCODER.encode(NodeMetrics("n1", 0, 5, 5, 0, 1, 0.0, 0.0, True, 0)))
    del doc["cancels"]
    assert METRICS_DECODER.decode(json.dumps(doc).encode()).cancels == 0


def trading_node(kind: type[Guard], **limits: Any) -> tuple[Guard, NodeRuntime]:
    """An armed Guard of `kind` (n1, holding its lease, AAPL priced) under `limits`, and the
    node runtime that publishes its metrics."""
    clock = SimClock(10 * S)
    guard = kind(Limits(lease_timeout_s=POLICY.lease_timeout_s, **limits), node="n1", clock=clock)
    guard.on_price("AAPL", 100.0)
    guard.arm("test")
    guard.renew_lease()
    node = NodeRuntime(
        guard,
        MemoryControlPlane(MemoryFabric()),
        clock=clock,
        policy=POLICY,
        trust=trust(),
        signer=signer("n1"),
    )
    return guard, node


@pytest.mark.parametrize("kind", [Guard, LockedGuard])
def test_the_node_reports_cancels_a_cancel_ratio_halt_does_not_set_back(
    kind: type[Guard],
) -> None:
    """The node publishes the Guard's confirmed cancels (a gateway's `LockedGuard` too);
    the Guard zeroes its own count when it halts on the cancel-to-fill ratio, and the
    published count still only grows."""
    guard, node = trading_node(
        kind, max_orders_per_s_symbol=None, max_cancel_to_fill_ratio=2.0, cancel_ratio_min_cancels=3
    )
    ids = OrderIds("c")
    orders = [ids.order() for _ in range(6)]
    for o in orders:
        assert guard.check(o).accepted
    for o in orders[:4]:
        guard.on_cancel(o.id)
    assert node.metrics().cancels == 4
    d = guard.check(ids.order())  # 4 cancels to 0 fills: the Guard halts and zeroes its count
    assert d.reason is RejectReason.CANCEL_FILL_RATIO, d
    assert node.metrics().cancels == 4
    for o in orders[4:]:
        guard.on_cancel(o.id)  # a cancel is never refused, halted or not
    assert node.metrics().cancels == 6


@pytest.mark.parametrize("state", [TradingState.REDUCING, TradingState.HALTED])
def test_a_node_cancelling_what_works_under_a_drain_or_a_halt_is_not_halted_for_it(
    state: TradingState,
) -> None:
    """A drain or a kill makes the node cancel what it has working: 3,000 cancels a second
    for 3 s, 1,000x its baseline, is the stop direction, not a storm. Nothing fires, during
    it nor after the node is back to ACTIVE with its flow as before."""
    f = Quoters(SupervisorConfig(), nodes=2)
    assert f.run(120, (30.0, 27.0, 3.0)) == []
    f.state["n1"] = int(state)
    assert f.run(3, (30.0, 27.0, 3.0), {"n1": (0.0, 0.0, 3_000.0)}) == []
    f.state["n1"] = int(TradingState.ACTIVE)
    assert f.run(10, (30.0, 27.0, 3.0)) == []
