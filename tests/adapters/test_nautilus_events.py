"""Order events NautilusTrader publishes but its order refused, in a real BacktestEngine.

NautilusTrader's ExecutionEngine publishes an order event even when the order refuses it
as an invalid transition (it logs the InvalidStateTrigger and goes on), and a strategy
publishes its own denial of a second order under a live order's id. Such an event ends
nothing: the order is still open at the venue, and the Guard must keep counting it."""

from __future__ import annotations

from typing import Any

import pytest
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import OrderSide, OrderStatus
from nautilus_trader.model.identifiers import AccountId, StrategyId, TradeId, VenueOrderId
from nautilus_trader.model.objects import Price, Quantity
from nautilus_trader.test_kit.stubs.events import TestEventStubs

from knightwatch import RejectReason, Scope
from knightwatch.adapters.nautilus import install, reason_code

from .nt_world import AUDUSD, Scripted, open_limits, quote, quotes, world

SYM = AUDUSD.id.value


@pytest.mark.parametrize("how", ["duplicate_id_denied", "reject_after_partial_fill"])
def test_an_end_event_the_order_refused_leaves_it_counted_working(how: str) -> None:
    """`duplicate_id_denied`: a strategy submits a second order under the id of one resting
    at the venue; NautilusTrader denies it and publishes that `OrderDenied` under the live
    order's id. `reject_after_partial_fill`: a venue answers `OrderRejected` for an order
    already partly filled, which NautilusTrader's order refuses. Before, either released the
    live order's working quantity (0 working while 10,000 / 6,000 rested at the venue), so
    a 95,000 buy passed a 100,000 position limit with the resting order on top of it."""
    with world() as (e, s):
        seen: list[tuple[int, int]] = []

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.buy("10000", "0.69000")  # rests far below the market
            elif n == 3:
                (live,) = st.cache.orders_open()
                if how == "duplicate_id_denied":
                    dup = st.order_factory.limit(
                        AUDUSD.id,
                        OrderSide.BUY,
                        Quantity.from_int(20_000),
                        Price.from_str("0.69000"),
                        client_order_id=live.client_order_id,
                    )
                    st.submit_order(dup)
                else:
                    account = AccountId("SIM-001")
                    e.kernel.exec_engine.process(
                        TestEventStubs.order_filled(
                            live,
                            AUDUSD,
                            account_id=account,
                            trade_id=TradeId("T-partial-1"),
                            last_qty=Quantity.from_int(4_000),
                            last_px=Price.from_str("0.69000"),
                        )
                    )
                    e.kernel.exec_engine.process(
                        TestEventStubs.order_rejected(live, account_id=account)
                    )
                seen.append(kw.guard.working_qty(SYM))
            elif n == 5:
                st.buy("95000", "0.69000")

        s.script = script
        e.add_data(quotes(AUDUSD, 8, 0.7, 0.0001))
        kw = install(e, limits=open_limits(max_position_qty=100_000))
        e.run()
        (first, *_) = e.kernel.cache.orders()
        if how == "duplicate_id_denied":
            assert first.status is OrderStatus.ACCEPTED  # still resting at the venue
            assert seen == [(10_000, 0)]
            assert reason_code(s.denied[0]) is None  # NautilusTrader's own denial
        else:
            assert first.status is OrderStatus.PARTIALLY_FILLED
            assert seen == [(6_000, 0)]
        # the 95,000 buy is refused: the resting order still counts against the limit
        assert reason_code(s.denied[-1]) is RejectReason.MAX_POSITION
        assert not kw.guard.halts()


@pytest.mark.parametrize("owner", ["strategy", "external"])
def test_a_fill_of_an_order_the_guard_never_saw_accepted_counts_what_it_has_left(
    owner: str,
) -> None:
    """An order the Guard never checked (sent past the bus, or another program's) whose
    first event the venue reports is a fill (its acceptance came later or never: a
    dropped stream message): the fill was booked and halted the node, but the 50,000 it
    had left were never counted working, so a resume would check every later order
    without them. They are counted (`adopt`) as when its acceptance arrives."""
    account = AccountId("SIM-001")
    with world() as (e, s):
        seen: list[Any] = []

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n != 1:
                return
            sid = st.id if owner == "strategy" else StrategyId("EXTERNAL")
            factory = OrderFactory(st.trader_id, sid, e.kernel.clock)
            order = factory.limit(
                AUDUSD.id, OrderSide.BUY, Quantity.from_int(80_000), Price.from_str("0.69000")
            )
            e.kernel.cache.add_order(order)
            e.kernel.exec_engine.process(TestEventStubs.order_submitted(order, account_id=account))
            e.kernel.exec_engine.process(
                TestEventStubs.order_filled(
                    order,
                    AUDUSD,
                    account_id=account,
                    venue_order_id=VenueOrderId("V-1"),
                    trade_id=TradeId("X-1"),
                    last_qty=Quantity.from_int(30_000),
                    last_px=Price.from_str("0.69000"),
                )
            )
            seen.append((kw.guard.position(SYM), kw.guard.working_qty(SYM)))

        s.script = script
        e.add_data([quote(AUDUSD, i, 0.7, 0.7001) for i in range(4)])
        kw = install(e, limits=open_limits(max_position_qty=100_000))
        e.run()
        assert seen == [(30_000, (50_000, 0))]
        halt = kw.guard.halts()[(Scope.NODE, kw.guard.node)]
        assert halt.code is RejectReason.FILL_MISMATCH
