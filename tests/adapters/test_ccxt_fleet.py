"""A fleet kill from a real control plane (nats-server) reaching a ccxt process.

The process wraps a ccxt exchange (async, and sync) pointed at the fake
Binance over HTTP and joins the fleet with `guard(..., control_plane=url)` +
`join()`; the operator issues the kill through `KillSwitch` on its own
connection. The sync exchange's node runtime runs on a loop thread of its own,
and the kill cancels from a third thread.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from knightwatch import RejectReason, Scope, TradingState
from knightwatch.adapters.ccxt import AsyncGuardedExchange, GuardedExchange, GuardRefused, guard
from knightwatch.adapters.fleet import LockedWatchedGuard
from knightwatch.adapters.paper import BINANCE_KEY, BINANCE_SECRET, PaperBinance
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.site import Site

from ..identities import BOB
from .test_ccxt import OPTIONS, limits

WAIT_S = 15.0
"""For what a test expects over real NATS and HTTP: a loaded CI machine may take seconds
(a wait that succeeds returns at once)."""


async def test_a_fleet_kill_cancels_a_ccxt_process_open_orders(
    nats_server: Site,
) -> None:
    with PaperBinance("60000") as venue:
        raw = ccxt_async.binance(
            {"apiKey": BINANCE_KEY, "secret": BINANCE_SECRET, "options": OPTIONS}
        )
        ex = guard(
            venue.point(raw),
            limits=limits("0.00001"),
            node="crypto-1",
            strategy="mm",
            control_plane=nats_server.url,
            key=nats_server.key_path("crypto-1"),
            anchor=nats_server.anchor_path,
        )
        assert isinstance(ex, AsyncGuardedExchange)
        operator = nats_server.plane("alice")
        try:
            with pytest.raises(GuardRefused) as early:  # not joined: nothing leaves
                await ex.create_order("BTC/USDT", "limit", "buy", 0.1, 59_000)
            assert early.value.decision.reason is RejectReason.NOT_ARMED
            await ex.join()
            await ex.fetch_ticker("BTC/USDT")
            for px in (58_000, 58_500, 59_000):
                await ex.create_order("BTC/USDT", "limit", "buy", 0.1, px)
            assert sum(o.status == "open" for o in venue.orders.values()) == 3

            await operator.connect()
            ks = nats_server.killswitch(operator, "alice")
            result = await ks.kill(Scope.FLEET, "fleet", "drill: crypto stop", timeout_s=WAIT_S)
            assert "crypto-1" in result.latencies_ms and not result.missing
            assert ex.kill_task is not None
            await ex.kill_task
            assert {o.status for o in venue.orders.values()} == {"canceled"}
            assert ex.guard.working_qty("BTC/USDT") == (0, 0)
            posts = len(venue.requests)
            with pytest.raises(GuardRefused) as halted:
                await ex.create_order("BTC/USDT", "limit", "buy", 0.1, 59_000)
            assert halted.value.decision.reason is RejectReason.HALTED
            assert len(venue.requests) == posts

            resumed = await ks.resume(
                Scope.FLEET, "fleet", "drill over", timeout_s=WAIT_S, approvers=(BOB,)
            )
            assert "crypto-1" in resumed.latencies_ms
            await ex.create_order("BTC/USDT", "limit", "buy", 0.1, 59_000)
            assert sum(o.status == "open" for o in venue.orders.values()) == 1
            assert venue.bad_signatures == 0
        finally:
            await ex.close()
            await operator.close()


def sync_node(site: Site, venue: PaperBinance, recorder: Path | None = None) -> GuardedExchange:
    raw = ccxt.binance({"apiKey": BINANCE_KEY, "secret": BINANCE_SECRET, "options": OPTIONS})
    ex = guard(
        venue.point(raw),
        limits=limits("0.00001"),
        node="crypto-1",
        strategy="mm",
        control_plane=site.url,
        key=site.key_path("crypto-1"),
        anchor=site.anchor_path,
        recorder=recorder,
        metrics_port=0,
    )
    assert isinstance(ex, GuardedExchange)
    assert isinstance(ex.guard, LockedWatchedGuard)  # called from two threads
    return ex


async def test_a_fleet_kill_cancels_a_sync_ccxt_process_open_orders(
    nats_server: Site, tmp_path: Path
) -> None:
    rec = tmp_path / "crypto-1.jsonl"
    with PaperBinance("60000") as venue:
        ex = sync_node(nats_server, venue, rec)
        operator = nats_server.plane("alice")
        try:
            with pytest.raises(GuardRefused) as early:  # not joined: nothing leaves
                ex.create_order("BTC/USDT", "limit", "buy", 0.1, 59_000)
            assert early.value.decision.reason is RejectReason.NOT_ARMED
            ex.join()
            assert ex.guard.armed
            runtime = ex.member.runtime if ex.member is not None else None
            assert runtime is not None and runtime.release_admitted
            assert ex.member is not None and ex.member.exposition is not None  # metrics served
            ex.fetch_ticker("BTC/USDT")
            for px in (58_000, 58_500, 59_000):
                ex.create_order("BTC/USDT", "limit", "buy", 0.1, px)
            assert sum(o.status == "open" for o in venue.orders.values()) == 3

            await operator.connect()
            ks = nats_server.killswitch(operator, "alice")
            result = await ks.kill(Scope.FLEET, "fleet", "drill: crypto stop", timeout_s=WAIT_S)
            assert "crypto-1" in result.latencies_ms and not result.missing
            assert ex.kill_thread is not None
            ex.kill_thread.join(WAIT_S)
            assert not ex.kill_thread.is_alive()
            assert {o.status for o in venue.orders.values()} == {"canceled"}
            assert ex.guard.working_qty("BTC/USDT") == (0, 0)
            posts = len(venue.requests)
            with pytest.raises(GuardRefused) as halted:
                ex.create_order("BTC/USDT", "limit", "buy", 0.1, 59_000)
            assert halted.value.decision.reason is RejectReason.HALTED
            assert len(venue.requests) == posts

            resumed = await ks.resume(
                Scope.FLEET, "fleet", "drill over", timeout_s=WAIT_S, approvers=(BOB,)
            )
            assert "crypto-1" in resumed.latencies_ms
            ex.create_order("BTC/USDT", "limit", "buy", 0.1, 59_000)
            assert sum(o.status == "open" for o in venue.orders.values()) == 1
            assert venue.bad_signatures == 0
        finally:
            loop = ex._loop
            ex.close()
            await operator.close()
        assert loop is not None and not loop.thread.is_alive()  # the runtime's thread is gone
        ex.guard.recorder.close()
    kinds = [json.loads(line).get("kind") for line in rec.read_text().splitlines()]
    # the flight recorder holds the kill, the cancels it caused and the resume
    assert "halt" in kinds and kinds.count("cancel") >= 3 and "resume" in kinds


async def test_a_sync_kill_refuses_at_once_and_cancels_once_the_call_in_flight_returns(
    nats_server: Site,
) -> None:
    with PaperBinance("60000") as venue:
        ex = sync_node(nats_server, venue)
        operator = nats_server.plane("alice")
        try:
            ex.join()
            ex.fetch_ticker("BTC/USDT")
            ex.create_order("BTC/USDT", "limit", "buy", 0.1, 58_000)
            await operator.connect()
            ks = nats_server.killswitch(operator, "alice")
            with ex.calls:  # the program is inside a call to the exchange (an HTTP request)
                result = await ks.kill(Scope.FLEET, "fleet", "drill", timeout_s=WAIT_S)
                # the kill is confirmed and the Guard refuses without waiting for the call
                assert "crypto-1" in result.latencies_ms
                assert ex.guard.node_state() is TradingState.HALTED
                posts = len(venue.requests)
                with pytest.raises(GuardRefused):
                    ex.create_order("BTC/USDT", "limit", "buy", 0.1, 58_000)
                assert len(venue.requests) == posts
                assert ex.kill_thread is not None and ex.kill_thread.is_alive()
                assert [o.status for o in venue.orders.values()] == ["open"]  # not yet
            ex.kill_thread.join(WAIT_S)
            assert [o.status for o in venue.orders.values()] == ["canceled"]
            assert ex.guard.working_qty("BTC/USDT") == (0, 0)
        finally:
            ex.close()
            await operator.close()
        assert not [t for t in threading.enumerate() if t.name.startswith("knightwatch-")]


def test_a_sync_join_that_fails_raises_and_leaves_no_thread_behind(nats_server: Site) -> None:
    with PaperBinance("60000") as venue:
        raw = ccxt.binance({"apiKey": BINANCE_KEY, "secret": BINANCE_SECRET, "options": OPTIONS})
        ex = guard(
            venue.point(raw),
            limits=limits("0.00001"),
            node="crypto-1",
            control_plane="nats://127.0.0.1:1",  # nothing listens there
            key=nats_server.key_path("crypto-1"),
            anchor=nats_server.anchor_path,
        )
        assert isinstance(ex, GuardedExchange)
        with pytest.raises(ControlPlaneUnavailable, match=r"unreachable at nats://127\.0\.0\.1:1"):
            ex.join(timeout_s=20.0)
        assert not [t for t in threading.enumerate() if t.name == "knightwatch-crypto-1"]
        with pytest.raises(GuardRefused) as refused:  # never armed: nothing leaves
            ex.create_order("BTC/USDT", "limit", "buy", 0.1, 59_000)
        assert refused.value.decision.reason is RejectReason.NOT_ARMED
        assert [path for _, path in venue.requests if "order" in path.lower()] == []


async def test_a_sync_nodes_own_halt_on_the_programs_thread_cancels_after_the_call(
    nats_server: Site,
) -> None:
    with PaperBinance("60000") as venue:
        ex = sync_node(nats_server, venue)
        try:
            ex.join()
            ex.fetch_ticker("BTC/USDT")
            order = ex.create_order("BTC/USDT", "limit", "buy", 0.1, 58_000)
            with ex.calls:  # inside a call, the venue reports half a step filled: unbookable
                ex.ledger.apply_order({"id": order["id"], "filled": "0.000005", "status": "open"})
                halt = ex.guard.halts()[(Scope.NODE, "crypto-1")]
                assert halt.code is RejectReason.FILL_MISMATCH
                # the cancels wait on a kill thread, never inside the program's own call
                assert ex.kill_thread is not None and ex.kill_thread.is_alive()
                assert venue.orders[order["id"]].status == "open"
            ex.kill_thread.join(WAIT_S)
            assert venue.orders[order["id"]].status == "canceled"
        finally:
            ex.close()
