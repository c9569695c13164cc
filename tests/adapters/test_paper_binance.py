"""The paper Binance answers as Binance does where the adapter's kill depends on it."""

from __future__ import annotations

import ccxt
import pytest

from knightwatch.adapters.paper import BINANCE_KEY, BINANCE_SECRET, PaperBinance


def test_cancel_all_with_nothing_open_is_refused_as_binance_refuses_it() -> None:
    """Binance answers DELETE /api/v3/openOrders for a symbol with no open order with
    -2011 "Unknown order sent." (ccxt's OrderNotFound); the paper venue answered an empty
    list, so a kill's sweep of a quiet market was never tested against what the venue
    says."""
    with PaperBinance("60000") as venue:
        ex = venue.point(
            ccxt.binance(
                {
                    "apiKey": BINANCE_KEY,
                    "secret": BINANCE_SECRET,
                    "enableRateLimit": False,
                    "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
                }
            )
        )
        ex.load_markets()
        with pytest.raises(ccxt.OrderNotFound, match="Unknown order sent"):
            ex.cancel_all_orders("BTC/USDT")
        ex.create_order("BTC/USDT", "limit", "buy", 0.1, 59_000)
        cancelled = ex.cancel_all_orders("BTC/USDT")
        assert [o["status"] for o in cancelled] == ["canceled"]
        with pytest.raises(ccxt.OrderNotFound):
            ex.cancel_all_orders("BTC/USDT")  # the one order is gone: nothing open again
