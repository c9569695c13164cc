"""Supervisor rules on a simulated clock, and the service halting a node on MemoryControlPlane."""

from __future__ import annotations

import json
import math
import re
import statistics
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.clock import SimClock
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import (
    Action,
    BaselineProfile,
    Rule,
    Supervisor,
    SupervisorConfig,
)
from knightwatch.control.fleet.supervisor_service import SupervisorService
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.wire import FLEET_KEY, NodeMetrics
from knightwatch.decision import RejectReason
from knightwatch.state import Scope, TradingState

from ...identities import switch
from ..fleet_fixtures import OrderIds, make_node

S = 1_000_000_000
TICK = S // 5


def metrics(
    node: str,
    orders: int,
    *,
    rejected: int = 0,
    gross: float = 0.0,
    pnl: float = 0.0,
    armed: bool = True,
    errors: int = 0,
) -> NodeMetrics:
    return NodeMetrics(node, 0, orders, orders - rejected, rejected, 0, gross, pnl, armed, errors)


class Feed:
    """Drives a Supervisor: every tick each node reports cumulative counts at its rate."""

    def __init__(self, config: SupervisorConfig | None = None) -> None:
        self.clock = SimClock(10 * S)
        self.sup = Supervisor(config or SupervisorConfig(), self.clock)
        self.orders: dict[str, float] = {}

    def tick(self, rates: dict[str, float], **kw: dict[str, float]) -> list[tuple[Rule, str]]:
        self.clock.advance(TICK)
        fired = []
        for node, rate in rates.items():
            self.orders[node] = self.orders.get(node, 0) + rate * TICK / S
            extra = {k: v[node] for k, v in kw.items() if node in v}
            for a in self.sup.observe(metrics(node, int(self.orders[node]), **extra)):
                fired.append((a.rule, a.key))
        return fired


def test_runaway_rate_is_halted_only_after_the_window() -> None:
    feed = Feed(SupervisorConfig(rate_window_s=1.0))
    normal = {f"n{i}": 20.0 for i in range(1, 9)}
    for _ in range(10):
        assert feed.tick(normal) == []
    runaway = {**normal, "n3": 400.0}
    fired: list[tuple[Rule, str]] = []
    ticks = 0
    while not fired and ticks < 50:
        fired = feed.tick(runaway)
        ticks += 1
    # its own baseline is still warming up: the floor's limit (100/s) halts it at once too
    assert (Rule.ORDER_RATE, "n3") in fired and {key for _, key in fired} == {"n3"}
    assert set(fired) <= {(Rule.ORDER_RATE, "n3"), (Rule.BASELINE_ORDER_RATE, "n3")}
    assert 5 <= ticks <= 12  # window (5 ticks) plus the rate ramp, never instantly
    assert all(feed.tick(runaway) == [] for _ in range(5))  # once per episode
    action = feed.sup.actions[0]
    assert action.scope is Scope.NODE and action.state is TradingState.HALTED
    assert "orders/s vs fleet median" in action.reason


def test_short_burst_under_the_window_is_not_halted() -> None:
    feed = Feed(SupervisorConfig(rate_window_s=2.0))
    normal = {f"n{i}": 20.0 for i in range(1, 6)}
    for _ in range(10):
        feed.tick(normal)
    for _ in range(3):  # 0.6 s burst
        assert feed.tick({**normal, "n1": 500.0}) == []
    for _ in range(20):
        assert feed.tick(normal) == []


def test_pnl_deviation_exposure_rejects_and_errors() -> None:
    feed = Feed(SupervisorConfig(pnl_deviation=10_000, gross_exposure_cap=1_000_000))
    nodes = {f"n{i}": 10.0 for i in range(1, 5)}
    assert feed.tick(nodes, pnl={"n1": 100.0, "n2": -50.0, "n3": 0.0, "n4": 20.0}) == []
    fired = feed.tick(nodes, pnl={"n1": 0.0, "n2": -60_000.0, "n3": 0.0, "n4": 0.0})
    assert (Rule.PNL_DEVIATION, "n2") in fired
    fired = feed.tick(nodes, gross={n: 300_000.0 for n in nodes})
    assert fired.count((Rule.GROSS_EXPOSURE, "fleet")) == 1
    exposure = next(a for a in feed.sup.actions if a.rule is Rule.GROSS_EXPOSURE)
    assert exposure.scope is Scope.FLEET and exposure.state is TradingState.REDUCING
    errs = feed.tick(nodes, armed={"n4": False}, errors={"n4": 2})
    assert (Rule.ERRORS_BEFORE_ARMING, "n4") in errs


def test_reject_spike() -> None:
    feed = Feed(SupervisorConfig(reject_ratio=0.5, reject_min_orders=20))
    nodes = {"n1": 100.0, "n2": 100.0, "n3": 100.0}
    for _ in range(6):
        feed.tick(nodes)
    fired: list[tuple[Rule, str]] = []
    base = int(feed.orders["n1"])
    for i in range(1, 7):
        fired += feed.tick(nodes, rejected={"n1": float(int(20 * i * 0.9))})
    assert (Rule.REJECT_SPIKE, "n1") in fired and base > 0


def test_config_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="rate_multiple: must be > 1"):
        SupervisorConfig(rate_multiple=0.5)


class _Hook(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        n = int(self.headers["Content-Length"])
        _Hook.bodies.append(json.loads(self.rfile.read(n)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def webhook() -> Iterator[str]:
    _Hook.bodies = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/page"
    finally:
        server.shutdown()
        server.server_close()


async def test_service_halts_the_node_through_the_kill_switch_and_pages(webhook: str) -> None:
    fabric = MemoryFabric()
    clock = SimClock(10 * S)
    nodes = []
    for i in range(1, 4):
        plane = MemoryControlPlane(fabric)
        await plane.connect()
        node = make_node(f"n{i}", plane, clock)
        await node.start()
        nodes.append(node)
    sup_plane = MemoryControlPlane(fabric)
    await sup_plane.connect()
    service = SupervisorService(
        sup_plane,
        Supervisor(SupervisorConfig(), clock),
        switch(sup_plane, clock, "supervisor"),
        Pager(webhook),
        confirm_timeout_s=0.2,
    )
    await service.start()
    bad = nodes[1]
    bad.report_error("flag 'powerpeg' set on a binary that does not know it")
    bad.guard.disarm("test")
    await bad.publish_once()
    assert [a.rule for a, _ in service.results] == [Rule.ERRORS_BEFORE_ARMING]
    _, result = service.results[0]
    assert result.latencies_ms.keys() == {"n2"} and result.ok
    bad.guard.arm("someone who ignored the page")
    d = bad.check(OrderIds("x").order())
    assert not d.accepted and d.reason is RejectReason.HALTED
    assert nodes[0].check(OrderIds("y").order()).accepted
    assert _Hook.bodies and _Hook.bodies[0]["rule"] == Rule.ERRORS_BEFORE_ARMING.value
    assert _Hook.bodies[0]["key"] == "n2"
    recorded = await sup_plane.audit()
    assert recorded and b"supervisor_action" in recorded[-1][1].lines()[-1]
    for node in nodes:
        await node.stop()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1_000), min_size=3, max_size=9), st.integers(5, 30))
def test_rate_rule_never_halts_a_node_at_or_below_the_median(
    rates: list[float], ticks: int
) -> None:
    feed = Feed(SupervisorConfig(rate_window_s=0.4))
    nodes = {f"n{i}": r for i, r in enumerate(rates)}
    fired: list[tuple[Rule, str]] = []
    for _ in range(ticks):
        fired += feed.tick(nodes)
    median = statistics.median(rates)
    cfg = feed.sup.config
    for rule, node in fired:
        if rule is Rule.BASELINE_ORDER_RATE:  # still warming up: over the floor's limit
            over = sum(rates) / len(rates) if node == FLEET_KEY else nodes[node]
            assert over > cfg.baseline_multiple * cfg.rate_floor_per_s
            continue
        assert rule is Rule.ORDER_RATE
        assert nodes[node] > median


def _admitted(node: str, orders: int, admitted: bool) -> NodeMetrics:
    return NodeMetrics(node, 0, orders, orders, 0, 0, 0.0, 0.0, True, 0, {}, admitted)


