"""A kill's cancel the venue refuses for a while (a rate limit, a transient error) is tried
again, with a bounded backoff, until the order is gone or known filled: the stop direction
never gives up on an order that can still execute while the node is HALTED."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import ccxt
import pytest

from knightwatch import Scope
from knightwatch.adapters import ccxt as kw_ccxt
from knightwatch.adapters.ccxt import AsyncGuardedExchange, guard

from .test_ccxt import SPECS, limits, make_exchange, run


async def _until(check: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return bool(check())


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("cancel_all", [True, False], ids=["cancel-all", "one-by-one"])
async def test_a_kill_cancel_the_venue_refuses_for_a_while_is_tried_until_the_order_is_gone(
    mode: str, cancel_all: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The venue answers the kill's cancels with a rate limit six times in a row (more than
    the sweep's three immediate attempts). The kill gave up after three: the order rested at
    the venue, working, through the whole kill. It is now tried again with a backoff until
    the venue takes the cancel, and the order ends in the Guard too."""
    monkeypatch.setattr(kw_ccxt, "_KILL_RETRY_FIRST_S", 0.01, raising=False)
    monkeypatch.setattr(kw_ccxt, "_KILL_RETRY_MAX_S", 0.05, raising=False)
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        sym = spec.symbol
        try:
            await run(ex.fetch_ticker(sym))
            placed = await run(ex.create_order(sym, "limit", "buy", 0.1, 58_000))
            ex.exchange.has["cancelAllOrders"] = cancel_all
            name = "cancel_all_orders" if cancel_all else "cancel_order"
            real = getattr(ex.exchange, name)
            refusals = [6]

            def refuse() -> None:
                if refusals[0] > 0:
                    refusals[0] -= 1
                    raise ccxt.RateLimitExceeded("binance 429 Too many requests")

            if isinstance(ex, AsyncGuardedExchange):

                async def limited(*args: Any, **kwargs: Any) -> Any:
                    refuse()
                    return await real(*args, **kwargs)

                setattr(ex.exchange, name, limited)
            else:

                def limited_sync(*args: Any, **kwargs: Any) -> Any:
                    refuse()
                    return real(*args, **kwargs)

                setattr(ex.exchange, name, limited_sync)
            with caplog.at_level(logging.WARNING):
                ex.guard.halt(Scope.NODE, ex.guard.node, "fleet kill", "test")
                if isinstance(ex, AsyncGuardedExchange):
                    assert ex.kill_task is not None
                    await ex.kill_task
                order = venue.orders[str(placed["id"])]
                assert await _until(lambda: order.status == "canceled")
                assert await _until(lambda: ex.guard.working_qty(sym) == (0, 0))
                assert await _until(lambda: "KILL_CANCEL_DONE" in caplog.text)
            assert refusals == [0]
            assert "KILL_CANCEL_RETRY" in caplog.text
        finally:
            await run(ex.close())
        assert venue.bad_signatures == 0


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_the_kills_retries_stop_once_the_node_resumes(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel that keeps failing is tried again only while the node is HALTED: once two
    people resume it, the order is the strategy's again and no cancel is sent for it."""
    monkeypatch.setattr(kw_ccxt, "_KILL_RETRY_FIRST_S", 0.01, raising=False)
    monkeypatch.setattr(kw_ccxt, "_KILL_RETRY_MAX_S", 0.02, raising=False)
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        sym = spec.symbol
        try:
            await run(ex.fetch_ticker(sym))
            placed = await run(ex.create_order(sym, "limit", "buy", 0.1, 58_000))
            tries = [0]
            if isinstance(ex, AsyncGuardedExchange):

                async def failing(*args: Any, **kwargs: Any) -> Any:
                    tries[0] += 1
                    raise ccxt.ExchangeNotAvailable("503 Service Unavailable")

                ex.exchange.cancel_all_orders = failing
            else:

                def failing_sync(*args: Any, **kwargs: Any) -> Any:
                    tries[0] += 1
                    raise ccxt.ExchangeNotAvailable("503 Service Unavailable")

                ex.exchange.cancel_all_orders = failing_sync
            ex.guard.halt(Scope.NODE, ex.guard.node, "fleet kill", "test")
            if isinstance(ex, AsyncGuardedExchange):
                assert ex.kill_task is not None
                await ex.kill_task
            assert await _until(lambda: tries[0] > 6)  # tried again after the sweep's three
            assert ex.guard.resume(Scope.NODE, ex.guard.node, "drill over", "alice")
            await asyncio.sleep(0.2)
            after = tries[0]
            await asyncio.sleep(0.2)
            assert tries[0] == after
            assert venue.orders[str(placed["id"])].status == "open"
            assert ex.guard.working_qty(sym) == (10_000, 0)
        finally:
            await run(ex.close())
        assert venue.bad_signatures == 0


async def test_an_order_placed_during_the_kill_whose_cancel_is_refused_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An order on its way when the kill swept is cancelled as the venue answers it (async);
    that cancel answered with a rate limit was logged and never sent again: the order rested
    through the kill. It is now tried again with the kill's backoff."""
    monkeypatch.setattr(kw_ccxt, "_KILL_RETRY_FIRST_S", 0.01, raising=False)
    monkeypatch.setattr(kw_ccxt, "_KILL_RETRY_MAX_S", 0.05, raising=False)
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "async"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, AsyncGuardedExchange)
        sym = spec.symbol
        try:
            await ex.fetch_ticker(sym)
            real = ex.exchange.cancel_order
            refusals = [4]

            async def limited(*args: Any, **kwargs: Any) -> Any:
                if refusals[0] > 0:
                    refusals[0] -= 1
                    raise ccxt.RateLimitExceeded("binance 429 Too many requests")
                return await real(*args, **kwargs)

            ex.exchange.cancel_order = limited
            venue.hold = threading.Event()
            placing = asyncio.ensure_future(ex.create_order(sym, "limit", "buy", 0.1, 59_000))
            while not venue.holding:
                await asyncio.sleep(0.005)
            ex.guard.halt(Scope.NODE, ex.guard.node, "fleet kill", "test")
            assert ex.kill_task is not None
            await ex.kill_task  # the sweep is done: nothing was open yet
            venue.hold.set()
            order = await placing
            resting = venue.orders[str(order["id"])]
            assert await _until(lambda: resting.status == "canceled")
            assert await _until(lambda: ex.guard.working_qty(sym) == (0, 0))
        finally:
            await ex.close()
        assert venue.bad_signatures == 0
