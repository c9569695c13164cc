"""The ccxt adapter when the HTTP exchange breaks after the venue took an order.

ccxt raises a plain `ExchangeError`, the class a venue's refusal has, for transport
failures it has no class for: an HTTP status outside its table (a CDN's 524 "a timeout
occurred": the venue got the order, its answer never came back) on the sync exchange, an
answer that breaks off halfway (aiohttp's payload error) on the async one. Read as a
refusal, the Guard gave the order's working quantity back while it rested at the venue.
Against the paper venues over real HTTP, as test_ccxt.py.
"""

from __future__ import annotations

import ccxt
import pytest

from knightwatch.adapters.ccxt import AsyncGuardedExchange, _refused

from .test_ccxt import World, run
from .test_ccxt import world as world


@pytest.mark.parametrize("fault", ["http_524_after_accept", "cut_after_accept"])
async def test_a_broken_answer_to_a_taken_order_leaves_it_working_in_doubt(
    world: World, fault: str
) -> None:
    ex, sym, venue = world.ex, world.symbol, world.venue
    venue.fault = fault
    page = fault == "http_524_after_accept" and isinstance(ex, AsyncGuardedExchange)
    if page:  # async ccxt raises nothing for a status it has no class for: the page is the
        # answer, an order with no id, which the client id binds later
        answer = await run(
            ex.create_order(sym, "limit", "buy", 0.3, 59_000, {"clientOrderId": "cid-1"})
        )
        assert answer["id"] is None
    else:
        with pytest.raises(ccxt.BaseError):
            await run(ex.create_order(sym, "limit", "buy", 0.3, 59_000, {"clientOrderId": "cid-1"}))
        assert list(ex.ledger.in_doubt) == ["cid-1"]
    (live,) = [o for o in venue.orders.values() if o.status == "open"]  # the venue took it
    assert ex.guard.working_qty(sym) == (world.u("0.3"), 0)  # still counted
    await run(ex.fetch_open_orders(sym))  # its client id binds it again
    assert not ex.ledger.in_doubt
    venue.fill(live.id, "0.3")
    await run(ex.fetch_my_trades(sym))
    assert ex.guard.position(sym) == world.u("0.3")
    assert ex.guard.working_qty(sym) == (0, 0)


def test_a_venue_refusal_is_still_a_refusal() -> None:
    """What the venue itself answered (an error code it mapped, or one it did not know)
    gives the reservation back; a transport failure ccxt wrapped does not."""
    assert _refused(ccxt.InsufficientFunds("binance {'code': -2010}"))
    assert _refused(ccxt.ExchangeError("kraken {'error': ['EGeneral:Unknown']}"))
    try:
        try:
            raise OSError("connection reset mid-body")
        except OSError as e:
            raise ccxt.ExchangeError("binance POST https://api.binance.com/api/v3/order") from e
    except ccxt.ExchangeError as wrapped:
        assert not _refused(wrapped)
