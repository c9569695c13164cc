"""The gateway as a fleet node: a real nats-server, the node runtime, kills with venue cancels."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from knightwatch.audit import FlightRecorder, MemorySink
from knightwatch.clock import SystemClock
from knightwatch.control.exposition import LoopReader, MetricsServer, NodeCollector
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.fleet.supervisor_service import AutoHaltRelay
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.server import free_port
from knightwatch.control.site import Site
from knightwatch.decision import RejectReason
from knightwatch.gateway import fields as F
from knightwatch.gateway.client import FixClient
from knightwatch.gateway.config import ClientSession, GatewayConfig, VenueSession
from knightwatch.gateway.engine import GatewayError
from knightwatch.gateway.service import GatewayHost
from knightwatch.gateway.venue import FixVenue, VenueOrder
from knightwatch.guard import LockedGuard
from knightwatch.state import Scope, TradingState

from .conftest import LIMITS, SYMBOLS, WAIT_S, Client, eventually

POLICY = LeasePolicy()


@dataclass
class Node:
    venue: FixVenue
    host: GatewayHost
    runtime: NodeRuntime
    guard: LockedGuard
    recorder: FlightRecorder
    oms: FixClient
    switch: KillSwitch

    def rest(self, clordid: str, qty: int = 100, symbol: str = "L000") -> None:
        px = round(self.venue.books[symbol].touch(False) - 0.5, 2)
        self.oms.new_order(clordid, symbol, "1", qty, px)
        self.oms.wait_report(clordid, "0")


@contextlib.asynccontextmanager
async def start_node(server: Site, root: Path, **cfg: Any) -> AsyncIterator[Node]:
    venue_port, gw_port = free_port(), free_port()
    venue = FixVenue(
        root / "venue",
        port=venue_port,
        sessions=["KWGW"],
        store="memory",
        md_interval_s=0.5,
        log_messages=False,
    )
    venue.start()
    config = GatewayConfig(
        listen_port=gw_port,
        venue=VenueSession(port=venue_port, market_data=SYMBOLS),
        clients=(ClientSession("OMS1"),),
        node="gw",
        store="memory",
        assume_flat=True,
        **cfg,
    )
    clock = SystemClock()
    recorder = FlightRecorder(None, clock=clock, sink=MemorySink())
    limits = msgspec.structs.replace(LIMITS, lease_timeout_s=POLICY.lease_timeout_s)
    guard = LockedGuard(limits, node="gw", clock=clock, recorder=recorder)
    plane = server.plane("gw")
    await plane.connect()
    runtime = NodeRuntime(
        guard,
        plane,
        clock=clock,
        policy=POLICY,
        metrics_s=0.2,
        trust=server.store(),
        signer=server.signer("gw"),
    )
    host = GatewayHost(config, root / "gw", log_messages=False)
    ops = server.plane("alice")
    await ops.connect()
    relay = server.plane("supervisor")  # stores nodes' signed automatic halts, as live
    await relay.connect()
    await AutoHaltRelay(server.killswitch(relay, "supervisor")).start()
    oms = Client(root / "oms", comp_id="OMS1", target="KWGW", port=gw_port)
    stop = asyncio.Event()
    try:
        await runtime.start()
        await host.prepare(runtime, stop)
        runtime.arm("test")
        oms.start()
        await asyncio.to_thread(oms.wait_logon)
        for s in SYMBOLS:
            await asyncio.to_thread(eventually, lambda s=s: guard.exposure() and _priced(guard, s))
        yield Node(venue, host, runtime, guard, recorder, oms, server.killswitch(ops, "alice"))
    finally:
        await runtime.stop()
        await asyncio.to_thread(oms.stop)
        await host.close()
        await asyncio.to_thread(venue.stop)
        await plane.close()
        await ops.close()
        await relay.close()


def _priced(guard: LockedGuard, symbol: str) -> bool:
    with guard.lock:
        book = guard._ledger.books.get(symbol)
        return book is not None and book.ref is not None


@pytest.fixture
async def node(nats_server: Site, tmp_path: Path) -> AsyncIterator[Node]:
    async with start_node(nats_server, tmp_path) as n:
        yield n


DRAIN_S = 10.0
"""A drain timeout the venue's cancels beat even on a loaded machine (the default 1.5 s)."""


