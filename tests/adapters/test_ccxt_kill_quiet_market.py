"""Binance answers a cancel-all on a market with nothing open with -2011 (ccxt
OrderNotFound); the kill took it as a failure, retried it 3 times (3 round trips before the
next market was swept) and logged KILL_CANCEL_FAILED three times for a market that had
nothing to cancel."""

from __future__ import annotations

import logging

import ccxt
import pytest

from knightwatch import Limits, Scope
from knightwatch.adapters.ccxt import guard
from knightwatch.adapters.paper import BINANCE_KEY, BINANCE_SECRET, PaperBinance


def test_a_kill_sweeping_a_market_with_nothing_open_is_one_request_and_no_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with PaperBinance("60000") as venue:
        raw = venue.point(
            ccxt.binance(
                {
                    "apiKey": BINANCE_KEY,
                    "secret": BINANCE_SECRET,
                    "enableRateLimit": False,
                    "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
                }
            )
        )
        ex = guard(raw, limits=Limits.off(), strategy="mm")
        ex.start(["BTC/USDT", "ETH/USDT"])
        ex.fetch_ticker("BTC/USDT")
        ex.fetch_ticker("ETH/USDT")
        ex.create_order("BTC/USDT", "limit", "buy", 0.1, 59_000)
        quiet = ex.create_order("ETH/USDT", "limit", "buy", 0.1, 59_000)
        ex.cancel_order(quiet["id"], "ETH/USDT")  # ETH traded, nothing open there now
        n0 = len(venue.requests)
        with caplog.at_level(logging.ERROR):
            ex.guard.halt(Scope.NODE, ex.guard.node, "drill", "test")
        sweeps = [r for r in venue.requests[n0:] if r == ("DELETE", "/api/v3/openOrders")]
        assert len(sweeps) == 2  # one per market (was 4: ETH's tried 3 times)
        assert "KILL_CANCEL_FAILED" not in caplog.text
        assert all(o.status != "open" for o in venue.orders.values())
