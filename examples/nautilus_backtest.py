"""knightwatch in a NautilusTrader backtest: one `install` line, then run as usual.

A runaway strategy buys 10,000 AUD/USD on every quote and once fat-fingers
5,000,000. The Guard denies the fat finger as a NautilusTrader `OrderDenied`
(reason `knightwatch:max_order_qty ...`); after 150 fills in a minute of
backtest time its repeated-execution throttle halts the strategy, the halt is
mirrored into NautilusTrader, and NautilusTrader's own RiskEngine denies the
rest. Offline: simulated venue, made-up quotes.

    python examples/nautilus_backtest.py
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.events import OrderDenied
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.trading.strategy import Strategy

from knightwatch import Limits
from knightwatch.adapters.nautilus import install, reason_code

SIM = Venue("SIM")
AUDUSD = TestInstrumentProvider.default_fx_ccy("AUD/USD", venue=SIM)


class Runaway(Strategy):  # type: ignore[misc]  # NautilusTrader ships no stubs
    """Buys on every quote; on the 100th, 5,000,000 (a fat finger)."""

    def __init__(self) -> None:
        super().__init__(StrategyConfig())
        self.n = 0
        self.denied: Counter[str] = Counter()

    def on_start(self) -> None:
        self.subscribe_quote_ticks(AUDUSD.id)

    def on_quote_tick(self, tick: QuoteTick) -> None:
        self.n += 1
        qty = 5_000_000 if self.n == 100 else 10_000
        price = Price.from_str(f"{tick.ask_price.as_double():.5f}")
        self.submit_order(
            self.order_factory.limit(AUDUSD.id, OrderSide.BUY, Quantity.from_int(qty), price)
        )

    def on_order_denied(self, event: OrderDenied) -> None:
        code = reason_code(event.reason)
        self.denied[code.value if code else f"nautilus: {event.reason}"] += 1


def quotes(n: int) -> list[QuoteTick]:
    t0 = 1_700_000_000_000_000_000
    out = []
    for i in range(n):
        px = 0.70000 + 0.00001 * (i % 7)
        ts = t0 + i * 100_000_000  # one quote every 0.1 s
        out.append(
            QuoteTick(
                instrument_id=AUDUSD.id,
                bid_price=Price.from_str(f"{px:.5f}"),
                ask_price=Price.from_str(f"{px + 0.0001:.5f}"),
                bid_size=Quantity.from_int(10_000_000),
                ask_size=Quantity.from_int(10_000_000),
                ts_event=ts,
                ts_init=ts,
            )
        )
    return out


def main() -> None:
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)))
    engine.add_venue(
        SIM,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=USD,
        starting_balances=[Money(100_000_000, USD)],
        default_leverage=Decimal(1),
    )
    engine.add_instrument(AUDUSD)
    engine.add_data(quotes(600))
    strategy = Runaway()
    engine.add_strategy(strategy)

    limits = Limits(
        version="example",
        max_order_qty=1_000_000,
        max_order_notional=1_000_000.0,
        max_position_qty=2_000_000,
        max_executions_per_window=150,  # fills per strategy/symbol/side ...
        execution_window_s=60.0,  # ... in a minute of backtest time
        max_price_age_s=None,
    )
    kw = install(engine, limits=limits)  # <- the one line

    engine.run()
    print(f"submitted {strategy.n} orders; the Guard passed {kw.passed}, denied {kw.denied}")
    for reason, n in sorted(strategy.denied.items()):
        print(f"  OrderDenied {reason}: {n}")
    print(f"position {kw.guard.position(AUDUSD.id.value):,} AUD/USD")
    print(f"Guard halts: {[(s.value, k, h.code.value) for (s, k), h in kw.guard.halts().items()]}")
    print(f"NautilusTrader trading state: {engine.kernel.risk_engine.trading_state.name}")
    engine.dispose()


if __name__ == "__main__":
    main()
