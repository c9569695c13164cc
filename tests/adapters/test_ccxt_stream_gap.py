"""A websocket order stream that drops and reconnects: what happened at the venue during the
gap is read back before the next order is checked.

ccxt.pro rejects a pending `watch_orders`/`watch_my_trades` with a `NetworkError` when its
connection closes, and the next call reconnects; the venue does not replay what it pushed
meanwhile. The Guard followed its orders by their updates only, so a fill or cancel during
the gap was never booked: a filled order stayed counted working and its fill never reached
the position (the next orders were checked against a position short of what was held)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import ccxt
import ccxt.pro as ccxt_pro
import pytest

from knightwatch.adapters.ccxt import AsyncGuardedExchange, guard
from knightwatch.adapters.paper import KRAKEN_KEY, KRAKEN_SECRET, PaperKraken, PaperKrakenStream
from knightwatch.adapters.units import Units

from .test_ccxt import limits

SYM = "BTC/USD"
U = Units("0.00000001")


async def _subscribed(stream: PaperKrakenStream) -> None:
    for _ in range(750):  # until ccxt has subscribed with its token (up to 15 s)
        if stream.subscribers:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("ccxt never subscribed to the executions channel")


def _drop(stream: PaperKrakenStream) -> None:
    """The venue closes every websocket connection (a restart, a network blip)."""

    async def close_all() -> None:
        for ws in list(stream.subscribers):
            await ws.close()

    asyncio.run_coroutine_threadsafe(close_all(), stream.loop).result(10)


@pytest.mark.parametrize("call", ["watch_orders", "watch_my_trades"])
async def test_fills_and_cancels_during_a_stream_gap_are_read_back_before_the_next_order(
    call: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with _kraken() as (venue, stream, ex):
        watch = getattr(ex, call)
        filled = await ex.create_order(SYM, "limit", "buy", 0.2, 59_000)
        cancelled = await ex.create_order(SYM, "limit", "buy", 0.1, 58_000)
        first = asyncio.create_task(watch(SYM))
        await _subscribed(stream)
        with caplog.at_level(logging.WARNING):
            _drop(stream)
            with pytest.raises(ccxt.NetworkError):
                await asyncio.wait_for(first, 10)
        # during the gap: one order fills, the other is cancelled (by hand, on the site)
        venue.fill(filled["id"], "0.2")
        venue.cancel(cancelled["id"])
        again: asyncio.Task[Any] = asyncio.create_task(watch(SYM))  # reconnects
        await _subscribed(stream)
        assert ex.guard.position(SYM) == 0  # nothing pushed the gap's fill
        await ex.create_order(SYM, "limit", "buy", 0.05, 58_500)
        assert ex.guard.position(SYM) == U.to_units("0.2")
        assert ex.guard.working_qty(SYM) == (U.to_units("0.05"), 0)
        again.cancel()  # it may have answered already (the new order's own update)
        with contextlib.suppress(asyncio.CancelledError, ccxt.BaseError):
            await again
        assert "STREAM_GAP" in caplog.text


async def test_an_order_whose_end_cannot_be_read_after_a_gap_refuses_the_next_order() -> None:
    """After a gap, an order the venue no longer lists open whose final state cannot be read
    (the read fails) may have filled: the next order in its market is refused
    (`venue_unavailable`) and the market read again at the one after."""
    async with _kraken() as (venue, stream, ex):
        filled = await ex.create_order(SYM, "limit", "buy", 0.2, 59_000)
        first = asyncio.create_task(ex.watch_orders(SYM))
        await _subscribed(stream)
        _drop(stream)
        with pytest.raises(ccxt.NetworkError):
            await asyncio.wait_for(first, 10)
        venue.fill(filled["id"], "0.2")
        real = ex.exchange.fetch_order

        async def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise ccxt.RequestTimeout("kraken GET QueryOrders timed out")

        ex.exchange.fetch_order = unreachable
        with pytest.raises(ccxt.InvalidOrder, match="venue_unavailable"):
            await ex.create_order(SYM, "limit", "buy", 0.05, 58_500)
        ex.exchange.fetch_order = real
        await ex.create_order(SYM, "limit", "buy", 0.05, 58_500)
        assert ex.guard.position(SYM) == U.to_units("0.2")
        assert ex.guard.working_qty(SYM) == (U.to_units("0.05"), 0)


@pytest.mark.parametrize("call", ["watch_orders", "watch_my_trades"])
async def test_a_stream_gap_is_read_back_as_the_stream_answers_again(call: str) -> None:
    """The gap's fill and cancel reach the position and the working quantity as soon as the
    reconnected stream answers, not only before the market's next order: no order follows
    the gap here, and the Guard (its loss stop, the console) counted the filled order
    working and its fill nowhere until one did."""
    async with _kraken() as (venue, stream, ex):
        watch = getattr(ex, call)
        filled = await ex.create_order(SYM, "limit", "buy", 0.2, 59_000)
        cancelled = await ex.create_order(SYM, "limit", "buy", 0.1, 58_000)
        resting = await ex.create_order(SYM, "limit", "buy", 0.1, 57_000)
        first = asyncio.create_task(watch(SYM))
        await _subscribed(stream)
        _drop(stream)
        with pytest.raises(ccxt.NetworkError):
            await asyncio.wait_for(first, 10)
        venue.fill(filled["id"], "0.2")
        venue.cancel(cancelled["id"])
        again: asyncio.Task[Any] = asyncio.create_task(watch(SYM))  # reconnects
        await _subscribed(stream)
        venue.fill(resting["id"], "0.1")  # the stream's first push after the gap
        await asyncio.wait_for(again, 10)
        assert ex.guard.position(SYM) == U.to_units("0.3")
        assert ex.guard.working_qty(SYM) == (0, 0)


@contextlib.asynccontextmanager
async def _kraken() -> AsyncIterator[tuple[PaperKraken, PaperKrakenStream, AsyncGuardedExchange]]:
    """A paper Kraken and its executions stream, and a guarded ccxt.pro kraken on both with a
    reference price read; closed after, no request badly signed."""
    with PaperKraken("60000") as venue, PaperKrakenStream(venue) as stream:
        raw = ccxt_pro.kraken({"apiKey": KRAKEN_KEY, "secret": KRAKEN_SECRET})
        ex = guard(stream.point(raw), limits=limits("0.00000001"), strategy="mm")
        assert isinstance(ex, AsyncGuardedExchange)
        try:
            await ex.fetch_ticker(SYM)
            yield venue, stream, ex
        finally:
            await ex.close()
        assert venue.bad_signatures == 0


async def _quiet_gap(
    stream: PaperKrakenStream,
    watch: Callable[[str], Awaitable[Any]],
    during: Callable[[], None],
    read: Callable[[], bool],
) -> None:
    """Break `watch`'s stream with `during` done at the venue while it is down (before the
    wrapper even hears of it: pushed to nobody), call `watch` again (it reconnects), and
    wait up to 30 s until `read()`; the reconnected stream must not have answered."""
    first = asyncio.create_task(watch(SYM))
    await _subscribed(stream)
    _drop(stream)
    during()
    with pytest.raises(ccxt.NetworkError):
        await asyncio.wait_for(first, 10)
    again = asyncio.create_task(watch(SYM))  # reconnects
    try:
        for _ in range(1500):
            if read():
                break
            await asyncio.sleep(0.02)
        assert not again.done()  # the stream never answered: the read came on its own
    finally:
        again.cancel()
        with contextlib.suppress(asyncio.CancelledError, ccxt.BaseError):
            await again


@pytest.mark.parametrize("call", ["watch_orders", "watch_my_trades"])
async def test_a_stream_gap_is_read_back_in_a_quiet_market(call: str) -> None:
    """The gap's fill and cancel reach the position and the working quantity on their own
    after the stream breaks: the reconnected stream pushes nothing (a quiet market) and no
    order follows. Before, the gap was read only when the stream answered again or before
    the market's next order, so the Guard counted the filled order working and its fill
    nowhere for as long as the market stayed quiet."""
    async with _kraken() as (venue, stream, ex):
        filled = await ex.create_order(SYM, "limit", "buy", 0.2, 59_000)
        cancelled = await ex.create_order(SYM, "limit", "buy", 0.1, 58_000)
        await ex.create_order(SYM, "limit", "buy", 0.1, 57_000)  # rests through it all

        def during() -> None:  # one order fills, another is cancelled by hand
            venue.fill(filled["id"], "0.2")
            venue.cancel(cancelled["id"])

        read = (U.to_units("0.2"), (U.to_units("0.1"), 0))
        await _quiet_gap(
            stream,
            getattr(ex, call),
            during,
            lambda: (ex.guard.position(SYM), ex.guard.working_qty(SYM)) == read,
        )
        assert ex.guard.position(SYM) == U.to_units("0.2")
        assert ex.guard.working_qty(SYM) == (U.to_units("0.1"), 0)


async def test_a_quiet_market_s_gap_read_that_fails_is_tried_again() -> None:
    """The gap's own read-back fails at first (the venue's REST API times out as the
    connection drops): it is tried again after a backoff (reads at 0.5, 1.5 and 3.5 s after
    the break), and the gap's fill is booked without the stream answering or an order sent."""
    async with _kraken() as (venue, stream, ex):
        filled = await ex.create_order(SYM, "limit", "buy", 0.2, 59_000)
        real = ex.exchange.fetch_order
        failures: list[int] = []

        async def flaky(*args: Any, **kwargs: Any) -> Any:
            if len(failures) < 2:
                failures.append(1)
                raise ccxt.RequestTimeout("kraken POST QueryOrders timed out")
            return await real(*args, **kwargs)

        ex.exchange.fetch_order = flaky
        await _quiet_gap(
            stream,
            ex.watch_orders,
            lambda: venue.fill(filled["id"], "0.2"),
            lambda: ex.guard.position(SYM) == U.to_units("0.2"),
        )
        assert ex.guard.position(SYM) == U.to_units("0.2")
        assert ex.guard.working_qty(SYM) == (0, 0)
        assert len(failures) == 2
