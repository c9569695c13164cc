"""Orders opened at the venue by another program after the ccxt wrapper started a market.

The start read adopts what is open when a market starts; a program sharing the account
(or a hand on the venue's screen) can open more afterwards. Before, updates for such
orders were ignored: they counted against no limit while they could fill. Now an open
order not followed here, reported by any order update the wrapper reads, is adopted (its
fills so far booked: they are not in the starting position); a trade of an order not
followed here makes the next order in that market read its open orders again first.
The other program is a second, raw ccxt exchange on the same paper venue, over HTTP.
"""

from __future__ import annotations

from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from knightwatch import RejectReason, Scope
from knightwatch.adapters.ccxt import AsyncGuardedExchange, GuardRefused, guard
from knightwatch.adapters.fleet import AdapterError
from knightwatch.adapters.units import Units

from .test_ccxt import SPECS, Spec, answers, limits, make_exchange, run
from .test_ccxt_open_orders import placed, started

R = RejectReason
MODES = [(s, m) for s in SPECS for m in ("sync", "async")]
IDS = [f"{s.name}-{m}" for s, m in MODES]


@pytest.mark.parametrize("read", ["fetch_open_orders", "fetch_order"])
@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_an_order_opened_elsewhere_after_the_start_is_adopted_when_reported(
    spec: Spec, mode: str, read: str
) -> None:
    """The market started empty; another program then opened a 1.6 BTC buy and 0.1 of
    it filled. A read naming it (the open orders, or the order itself) adopts it: 0.1 in
    the position, 1.5 working, so a 0.5 buy (0.1 + 1.5 + 0.5 > 2) is refused and nothing
    sent. Its later fills and its cancel apply once."""
    u = Units(spec.step)
    async with started(spec, mode, []) as (ex, venue, _):
        sym = spec.symbol
        other = make_exchange(spec, venue, "sync")
        xid = str(other.create_order(sym, "limit", "buy", "1.6", 58_000)["id"])
        venue.fill(xid, "0.1")
        if read == "fetch_order":
            await run(ex.fetch_order(xid, sym))
        else:
            await run(ex.fetch_open_orders(sym))
        assert ex.guard.position(sym) == u.to_units("0.1")
        assert ex.guard.working_qty(sym) == (u.to_units("1.5"), 0)
        before = len(venue.requests)
        with pytest.raises(GuardRefused) as refused:
            await run(ex.create_order(sym, "limit", "buy", "0.5", 59_000))
        assert refused.value.decision.reason is R.MAX_POSITION
        assert placed(venue, before) == 0
        venue.fill(xid, "0.2")
        for _ in range(2):
            await run(ex.fetch_order(xid, sym))
            await run(ex.fetch_my_trades(sym))
        assert ex.guard.position(sym) == u.to_units("0.3")
        assert ex.guard.working_qty(sym) == (u.to_units("1.3"), 0)
        venue.cancel(xid)
        await run(ex.fetch_order(xid, sym))
        assert ex.guard.working_qty(sym) == (0, 0)
        assert not ex.ledger.live() and not ex.guard.halts()


@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_a_trade_of_an_order_not_followed_reads_the_open_orders_before_the_next(
    spec: Spec, mode: str
) -> None:
    """Only the trades are read (`fetch_my_trades`): one names an order not followed here,
    another program's 1.6 buy. The next order in the market first lists its open orders
    and adopts the 1.6 (0.1 filled): the 0.5 buy is refused, nothing sent; a 0.3 one
    fits, and the list is not read again before the order after it."""
    u = Units(spec.step)
    async with started(spec, mode, []) as (ex, venue, _):
        sym = spec.symbol
        other = make_exchange(spec, venue, "sync")
        xid = str(other.create_order(sym, "limit", "buy", "1.6", 58_000)["id"])
        venue.fill(xid, "0.1")
        await run(ex.fetch_my_trades(sym))
        assert sym in ex.ledger.unsynced
        before = len(venue.requests)
        with pytest.raises(GuardRefused) as refused:
            await run(ex.create_order(sym, "limit", "buy", "0.5", 59_000))
        assert refused.value.decision.reason is R.MAX_POSITION
        assert placed(venue, before) == 0
        assert ex.guard.position(sym) == u.to_units("0.1")
        assert ex.guard.working_qty(sym) == (u.to_units("1.5"), 0)
        assert sym not in ex.ledger.unsynced
        await run(ex.create_order(sym, "limit", "buy", "0.3", 57_000))
        reads = len(venue.requests)
        await run(ex.create_order(sym, "limit", "sell", "0.1", 61_000))
        assert len(venue.requests) - reads == 1  # the order alone
        assert ex.guard.working_qty(sym) == (u.to_units("1.8"), u.to_units("0.1"))
        assert not ex.guard.halts()


