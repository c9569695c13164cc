"""The kill's cancels on a venue without cancel-all, under faults at the venue: one order
whose cancel keeps failing never spares the other orders of its market."""

from __future__ import annotations

from typing import Any

import ccxt
import pytest

from knightwatch import Scope
from knightwatch.adapters.ccxt import AsyncGuardedExchange, guard

from .test_ccxt import SPECS, limits, make_exchange, run


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    "error",
    [ccxt.ExchangeError("cancel rejected: order locked"), ccxt.RequestTimeout("timed out")],
    ids=["venue-refuses", "no-answer"],
)
async def test_one_order_whose_cancel_keeps_failing_spares_no_other_order_of_its_market(
    mode: str, error: Exception
) -> None:
    """Without cancel-all the kill cancels what `fetch_open_orders` lists, one by one. The
    first cancel that raised ended the attempt, and each of the three attempts listed the
    same order first: every order listed after it stayed resting after the kill."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        sym = spec.symbol
        try:
            await run(ex.fetch_ticker(sym))
            placed = [await run(ex.create_order(sym, "limit", "buy", 0.1, px))
                      for px in (58_000, 58_500, 59_000)]  # fmt: skip
            stuck = str(placed[0]["id"])
            ex.exchange.has["cancelAllOrders"] = False
            real = ex.exchange.cancel_order
            if isinstance(ex, AsyncGuardedExchange):

                async def failing(xid: Any, *args: Any, **kwargs: Any) -> Any:
                    if str(xid) == stuck:
                        raise error
                    return await real(xid, *args, **kwargs)

                ex.exchange.cancel_order = failing
            else:

                def failing_sync(xid: Any, *args: Any, **kwargs: Any) -> Any:
                    if str(xid) == stuck:
                        raise error
                    return real(xid, *args, **kwargs)

                ex.exchange.cancel_order = failing_sync
            ex.guard.halt(Scope.NODE, ex.guard.node, "fleet kill", "test")
            if isinstance(ex, AsyncGuardedExchange):
                assert ex.kill_task is not None
                await ex.kill_task
            statuses = [venue.orders[str(o["id"])].status for o in placed]
            assert statuses == ["open", "canceled", "canceled"]
            # the one still resting stays counted: the Guard never lets go of what may execute
            assert ex.guard.working_qty(sym) == (10_000, 0)  # 0.1 BTC in 0.00001 steps
        finally:
            await run(ex.close())
        assert venue.bad_signatures == 0
