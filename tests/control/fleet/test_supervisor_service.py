"""SupervisorService on MemoryControlPlane: concurrent actions, retried kills, silent nodes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from knightwatch.clock import Clock, SimClock, SystemClock
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import Rule, Supervisor, SupervisorConfig
from knightwatch.control.fleet.supervisor_service import SupervisorService
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import NodeMetrics
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.state import Scope, TradingState

from ...identities import signer, switch, trust
from ..fleet_fixtures import POLICY, OrderIds, make_node

S = 1_000_000_000


async def _fleet(
    n: int, clock: Clock, stale_after_s: float = 2.0, **service_kw: float
) -> tuple[list[NodeRuntime], list[MemoryControlPlane], SupervisorService]:
    fabric = MemoryFabric()
    nodes, planes = [], []
    for i in range(1, n + 1):
        plane = MemoryControlPlane(fabric)
        await plane.connect()
        node = make_node(f"n{i}", plane, clock)
        await node.start()
        nodes.append(node)
        planes.append(plane)
    sup_plane = MemoryControlPlane(fabric)
    await sup_plane.connect()
    service = SupervisorService(
        sup_plane,
        Supervisor(SupervisorConfig(stale_after_s=stale_after_s), clock),
        switch(sup_plane, clock, "supervisor"),
        Pager(),
        concurrent=True,
        **service_kw,
    )
    await service.start()
    return nodes, planes, service


def _refuse(node: NodeRuntime) -> None:
    node.report_error("flag 'powerpeg' set on a binary that does not know it")
    node.guard.disarm("test")


async def test_two_runaways_are_halted_without_waiting_on_each_other() -> None:
    clock = SimClock(10 * S)
    nodes, planes, service = await _fleet(4, clock, confirm_timeout_s=0.4)
    n2, n3 = nodes[1], nodes[2]
    _refuse(n2)
    _refuse(n3)
    await n2.publish_once()
    await planes[1].close()  # n2 still holds a lease but will never confirm its halt
    await n3.publish_once()
    assert service.inflight == 2  # neither publish waited on a kill
    await service.drain()
    by_key = {a.key: r for a, r in service.results}
    assert by_key.keys() == {"n2", "n3"}
    assert by_key["n3"].ok and by_key["n3"].latencies_ms["n3"] < 400
    assert by_key["n2"].missing == ["n2"] and not by_key["n2"].ok
    assert [a.key for a, _ in service.results] == ["n3", "n2"]  # n3 did not queue behind n2
    n3.guard.arm("someone who ignored the page")
    d = n3.check(OrderIds("x").order())
    assert not d.accepted and d.reason is RejectReason.HALTED
    await service.stop()
    for node in (nodes[0], n3, nodes[3]):
        await node.stop()


async def test_a_kill_a_node_did_not_confirm_is_retried_at_the_next_sample() -> None:
    clock = SimClock(10 * S)
    nodes, planes, service = await _fleet(3, clock, confirm_timeout_s=0.05)
    n2 = nodes[1]
    _refuse(n2)
    await n2.publish_once()
    await planes[1].close()
    await service.drain()
    assert [(a.rule, r.ok) for a, r in service.results] == [(Rule.ERRORS_BEFORE_ARMING, False)]
    await planes[1].connect()
    await n2.publish_once()
    await service.drain()
    assert [(a.rule, r.ok) for a, r in service.results] == [
        (Rule.ERRORS_BEFORE_ARMING, False),
        (Rule.ERRORS_BEFORE_ARMING, True),
    ]
    await n2.publish_once()
    await service.drain()
    assert len(service.results) == 2  # confirmed: once per episode again
    await service.stop()
    for node in nodes:
        await node.stop()


def _m(node: str, orders: int) -> NodeMetrics:
    return NodeMetrics(node, 0, orders, orders, 0, 0, 0.0, 0.0, True, 0)


def test_a_node_gone_silent_is_halted_once_per_episode_on_a_sim_clock() -> None:
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(stale_after_s=2.0), clock)
    fired: list[tuple[Rule, str, Scope, TradingState]] = []

    def tick(nodes: list[str], k: int) -> None:
        clock.advance(S // 2)
        for n in nodes:
            fired.extend((a.rule, a.key, a.scope, a.state) for a in sup.observe(_m(n, 10 * k)))

    for k in range(4):
        tick(["n1", "n2", "n3"], k)
    assert fired == []
    for k in range(4, 8):  # n3 silent for exactly 2.0 s: not yet stale
        tick(["n1", "n2"], k)
    assert fired == []
    for k in range(8, 20):
        tick(["n1", "n2"], k)
    assert fired == [(Rule.STALE_METRICS, "n3", Scope.NODE, TradingState.HALTED)]
    assert "n3 sent no metrics for 2.5 s (limit 2 s)" in sup.actions[0].reason
    tick(["n1", "n2", "n3"], 20)  # back: the episode ends
    for k in range(21, 30):
        tick(["n1", "n2"], k)
    assert fired.count((Rule.STALE_METRICS, "n3", Scope.NODE, TradingState.HALTED)) == 2
    clock.advance(10 * S)  # the whole fleet silent: no sample arrives, a sweep catches it
    assert {a.key for a in sup.sweep()} == {"n1", "n2"}
    assert sup.sweep() == []


async def test_service_sweep_halts_nodes_when_the_whole_fleet_goes_silent() -> None:
    clock = SimClock(10 * S)
    nodes, _, service = await _fleet(3, clock, sweep_s=0.01)
    for node in nodes:
        await node.publish_once()
    await asyncio.sleep(0.05)
    assert service.results == []
    clock.advance(3 * S)  # no sample arrives after this: only the timer can notice
    for node in nodes:
        await node.heartbeat_once()
    for _ in range(1500):  # up to 15 s: the sweep is a real-time timer
        await asyncio.sleep(0.01)
        if len(service.results) == 3:
            break
    await service.drain()
    assert sorted((a.rule, a.key, r.ok) for a, r in service.results) == [
        (Rule.STALE_METRICS, n, True) for n in ("n1", "n2", "n3")
    ]
    for node in nodes:
        assert node.guard.trading_state(Scope.NODE, node.node_id) is TradingState.HALTED
    await service.stop()
    assert service.inflight == 0
    for node in nodes:
        await node.stop()


async def test_the_supervisors_own_stall_halts_no_one_and_a_silent_node_still_goes() -> None:
    """The whole process is frozen past the staleness limit (a starved host): the nodes'
    samples from the gap were never heard, so no node is halted for it; a node that then
    stops reporting is still halted one limit later."""
    nodes, _, service = await _fleet(3, SystemClock(), stale_after_s=1.0, sweep_s=0.1)
    await asyncio.sleep(0.6)  # every node has reported (each every 0.5 s)
    time.sleep(1.6)  # no sweep, no sample, no heartbeat for longer than the limit
    await asyncio.sleep(0.8)  # the sweep and the samples run again
    await service.drain()
    assert service.results == []
    n3_metrics = next(t for t in asyncio.all_tasks() if t.get_name() == "n3-metrics")
    n3_metrics.cancel()  # n3 goes quiet; n1 and n2 keep reporting
    for _ in range(150):  # up to 15 s: one limit, then the next sweep, in real time
        await asyncio.sleep(0.1)
        if service.results:
            break
    await asyncio.sleep(0.3)
    await service.drain()
    assert [(a.rule, a.key) for a, _ in service.results] == [(Rule.STALE_METRICS, "n3")]
    await service.stop()
    for node in nodes:
        await node.stop()


def test_config_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    good = tmp_path / "sup.toml"
    good.write_text("[supervisor]\nrate_window_s = 2.5\nstale_after_s = 3.0\n")
    assert SupervisorConfig.from_toml(good) == SupervisorConfig(
        rate_window_s=2.5, stale_after_s=3.0
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[supervisor]\nrate_windw_s = 2.5\n")
    with pytest.raises(ValueError, match=r"bad\.toml: \[supervisor\] .*rate_windw_s"):
        SupervisorConfig.from_toml(bad)
    with pytest.raises(ValueError, match=r"missing\.toml: no such file"):
        SupervisorConfig.from_toml(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="stale_after_s: must be > 0"):
        bad.write_text("[supervisor]\nstale_after_s = 0\n")
        SupervisorConfig.from_toml(bad)


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("principal_day_multiple = 0.5", "principal_day_multiple: must be >= 1 (got 0.5)"),
        ("principal_day_multiple = nan", "principal_day_multiple: must be >= 1 (got nan)"),
        ("node_exposure_share = 0", "node_exposure_share: must be in (0, 1] (got 0.0)"),
        ("node_exposure_share = 1.5", "node_exposure_share: must be in (0, 1] (got 1.5)"),
        ('node_exposure_share = "half"', "Expected `float`, got `str` - at `$.node_exposure_s"),
    ],
)
def test_the_day_and_node_exposure_keys_are_checked_by_name(
    tmp_path: Path, line: str, named: str
) -> None:
    path = tmp_path / "sup.toml"
    path.write_text(f"[supervisor]\n{line}\n")
    with pytest.raises(ValueError) as err:
        SupervisorConfig.from_toml(path)
    assert str(err.value).startswith(f"supervisor config {path}: [supervisor] "), err.value
    assert named in str(err.value), err.value
    path.write_text("[supervisor]\nprincipal_day_multiple = 4.0\nnode_exposure_share = 1.0\n")
    cfg = SupervisorConfig.from_toml(path)
    assert (cfg.principal_day_multiple, cfg.node_exposure_share) == (4.0, 1.0)


async def test_a_fleet_hammering_its_guards_is_halted_through_the_kill_switch() -> None:
    """Every node's strategy offers 500 orders/s while its Guard's node rate limit (25/s)
    lets its normal 20/s through: thousands of refusals a second, all of them throttling,
    on every node at once (the peers' median rises with each). Real Guards count the
    refusals and the service halts every node by name through the kill switch."""
    clock = SimClock(10 * S)
    fabric = MemoryFabric()
    nodes: list[NodeRuntime] = []
    for i in range(1, 5):
        plane = MemoryControlPlane(fabric)
        await plane.connect()
        guard = Guard(
            Limits(lease_timeout_s=POLICY.lease_timeout_s, max_orders_per_s_symbol=None,
                   max_orders_per_s_node=25),
            node=f"n{i}", clock=clock,
        )  # fmt: skip
        guard.on_price("AAPL", 100.0)
        guard.arm("test")
        node = NodeRuntime(guard, plane, clock=clock, policy=POLICY, trust=trust(),
                           signer=signer(f"n{i}"))  # fmt: skip
        await node.start()
        nodes.append(node)
    sup_plane = MemoryControlPlane(fabric)
    await sup_plane.connect()
    service = SupervisorService(
        sup_plane,
        Supervisor(SupervisorConfig(stale_after_s=60.0), clock),
        switch(sup_plane, clock, "supervisor"),
        Pager(),
    )
    await service.start()
    ids = OrderIds("h")
    for k in range(60):  # 12 s: 4 orders a tick (20/s), then 100 a tick from 6 s
        clock.advance(S // 5)
        for node in nodes:
            await node.heartbeat_once()
            node.guard.on_price("AAPL", 100.0)
            for _ in range(100 if k >= 30 else 4):
                node.check(ids.order(strategy=f"s{node.node_id}"))
            await node.publish_once()
        if k == 29:
            assert service.results == []
    throttled = sum(n for r, n in nodes[0].guard.counters()[1].items() if r.value == "rate_node")
    assert throttled > 400
    assert {(a.rule, a.key, r.ok) for a, r in service.results} >= {
        (Rule.BASELINE_ORDER_RATE, n.node_id, True) for n in nodes
    }
    for node in nodes:
        assert node.guard.trading_state(Scope.NODE, node.node_id) is TradingState.HALTED
    await service.stop()
    for node in nodes:
        await node.stop()


async def _supervise(fabric: MemoryFabric, clock: SimClock) -> SupervisorService:
    """A supervisor service (no nodes' runtimes: metrics are sent as the nodes would)."""
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    service = SupervisorService(
        plane,
        Supervisor(SupervisorConfig(stale_after_s=60.0), clock),
        switch(plane, clock, "supervisor"),
        Pager(),
        confirm_timeout_s=0.01,
    )
    await service.start()
    return service


async def test_a_restarted_service_reads_back_the_day_and_halts_on_it() -> None:
    """An agency router leaks $9k of the firm's own flow a minute (under the window's floor),
    $60k of its $100k day before the supervisor restarts. The service stores the day's
    history in the incident bucket and the restarted one reads it back: the router is
    halted when the day's sum reaches $100k (about 11 minutes in), not 11 minutes after
    every restart."""
    clock = SimClock(10 * S)
    fabric = MemoryFabric()
    sender = MemoryControlPlane(fabric)
    await sender.connect()
    orders = own = 0.0
    service = await _supervise(fabric, clock)

    async def second() -> None:
        nonlocal orders, own
        clock.advance(S)
        orders += 20
        own += 9_000.0 / 60
        for n in ("n1", "n2", "n3"):
            flow = own if n == "n2" else 0.0
            await sender.publish_metrics(
                NodeMetrics(n, 0, int(orders), int(orders), 0, int(orders), 0.0, 0.0, True, 0,
                            notional=orders * 2_000 + flow, principal_notional=flow,
                            parents=100, instance=f"{n}-1")
            )  # fmt: skip

    for _ in range(400):
        await second()
    await service.stop()
    assert service.results == []
    stored, _ = await sender.get_record(Bucket.INCIDENT, "supervisor_day.n2")
    assert stored is not None and b'"instance":"n2-1"' in stored
    restarted = await _supervise(fabric, clock)
    t = 400
    while not restarted.results and t < 1200:
        await second()
        t += 1
    await restarted.stop()
    assert [(a.rule, a.key) for a, _ in restarted.results] == [(Rule.PRINCIPAL_DAY, "n2")]
    assert 660 <= t <= 690, t


async def test_a_stored_day_that_cannot_be_read_halts_its_node_at_start() -> None:
    clock = SimClock(10 * S)
    fabric = MemoryFabric()
    writer = MemoryControlPlane(fabric)
    await writer.connect()
    await writer.put_record(Bucket.INCIDENT, "supervisor_day.n2", b"\x00garbage")
    service = await _supervise(fabric, clock)
    await service.stop()
    assert [(a.rule, a.key, a.state) for a, _ in service.results] == [
        (Rule.PRINCIPAL_DAY, "n2", TradingState.HALTED)
    ]
    assert "supervisor_day.n2" in service.results[0][0].reason
    entry, _ = await writer.get_state(Scope.NODE, "n2")
    assert entry is not None and entry.state is TradingState.HALTED


async def test_a_leased_node_that_never_reports_to_a_restarted_supervisor_is_halted() -> None:
    """n3 holds its lease (its heartbeats go on) but its metrics have stopped, and the
    supervisor restarts: it knew only the nodes it heard from, so n3 was never judged
    silent and traded unsupervised. Every member holding a lease at the start is expected:
    n3 is halted `stale_after_s` later through the kill switch; its reporting peers are not."""
    clock = SimClock(10 * S)
    fabric = MemoryFabric()
    nodes: list[NodeRuntime] = []
    for i in range(1, 4):
        plane = MemoryControlPlane(fabric)
        await plane.connect()
        node = make_node(f"n{i}", plane, clock)
        await node.start()
        nodes.append(node)
    next(t for t in asyncio.all_tasks() if t.get_name() == "n3-metrics").cancel()
    sup_plane = MemoryControlPlane(fabric)
    await sup_plane.connect()
    service = SupervisorService(
        sup_plane,
        Supervisor(SupervisorConfig(stale_after_s=2.0), clock),
        switch(sup_plane, clock, "supervisor"),
        Pager(),
        sweep_s=0.01,
        concurrent=True,
    )
    await service.start()
    for _ in range(10):  # 5 s
        clock.advance(S // 2)
        for node in nodes:
            await node.heartbeat_once()
        for node in nodes[:2]:
            await node.publish_once()
        await asyncio.sleep(0.02)  # a sweep runs
    await service.stop()
    assert [(a.rule, a.key, r.ok) for a, r in service.results] == [(Rule.STALE_METRICS, "n3", True)]
    assert nodes[2].guard.trading_state(Scope.NODE, "n3") is TradingState.HALTED
    for node in nodes:
        await node.stop()


@pytest.mark.parametrize(
    ("lines", "named"),
    [
        ("stale_after_s = inf", "stale_after_s: must be finite (in nanoseconds too) (got inf)"),
        ("stale_after_s = 1e300", "stale_after_s: must be finite (in nanoseconds too)"),
        (
            "rate_window_s = inf\ncount_window_s = inf",
            "rate_window_s: must be finite (in nanoseconds too) (got inf)",
        ),
        ("gross_exposure_cap = inf", "gross_exposure_cap: must be finite (got inf)"),
        ("rate_floor_per_s = inf", "rate_floor_per_s: must be finite (got inf)"),
        ("bleed_loss = inf", "bleed_loss: must be finite (got inf)"),
    ],
)
def test_an_infinite_threshold_is_refused_by_name_not_a_rule_disabled_or_a_crash(
    tmp_path: Path, lines: str, named: str
) -> None:
    """TOML reads `inf`: it passed every check (> 0, >= 0), then either disabled its rule
    for good (an exposure cap of inf, a floor no rate reaches) or made every sample raise
    OverflowError (a window or limit in seconds is counted in nanoseconds). Refused at load,
    naming the key; a large finite value that still fits is taken."""
    path = tmp_path / "sup.toml"
    path.write_text(f"[supervisor]\n{lines}\n")
    with pytest.raises(ValueError) as err:
        SupervisorConfig.from_toml(path)
    assert str(err.value).startswith(f"supervisor config {path}: [supervisor] "), err.value
    assert named in str(err.value), err.value
    path.write_text("[supervisor]\nstale_after_s = 1e12\ngross_exposure_cap = 1e15\n")
    sup = Supervisor(SupervisorConfig.from_toml(path), SimClock(10 * S))
    assert sup.observe(_m("n1", 1)) == []


async def test_a_halt_and_a_drain_of_one_node_in_one_judgement_leave_it_halted() -> None:
    """n2 reports errors before arming (halt) with its exposure over its share of the cap
    (drain to REDUCING) in the same sample. Both went out, the drain after the halt: the
    newer kill of the slot, stored over the halt, so n2 ended REDUCING (a halt loosened on
    one signature). The drain waits until the halt is reported in force; a person's resume
    (n2 reporting ACTIVE again, its exposure still over) lets it fire."""
    clock = SystemClock()
    fabric = MemoryFabric()
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    n2 = make_node("n2", plane, clock)
    await n2.start()
    next(t for t in asyncio.all_tasks() if t.get_name() == "n2-metrics").cancel()
    sender = MemoryControlPlane(fabric)
    await sender.connect()
    sup_plane = MemoryControlPlane(fabric)
    await sup_plane.connect()
    service = SupervisorService(
        sup_plane,
        Supervisor(SupervisorConfig(gross_exposure_cap=1e6, stale_after_s=60.0), clock),
        switch(sup_plane, clock, "supervisor"),
        Pager(),
        confirm_timeout_s=0.5,
    )
    await service.start()

    async def sample(k: int, bad: bool, state: TradingState = TradingState.ACTIVE) -> None:
        for n in ("n1", "n2", "n3"):
            odd = n == "n2" and bad
            await sender.publish_metrics(
                NodeMetrics(n, 0, 4 * k, 4 * k, 0, 4 * k, 6e5 if odd else 1e5, 0.0, not odd,
                            1 if odd else 0, node_state=int(state) if n == "n2" else 0)
            )  # fmt: skip

    for k in range(1, 4):
        await sample(k, False)
    await sample(4, True)
    await service.drain()
    assert [(a.rule, a.state) for a, _ in service.results] == [
        (Rule.ERRORS_BEFORE_ARMING, TradingState.HALTED),
        (Rule.NODE_GROSS_EXPOSURE, TradingState.REDUCING),
    ]
    # the drain issued after the halt loosens nothing: the halt stays stored and held
    entry, _ = await sup_plane.get_state(Scope.NODE, "n2")
    assert entry is not None and entry.state is TradingState.HALTED
    assert n2.guard.trading_state(Scope.NODE, "n2") is TradingState.HALTED
    await service.stop()
    await n2.stop()