@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_open_orders_that_cannot_be_read_again_refuse_the_order(
    spec: Spec, mode: str
) -> None:
    """The market is to be read again and the venue's list cannot be read (not a list, an
    open order with no amount): the order is refused with `venue_unavailable` naming
    the field, nothing sent, nothing adopted; a readable list then lets orders through,
    the other program's order counted. An order placed here is live in the market, so
    only the open orders are read again (not the position)."""
    u = Units(spec.step)
    async with started(spec, mode, []) as (ex, venue, _):
        sym = spec.symbol
        await run(ex.create_order(sym, "limit", "sell", "0.1", 61_000))
        other = make_exchange(spec, venue, "sync")
        other.create_order(sym, "limit", "buy", "1.6", 58_000)
        listed = await run(ex.exchange.fetch_open_orders(sym))
        good = next(o for o in listed if o["side"] == "buy")  # the other program's
        ex.ledger.unsynced[sym] = None
        real = ex.exchange.fetch_open_orders
        before = len(venue.requests)
        bad: list[tuple[Any, str]] = [
            ({"open": [good]}, "fetch_open_orders: the answer is dict"),
            ([good | {"amount": None}], "fetch_open_orders[0].amount"),
            ([good | {"side": "up"}], "fetch_open_orders[0].side"),
        ]
        for value, named in bad:
            answers(ex, "fetch_open_orders", value)
            with pytest.raises(GuardRefused) as refused:
                await run(ex.create_order(sym, "limit", "buy", "0.3", 59_000))
            d = refused.value.decision
            assert d.reason is R.VENUE_UNAVAILABLE and named in d.detail, d.detail
            assert "open orders of" in d.detail, d.detail
            assert ex.guard.working_qty(sym) == (0, u.to_units("0.1"))
            assert len(ex.ledger.live()) == 1 and sym in ex.ledger.unsynced
            ex.exchange.fetch_open_orders = real
        assert placed(venue, before) == 0
        await run(ex.create_order(sym, "limit", "buy", "0.3", 59_000))
        assert ex.guard.working_qty(sym) == (u.to_units("1.9"), u.to_units("0.1"))
        assert placed(venue, before) == 1


@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_an_unreadable_order_not_followed_marks_the_market_to_read_again(
    spec: Spec, mode: str
) -> None:
    """An update reporting an open order not followed here that cannot be read (no
    amount) is not ignored: the market's open orders are read again before the next
    order, which then counts the order (refusing a 0.5 buy on top of the 1.6)."""
    async with started(spec, mode, []) as (ex, venue, _):
        sym = spec.symbol
        other = make_exchange(spec, venue, "sync")
        xid = str(other.create_order(sym, "limit", "buy", "1.6", 58_000)["id"])
        seen = await run(ex.exchange.fetch_order(xid, sym))
        ex.ledger.apply_orders(seen | {"amount": None}, "watch_orders")
        assert sym in ex.ledger.unsynced and ex.guard.working_qty(sym) == (0, 0)
        with pytest.raises(GuardRefused) as refused:
            await run(ex.create_order(sym, "limit", "buy", "0.5", 59_000))
        assert refused.value.decision.reason is R.MAX_POSITION
        assert not ex.guard.halts()
        if isinstance(ex, AsyncGuardedExchange):
            assert ex.kill_task is None


