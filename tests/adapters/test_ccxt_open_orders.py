"""Orders already open at the venue when the ccxt wrapper starts a market.

A previous run that crashed, another program or a hand on the venue's screen left
orders working. The start read (`start`, or the first order in a market) lists
them with `fetch_open_orders` and adopts each into the Guard: they count as
working, are followed like orders placed here and are cancelled by a kill. The
orders are placed at the paper venues (Binance, Kraken) through a second, raw ccxt
exchange, as another process would; the wrapper then starts over real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import ccxt
import pytest

from knightwatch import RejectReason, Scope
from knightwatch.adapters.ccxt import AsyncGuardedExchange, GuardedExchange, GuardRefused, guard
from knightwatch.adapters.paper import PaperVenue
from knightwatch.adapters.units import Units

from .test_ccxt import SPECS, Spec, answers, limits, make_exchange, run

R = RejectReason
MODES = [(s, m) for s in SPECS for m in ("sync", "async")]
IDS = [f"{s.name}-{m}" for s, m in MODES]


@asynccontextmanager
async def started(
    spec: Spec, mode: str, left: list[tuple[str, str, int]], *, start: bool = True
) -> AsyncIterator[tuple[GuardedExchange | AsyncGuardedExchange, PaperVenue, list[str]]]:
    """A paper venue holding the orders `left` (side, amount, price) placed by another
    process, and the wrapper around a fresh exchange, its reference price read and (with
    `start`) the market started; yields it, the venue and the left orders' venue ids."""
    with spec.fake("60000") as venue:
        other = make_exchange(spec, venue, "sync")  # the run that crashed
        ids = [str(other.create_order(spec.symbol, "limit", side, amount, px)["id"])
               for side, amount, px in left]  # fmt: skip
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        try:
            await run(ex.fetch_ticker(spec.symbol))
            if start:
                await run(ex.start([spec.symbol]))
            yield ex, venue, ids
        finally:
            await run(ex.close())
        assert venue.bad_signatures == 0


def placed(venue: PaperVenue, before: int) -> int:
    """New orders sent to the venue since `before` requests."""
    return sum(venue.places_order(*r) for r in venue.requests[before:])


@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_orders_open_at_the_start_count_against_the_position_limit(
    spec: Spec, mode: str
) -> None:
    """A crashed run left a 0.5 and a 1.1 BTC buy resting. The new process started the
    market at 0 working: a 0.5 buy passed under a 2 BTC position limit and the three
    could fill to 2.1 BTC. The open orders are adopted as working: the buy is refused,
    nothing sent; a 0.3 buy fits and passes."""
    u = Units(spec.step)
    async with started(spec, mode, [("buy", "0.5", 58_000), ("buy", "1.1", 57_000)]) as (
        ex,
        venue,
        _,
    ):
        sym = spec.symbol
        assert ex.guard.working_qty(sym) == (u.to_units("1.6"), 0)
        assert ex.guard.position(sym) == 0
        before = len(venue.requests)
        with pytest.raises(GuardRefused) as refused:
            await run(ex.create_order(sym, "limit", "buy", "0.5", 59_000))
        assert refused.value.decision.reason is R.MAX_POSITION
        assert placed(venue, before) == 0
        await run(ex.create_order(sym, "limit", "buy", "0.3", 59_000))
        assert ex.guard.working_qty(sym) == (u.to_units("1.9"), 0)


