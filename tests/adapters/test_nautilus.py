"""The NautilusTrader adapter in a real BacktestEngine: same kernel, RiskEngine and
ExecutionEngine a live TradingNode builds; a simulated venue; a few hundred quotes."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nautilus_trader.backtest.engine import BacktestEngine
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.core.datetime import unix_nanos_to_dt
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.examples.algorithms.twap import TWAPExecAlgorithm
from nautilus_trader.execution.messages import SubmitOrder
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import QuoteTick, TradeTick
from nautilus_trader.model.enums import (
    AggressorSide,
    LiquiditySide,
    OmsType,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
    TrailingOffsetType,
    TriggerType,
)
from nautilus_trader.model.enums import TradingState as NtState
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.identifiers import (
    AccountId,
    ExecAlgorithmId,
    PositionId,
    StrategyId,
    TradeId,
    Venue,
)
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.model.position import Position
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.test_kit.stubs.events import TestEventStubs

from knightwatch import RejectReason, Scope, TradingState
from knightwatch.adapters.fleet import AdapterError
from knightwatch.adapters.nautilus import (
    ENDPOINT,
    NautilusClock,
    install,
    reason_code,
)
from knightwatch.adapters.units import Units
from knightwatch.audit.why import explain_order

from .nt_world import (
    AUDUSD,
    BTCUSDT,
    STEP_NS,
    T0,
    Scripted,
    engine,
    open_limits,
    quote,
    quotes,
    scripted,
    world,
)

SYM = AUDUSD.id.value
R = RejectReason


@pytest.fixture
def eng() -> Iterator[BacktestEngine]:
    e = engine()
    try:
        yield e
    finally:
        e.dispose()


def codes(reasons: list[str]) -> dict[RejectReason | None, int]:
    out: dict[RejectReason | None, int] = {}
    for r in reasons:
        c = reason_code(r)
        out[c] = out.get(c, 0) + 1
    return out


def buy_at_ask(qty: str = "10000", big_at: int = 0, big: str = "5000000"):  # type: ignore[no-untyped-def]
    def script(s: Scripted, tick: QuoteTick, n: int) -> None:
        s.buy(big if n == big_at else qty, f"{tick.ask_price.as_double():.5f}")

    return script


def test_fat_finger_and_position_limit_are_denied_as_order_denied(eng: BacktestEngine) -> None:
    s = scripted(eng, AUDUSD)
    s.script = buy_at_ask(big_at=5)
    eng.add_data(quotes(AUDUSD, 60, 0.7, 0.0001))
    kw = install(eng, limits=open_limits(max_order_qty=1_000_000, max_position_qty=200_000))
    eng.run()

    seen = codes(s.denied)
    assert seen == {R.MAX_ORDER_QTY: 1, R.MAX_POSITION: 60 - 1 - 20}
    assert all(r.startswith("knightwatch:") and " > " in r for r in s.denied)
    # every accepted order filled; the Guard's book is NautilusTrader's portfolio
    assert len(s.fills) == kw.passed == 20
    assert kw.guard.position(SYM) == 200_000
    assert eng.kernel.portfolio.net_position(AUDUSD.id) == Decimal(200_000)
    assert kw.guard.working_qty(SYM) == (0, 0)


def test_runaway_halted_by_the_throttle_then_nautilus_denies_on_its_own(
    eng: BacktestEngine,
) -> None:
    s = scripted(eng, AUDUSD)
    s.script = buy_at_ask()
    eng.add_data(quotes(AUDUSD, 200, 0.7, 0.0001))
    kw = install(eng, limits=open_limits(max_executions_per_window=10, execution_window_s=60.0))
    eng.run()

    # the 11th fill inside the window halted strategy x symbol; the mirror halted NT
    assert kw.guard.trading_state(Scope.STRATEGY_SYMBOL, f"{s.id.value}/{SYM}") is (
        TradingState.HALTED
    )
    assert eng.kernel.risk_engine.trading_state == NtState.HALTED
    assert kw.passed == 11 and len(s.fills) == 11
    # after the halt NautilusTrader's own RiskEngine denies: the Guard never sees them
    nt_denials = [r for r in s.denied if reason_code(r) is None]
    assert len(nt_denials) == 200 - 11 and all("HALTED" in r for r in nt_denials)
    assert kw.denied == 0


def test_the_guard_runs_on_nautilus_time() -> None:
    """A throttle of 10 fills per 5 s: quotes 0.1 s apart in simulated time trip it on
    the 11th fill; 1 s apart they never do, though the backtest takes milliseconds."""
    for spacing, halted in ((1, True), (10, False)):
        e = engine()
        try:
            s = scripted(e, AUDUSD)
            s.script = buy_at_ask()
            data = quotes(AUDUSD, 40 * spacing, 0.7, 0.0001)[::spacing]
            e.add_data(data)
            kw = install(
                e, limits=open_limits(max_executions_per_window=10, execution_window_s=5.0)
            )
            assert isinstance(kw.guard._clock, NautilusClock)
            e.run()
            assert (kw.guard.worst_state() is TradingState.HALTED) is halted
            assert kw.guard._clock.time_ns() == data[-1].ts_init
        finally:
            e.dispose()


def test_decimal_quantities_are_exact_units_of_the_size_increment() -> None:
    e = engine(BTCUSDT)
    try:
        s = scripted(e, BTCUSDT)
        assert BTCUSDT.size_increment.as_decimal() == Decimal("0.000001")

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            st.buy("2.5" if n == 3 else "0.123456", f"{tick.ask_price.as_double():.2f}")

        s.script = script
        e.add_data(quotes(BTCUSDT, 5, 60_000.0, 0.01))
        # 1 BTC = 1,000,000 units; notional stays in USDT
        kw = install(e, limits=open_limits(max_order_qty=1_000_000, max_order_notional=100_000.0))
        e.run()
        assert codes(s.denied) == {R.MAX_ORDER_QTY: 1}
        assert kw.guard.position(BTCUSDT.id.value) == 4 * 123_456
        assert e.kernel.portfolio.net_position(BTCUSDT.id) == Decimal("0.493824")
        notional = Decimal("0.123456") * Decimal("60000.02")
        assert kw.guard.exposure()[0] == pytest.approx(float(4 * notional), rel=1e-3)
    finally:
        e.dispose()


def test_cancels_pass_while_halted_and_release_the_guards_working_quantity(
    eng: BacktestEngine,
) -> None:
    s = scripted(eng, AUDUSD)

    def script(st: Scripted, tick: QuoteTick, n: int) -> None:
        if n <= 3:
            st.buy("10000", "0.69000")  # rests: far below the market
        elif n == 5:
            kw.guard.halt(Scope.STRATEGY, st.id.value, "operator stop", "test")
        elif n == 6:
            st.cancel_all_orders(AUDUSD.id)

    s.script = script
    eng.add_data(quotes(AUDUSD, 10, 0.7, 0.0001))
    kw = install(eng, limits=open_limits())
    eng.run()
    assert len(s.canceled) == 3
    assert kw.guard.working_qty(SYM) == (0, 0)
    assert not eng.kernel.cache.orders_open()
    # a strategy-scoped halt stops the whole NautilusTrader node (one trading state)
    assert eng.kernel.risk_engine.trading_state == NtState.HALTED
    # resuming the Guard gives NautilusTrader its ACTIVE state back: the mirror set it
    kw.guard.resume(Scope.STRATEGY, s.id.value, "operator go", "test")
    assert eng.kernel.risk_engine.trading_state == NtState.ACTIVE


def test_a_modify_goes_through_the_guards_replace_check(eng: BacktestEngine) -> None:
    s = scripted(eng, AUDUSD)

    def script(st: Scripted, tick: QuoteTick, n: int) -> None:
        (order,) = st.cache.orders_open() or (None,)
        if n == 1:
            st.buy("10000", "0.69000")
        elif n == 3:  # up to 40,000: within max_position 50,000
            st.modify_order(order, quantity=Quantity.from_int(40_000))
        elif n == 5:
            # a pending-free second amend to 60,000 would breach the position limit
            st.modify_order(order, quantity=Quantity.from_int(60_000))
        elif n == 7:  # move it into the market: it fills, under the amended id
            st.modify_order(order, price=Price.from_str(f"{tick.ask_price.as_double():.5f}"))

    s.script = script
    eng.add_data(quotes(AUDUSD, 10, 0.7, 0.0001))
    kw = install(eng, limits=open_limits(max_position_qty=50_000, price_collar_pct=0.05))
    eng.run()
    assert [reason_code(r) for r in s.modify_rejected] == [R.MAX_POSITION]
    assert "would reach 60000" in s.modify_rejected[0]
    assert [f.last_qty for f in s.fills] == [Quantity.from_int(40_000)]
    assert kw.guard.position(SYM) == 40_000
    assert kw.guard.working_qty(SYM) == (0, 0)
    assert kw.passed == 1 + 2 and kw.denied == 1


def test_a_modify_the_venue_rejects_rolls_the_reservation_back(eng: BacktestEngine) -> None:
    s = scripted(eng, AUDUSD)
    seen: list[tuple[int, int]] = []

    def script(st: Scripted, tick: QuoteTick, n: int) -> None:
        (order,) = st.cache.orders_open() or (None,)
        if n == 1:
            iid = st.config.instrument_id
            qty, px = Quantity.from_int(10_000), Price.from_str("0.69000")
            st.submit_order(st.order_factory.limit(iid, OrderSide.BUY, qty, px, post_only=True))
        elif n == 3:  # up and into the market: the venue refuses a post-only taker
            ask = Price.from_str(f"{tick.ask_price.as_double():.5f}")
            st.modify_order(order, quantity=Quantity.from_int(40_000), price=ask)
        elif n == 5:
            st.modify_order(order, quantity=Quantity.from_int(20_000))
        elif n == 7:
            st.cancel_order(order)
        if n in (2, 4, 6, 8):
            seen.append(kw.guard.working_qty(SYM))

    s.script = script
    eng.add_data(quotes(AUDUSD, 10, 0.7, 0.0001))
    kw = install(eng, limits=open_limits(max_position_qty=50_000))
    eng.run()
    assert len(s.modify_rejected) == 1 and "would have been a TAKER" in s.modify_rejected[0]
    assert reason_code(s.modify_rejected[0]) is None  # the venue's, not the Guard's
    # placed, the rejected amend rolled back, the accepted one committed, then cancelled
    assert seen == [(10_000, 0), (10_000, 0), (20_000, 0), (0, 0)]
    assert kw.passed == 1 + 2 and kw.denied == 0
    assert kw.guard.position(SYM) == 0


def test_venue_rejects_and_expiries_are_not_counted_as_cancels(eng: BacktestEngine) -> None:
    s = scripted(eng, AUDUSD)
    iid = AUDUSD.id
    qty = Quantity.from_int(10_000)

    def script(st_: Scripted, tick: QuoteTick, n: int) -> None:
        f = st_.order_factory
        if n in (1, 2, 3):  # a post-only buy at the ask would take: the venue rejects it
            st_.submit_order(f.limit(iid, OrderSide.BUY, qty, tick.ask_price, post_only=True))
        elif n in (4, 5, 6):  # good for 0.15 s of simulated time: it expires
            expire = unix_nanos_to_dt(tick.ts_event + 150_000_000)
            px, tif = Price.from_str("0.69000"), TimeInForce.GTD
            order = f.limit(iid, OrderSide.BUY, qty, px, time_in_force=tif, expire_time=expire)
            st_.submit_order(order)
        elif n in (10, 12):  # two real cancels
            st_.buy("10000", "0.69000")
        elif n in (11, 13):
            for order in st_.cache.orders_open():
                st_.cancel_order(order)
        elif n == 15:
            st_.buy("10000", "0.69000")

    s.script = script
    eng.add_data(quotes(AUDUSD, 16, 0.7, 0.0001))
    kw = install(eng, limits=open_limits(max_cancel_to_fill_ratio=1.0, cancel_ratio_min_cancels=2))
    eng.run()
    statuses = [o.status for o in eng.kernel.cache.orders()]
    assert statuses.count(OrderStatus.REJECTED) == 3
    assert statuses.count(OrderStatus.EXPIRED) == 3
    assert statuses.count(OrderStatus.CANCELED) == 2
    # six ended without a fill and none counted as a cancel; the two cancels do count
    assert codes(s.denied) == {R.CANCEL_FILL_RATIO: 1}
    assert kw.guard.working_qty(SYM) == (0, 0)


def test_an_order_list_is_denied_whole_and_gives_back_what_it_reserved(
    eng: BacktestEngine,
) -> None:
    s = scripted(eng, AUDUSD)

    def script(st: Scripted, tick: QuoteTick, n: int) -> None:
        if n == 1:
            f = st.order_factory
            small = f.limit(
                AUDUSD.id, OrderSide.BUY, Quantity.from_int(10_000), Price.from_str("0.69")
            )
            big = f.limit(
                AUDUSD.id, OrderSide.BUY, Quantity.from_int(900_000), Price.from_str("0.69")
            )
            st.submit_order_list(f.create_list([small, big]))

    s.script = script
    eng.add_data(quotes(AUDUSD, 3, 0.7, 0.0001))
    kw = install(eng, limits=open_limits(max_order_qty=100_000))
    eng.run()
    assert codes(s.denied) == {R.MAX_ORDER_QTY: 2}
    assert all(o.status == OrderStatus.DENIED for o in eng.kernel.cache.orders())
    assert kw.guard.working_qty(SYM) == (0, 0)


def test_the_interposer_holds_the_endpoint_after_start_up(eng: BacktestEngine) -> None:
    """If NautilusTrader renamed or moved the endpoint, orders would bypass the Guard:
    this fails loudly (install refuses, or the counts below stop adding up)."""
    assert ENDPOINT in eng.kernel.msgbus.endpoints()
    s = scripted(eng, AUDUSD)
    s.script = buy_at_ask(big_at=2)
    eng.add_data(quotes(AUDUSD, 20, 0.7, 0.0001))
    kw = install(eng, limits=open_limits(max_order_qty=1_000_000))
    eng.run()  # the kernel starts, runs and stops
    kw.verify()
    # every order NautilusTrader's RiskEngine let through reached the Guard
    assert kw.passed + kw.denied == s.submitted == 20
    assert kw.denied == 1 and kw.guard.accepted == 19
    with pytest.raises(AdapterError, match="already installed"):
        install(eng, limits=open_limits())
    kw.uninstall()
    with pytest.raises(AdapterError, match="no longer reaches"):
        kw.verify()


def test_install_refuses_a_kernel_without_the_endpoint(eng: BacktestEngine) -> None:
    bus = eng.kernel.msgbus
    bus.deregister(ENDPOINT, eng.kernel.exec_engine.execute)
    with pytest.raises(AdapterError, match=r"no 'ExecEngine\.execute' endpoint"):
        install(eng, limits=open_limits())
    with pytest.raises(AdapterError, match="not a NautilusTrader"):
        install(object(), limits=open_limits())


def test_a_backtest_cannot_hold_a_fleet_lease_on_simulated_time(eng: BacktestEngine) -> None:
    with pytest.raises(AdapterError, match="clock=SystemClock"):
        install(eng, limits=open_limits(), control_plane="nats://127.0.0.1:1")


def test_a_fill_the_guard_cannot_book_exactly_halts_the_node(eng: BacktestEngine) -> None:
    s = scripted(eng, AUDUSD)

    def script(st: Scripted, tick: QuoteTick, n: int) -> None:
        if n == 1:
            st.buy("10000", f"{tick.ask_price.as_double():.5f}")
            # the instrument's step changes under the Guard: the coming fill of 10,000
            # is not a whole number of 3s, so the Guard cannot book it exactly
            inst = kw._instrument(AUDUSD.id)
            inst.units, inst.step_raw = Units("3"), 3 * inst.step_raw

    s.script = script
    eng.add_data(quotes(AUDUSD, 3, 0.7, 0.0001))
    kw = install(eng, limits=open_limits())
    eng.run()
    assert len(s.fills) == 1
    assert kw.guard.node_state() is TradingState.HALTED
    assert kw.guard.halts()[(Scope.NODE, kw.guard.node)].code is R.FILL_MISMATCH
    assert eng.kernel.risk_engine.trading_state == NtState.HALTED


def test_an_order_that_cannot_be_mapped_is_denied_not_sent(eng: BacktestEngine) -> None:
    def no_symbol(iid: object) -> str:
        raise LookupError(f"no mapping for {iid}")

    s = scripted(eng, AUDUSD)
    s.script = buy_at_ask()
    eng.add_data(quotes(AUDUSD, 3, 0.7, 0.0001))
    kw = install(eng, limits=open_limits(), symbol_of=no_symbol)
    eng.run()
    assert codes(s.denied) == {R.INVALID_ORDER: 3}
    assert "LookupError" in s.denied[0] and not s.fills
    assert kw.guard.blocked == {R.INVALID_ORDER: 3}


def test_a_failure_in_the_event_path_halts_instead_of_breaking_nautilus(
    eng: BacktestEngine,
) -> None:
    s = scripted(eng, AUDUSD)
    s.script = buy_at_ask()
    eng.add_data(quotes(AUDUSD, 5, 0.7, 0.0001))
    kw = install(eng, limits=open_limits())

    def broken(fill: object) -> None:
        raise ZeroDivisionError("booking bug")

    kw._fill = broken  # a bug in booking fills, injected
    eng.run()  # NautilusTrader keeps running: the strategy still gets its fill
    assert len(s.fills) == 1
    halt = kw.guard.halts()[(Scope.NODE, kw.guard.node)]
    assert halt.code is R.FILL_MISMATCH and "ZeroDivisionError" in halt.reason
    assert eng.kernel.risk_engine.trading_state == NtState.HALTED
    assert all("HALTED" in r for r in s.denied) and len(s.denied) == 4


@settings(max_examples=15, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(1, 6), st.booleans()),  # ten-thousands, into the market
        min_size=1,
        max_size=5,
    )
)
def test_modifies_never_leave_a_reservation_behind(steps: list[tuple[int, bool]]) -> None:
    """Random amends of a post-only order, some refused by the Guard (over the position
    limit), some by the venue (a taker), the rest taken: on every quote after an answer
    the Guard's working quantity is the order's leaves, and nothing once cancelled."""
    eng = engine()
    try:
        s = scripted(eng, AUDUSD)
        mismatches: list[tuple[int, int, int]] = []
        refused = {"guard": 0, "venue": 0}

        def script(st_: Scripted, tick: QuoteTick, n: int) -> None:
            (order,) = st_.cache.orders_open() or (None,)
            leaves = 0 if order is None else int(order.leaves_qty.as_double())
            if n > 1 and kw.guard.working_qty(SYM) != (leaves, 0):
                mismatches.append((n, kw.guard.working_qty(SYM)[0], leaves))
            i = n // 2 - 1
            if n == 1:
                iid = st_.config.instrument_id
                qty, px = Quantity.from_int(10_000), Price.from_str("0.69000")
                st_.submit_order(
                    st_.order_factory.limit(iid, OrderSide.BUY, qty, px, post_only=True)
                )
            elif order is not None and n % 2 == 0 and 0 <= i < len(steps):
                q, taker = steps[i]
                if q > 5:  # 60,000 > max_position 50,000
                    refused["guard"] += 1
                elif taker:
                    refused["venue"] += 1
                price = tick.ask_price.as_double() if taker else 0.69
                st_.modify_order(
                    order, quantity=Quantity.from_int(q * 10_000), price=Price(price, 5)
                )
            elif order is not None and i == len(steps):
                st_.cancel_order(order)

        s.script = script
        eng.add_data(quotes(AUDUSD, 2 * len(steps) + 6, 0.7, 0.0001))
        kw = install(eng, limits=open_limits(max_position_qty=50_000))
        eng.run()
        assert mismatches == []
        assert kw.guard.working_qty(SYM) == (0, 0)
        assert not eng.kernel.cache.orders_open()
        assert len(s.modify_rejected) == refused["guard"] + refused["venue"]
        assert codes(s.modify_rejected).get(R.MAX_POSITION, 0) == refused["guard"]
    finally:
        eng.dispose()


def test_a_kill_cancels_an_order_in_flight_and_one_an_execution_algorithm_holds() -> None:
    """A node-wide HALT cancels what is not closed, not only what is open: an order sent and
    not yet acknowledged (it would come to rest at the venue after the kill) and the parent
    an execution algorithm holds (its slices would carry on after the resume)."""
    with world(latency_ns=250_000_000) as (e, s):
        e.add_exec_algorithm(TWAPExecAlgorithm())
        fills: dict[str, int] = {}

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.submit_order(
                    st.order_factory.market(
                        AUDUSD.id,
                        OrderSide.BUY,
                        Quantity.from_int(60_000),
                        exec_algorithm_id=ExecAlgorithmId("TWAP"),
                        exec_algorithm_params={"horizon_secs": 3, "interval_secs": 0.5},
                    )
                )
            elif n == 12:
                st.buy("10000", "0.69000")  # rests far below the market, once it arrives
            elif n == 13:  # 0.1 s later, before the venue has it: the fleet kills the node
                flying = [o.order_type for o in st.cache.orders_inflight()]
                assert OrderType.LIMIT in flying
                fills["kill"] = len(st.fills)
                fills["flying"] = flying.count(OrderType.MARKET)  # a slice sent: it executes
                kw.guard.halt(Scope.NODE, kw.guard.node, "fleet kill", "test")
            elif n == 25:
                fills["resume"] = len(st.fills)
                kw.guard.resume(Scope.NODE, kw.guard.node, "all clear", "test")

        s.script = script
        e.add_data(quotes(AUDUSD, 50, 0.7, 0.0001))
        kw = install(e, limits=open_limits())
        e.run()
        assert not [o for o in e.kernel.cache.orders() if not o.is_closed]
        # the TWAP bought nothing after the resume, nor after the kill beyond what was sent
        assert len(s.fills) == fills["resume"] <= fills["kill"] + fills["flying"]
        assert fills["kill"] > 0
        assert kw.guard.working_qty(SYM) == (0, 0)


def test_updates_the_venue_makes_itself_are_followed_never_taken_for_an_amends_answer() -> None:
    """A trailing stop's own update arriving while an amend is in flight is not the amend's
    answer (which shows the amend's quantity); an update that resizes an order (an OUO
    bracket's other leg after a partial fill) moves the Guard's working quantity with it."""
    with world(latency_ns=250_000_000) as (e, s):
        seen: dict[str, Any] = {}

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            f = st.order_factory
            if n == 1:  # a buy stop trailing 0.0050 above the ask
                st.submit_order(
                    f.trailing_stop_limit(
                        AUDUSD.id,
                        OrderSide.BUY,
                        Quantity.from_int(10_000),
                        limit_offset=Decimal("0.00050"),
                        trailing_offset=Decimal("0.00500"),
                        trailing_offset_type=TrailingOffsetType.PRICE,
                        trigger_type=TriggerType.BID_ASK,
                    )
                )
            elif n == 6:  # up to 40,000 (within max_position 50,000), while the market falls
                (o,) = st.cache.orders_open()
                st.modify_order(o, quantity=Quantity.from_int(40_000))
            elif n == 12:
                seen["working"] = kw.guard.working_qty(SYM)
                st.buy("40000", "0.68000")  # 40,000 more would reach 80,000

        s.script = script
        px = [0.7000] * 7 + [0.6995, 0.6990, 0.6985, 0.6980, 0.6975] + [0.6970] * 4
        e.add_data([quote(AUDUSD, i, p, p + 0.0001) for i, p in enumerate(px)])
        kw = install(e, limits=open_limits(max_position_qty=50_000))
        e.run()
        assert seen["working"] == (40_000, 0)
        assert codes(s.denied) == {R.MAX_POSITION: 1}

    with world() as (e, s):

        def bracket(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.submit_order_list(
                    st.order_factory.bracket(
                        AUDUSD.id,
                        OrderSide.BUY,
                        Quantity.from_int(10_000),
                        tp_price=Price.from_str("0.71000"),
                        sl_trigger_price=Price.from_str("0.69000"),
                    )
                )

        s.script = bracket
        data = [quote(AUDUSD, i, 0.7, 0.7001) for i in range(3)]
        data += [quote(AUDUSD, 3, 0.7100, 0.7101, bid_size=4_000)]  # the TP fills 4,000
        data += [quote(AUDUSD, i, 0.7, 0.7001) for i in range(4, 6)]
        data += [quote(AUDUSD, i, 0.6890, 0.6891) for i in range(6, 9)]  # the SL fills 6,000
        e.add_data(data)
        kw = install(e, limits=open_limits())
        e.run()
        assert not e.kernel.cache.orders_open()
        assert kw.guard.position(SYM) == 0 and kw.guard.working_qty(SYM) == (0, 0)


def test_an_amend_a_fill_overtakes_gives_its_reservation_back() -> None:
    """The order fills before the venue answers the amend, whose answer ("not found") then
    names an order that has ended: what the amend reserved must not stay reserved."""
    with world(latency_ns=250_000_000) as (e, s):

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.buy("10000", "0.69000")
            elif n == 6:
                (order,) = st.cache.orders_open()
                st.modify_order(order, quantity=Quantity.from_int(30_000))

        s.script = script
        data = [quote(AUDUSD, i, 0.7, 0.7001) for i in range(7)]
        data += [quote(AUDUSD, 7, 0.6898, 0.6899)]  # the market trades through the order
        data += [quote(AUDUSD, i, 0.7, 0.7001) for i in range(8, 15)]
        e.add_data(data)
        kw = install(e, limits=open_limits(max_position_qty=50_000))
        e.run()
        assert len(s.modify_rejected) == 1 and reason_code(s.modify_rejected[0]) is None
        assert kw.guard.position(SYM) == 10_000 and kw.guard.working_qty(SYM) == (0, 0)


def test_prices_the_guard_cannot_take_are_skipped_and_a_one_sided_quote_is_its_live_side(
    eng: BacktestEngine,
) -> None:
    """A trade at 0 (a valid NautilusTrader price) is skipped, never raised into the run;
    a quote with its bids pulled is the ask, not half of it: the collar still holds."""
    s = scripted(eng, AUDUSD)

    def script(st: Scripted, tick: QuoteTick, n: int) -> None:
        if n == 4:  # right after the one-sided quote: a sell at half the market
            st.buy("10000", "0.36000", side=OrderSide.SELL)

    s.script = script
    data: list[Any] = [quote(AUDUSD, i, 0.7, 0.7001) for i in range(3)]
    data.append(quote(AUDUSD, 3, 0.0, 0.7001, bid_size=0))
    ts = T0 + 4 * STEP_NS
    data.append(
        TradeTick(
            AUDUSD.id, Price(0.0, 5), Quantity(1000, 0), AggressorSide.BUYER, TradeId("T-1"), ts, ts
        )
    )
    data += [quote(AUDUSD, i, 0.7, 0.7001) for i in range(5, 8)]
    eng.add_data(data)
    kw = install(eng, limits=open_limits(price_collar_pct=0.05))
    eng.run()
    assert s.n == 7  # every quote reached the strategy: the run was not broken
    assert codes(s.denied) == {R.PRICE_COLLAR: 1} and kw.guard.accepted == 0


def test_an_order_without_a_limit_price_can_be_amended() -> None:
    """Shrinking a stop-market order and moving its trigger (a risk-reducing amend) is
    checked as the order was submitted, without a limit price, not refused for want of one."""
    with world() as (e, s):

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.submit_order(
                    st.order_factory.stop_market(
                        AUDUSD.id,
                        OrderSide.BUY,
                        Quantity.from_int(20_000),
                        Price.from_str("0.71000"),
                    )
                )
            elif n == 3:
                (o,) = st.cache.orders_open()
                st.modify_order(
                    o, quantity=Quantity.from_int(10_000), trigger_price=Price.from_str("0.70500")
                )

        s.script = script
        e.add_data(quotes(AUDUSD, 6, 0.7, 0.0001))
        kw = install(e, limits=open_limits())
        e.run()
        (order,) = e.kernel.cache.orders()
        assert not s.modify_rejected and order.quantity == Quantity.from_int(10_000)
        assert kw.guard.working_qty(SYM) == (10_000, 0)


def test_an_order_for_a_venue_without_an_execution_client_is_denied_not_counted(
    eng: BacktestEngine,
) -> None:
    """NautilusTrader's ExecutionEngine drops a command no client takes (a data-only venue)
    with a log line: neither sent nor denied. The Guard must not count it as working."""
    nowhere = TestInstrumentProvider.default_fx_ccy("EUR/USD", venue=Venue("NOWHERE"))
    eng.kernel.cache.add_instrument(nowhere)
    s = scripted(eng, AUDUSD)

    def script(st: Scripted, tick: QuoteTick, n: int) -> None:
        f = st.order_factory
        qty, px = Quantity.from_int(10_000), Price.from_str("1.10000")
        kw.guard.on_price(nowhere.id.value, 1.1)  # a data-only venue still has prices
        if n == 1:
            st.submit_order(f.limit(nowhere.id, OrderSide.BUY, qty, px))
        elif n == 2:
            st.submit_order_list(
                f.create_list([f.limit(nowhere.id, OrderSide.BUY, qty, px) for _ in range(2)])
            )
        elif n == 3:
            st.buy("10000", "0.69000")  # SIM has its client: sent and counted

    s.script = script
    eng.add_data(quotes(AUDUSD, 5, 0.7, 0.0001))
    kw = install(eng, limits=open_limits())
    eng.run()
    assert codes(s.denied) == {R.VENUE_UNAVAILABLE: 3}
    assert "no execution client for venue NOWHERE" in s.denied[0]
    assert kw.guard.working_qty(nowhere.id.value) == (0, 0)
    assert kw.guard.working_qty(SYM) == (10_000, 0)
    assert kw.guard.blocked == {R.VENUE_UNAVAILABLE: 3}
    statuses = [o.status for o in eng.kernel.cache.orders(instrument_id=nowhere.id)]
    assert statuses == [OrderStatus.DENIED] * 3
    assert kw.passed == 1 and kw.denied == 3


def test_each_order_of_a_list_is_checked_where_it_is_routed(eng: BacktestEngine) -> None:
    """The ExecutionEngine routes a list by its first order's venue; an order list's `orders`
    is a plain list, so an order of a venue with no execution client can ride in it. Only
    the list's venue was checked: the Guard counted that order working and it went to SIM's
    client. Each order is checked where it is routed, and the list is denied whole."""
    nowhere = TestInstrumentProvider.default_fx_ccy("EUR/USD", venue=Venue("NOWHERE"))
    eng.kernel.cache.add_instrument(nowhere)
    s = scripted(eng, AUDUSD)

    def script(st: Scripted, tick: QuoteTick, n: int) -> None:
        f = st.order_factory
        qty = Quantity.from_int(10_000)
        kw.guard.on_price(nowhere.id.value, 1.1)
        if n == 1:
            order_list = f.create_list(
                [f.limit(AUDUSD.id, OrderSide.BUY, qty, Price.from_str("0.69000"))]
            )
            order_list.orders.append(
                f.limit(nowhere.id, OrderSide.BUY, qty, Price.from_str("1.10000"))
            )
            st.submit_order_list(order_list)

    s.script = script
    eng.add_data(quotes(AUDUSD, 3, 0.7, 0.0001))
    kw = install(eng, limits=open_limits())
    eng.run()
    assert codes(s.denied) == {R.VENUE_UNAVAILABLE: 2}
    assert "no execution client for venue NOWHERE" in s.denied[0]
    assert kw.guard.working_qty(SYM) == (0, 0)
    assert kw.guard.working_qty(nowhere.id.value) == (0, 0)
    assert [o.status for o in eng.kernel.cache.orders()] == [OrderStatus.DENIED] * 2
    assert kw.passed == 0 and kw.denied == 2


def test_a_command_the_execution_client_raises_on_is_released_and_refused(
    eng: BacktestEngine,
) -> None:
    """The Guard accepted an order (a list, an amend), then the execution client raised on
    it (its connection lost: NautilusTrader's "not connected"). It was never sent, yet the
    Guard counted it working forever (the amend: its larger reservation) and the exception
    broke the strategy's handler. It is released and recorded, and the strategy gets
    NautilusTrader's own refusal."""
    s = scripted(eng, AUDUSD)
    (client,) = eng.kernel.exec_engine._clients.values()
    seen: list[tuple[int, int]] = []

    def script(st: Scripted, tick: QuoteTick, n: int) -> None:
        f = st.order_factory
        px = Price.from_str("0.69000")
        if n == 1:
            st.buy("10000", "0.69000")  # rests
        elif n == 3:
            client._set_connected(False)
            st.buy("20000", "0.69000")
            pair = [
                f.limit(AUDUSD.id, OrderSide.BUY, Quantity.from_int(q), px) for q in (5000, 7000)
            ]
            st.submit_order_list(f.create_list(pair))
            (resting,) = st.cache.orders_open()
            st.modify_order(resting, quantity=Quantity.from_int(40_000))
            client._set_connected(True)
        if n in (2, 4):
            seen.append(kw.guard.working_qty(SYM))

    s.script = script
    eng.add_data(quotes(AUDUSD, 5, 0.7, 0.0001))
    kw = install(eng, limits=open_limits())
    eng.run()
    assert seen == [(10_000, 0), (10_000, 0)]
    assert codes(s.denied) == {R.VENUE_UNAVAILABLE: 3}
    assert all("not connected" in r and "never sent" in r for r in s.denied)
    assert codes(s.modify_rejected) == {R.VENUE_UNAVAILABLE: 1}
    assert "not connected" in s.modify_rejected[0]
    statuses = [o.status for o in eng.kernel.cache.orders()]
    assert statuses.count(OrderStatus.DENIED) == 3
    assert statuses.count(OrderStatus.ACCEPTED) == 1  # the resting order, unchanged
    (resting,) = eng.kernel.cache.orders_open()
    assert resting.quantity == Quantity.from_int(10_000)
    assert kw.guard.working_qty(SYM) == (10_000, 0) and not kw.guard.halts()


def test_the_only_private_nautilus_field_read_is_the_routing_map_and_it_is_checked_at_install(
    eng: BacktestEngine,
) -> None:
    """The adapter routed by four private ExecutionEngine fields, read on every order: had a
    NautilusTrader release renamed one, orders would be misrouted or every submit would
    raise. The public API gives all but the venue routing and the clients by id (whose
    live sends the Guard follows); each read sits in one function, proven at install
    against the installed NautilusTrader, and a version without it is refused by name
    (version and attribute)."""
    from knightwatch.adapters import nautilus as kwnt

    tree = ast.parse(Path(kwnt.__file__).read_text())
    private = {
        (fn.name, ast.unparse(node))
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef)
        for node in ast.walk(fn)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    }
    assert private == {
        ("_routing_of", "engine._routing_map"),
        ("_clients_of", "engine._clients"),
        # a live client's documented coroutines, wrapped to follow their failures
        ("_watch_client", "live._submit_order"),
        ("_watch_client", "live._submit_order_list"),
        ("_watch_client", "live._modify_order"),
    }

    engine_ = eng.kernel.exec_engine
    kwnt.check_routing(engine_)  # the installed NautilusTrader has what the adapter reads
    (sim,) = engine_.registered_clients
    assert kwnt._routing_of(engine_)[AUDUSD.id.venue].id == sim
    assert set(kwnt._clients_of(engine_)) == {sim}

    class OtherRelease:  # an ExecutionEngine of a release that moved its routing
        registered_clients: tuple[Any, ...] = ()
        default_client = None

        def get_external_client_ids(self) -> set[Any]:
            return set()

    with pytest.raises(
        AdapterError, match=r"NautilusTrader 1\.221\.0: ExecutionEngine\._routing_map"
    ):
        kwnt.check_routing(OtherRelease())
    bad = OtherRelease()
    bad._routing_map = {AUDUSD.id.venue: object()}  # type: ignore[attr-defined]
    with pytest.raises(AdapterError, match="_routing_map is not a map of venues"):
        kwnt.check_routing(bad)
    moved = OtherRelease()
    moved._routing_map = {}  # type: ignore[attr-defined]
    with pytest.raises(AdapterError, match=r"ExecutionEngine\._clients is missing"):
        kwnt.check_routing(moved)


def _venue_fill(order: Any, trade: str, qty: int) -> OrderFilled:
    """An execution report as a venue's ExecutionClient hands it to NautilusTrader."""
    return OrderFilled(
        trader_id=order.trader_id,
        strategy_id=order.strategy_id,
        instrument_id=order.instrument_id,
        client_order_id=order.client_order_id,
        venue_order_id=order.venue_order_id,
        account_id=order.account_id,
        trade_id=TradeId(trade),
        position_id=None,
        order_side=order.side,
        order_type=order.order_type,
        last_qty=Quantity.from_int(qty),
        last_px=order.price,
        currency=USD,
        commission=Money(0, USD),
        liquidity_side=LiquiditySide.MAKER,
        event_id=UUID4(),
        ts_event=0,
        ts_init=0,
    )


def test_a_fill_the_venue_repeats_is_booked_once_an_overfill_is_booked_and_halts(
    eng: BacktestEngine,
) -> None:
    """NautilusTrader's order refuses a fill whose trade id it already holds, then publishes
    it all the same: the Guard booked it again, silently (position 6,000 where the venue
    and NautilusTrader hold 3,000; the order's working quantity understated, so later
    orders were checked against a wrong book). A repeat is skipped and recorded; a fill
    with a new trade id beyond the order (an overfill) is still booked, and halts."""
    s = scripted(eng, AUDUSD)
    seen: list[tuple[int, tuple[int, int], Decimal]] = []
    steps = [("T1", 3000), ("T1", 3000), ("T2", 3000), ("T1", 3000), ("T3", 6000)]

    def script(st: Scripted, tick: QuoteTick, n: int) -> None:
        if n == 1:
            st.buy("10000", "0.69000")  # rests: far below the market
        elif 2 <= n < 2 + len(steps):
            (order,) = st.cache.orders()
            trade, qty = steps[n - 2]
            eng.kernel.msgbus.send("ExecEngine.process", _venue_fill(order, trade, qty))
            net = eng.kernel.portfolio.net_position(AUDUSD.id)
            seen.append((kw.guard.position(SYM), kw.guard.working_qty(SYM), net))

    s.script = script
    eng.add_data(quotes(AUDUSD, 8, 0.7, 0.0001))
    kw = install(eng, limits=open_limits())
    eng.run()
    assert seen[:4] == [
        (3000, (7000, 0), Decimal(3000)),
        (3000, (7000, 0), Decimal(3000)),
        (6000, (4000, 0), Decimal(6000)),
        (6000, (4000, 0), Decimal(6000)),
    ]
    assert seen[4] == (12_000, (0, 0), Decimal(12_000))  # the overfill: what the venue did
    assert [h.reason for h in kw.guard.halts().values()] == [
        f"fill of 6000 for order {eng.kernel.cache.orders()[0].client_order_id} is more "
        "than the 4000 it had left (an overfill)"
    ]


def test_a_long_chain_of_amends_keeps_being_checked(eng: BacktestEngine) -> None:
    """Each amend's Guard id was the last one's plus `~n`: a strategy re-pricing one resting
    order every tick had every amend from the sixteenth on refused as `invalid_order` (an
    id over 64 characters). Each is named from the NautilusTrader order id instead."""
    s = scripted(eng, AUDUSD)

    def script(st: Scripted, tick: QuoteTick, n: int) -> None:
        if n == 1:
            st.buy("10000", "0.60000")  # rests: far below the market
        else:
            (order,) = st.cache.orders_open()
            st.modify_order(order, price=Price.from_str(f"0.6{n:04d}"))

    s.script = script
    eng.add_data(quotes(AUDUSD, 41, 0.7, 0.0001))
    kw = install(eng, limits=open_limits())
    eng.run()
    assert s.modify_rejected == [] and not kw.guard.blocked
    (order,) = eng.kernel.cache.orders_open()
    assert order.price == Price.from_str("0.60041")
    assert kw.guard.working_qty(SYM) == (10_000, 0)


def _bracket(st: Scripted, qty: int, side: OrderSide = OrderSide.BUY) -> Any:
    sell = side == OrderSide.SELL
    return st.order_factory.bracket(
        AUDUSD.id,
        side,
        Quantity.from_int(qty),
        tp_price=Price.from_str("0.69000" if sell else "0.70020"),
        sl_trigger_price=Price.from_str("0.71000" if sell else "0.69000"),
    )


def test_a_brackets_contingent_exits_count_as_their_largest_leg_not_their_sum() -> None:
    """A bracket's take-profit and stop-loss are OUO: at most one of them executes. Within
    max_position 150,000, a 100,000 bracket passes (the exits' sum, 200,000, would not);
    every leg is still checked (a 200,000 one is refused), each fill is booked once, a
    trailed stop goes through the replace check, and the group ends with its last leg."""
    with world() as (e, s):
        seen: dict[str, Any] = {}

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.submit_order_list(_bracket(st, 100_000))
            elif n == 2:
                seen["working"] = kw.guard.working_qty(SYM)
                seen["position"] = kw.guard.position(SYM)
                st.submit_order_list(_bracket(st, 200_000, OrderSide.SELL))
            elif n == 3:  # trail the stop-loss up: an amend of a leg of the group
                (sl,) = [o for o in st.cache.orders_open() if o.order_type == OrderType.STOP_MARKET]
                st.modify_order(sl, trigger_price=Price.from_str("0.69500"))
            elif n == 4:
                seen["trailed"] = kw.guard.working_qty(SYM)

        s.script = script
        data = [quote(AUDUSD, i, 0.7, 0.7001) for i in range(6)]
        data += [quote(AUDUSD, 6, 0.7002, 0.7003)]  # the take-profit fills
        data += [quote(AUDUSD, i, 0.7, 0.7001) for i in range(7, 10)]
        e.add_data(data)
        kw = install(e, limits=open_limits(max_position_qty=150_000))
        e.run()
        assert seen["position"] == 100_000  # the entry (a market order) filled
        assert seen["working"] == (0, 100_000)  # both exits, counted as one
        assert seen["trailed"] == (0, 100_000)
        assert codes(s.denied) == {R.MAX_POSITION: 3}  # the 200,000 bracket, whole
        assert not s.modify_rejected
        statuses = sorted(o.status.name for o in e.kernel.cache.orders())
        assert statuses == ["CANCELED", "DENIED", "DENIED", "DENIED", "FILLED", "FILLED"]
        assert [f.last_qty for f in s.fills] == [Quantity.from_int(100_000)] * 2
        assert kw.guard.position(SYM) == 0 and kw.guard.working_qty(SYM) == (0, 0)
        assert kw.guard.trading_state(Scope.NODE, kw.guard.node) is TradingState.ACTIVE


def test_a_brackets_exits_count_from_submission_and_no_leg_is_recorded_refused(
    tmp_path: Path,
) -> None:
    """A bracket sent as a list reaches the execution client whole: NautilusTrader's
    simulated venue holds the OTO exits until the entry fills, but live clients (Bybit,
    Binance) place every order of the list at once, so the exits are counted from the
    submission (the safe side), as their largest leg. The leg that is not counted was
    not refused: the flight recorder never shows it as a `reject` (it showed one)."""
    path = tmp_path / "nt.jsonl"
    with world() as (e, s):
        seen: dict[str, Any] = {}

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                bracket = st.order_factory.bracket(
                    AUDUSD.id,
                    OrderSide.BUY,
                    Quantity.from_int(100_000),
                    entry_order_type=OrderType.LIMIT,
                    entry_price=Price.from_str("0.69000"),  # rests: below the market
                    tp_price=Price.from_str("0.71000"),
                    sl_trigger_price=Price.from_str("0.68000"),
                )
                seen["ids"] = [o.client_order_id.value for o in bracket.orders]
                st.submit_order_list(bracket)
            elif n == 2:
                seen["working"] = kw.guard.working_qty(SYM)

        s.script = script
        e.add_data([quote(AUDUSD, i, 0.7, 0.7001) for i in range(4)])
        kw = install(e, limits=open_limits(), recorder=path)
        e.run()
        assert seen["working"] == (100_000, 100_000)  # the entry; the exits as one
        assert not s.denied
        kw.guard.recorder.close()
    for oid in seen["ids"]:
        exp = explain_order(path, oid)
        assert exp.decision.accepted
        assert [ev.kind for ev in exp.events if ev.kind in ("reject", "cancel")] == [], oid


@pytest.mark.parametrize(
    "state", [TradingState.HALTED, TradingState.REDUCING], ids=["halted", "reducing"]
)
def test_cutting_a_brackets_exit_passes_while_halted_or_reducing(state: TradingState) -> None:
    """Lowering the quantity of a bracket's take-profit is the stop direction. The Guard
    holds the exits as one order at the stop-loss's price (none), so the take-profit's
    amend was checked as moving that price and refused `halted` / `reducing_only`: a
    leg could not be cut during a kill. It passes, and the group follows the venue down."""
    with world() as (e, s):
        seen: list[tuple[int, int]] = []

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.submit_order_list(_bracket(st, 100_000))
            elif n == 2:
                kw.guard.halt(Scope.STRATEGY, st.id.value, "operator stop", "test", state=state)
            elif n == 3:
                (tp,) = [o for o in st.cache.orders_open() if o.order_type == OrderType.LIMIT]
                st.modify_order(tp, quantity=Quantity.from_int(40_000))
            elif n == 5:
                seen.append(kw.guard.working_qty(SYM))

        s.script = script
        e.add_data([quote(AUDUSD, i, 0.7, 0.7001) for i in range(7)])
        kw = install(e, limits=open_limits())
        e.run()
        assert s.modify_rejected == []
        legs = {o.order_type: o.quantity for o in e.kernel.cache.orders_open()}
        assert legs == {OrderType.LIMIT: Quantity.from_int(40_000),
                        OrderType.STOP_MARKET: Quantity.from_int(40_000)}  # fmt: skip
        assert seen == [(0, 40_000)]
        assert kw.guard.trading_state(Scope.NODE, kw.guard.node) is TradingState.ACTIVE


def test_a_brackets_stop_loss_fill_is_booked_to_its_group_once() -> None:
    """A short bracket whose stop-loss fills: the fill is booked once to the group, the
    take-profit's cancel ends the group, and the Guard's book is NautilusTrader's: flat,
    nothing working, no mismatch halt."""
    with world() as (e, s):
        seen: list[tuple[int, int]] = []

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.submit_order_list(_bracket(st, 100_000, OrderSide.SELL))
            seen.append(kw.guard.working_qty(SYM))

        s.script = script
        data = [quote(AUDUSD, i, 0.7, 0.7001) for i in range(4)]
        data += [quote(AUDUSD, i, 0.7110, 0.7111) for i in range(4, 7)]  # through the stop
        e.add_data(data)
        kw = install(e, limits=open_limits(max_position_qty=150_000))
        e.run()
        assert seen[1] == (100_000, 0) and seen[-1] == (0, 0)
        statuses = {o.order_type.name: o.status.name for o in e.kernel.cache.orders()}
        assert statuses == {"MARKET": "FILLED", "LIMIT": "CANCELED", "STOP_MARKET": "FILLED"}
        assert [f.last_qty for f in s.fills] == [Quantity.from_int(100_000)] * 2
        assert kw.guard.position(SYM) == 0 and kw.guard.working_qty(SYM) == (0, 0)
        assert kw.guard.trading_state(Scope.NODE, kw.guard.node) is TradingState.ACTIVE


@pytest.mark.parametrize(
    "state", [TradingState.HALTED, TradingState.REDUCING], ids=["halted", "reducing"]
)
def test_an_amend_that_only_lowers_the_quantity_passes_while_halted_or_reducing(
    state: TradingState,
) -> None:
    """Lowering a working order's quantity only lowers risk: the stop direction is never
    gated. It passes NautilusTrader's RiskEngine (HALTED by the mirror) and the Guard
    (whose replace check passes it in any state), and the Guard's working
    quantity follows the venue down; an amend that raises the quantity or moves the price
    is still refused."""
    with world() as (e, s):
        seen: list[tuple[int, int]] = []

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            order = (st.cache.orders_open() or [None])[0]
            if n == 1:
                st.buy("40000", "0.69000")  # rests: below the market
            elif n == 2:
                kw.guard.halt(Scope.STRATEGY, st.id.value, "operator stop", "test", state=state)
            elif n == 3:
                st.modify_order(order, quantity=Quantity.from_int(10_000))
            elif n == 5:
                st.modify_order(order, quantity=Quantity.from_int(30_000))
            elif n == 6:
                st.modify_order(order, price=Price.from_str("0.69500"))
            elif n == 7:
                st.modify_order(
                    order, quantity=Quantity.from_int(5_000), price=Price.from_str("0.68000")
                )
            if n in (2, 4, 8):
                seen.append(kw.guard.working_qty(SYM))

        s.script = script
        e.add_data([quote(AUDUSD, i, 0.7, 0.7001) for i in range(9)])
        kw = install(e, limits=open_limits())
        e.run()
        (order,) = e.kernel.cache.orders()
        assert order.quantity == Quantity.from_int(10_000) and order.is_open
        assert order.price == Price.from_str("0.69000")
        assert seen == [(40_000, 0), (10_000, 0), (10_000, 0)]
        assert len(s.modify_rejected) == 3  # the raise, the price move, the move with a cut
        mirrored = NtState.HALTED if state is TradingState.HALTED else NtState.REDUCING
        assert e.kernel.risk_engine.trading_state == mirrored


@pytest.mark.parametrize("owner", ["strategy", "external"])
def test_an_order_at_the_venue_the_guard_never_checked_is_counted_and_halts(
    tmp_path: Path, owner: str
) -> None:
    """An order sent past the bus (a direct `ExecutionEngine.execute`), or an external one
    (strategy `EXTERNAL`, as NautilusTrader reconciles at start), rested at the venue
    uncounted: the Guard then took a 50,000 buy on top of its 80,000 within max_position
    100,000, silently. The venue's acceptance of it is counted (`adopt`) and halts the
    node, whose kill cancels it, whoever owns it; nothing is left working."""
    path = tmp_path / "nt.jsonl"
    with world() as (e, s):
        seen: dict[str, Any] = {}

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
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
            elif n == 3:
                st.buy("50000", "0.69000")

        s.script = script
        e.add_data([quote(AUDUSD, i, 0.7, 0.7001) for i in range(6)])
        kw = install(e, limits=open_limits(max_position_qty=100_000), recorder=path)
        e.run()
        halt = kw.guard.halts()[(Scope.NODE, kw.guard.node)]
        assert halt.code is R.FILL_MISMATCH and "never passed the Guard" in halt.reason
        assert len(s.denied) == 1 and "HALTED" in s.denied[0]  # the 50,000 buy
        statuses = {o.client_order_id.value: o.status for o in e.kernel.cache.orders()}
        assert statuses[seen["id"]] is OrderStatus.CANCELED  # by the kill
        assert kw.guard.working_qty(SYM) == (0, 0)
        kw.guard.recorder.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    mine = [(r["kind"], r["data"].get("remaining")) for r in records
            if r.get("data", {}).get("order_id") == seen["id"]]  # fmt: skip
    assert mine == [("adopt", 80_000), ("cancel", 80_000)]  # counted until cancelled


def reconciled_order(
    e: BacktestEngine, factory: OrderFactory, qty: int, price: str, *, filled: int = 0
) -> Any:
    """An order NautilusTrader's reconciliation found at the venue (strategy `EXTERNAL`),
    put through the ExecutionEngine as reconciliation does: submitted, accepted, and
    filled by `filled` (its inferred fill), so the cache opens its position."""
    order = factory.limit(AUDUSD.id, OrderSide.BUY, Quantity.from_int(qty), Price.from_str(price))
    account = AccountId("SIM-001")
    e.kernel.cache.add_order(order)
    engine_ = e.kernel.exec_engine
    engine_.process(TestEventStubs.order_submitted(order, account_id=account))
    engine_.process(TestEventStubs.order_accepted(order, account_id=account))
    if filled:
        engine_.process(
            TestEventStubs.order_filled(
                order,
                AUDUSD,
                account_id=account,
                last_qty=Quantity.from_int(filled),
                last_px=Price.from_str(price),
            )
        )
    return order


class Reconciliation(Actor):  # type: ignore[misc]
    """What a TradingNode's reconciliation does before its trader starts, in a backtest:
    an actor added before `install`, so started before the adapter's."""

    def __init__(self, e: BacktestEngine, orders: list[tuple[int, str, int]]) -> None:
        super().__init__()
        self.e = e
        self.orders = orders
        self.found: list[Any] = []

    def on_start(self) -> None:
        factory = OrderFactory(self.e.kernel.trader_id, StrategyId("EXTERNAL"), self.e.kernel.clock)
        for qty, price, filled in self.orders:
            self.found.append(reconciled_order(self.e, factory, qty, price, filled=filled))


def test_a_restart_long_at_the_venue_starts_from_that_position_not_zero(tmp_path: Path) -> None:
    """A node restarted long 90,000 under max_position 100,000 took another 100,000: the
    Guard started every symbol at 0 (or halted on the reconciliation's fill). What the
    reconciliation leaves in the cache (its position, and an order still resting at the
    venue) is the Guard's starting point before any strategy trades: the resting order
    counted without a halt, the reconciliation's own fill not booked twice, a 20,000 buy
    refused."""
    path = tmp_path / "nt.jsonl"
    with world() as (e, s):
        s.script = lambda st, tick, n: st.buy("20000", "0.69000") if n == 1 else None
        e.add_data([quote(AUDUSD, i, 0.7, 0.7001) for i in range(4)])
        rec = Reconciliation(e, [(90_000, "0.69000", 90_000), (5_000, "0.68000", 0)])
        e.add_actor(rec)
        kw = install(e, limits=open_limits(max_position_qty=100_000), recorder=path)
        e.run()
        assert kw.started and kw.guard.halts() == {}
        assert kw.guard.position(SYM) == 90_000
        assert kw.guard.working_qty(SYM) == (5_000, 0)
        assert codes(s.denied) == {R.MAX_POSITION: 1}
        assert kw.guard.remaining(rec.found[1].client_order_id.value) == 5_000
        kw.guard.recorder.close()
    kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]
    assert "position" in kinds and "adopt" in kinds and "halt" not in kinds