@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_an_order_placed_here_reported_before_its_answer_is_not_adopted(
    spec: Spec, mode: str
) -> None:
    """A stream (`watch_orders`) reports an order placed here, with no client order id,
    before the venue's answer to its placement binds it: the same market, side, amount
    and price as an order placed here whose id is not known yet, so it is that order and
    is not adopted (it would count twice as working for good, and its fills twice). An
    order of another program differing in any of them is adopted."""
    u = Units(spec.step)
    async with started(spec, mode, []) as (ex, venue, _):
        sym = spec.symbol
        real = ex.exchange.create_order

        def early(answer: Any) -> Any:
            seen = dict(answer)
            ex.ledger.apply_orders([seen | {"clientOrderId": None}], "watch_orders")
            return answer

        if isinstance(ex, AsyncGuardedExchange):

            async def create(*args: Any, **kwargs: Any) -> Any:
                return early(await real(*args, **kwargs))

            ex.exchange.create_order = create
        else:
            ex.exchange.create_order = lambda *a, **k: early(real(*a, **k))
        mine = await run(ex.create_order(sym, "limit", "buy", "0.2", 58_000))
        assert ex.guard.working_qty(sym) == (u.to_units("0.2"), 0)
        assert len(ex.ledger.live()) == 1
        venue.fill(str(mine["id"]), "0.2")
        await run(ex.fetch_order(mine["id"], sym))
        await run(ex.fetch_my_trades(sym))
        assert ex.guard.position(sym) == u.to_units("0.2")
        assert ex.guard.working_qty(sym) == (0, 0)
        ex.exchange.create_order = real
        other = make_exchange(spec, venue, "sync")
        xid = other.create_order(sym, "limit", "buy", "0.2", 57_000)["id"]
        ex.ledger.apply_orders([other.fetch_order(xid, sym)], "watch_orders")
        assert ex.guard.working_qty(sym) == (u.to_units("0.2"), 0)
        assert not ex.guard.halts()


@pytest.mark.parametrize("cancel_all", [True, False], ids=["cancel_all", "one_by_one"])
@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_a_halt_cancels_an_order_adopted_after_the_start(
    spec: Spec, mode: str, cancel_all: bool
) -> None:
    """The process started the market and placed nothing in it; another program opened a
    buy there afterwards, reported by `fetch_open_orders`. A node-wide halt cancels it
    (the kill's sweep covered only the markets traded here, and this one had no order
    placed here) and gives it back."""
    async with started(spec, mode, []) as (ex, venue, _):
        sym = spec.symbol
        ex.exchange.has["cancelAllOrders"] = cancel_all
        other = make_exchange(spec, venue, "sync")
        xid = str(other.create_order(sym, "limit", "buy", "0.4", 58_000)["id"])
        await run(ex.fetch_open_orders(sym))
        ex.guard.halt(Scope.NODE, ex.guard.node, "operator: stop", "test")
        if isinstance(ex, AsyncGuardedExchange):
            assert ex.kill_task is not None
            await ex.kill_task
        assert venue.orders[xid].status == "canceled"
        assert ex.guard.working_qty(sym) == (0, 0)
        assert not ex.ledger.live()


@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_a_fill_elsewhere_with_no_order_live_here_reads_the_start_again(
    spec: Spec, mode: str
) -> None:
    """Another program bought 1.6 BTC at once (an order opened and filled in full between
    two reads, never seen open); only its trade is read. No order is live here, so the
    next order reads the market's whole start again: the 1.6 held is the position and a
    0.5 buy (1.6 + 0.5 > 2) is refused, nothing sent; a 0.4 one passes."""
    u = Units(spec.step)
    async with started(spec, mode, []) as (ex, venue, _):
        sym = spec.symbol
        other = make_exchange(spec, venue, "sync")
        other.create_order(sym, "limit", "buy", "1.6", 61_000)  # marketable: filled at once
        await run(ex.fetch_my_trades(sym))
        before = len(venue.requests)
        with pytest.raises(GuardRefused) as refused:
            await run(ex.create_order(sym, "limit", "buy", "0.5", 59_000))
        assert refused.value.decision.reason is R.MAX_POSITION
        assert placed(venue, before) == 0
        assert ex.guard.position(sym) == u.to_units("1.6")
        await run(ex.create_order(sym, "limit", "buy", "0.4", 59_000))
        assert ex.guard.working_qty(sym) == (u.to_units("0.4"), 0)
        assert not ex.guard.halts()


@pytest.mark.parametrize(
    ("exchange", "named"),
    [
        (None, "got NoneType"),
        ("binance", "got str"),
        (ccxt.binance, "the class binance, not an instance"),
        (ccxt_async.kraken, "the class kraken, not an instance"),
    ],
    ids=["none", "name", "sync-class", "async-class"],
)
def test_wrapping_what_is_not_an_exchange_object_says_so_in_one_line(
    exchange: Any, named: str
) -> None:
    """`guard` given None, a venue's name or the exchange class (a forgotten `()`) raised
    an AttributeError from inside, or, for the class, wrapped it and failed at the first
    order with a traceback from ccxt. One `AdapterError` line names the argument."""
    with pytest.raises(AdapterError) as refused:
        guard(exchange, limits=limits("0.001"))
    message = str(refused.value)
    assert message.startswith("exchange: must be a ccxt exchange object") and named in message
    assert "\n" not in message