@pytest.mark.parametrize("sitting_out", ["unarmed", "not_admitted"])
def test_nodes_not_armed_or_admitted_are_not_in_the_fleet_median(sitting_out: str) -> None:
    """Two refused nodes at zero orders/s would drag the median to 12.5/s and make a busy
    but normal node (100/s against a 25/s peer) look like a 5x runaway."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(min_peers=1, rate_floor_per_s=20.0), clock)
    fired: list[Rule] = []
    for k in range(1, 16):
        clock.advance(TICK)
        fired += [a.rule for a in sup.observe(_admitted("n1", 20 * k, True))]
        fired += [a.rule for a in sup.observe(_admitted("n2", 5 * k, True))]
        for refused in ("n3", "n4"):
            if sitting_out == "unarmed":
                m = NodeMetrics(refused, 0, 0, 0, 0, 0, 0.0, 0.0, False, 0)
            else:
                m = _admitted(refused, 0, False)
            fired += [a.rule for a in sup.observe(m)]
    health = sup.health()
    assert Rule.ORDER_RATE not in fired
    assert health["n1"].peers == 1 and not health["n3"].participating
    assert health["n1"].fleet_median_rate == pytest.approx(62.5)
    assert health["n1"].order_rate_ratio == pytest.approx(100 / 62.5)
    # the same fleet with the two nodes taking part: n1 is then 8x the median and halted
    sup2 = Supervisor(SupervisorConfig(min_peers=1, rate_floor_per_s=20.0), clock)
    fired2: list[Rule] = []
    for k in range(1, 16):
        clock.advance(TICK)
        fired2 += [a.rule for a in sup2.observe(_admitted("n1", 20 * k, True))]
        fired2 += [a.rule for a in sup2.observe(_admitted("n2", 5 * k, True))]
        for node in ("n3", "n4"):
            fired2 += [a.rule for a in sup2.observe(_admitted(node, 0, True))]
    assert Rule.ORDER_RATE in fired2


def test_health_is_the_rules_view_and_read_only() -> None:
    feed = Feed(SupervisorConfig(rate_window_s=1.0))
    for _ in range(10):
        feed.tick({"n1": 10, "n2": 10, "n3": 400})
    h = feed.sup.health()
    assert set(h) == {"n1", "n2", "n3"}
    assert h["n3"].order_rate_ratio > feed.sup.config.rate_multiple  # what the rule fired on
    assert (Rule.ORDER_RATE, "n3") in {(a.rule, a.key) for a in feed.sup.actions}
    actions = len(feed.sup.actions)
    assert feed.sup.health() == h and len(feed.sup.actions) == actions  # reading acts on nothing
    gauges = h["n1"].gauges()
    assert gauges["order_rate_ratio"] == pytest.approx(h["n1"].order_rate_ratio)
    assert gauges["reject_ratio"] == 0.0 and "pnl_deviation" in gauges
    feed.clock.advance(int(feed.sup.config.stale_after_s * S) + 1)
    assert feed.sup.health() == {}  # silent nodes have no health: gates fail closed


def test_a_node_without_enough_peers_has_no_rate_ratio_for_a_gate() -> None:
    """A lone node's rate median is its own rate: its ratio was 1 however fast it ran, so a
    rollout gate `order_rate_ratio <= 3` let a one-node fleet's runaway canary through and
    promoted it (276,630 executions in a 300 s replay). With fewer than `min_peers` peers
    the ratio is left out of the gauges: a gate on it fails, as on any unreported metric."""
    feed = Feed(SupervisorConfig(rate_window_s=1.0, min_peers=2))
    for _ in range(10):
        feed.tick({"n1": 400.0})
    alone = feed.sup.health()["n1"]
    assert alone.order_rate_ratio == pytest.approx(1.0) and not alone.rate_judged
    assert "order_rate_ratio" not in alone.gauges() and "order_rate" in alone.gauges()
    for _ in range(10):
        feed.tick({"n1": 400.0, "n2": 20.0, "n3": 20.0})
    judged = feed.sup.health()["n1"]
    assert judged.rate_judged and judged.gauges()["order_rate_ratio"] > 3.0
    quiet = Feed(SupervisorConfig(rate_window_s=1.0, min_peers=2))
    for _ in range(10):
        quiet.tick({"n1": 1.0})  # under the floor: 0, no anomaly, peers or not
    assert quiet.sup.health()["n1"].gauges()["order_rate_ratio"] == 0.0


# ------------------------------------------------------------------ baselines


class Fleet:
    """Nodes reporting every tick at given rates: accepted orders, notional, principal flow."""

    def __init__(self, config: SupervisorConfig, nodes: int = 8) -> None:
        self.clock = SimClock(10 * S)
        self.sup = Supervisor(config, self.clock)
        self.nodes = [f"n{i}" for i in range(1, nodes + 1)]
        self.acc = {n: [0.0, 0.0, 0.0, 0.0] for n in self.nodes}  # orders, notional, principal, pnl
        self.state = {n: 0 for n in self.nodes}
        self.parents: int | dict[str, int] = 100  # an agency router: it works customers' parents
        self.version = ""  # the nodes' limits version (`v1@10%`: a resume ramp's stage)

    def tick(
        self,
        rate: dict[str, float] | float,
        *,
        principal: dict[str, float] | None = None,
        pnl: dict[str, float] | None = None,
        px: float = 20.0,
    ) -> list[Action]:
        self.clock.advance(TICK)
        out: list[Action] = []
        for n in self.nodes:
            r = rate if isinstance(rate, float | int) else rate.get(n, 0.0)
            if self.state[n] >= TradingState.HALTED:
                r = 0.0  # its Guard accepts no new order (fills of what works may still come)
            a = self.acc[n]
            a[0] += r * TICK / S
            own = (principal or {}).get(n, 0.0) * TICK / S
            a[1] += r * TICK / S * 100 * px + own  # the firm's own is part of what executed
            a[2] += own
            a[3] = (pnl or {}).get(n, a[3])
            orders = int(a[0])
            m = NodeMetrics(
                n, 0, orders, orders, 0, orders, 0.0, a[3], True, 0,
                notional=a[1], principal_notional=a[2],
                parents=self.parents if isinstance(self.parents, int) else self.parents[n],
                node_state=self.state[n], limits_version=self.version,
            )  # fmt: skip
            out += self.sup.observe(m)
        return out

    def run(self, seconds: float, rate: dict[str, float] | float, **kw: object) -> list[Action]:
        out: list[Action] = []
        for _ in range(round(seconds * S / TICK)):
            out += self.tick(rate, **kw)  # type: ignore[arg-type]
        return out


def test_a_runaway_of_the_whole_fleet_trips_its_learned_baselines_as_fast_as_one_node() -> None:
    """Every node from 20/s to 150/s at once: the fleet median rises with it, so the peer
    rule sees nothing; each node against its own learned baseline does."""
    f = Fleet(SupervisorConfig(warmup_s=30.0))
    f.parents = 0  # a firm trading for itself: its rate is the thing to watch
    assert f.run(40, 20.0) == []  # learning
    fired: list[Action] = []
    t = 0
    while len({a.key for a in fired if a.rule is Rule.BASELINE_ORDER_RATE}) < 8 and t < 20:
        fired += f.tick(150.0)
        t += 1
    nodes = {a.key for a in fired if a.rule is Rule.BASELINE_ORDER_RATE and a.scope is Scope.NODE}
    assert nodes == set(f.nodes)
    assert t * TICK / S <= 2.0  # within the rate window and its sustain
    assert Rule.ORDER_RATE not in {a.rule for a in fired}  # peers rose together
    why = next(a.reason for a in fired if a.key == "n1" and a.rule is Rule.BASELINE_ORDER_RATE)
    assert "x its learned baseline 20." in why and "150.0 orders/s" in why, why


def test_steady_flow_with_noise_never_trips_a_baseline() -> None:
    f = Fleet(SupervisorConfig(warmup_s=10.0))
    rng = __import__("random").Random(5)
    fired: list[Action] = []
    for _ in range(600):  # two minutes of 15-45 orders/s per node
        fired += f.tick({n: rng.uniform(15, 45) for n in f.nodes})
    assert fired == []


def test_a_configured_profile_judges_from_the_first_sample() -> None:
    f = Fleet(SupervisorConfig(profile=BaselineProfile(order_rate=10.0, notional_rate=20_000.0)))
    f.parents = 0
    fired = f.run(2, {"n3": 120.0})
    rules = {(a.rule, a.key) for a in fired}
    assert (Rule.BASELINE_ORDER_RATE, "n3") in rules
    why = next(a.reason for a in fired if a.rule is Rule.BASELINE_ORDER_RATE)
    assert "configured baseline 10.0 orders/s" in why


def test_principal_flow_halts_at_once_and_a_halt_in_force_is_not_reissued() -> None:
    f = Fleet(SupervisorConfig(principal_floor=10_000.0))
    assert f.run(1, 20.0) == []
    fired = f.tick(20.0, principal={"n2": 60_000.0})  # $12k of the firm's own in 0.2 s
    assert [(a.rule, a.key) for a in fired] == [(Rule.PRINCIPAL_FLOW, "n2")]
    assert "principal_notional" in fired[0].reason and "floor 10,000" in fired[0].reason
    f.state["n2"] = int(TradingState.HALTED)  # the node applied it
    f.sup.rearm(Rule.PRINCIPAL_FLOW, "n2")  # even if the rule were re-armed ...
    assert f.run(2, 20.0, principal={"n2": 60_000.0}) == []  # ... it is in force: nothing
    f.state["n2"] = 0  # a person resumed it while the leak goes on: it halts again
    assert [(a.rule, a.key) for a in f.tick(20.0, principal={"n2": 60_000.0})] == [
        (Rule.PRINCIPAL_FLOW, "n2")
    ]


def test_a_slow_bleed_is_halted_within_its_window() -> None:
    cfg = SupervisorConfig(warmup_s=20.0, bleed_window_s=60.0, bleed_loss=10_000.0)
    f = Fleet(cfg, nodes=4)
    f.parents = 0
    assert f.run(30, 20.0) == []
    fired: list[Action] = []
    pnl = 0.0
    t = 0
    while not fired and t < 5 * 120:  # n1 at 2x its baseline, losing $200/s
        pnl -= 200.0 * TICK / S
        fired = f.tick({"n1": 40.0, "n2": 20.0, "n3": 20.0, "n4": 20.0}, pnl={"n1": pnl})
        t += 1
    assert [(a.rule, a.key) for a in fired] == [(Rule.SLOW_BLEED, "n1")]
    assert 60 <= t * TICK / S <= 65
    assert "2.0x its learned baseline" in fired[0].reason
    # the same rate with no loss is a busy node, not a bleed
    g = Fleet(cfg, nodes=4)
    g.parents = 0
    g.run(30, 20.0)
    assert g.run(120, {"n1": 40.0, "n2": 20.0, "n3": 20.0, "n4": 20.0}) == []


def test_throttling_is_not_a_reject_spike() -> None:
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(reject_min_orders=20), clock)
    fired: list[Rule] = []
    for k in range(1, 15):
        clock.advance(TICK)
        for n in ("n1", "n2", "n3"):
            orders, rejected = 100 * k, (90 * k if n == "n1" else 0)
            m = NodeMetrics(
                n, 0, orders, orders - rejected, rejected, 0, 0.0, 0.0, True, 0,
                {"rate_node": rejected},
            )  # fmt: skip
            fired += [a.rule for a in sup.observe(m)]
    assert Rule.REJECT_SPIKE not in fired
    assert sup.health()["n1"].reject_ratio == 0.0


def test_a_firm_trading_for_itself_has_its_principal_flow_learned_not_halted() -> None:
    """No registered parents: principal flow is the business. It warms up like any other
    measure and only a jump over its learned baseline halts."""
    f = Fleet(SupervisorConfig(warmup_s=10.0, principal_floor=10_000.0))
    f.parents = 0
    flow = {n: 30_000.0 for n in f.nodes}  # $30k/s of the firm's own on every node
    assert f.run(90, 20.0, principal=flow) == []  # its 60 s window fills, then it is learned
    fired: list[Action] = []
    ticks = 0
    while not fired and ticks < 10:  # (its notional rate, held for a window, follows)
        fired = f.tick(20.0, principal={**flow, "n4": 10_000_000.0})
        ticks += 1
    assert [(a.rule, a.key) for a in fired] == [(Rule.PRINCIPAL_FLOW, "n4")]
    # $30k/s over its 60 s window (an average over the history, not its first window's 1.7M)
    assert re.search(r"learned baseline 1\.[89]\dM \$", fired[0].reason), fired[0].reason


def test_a_firm_node_taking_a_customer_later_is_no_agency_router_nor_is_the_fleet() -> None:
    """Nodes trading for themselves share a fleet with an agency router, and one of them
    takes its first customer parent before its principal baseline is learned: neither that
    node nor the fleet's total is held to the agency router's nil (both were halted), and
    the agency router's own leak is still caught at once."""
    f = Fleet(SupervisorConfig(warmup_s=30.0, principal_floor=10_000.0))
    parents = {n: 0 for n in f.nodes}
    parents["n8"] = 100_000  # (children per parent stays that of a real router)
    f.parents = parents
    flow = {n: 30_000.0 for n in f.nodes if n != "n8"}  # $30k/s of their own on n1..n7
    assert f.run(20, 20.0, principal=flow) == []
    parents["n4"] = 1  # n4's first customer, 20 s in
    assert f.run(120, 20.0, principal=flow) == []
    fired = f.run(2, 20.0, principal={**flow, "n8": 60_000.0})  # the agency router leaks
    assert [(a.rule, a.key) for a in fired] == [(Rule.PRINCIPAL_FLOW, "n8")]