@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_an_adopted_orders_fills_move_the_position_once(spec: Spec, mode: str) -> None:
    """An order half filled before the start: its 0.3 is in the balance (the starting
    position), its 0.7 leaves are working. Later fills read from the order and from the
    trades (the one before the start among them) move the position by what filled
    since, once; the fill in full ends it."""
    u = Units(spec.step)
    with spec.fake("60000") as venue:
        other = make_exchange(spec, venue, "sync")
        xid = str(other.create_order(spec.symbol, "limit", "buy", "1", 59_000)["id"])
        venue.fill(xid, "0.3")
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        sym = spec.symbol
        try:
            await run(ex.fetch_ticker(sym))
            await run(ex.start([sym]))
            assert ex.guard.position(sym) == u.to_units("0.3")
            assert ex.guard.working_qty(sym) == (u.to_units("0.7"), 0)
            venue.fill(xid, "0.2")
            for _ in range(2):  # the same executions, read twice each way
                await run(ex.fetch_order(xid, sym))
                await run(ex.fetch_my_trades(sym))
            assert ex.guard.position(sym) == u.to_units("0.5")
            assert ex.guard.working_qty(sym) == (u.to_units("0.5"), 0)
            venue.fill(xid, "0.5")
            await run(ex.fetch_my_trades(sym))
            await run(ex.fetch_order(xid, sym))
            assert ex.guard.position(sym) == u.to_units("1")
            assert ex.guard.working_qty(sym) == (0, 0)
            assert not ex.ledger.live() and not ex.guard.halts()
        finally:
            await run(ex.close())
        assert venue.bad_signatures == 0


@pytest.mark.parametrize("cancel_all", [True, False], ids=["cancel_all", "one_by_one"])
@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_a_halt_cancels_the_orders_found_open(
    spec: Spec, mode: str, cancel_all: bool
) -> None:
    """The process started the market and placed nothing in it: the kill's cancels
    covered only the symbols it traded and the orders left open kept resting. They are
    cancelled (cancel-all, or one by one from the venue's list) and given back."""
    async with started(spec, mode, [("buy", "0.4", 58_000), ("sell", "0.2", 62_000)]) as (
        ex,
        venue,
        ids,
    ):
        sym = spec.symbol
        ex.exchange.has["cancelAllOrders"] = cancel_all
        ex.guard.halt(Scope.NODE, ex.guard.node, "operator: stop", "test")
        if isinstance(ex, AsyncGuardedExchange):
            assert ex.kill_task is not None
            await ex.kill_task
        assert [venue.orders[i].status for i in ids] == ["canceled", "canceled"]
        assert ex.guard.working_qty(sym) == (0, 0)
        assert not ex.ledger.live()


def _failing(ex: GuardedExchange | AsyncGuardedExchange, exc: Exception) -> None:
    """The exchange's `fetch_open_orders` raises `exc` from now on."""
    if isinstance(ex, AsyncGuardedExchange):

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise exc

        ex.exchange.fetch_open_orders = down
    else:

        def down_sync(*args: Any, **kwargs: Any) -> Any:
            raise exc

        ex.exchange.fetch_open_orders = down_sync