async def test_kill_cancels_at_the_venue_and_confirms_when_nothing_works(
    nats_server: Site, tmp_path: Path
) -> None:
    async with start_node(nats_server, tmp_path, kill_drain_timeout_s=DRAIN_S) as node:
        for cid in ("K1", "K2", "K3"):
            await asyncio.to_thread(node.rest, cid)
        result = await node.switch.kill(Scope.FLEET, "fleet", "runaway drill", timeout_s=WAIT_S)
        assert result.ok and result.targets == ["gw"] and result.still_working == {}
        assert node.venue.working() == []  # confirmed only once the venue had cancelled all three
        for cid in ("K1", "K2", "K3"):
            er = await asyncio.to_thread(node.oms.wait_report, cid, "4")
            assert er.get(F.TEXT) == "knightwatch kill: runaway drill"
        assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        (command, took, left) = node.host.drains[-1]
        # the drain ended on the venue's answers, before its timeout
        assert command == result.entry.command_id and left == [] and took < DRAIN_S
        node.oms.new_order("K4", "L000", "1", 100, 101.0)
        rej = await asyncio.to_thread(node.oms.wait_report, "K4", "8")
        assert rej.get(F.TEXT).startswith("knightwatch:halted ")


async def test_kill_reports_orders_still_working_at_the_timeout(
    nats_server: Site, tmp_path: Path
) -> None:
    async with start_node(nats_server, tmp_path, kill_drain_timeout_s=0.3) as n:
        await asyncio.to_thread(n.rest, "T1")
        held, released = threading.Event(), threading.Event()

        def hold_venue() -> None:
            with n.venue.lock:  # the venue stops answering: its cancels cannot come back
                held.set()
                released.wait(60)

        holder = threading.Thread(target=hold_venue)
        holder.start()
        try:
            # held before the kill is sent, not after its cancel was answered
            assert await asyncio.to_thread(held.wait, WAIT_S), "the venue was not held"
            result = await n.switch.kill(Scope.SYMBOL, "L000", "stuck venue", timeout_s=WAIT_S)
        finally:
            released.set()
            holder.join()
        assert result.latencies_ms.keys() == {"gw"}  # confirmed: the Guard blocks
        assert result.still_working == {"gw": ["OMS1:T1"]} and not result.ok
        await asyncio.to_thread(n.oms.wait_report, "T1", "4")  # the cancel lands afterwards


async def test_a_halt_decided_on_an_engine_thread_is_stored_and_drained(node: Node) -> None:
    await asyncio.to_thread(node.rest, "A1")
    node.venue.stray_fill("KWGW", "GHOST", "M000", "1", 100)

    async def stored() -> Any:
        entry, _ = await node.switch.plane.get_state(Scope.NODE, "gw")
        return entry

    deadline = time.monotonic() + WAIT_S
    while (entry := await stored()) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert entry is not None and entry.actor == f"guard:{RejectReason.FILL_MISMATCH.value}"
    # the node hears its own halt back and drains: the working order is cancelled at the venue
    await asyncio.to_thread(node.oms.wait_report, "A1", "4")
    assert node.venue.working() == []


async def test_node_metrics_count_the_gateway_flow(node: Node) -> None:
    node.oms.new_order("M1", "L000", "1", 100, 101.0)
    await asyncio.to_thread(node.oms.wait_report, "M1", "F")
    node.oms.new_order("M2", "L000", "1", 90_000, 101.0)
    await asyncio.to_thread(node.oms.wait_report, "M2", "8")
    m = node.runtime.metrics()
    assert (m.accepted, m.rejected, m.fills) == (1, 1, 1)
    assert m.blocks == {"max_order_qty": 1}


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_the_gateways_counters_and_sessions_are_scraped_beside_the_nodes(
    node: Node,
) -> None:
    """`Gateway.counts` was kept but exported nowhere: the host's collector, on the node's
    metrics registry, serves them over HTTP (labels bounded: the event names the gateway
    counts, the configured client CompIDs), read live at each scrape."""
    server = MetricsServer(NodeCollector(node.runtime, LoopReader()), 0)
    server.registry.register(node.host.collector)
    try:

        def val(samples: dict[Any, float], name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted({"node": "gw", **labels}.items())))]

        before = await asyncio.to_thread(_scrape, server.url)
        assert val(before, "knightwatch_gateway_venue_session_up") == 1
        assert val(before, "knightwatch_gateway_client_session_up", session="OMS1") == 1
        assert val(before, "knightwatch_gateway_reconciled") == 1
        assert val(before, "knightwatch_gateway_events_total", event="unknown_reports") == 0
        assert val(before, "knightwatch_armed") == 1  # the node's own, on the same endpoint
        await asyncio.to_thread(node.rest, "P1")
        node.oms.new_order("P2", "L000", "1", 90_000, 101.0)
        await asyncio.to_thread(node.oms.wait_report, "P2", "8")
        after = await asyncio.to_thread(_scrape, server.url)
        for event, moved in (("forwarded", 1), ("refused", 1), ("relayed", 1)):
            name = "knightwatch_gateway_events_total"
            assert val(after, name, event=event) - val(before, name, event=event) >= moved
        assert val(after, "knightwatch_gateway_working_orders") == 1
        labels = {dict(k[1]).get("event") for k in after if k[0].startswith("knightwatch_gateway")}
        assert "P1" not in labels and "P2" not in labels
    finally:
        server.close()