def test_an_agency_node_working_only_its_customers_parents_is_no_rate_anomaly() -> None:
    """A big parent at a busy open: 8x the node's rate, every child within a customer's
    parent, none refused. Halting it would stop healthy trading; the same burst with one
    child refused (a Guard check, not a rate limit) is judged."""
    f = Fleet(SupervisorConfig(warmup_s=10.0))
    assert f.run(20, 20.0) == []
    assert f.run(5, {n: (160.0 if n == "n1" else 20.0) for n in f.nodes}) == []
    h = f.sup.health()["n1"]
    assert h.customers_only and h.order_rate_ratio == 0.0
    g = Fleet(SupervisorConfig(warmup_s=10.0))
    g.parents = 0  # the same burst from a node trading for itself
    g.run(20, 20.0)
    fired = g.run(5, {n: (160.0 if n == "n1" else 20.0) for n in g.nodes})
    assert {(a.rule, a.key) for a in fired} >= {(Rule.BASELINE_ORDER_RATE, "n1")}


def test_a_node_under_the_minimum_a_window_is_judged_on_its_last_orders() -> None:
    """A node sending 10 orders a second never had 50 in one 1 s window, so a storm of
    refusals (or of orders that never fill) at that rate was never judged. It is judged on
    its last `reject_min_orders` orders, looking back up to `count_window_s`."""
    feed = Feed(SupervisorConfig(reject_min_orders=50, rate_window_s=1.0))
    nodes = {"n1": 10.0, "n2": 10.0, "n3": 10.0}
    for _ in range(10):
        assert feed.tick(nodes) == []
    start = int(feed.orders["n1"])
    fired: list[tuple[Rule, str]] = []
    ticks = 0
    while (Rule.REJECT_SPIKE, "n1") not in fired and ticks < 100:
        refused = float(int(feed.orders["n1"] + 2) - start)  # every order from now on
        fired += feed.tick(nodes, rejected={"n1": refused})
        ticks += 1
    assert (Rule.REJECT_SPIKE, "n1") in fired
    assert 13 <= ticks <= 20  # over half of its last 50 orders refused: over 2.5 s at 10/s
    assert feed.sup.health()["n1"].window_orders >= 50
    assert not [f for f in fired if f[1] != "n1"]


def test_a_resumed_slow_node_is_not_judged_on_what_it_refused_while_halted() -> None:
    feed = Feed(SupervisorConfig(reject_min_orders=50, rate_window_s=1.0))
    clock, sup = feed.clock, feed.sup
    orders = refused = 0
    fired: list[Rule] = []
    for k in range(200):  # 40 s at 10 orders/s; halted from 10 s to 25 s: all refused
        clock.advance(TICK)
        halted = 50 <= k < 125
        orders += 2
        refused += 2 if halted else 0
        m = NodeMetrics(
            "n1", 0, orders, orders - refused, refused, 0, 0.0, 0.0, True, 0,
            node_state=int(TradingState.HALTED if halted else TradingState.ACTIVE),
        )  # fmt: skip
        fired += [a.rule for a in sup.observe(m)]
    assert Rule.REJECT_SPIKE not in fired
    assert sup.health()["n1"].window_orders >= 50


def test_a_slow_node_whose_fills_stop_is_judged_on_messages_per_execution() -> None:
    """30 orders a second, every one filled, then no fills at all (lost, or an amend storm
    that never trades): fewer than 50 orders in any 1 s window, and still halted."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(warmup_s=10.0, reject_min_orders=50), clock)
    orders = fills = 0.0
    fired: list[tuple[Rule, int]] = []
    for k in range(400):  # 80 s; the fills stop at 60 s
        clock.advance(TICK)
        orders += 30 * TICK / S
        if k < 300:
            fills = orders
        m = NodeMetrics("n1", 0, int(orders), int(orders), 0, int(fills), 0.0, 0.0, True, 0)
        fired += [(a.rule, k) for a in sup.observe(m)]
    assert [r for r, _ in fired] == [Rule.BASELINE_MESSAGES_PER_EXECUTION]
    assert 300 < fired[0][1] <= 300 + 5 * 3  # within about 3 s of the last fill


def test_many_quiet_nodes_whose_fills_stop_together_halt_the_fleet() -> None:
    """20 nodes at one order every 2 s, each filled, then no fills anywhere: no node holds
    50 orders in its 60 s count window, nor the fleet in one rate window (10 orders), so
    only the fleet's total over the nodes' counted spans can see it; it halts the fleet."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(warmup_s=10.0, reject_min_orders=50), clock)
    nodes = [f"n{i:02d}" for i in range(20)]
    orders = dict.fromkeys(nodes, 0.0)
    fills = dict.fromkeys(nodes, 0)
    fired: list[tuple[Rule, str, int]] = []
    for k in range(1000):  # 200 s; the fills stop at 100 s
        clock.advance(TICK)
        for node in nodes:
            orders[node] += 0.5 * TICK / S
            if k < 500:
                fills[node] = int(orders[node])
            m = NodeMetrics(node, 0, int(orders[node]), int(orders[node]), 0, fills[node],
                            0.0, 0.0, True, 0)  # fmt: skip
            fired += [(a.rule, a.key, k) for a in sup.observe(m)]
        if k == 499:
            assert fired == []  # a healthy quiet fleet is never judged a runaway
    assert all(sup.health()[n].window_orders < 50 for n in nodes)
    rules = [(r, key) for r, key, _ in fired]
    assert rules == [(Rule.BASELINE_MESSAGES_PER_EXECUTION, FLEET_KEY)]
    assert 500 < fired[0][2] <= 500 + 5 * 60  # within the count window of the last fill
    action = sup.actions[0]
    assert action.scope is Scope.FLEET and action.state is TradingState.HALTED
    assert "fleet messages_per_execution" in action.reason


# ------------------------------------------------------------------ beyond the 2012 shape


def test_a_whole_fleet_running_away_from_its_first_second_is_not_learned_as_normal() -> None:
    """A rollback at the open: every node at 150 orders/s from the first sample. The peers
    rise together and, before warm-up ends, no baseline is learned; the runaway was the
    history the baselines learned from, so a 5x limit over it never came. While a learned
    baseline warms up, a rate is held to its floor (limit 5 x 20/s)."""
    f = Fleet(SupervisorConfig(warmup_s=30.0))
    f.parents = 0  # a firm trading for itself
    fired = f.run(3, 150.0)
    nodes = {a.key for a in fired if a.rule is Rule.BASELINE_ORDER_RATE and a.scope is Scope.NODE}
    assert nodes == set(f.nodes)
    why = next(a.reason for a in fired if a.key == "n1")
    assert "warm-up (floor) baseline 20.0 orders/s" in why and "limit 100.0" in why, why
    assert f.sup.health()["n1"].baselines["order_rate"] == 20.0  # what a gate sees, too
    # the same fleet at its normal 40/s from the first second learns it and stays trading
    g = Fleet(SupervisorConfig(warmup_s=30.0))
    g.parents = 0
    assert g.run(60, 40.0) == []
    assert g.sup.health()["n1"].baselines["order_rate"] == pytest.approx(40.0, rel=0.05)


def _ramp(config: SupervisorConfig, rate: Callable[[float], float], seconds: int) -> list[Action]:
    """Four nodes trading for themselves, sampled every second at `rate(t)` orders/s."""
    clock = SimClock(10 * S)
    sup = Supervisor(config, clock)
    orders = dict.fromkeys(("n1", "n2", "n3", "n4"), 0.0)
    for t in range(seconds):
        clock.advance(S)
        for n in orders:
            orders[n] += rate(t)
            m = NodeMetrics(n, 0, int(orders[n]), int(orders[n]), 0, int(orders[n]), 0.0, 0.0,
                            True, 0, notional=orders[n] * 2_000.0)  # fmt: skip
            fired = sup.observe(m)
            if fired:
                return fired
    return []


