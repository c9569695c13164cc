"""Prometheus exposition of a node and of the supervisor, read live from the running objects.

Knight's monitoring watched prices, not order volume. Each node therefore
exposes what its Guard counts (orders, blocks by reason code, fills, exposure,
P&L) and what its runtime holds (lease left, admitted, armed, trading state per
scope), so an operator's Prometheus sees a runaway the same way the supervisor
does. Nothing is counted twice: every scrape reads `NodeRuntime.metrics()` and
`status()`, and the supervisor's `health()`, at that moment.

The Guard and the supervisor are single-threaded on an asyncio loop, and
prometheus_client serves from its own thread, so a scrape asks the loop for a
snapshot and waits for it: it never reads a dict the loop is mutating. A loop
too starved to answer within the timeout fails the scrape (HTTP 500, so
Prometheus marks the target down) instead of reporting stale numbers.

Servers bind 127.0.0.1 only and use a dedicated `CollectorRegistry`, never the
process-global one; expose them further with a reverse proxy you control.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar
from wsgiref.simple_server import WSGIServer
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import msgspec
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from knightwatch.control.fleet.supervisor import NodeHealth, Rule, Supervisor
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.wire import FLEET_KEY, NodeMetrics
from knightwatch.decision import RejectReason
from knightwatch.errors import KnightwatchError
from knightwatch.state import Scope, TradingState

log = logging.getLogger(__name__)

BIND_ADDRESS = "127.0.0.1"
SNAPSHOT_TIMEOUT_S = 2.0
CLOSE_TIMEOUT_S = 5.0

T = TypeVar("T")


class ExpositionError(KnightwatchError, RuntimeError):
    """The metrics endpoint cannot be served or a scrape cannot be answered; names why."""


class LoopReader:
    """Runs a read on the asyncio loop that owns the object, from any thread.

    Built on that loop. Called on the loop's own thread (a test calling
    `generate_latest` inside a coroutine) the read runs directly, since waiting
    on the loop from its own thread would deadlock.
    """

    def __init__(self, timeout_s: float = SNAPSHOT_TIMEOUT_S) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout_s = timeout_s
        self._loop_thread = threading.get_ident()

    def read(self, fn: Callable[[], T]) -> T:
        if threading.get_ident() == self._loop_thread:
            return fn()
        if self.loop.is_closed():
            raise ExpositionError("scrape: the event loop that owns the node has closed")
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed to the scraping thread, which re-raises it
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        try:
            return done.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            raise ExpositionError(
                f"scrape: the event loop did not answer within {self.timeout_s:g} s (starved)"
            ) from None


class NodeSnapshot(msgspec.Struct, frozen=True):
    """One consistent reading of a node, taken on its loop between two orders."""

    metrics: NodeMetrics
    lease_left_s: float
    states: tuple[tuple[Scope, str, TradingState], ...]
    """Fleet and this node's scope always; every other scope the Guard holds a halt for."""


def node_snapshot(runtime: NodeRuntime) -> NodeSnapshot:
    """Read the runtime's own counters and status; must run on the runtime's loop."""
    status = runtime.status()
    lease_left_ns = status.lease_expires_ns - status.seen_ns if status.admitted else 0
    held: dict[tuple[Scope, str], TradingState] = {
        (Scope.FLEET, FLEET_KEY): TradingState.ACTIVE,
        (Scope.NODE, runtime.node_id): TradingState.ACTIVE,
    }
    for (scope, key), halt in runtime.guard.halts().items():
        held[(scope, key)] = TradingState(halt.state)
    states = tuple(sorted((s, k, st) for (s, k), st in held.items()))
    return NodeSnapshot(runtime.metrics(), max(lease_left_ns, 0) / 1e9, states)


