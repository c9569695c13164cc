"""A fleet kill from a real control plane (nats-server) reaching a ccxt process.

The process wraps an async ccxt exchange pointed at the fake Binance over HTTP
and joins the fleet with `guard(..., control_plane=url)` + `join()`; the
operator issues the kill through `KillSwitch` on its own connection.
"""

from __future__ import annotations

import ccxt.async_support as ccxt_async
import pytest

from knightwatch import RejectReason, Scope
from knightwatch.adapters.ccxt import AsyncGuardedExchange, GuardRefused, guard
from knightwatch.adapters.paper import BINANCE_KEY, BINANCE_SECRET, PaperBinance
from knightwatch.control.site import Site

from ..identities import BOB
from .test_ccxt import OPTIONS, limits


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
            result = await ks.kill(Scope.FLEET, "fleet", "drill: crypto stop", timeout_s=5.0)
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
                Scope.FLEET, "fleet", "drill over", timeout_s=5.0, approvers=(BOB,)
            )
            assert "crypto-1" in resumed.latencies_ms
            await ex.create_order("BTC/USDT", "limit", "buy", 0.1, 59_000)
            assert sum(o.status == "open" for o in venue.orders.values()) == 1
            assert venue.bad_signatures == 0
        finally:
            await ex.close()
            await operator.close()
