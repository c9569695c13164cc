"""The supervisor beyond the 2012 scenario: runaways that are not Knight's exact shape.

An agency router's runaway need not leak principal flow or trip a refusal: a loop placing
children within its customers' parents that never fill (or cancels and replaces them) is
still a runaway, and the rules that exist for it (messages per execution, children per
parent) must judge it, however the node's rate rules let a big parent be.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from knightwatch.clock import SimClock
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import Action, Rule, Supervisor, SupervisorConfig
from knightwatch.control.fleet.supervisor_service import SupervisorService
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.wire import NodeMetrics
from knightwatch.state import Scope, TradingState

from ...identities import switch
from ..fleet_fixtures import make_node
from .test_supervisor_service import _fleet

S = 1_000_000_000
TICK = S // 5


def _agency_fleet(
    runaway: str, rate: float, fill_share: float, *, nodes: int = 4, seconds: float = 20.0
) -> tuple[list[Action], Supervisor]:
    """Agency routers (100 customer parents each) at 20 orders/s, every order filled; after
    30 s `runaway` sends `rate` children a second within its parents, `fill_share` of them
    filled, none refused (the Guard finds each within its parent)."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(warmup_s=10.0), clock)
    names = [f"n{i}" for i in range(1, nodes + 1)]
    acc = {n: [0.0, 0.0] for n in names}
    fired: list[Action] = []
    for k in range(round((30 + seconds) * S / TICK)):
        clock.advance(TICK)
        for n in names:
            running = n == runaway and k >= 150
            r = rate if running else 20.0
            acc[n][0] += r * TICK / S
            acc[n][1] += r * TICK / S * (fill_share if running else 1.0)
            orders, fills = int(acc[n][0]), int(acc[n][1])
            m = NodeMetrics(
                n, 0, orders, orders, 0, fills, 0.0, 0.0, True, 0,
                notional=fills * 2_000.0, parents=100,
            )  # fmt: skip
            fired += sup.observe(m)
    return fired, sup


@pytest.mark.parametrize(
    ("runaway", "rate", "fill_share"),
    [("n1", 2_000.0, 0.0), ("n3", 400.0, 0.0), ("n2", 1_000.0, 0.01), ("n4", 200.0, 0.02)],
)
def test_an_agency_router_placing_children_that_never_fill_is_halted(
    runaway: str, rate: float, fill_share: float
) -> None:
    """Every child within a customer's parent and none refused made the node `customers_only`,
    which let it off every baselined rule but principal flow: at 100x its rate with no fill
    for a minute and more, nothing fired. Only the rates are let off now; its messages per
    execution halts it by name, and no other node."""
    fired, sup = _agency_fleet(runaway, rate, fill_share)
    assert sup.health()[runaway].customers_only  # still the case the rate rules let be
    assert fired, "a runaway of children that never fill passed every rule"
    assert {(a.scope, a.key) for a in fired} == {(Scope.NODE, runaway)}
    first = fired[0]
    assert first.rule is Rule.BASELINE_MESSAGES_PER_EXECUTION, first
    assert f"node {runaway} messages_per_execution" in first.reason


def test_a_big_parent_that_fills_is_still_no_anomaly() -> None:
    """The case the exemption is for: 20x the rate, every child within a parent and filled."""
    fired, sup = _agency_fleet("n2", 400.0, 1.0, seconds=3.0)
    assert sup.health()["n2"].customers_only
    assert fired == []


# ------------------------------------------------------------------ a node that stops


