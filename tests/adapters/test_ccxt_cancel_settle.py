"""The ccxt adapter when an answer ends an order without saying how much of it filled.

Kraken answers a cancel with a count, not the order, and its WebSocket `canceled`
update names no market, side or quantity (ccxt reads its `cum_qty` as the amount and
gives no `filled`). The Guard went on counting such an order as working until some
other read named it: a desk that cancelled its orders through the wrapper was refused
its next one (`max_position`, the cancelled orders' worst case still counted), and an
order cancelled after a partial fill stayed working for good. Now the order is read
back (`fetch_order`) as the call that cancelled it, or that read such an update, ends.
Against the paper venues over real HTTP (and the paper Kraken's WebSocket), as
test_ccxt.py.
"""

from __future__ import annotations

import asyncio

import ccxt
import ccxt.pro as ccxt_pro
import pytest

from knightwatch.adapters.ccxt import AsyncGuardedExchange, guard
from knightwatch.adapters.paper import KRAKEN_KEY, KRAKEN_SECRET, PaperKraken, PaperKrakenStream
from knightwatch.adapters.units import Units

from .test_ccxt import World, limits, run
from .test_ccxt import world as world


async def test_orders_cancelled_through_the_wrapper_stop_counting_at_once(world: World) -> None:
    ex, sym, venue = world.ex, world.symbol, world.venue
    ids = [(await run(ex.create_order(sym, "limit", "buy", 0.5, 59_000)))["id"] for _ in range(3)]
    partial = (await run(ex.create_order(sym, "limit", "buy", 0.5, 59_000)))["id"]
    venue.fill(partial, "0.05")  # filled in part at the venue, not read here yet
    for xid in [*ids, partial]:
        await run(ex.cancel_order(xid, sym))
    assert ex.guard.working_qty(sym) == (0, 0)
    assert ex.guard.position(sym) == world.u("0.05")
    # the worst case is the position alone again: a full-size order passes
    await run(ex.create_order(sym, "limit", "buy", 0.5, 59_000))
    assert not ex.guard.halts()


async def test_a_cancel_all_answered_with_a_count_stops_counting_every_order(world: World) -> None:
    ex, sym, venue = world.ex, world.symbol, world.venue
    for _ in range(4):
        await run(ex.create_order(sym, "limit", "buy", 0.5, 59_000))
    await run(ex.cancel_all_orders(sym))
    assert all(o.status == "canceled" for o in venue.orders.values())
    assert ex.guard.working_qty(sym) == (0, 0)
    await run(ex.create_order(sym, "limit", "buy", 0.5, 59_000))


async def test_a_streamed_cancel_after_a_partial_fill_ends_the_order() -> None:
    """Kraken's `canceled` update of an order filled in part: its fill count is not in it
    (ccxt gives `filled` None, the cost filled so far nonzero), so it could not end the
    order; the order is read back and ends with its fill booked."""
    sym = "BTC/USD"
    u = Units("0.00000001")
    with PaperKraken("60000") as venue, PaperKrakenStream(venue) as stream:
        raw = ccxt_pro.kraken({"apiKey": KRAKEN_KEY, "secret": KRAKEN_SECRET})
        ex = guard(stream.point(raw), limits=limits("0.00000001"), strategy="mm")
        assert isinstance(ex, AsyncGuardedExchange)
        try:
            await ex.fetch_ticker(sym)
            resting = await ex.create_order(sym, "limit", "buy", 0.2, 58_000)
            # Kraken's status updates name no market: ccxt hands them only to a watch
            # naming none
            update = asyncio.create_task(ex.watch_orders())
            for _ in range(750):  # until ccxt has subscribed with its token (up to 15 s)
                if stream.subscribers:
                    break
                await asyncio.sleep(0.02)
            venue.fill(resting["id"], "0.05")  # an execution: ccxt's trades, not orders
            venue.cancel(resting["id"])  # e.g. from the venue's screen
            (seen,) = await asyncio.wait_for(update, 10)
            assert seen["symbol"] is None and seen["filled"] is None and seen["cost"]
            assert ex.guard.working_qty(sym) == (0, 0)
            assert ex.guard.position(sym) == u.to_units("0.05")
            assert not ex.guard.halts()
        finally:
            await ex.close()
        assert venue.bad_signatures == 0


async def test_a_cancel_too_late_reads_back_how_the_order_ended(world: World) -> None:
    """The order filled at the venue before the cancel reached it: the venue no longer
    holds it (`OrderNotFound`), and the fill is read back at once, not left working."""
    ex, sym, venue = world.ex, world.symbol, world.venue
    order = await run(ex.create_order(sym, "limit", "buy", 0.2, 59_000))
    venue.fill(order["id"], "0.2")  # not read here yet
    with pytest.raises(ccxt.OrderNotFound):
        await run(ex.cancel_order(order["id"], sym))
    assert ex.guard.working_qty(sym) == (0, 0)
    assert ex.guard.position(sym) == world.u("0.2")
    assert not ex.guard.halts()
