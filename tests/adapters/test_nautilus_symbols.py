"""`symbol_of`: the Guard's symbol for each NautilusTrader instrument, in a real
BacktestEngine. Several instruments may share a symbol (one position and one set of
limits across venues) only when their quantities are counted in the same size increment,
and then their starting positions add up."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from nautilus_trader.backtest.engine import BacktestEngine
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.model.currencies import USD, USDT
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.identifiers import AccountId, StrategyId, Venue
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.test_kit.stubs.events import TestEventStubs

from knightwatch import RejectReason
from knightwatch.adapters.fleet import AdapterError
from knightwatch.adapters.nautilus import install, reason_code

from .nt_world import AUDUSD, BTCUSDT, Scripted, engine, open_limits, quote, scripted

SIM2 = Venue("SIM2")
AUDUSD2 = TestInstrumentProvider.default_fx_ccy("AUD/USD", venue=SIM2)


def add_venue(e: BacktestEngine, instrument: Instrument) -> None:
    ccy = USD if instrument.quote_currency == USD else USDT
    e.add_venue(
        instrument.id.venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=ccy,
        starting_balances=[Money(1_000_000_000, ccy)],
        default_leverage=Decimal(1),
    )
    e.add_instrument(instrument)


def test_two_instruments_of_different_size_increments_cannot_share_a_symbol() -> None:
    """AUD/USD counts whole units, BTCUSDT millionths of a coin: mapped to one symbol,
    a 0.1 BTC buy was 100,000 units of that symbol's position, against the same
    max_position_qty as 100,000 AUD, and a 100,000 AUD sell netted it. The second
    instrument is refused, by name, and the first one trades on."""
    e = engine(AUDUSD)
    try:
        add_venue(e, BTCUSDT)
        fx = scripted(e, AUDUSD, "001")
        btc = scripted(e, BTCUSDT, "002")

        def buy_fx(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.buy("10000", "0.69000")

        def buy_btc(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 2:
                st.buy("0.100000", "9000.00")

        fx.script, btc.script = buy_fx, buy_btc
        e.add_data([quote(AUDUSD, i, 0.7, 0.7001) for i in range(4)])
        e.add_data([quote(BTCUSDT, i, 10000.0, 10001.0) for i in range(4)])
        kw = install(e, limits=open_limits(), symbol_of=lambda iid: "ONE")
        e.run()
        assert fx.denied == []
        assert [reason_code(r) for r in btc.denied] == [RejectReason.INVALID_ORDER]
        assert "symbol_of: BTCUSDT.BINANCE (size increment 0.000001)" in btc.denied[0]
        assert "both map to symbol 'ONE'" in btc.denied[0]
        assert kw.guard.working_qty("ONE") == (10_000, 0)
    finally:
        e.dispose()


class Reconciled(Actor):  # type: ignore[misc]
    """Positions a TradingNode's reconciliation found at each venue before its trader
    started (external orders, filled): an actor added before `install`, started first."""

    def __init__(self, e: BacktestEngine, fills: list[tuple[Instrument, OrderSide, int]]) -> None:
        super().__init__()
        self.e = e
        self.fills = fills

    def on_start(self) -> None:
        k = self.e.kernel
        factory = OrderFactory(k.trader_id, StrategyId("EXTERNAL"), k.clock)
        for instrument, side, qty in self.fills:
            px = Price.from_str("0.70000")
            order = factory.limit(instrument.id, side, Quantity.from_int(qty), px)
            account = AccountId(f"{instrument.id.venue}-001")
            k.cache.add_order(order)
            k.exec_engine.process(TestEventStubs.order_submitted(order, account_id=account))
            k.exec_engine.process(TestEventStubs.order_accepted(order, account_id=account))
            k.exec_engine.process(
                TestEventStubs.order_filled(order, instrument, account_id=account, last_px=px)
            )


@pytest.mark.parametrize(
    ("first", "second", "net"),
    [(30_000, 40_000, 70_000), (30_000, -40_000, -10_000), (-30_000, -40_000, -70_000)],
)
def test_instruments_sharing_a_symbol_start_from_their_summed_position(
    first: int, second: int, net: int
) -> None:
    """AUD/USD at two venues, one symbol: the restart found a position at each. Restored
    one instrument at a time, the last overwrote the first (a node long 70,000 started
    at 40,000, and took 60,000 more under a 100,000 limit)."""
    e = engine(AUDUSD)
    try:
        add_venue(e, AUDUSD2)
        s = scripted(e, AUDUSD, "001")
        fills = [
            (inst, OrderSide.BUY if q > 0 else OrderSide.SELL, abs(q))
            for inst, q in ((AUDUSD, first), (AUDUSD2, second))
        ]
        e.add_actor(Reconciled(e, fills))

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.buy(str(100_000 - net + 10_000), "0.69000")  # one lot beyond the limit

        s.script = script
        e.add_data([quote(AUDUSD, i, 0.7, 0.7001) for i in range(3)])
        kw = install(
            e,
            limits=open_limits(max_position_qty=100_000),
            symbol_of=lambda iid: "AUDUSD" if iid.symbol.value == "AUD/USD" else iid.value,
        )
        e.run()
        assert kw.guard.position("AUDUSD") == net
        assert [reason_code(r) for r in s.denied] == [RejectReason.MAX_POSITION]
        assert not kw.guard.halts()
    finally:
        e.dispose()


def test_a_symbol_of_that_is_not_a_function_is_refused_at_install() -> None:
    e = engine(AUDUSD)
    try:
        bad: Any = "AUDUSD"
        with pytest.raises(AdapterError, match=r"^symbol_of: must be a function .*got str"):
            install(e, limits=open_limits(), symbol_of=bad)
    finally:
        e.dispose()
