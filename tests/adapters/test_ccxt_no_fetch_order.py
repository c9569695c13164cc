"""A kill's read-back on a venue without `fetchOrder` (`has['fetchOrder']` false).

The kill read each order left live after its sweep back with `fetch_order` alone. On a venue
that has none, every read raised: an order that had ended unseen (filled, or cancelled on
the venue's site) stayed live here, and the kill's retry swept its market every 8 s, with an
ERROR line each time, until the node resumed. The read-back now uses what the venue offers:
its open orders, then its ended orders (`fetchClosedOrders`, `fetchCanceledAndClosedOrders`,
`fetchOrders`, `fetchCanceledOrders`); an order no list holds is not open at the venue, so
the kill leaves it, with one line, and it stays counted working (its fills unknown) until
`resolve` is given the venue's record of its end."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ccxt
import pytest

from knightwatch import Scope
from knightwatch.adapters import ccxt as kw_ccxt
from knightwatch.adapters.ccxt import AsyncGuardedExchange, guard
from knightwatch.adapters.units import Units

from .test_ccxt import SPECS, limits, make_exchange, run

SPEC = SPECS[0]  # binance: its cancel-all of a market with nothing open is -2011 (swept)
U = Units(SPEC.step)


async def _until(check: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return bool(check())


def _no_fetch_order(ex: Any, ended_lists: bool) -> None:
    """The venue offers no `fetchOrder`; with `ended_lists` false, no list of ended orders."""
    ex.has["fetchOrder"] = False
    for name in ("fetchClosedOrders", "fetchCanceledAndClosedOrders", "fetchOrders"):
        ex.has[name] = ex.has[name] if ended_lists else False
    ex.has["fetchCanceledOrders"] = False

    def unsupported(*args: Any, **kwargs: Any) -> Any:
        raise ccxt.NotSupported("binance fetchOrder() is not supported yet")

    ex.fetch_order = unsupported


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("ended_lists", [True, False], ids=["ended-lists", "open-list-only"])
async def test_a_kill_settles_an_order_that_ended_unseen_without_fetch_order(
    mode: str, ended_lists: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 0.1 buy fills at the venue unseen (no stream); a kill's cancel-all finds nothing
    open (-2011). With a list of ended orders, the read-back finds the fill: booked, nothing
    working. With only the open list, the order is not open at the venue: the kill is done
    (one `ORDER_END_UNKNOWN` line) and the order stays counted working. Either way the
    retries stop (was: `KILL_READBACK_FAILED` and a sweep every 8 s until the resume)."""
    monkeypatch.setattr(kw_ccxt, "_KILL_RETRY_FIRST_S", 0.01, raising=False)
    monkeypatch.setattr(kw_ccxt, "_KILL_RETRY_MAX_S", 0.02, raising=False)
    with SPEC.fake("60000") as venue:
        ex = guard(make_exchange(SPEC, venue, mode), limits=limits(SPEC.step), strategy="mm")
        sym = SPEC.symbol
        try:
            await run(ex.fetch_ticker(sym))
            placed = await run(ex.create_order(sym, "limit", "buy", 0.1, 58_000))
            venue.fill(str(placed["id"]), "0.1")
            record = await run(ex.exchange.fetch_order(placed["id"], sym))  # found by hand
            _no_fetch_order(ex.exchange, ended_lists)
            with caplog.at_level(logging.WARNING):
                ex.guard.halt(Scope.NODE, ex.guard.node, "fleet kill", "test")
                if isinstance(ex, AsyncGuardedExchange):
                    assert ex.kill_task is not None
                    await ex.kill_task
                await asyncio.sleep(0.3)  # many retry periods
                kill_retry = ex.kill_retry
                assert kill_retry is None or (
                    isinstance(kill_retry, asyncio.Task) and kill_retry.done()
                )
            assert "KILL_READBACK_FAILED" not in caplog.text
            assert caplog.text.count("KILL_CANCEL_RETRY") <= 1
            if ended_lists:
                assert ex.guard.position(sym) == U.to_units("0.1")
                assert ex.guard.working_qty(sym) == (0, 0)
            else:
                assert caplog.text.count("ORDER_END_UNKNOWN") == 1
                assert ex.guard.position(sym) == 0
                assert ex.guard.working_qty(sym) == (U.to_units("0.1"), 0)
                (gone,) = ex.ledger.end_unknown
                with pytest.raises(kw_ccxt.AdapterError, match="reached the venue"):
                    ex.resolve(gone.gid, None)
                ex.resolve(gone.gid, record)  # the venue's record of its end settles it
                assert ex.guard.position(sym) == U.to_units("0.1")
                assert ex.guard.working_qty(sym) == (0, 0)
        finally:
            await run(ex.close())
        assert venue.bad_signatures == 0
