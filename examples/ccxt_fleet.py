"""A ccxt process as a knightwatch fleet node: join with one call, then a kill cancels its orders.

Offline: an embedded nats-server on 127.0.0.1, with authorization from a
signed roster, is the control plane; a paper Binance on 127.0.0.1 is the venue.
The process wraps an async ccxt exchange with `control_plane=` and its node's
enrolled key and the fleet's trust anchor, joins (lease, kill state, metrics,
flight recorder), rests three orders; alice's signed kill halts the fleet; the
node verifies it, confirms, cancels its open orders at the venue and refuses
new ones until a resume alice requested and bob approved.

With `--sync` the process wraps a sync ccxt exchange instead: `join()` runs
the node runtime on a loop thread of its own, and the kill cancels from a
kill thread (here the operator shares the process only to keep it offline).

    python examples/ccxt_fleet.py [--sync]
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import tempfile
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async

from knightwatch import Limits, Scope
from knightwatch.adapters.ccxt import AsyncGuardedExchange, GuardedExchange, GuardRefused, guard
from knightwatch.adapters.paper import BINANCE_KEY, BINANCE_SECRET, PaperBinance
from knightwatch.control.site import Site

SYMBOL = "BTC/USDT"
LIMITS = Limits(
    version="example",
    max_order_qty=50_000,  # 0.5 BTC in units of the 0.00001 step
    max_order_notional=50_000.0,
    max_price_age_s=None,
)
CONFIG = {
    "apiKey": BINANCE_KEY,
    "secret": BINANCE_SECRET,
    "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
}


async def call(value: Any) -> Any:
    """One call on either wrapper: awaited for the async exchange, plain for the sync one."""
    return await value if inspect.isawaitable(value) else value


async def main(state: Path, sync: bool) -> None:
    site = Site(state / "site", nodes=["crypto-1"])  # keys, signed roster, authorized server
    url = await site.astart()
    with PaperBinance("60000") as venue:
        exchange = guard(
            venue.point(ccxt.binance(CONFIG) if sync else ccxt_async.binance(CONFIG)),
            limits=LIMITS,
            node="crypto-1",
            control_plane=url,  # <- joins the fleet ...
            key=site.key_path("crypto-1"),  # ... as its enrolled identity
            anchor=site.anchor_path,
            recorder=state / "audit" / "crypto-1.jsonl",
        )
        assert isinstance(exchange, GuardedExchange if sync else AsyncGuardedExchange)
        operator = site.plane("alice")
        try:
            await call(exchange.join())  # <- ... here: lease, kill state, metrics, then armed
            await call(exchange.fetch_ticker(SYMBOL))
            for price in (58_000, 58_500, 59_000):
                await call(exchange.create_order(SYMBOL, "limit", "buy", 0.1, price))
            print(f"open at the venue: {sum(o.status == 'open' for o in venue.orders.values())}")

            await operator.connect()
            switch = site.killswitch(operator, "alice")
            kill = await switch.kill(Scope.FLEET, "fleet", "example: stop everything")
            print(f"kill confirmed by {sorted(kill.latencies_ms)} in {kill.latencies_ms}")
            if isinstance(exchange, AsyncGuardedExchange) and exchange.kill_task is not None:
                await exchange.kill_task  # the node cancels on its own event loop
            elif isinstance(exchange, GuardedExchange) and exchange.kill_thread is not None:
                exchange.kill_thread.join(10.0)  # the sync node cancels on a kill thread
            print(f"venue orders after the kill: {sorted(o.status for o in venue.orders.values())}")
            try:
                await call(exchange.create_order(SYMBOL, "limit", "buy", 0.1, 59_000))
            except GuardRefused as refused:
                print(f"new order while killed: REFUSED {refused}")
            await switch.resume(
                Scope.FLEET, "fleet", "example: all clear", approvers=(site.signer("bob"),)
            )
            await call(exchange.create_order(SYMBOL, "limit", "buy", 0.1, 59_000))
            print("after the resume: a new order went out")
        finally:
            await call(exchange.close())
            await operator.close()
            site.stop()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp), sync="--sync" in sys.argv[1:]))
