"""A fleet join that fails part way (`FleetMember.start`) leaves nothing running and the
Guard unarmed: nothing is sent."""

from __future__ import annotations

import socket

import ccxt.async_support as ccxt_async
import pytest

from knightwatch import RejectReason
from knightwatch.adapters.ccxt import AsyncGuardedExchange, GuardRefused, guard
from knightwatch.adapters.paper import BINANCE_KEY, BINANCE_SECRET, PaperBinance
from knightwatch.control.exposition import ExpositionError
from knightwatch.control.site import Site

from .test_ccxt import OPTIONS, limits


async def test_a_join_whose_metrics_port_is_taken_raises_and_leaves_the_node_unarmed(
    nats_server: Site,
) -> None:
    """The metrics endpoint was served after arming: a port in use raised from `join`
    with the Guard armed and the runtime holding the lease, so the program that was told
    joining failed could still send orders (one reached the venue)."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    with busy, PaperBinance("60000") as venue:
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
            metrics_port=busy.getsockname()[1],
        )
        assert isinstance(ex, AsyncGuardedExchange)
        try:
            with pytest.raises(ExpositionError, match="cannot listen"):
                await ex.join()
            assert not ex.guard.armed
            await ex.fetch_ticker("BTC/USDT")
            with pytest.raises(GuardRefused) as refused:
                await ex.create_order("BTC/USDT", "limit", "buy", 0.1, 59_000)
            assert refused.value.decision.reason in (
                RejectReason.NOT_ARMED,
                RejectReason.LEASE_EXPIRED,
            )
            assert not venue.orders
        finally:
            await ex.close()