def test_every_event_the_gateway_counts_is_always_exposed() -> None:
    """`GATEWAY_EVENTS` names every count the gateway keeps (`Gateway._count`), so each is
    exposed from 0 and a dashboard's query never finds it missing before it first happens."""
    import re

    from knightwatch.gateway import gateway as gw_module
    from knightwatch.gateway.metrics import GATEWAY_EVENTS

    source = Path(gw_module.__file__).read_text(encoding="utf-8")
    counted = set(re.findall(r'_count\("([a-z_]+)"\)', source))
    # callback_errors is read from `Handler.errors`, which every caught error counts
    assert counted and counted | {"callback_errors"} == set(GATEWAY_EVENTS)


async def test_start_up_timeout_names_a_mass_status_whose_last_report_never_came(
    nats_server: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The venue session logs on and answers the start-up mass status with one report of
    two, never the last: start-up fails at `reconcile_timeout_s` after the logon saying
    so. Before, it waited 30 s more and asked whether the venue session was logging on."""
    venue_port = free_port()
    venue = FixVenue(
        tmp_path / "venue",
        port=venue_port,
        sessions=["KWGW"],
        store="memory",
        md_interval_s=0.5,
        log_messages=False,
    )

    def first_of_two(msg: F.In, sid: Any, key: str) -> None:
        o = VenueOrder("W1", "V1", sid, "L000", "1", Decimal(100), 99.0, "2", "0")
        extra = [(F.MASS_STATUS_REQ_ID, msg[F.MASS_STATUS_REQ_ID]), (F.TOT_NUM_REPORTS, "2"),
                 (F.LAST_RPT_REQUESTED, "N")]  # fmt: skip
        venue._report(o, "I", extra=extra)

    monkeypatch.setattr(venue, "_mass_status", first_of_two)
    venue.start()
    config = GatewayConfig(
        listen_port=free_port(),
        venue=VenueSession(port=venue_port),
        clients=(ClientSession("OMS1"),),
        node="gw",
        store="memory",
        assume_flat=True,
        reconcile_timeout_s=0.5,
    )
    clock = SystemClock()
    recorder = FlightRecorder(None, clock=clock, sink=MemorySink())
    limits = msgspec.structs.replace(LIMITS, lease_timeout_s=POLICY.lease_timeout_s)
    guard = LockedGuard(limits, node="gw", clock=clock, recorder=recorder)
    plane = nats_server.plane("gw")
    await plane.connect()
    runtime = NodeRuntime(
        guard,
        plane,
        clock=clock,
        policy=POLICY,
        trust=nats_server.store(),
        signer=nats_server.signer("gw"),
    )
    host = GatewayHost(config, tmp_path / "gw", log_messages=False)
    try:
        with pytest.raises(GatewayError) as err:
            await host.prepare(runtime, asyncio.Event())
    finally:
        await host.close()
        await asyncio.to_thread(venue.stop)
        await plane.close()
    text = str(err.value)
    assert text.startswith("reconciliation did not complete: the venue session (127.0.0.1:")
    assert ") is logged on, but the mass status did not finish within " in text
    assert "reconcile_timeout_s=0.5 s of the logon" in text
    assert "1 report(s) answered the OrderMassStatusRequest KWMS" in text
    assert "the last (LastRptRequested(912)=Y) never came" in text
    assert "logging on" not in text and not guard.armed