def test_a_slow_ramp_cannot_carry_the_learned_baseline_to_any_rate() -> None:
    """The whole fleet's rate doubles every 10 minutes from 20/s: no window is 5x the one
    before, the peers rise together and the average follows the ramp, so the limit rose
    with it (to 5 million orders/s in 3 hours, never halted). A learned baseline now rises
    no further than the limit in force when it came into force (5 x 20/s): past 5 x that,
    the ramp is halted."""
    cfg = SupervisorConfig()
    fired = _ramp(cfg, lambda t: 20.0 * 2 ** (t / 600), 3 * 3600)
    assert fired and {a.rule for a in fired} <= {
        Rule.BASELINE_ORDER_RATE,
        Rule.BASELINE_NOTIONAL_RATE,
    }  # the fleet's total (or a node) against its own baseline: the peers rose together
    at = (fired[0].at_ns - 10 * S) / S
    assert 20.0 * 2 ** (at / 600) <= 5 * 5 * 20.0 * 1.05, at  # never past 5 x its ceiling
    # a day of the same shape within reason (up to 4x its start and back) keeps trading
    calm = _ramp(cfg, lambda t: 20.0 * (1 + 3 * math.sin(math.pi * t / 7200)), 7200)
    assert calm == []


def test_a_fleet_busier_after_warm_up_is_judged_on_its_history_not_its_first_sample() -> None:
    """The fleet's first total counts only the first node to report; a baseline started
    from it and moved 1/300 of the way per second was still 26/s for a fleet doing 80/s
    after warm-up, so the fleet at twice its normal rate was halted as a 6x runaway. At 2x
    with no loss nothing halts; at 2x while every node loses, each node's bleed does."""
    cfg = SupervisorConfig(warmup_s=20.0)
    f = Fleet(cfg, nodes=4)
    f.parents = 0
    assert f.run(30, 20.0) == []
    assert f.run(30, 40.0) == []
    g = Fleet(cfg, nodes=4)
    g.parents = 0
    assert g.run(30, 20.0) == []
    fired: list[Action] = []
    pnl = 0.0
    t = 0
    while not fired and t < 5 * 120:
        pnl -= 200.0 * TICK / S
        fired = g.tick(40.0, pnl=dict.fromkeys(g.nodes, pnl))
        t += 1
    assert {(a.rule, a.key) for a in fired} == {(Rule.SLOW_BLEED, n) for n in g.nodes}
    assert 60 <= t * TICK / S <= 65


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("gross_exposure", math.nan, "gross_exposure nan not finite"),
        ("gross_exposure", -3e6, "gross_exposure -3000000.0 < 0"),
        ("pnl", -math.inf, "pnl -inf not finite"),
        ("orders", -40, "orders -40 < 0"),
        ("fills", -1, "fills -1 < 0"),
        ("principal_notional", math.nan, "principal_notional nan not finite"),
        ("accepted", 10**9, "accepted 1000000000 + rejected 0 > orders"),
        ("fills", 2**64 - 1, "fills 18446744073709551615 beyond 2^53"),  # 0 - 1, unsigned
        ("notional", 2.0**63, "notional 9.223372036854776e+18 beyond 2^53"),
    ],
)
def test_metrics_that_cannot_be_read_halt_the_node_and_count_as_the_worst(
    field: str, value: float, named: str
) -> None:
    """A NaN exposure made the fleet's sum NaN (never over any cap), a NaN P&L made every
    deviation NaN (never over the threshold), a negative count a negative rate: each one a
    rule that silently passed. The node is halted by name; an exposure it cannot report
    counts as the worst it could be, so the fleet (already over its cap without it) reduces."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(gross_exposure_cap=1_000_000.0), clock)
    fired: list[Action] = []
    for k in range(1, 20):
        clock.advance(TICK)
        good = {"orders": 4 * k, "accepted": 4 * k, "fills": 4 * k, "gross_exposure": 0.0}
        bad = NodeMetrics(
            "n3", 0, good["orders"], good["accepted"], 0, good["fills"], 0.0, 0.0, True, 0
        )
        fired += sup.observe(msgspec.structs.replace(bad, **{field: value}))
        for n in ("n1", "n2"):
            fired += sup.observe(NodeMetrics(n, 0, 4 * k, 4 * k, 0, 4 * k, 4e5, 0.0, True, 0))
    node = [a for a in fired if a.key == "n3"]
    assert [(a.rule, a.scope, a.state) for a in node] == [
        (Rule.UNREADABLE_METRICS, Scope.NODE, TradingState.HALTED)
    ]
    assert named in node[0].reason, node[0].reason
    assert "n3" not in sup.health()  # never read: no health for a gate to pass
    reduce = [a for a in fired if a.rule is Rule.GROSS_EXPOSURE]
    assert len(reduce) == (1 if field == "gross_exposure" else 0)
    # n3 reporting readable numbers again re-arms the rule, and is judged as before
    clock.advance(TICK)
    assert sup.observe(NodeMetrics("n3", 0, 80, 80, 0, 80, 0.0, 0.0, True, 0)) == []
    assert "n3" in sup.health()


def test_a_restarted_node_hides_nothing_of_its_principal_flow() -> None:
    """Counters are cumulative since a node started: after a restart they count from 0, so
    the principal window (a minute) lost what the node did before it, and held a negative
    span where the pre-restart total exceeded the window's start. Two agency routers leak
    the same $9k, then $2k a sample; the one that restarted in between is halted at the
    same sample as the one that did not, and measures the same."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(principal_floor=10_000.0), clock)
    cum = {n: [0.0, 0.0] for n in ("n1", "n2", "n3", "n4")}  # orders, principal
    halted: dict[str, int] = {}
    for k in range(1, 340):  # 68 s
        clock.advance(TICK)
        for n, c in cum.items():
            c[0] += 4
            if n in ("n1", "n2") and (300 <= k < 310 or 330 <= k < 333):
                c[1] += 900.0 if k < 310 else 2_000.0  # $9k, then $2k a sample
            if n == "n2" and k == 320:
                c[0], c[1] = 4.0, 0.0  # n2 restarts: its counters start again
            sent = int(c[0])
            m = NodeMetrics(n, 0, sent, sent, 0, sent, 0.0, 0.0, True, 0, notional=c[0] * 2e3,
                            principal_notional=c[1], parents=50)  # fmt: skip
            for a in sup.observe(m):
                assert a.rule is Rule.PRINCIPAL_FLOW, a
                halted.setdefault(a.key, k)
            if n == "n2" and k == 321:  # just after the restart: no negative span
                h = sup.health()["n2"]
                assert h.order_rate > 0 and h.measures["principal_notional"] >= 9_000.0
    assert halted.get("n1") == halted.get("n2") == 330
    h = sup.health()
    assert h["n2"].measures["principal_notional"] == h["n1"].measures["principal_notional"]


def test_an_agency_router_never_learns_a_leak_under_the_floor_as_normal() -> None:
    """An agency router's normal own flow is nil. It leaked $8k a minute (under the $10k
    floor) for five minutes; its learned principal baseline rose to that, its limit to 5x
    it, and a $30k leak in a minute passed. The floor halts it, as documented."""
    f = Fleet(SupervisorConfig(principal_floor=10_000.0))
    assert f.run(300, 20.0, principal={"n2": 8_000.0 / 60}) == []
    fired = f.run(60, 20.0, principal={"n2": 30_000.0 / 60})
    assert [(a.rule, a.key) for a in fired] == [(Rule.PRINCIPAL_FLOW, "n2")]
    assert "baseline 0.0 $" in fired[0].reason, fired[0].reason


def test_one_node_id_reporting_two_sets_of_counters_is_halted() -> None:
    """Already caught (kept as a test): two processes claiming n1 (a stale copy left
    running, a duplicated config), each sending its own counters. Every switch reads as a
    restart and the counters go on from where they were, so n1's rate is far over any
    limit: it is halted, not averaged."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(warmup_s=10.0), clock)
    fired: list[tuple[Rule, str]] = []
    for k in range(1, 100):
        clock.advance(TICK)
        for n in ("n1", "n2", "n3"):
            c = 4 * k + (5_000 if n == "n1" else 0)  # n1 had sent 5,000 before
            m = NodeMetrics(n, 0, c, c, 0, c, 0.0, 0.0, True, 0)
            fired += [(a.rule, a.key) for a in sup.observe(m)]
        if k > 60:  # a second n1, started 12 s ago, at the same 20/s
            c = 4 * (k - 60)
            m = NodeMetrics("n1", 0, c, c, 0, c, 0.0, 0.0, True, 0)
            fired += [(a.rule, a.key) for a in sup.observe(m)]
    assert (Rule.BASELINE_ORDER_RATE, "n1") in fired
    # (the fleet's total, with n1 in it, follows; a node reporting itself halted is not in it)
    assert {key for _, key in fired} <= {"n1", FLEET_KEY}


def test_quote_stuffing_bursts_shorter_than_the_window_are_halted_when_repeated() -> None:
    """Already caught (kept as a test): 0.4 s bursts at 600 orders/s every 2 s, each one
    shorter than the 1 s rate window, by a node trading for itself. The window carries
    each burst for a whole window: the node is halted within its first bursts."""
    f = Fleet(SupervisorConfig(), nodes=4)
    f.parents = 0
    assert f.run(60, 20.0) == []
    burst = {"n1": 600.0, "n2": 20.0, "n3": 20.0, "n4": 20.0}
    fired: list[Action] = []
    bursts = 0
    while not fired and bursts < 30:
        fired = f.run(0.4, burst) + f.run(1.6, 20.0)
        bursts += 1
    assert bursts <= 2 and {a.key for a in fired} == {"n1"}
    assert Rule.BASELINE_ORDER_RATE in {a.rule for a in fired}


def test_one_node_over_its_own_limit_never_halts_the_whole_fleet_through_its_total() -> None:
    """One agency router leaks $200k of the firm's own in a second, and one node trading for
    itself runs at 5,000 orders/s; neither has applied its halt yet (its next sample is a
    second away). The fleet's totals summed them in: the fleet's principal flow (at once)
    and its order rate halted every node for one node's fault. A node over its own limit is
    left to its own rule; the fleet's totals judge the others."""
    f = Fleet(SupervisorConfig(warmup_s=10.0))
    assert f.run(30, 20.0) == []
    fired = f.run(2, 20.0, principal={"n4": 200_000.0})
    assert [(a.rule, a.scope, a.key) for a in fired] == [(Rule.PRINCIPAL_FLOW, Scope.NODE, "n4")]
    g = Fleet(SupervisorConfig(warmup_s=10.0))
    g.parents = 0
    assert g.run(30, 20.0) == []
    fired = g.run(3, {n: (5_000.0 if n == "n3" else 20.0) for n in g.nodes})
    assert fired and {(a.scope, a.key) for a in fired} == {(Scope.NODE, "n3")}
    # the whole fleet running away together is still halted, node by node
    assert {a.key for a in g.run(3, 5_000.0)} >= set(g.nodes) - {"n3"}