def test_a_position_the_cache_loaded_without_events_is_restored_short(
    eng: BacktestEngine,
) -> None:
    """Positions a cache database brought back publish no event: read from the cache at
    start-up all the same, a short one as negative lots at its average open price."""
    s = scripted(eng, AUDUSD)
    s.script = lambda st, tick, n: st.buy("30000", "0.70010", OrderSide.SELL) if n == 1 else None
    eng.add_data([quote(AUDUSD, i, 0.7, 0.7001) for i in range(4)])
    factory = OrderFactory(eng.kernel.trader_id, StrategyId("EXTERNAL"), eng.kernel.clock)
    order = factory.market(AUDUSD.id, OrderSide.SELL, Quantity.from_int(80_000))
    fill = TestEventStubs.order_filled(
        order, AUDUSD, position_id=PositionId("P-1"), last_px=Price.from_str("0.71000")
    )
    eng.kernel.cache.add_position(Position(AUDUSD, fill), OmsType.NETTING)
    kw = install(eng, limits=open_limits(max_position_qty=100_000))
    eng.run()
    assert kw.guard.position(SYM) == -80_000
    assert codes(s.denied) == {R.MAX_POSITION: 1}


def test_a_starting_position_that_cannot_be_read_halts_its_symbol() -> None:
    """A position the Guard cannot count (its instrument is not in the cache, so it has no
    size increment) is not started at 0: its symbol halts (`fill_mismatch`, recorded),
    mirrored into NautilusTrader's one trading state as the strictest scope's."""
    eth = TestInstrumentProvider.ethusdt_binance()
    with world(BTCUSDT) as (e, s):
        s.script = lambda st, tick, n: st.buy("0.010000", "10000.10") if n == 1 else None
        e.add_data([quote(BTCUSDT, i, 10_000.0, 10_000.1) for i in range(4)])
        factory = OrderFactory(e.kernel.trader_id, StrategyId("EXTERNAL"), e.kernel.clock)
        order = factory.market(eth.id, OrderSide.BUY, Quantity.from_str("2.00000"))
        fill = TestEventStubs.order_filled(order, eth, position_id=PositionId("P-2"))
        e.kernel.cache.add_position(Position(eth, fill), OmsType.NETTING)
        kw = install(e, limits=open_limits())
        e.run()
        halt = kw.guard.halts()[(Scope.SYMBOL, eth.id.value)]
        assert halt.code is R.FILL_MISMATCH and "starting position" in halt.reason
        assert list(kw.guard.halts()) == [(Scope.SYMBOL, eth.id.value)]
        assert s.denied == ["TradingState.HALTED"] and s.fills == []
