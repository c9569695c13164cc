"""A small NautilusTrader backtest world for the adapter tests: one venue, scripted strategies.

Everything is real NautilusTrader (kernel, RiskEngine, ExecutionEngine, simulated
exchange); only the market data is made up, a few hundred quotes per test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.backtest.models import LatencyModel
from nautilus_trader.config import LoggingConfig, RiskEngineConfig, StrategyConfig
from nautilus_trader.model.currencies import USD, USDT
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.events import (
    OrderCanceled,
    OrderDenied,
    OrderFilled,
    OrderModifyRejected,
)
from nautilus_trader.model.identifiers import InstrumentId, Venue
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.trading.strategy import Strategy

from knightwatch import Limits

SIM = Venue("SIM")
AUDUSD = TestInstrumentProvider.default_fx_ccy("AUD/USD", venue=SIM)
BTCUSDT = TestInstrumentProvider.btcusdt_binance()
T0 = 1_700_000_000_000_000_000
STEP_NS = 100_000_000  # one quote every 0.1 s of simulated time


def open_limits(**overrides: Any) -> Limits:
    """Limits with every rule loose, then the few a test is about."""
    base: dict[str, Any] = dict(
        version="nt-test",
        max_order_qty=None,
        max_order_notional=None,
        max_price_age_s=None,
        price_collar_pct=None,
        max_orders_per_s_node=None,
        max_orders_per_min_node=None,
        max_orders_per_s_strategy=None,
        max_orders_per_min_strategy=None,
        max_orders_per_s_symbol=None,
        max_orders_per_min_symbol=None,
        max_executions_per_window=None,
        max_position_qty=None,
        max_gross_exposure=None,
        max_net_exposure=None,
        max_turnover_per_min=None,
        max_cancel_to_fill_ratio=None,
        max_loss=None,
        require_registered_parent=False,
    )
    base.update(overrides)
    return Limits(**base)


class ScriptedConfig(StrategyConfig, frozen=True, kw_only=True):
    instrument_id: InstrumentId
    order_id_tag: str = "001"


class Scripted(Strategy):
    """Calls `script(self, tick, n)` on every quote; records what comes back."""

    def __init__(self, config: ScriptedConfig) -> None:
        super().__init__(config)
        self.script: Callable[[Scripted, QuoteTick, int], None] = lambda s, t, n: None
        self.n = 0
        self.submitted = 0
        self.denied: list[str] = []
        self.modify_rejected: list[str] = []
        self.canceled: list[str] = []
        self.fills: list[OrderFilled] = []

    def on_start(self) -> None:
        self.subscribe_quote_ticks(self.config.instrument_id)

    def on_quote_tick(self, tick: QuoteTick) -> None:
        self.n += 1
        self.script(self, tick, self.n)

    def buy(self, qty: str, price: str | None = None, side: OrderSide = OrderSide.BUY) -> None:
        iid = self.config.instrument_id
        if price is None:
            order = self.order_factory.market(iid, side, Quantity.from_str(qty))
        else:
            order = self.order_factory.limit(
                iid, side, Quantity.from_str(qty), Price.from_str(price)
            )
        self.submitted += 1
        self.submit_order(order)

    def on_order_denied(self, event: OrderDenied) -> None:
        self.denied.append(event.reason)

    def on_order_modify_rejected(self, event: OrderModifyRejected) -> None:
        self.modify_rejected.append(event.reason)

    def on_order_canceled(self, event: OrderCanceled) -> None:
        self.canceled.append(event.client_order_id.value)

    def on_order_filled(self, event: OrderFilled) -> None:
        self.fills.append(event)


def quotes(
    instrument: Instrument, n: int, mid: float, spread: float, start: int = 0
) -> list[QuoteTick]:
    p = instrument.price_precision
    size = Quantity(10_000_000, instrument.size_precision)
    out = []
    for i in range(start, start + n):
        px = mid + spread * (i % 3)
        ts = T0 + i * STEP_NS
        out.append(
            QuoteTick(
                instrument_id=instrument.id,
                bid_price=Price(px, p),
                ask_price=Price(px + spread, p),
                bid_size=size,
                ask_size=size,
                ts_event=ts,
                ts_init=ts,
            )
        )
    return out


def quote(
    instrument: Instrument,
    i: int,
    bid: float,
    ask: float,
    bid_size: int = 10_000_000,
    ask_size: int = 10_000_000,
) -> QuoteTick:
    """The i-th quote (0.1 s apart) with the given sides; a size of 0 is an empty side."""
    p, q = instrument.price_precision, instrument.size_precision
    ts = T0 + i * STEP_NS
    return QuoteTick(
        instrument_id=instrument.id,
        bid_price=Price(bid, p),
        ask_price=Price(ask, p),
        bid_size=Quantity(bid_size, q),
        ask_size=Quantity(ask_size, q),
        ts_event=ts,
        ts_init=ts,
    )


def engine(
    instrument: Instrument = AUDUSD,
    *,
    submit_rate: str = "10000/00:00:01",
    latency_ns: int | None = None,
) -> BacktestEngine:
    """`latency_ns`: the venue answers that long after a command, as a live one does."""
    eng = BacktestEngine(
        BacktestEngineConfig(
            logging=LoggingConfig(bypass_logging=True),
            risk_engine=RiskEngineConfig(max_order_submit_rate=submit_rate),
        )
    )
    ccy = USD if instrument is AUDUSD else USDT
    eng.add_venue(
        instrument.id.venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=ccy,
        starting_balances=[Money(1_000_000_000, ccy)],
        default_leverage=Decimal(1),
        latency_model=None if latency_ns is None else LatencyModel(base_latency_nanos=latency_ns),
    )
    eng.add_instrument(instrument)
    return eng


def scripted(eng: BacktestEngine, instrument: Instrument, tag: str = "001") -> Scripted:
    strat = Scripted(ScriptedConfig(instrument_id=instrument.id, order_id_tag=tag))
    eng.add_strategy(strat)
    return strat


@contextlib.contextmanager
def world(
    instrument: Instrument = AUDUSD, *, latency_ns: int | None = None
) -> Iterator[tuple[BacktestEngine, Scripted]]:
    """An engine with one scripted strategy, disposed of afterwards."""
    e = engine(instrument, latency_ns=latency_ns)
    try:
        yield e, scripted(e, instrument)
    finally:
        e.dispose()
