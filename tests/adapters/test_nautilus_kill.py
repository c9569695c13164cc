"""A kill in a real NautilusTrader BacktestEngine: one venue's execution client failing its
cancels must not spare the other venue's orders, and an order sent to a named client is
cancelled through it (the stop direction)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from nautilus_trader.backtest.engine import BacktestEngine
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import SubmitOrder
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide, OrderStatus, TriggerType
from nautilus_trader.model.identifiers import StrategyId
from nautilus_trader.model.objects import Money, Price, Quantity

from knightwatch import Scope
from knightwatch.adapters.nautilus import install

from .nt_world import AUDUSD, BTCUSDT, Scripted, engine, open_limits, quote, quotes, scripted, world


def two_venues() -> BacktestEngine:
    """AUD/USD on SIM (nt_world's engine) and BTCUSDT on BINANCE, each its own client."""
    e = engine(AUDUSD)
    e.add_venue(
        BTCUSDT.id.venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=USDT,
        starting_balances=[Money(1_000_000_000, USDT)],
        default_leverage=Decimal(1),
    )
    e.add_instrument(BTCUSDT)
    return e


def test_a_kill_cancel_one_client_raises_on_spares_no_other_venues_orders() -> None:
    """The first strategy's venue lost its connection when the kill came: its client raises
    on the cancel, through the strategy's `cancel_all_orders`. Before, that exception ended
    the sweep: the second venue's resting order and every order after it stayed working
    through the kill. Each cancel now fails alone (logged), and the next change of state
    (the operator repeating the kill once the venue is back) sweeps again."""
    e = two_venues()
    try:
        a = scripted(e, AUDUSD, "001")
        b = scripted(e, BTCUSDT, "002")
        clients = {c.venue: c for c in e.kernel.exec_engine._clients.values()}
        sim = clients[AUDUSD.id.venue]
        after_kill: list[OrderStatus] = []

        def script_a(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.buy("10000", "0.69000")  # rests far below the market
            elif n == 5:
                sim._set_connected(False)
                try:
                    kw.guard.halt(Scope.NODE, kw.guard.node, "fleet kill", "test")
                finally:
                    sim._set_connected(True)
            elif n == 7:
                after_kill.extend(o.status for o in e.kernel.cache.orders())
                kw.guard.halt(Scope.NODE, kw.guard.node, "fleet kill, again", "test")

        def script_b(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.buy("0.100000", "9000.00")  # rests far below the market

        a.script, b.script = script_a, script_b
        e.add_data(quotes(AUDUSD, 10, 0.7, 0.0001))
        e.add_data([quote(BTCUSDT, i, 10000.0, 10001.0) for i in range(10)])
        kw = install(e, limits=open_limits())
        e.run()
        # the BINANCE order was cancelled by the first sweep, despite SIM's failure
        (b_order,) = e.kernel.cache.orders(strategy_id=b.id)
        assert b_order.status == OrderStatus.CANCELED
        assert OrderStatus.CANCELED in after_kill
        # and the repeated kill reached the SIM order once its client was back
        (a_order,) = e.kernel.cache.orders(strategy_id=a.id)
        assert a_order.status == OrderStatus.CANCELED
        assert kw.guard.working_qty(AUDUSD.id.value) == (0, 0)
        assert kw.guard.working_qty(BTCUSDT.id.value) == (0, 0)
    finally:
        e.dispose()


def test_a_kill_cancels_an_order_on_the_client_it_was_sent_to() -> None:
    """An order sent to a named execution client (`client_id`: a second account on one venue,
    a broker no venue routes to) is cancelled by a kill through that client. The kill's
    cancel-all named no client, so NautilusTrader routed it by venue: to another client, or,
    as here, with no client routed for the venue, nowhere: the order stayed working."""
    e = engine(AUDUSD)
    try:
        s = scripted(e, AUDUSD)
        exec_engine = e.kernel.exec_engine
        (sim,) = exec_engine.registered_clients
        statuses: list[OrderStatus] = []

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            f = st.order_factory
            if n == 1:  # reached only by its client id: no client routed for the venue
                exec_engine._routing_map.pop(AUDUSD.id.venue)
                px = Price.from_str("0.69000")
                for qty in (10_000, 20_000):  # one rests, one is held by the emulator
                    trigger = TriggerType.NO_TRIGGER if qty == 10_000 else TriggerType.BID_ASK
                    order = f.limit(
                        AUDUSD.id,
                        OrderSide.BUY,
                        Quantity.from_int(qty),
                        px,
                        emulation_trigger=trigger,
                    )
                    st.submit_order(order, client_id=sim)
            elif n == 3:
                kw.guard.halt(Scope.NODE, kw.guard.node, "fleet kill", "test")
            elif n == 5:
                statuses.extend(o.status for o in e.kernel.cache.orders())

        s.script = script
        e.add_data(quotes(AUDUSD, 7, 0.7, 0.0001))
        kw = install(e, limits=open_limits())
        e.run()
        assert statuses == [OrderStatus.CANCELED] * 2
        assert kw.guard.working_qty(AUDUSD.id.value) == (0, 0)
    finally:
        e.dispose()


@pytest.mark.parametrize("owner", ["strategy", "external"])
def test_an_unchecked_order_the_venue_accepts_after_the_kill_is_cancelled(owner: str) -> None:
    """An order the Guard never checked (sent past the bus, or an external one a
    reconciliation finds) that the venue accepts after the kill swept: counted and flagged,
    but the node was already HALTED, so no change of state swept again. Before, it rested at
    the venue through the kill (ACCEPTED, 80,000 counted working); now it is cancelled."""
    with world() as (e, s):
        seen: dict[str, str] = {}

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                kw.guard.halt(Scope.NODE, kw.guard.node, "fleet kill", "test")
            elif n == 3:
                sid = st.id if owner == "strategy" else StrategyId("EXTERNAL")
                factory = OrderFactory(st.trader_id, sid, e.kernel.clock)
                order = factory.limit(
                    AUDUSD.id, OrderSide.BUY, Quantity.from_int(80_000), Price.from_str("0.69000")
                )
                seen["id"] = order.client_order_id.value
                e.kernel.exec_engine.execute(
                    SubmitOrder(
                        trader_id=st.trader_id,
                        strategy_id=sid,
                        order=order,
                        command_id=UUID4(),
                        ts_init=tick.ts_init,
                    )
                )

        s.script = script
        e.add_data([quote(AUDUSD, i, 0.7, 0.7001) for i in range(8)])
        kw = install(e, limits=open_limits())
        e.run()
        statuses = {o.client_order_id.value: o.status for o in e.kernel.cache.orders()}
        assert statuses == {seen["id"]: OrderStatus.CANCELED}
        assert kw.guard.working_qty(AUDUSD.id.value) == (0, 0)


def test_a_kill_cancel_that_raises_is_swept_again_on_a_timer() -> None:
    """The venue's client is down when the kill comes and back half a second later. Before,
    the failed cancel was tried again only at the next change of trading state (an operator
    repeating the kill): the order rested at the venue through the kill. The sweep now runs
    again after a backoff, on NautilusTrader's clock, until it goes through."""
    e = engine(AUDUSD)
    try:
        s = scripted(e, AUDUSD)
        (sim,) = e.kernel.exec_engine._clients.values()

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.buy("10000", "0.69000")  # rests far below the market
            elif n == 5:
                sim._set_connected(False)
                kw.guard.halt(Scope.NODE, kw.guard.node, "fleet kill", "test")
            elif n == 7:
                sim._set_connected(True)

        s.script = script
        e.add_data(quotes(AUDUSD, 40, 0.7, 0.0001))  # 4 s of simulated time
        kw = install(e, limits=open_limits())
        e.run()
        (order,) = e.kernel.cache.orders(strategy_id=s.id)
        assert order.status == OrderStatus.CANCELED
        assert kw.guard.working_qty(AUDUSD.id.value) == (0, 0)
        assert len(kw.guard.halts()) == 1  # one kill, never repeated
    finally:
        e.dispose()
