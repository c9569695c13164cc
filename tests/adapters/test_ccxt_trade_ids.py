"""The ccxt adapter on venues whose trades carry no trade id.

ccxt leaves a trade's `id` None where the venue numbers no executions. Such a trade of an
order placed here was skipped, so a desk reading its fills from trades alone never counted
them: the position and exposure stayed understated. Against the paper venues over real
HTTP, as test_ccxt.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from knightwatch import RejectReason, Scope
from knightwatch.adapters.ccxt import GuardedExchange, guard
from knightwatch.adapters.units import Units

from .test_ccxt import SPECS, Spec, limits, make_exchange


def _without_ids(ex: GuardedExchange) -> None:
    """The raw exchange's `fetch_my_trades` answers as a venue that numbers no trades."""
    fetch = ex.exchange.fetch_my_trades

    def fetch_my_trades(*args: Any, **kwargs: Any) -> Any:
        return [t | {"id": None} for t in fetch(*args, **kwargs)]

    ex.exchange.fetch_my_trades = fetch_my_trades


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_trades_without_an_id_are_booked_once_each(spec: Spec) -> None:
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "sync"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, GuardedExchange)
        sym, u = spec.symbol, Units(spec.step)
        ex.fetch_ticker(sym)
        order = ex.create_order(sym, "limit", "buy", 0.3, 59_000)
        _without_ids(ex)
        venue.fill(order["id"], "0.1")
        ex.fetch_my_trades(sym)
        assert ex.guard.position(sym) == u.to_units("0.1")
        ex.fetch_my_trades(sym)  # the same trade read again: not booked twice
        assert ex.guard.position(sym) == u.to_units("0.1")
        assert ex.guard.working_qty(sym) == (u.to_units("0.2"), 0)
        venue.fill(order["id"], "0.2")
        ex.fetch_my_trades(sym)
        ex.fetch_my_trades(sym)
        assert ex.guard.position(sym) == u.to_units("0.3")
        assert ex.guard.working_qty(sym) == (0, 0)
        # the same size at the same price a moment later is another fill
        other = ex.create_order(sym, "limit", "buy", 0.2, 59_000)
        trade = {"id": None, "order": other["id"], "symbol": sym, "amount": 0.1,
                 "price": 59_000, "side": "buy", "timestamp": 1_000}  # fmt: skip
        ex.ledger.apply_trades([trade, trade, trade | {"timestamp": 1_001}, trade])
        assert ex.guard.position(sym) == u.to_units("0.5")
        assert ex.guard.working_qty(sym) == (0, 0)
        assert not ex.guard.halts()
        assert venue.bad_signatures == 0


def test_a_trade_without_an_id_or_a_time_halts_never_skipped() -> None:
    """Nothing tells a repeat of such a trade from a new fill of the same size: the
    Guard's position can no longer be known, so the node halts (and cancels)."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "sync"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, GuardedExchange)
        sym = spec.symbol
        ex.fetch_ticker(sym)
        order = ex.create_order(sym, "limit", "buy", 0.3, 59_000)
        trade = {"id": None, "order": order["id"], "symbol": sym, "amount": 0.1,
                 "price": 59_000, "side": "buy", "timestamp": None}  # fmt: skip
        ex.ledger.apply_trades([trade])
        halt = ex.guard.halts()[(Scope.NODE, ex.guard.node)]
        assert halt.code is RejectReason.FILL_MISMATCH
        assert "trade id: missing" in halt.reason
