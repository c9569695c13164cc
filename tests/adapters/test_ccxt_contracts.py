"""A contract market's amounts count contracts: the Guard values them at contractSize each.

ccxt sizes a swap or future in contracts (`amount` 1 on OKX's DOGE-USDT-SWAP is 1,000 DOGE),
so the notional the Guard checks is amount x contractSize x price. Counted as amount x price,
every notional, exposure and loss limit read 1/contractSize of what was traded. An inverse
contract's notional (amount x contractSize in the quote currency, whatever the price) is not
a quantity x price at all: its orders are refused by name, never counted as if linear.
"""

from __future__ import annotations

from typing import Any

import pytest

from knightwatch import RejectReason as R
from knightwatch.adapters.ccxt import GuardRefused, guard

from .test_ccxt import SPECS, answers, limits, make_exchange, run


def _with_contract(ex: Any, size: float, inverse: bool = False) -> str:
    """Add a perpetual swap on BTC/USDT of `size` a contract (the spot market's step)."""
    spot = ex.market("BTC/USDT")
    swap = dict(spot, symbol="BTC/USDT:USDT", settle="USDT", settleId="USDT", type="swap",
                spot=False, swap=True, contract=True, linear=not inverse, inverse=inverse,
                contractSize=size)  # fmt: skip
    ex.set_markets([*ex.markets.values(), swap])
    return "BTC/USDT:USDT"


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(("size", "amount", "accepted"), [
    (1000.0, "0.3", False),  # 300 BTC worth 18,000,000 (read as 18,000 before)
    (10, "0.2", False),  # 2 BTC worth 120,000 > 100,000
    (10, "0.1", True),  # 1 BTC worth 60,000
    (0.01, "0.5", True),  # 0.005 BTC worth 300
])  # fmt: skip
async def test_a_linear_contract_is_valued_at_its_contract_size(
    mode: str, size: float, amount: str, accepted: bool
) -> None:
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        try:
            await run(ex.exchange.load_markets())
            symbol = _with_contract(ex.exchange, size)
            ex.on_price(symbol, 60_000)
            answers(ex, "fetch_open_orders", [])
            answers(ex, "fetch_positions", [])
            answers(ex, "create_order", {"id": "x1", "symbol": symbol, "status": "open"})
            if accepted:
                await run(ex.create_order(symbol, "limit", "sell", amount, 60_000))
                return
            with pytest.raises(GuardRefused) as refused:
                await run(ex.create_order(symbol, "limit", "sell", amount, 60_000))
            assert refused.value.decision.reason is R.MAX_ORDER_NOTIONAL
        finally:
            await run(ex.close())


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_inverse_contract_is_refused_by_name(mode: str) -> None:
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        try:
            await run(ex.exchange.load_markets())
            symbol = _with_contract(ex.exchange, 100.0, inverse=True)
            ex.on_price(symbol, 60_000)
            answers(ex, "fetch_open_orders", [])
            answers(ex, "fetch_positions", [])
            with pytest.raises(GuardRefused) as refused:
                await run(ex.create_order(symbol, "limit", "sell", "0.1", 60_000))
            d = refused.value.decision
            assert not d.accepted and "inverse contracts are refused" in d.detail
            assert not [r for r in venue.requests if r[1] == spec.fake.NEW_ORDER]
        finally:
            await run(ex.close())


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_contract_fill_read_from_its_cost_is_booked_at_its_price(mode: str) -> None:
    """ccxt states a linear contract's `cost` as filled x contractSize x price (its
    `safe_order`, and the venues' cumulative quote). The fill price read from it was
    cost / filled: contractSize times the price, so a buy of 10-BTC contracts at 60,000
    was booked at 600,000 (a loss of nine times its value the moment it filled, which
    halted the node on the loss limit; a sell so booked, a profit as large that hid
    real losses from it). Fills booked from a trade (its price) and then from the
    order's cumulative cost agree too."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        lim = limits(spec.step, max_order_notional=10_000_000.0)
        ex = guard(make_exchange(spec, venue, mode), limits=lim, strategy="mm")
        try:
            await run(ex.exchange.load_markets())
            symbol = _with_contract(ex.exchange, 10.0)
            ex.on_price(symbol, 60_000)
            answers(ex, "fetch_open_orders", [])
            answers(ex, "fetch_positions", [])
            answers(ex, "create_order", {"id": "x1", "symbol": symbol, "status": "open"})
            await run(ex.create_order(symbol, "limit", "buy", "0.2", 61_000))
            # 0.1 contract (1 BTC) at 60,000, first seen as a trade
            trade = {"id": "t1", "order": "x1", "symbol": symbol, "amount": 0.1, "price": 60_000}
            answers(ex, "fetch_my_trades", [trade])
            await run(ex.fetch_my_trades(symbol))
            # then the order: 0.2 filled for 0.1 x 10 x 60,000 + 0.1 x 10 x 61,000
            answers(ex, "fetch_order", {"id": "x1", "symbol": symbol, "status": "closed",
                                        "amount": 0.2, "filled": 0.2, "remaining": 0,
                                        "cost": 121_000.0})  # fmt: skip
            await run(ex.fetch_order("x1", symbol))
            g = ex.guard
            assert g.position(symbol) == 20_000 and g.working_qty(symbol) == (0, 0)
            ex.on_price(symbol, 61_000)  # 1 BTC bought at 60,000, 1 at 61,000
            assert g.pnl() == pytest.approx(1_000.0)
            # a sell filled at once, its price only in the answer's cost
            answers(ex, "create_order", {"id": "x2", "symbol": symbol, "status": "closed",
                                         "amount": 0.2, "filled": 0.2, "remaining": 0,
                                         "cost": 122_000.0})  # fmt: skip
            await run(ex.create_order(symbol, "limit", "sell", "0.2", 61_000))
            assert g.position(symbol) == 0
            assert g.pnl() == pytest.approx(1_000.0)  # sold the 2 BTC at 61,000
        finally:
            await run(ex.close())


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_adopted_contract_order_s_later_fills_are_booked_at_their_price(
    mode: str,
) -> None:
    """An order open at the start, part filled, whose answer gave no cost: what it had
    paid was taken as price x filled, without the contract size, so its next fill read
    from the cumulative cost (filled x contractSize x price) was booked at a price
    nowhere near the venue's."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        lim = limits(spec.step, max_order_notional=10_000_000.0)
        ex = guard(make_exchange(spec, venue, mode), limits=lim, strategy="mm")
        try:
            await run(ex.exchange.load_markets())
            symbol = _with_contract(ex.exchange, 10.0)
            ex.on_price(symbol, 60_000)
            answers(ex, "fetch_open_orders", [{"id": "o1", "symbol": symbol, "status": "open",
                                               "side": "buy", "amount": 0.2, "filled": 0.1,
                                               "remaining": 0.1, "price": 60_000}])  # fmt: skip
            answers(ex, "fetch_positions", [{"symbol": symbol, "contracts": 0.1, "side": "long",
                                             "entryPrice": 60_000}])  # fmt: skip
            await run(ex.start([symbol]))
            g = ex.guard
            assert g.position(symbol) == 10_000 and g.working_qty(symbol) == (10_000, 0)
            # its last 0.1 contract (1 BTC) filled at 61,000
            answers(ex, "fetch_order", {"id": "o1", "symbol": symbol, "status": "closed",
                                        "amount": 0.2, "filled": 0.2, "remaining": 0,
                                        "cost": 121_000.0})  # fmt: skip
            await run(ex.fetch_order("o1", symbol))
            assert g.position(symbol) == 20_000 and g.working_qty(symbol) == (0, 0)
            ex.on_price(symbol, 61_000)  # 1 BTC held from 60,000, 1 bought at 61,000
            assert g.pnl() == pytest.approx(1_000.0)
        finally:
            await run(ex.close())