def node_families(snap: NodeSnapshot) -> list[Metric]:
    """The metric families of one node snapshot; names are a public contract (alerts use them)."""
    m = snap.metrics
    node = [m.node_id]

    def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=["node"])
        family.add_metric(node, value)
        return family

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=["node"])
        family.add_metric(node, value)
        return family

    by_reason = CounterMetricFamily(
        "knightwatch_orders_blocked",
        "Orders the Guard blocked, by stable reason code (every code is always present).",
        labels=["node", "reason"],
    )
    for reason in RejectReason:
        if reason is not RejectReason.OK:
            by_reason.add_metric([m.node_id, reason.value], m.blocks.get(reason.value, 0))
    trading = GaugeMetricFamily(
        "knightwatch_trading_state",
        "Trading state this node's Guard holds per scope: 0 active, 1 reducing, 2 halted.",
        labels=["node", "scope", "key"],
    )
    for scope, key, state in snap.states:
        trading.add_metric([m.node_id, scope.value, key], int(state))
    return [
        counter(
            "knightwatch_orders", "Orders checked by the Guard (accepted + blocked).", m.orders
        ),
        counter("knightwatch_orders_accepted", "Orders the Guard accepted.", m.accepted),
        counter(
            "knightwatch_orders_rejected", "Orders the Guard blocked, all reasons.", m.rejected
        ),
        by_reason,
        counter("knightwatch_fills", "Executions reported to the node.", m.fills),
        counter(
            "knightwatch_node_errors", "Errors the node reported (before or while armed).", m.errors
        ),
        gauge(
            "knightwatch_gross_exposure",
            "Gross exposure incl. working orders, at reference prices.",
            m.gross_exposure,
        ),
        gauge("knightwatch_pnl", "Realized + unrealized P&L.", m.pnl),
        gauge(
            "knightwatch_lease_seconds_left",
            "Seconds until the lease runs out (0 = not admitted).",
            snap.lease_left_s,
        ),
        gauge(
            "knightwatch_admitted",
            "1 while the node holds its lease and release admission.",
            float(m.admitted),
        ),
        gauge("knightwatch_armed", "1 while the Guard is armed.", float(m.armed)),
        trading,
    ]


class NodeCollector(Collector):
    """A prometheus_client collector over one live `NodeRuntime`."""

    def __init__(self, runtime: NodeRuntime, reader: LoopReader) -> None:
        self.runtime = runtime
        self.reader = reader

    def collect(self) -> Iterable[Metric]:
        snap = self.reader.read(lambda: node_snapshot(self.runtime))
        return node_families(snap)


class SupervisorSnapshot(msgspec.Struct, frozen=True):
    """What the supervisor's rules see now, plus how often each rule has acted."""

    health: dict[str, NodeHealth]
    actions: dict[str, int]


def supervisor_snapshot(supervisor: Supervisor) -> SupervisorSnapshot:
    """Read `Supervisor.health()` and its action log; must run on the supervisor's loop."""
    # `acted`, never trimmed: counting the kept `actions` fell back after a trim, read as a
    # counter reset by Prometheus
    actions = {rule.value: supervisor.acted[rule] for rule in Rule}
    return SupervisorSnapshot(supervisor.health(), actions)


def supervisor_families(snap: SupervisorSnapshot) -> list[Metric]:
    """Per-node health as the supervisor judges it, and its actions by rule."""
    names = [
        (
            "knightwatch_supervisor_participating",
            "1 if the node counts in fleet baselines (armed and admitted).",
        ),
        ("knightwatch_supervisor_order_rate", "Orders per second over the rate window."),
        (
            "knightwatch_supervisor_fleet_median_rate",
            "Median order rate of the node and its participating peers.",
        ),
        (
            "knightwatch_supervisor_order_rate_ratio",
            "Order rate over the fleet baseline; the rate rule fires above rate_multiple.",
        ),
        (
            "knightwatch_supervisor_reject_ratio",
            "Blocked share of the node's orders over the window.",
        ),
        (
            "knightwatch_supervisor_pnl_deviation",
            "P&L minus the peers' median (absent with too few peers).",
        ),
    ]
    families = [GaugeMetricFamily(n, doc, labels=["node"]) for n, doc in names]
    for node, h in snap.health.items():
        values = (
            float(h.participating), h.order_rate, h.fleet_median_rate, h.order_rate_ratio,
            h.reject_ratio, h.pnl_deviation,
        )  # fmt: skip
        for family, value in zip(families, values, strict=True):
            if value is not None:
                family.add_metric([node], value)
    nodes = GaugeMetricFamily(
        "knightwatch_supervisor_nodes",
        "Nodes heard from within stale_after_s.",
        float(len(snap.health)),
    )
    actions = CounterMetricFamily(
        "knightwatch_supervisor_actions",
        "Automatic halts the supervisor decided, by rule (reason code).",
        labels=["rule"],
    )
    for rule, count in snap.actions.items():
        actions.add_metric([rule], count)
    return [*families, nodes, actions]


