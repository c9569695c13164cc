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
from knightwatch.adapters.ccxt import AsyncGuardedExchange, GuardRefused, guard

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
            if isinstance(ex, AsyncGuardedExchange):
                await ex.close()


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
            if isinstance(ex, AsyncGuardedExchange):
                await ex.close()
