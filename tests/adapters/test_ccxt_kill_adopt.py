"""A kill that lands while the ccxt wrapper is reading a market: orders it adopts then are
cancelled, never left resting at the venue through the kill.

The kill's sweep covers the markets the wrapper knows (traded here, or holding an
adopted order). A market joins that list only once its first read (`fetch_open_orders`)
is done, so a kill landing during that read (awaiting the venue on the async wrapper;
the Guard's own halt on the caller's thread on a sync one outside the fleet) swept
without it, and the orders the read then adopted stayed live and counted. An order
another program opens after the kill, adopted by a later read, is cancelled too: the
kill is still in force. Orders are placed at the paper venues through a second, raw ccxt
exchange, as another process would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from knightwatch import RejectReason, Scope
from knightwatch.adapters.ccxt import AsyncGuardedExchange, GuardedExchange, GuardRefused, guard
from knightwatch.adapters.paper import PaperVenue
from knightwatch.adapters.units import Units

from .test_ccxt import SPECS, Spec, limits, make_exchange, run

MODES = [(s, m) for s in SPECS for m in ("sync", "async")]
IDS = [f"{s.name}-{m}" for s, m in MODES]
WAIT_S = 15.0


@asynccontextmanager
async def wrapped(
    spec: Spec, mode: str
) -> AsyncIterator[tuple[GuardedExchange | AsyncGuardedExchange, PaperVenue]]:
    """A paper venue and the wrapper around a fresh exchange, its reference price read and
    no market started."""
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        try:
            await run(ex.fetch_ticker(spec.symbol))
            yield ex, venue
        finally:
            await run(ex.close())
        assert venue.bad_signatures == 0


def halt(ex: GuardedExchange | AsyncGuardedExchange) -> None:
    ex.guard.halt(Scope.NODE, ex.guard.node, "fleet kill", "test")


@pytest.mark.parametrize("cancel_all", [True, False], ids=["cancel_all", "one_by_one"])
@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_orders_a_market_s_first_read_adopts_during_a_kill_are_cancelled(
    spec: Spec, mode: str, cancel_all: bool
) -> None:
    """A crashed run left a 0.5 buy resting. The first order in the market reads its open
    orders; the kill lands while that read is on its way and sweeps without the market
    (nothing known there yet). The read then adopted the 0.5 buy, which rested at the
    venue through the kill and stayed counted as working. It is cancelled once adopted
    and read back: nothing rests, nothing counts, the order itself is refused (halted)."""
    async with wrapped(spec, mode) as (ex, venue):
        sym = spec.symbol
        ex.exchange.has["cancelAllOrders"] = cancel_all
        other = make_exchange(spec, venue, "sync")
        left = str(other.create_order(sym, "limit", "buy", "0.5", 58_000)["id"])
        real = ex.exchange.fetch_open_orders
        if isinstance(ex, AsyncGuardedExchange):
            reading, swept = asyncio.Event(), asyncio.Event()

            async def slow(*args: Any, **kwargs: Any) -> Any:
                answer = await real(*args, **kwargs)
                if not swept.is_set():  # the first read: the kill overtakes it
                    reading.set()
                    await swept.wait()
                return answer

            ex.exchange.fetch_open_orders = slow
            placing = asyncio.ensure_future(ex.create_order(sym, "limit", "buy", 0.1, 59_000))
            await asyncio.wait_for(reading.wait(), WAIT_S)
            halt(ex)
            assert ex.kill_task is not None
            await asyncio.wait_for(ex.kill_task, WAIT_S)  # swept: the market was not known
            swept.set()
            with pytest.raises(GuardRefused) as refused:
                await asyncio.wait_for(placing, WAIT_S)
        else:
            calls = 0

            def halting(*args: Any, **kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                answer = real(*args, **kwargs)
                if calls == 1:  # the Guard halts on the caller's thread during the read
                    halt(ex)
                return answer

            ex.exchange.fetch_open_orders = halting
            with pytest.raises(GuardRefused) as refused:
                ex.create_order(sym, "limit", "buy", 0.1, 59_000)
        assert refused.value.decision.reason is RejectReason.HALTED
        assert venue.orders[left].status == "canceled"
        assert ex.guard.working_qty(sym) == (0, 0)
        assert not ex.ledger.live()
        assert sum(o.status == "open" for o in venue.orders.values()) == 0


@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_a_start_read_during_a_kill_adopts_nothing_left_resting(
    spec: Spec, mode: str
) -> None:
    """`start` called on its own while the node is halted (the kill swept before the
    market was known): what it adopts there is cancelled, not left resting."""
    async with wrapped(spec, mode) as (ex, venue):
        sym = spec.symbol
        other = make_exchange(spec, venue, "sync")
        left = str(other.create_order(sym, "limit", "sell", "0.2", 62_000)["id"])
        halt(ex)
        if isinstance(ex, AsyncGuardedExchange):
            assert ex.kill_task is not None
            await asyncio.wait_for(ex.kill_task, WAIT_S)
        await run(ex.start([sym]))
        assert venue.orders[left].status == "canceled"
        assert ex.guard.working_qty(sym) == (0, 0)
        assert not ex.ledger.live()


@pytest.mark.parametrize(("spec", "mode"), MODES, ids=IDS)
async def test_an_order_opened_elsewhere_after_the_kill_is_cancelled_when_read(
    spec: Spec, mode: str
) -> None:
    """The market was started; the kill swept. Another program then opened a buy there,
    and the wrapper's next read of the open orders adopted it: counted as working and
    resting at the venue through the kill. While the kill is in force, an order adopted
    is cancelled; once resumed, one is adopted and left working."""
    async with wrapped(spec, mode) as (ex, venue):
        sym = spec.symbol
        await run(ex.start([sym]))
        halt(ex)
        if isinstance(ex, AsyncGuardedExchange):
            assert ex.kill_task is not None
            await asyncio.wait_for(ex.kill_task, WAIT_S)
        other = make_exchange(spec, venue, "sync")
        late = str(other.create_order(sym, "limit", "buy", "0.4", 58_000)["id"])
        await run(ex.fetch_open_orders(sym))
        assert venue.orders[late].status == "canceled"
        assert ex.guard.working_qty(sym) == (0, 0)
        assert not ex.ledger.live()
        ex.guard.resume(Scope.NODE, ex.guard.node, "operator: go", "test")
        kept = str(other.create_order(sym, "limit", "buy", "0.3", 58_000)["id"])
        await run(ex.fetch_open_orders(sym))
        assert venue.orders[kept].status == "open"
        assert ex.guard.working_qty(sym) == (Units(spec.step).to_units("0.3"), 0)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
async def test_an_order_the_sweep_cancelled_before_its_answer_is_not_counted_after_the_kill(
    spec: Spec,
) -> None:
    """An async order reached the venue; the kill's cancel-all then cancelled it there before
    the order's answer came back (Kraken's names no order; Binance's came before the order
    was bound). The late cancel once the answer came found it gone (`OrderNotFound`) and
    stopped there: 0.1 stayed counted as working after the kill, refusing orders after a
    resume, though nothing rested at the venue. It is read back as the sweep does."""
    async with wrapped(spec, "async") as (ex, venue):
        assert isinstance(ex, AsyncGuardedExchange)
        sym = spec.symbol
        await ex.create_order(sym, "limit", "buy", 0.1, 58_000)  # the market is swept
        real = ex.exchange.create_order

        async def overtaken(*args: Any, **kwargs: Any) -> Any:
            answer = await real(*args, **kwargs)  # booked at the venue
            halt(ex)  # the kill lands while the answer is on its way back
            assert ex.kill_task is not None
            await asyncio.wait_for(ex.kill_task, WAIT_S)
            return answer

        ex.exchange.create_order = overtaken
        order = await ex.create_order(sym, "limit", "buy", 0.1, 59_000)
        assert venue.orders[str(order["id"])].status == "canceled"
        assert {o.status for o in venue.orders.values()} == {"canceled"}
        assert ex.guard.working_qty(sym) == (0, 0)
        assert not ex.ledger.live()
