"""Prometheus exposition: scrape a live node and supervisor over HTTP, watch the numbers move."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from knightwatch.clock import SimClock
from knightwatch.control.exposition import (
    ExpositionError,
    LoopReader,
    MetricsServer,
    NodeCollector,
    serve_node_metrics,
    serve_supervisor_metrics,
)
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.fleet.supervisor import Rule, Supervisor, SupervisorConfig
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.wire import NodeMetrics
from knightwatch.control.site import Site
from knightwatch.order import Fill, Side
from knightwatch.sim.drill.processes import NodeProcesses
from knightwatch.state import Scope

from ..identities import switch
from .fleet_fixtures import POLICY, OrderIds, make_node
from .helpers import eventually

MS = 1_000_000
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
    return body.decode()


async def scrape(url: str) -> Samples:
    """GET /metrics from another thread, as Prometheus would, while the loop keeps running."""
    text = await asyncio.to_thread(_fetch, url)
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def val(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def node_on_memory() -> tuple[NodeRuntime, SimClock, KillSwitch]:
    fabric = MemoryFabric()
    clock = SimClock(1_000 * MS)
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    node = make_node("n1", plane, clock)
    await node.join()
    operator = MemoryControlPlane(fabric)
    await operator.connect()
    return node, clock, switch(operator, clock, "alice")


async def test_node_counters_blocks_and_states_follow_the_live_runtime() -> None:
    node, clock, ks = await node_on_memory()
    server = serve_node_metrics(node, 0)
    try:
        assert server.port > 0 and server.url.startswith("http://127.0.0.1:")
        before = await scrape(server.url)
        assert val(before, "knightwatch_orders_total", node="n1") == 0
        assert val(before, "knightwatch_admitted", node="n1") == 1
        assert val(before, "knightwatch_armed", node="n1") == 1
        lease = val(before, "knightwatch_lease_seconds_left", node="n1")
        assert 0 < lease <= POLICY.lease_timeout_s
        assert val(before, "knightwatch_orders_blocked_total", node="n1", reason="halted") == 0
        state = "knightwatch_trading_state"
        assert val(before, state, node="n1", scope="fleet", key="fleet") == 0
        assert val(before, state, node="n1", scope="node", key="n1") == 0

        ids = OrderIds("o")
        for _ in range(3):
            assert node.check(ids.order()).accepted
        node.on_fill(Fill("o-1", "AAPL", Side.BUY, 10, 100.0))
        await ks.kill(Scope.SYMBOL, "AAPL", "bad prints", timeout_s=0.2)
        for _ in range(2):
            assert not node.check(ids.order()).accepted

        after = await scrape(server.url)
        assert val(after, "knightwatch_orders_total", node="n1") == 5
        assert val(after, "knightwatch_orders_accepted_total", node="n1") == 3
        assert val(after, "knightwatch_orders_rejected_total", node="n1") == 2
        assert val(after, "knightwatch_orders_blocked_total", node="n1", reason="halted") == 2
        assert val(after, "knightwatch_orders_blocked_total", node="n1", reason="rate_node") == 0
        assert val(after, "knightwatch_fills_total", node="n1") == 1
        assert val(after, "knightwatch_gross_exposure", node="n1") == node.guard.exposure()[0] > 0
        assert val(after, "knightwatch_pnl", node="n1") == node.guard.pnl()
        assert val(after, state, node="n1", scope="symbol", key="AAPL") == 2
        assert val(after, state, node="n1", scope="fleet", key="fleet") == 0

        # The lease runs out while the process stalls: admission and lease drop at once.
        clock.advance(int(POLICY.lease_timeout_s * 1e9) + MS)
        node._revoke("test: stalled")
        assert not node.check(ids.order("MSFT")).accepted
        lapsed = await scrape(server.url)
        assert val(lapsed, "knightwatch_admitted", node="n1") == 0
        assert val(lapsed, "knightwatch_lease_seconds_left", node="n1") == 0
        assert (
            val(lapsed, "knightwatch_orders_blocked_total", node="n1", reason="lease_expired") == 1
        )
    finally:
        server.close()
        await node.stop()


async def test_server_binds_loopback_only_with_its_own_registry() -> None:
    node, _, _ = await node_on_memory()
    server = serve_node_metrics(node, 0)
    try:
        assert server._server.server_address[0] == "127.0.0.1"
        assert "knightwatch_orders" not in {f.name for f in REGISTRY.collect()}
        names = {f.name for f in server.registry.collect()}
        assert {"knightwatch_orders", "knightwatch_orders_blocked", "knightwatch_armed"} <= names
        # Nothing answers on another local address of this host.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", server.port), timeout=0.5).close()
    finally:
        server.close()
        await node.stop()


async def test_port_in_use_is_a_named_error() -> None:
    node, _, _ = await node_on_memory()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ExpositionError, match=r"--metrics-port: cannot listen on 127.0.0.1:"):
            MetricsServer(NodeCollector(node, LoopReader()), port)
    with pytest.raises(ExpositionError, match=r"--metrics-port: must be 0-65535"):
        MetricsServer(NodeCollector(node, LoopReader()), 70000)
    await node.stop()


async def test_closing_frees_the_port_without_holding_the_loop() -> None:
    """`close` runs on the node's loop on its way to `runtime.stop()`: it held the loop
    until the server's thread next looked up from its 0.5 s wait (about 500 ms when
    closed just after it started), now only as long as stopping takes."""
    node, _, _ = await node_on_memory()
    try:
        for _ in range(3):
            server = MetricsServer(NodeCollector(node, LoopReader()), 0)
            started = time.monotonic()
            server.close()
            held = time.monotonic() - started
            assert held < 0.3, f"close held the loop {held * 1e3:.0f} ms"
            with pytest.raises(OSError):  # nothing listens there any more
                socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    finally:
        await node.stop()


async def test_a_starved_loop_fails_the_scrape_instead_of_reporting_stale_numbers() -> None:
    reader = LoopReader(timeout_s=0.1)
    errors: list[BaseException] = []

    def scrape_thread() -> None:
        try:
            reader.read(lambda: 1)
        except ExpositionError as exc:
            errors.append(exc)

    t = threading.Thread(target=scrape_thread)
    t.start()
    # the loop is blocked, as a starved node's would be, until the scrape has given up
    # (a fixed 0.3 s flaked: on a loaded machine the thread had not asked by then)
    t.join(timeout=15)
    assert not t.is_alive(), "the scrape never gave up on the blocked loop"
    assert len(errors) == 1 and "did not answer within 0.1 s" in str(errors[0])
    assert await asyncio.to_thread(reader.read, lambda: 42) == 42


async def test_a_failed_scrape_is_an_http_error() -> None:
    node, _, _ = await node_on_memory()
    server = MetricsServer(NodeCollector(node, LoopReader(timeout_s=0.1)), 0)
    try:
        failed: list[BaseException] = []

        def fetch() -> None:
            try:
                _fetch(server.url)
            except Exception as exc:  # the scrape's answer, judged below
                failed.append(exc)

        t = threading.Thread(target=fetch)
        t.start()
        # the loop stays blocked until the scrape has its answer (a fixed 0.3 s flaked:
        # loaded, the request had not reached the server by then)
        t.join(timeout=15)
        assert not t.is_alive(), "the scrape never answered"
        assert len(failed) == 1 and isinstance(failed[0], urllib.error.HTTPError), failed
    finally:
        server.close()
        await node.stop()


def _metrics(node: str, orders: int, rejected: int = 0) -> NodeMetrics:
    return NodeMetrics(node, 0, orders, orders - rejected, rejected, 0, 0.0, 0.0, True, 0)


async def test_supervisor_health_and_actions_by_rule() -> None:
    clock = SimClock(10 * 1_000 * MS)
    sup = Supervisor(SupervisorConfig(), clock)
    server = serve_supervisor_metrics(sup, 0)
    try:
        empty = await scrape(server.url)
        assert val(empty, "knightwatch_supervisor_nodes") == 0
        assert val(empty, "knightwatch_supervisor_actions_total", rule=Rule.ORDER_RATE.value) == 0
        counts = {"n1": 0, "n2": 0, "n3": 0}
        rates = {"n1": 20, "n2": 20, "n3": 400}
        for _ in range(10):  # 2 s at 0.2 s ticks: n3 runs away at 20x its peers
            clock.advance(200 * MS)
            for n, rate in rates.items():
                counts[n] += rate // 5
                sup.observe(_metrics(n, counts[n]))
        after = await scrape(server.url)
        assert val(after, "knightwatch_supervisor_nodes") == 3
        assert val(after, "knightwatch_supervisor_order_rate", node="n1") == pytest.approx(20)
        ratio = val(after, "knightwatch_supervisor_order_rate_ratio", node="n3")
        assert ratio == pytest.approx(sup.health()["n3"].order_rate_ratio) and ratio > 5
        assert val(after, "knightwatch_supervisor_reject_ratio", node="n3") == 0
        assert val(after, "knightwatch_supervisor_participating", node="n2") == 1
        assert val(after, "knightwatch_supervisor_actions_total", rule=Rule.ORDER_RATE.value) == 1
        assert ("knightwatch_supervisor_pnl_deviation", (("node", "n1"),)) in after
        sup.actions.clear()  # the kept log trimmed (a long run): the counter never falls back
        kept = await scrape(server.url)
        assert val(kept, "knightwatch_supervisor_actions_total", rule=Rule.ORDER_RATE.value) == 1
    finally:
        server.close()


async def test_knightwatch_node_metrics_port_serves_a_real_node(
    nats_server: Site, tmp_path: Path
) -> None:
    procs = NodeProcesses(
        [nats_server.url],
        tmp_path,
        extra=["--metrics-port", "0"],
        trust_dir=nats_server.trust_dir,
    )
    procs.spawn("m1")
    log = tmp_path / "logs" / "m1.log"
    try:
        found: list[str] = []

        def printed_url() -> bool:
            text = log.read_text() if log.exists() else ""
            found[:] = re.findall(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", text)
            return bool(found) and "node m1 admitted" in text

        await eventually(printed_url, timeout_s=15)
        samples = await scrape(found[0])
        assert val(samples, "knightwatch_admitted", node="m1") == 1
        assert val(samples, "knightwatch_armed", node="m1") == 1
        assert val(samples, "knightwatch_lease_seconds_left", node="m1") > 0
    finally:
        procs.stop()


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}"])
async def test_a_request_naming_another_host_is_refused(host: str) -> None:
    """DNS rebinding: a web page in a browser on the node's host makes its own domain
    resolve to 127.0.0.1 and reads the node's P&L, exposure and limits; its requests name
    that domain (`Host`). They were answered; only 127.0.0.1 and localhost are now."""
    node, _, _ = await node_on_memory()
    server = serve_node_metrics(node, 0)
    try:

        def fetch(name: str) -> int:
            request = urllib.request.Request(server.url, headers={"Host": name})
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return int(answer.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert await asyncio.to_thread(fetch, host.format(port=server.port)) == 421
        for local in (f"127.0.0.1:{server.port}", f"localhost:{server.port}"):
            assert await asyncio.to_thread(fetch, local) == 200
    finally:
        server.close()
        await node.stop()
