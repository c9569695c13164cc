"""A kill racing orders in flight, in a real BacktestEngine whose venue answers cancels faster
than it takes new orders (a live venue's cancel and order gateways are separate queues).

The kill's cancel of an order still in flight reaches the venue before the order does and is
rejected (`not found`); the order then comes to rest. No change of state sweeps again under
the same kill, so the order must be cancelled when it comes to rest, or it works through it."""

from __future__ import annotations

from decimal import Decimal

from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.backtest.models import LatencyModel
from nautilus_trader.config import LoggingConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderStatus
from nautilus_trader.model.objects import Money

from knightwatch import Scope
from knightwatch.adapters.nautilus import install

from .nt_world import AUDUSD, Scripted, open_limits, quote, scripted

SYM = AUDUSD.id.value
MS = 1_000_000


def slow_inserts() -> BacktestEngine:
    """AUD/USD on SIM, where a new order takes 350 ms to reach the matching engine and a
    cancel 1 ms."""
    e = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)))
    e.add_venue(
        AUDUSD.id.venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=USD,
        starting_balances=[Money(1_000_000_000, USD)],
        default_leverage=Decimal(1),
        latency_model=LatencyModel(
            base_latency_nanos=MS, insert_latency_nanos=350 * MS, cancel_latency_nanos=MS
        ),
    )
    e.add_instrument(AUDUSD)
    return e


def test_an_order_in_flight_whose_kill_cancel_the_venue_rejects_is_cancelled_on_acceptance() -> (
    None
):
    """The kill swept an order in flight; its cancel reached the venue first and was rejected
    as unknown, then the order was accepted. Before, it rested at the venue through the kill
    (ACCEPTED, 10,000 counted working). Now its acceptance under the kill cancels it."""
    e = slow_inserts()
    try:
        s = scripted(e, AUDUSD)

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.buy("10000", "0.69000")  # would rest far below the market
                kw.guard.halt(Scope.NODE, kw.guard.node, "fleet kill", "test")

        s.script = script
        e.add_data([quote(AUDUSD, i, 0.7, 0.7001) for i in range(10)])
        kw = install(e, limits=open_limits())
        e.run()
        (order,) = e.kernel.cache.orders()
        events = [type(ev).__name__ for ev in order.events]
        # the race: the kill's cancel went first, the venue accepted the order after it
        assert events.index("OrderPendingCancel") < events.index("OrderAccepted")
        assert order.status is OrderStatus.CANCELED
        assert kw.guard.working_qty(SYM) == (0, 0)
    finally:
        e.dispose()
