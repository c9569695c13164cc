"""NautilusTrader 1.221.0's RiskEngine wired the way its own unit tests wire it.

Only `RiskEngine.execute(SubmitOrder)` is timed; downstream endpoints are
counters, so the figure is the risk engine alone (the anchor the Guard is
compared with). Needs the `bench` extra: `pip install -e '.[bench]'`.
"""

from __future__ import annotations

from typing import Any

from nautilus_trader.common.component import MessageBus, TestClock
from nautilus_trader.config import RiskEngineConfig
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import SubmitOrder
from nautilus_trader.model.enums import OrderSide, TradingState
from nautilus_trader.model.objects import Price, Quantity
from nautilus_trader.portfolio.portfolio import Portfolio
from nautilus_trader.risk.engine import RiskEngine
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.test_kit.stubs.component import TestComponentStubs
from nautilus_trader.test_kit.stubs.data import TestDataStubs
from nautilus_trader.test_kit.stubs.events import TestEventStubs
from nautilus_trader.test_kit.stubs.identifiers import TestIdStubs
from nautilus_trader.trading.strategy import Strategy

INSTRUMENT = TestInstrumentProvider.default_fx_ccy("AUD/USD")


class Counter:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, _msg: Any) -> None:
        self.n += 1


class NautilusRig:
    """A RiskEngine on a cash account; `halted=True` engages its kill switch."""

    def __init__(self, halted: bool = False) -> None:
        clock = TestClock()
        self.trader_id = TestIdStubs.trader_id()
        bus = MessageBus(trader_id=self.trader_id, clock=clock)
        cache = TestComponentStubs.cache()
        portfolio = Portfolio(msgbus=bus, cache=cache, clock=clock)
        self.passed, self.denied = Counter(), Counter()
        bus.register(endpoint="ExecEngine.execute", handler=self.passed)
        bus.register(endpoint="ExecEngine.process", handler=self.denied)
        portfolio.update_account(TestEventStubs.cash_account_state())
        # TestClock does not advance, so the submit throttle is set out of reach, as in
        # NautilusTrader's documented defaults; the notional cap is on and passes.
        self.engine = RiskEngine(
            portfolio=portfolio,
            msgbus=bus,
            cache=cache,
            clock=clock,
            config=RiskEngineConfig(
                max_order_submit_rate="10000000/00:00:01",
                max_order_modify_rate="10000000/00:00:01",
                max_notional_per_order={str(INSTRUMENT.id): 10_000_000},
            ),
        )
        cache.add_instrument(INSTRUMENT)
        cache.add_quote_tick(TestDataStubs.quote_tick(INSTRUMENT, bid_price=0.7, ask_price=0.7001))
        if halted:
            self.engine.set_trading_state(TradingState.HALTED)
        self.strategy = Strategy()
        self.strategy.register(
            trader_id=self.trader_id, portfolio=portfolio, msgbus=bus, cache=cache, clock=clock
        )
        self.clock = clock
        self.qty = Quantity.from_int(10_000)
        self.px = Price.from_str("0.70000")
        self.i = 0

    def commands(self, n: int) -> list[Any]:
        f = self.strategy.order_factory
        out = []
        for _ in range(n):
            side = OrderSide.BUY if self.i % 2 == 0 else OrderSide.SELL
            self.i += 1
            order = f.limit(INSTRUMENT.id, side, self.qty, self.px)
            out.append(
                SubmitOrder(
                    trader_id=self.trader_id,
                    strategy_id=self.strategy.id,
                    order=order,
                    command_id=UUID4(),
                    ts_init=self.clock.timestamp_ns(),
                    position_id=None,
                )
            )
        return out