async def _silent_n3(live_lease: bool, leaves: bool = False) -> list[tuple[Rule, str, bool]]:
    """n1..n3 report; n3 then crashes (no metrics, no confirmation) for 20 s of the clock.
    With `live_lease`, a membership record still shows n3 holding a lease (its heartbeats
    go on from a process whose metrics and command loop are stuck). With `leaves`, n3 is
    stopped as a person stops a node (it marks itself as left)."""
    clock = SimClock(10 * S)
    nodes, planes, service = await _fleet(3, clock, confirm_timeout_s=0.02, sweep_s=0.005)
    sup_plane = service.plane
    status = nodes[2].status()
    for _ in range(3):
        clock.advance(S // 2)
        for node in nodes:
            await node.heartbeat_once()
            await node.publish_once()
    if leaves:
        await nodes[2].stop()
    await planes[2].close()  # n3's process is gone (or stuck): it never confirms
    try:
        for _ in range(40):  # 20 s
            clock.advance(S // 2)
            if live_lease:
                now = clock.time_ns()
                await sup_plane.put_member(
                    msgspec.structs.replace(status, seen_ns=now, lease_expires_ns=now + S)
                )
            for node in nodes[:2]:
                await node.heartbeat_once()
                await node.publish_once()
            await asyncio.sleep(0.03)  # sweeps run, kills time out
        await service.stop()
    finally:
        for node in nodes[:2]:
            await node.stop()
    return [(a.rule, a.key, r.ok) for a, r in service.results]


@pytest.mark.parametrize("leaves", [False, True], ids=["crashed", "stopped"])
async def test_a_dead_node_is_halted_once_not_paged_every_sweep_for_ever(leaves: bool) -> None:
    """n3 died (or was stopped, and marked itself as left): its halt is stored and its lease
    has run out (it stopped trading by itself and reads the halt when it comes back), but it
    can never confirm. Every unconfirmed kill re-armed its rule, so the supervisor killed
    and paged it again at every sweep, for as long as it stayed away (Knight's 97 unread
    emails); a node that left had no lease at all as the kill switch told it. A kill that is
    stored and whose unconfirmed nodes' leases have expired took effect: one halt, one page."""
    results = await _silent_n3(live_lease=False, leaves=leaves)
    assert results == [(Rule.STALE_METRICS, "n3", False)], results


async def test_a_silent_node_still_holding_its_lease_is_killed_again_until_it_confirms() -> None:
    """The same silence while n3's lease is still live: it may be trading. Its kill is
    retried at every judgement (the fail-closed side of the rule above)."""
    results = await _silent_n3(live_lease=True)
    assert {r[:2] for r in results} == {(Rule.STALE_METRICS, "n3")}
    assert len(results) >= 5, results


async def test_a_node_that_joins_later_and_never_reports_is_halted() -> None:
    """n3 takes its lease after the supervisor started, and its metrics never arrive (stuck,
    or refused by the server) while its heartbeats keep the lease: only the members holding
    a lease at the start were expected, so n3 traded unsupervised for good. Members are
    read again while the service runs: n3 is halted as silent `stale_after_s` later."""
    clock = SimClock(10 * S)
    fabric = MemoryFabric()
    nodes: list[NodeRuntime] = []

    async def join(name: str) -> NodeRuntime:
        plane = MemoryControlPlane(fabric)
        await plane.connect()
        node = make_node(name, plane, clock)
        await node.start()
        nodes.append(node)
        return node

    for name in ("n1", "n2"):
        await join(name)
    sup_plane = MemoryControlPlane(fabric)
    await sup_plane.connect()
    service = SupervisorService(
        sup_plane,
        Supervisor(SupervisorConfig(stale_after_s=2.0), clock),
        switch(sup_plane, clock, "supervisor"),
        Pager(),
        sweep_s=0.005,
        expect_s=0.005,
        concurrent=True,
    )
    await service.start()
    try:
        await join("n3")
        next(t for t in asyncio.all_tasks() if t.get_name() == "n3-metrics").cancel()
        for _ in range(12):  # 6 s
            clock.advance(S // 2)
            for node in nodes:
                await node.heartbeat_once()
            for node in nodes[:2]:
                await node.publish_once()
            await asyncio.sleep(0.03)  # sweeps and membership reads run
        await service.stop()
        assert [(a.rule, a.key, r.ok) for a, r in service.results] == [
            (Rule.STALE_METRICS, "n3", True)
        ]
        assert nodes[2].guard.trading_state(Scope.NODE, "n3") is TradingState.HALTED
    finally:
        for node in nodes:
            await node.stop()


@pytest.mark.parametrize(("every", "gap"), [(3.0, 1.5), (4.5, 2.5), (2.0, 1.1)])
def test_a_node_gone_silent_is_halted_though_the_supervisor_keeps_stalling(
    every: float, gap: float
) -> None:
    """n2 stops reporting while n1 goes on; the supervisor's own loop stalls for `gap` s
    every `every` s (a starved host). Silence was counted from the end of each stall, so no
    node was ever silent 5 s by that count: n2 traded unsupervised for good. Only the
    stalls are left out of its silence: it is halted, and n1, still reporting, is not."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(stale_after_s=5.0), clock)
    for n in ("n1", "n2"):
        sup.observe(NodeMetrics(n, 0, 0, 0, 0, 0, 0.0, 0.0, True, 0, instance=n))
    fired: list[Action] = []
    t = 0.0
    while t < 60.0 and not fired:
        clock.advance(round((every - gap) * S))
        fired += sup.observe(NodeMetrics("n1", 0, 0, 0, 0, 0, 0.0, 0.0, True, 0, instance="n1"))
        clock.advance(round(gap * S))  # the supervisor's loop does not run
        sup.missed(gap)
        fired += sup.sweep()
        fired += sup.observe(NodeMetrics("n1", 0, 0, 0, 0, 0, 0.0, 0.0, True, 0, instance="n1"))
        t += every
    assert [(a.rule, a.key) for a in fired] == [(Rule.STALE_METRICS, "n2")]
    assert t <= 5.0 * every / (every - gap) + every  # silent 5 s outside the stalls


def test_a_stall_alone_halts_no_one() -> None:
    """The case `missed` is for: the supervisor stalls 8 s (past the 5 s limit) while every
    node reports; the first sample heard after it halts none of the peers queued behind it,
    and a node that stays silent is halted once silent 5 s outside the stall."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(stale_after_s=5.0), clock)
    for n in ("n1", "n2", "n3"):
        sup.observe(NodeMetrics(n, 0, 0, 0, 0, 0, 0.0, 0.0, True, 0, instance=n))
    clock.advance(8 * S)
    sup.missed(8.0)
    assert sup.sweep() == []
    assert sup.observe(NodeMetrics("n1", 0, 0, 0, 0, 0, 0.0, 0.0, True, 0, instance="n1")) == []
    assert sup.observe(NodeMetrics("n2", 0, 0, 0, 0, 0, 0.0, 0.0, True, 0, instance="n2")) == []
    clock.advance(4 * S)
    assert sup.sweep() == []  # n3: 4 s silent outside the stall
    for n in ("n1", "n2"):
        assert sup.observe(NodeMetrics(n, 0, 0, 0, 0, 0, 0.0, 0.0, True, 0, instance=n)) == []
    clock.advance(int(1.2 * S))
    assert [(a.rule, a.key) for a in sup.sweep()] == [(Rule.STALE_METRICS, "n3")]


def _basket(refused_share: float, reason: str) -> list[Action]:
    """Agency routers (customer parents only) at 20 children/s, every child filled; at 60 s
    n1 works a basket at the open, 2,000 children/s for 3 s within parents registered with
    it (one per 20 children), `refused_share` of what it offers refused for `reason`."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(), clock)
    names = ("n1", "n2", "n3", "n4")
    acc = dict.fromkeys(names, 0.0)
    ref = dict.fromkeys(names, 0.0)
    fired: list[Action] = []
    for k in range(round(66 * S / TICK)):
        clock.advance(TICK)
        for n in names:
            basket = n == "n1" and 300 <= k < 315
            acc[n] += (2_000.0 if basket else 20.0) * TICK / S
            ref[n] += 2_000.0 * TICK / S * refused_share if basket else 0.0
            done, no = int(acc[n]), int(ref[n])
            m = NodeMetrics(
                n, 0, done + no, done, no, done, 0.0, 0.0, True, 0,
                blocks={reason: no} if no else {}, notional=done * 2_000.0,
                parents=100 + max(0, done - 1_200) // 20, instance=n,
            )  # fmt: skip
            fired += sup.observe(m)
    return fired


@pytest.mark.parametrize("reason", ["max_order_notional", "max_order_qty", "price_collar"])
def test_a_basket_with_a_child_refused_now_and_then_is_still_the_customers(reason: str) -> None:
    """One child in 400 refused by a per-order cap (5 a second of 2,000) made the router no
    longer `customers_only`: halted at the open as a 100x runaway, its customers' baskets
    left unfilled. A share of at most `CUSTOMER_REFUSALS` is the Guard trimming the basket."""
    assert _basket(1 / 400, reason) == []


@pytest.mark.parametrize(
    ("share", "reason"), [(0.05, "parent_qty_exceeded"), (0.3, "max_position")]
)
def test_a_basket_mostly_refused_is_still_judged_on_its_rate(share: float, reason: str) -> None:
    """Over `CUSTOMER_REFUSALS` of the children refused (sent beyond their parents, say): the
    rate rules judge it as before, and it is halted by name within the basket."""
    fired = _basket(share, reason)
    assert fired, f"a basket refused at {share:.0%} passed every rule"
    assert {a.key for a in fired} == {"n1"}