def _hammer(nodes: int, hammering: set[str], parents: int, seconds: int = 10) -> list[Action]:
    """`nodes` nodes at 20 accepted orders/s for 40 s; then those in `hammering` offer 3,000
    orders/s more for `seconds`, every one of them throttled by the Guard's node rate limit."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(warmup_s=10.0), clock)
    sent = dict.fromkeys((f"n{i}" for i in range(1, nodes + 1)), (0, 0))
    fired: list[Action] = []
    for k in range(200 + 5 * seconds):
        clock.advance(TICK)
        for n, (ok, refused) in sent.items():
            ok += 4
            refused += 600 if k >= 200 and n in hammering else 0
            sent[n] = (ok, refused)
            m = NodeMetrics(n, 0, ok + refused, ok, refused, ok, 0.0, 0.0, True, 0,
                            {"rate_node": refused}, notional=ok * 2e3, parents=parents)  # fmt: skip
            fired += sup.observe(m)
        if k == 199:
            assert fired == []
    return fired


def test_a_node_hammering_the_guard_is_halted_though_it_throttles_every_extra_order() -> None:
    """Thousands of orders a second refused by the Guard's rate limit while the accepted
    rate stays normal: throttling is left out of the reject spike, an agency router working
    only customers' parents was exempt from the rate rules, and the whole fleet hammering
    together moved its median with it; nothing halted. The order-rate rule judges what a
    node offered (accepted or refused), so each is halted by name, and the alert says how
    much of it the Guard refused. A node working only its customers' parents has nothing
    but throttling refused: it is judged with the reject rule's patience
    (`count_window_s`), so it is halted once it has hammered for a minute."""
    for parents, seconds in ((100, 61), (0, 10)):  # an agency router; a node for itself
        fired = _hammer(8, {"n2"}, parents, seconds)
        assert (Rule.BASELINE_ORDER_RATE, Scope.NODE, "n2") in {
            (a.rule, a.scope, a.key) for a in fired
        }, parents
        assert {a.key for a in fired} == {"n2"}
        why = next(a.reason for a in fired if a.rule is Rule.BASELINE_ORDER_RATE)
        assert "3,000 orders/s of it refused by the Guard" in why, why
        assert f"for >= {60 if parents else 1} s" in why, why
    fired = _hammer(4, {"n1", "n2", "n3", "n4"}, 100, 61)
    assert {a.key for a in fired if a.rule is Rule.BASELINE_ORDER_RATE} >= {"n1", "n2", "n3", "n4"}


def test_customers_orders_outrunning_the_node_rate_limit_at_the_open_halt_nothing() -> None:
    """A busy open: a node working only its customers' parents offers far more than its
    Guard's node rate limit lets through, for seconds, every extra child throttled and sent
    again once the window frees. That is the Guard working: the order-rate rule judged the
    refusals over one rate window and halted every node of a healthy fleet at the open,
    leaving most customers' parents unfilled. Judged over `count_window_s`, nothing halts."""
    assert _hammer(4, {"n1", "n2", "n3", "n4"}, 100, 20) == []
    assert _hammer(8, {"n2"}, 100, 59) == []


def test_counters_that_jump_by_2_63_halt_the_node_not_pass_as_one_spike() -> None:
    """A node's counters jump by 2^63 (a flipped top bit, an unsigned counter wrapped) and
    go on from there. The jump was one window's spike, over every limit for less than the
    rate window, so no rule held it; afterwards the rates read normal again and the node
    was never halted. No count reaches 2^53: the node is halted by name as unreadable."""
    f = Fleet(SupervisorConfig(warmup_s=10.0))
    f.parents = 0
    assert f.run(30, 20.0) == []
    real = f.sup.observe

    def flipped(m: NodeMetrics) -> list[Action]:
        if m.node_id == "n3":
            m = msgspec.structs.replace(
                m, orders=m.orders + 2**63, accepted=m.accepted + 2**63, fills=m.fills + 2**63
            )
        return real(m)

    f.sup.observe = flipped  # type: ignore[method-assign]
    fired = f.run(5, 20.0)
    assert [(a.rule, a.key) for a in fired] == [(Rule.UNREADABLE_METRICS, "n3")]
    assert "orders 9223372036854776" in fired[0].reason and "beyond 2^53" in fired[0].reason


def test_a_sawtooth_dipping_under_the_limit_once_a_window_is_halted() -> None:
    """A node trading for itself sends 2,000 orders/s for 0.2 s in every 1.2 s: 333/s on
    average, 16x its normal 20/s and 3x its limit. Its window dips under the limit once in
    each period, and each dip restarted the sustain: never halted, for ever. An episode now
    ends only after a full rate window under the limit; a single burst still passes."""
    f = Fleet(SupervisorConfig(), nodes=4)
    f.parents = 0
    assert f.run(40, 20.0) == []
    fired: list[Action] = []
    periods = 0
    while not fired and periods < 100:
        fired = f.run(0.2, {"n1": 2_000.0}) + f.run(1.0, {"n1": 0.0})
        periods += 1
    assert periods <= 3 and {a.key for a in fired} == {"n1"}
    assert Rule.BASELINE_ORDER_RATE in {a.rule for a in fired}  # (and its notional rate)
    g = Fleet(SupervisorConfig(), nodes=4)
    g.parents = 0
    assert g.run(40, 20.0) == []
    assert g.run(0.2, {"n1": 2_000.0}) + g.run(30, {"n1": 20.0}) == []  # one burst alone