@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_an_unreadable_open_orders_answer_refuses_and_is_read_again(
    spec: Spec, mode: str
) -> None:
    """Open orders the venue cannot list (no `fetchOpenOrders`, a network error, an
    answer that is not a list, an open order whose amount, remaining or side cannot be
    read, one with no id) refuse the order with `venue_unavailable`, nothing sent and
    nothing booked (not the balance either); the next order reads again, and a good
    answer lets orders through, the open one counted."""
    u = Units(spec.step)
    async with started(spec, mode, [("buy", "1.6", 58_000)], start=False) as (ex, venue, _):
        sym = spec.symbol
        base = next(iter(type(venue).BASES.values()))
        venue.holdings[base] = Decimal("0.1")
        good = (await run(ex.exchange.fetch_open_orders(sym)))[0]
        real = ex.exchange.fetch_open_orders
        bad: list[tuple[str, Any, str]] = [
            ("has", None, "cannot list open orders"),
            ("raise", ccxt.NetworkError("connection reset"), "connection reset"),
            ("answer", {"open": [good]}, "fetch_open_orders: the answer is dict"),
            ("answer", [None], "fetch_open_orders[0]: NoneType, not an order"),
            ("answer", [good | {"amount": None}], "fetch_open_orders[0].amount"),
            ("answer", [good | {"amount": "lots"}], "fetch_open_orders[0].amount"),
            ("answer", [good | {"remaining": None, "filled": None}], "[0].remaining: missing"),
            ("answer", [good | {"remaining": 2.5}], "fetch_open_orders[0].remaining"),
            ("answer", [good | {"side": "up"}], "fetch_open_orders[0].side"),
            ("answer", [good | {"id": None}], "fetch_open_orders[0].id"),
            ("answer", [good | {"id": {"n": 1}}], "fetch_open_orders[0]: an order whose 'id'"),
        ]
        before = len(venue.requests)
        for how, value, named in bad:
            if how == "has":
                ex.exchange.has["fetchOpenOrders"] = False
            elif how == "raise":
                _failing(ex, value)
            else:
                answers(ex, "fetch_open_orders", value)
            with pytest.raises(GuardRefused) as refused:
                await run(ex.create_order(sym, "limit", "buy", "0.3", 59_000))
            d = refused.value.decision
            assert d.reason is R.VENUE_UNAVAILABLE, named
            assert "starting position of" in d.detail and named in d.detail, d.detail
            assert sym not in ex.ledger.started
            assert ex.guard.working_qty(sym) == (0, 0) and ex.guard.position(sym) == 0
            assert not ex.ledger.live()
            ex.exchange.has["fetchOpenOrders"] = True
            ex.exchange.fetch_open_orders = real
        assert placed(venue, before) == 0
        with pytest.raises(GuardRefused) as refused:  # read again: 0.1 + 1.6 + 0.5 > 2
            await run(ex.create_order(sym, "limit", "buy", "0.5", 59_000))
        assert refused.value.decision.reason is R.MAX_POSITION
        assert ex.guard.position(sym) == u.to_units("0.1")
        assert ex.guard.working_qty(sym) == (u.to_units("1.6"), 0)
        await run(ex.create_order(sym, "limit", "buy", "0.3", 59_000))
        assert placed(venue, before) == 1


@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_an_order_known_here_is_never_adopted_twice(spec: Spec, mode: str) -> None:
    """A market read again lists the orders already followed (placed through the wrapper,
    or adopted at the first read): none is adopted a second time, so nothing counts
    twice as working; the ones that ended since are not adopted either."""
    u = Units(spec.step)
    async with started(spec, mode, [("buy", "0.4", 58_000)]) as (ex, venue, _):
        sym = spec.symbol
        mine = await run(ex.create_order(sym, "limit", "buy", "0.2", 57_000))
        assert ex.guard.working_qty(sym) == (u.to_units("0.6"), 0)
        del ex.ledger.started[sym]  # a second read of the market
        await run(ex.start([sym]))
        assert ex.guard.working_qty(sym) == (u.to_units("0.6"), 0)
        assert len(ex.ledger.live()) == 2
        venue.cancel(str(mine["id"]))
        await run(ex.fetch_order(mine["id"], sym))
        assert ex.guard.working_qty(sym) == (u.to_units("0.4"), 0)
        assert not ex.guard.halts()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