class SupervisorCollector(Collector):
    """A prometheus_client collector over one live `Supervisor`."""

    def __init__(self, supervisor: Supervisor, reader: LoopReader) -> None:
        self.supervisor = supervisor
        self.reader = reader

    def collect(self) -> Iterable[Metric]:
        snap = self.reader.read(lambda: supervisor_snapshot(self.supervisor))
        return supervisor_families(snap)


def _local_hosts_only(app: WSGIApplication, port: int) -> WSGIApplication:
    """`app`, answering only requests addressed to this host by name (`Host`): a web page
    in a browser on the node's host could make its own domain resolve to 127.0.0.1 (DNS
    rebinding) and read the node's P&L, exposure and limits; its requests name that
    domain. A request with no `Host` (HTTP/1.0) is no browser's and is answered.

    A scrape that fails (a starved loop, a collector the process added that raises) is
    answered 500 with the one-line reason and logged as that line: wsgiref printed a
    traceback to the node's stderr for each one, every scrape interval of a starved node,
    and answered without the reason."""
    allowed = {f"{h}:{port}" for h in (BIND_ADDRESS, "localhost", "[::1]")}

    def local(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST")
        if host is not None and host.lower() not in allowed:
            start_response("421 Misdirected Request", [("Content-Type", "text/plain")])
            return [b"metrics are served to 127.0.0.1 and localhost only\n"]
        try:
            return app(environ, start_response)
        except ExpositionError as exc:
            reason = str(exc)
        except Exception as exc:  # a collector's bug: named, the node's stderr kept readable
            reason = f"scrape: a collector failed: {type(exc).__name__}: {exc}"
        reason = " ".join(reason.split())[:500]
        log.error("METRICS_SCRAPE_FAILED %s", reason)
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [reason.encode() + b"\n"]

    return local


class MetricsServer:
    """prometheus_client's HTTP server on 127.0.0.1 with its own registry; `close` stops it."""

    def __init__(self, collector: Collector, port: int) -> None:
        if not 0 <= port <= 65535:
            raise ExpositionError(f"--metrics-port: must be 0-65535 (got {port})")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        try:
            server, thread = start_http_server(port, addr=BIND_ADDRESS, registry=self.registry)
        except OSError as exc:
            raise ExpositionError(
                f"--metrics-port: cannot listen on {BIND_ADDRESS}:{port} ({exc.strerror or exc})"
            ) from None
        self._server: WSGIServer = server
        self._thread = thread
        self.port: int = server.server_port
        served = server.get_app()
        if served is not None:
            server.set_app(_local_hosts_only(served, self.port))

    @property
    def url(self) -> str:
        return f"http://{BIND_ADDRESS}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port, at once.

        `shutdown()` alone returns only when the server's thread next looks up from its
        wait for a connection, every 0.5 s: closing took 0-500 ms of the caller's thread,
        the node's event loop, on the way to `runtime.stop()`. A connection of our own
        wakes that thread as soon as shutdown has been asked for.
        """
        stopper = threading.Thread(target=self._server.shutdown, daemon=True)
        stopper.start()
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while stopper.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # refused or reset: it is stopping anyway
                socket.create_connection((BIND_ADDRESS, self.port), timeout=1.0).close()
            stopper.join(0.01)
        self._server.server_close()
        self._thread.join(timeout=CLOSE_TIMEOUT_S)


def serve_node_metrics(runtime: NodeRuntime, port: int) -> MetricsServer:
    """Expose a node; call from its loop (the loop the runtime runs on)."""
    server = MetricsServer(NodeCollector(runtime, LoopReader()), port)
    log.warning("METRICS node=%s url=%s", runtime.node_id, server.url)
    return server


def serve_supervisor_metrics(supervisor: Supervisor, port: int) -> MetricsServer:
    """Expose the supervisor's health view; call from the loop the supervisor runs on."""
    reader = LoopReader()
    server = MetricsServer(SupervisorCollector(supervisor, reader), port)
    log.warning("METRICS supervisor url=%s", server.url)
    return server