def test_a_node_restarting_every_three_seconds_keeps_its_baselines_and_is_halted() -> None:
    """Already caught (kept as a test): a runaway at 8x its normal rate that restarts its
    process every 3 s (counters from 0, unarmed for its first 0.4 s) to shed what it
    learned. Baselines belong to the node id, not the process, and its counters go on
    across each restart: it is halted within the first 2 s, like one that never restarts."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(), clock)
    sent = dict.fromkeys(("n1", "n2", "n3", "n4"), 0)
    fired: list[tuple[float, Rule, str]] = []
    for k in range(1, 600):  # 60 s learning at 20/s, then n3 at 160/s
        clock.advance(TICK)
        for n in sent:
            runaway = n == "n3" and k > 300
            restart = runaway and (k - 300) % 15 == 1
            sent[n] = (0 if restart else sent[n]) + (32 if runaway else 4)
            armed = not (runaway and (k - 300) % 15 in (1, 2))
            c = sent[n]
            m = NodeMetrics(n, 0, c, c, 0, c, 0.0, 0.0, armed, 0, notional=c * 2e3)
            fired += [((k - 300) * TICK / S, a.rule, a.key) for a in sup.observe(m)]
    assert fired and {key for _, _, key in fired} == {"n3"}
    assert fired[0][0] <= 2.0 and Rule.BASELINE_ORDER_RATE in {r for _, r, _ in fired}


def test_one_node_ramping_from_its_learned_normal_is_halted_at_five_times_its_peers() -> None:
    """Already caught (kept as a test): after 2 minutes at 20/s, one node's rate doubles
    every 5 minutes while its peers stay. No window is 5x the one before, but its peers
    did not rise with it: the peer rule halts it at 5x their median (about 100/s)."""
    f = Fleet(SupervisorConfig(), nodes=4)
    f.parents = 0
    assert f.run(120, 20.0) == []
    fired: list[Action] = []
    t = 0.0
    while not fired and t < 3600:
        fired = f.tick({"n1": 20.0 * 2 ** (t / 300), "n2": 20.0, "n3": 20.0, "n4": 20.0})
        t += TICK / S
    assert {a.key for a in fired} == {"n1"} and Rule.ORDER_RATE in {a.rule for a in fired}
    assert 95 <= 20.0 * 2 ** (t / 300) <= 110, t


def test_an_agency_router_leaking_under_the_floor_for_good_is_halted_on_its_day() -> None:
    """An agency router leaks $9k of the firm's own flow a minute, under `principal_floor`
    ($10k) in every `principal_window_s`, for good: no window ever went over, so it was
    never halted. Its flow within the day is held to `principal_day_multiple` x the floor
    ($100k): halted by name once the leak sums to that (about 11 minutes). A node trading
    for itself with the same flow is not (its own flow is its business); a resumed router
    that leaks no more trades on, and one that leaks again is halted again."""
    f = Fleet(SupervisorConfig(), nodes=3)
    f.parents = {"n1": 100, "n2": 100, "n3": 0}  # n3 trades for itself
    leak = {"n2": 9_000.0 / 60, "n3": 9_000.0 / 60}
    fired: list[Action] = []
    t = 0.0
    while not fired and t < 3600:
        fired = f.tick(20.0, principal=leak)
        t += TICK / S
    assert [(a.rule, a.scope, a.key) for a in fired] == [(Rule.PRINCIPAL_DAY, Scope.NODE, "n2")]
    assert 660 <= t <= 680, t
    assert "agency router" in fired[0].reason and "limit 100,000 $ a day" in fired[0].reason
    assert f.sup.health()["n2"].measures["principal_notional"] < 10_000.0  # the window passed
    f.state["n2"] = int(TradingState.HALTED)  # the node applied it
    assert f.run(30, 20.0, principal={"n3": 150.0}) == []
    f.state["n2"] = 0  # a person resumed it: no more leak, it trades on
    assert f.run(60, 20.0, principal={"n3": 150.0}) == []
    again = f.run(5, 20.0, principal=leak)
    assert [(a.rule, a.key) for a in again] == [(Rule.PRINCIPAL_DAY, "n2")]


def test_one_node_climbing_in_exposure_at_a_flat_rate_is_made_reducing_by_name() -> None:
    """Eight nodes at $1M gross; n3's climbs at $200k/s while its order rate stays at 20/s
    (few large orders). Only the fleet's total was capped: the fleet went REDUCING at
    $50M, naming no node, with n3 at $43M. One node over `node_exposure_share` x the cap
    ($25M) goes REDUCING by name (it may unwind, never add), long before the fleet's total
    gets there."""
    feed = Feed()
    nodes = {f"n{i}": 20.0 for i in range(1, 9)}
    gross = dict.fromkeys(nodes, 1_000_000.0)
    fired: list[tuple[Rule, str]] = []
    t = 0.0
    while not fired and t < 600:
        gross["n3"] += 200_000.0 * TICK / S
        fired = feed.tick(nodes, gross=gross)
        t += TICK / S
    assert fired == [(Rule.NODE_GROSS_EXPOSURE, "n3")]
    assert 119 <= t <= 121, t
    action = feed.sup.actions[-1]
    assert action.scope is Scope.NODE and action.state is TradingState.REDUCING
    assert re.search(
        r"node n3 gross exposure 25,0\d\d,\d{3} over its cap 25,000,000", action.reason
    )


def test_one_counter_going_back_in_the_same_process_is_unreadable_not_a_restart() -> None:
    """n2's fills go back to 0 while its orders go on, from the same process: read as a
    restart of that one counter, it passed. Under the same `instance` a counter that went
    back is unreadable metrics and halts the node by name; the same drop of every counter
    under a new instance is a restart (nothing), and an older sender with no instance is
    judged as before."""

    def run(instances: tuple[str, str], all_counters: bool) -> list[Action]:
        clock = SimClock(10 * S)
        sup = Supervisor(SupervisorConfig(), clock)
        sent = dict.fromkeys(("n1", "n2", "n3"), 0)
        fired: list[Action] = []
        for k in range(1, 300):
            clock.advance(TICK)
            for n in sent:
                sent[n] += 4
                c = sent[n]
                fills, instance = c, instances[0]
                if n == "n2" and k > 200:
                    instance = instances[1]
                    fills = 4 * (k - 200)
                    c = fills if all_counters else c
                m = NodeMetrics(n, 0, c, c, 0, fills, 0.0, 0.0, True, 0, notional=c * 2e3,
                                instance=instance)  # fmt: skip
                fired += sup.observe(m)
        return fired

    fired = run(("p1", "p1"), False)
    assert [(a.rule, a.key) for a in fired] == [(Rule.UNREADABLE_METRICS, "n2")]
    assert "fills 4 < 800 before it from the same process" in fired[0].reason, fired[0].reason
    assert run(("p1", "p2"), True) == []  # a restart
    assert run(("", ""), False) == []  # an older sender: as before


def test_blocks_that_do_not_add_up_to_the_refusals_are_unreadable() -> None:
    """A node counts each refusal once, under its reason (`blocks`, summed = `rejected`).
    More blocks than refusals made the refusals less throttling negative: read as a restart,
    it passed, and throttling filed over the refusals hid a reject spike. Refusals filed
    again as throttling under the same process went back likewise. Each is unreadable
    metrics naming the fields; a truthful node throttled and refused, restarted or not, and
    an older sender with no `blocks` are never flagged."""
    Blocks = dict[str, int]
    Lie = Callable[[int, int, Blocks], tuple[int, Blocks]]

    def run(lie: Lie | None, *, restart: bool = False, start: int = 200) -> list[Action]:
        clock = SimClock(10 * S)
        sup = Supervisor(SupervisorConfig(reject_min_orders=20), clock)
        fired: list[Action] = []
        for k in range(1, 300):
            clock.advance(TICK)
            for n in ("n1", "n2", "n3"):
                j, instance = k, "p1"
                if restart and n == "n2" and k > 200:
                    j, instance = k - 200, "p2"
                # 8 orders a tick: 6 accepted, one throttled, one refused by a price collar
                blocks = {RejectReason.RATE_NODE.value: j, RejectReason.PRICE_COLLAR.value: j}
                rejected = 2 * j
                if n == "n2" and lie is not None and k > start:
                    rejected, blocks = lie(k, rejected, blocks)
                m = NodeMetrics(n, 0, 8 * j, 6 * j, rejected, 6 * j, 0.0, 0.0, True, 0,
                                blocks, notional=6e3 * j, instance=instance)  # fmt: skip
                fired += sup.observe(m)
        return fired

    assert run(None) == [] and run(None, restart=True) == []
    # throttling counted over the refusals: the refusals less throttling went negative
    over = run(lambda k, r, b: (r, {**b, "rate_node": r + 1}))
    assert [(a.rule, a.key) for a in over] == [(Rule.UNREADABLE_METRICS, "n2")]
    assert "blocks 604 (summed over reasons, throttling 403) > rejected 402" in over[0].reason
    # every refusal filed as throttling, the collar's count moved there too
    refiled = run(lambda k, r, b: (r, {"rate_node": r}))
    assert [(a.rule, a.key) for a in refiled] == [(Rule.UNREADABLE_METRICS, "n2")]
    assert "blocks['price_collar'] 0 < 200 before it from the same process" in refiled[0].reason
    # an older sender counting refusals with no reasons, and then filing them as throttling
    bare = run(lambda k, r, b: (r, {} if k < 250 else {"rate_node": r}), start=0)
    assert [(a.rule, a.key) for a in bare] == [(Rule.UNREADABLE_METRICS, "n2")]
    assert "rejected less throttling 0 < 498 before it" in bare[0].reason, bare[0].reason


def test_a_state_no_trading_state_names_is_unreadable_not_a_halt_in_force() -> None:
    """n3 runs away at 400 orders/s reporting `node_state` 7: read as "halted already"
    (7 >= HALTED), every action on it was held back as in force and it left the fleet's
    totals, so it ran on. A state no `TradingState` names is unreadable metrics, naming
    the field, and the node is halted; the same runaway reporting ACTIVE is halted too."""

    def run(state: int) -> list[Action]:
        clock = SimClock(10 * S)
        sup = Supervisor(SupervisorConfig(), clock)
        sent = dict.fromkeys(("n1", "n2", "n3"), 0)
        fired: list[Action] = []
        for k in range(1, 100):
            clock.advance(TICK)
            for n in sent:
                runaway = n == "n3" and k > 50
                sent[n] += 80 if runaway else 4
                c = sent[n]
                m = NodeMetrics(n, 0, c, c, 0, c, 0.0, 0.0, True, 0,
                                node_state=state if runaway else 0)  # fmt: skip
                fired += sup.observe(m)
        return fired

    lied = run(7)
    assert [(a.rule, a.key) for a in lied] == [(Rule.UNREADABLE_METRICS, "n3")]
    assert "node_state 7 is no trading state (0 ACTIVE, 1 REDUCING, 2 HALTED)" in lied[0].reason
    assert {(a.rule, a.key) for a in run(0)} >= {(Rule.ORDER_RATE, "n3")}


def test_more_principal_than_notional_is_unreadable() -> None:
    """The firm's own executed notional is part of the total (`notional`): a node reporting
    more of it than the total contradicts itself, and the principal and notional rules
    judged a wrong number. It is unreadable metrics naming both fields; a node whose
    executed flow is all its own (the two equal) is read as before."""

    def run(extra: float) -> list[Action]:
        clock = SimClock(10 * S)
        sup = Supervisor(SupervisorConfig(), clock)
        fired: list[Action] = []
        for k in range(1, 60):
            clock.advance(TICK)
            for n in ("n1", "n2", "n3"):
                c = 4 * k
                own = c * 2e3 if n == "n2" else 0.0
                m = NodeMetrics(n, 0, c, c, 0, c, 0.0, 0.0, True, 0, notional=c * 2e3,
                                principal_notional=own + (extra if k > 40 else 0.0))  # fmt: skip
                fired += sup.observe(m)
        return fired

    assert run(0.0) == []
    lied = run(1_000.0)
    assert [(a.rule, a.key) for a in lied] == [(Rule.UNREADABLE_METRICS, "n2")]
    assert "principal_notional 329000.0 > notional 328000.0" in lied[0].reason, lied[0].reason


@pytest.mark.parametrize("field", ["node_state", "fleet_state"])
def test_a_node_reporting_halted_while_its_accepted_orders_grow_is_unreadable(
    field: str,
) -> None:
    """n3 is halted, then runs away at 400 accepted orders/s while every sample still
    reports HALTED (its own state, or the fleet's): every action on it was held back as in
    force and it was left out of the fleet's totals, so nothing ever judged it. A HALTED
    node accepts no new order: growth in a second interval of one run of HALTED samples from
    the same process is unreadable metrics, and its halt is issued though it claims one.
    An honest node resumed and halted again between two samples (once in a run), one
    resumed and halted again later, and one in REDUCING (reducing orders pass) are not."""
    halted, reducing = int(TradingState.HALTED), int(TradingState.REDUCING)

    def run(
        states: Callable[[int], int], grow: Callable[[int], int], lowers: bool = False
    ) -> list[Action]:
        clock = SimClock(10 * S)
        sup = Supervisor(SupervisorConfig(), clock)
        acc = dict.fromkeys(("n1", "n2", "n3"), 0)
        rej = dict.fromkeys(acc, 0)
        low = 0
        fired: list[Action] = []
        for k in range(1, 100):
            clock.advance(TICK)
            for n in acc:
                state = states(k) if n == "n3" else 0
                add = grow(k) if n == "n3" else 4
                if state == halted and add == 0:
                    rej[n] += 4  # the Guard refuses what it is sent
                if n == "n3" and state == halted and lowers:
                    low += add  # replaces that only lower what is working
                acc[n] += add
                a, r = acc[n], rej[n]
                m = NodeMetrics(n, 0, a + r, a, r, a, 0.0, 0.0, True, 0,
                                {RejectReason.HALTED.value: r} if r else {}, notional=a * 2e3,
                                instance="p1", lowered=low if n == "n3" else 0)  # fmt: skip
                fired += sup.observe(msgspec.structs.replace(m, **{field: state}))
        return fired

    lied = run(lambda k: halted if k > 40 else 0, lambda k: 80 if k > 50 else (0 if k > 40 else 4))
    assert [(a.rule, a.scope, a.key, a.state) for a in lied] == [
        (Rule.UNREADABLE_METRICS, Scope.NODE, "n3", TradingState.HALTED)
    ]
    assert f"accepted less lowered grew in 2 intervals (now {40 * 4 + 2 * 80})" in lied[0].reason
    # a halted Guard still accepts replaces that only lower what is working: no lie
    amends = run(lambda k: halted if k > 40 else 0, lambda k: 3 if k > 40 else 4, lowers=True)
    assert amends == []
    assert f"{field} 2" in lied[0].reason, lied[0].reason
    # resumed, traded and halted again between two samples: one interval, then it stays
    once = run(lambda k: halted if k > 40 else 0, lambda k: 40 if k == 60 else (0 if k > 40 else 4))
    assert once == []
    # the same twice, with a sample showing it ACTIVE between: each run has one interval
    twice = run(
        lambda k: 0 if k <= 40 or 60 < k <= 70 else halted,
        lambda k: 40 if k in (50, 80) else (4 if k <= 40 or 60 < k <= 70 else 0),
    )
    assert twice == []
    # REDUCING lets reducing orders through: their growth is no contradiction
    assert run(lambda k: reducing if k > 40 else 0, lambda k: 4) == []


def _leak_until_halted(
    f: Fleet, leak: dict[str, float], limit_s: float
) -> tuple[list[Action], float]:
    fired: list[Action] = []
    t = 0.0
    while not fired and t < limit_s:
        fired = f.tick(20.0, principal=leak)
        t += TICK / S
    return fired, t


@pytest.mark.parametrize("node_restarted", [False, True])
def test_a_restarted_supervisor_goes_on_counting_an_agency_routers_day(
    node_restarted: bool,
) -> None:
    """The day's history was held in memory only: a supervisor restarted after an agency
    router had leaked $60k of its $100k day gave it a fresh day. Stored and read back, the
    router is halted when the day's sum gets there (about 11 minutes from the start), whether
    its own process went on or restarted (counting from 0) while the supervisor was down."""
    f = Fleet(SupervisorConfig(), nodes=3)
    leak = {"n2": 9_000.0 / 60}
    assert f.run(400, 20.0, principal=leak) == []
    stored = f.sup.day_records()
    # every node's learned baselines are kept (`DayRecord.baselines`), n2's day with them
    assert set(stored) == {"supervisor_day.n1", "supervisor_day.n2", "supervisor_day.n3"}
    assert msgspec.json.decode(stored["supervisor_day.n1"])["baselines"]["order_rate"]
    assert f.sup.day_records() == {}  # handed out once per change
    f.sup = Supervisor(SupervisorConfig(), f.clock)  # the restart, the nodes going on
    assert f.sup.restore({**stored, "starts.n1": b"not a day record"}) == []
    if node_restarted:
        f.acc["n2"][2] = 0.0  # its principal flow counts from 0 again
        f.acc["n2"][1] = 0.0
    fired, t = _leak_until_halted(f, leak, 3600)
    assert [(a.rule, a.key) for a in fired] == [(Rule.PRINCIPAL_DAY, "n2")]
    assert 660 <= 400 + t <= 690, t


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"{not json", "malformed"),
        (b'{"node_id": "n2"}', "missing required field"),
        (
            b'{"node_id": "n1", "at_ns": 1, "instance": "", "raw": 0, "value": 0, "points": []}',
            "node_id 'n1' is not the key's node",
        ),
        (
            b'{"node_id": "n2", "at_ns": 1, "instance": "", "raw": 0, "value": 5,'
            b' "points": [[1, 9], [2, 1]]}',
            "above the flow",
        ),
    ],
)
def test_a_stored_day_history_that_cannot_be_read_halts_its_node(
    value: bytes, problem: str
) -> None:
    """A restarted supervisor that cannot read a node's day cannot vouch for what it booked:
    the node is halted at once, naming the key, and its history is stored afresh."""
    f = Fleet(SupervisorConfig(), nodes=3)
    fired = f.sup.restore({"supervisor_day.n2": value})
    assert [(a.rule, a.scope, a.key, a.state) for a in fired] == [
        (Rule.PRINCIPAL_DAY, Scope.NODE, "n2", TradingState.HALTED)
    ]
    assert "supervisor_day.n2" in fired[0].reason and problem in fired[0].reason
    f.state["n2"] = int(TradingState.HALTED)  # the node applied it: it accepts no order
    assert f.run(2, {"n1": 20.0, "n3": 20.0}) == []
    assert set(f.sup.day_records()) == {"supervisor_day.n2"}


def _throttled_feed(offered: Callable[[float], tuple[float, float]], seconds: int) -> list[Action]:
    """Three nodes at 20 accepted orders/s; n1 offers `offered(t)` = (orders/s, of them
    refused by its node rate limit/s), every refusal filed as throttling."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(), clock)
    acc = {n: [0.0, 0.0] for n in ("n1", "n2", "n3")}
    fired: list[Action] = []
    for k in range(seconds * S // TICK):
        clock.advance(TICK)
        for n, a in acc.items():
            rate, throttled = offered(k * TICK / S) if n == "n1" else (20.0, 0.0)
            a[0] += rate * TICK / S
            a[1] += throttled * TICK / S
            o, r = int(a[0]), int(a[1])
            m = NodeMetrics(
                n, 0, o, o - r, r, o - r, 0.0, 0.0, True, 0, {"rate_node": r} if r else {}
            )
            fired += sup.observe(m)
    return fired


def test_a_node_whose_refusals_are_all_throttling_from_its_first_interval_is_halted() -> None:
    """n1 offers 95 orders/s from its first second, 75 of them refused by its rate limit:
    under every rate rule's limit (5x its 20/s peers, 5x its learned 20/s accepted), and
    its refusals, all throttling, were left out of the reject spike: 79% of what it sent
    refused, for good, and nothing judged it. Throttling counts once it has held over
    `reject_ratio` for `count_window_s`; a node rate limited in a 30-s burst is not halted."""
    fired = _throttled_feed(lambda t: (95.0, 75.0), 120)
    assert [(a.rule, a.key) for a in fired] == [(Rule.REJECT_SPIKE, "n1")]
    assert "throttling included" in fired[0].reason
    assert _throttled_feed(lambda t: (95.0, 75.0) if 40 <= t < 70 else (20.0, 0.0), 180) == []
    # dipping under the ratio for a moment in every window does not restart the count
    dips = _throttled_feed(lambda t: (20.0, 0.0) if t % 5 < 1.2 else (95.0, 75.0), 120)
    assert [(a.rule, a.key) for a in dips] == [(Rule.REJECT_SPIKE, "n1")]


def test_a_node_without_an_instance_claiming_halted_while_accepting_is_unreadable() -> None:
    """A sender with no `instance` (an older one, or one leaving it out) reporting HALTED while
    it accepts 400 orders/s: every action on it was held back as in force and it was left out
    of the fleet's totals, because the claim was checked only under an instance. Its samples
    are read as one process's: growth in a second interval of the HALTED run is unreadable."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(), clock)
    acc = dict.fromkeys(("n1", "n2", "n3"), 0)
    fired: list[Action] = []
    for k in range(1, 100):
        clock.advance(TICK)
        for n in acc:
            lying = n == "n3" and k > 40
            acc[n] += 80 if lying else 4
            a = acc[n]
            m = NodeMetrics(n, 0, a, a, 0, a, 0.0, 0.0, True, 0, notional=a * 2e3,
                            node_state=int(TradingState.HALTED) if lying else 0)  # fmt: skip
            fired += sup.observe(m)
    assert [(a.rule, a.key) for a in fired] == [(Rule.UNREADABLE_METRICS, "n3")]


def test_a_node_restarted_under_a_new_instance_hides_nothing_it_booked_before_its_sample() -> None:
    """An agency router leaks $9k of the firm's own (under the $10k floor), restarts, and its
    new process books $9.5k more before its first sample: $18.5k within a minute. Only a
    counter that went back was read as a restart, so the new count (above the old one) read
    as $0.5k more and nothing halted. A new `instance` counts from 0 whatever it reports:
    halted at that sample, like the same router that did not restart."""
    halted: dict[str, int] = {}
    for restarts in (False, True):
        clock = SimClock(10 * S)
        sup = Supervisor(SupervisorConfig(principal_floor=10_000.0), clock)
        cum = {n: [0.0, 0.0] for n in ("n1", "n2", "n3")}  # orders, principal
        instance = dict.fromkeys(cum, "first")
        for k in range(1, 200):
            clock.advance(TICK)
            for n, c in cum.items():
                c[0] += 4
                if n == "n2" and 100 <= k < 109:
                    c[1] += 1_000.0  # $9k, under the floor
                if n == "n2" and k == 110:
                    if restarts:  # a new process: 400 orders and $9.5k before its first sample
                        c[0], c[1], instance[n] = 400.0, 9_500.0, "second"
                    else:
                        c[1] += 9_500.0
                sent = int(c[0])
                m = NodeMetrics(n, 0, sent, sent, 0, sent, 0.0, 0.0, True, 0,
                                notional=c[0] * 2e3 + c[1], principal_notional=c[1], parents=50,
                                instance=instance[n])  # fmt: skip
                for a in sup.observe(m):
                    assert (a.rule, a.key) == (Rule.PRINCIPAL_FLOW, "n2"), a
                    assert "18,500 $" in a.reason, a.reason
                    halted[f"{restarts}"] = k
    assert halted == {"False": 110, "True": 110}


@pytest.mark.parametrize("nodes", [2, 4])
def test_an_agency_router_working_a_big_parent_never_halts_a_small_fleet_with_it(
    nodes: int,
) -> None:
    """An agency router working a customer's big parent at 400 orders/s (20x its normal,
    every child within the parent, none refused) shares a small fleet with nodes trading
    for themselves. Its own rate rules let it be (`customers_only`), but its rate stayed in
    the fleet's total, over the fleet's limit: the whole fleet was halted. The fleet's
    total leaves it out as it does a node over its own limit; the firm nodes running away
    are still halted, each by name."""
    f = Fleet(SupervisorConfig(warmup_s=10.0), nodes=nodes)
    f.parents = {n: (100 if n == "n1" else 0) for n in f.nodes}
    assert f.run(20, 20.0) == []
    assert f.run(5, {n: (400.0 if n == "n1" else 20.0) for n in f.nodes}) == []
    assert f.sup.health()["n1"].customers_only
    fired = f.run(3, {n: 400.0 for n in f.nodes})
    assert {(a.rule, a.scope, a.key) for a in fired if a.rule is Rule.BASELINE_ORDER_RATE} == {
        (Rule.BASELINE_ORDER_RATE, Scope.NODE, n) for n in f.nodes if n != "n1"
    }
    assert all(a.scope is Scope.NODE and a.key != "n1" for a in fired), fired


@pytest.mark.parametrize("reason", ["halted", "reducing_only"])
def test_orders_blocked_by_a_stopped_scope_are_no_reject_spike(reason: str) -> None:
    """A strategy's kill blocks every order a node still sends in it: the kill doing its
    job, not a misbehaving node. Counted as a reject spike (at once, or sustained over
    `count_window_s`), the supervisor halted each such node on top (one more two-person
    resume per node)."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(reject_min_orders=20, count_window_s=5.0), clock)
    fired: list[Rule] = []
    for k in range(1, 40):
        clock.advance(TICK)
        for n in ("n1", "n2", "n3"):
            orders, rejected = 100 * k, (90 * k if n == "n1" else 0)
            m = NodeMetrics(
                n, 0, orders, orders - rejected, rejected, 0, 0.0, 0.0, True, 0,
                {reason: rejected},
            )  # fmt: skip
            fired += [a.rule for a in sup.observe(m)]
    assert Rule.REJECT_SPIKE not in fired


def _ramp_feed(
    version: Callable[[float], str], trimmed: Callable[[float], bool], seconds: int
) -> list[Action]:
    """Three nodes offering 100 orders/s under limits `version(t)` (`v1@10%`: a resume
    ramp's stage); while `trimmed(t)`, 60/s of each node's orders are refused by the
    gross exposure cap and 20/s by its rate limit."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(), clock)
    acc = {n: [0.0, 0.0, 0.0] for n in ("n1", "n2", "n3")}  # orders, turnover, rate refusals
    fired: list[Action] = []
    for k in range(seconds * S // TICK):
        clock.advance(TICK)
        t = k * TICK / S
        for n, a in acc.items():
            a[0] += 100.0 * TICK / S
            a[1] += (60.0 if trimmed(t) else 0.0) * TICK / S
            a[2] += (20.0 if trimmed(t) else 0.0) * TICK / S
            o, turnover, rate = int(a[0]), int(a[1]), int(a[2])
            r = turnover + rate
            blocks = {"max_gross_exposure": turnover, "rate_node": rate} if r else {}
            m = NodeMetrics(n, 0, o, o - r, r, o - r, 0.0, 0.0, True, 0, blocks,
                            limits_version=version(t), instance="i1")  # fmt: skip
            fired += sup.observe(m)
    return fired


def test_a_ramp_stage_trimming_a_normal_flow_is_no_reject_spike() -> None:
    """A resume ramp holds the fleet at 10% of its limits for minutes: a flow the stage's
    exposure cap (and its rate limit) trimmed had its refusals read as a reject spike, every
    node halted and the ramp tripped at its first stage, so the ramp could never finish. A
    stage's trimming is the ramp's to judge (its spike rule); the same refusals at full
    limits are a spike, as before."""

    def stages(t: float) -> str:
        return "v1@10%" if t < 40 else "v1@50%" if t < 80 else "v1"

    assert _ramp_feed(lambda t: "v1@10%", lambda t: True, 150) == []
    # through the stages to full limits: what the stages refused is no spike afterwards
    assert _ramp_feed(stages, lambda t: t < 80, 150) == []
    # the same refusals at full limits: every node halted as rejecting
    fired = _ramp_feed(lambda t: "v1", lambda t: True, 30)
    assert {(a.rule, a.key) for a in fired} == {(Rule.REJECT_SPIKE, n) for n in ("n1", "n2", "n3")}
    # and at full limits after the ramp, refusing as during it: halted again
    fired = _ramp_feed(stages, lambda t: True, 150)
    assert {(a.rule, a.key) for a in fired} == {(Rule.REJECT_SPIKE, n) for n in ("n1", "n2", "n3")}


def test_a_flow_just_over_its_turnover_cap_is_throttled_not_halted() -> None:
    """`knightwatch up`'s default fleet: 20 orders/s of $10k against a $10M rolling minute.
    Each minute it is accepted for 50 s and then refused for 10 s, until the first orders
    age out of the window: every node was halted as a reject spike 50 s after it started.
    The turnover cap throttles, as the rate limits do; held over `reject_ratio` for
    `count_window_s` on end, it is still halted (throttling included)."""
    fired = _throttled_feed(lambda t: (20.0, 0.0) if t % 60 < 50 else (20.0, 20.0), 200)
    assert fired == []
    # (the feed files its refusals under rate_node: the same, filed under max_turnover)
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(), clock)
    acc = {n: [0.0, 0.0] for n in ("n1", "n2", "n3")}
    halted: list[Action] = []
    for k in range(200 * S // TICK):
        clock.advance(TICK)
        t = k * TICK / S
        for n, a in acc.items():
            capped = t % 60 >= 50 if t < 100 else n == "n1"  # then n1 at its cap for good
            a[0] += 20.0 * TICK / S
            a[1] += (20.0 if capped else 0.0) * TICK / S
            o, r = int(a[0]), int(a[1])
            blocks = {"max_turnover": r} if r else {}
            m = NodeMetrics(n, 0, o, o - r, r, o - r, 0.0, 0.0, True, 0, blocks)
            halted += sup.observe(m)
            if n == "n1" and t < 100:
                assert halted == [], t
    assert [(a.rule, a.key) for a in halted] == [(Rule.REJECT_SPIKE, "n1")]
    assert "throttling included" in halted[0].reason


def test_a_ramp_stages_trimmed_flow_is_not_learned_as_the_nodes_normal() -> None:
    """Nodes trading 20 orders/s for themselves are killed and resumed through a ramp: 2/s
    accepted for five minutes at its 10% stage. Learned, that became each node's and the
    fleet's baseline, and the normal 20/s at the next stage was 5x it: every node halted
    and the ramp tripped at its second stage. A stage's flow is not learned; a runaway at
    the next stage is still judged against what was learned before."""
    f = Fleet(SupervisorConfig(warmup_s=30.0))
    f.parents = 0
    assert f.run(60, 20.0) == []
    f.version = "v1@10%"
    assert f.run(300, 1.0) == []
    f.version = "v1@50%"
    assert f.run(60, 22.0) == []
    f.version = "v1"
    assert f.run(30, 22.0) == []
    fired = f.run(5, {**dict.fromkeys(f.nodes, 20.0), "n3": 150.0})
    assert (Rule.BASELINE_ORDER_RATE, "n3") in {(a.rule, a.key) for a in fired}


def test_the_first_sample_learned_after_a_halt_and_a_ramp_weighs_one_interval() -> None:
    """A fleet trading 20 orders/s for itself is killed for a minute and ramped back over
    ten minutes (not learned meanwhile); the ramp's 50% stage ends with its turnover window
    full, no order accepted for ten seconds. The first sample learned at full limits
    weighed the whole eleven minutes since the last: 0 orders/s became each node's
    normal, and its 20/s tripped the ramp at its last stage."""
    f = Fleet(SupervisorConfig(), nodes=3)
    f.parents = 0
    assert f.run(120, 20.0) == []
    f.state = dict.fromkeys(f.nodes, int(TradingState.HALTED))
    assert f.run(65, 20.0) == []
    f.state = dict.fromkeys(f.nodes, 0)
    f.version = "v1@10%"
    assert f.run(300, 2.0) == []
    f.version = "v1@50%"
    assert f.run(290, 10.0) == []
    assert f.run(10, 0.0) == []  # its turnover window full
    f.version = "v1"
    assert f.run(60, 22.0) == []  # (its normal flow, a little over the floor's 20/s)
    fired = f.run(5, {**dict.fromkeys(f.nodes, 22.0), "n2": 150.0})
    assert (Rule.BASELINE_ORDER_RATE, "n2") in {(a.rule, a.key) for a in fired}