async def test_two_orders_at_once_in_a_new_market_start_it_once(spec: Spec) -> None:
    """Two async orders in a market not started yet both read its start. The first
    started it and its order filled 0.1; the slower read, answered before that fill,
    then set the position back to its stale 0 and read the open order again. The
    market starts once: the fill stays, the open order is adopted once."""
    u = Units(spec.step)
    async with started(spec, "async", [("buy", "0.4", 58_000)], start=False) as (ex, venue, _):
        sym = spec.symbol
        real = ex.exchange.fetch_balance
        slow_read, first_done = asyncio.Event(), asyncio.Event()

        async def balance(*args: Any, **kwargs: Any) -> Any:
            answer = await real(*args, **kwargs)
            task = asyncio.current_task()
            if task is not None and task.get_name() == "slow":
                slow_read.set()  # read before the first order fills: stale once it has
                await first_done.wait()
            else:
                await slow_read.wait()
            return answer

        ex.exchange.fetch_balance = balance

        async def first() -> None:
            mine = await run(ex.create_order(sym, "limit", "buy", "0.1", 60_000))  # marketable
            await run(ex.fetch_order(mine["id"], sym))  # Kraken answers an order with its id
            first_done.set()

        slow = asyncio.create_task(
            run(ex.create_order(sym, "limit", "buy", "0.2", 57_500)), name="slow"
        )
        await asyncio.gather(first(), slow)
        assert ex.guard.position(sym) == u.to_units("0.1")
        assert ex.guard.working_qty(sym) == (u.to_units("0.6"), 0)
        assert len(ex.ledger.live()) == 2
        assert placed(venue, 0) == 3  # one by the other run


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_order_while_not_armed_reads_nothing_and_the_first_armed_one_reads(
    mode: str,
) -> None:
    """The Guard refuses every order while it is not armed, and nothing reaches the venue,
    not even the start's reads; the first order once armed reads the market's start. An
    order checked in a market whose read was skipped (armed in between, from another
    thread) is given back and refused with `venue_unavailable`."""
    spec = SPECS[0]
    u = Units(spec.step)
    async with started(spec, mode, [("buy", "0.4", 58_000)], start=False) as (ex, venue, _):
        sym = spec.symbol
        ex.guard.disarm("test")
        before = len(venue.requests)
        with pytest.raises(GuardRefused) as refused:
            await run(ex.create_order(sym, "limit", "buy", "0.1", 59_000))
        assert refused.value.decision.reason is R.NOT_ARMED
        assert venue.requests[before:] == []
        ex.guard.arm("test")  # armed between the skipped read and the check
        with pytest.raises(GuardRefused) as refused:
            ex.ledger.prepare(sym, "limit", "buy", "0.1", 59_000, {})
        assert refused.value.decision.reason is R.VENUE_UNAVAILABLE
        assert ex.guard.working_qty(sym) == (0, 0)
        await run(ex.create_order(sym, "limit", "buy", "0.1", 59_000))
        assert ex.guard.working_qty(sym) == (u.to_units("0.5"), 0)


KRAKEN_MODES = [(s, m) for s, m in MODES if s.name == "kraken"]


@pytest.mark.parametrize(
    ("spec", "mode"), KRAKEN_MODES, ids=[f"kraken-{m}" for _, m in KRAKEN_MODES]
)
async def test_orders_another_program_places_on_kraken_are_each_counted(
    spec: Spec, mode: str
) -> None:
    """Kraken reports a `userref` of 0 for every order placed without one, which ccxt reads
    as the client order id "0". Each order another program placed after the start was taken
    for the first one adopted (the same client id in the same market) and never counted:
    0.5 working where the venue held 1.0 and 1.2, and a re-read of the open orders skipped
    them. An order whose venue id is known is never another venue id's order."""
    u = Units(spec.step)
    async with started(spec, mode, [("buy", "0.5", 58_000)]) as (ex, venue, ids):
        sym = spec.symbol
        assert ex.guard.working_qty(sym) == (u.to_units("0.5"), 0)
        other = make_exchange(spec, venue, "sync")
        second = str(other.create_order(sym, "limit", "buy", "0.5", 57_000)["id"])
        answer = await run(ex.fetch_open_orders(sym))
        assert {o["clientOrderId"] for o in answer} == {"0"}  # what the venue reports
        assert ex.guard.working_qty(sym) == (u.to_units("1.0"), 0)
        other.create_order(sym, "limit", "buy", "0.2", 56_000)
        ex.ledger.unsynced[sym] = None  # as a trade of an unknown order marks it
        await run(ex.create_order(sym, "limit", "buy", "0.3", 59_000))  # reads them again
        assert ex.guard.working_qty(sym) == (u.to_units("1.5"), 0)
        await run(ex.fetch_order(ids[0], sym))  # the first is still itself
        assert {t.exchange_id for t in ex.ledger.live()} >= {ids[0], second}
        assert ex.guard.working_qty(sym) == (u.to_units("1.5"), 0)
        assert not ex.guard.halts()
