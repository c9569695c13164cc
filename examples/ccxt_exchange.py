"""knightwatch around a ccxt exchange: wrap it once, then trade as usual.

Runs offline against a paper Binance on 127.0.0.1 (`knightwatch.adapters.paper`):
ccxt builds, signs and sends real Binance REST requests; only the URL is local.
A fat finger and a price 50% off the market are refused before any request
leaves; a resting order is filled later and the fill is booked once although
both the order and the trade list report it; a node halt cancels what is open.

    python examples/ccxt_exchange.py          (sync ccxt)
    python examples/ccxt_exchange.py --async  (ccxt.async_support)
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async

from knightwatch import Limits, Scope
from knightwatch.adapters.ccxt import AsyncGuardedExchange, GuardRefused, guard
from knightwatch.adapters.paper import BINANCE_KEY, BINANCE_SECRET, PaperBinance

LIMITS = Limits(
    version="example",
    max_order_qty=50_000,  # units of the market's amount step: 0.5 BTC at 0.00001
    max_position_qty=200_000,  # 2 BTC
    max_order_notional=50_000.0,  # USDT
    price_collar_pct=0.05,
    max_price_age_s=None,
)
SYMBOL = "BTC/USDT"
CONFIG = {
    "apiKey": BINANCE_KEY,
    "secret": BINANCE_SECRET,
    "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
}


async def call(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


async def main(use_async: bool) -> None:
    with PaperBinance(last_price="60000") as venue:
        raw = (ccxt_async.binance if use_async else ccxt.binance)(CONFIG)
        exchange = guard(venue.point(raw), limits=LIMITS, strategy="mm")  # <- the one line
        try:
            await call(exchange.fetch_ticker(SYMBOL))  # the Guard's reference price
            for amount, price in ((0.1, 60_000), (5, 60_000), (0.1, 90_000), (0.2, 59_000)):
                try:
                    o = await call(exchange.create_order(SYMBOL, "limit", "buy", amount, price))
                    print(f"buy {amount} @ {price}: sent, {o['status']}, filled {o['filled']}")
                except GuardRefused as refused:
                    print(f"buy {amount} @ {price}: REFUSED {refused}")
            resting = next(o for o in venue.orders.values() if o.status == "open")
            venue.fill(resting.id, "0.2")
            await call(exchange.fetch_my_trades(SYMBOL))
            await call(exchange.fetch_order(resting.id, SYMBOL))  # same fill again: booked once
            print(f"position {exchange.guard.position(SYMBOL) / 100_000} BTC")
            await call(exchange.create_order(SYMBOL, "limit", "buy", 0.1, 58_000))
            exchange.guard.halt(Scope.NODE, exchange.guard.node, "operator: stop", "example")
            if isinstance(exchange, AsyncGuardedExchange) and exchange.kill_task is not None:
                await exchange.kill_task  # the kill cancels on the event loop
            print(f"after the halt: venue orders {sorted(o.status for o in venue.orders.values())}")
            print(
                f"requests ccxt signed and sent: {len(venue.requests)}, bad signatures: "
                f"{venue.bad_signatures}"
            )
        finally:
            if isinstance(exchange, AsyncGuardedExchange):
                await exchange.close()


if __name__ == "__main__":
    asyncio.run(main("--async" in sys.argv[1:]))
