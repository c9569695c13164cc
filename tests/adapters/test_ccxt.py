"""The ccxt adapter against two fake venues over real HTTP on 127.0.0.1.

Binance (query-string HMAC-SHA256, full order answers) and Kraken (form bodies
with a nonce, HMAC-SHA512, answers with an id only), each through the sync and
the async ccxt exchange: ccxt's own request building, signing, precision and
parsing run; the fakes check every signature.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch import Limits, RejectReason, Scope, SimClock, TradingState
from knightwatch.adapters.ccxt import (
    FORGET_PER_CALL,
    AsyncGuardedExchange,
    GuardedExchange,
    GuardRefused,
    VenueAnswerError,
    guard,
)
from knightwatch.adapters.fleet import AdapterError
from knightwatch.adapters.paper import (
    BINANCE_KEY,
    BINANCE_SECRET,
    KRAKEN_KEY,
    KRAKEN_SECRET,
    PaperBinance,
    PaperKraken,
    PaperKrakenStream,
    PaperVenue,
    VenueOrder,
)
from knightwatch.adapters.units import Units

R = RejectReason
S = 1_000_000_000
OPTIONS = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False}


@dataclass(frozen=True)
class Spec:
    name: str
    fake: type[PaperVenue]
    sync_cls: Any
    async_cls: Any
    key: str
    secret: str
    symbol: str
    step: str
    raw_writes: tuple[str, ...]


SPECS = [
    Spec("binance", PaperBinance, ccxt.binance, ccxt_async.binance, BINANCE_KEY, BINANCE_SECRET,
         "BTC/USDT", "0.00001", ("privatePostOrder", "private_post_order", "sapiPostMarginOrder")),
    Spec("kraken", PaperKraken, ccxt.kraken, ccxt_async.kraken, KRAKEN_KEY, KRAKEN_SECRET,
         "BTC/USD", "0.00000001", ("privatePostAddOrder", "private_post_addorder")),
]  # fmt: skip


async def run(value: Any) -> Any:
    """One call on either wrapper: awaited for the async exchange, plain for the sync one."""
    return await value if inspect.isawaitable(value) else value


@dataclass
class World:
    spec: Spec
    venue: PaperVenue
    ex: GuardedExchange | AsyncGuardedExchange
    units: Units

    @property
    def symbol(self) -> str:
        return self.spec.symbol

    def u(self, amount: str) -> int:
        return self.units.to_units(amount)


def limits(step: str, **overrides: Any) -> Limits:
    u = Units(step)
    base: dict[str, Any] = dict(
        version="ccxt-test",
        max_order_qty=u.to_units("0.5"),
        max_position_qty=u.to_units("2"),
        max_order_notional=100_000.0,
        price_collar_pct=0.05,
        max_price_age_s=None,
        max_executions_per_window=None,
        require_registered_parent=False,
    )
    base.update(overrides)
    return Limits(**base)


def make_exchange(spec: Spec, venue: PaperVenue, mode: str) -> Any:
    cls = spec.async_cls if mode == "async" else spec.sync_cls
    ex = cls({"apiKey": spec.key, "secret": spec.secret, "enableRateLimit": False,
              "options": OPTIONS})  # fmt: skip
    return venue.point(ex)


@pytest.fixture(params=[(s, m) for s in SPECS for m in ("sync", "async")],
                ids=lambda p: f"{p[0].name}-{p[1]}")  # fmt: skip
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    spec, mode = request.param
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        w = World(spec, venue, ex, Units(spec.step))
        try:
            await run(ex.fetch_ticker(spec.symbol))  # the Guard's reference price
            await run(ex.start([spec.symbol]))  # its starting position (the balance)
            yield w
        finally:
            await run(ex.close())
        assert venue.bad_signatures == 0


async def test_fat_finger_and_price_collar_are_refused_before_any_request(world: World) -> None:
    ex, before = world.ex, len(world.venue.requests)
    with pytest.raises(GuardRefused) as fat:
        await run(ex.create_order(world.symbol, "limit", "buy", 5, 60_000))
    assert fat.value.decision.reason is R.MAX_ORDER_QTY
    assert str(fat.value).startswith("knightwatch:max_order_qty")
    assert isinstance(fat.value, ccxt.InvalidOrder)
    with pytest.raises(GuardRefused) as collar:
        await run(ex.create_order(world.symbol, "limit", "buy", 0.1, 90_000))
    assert collar.value.decision.reason is R.PRICE_COLLAR
    assert len(world.venue.requests) == before  # nothing was sent
    assert ex.guard.working_qty(world.symbol) == (0, 0)
    # an amount off the market's step is cut by ccxt's own precision, checked as sent
    order = await run(ex.create_order(world.symbol, "limit", "buy", 0.1234567891, 60_000))
    sent = world.venue.orders[order["id"]]
    assert ex.guard.position(world.symbol) + ex.guard.working_qty(world.symbol)[0] == world.u(
        str(sent.amount)
    )


async def test_fills_are_tracked_to_the_right_position(world: World) -> None:
    ex, sym, venue = world.ex, world.symbol, world.venue
    filled = await run(ex.create_order(sym, "limit", "buy", 0.1, 60_000))  # marketable
    resting = await run(ex.create_order(sym, "limit", "buy", 0.2, 59_000))
    await run(ex.fetch_order(filled["id"], sym))
    assert ex.guard.position(sym) == world.u("0.1")
    assert ex.guard.working_qty(sym) == (world.u("0.2"), 0)

    venue.fill(resting["id"], "0.05")
    await run(ex.fetch_order(resting["id"], sym))
    await run(ex.fetch_my_trades(sym))  # the same executions again: never counted twice
    await run(ex.fetch_order(resting["id"], sym))
    assert ex.guard.position(sym) == world.u("0.15")
    assert ex.guard.working_qty(sym) == (world.u("0.15"), 0)

    await run(ex.create_order(sym, "market", "sell", 0.05))
    await run(ex.fetch_my_trades(sym))
    assert ex.guard.position(sym) == world.u("0.1")
    # the Guard's P&L is in the quote currency: bought 0.05 at 59,000, sold at 60,000
    assert ex.guard.pnl() == pytest.approx(0.05 * 1_000 + 0.1 * 0, abs=1e-6)


async def test_a_halt_cancels_open_orders_through_the_exchange(world: World) -> None:
    ex, sym, venue = world.ex, world.symbol, world.venue
    for px in (58_000, 58_500):
        await run(ex.create_order(sym, "limit", "buy", 0.1, px))
    assert ex.guard.working_qty(sym) == (world.u("0.2"), 0)
    ex.guard.halt(Scope.NODE, ex.guard.node, "operator: stop", "test")
    if isinstance(ex, AsyncGuardedExchange):
        assert ex.kill_task is not None
        await ex.kill_task
    assert {o.status for o in venue.orders.values()} == {"canceled"}
    assert ex.guard.working_qty(sym) == (0, 0)
    before = len(venue.requests)
    with pytest.raises(GuardRefused) as halted:
        await run(ex.create_order(sym, "limit", "buy", 0.1, 60_000))
    assert halted.value.decision.reason is R.HALTED and len(venue.requests) == before


async def test_an_order_on_its_way_when_the_kill_sweeps_is_cancelled_once_the_venue_answers(
    world: World,
) -> None:
    """The kill's cancel-all reaches the venue before an order already on its way does; the
    async wrapper cancels that order when the venue answers (the sync one holds its calls
    lock, so its sweep waits for the order instead). Either way nothing rests afterwards."""
    ex, sym, venue = world.ex, world.symbol, world.venue
    venue.hold = threading.Event()
    if isinstance(ex, AsyncGuardedExchange):
        placing = asyncio.ensure_future(ex.create_order(sym, "limit", "buy", 0.1, 59_000))
        while not venue.holding:
            await asyncio.sleep(0.005)
        ex.guard.halt(Scope.NODE, ex.guard.node, "fleet kill", "test")
        assert ex.kill_task is not None
        await ex.kill_task  # the sweep is done: nothing was open yet
        assert not venue.orders
        venue.hold.set()
        order = await placing
    else:
        box: list[dict[str, Any]] = []
        call = threading.Thread(
            target=lambda: box.append(ex.create_order(sym, "limit", "buy", 0.1, 59_000))
        )
        call.start()
        while not venue.holding:
            await asyncio.sleep(0.005)
        # the kill's sweep waits for the call's lock, on a thread of its own here
        node = ex.guard.node
        halting = threading.Thread(target=ex.guard.halt, args=(Scope.NODE, node, "kill", "test"))
        halting.start()
        venue.hold.set()
        call.join(30.0)  # returns as soon as it is done; a loaded machine may take seconds
        halting.join(30.0)
        (order,) = box
    assert venue.orders[str(order["id"])].status == "canceled"
    assert ex.guard.working_qty(sym) == (0, 0) and not ex.ledger.live()


async def test_a_venue_reject_gives_the_working_quantity_back(world: World) -> None:
    ex, sym = world.ex, world.symbol
    world.venue.fault = "reject"
    with pytest.raises(ccxt.InsufficientFunds):
        await run(ex.create_order(sym, "limit", "buy", 0.1, 59_000))
    assert ex.guard.working_qty(sym) == (0, 0) and ex.guard.position(sym) == 0
    assert not ex.ledger.in_doubt
    await run(ex.create_order(sym, "limit", "buy", 0.1, 60_000))  # the next one goes out
    await run(ex.fetch_my_trades(sym))
    assert ex.guard.position(sym) == world.u("0.1")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_ended_orders_are_forgotten_after_the_duplicate_scope_live_ones_never(spec: Spec) -> None:
    """A process running for weeks holds one duplicate scope of ended orders, not all it
    ever sent: an ended order still takes a late trade within the scope; after it, its
    ids and trade ids go; a live order is never forgotten; a kill reads back live ones."""
    clock = SimClock(10**15)
    lim = limits(spec.step, duplicate_id_window_s=60.0, max_orders_per_min_node=10_000)
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "sync"), limits=lim, strategy="mm", clock=clock)
        assert isinstance(ex, GuardedExchange)
        sym, ledger = spec.symbol, ex.ledger
        ex.fetch_ticker(sym)
        resting = ex.create_order(sym, "limit", "buy", 0.01, 59_000)
        ended = []
        for _ in range(20):
            clock.advance(S)
            ended.append(o := ex.create_order(sym, "limit", "sell", 0.01, 61_000))
            ex.cancel_order(o["id"], sym)
            ex.fetch_order(o["id"], sym)  # the final state (some venues answer with an id only)
        filled = ex.create_order(sym, "limit", "buy", 0.01, 60_000)  # marketable: ends filled
        ex.fetch_order(filled["id"], sym)
        position = ex.guard.position(sym)
        assert len(ledger.live()) == 1 and len(ledger.orders) == 22
        clock.advance(59 * S)
        ex.fetch_my_trades(sym)  # within the scope: the filled order's trade is known, once
        assert ex.guard.position(sym) == position and len(ledger._seen_trades) >= 1
        clock.advance(2 * S)  # the cancels (all) and the fill are now over a minute old
        ex.create_order(sym, "limit", "buy", 0.01, 59_000)
        # one order's call lets go of FORGET_PER_CALL of the 21 due, never all at once
        assert len(ledger._ended) == 21 - FORGET_PER_CALL
        assert ledger.forget(100) == 21 - FORGET_PER_CALL  # what a few more calls would
        assert len(ledger.orders) == 2 == len(ledger.live())  # the resting one and the new one
        assert not ledger._seen_trades
        assert {t.exchange_id for t in ledger.live()} >= {str(resting["id"])}
        assert len(ledger._by_exchange_id) == 2 and len(ledger._ended) == 0
        ex.fetch_my_trades(sym)  # trades of forgotten orders are ignored, never counted twice
        assert ex.guard.position(sym) == position
        venue.fill(resting["id"], "0.01")  # the long-lived order still takes its fill
        ex.fetch_order(resting["id"], sym)
        assert ex.guard.position(sym) == position + ex.ledger.units(sym).to_units("0.01")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_venue_rejects_and_expiries_are_not_counted_as_cancels(spec: Spec) -> None:
    lim = limits(spec.step, max_cancel_to_fill_ratio=1.0, cancel_ratio_min_cancels=2)
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "sync"), limits=lim, strategy="mm")
        assert isinstance(ex, GuardedExchange)
        sym = spec.symbol
        ex.fetch_ticker(sym)
        for _ in range(3):
            venue.fault = "reject"
            with pytest.raises(ccxt.ExchangeError):
                ex.create_order(sym, "limit", "buy", 0.1, 59_000)
            o = ex.create_order(sym, "limit", "buy", 0.1, 59_000)
            venue.orders[o["id"]].status = "expired"  # its time in force ran out
            ex.fetch_order(o["id"], sym)
        assert ex.guard.working_qty(sym) == (0, 0)
        # six orders ended without a fill, none by a cancel: the ratio has nothing to count
        for _ in range(2):
            o = ex.create_order(sym, "limit", "buy", 0.1, 59_000)
            ex.cancel_order(o["id"], sym)
            ex.fetch_order(o["id"], sym)
        with pytest.raises(GuardRefused) as ratio:  # two real cancels to no fill do count
            ex.create_order(sym, "limit", "buy", 0.1, 59_000)
        assert ratio.value.decision.reason is R.CANCEL_FILL_RATIO
        assert ex.guard.working_qty(sym) == (0, 0)
        assert venue.bad_signatures == 0


@pytest.mark.parametrize("fault", ["http_503", "drop_after_accept"])
async def test_a_network_error_leaves_the_order_working_in_doubt(world: World, fault: str) -> None:
    ex, sym, venue = world.ex, world.symbol, world.venue
    venue.fault = fault
    with pytest.raises(ccxt.OperationFailed):  # no venue decision: network or server error
        await run(ex.create_order(sym, "limit", "buy", 0.3, 59_000, {"clientOrderId": "cid-1"}))
    # the Guard keeps counting it: it may be live at the venue
    assert list(ex.ledger.in_doubt) == ["cid-1"]
    assert ex.guard.working_qty(sym) == (world.u("0.3"), 0)
    with pytest.raises(GuardRefused) as dup:
        await run(ex.create_order(sym, "limit", "buy", 0.1, 59_000, {"clientOrderId": "cid-1"}))
    assert dup.value.decision.reason is R.DUPLICATE_ORDER_ID
    if fault == "drop_after_accept":
        # it did arrive: the venue's open orders name its client id, which binds it again
        (live,) = [o for o in venue.orders.values() if o.status == "open"]
        await run(ex.fetch_open_orders(sym))
        assert not ex.ledger.in_doubt
        venue.fill(live.id, "0.3")
        await run(ex.fetch_my_trades(sym))
        assert ex.guard.position(sym) == world.u("0.3")
    else:
        ex.resolve("cid-1", None)  # the venue never had it
        assert not ex.ledger.in_doubt and ex.guard.position(sym) == 0
    assert ex.guard.working_qty(sym) == (0, 0)


async def test_a_cancelled_create_order_leaves_the_order_in_doubt() -> None:
    """The caller's task is cancelled while the request is on its way (a timeout around
    the call, a shutdown): the order may be live at the venue, so the Guard keeps it
    working and in doubt, never forgotten with its reservation stuck and unnamed."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "async"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, AsyncGuardedExchange)
        try:
            await ex.fetch_ticker(spec.symbol)
            sent = ex.exchange.create_order
            arrived = asyncio.Event()

            async def slow_link(*args: Any, **kwargs: Any) -> Any:
                order = await sent(*args, **kwargs)  # the venue takes it ...
                arrived.set()
                await asyncio.sleep(60)  # ... and its answer never comes back in time
                return order

            ex.exchange.create_order = slow_link
            call = asyncio.create_task(
                ex.create_order(spec.symbol, "limit", "buy", 0.3, 59_000, {"clientOrderId": "c1"})
            )
            await arrived.wait()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert list(ex.ledger.in_doubt) == ["c1"]
            assert ex.guard.working_qty(spec.symbol) == (Units(spec.step).to_units("0.3"), 0)
            await ex.fetch_open_orders(spec.symbol)  # the venue names it: bound again
            assert not ex.ledger.in_doubt
        finally:
            await ex.close()


async def test_an_edit_goes_through_the_guards_replace_check(world: World) -> None:
    ex, sym, venue = world.ex, world.symbol, world.venue
    order = await run(ex.create_order(sym, "limit", "buy", 0.2, 59_000))
    before = len(venue.requests)
    # an amend is a new risk: its size and price are checked before anything is sent
    with pytest.raises(GuardRefused) as big:
        await run(ex.edit_order(order["id"], sym, "limit", "buy", 0.6, 59_000))
    assert big.value.decision.reason is R.MAX_ORDER_QTY and len(venue.requests) == before
    with pytest.raises(GuardRefused) as collar:
        await run(ex.edit_order(order["id"], sym, "limit", "buy", 0.2, 90_000))
    assert collar.value.decision.reason is R.PRICE_COLLAR and len(venue.requests) == before
    with pytest.raises(GuardRefused) as unknown:
        await run(ex.edit_order("12345", sym, "limit", "buy", 0.1, 59_000))
    assert unknown.value.decision.reason is R.INVALID_ORDER

    venue.fault = "reject"  # the venue refuses the amend: the Guard rolls back
    with pytest.raises(ccxt.ExchangeError):
        await run(ex.edit_order(order["id"], sym, "limit", "buy", 0.4, 59_000))
    assert ex.guard.working_qty(sym) == (world.u("0.2"), 0)

    await run(ex.edit_order(order["id"], sym, "limit", "buy", 0.4, 59_000))
    assert ex.guard.working_qty(sym) == (world.u("0.4"), 0)
    live = [o for o in venue.orders.values() if o.status == "open"]
    assert [o.amount for o in live] == [Decimal("0.4")]
    venue.fill(live[0].id, "0.4")
    await run(ex.fetch_order(live[0].id, sym))  # a new order (Binance) or the same (Kraken)
    await run(ex.fetch_my_trades(sym))
    assert ex.guard.position(sym) == world.u("0.4")
    assert ex.guard.working_qty(sym) == (0, 0)


async def test_raw_order_calls_cannot_slip_past_the_guard(world: World) -> None:
    ex, sym = world.ex, world.symbol
    before = len(world.venue.requests)
    raw = ("request", "fetch", "fetch2", "close_position", "closeAllPositions")
    for name in (*world.spec.raw_writes, *raw, "create_post_only_order", "createOrderWs"):
        with pytest.raises(AdapterError, match="not routed through the knightwatch Guard"):
            getattr(ex, name)
    assert len(world.venue.requests) == before
    # reads pass straight through
    assert sym in ex.markets and ex.id == world.spec.name
    # ccxt's camelCase names are the same guarded calls, not a way around them
    with pytest.raises(GuardRefused):
        await run(ex.createOrder(sym, "limit", "buy", 5, 59_000))
    order = await run(ex.createOrder(sym, "limit", "buy", 0.1, 60_000))
    await run(ex.fetchMyTrades(sym))
    await run(ex.fetchOrder(order["id"], sym))
    assert ex.guard.position(sym) == world.u("0.1")
    # a quote-sized order cannot be counted exactly: refused
    with pytest.raises(GuardRefused, match="quote-sized"):
        await run(ex.create_order(sym, "market", "buy", 0.1, None, {"cost": 6000}))


@pytest.mark.parametrize(
    "cls",
    [ccxt.deribit, ccxt_async.deribit, ccxt.coinbaseinternational],
    ids=["deribit-sync", "deribit-async", "coinbaseinternational"],
)
async def test_order_entry_a_venue_takes_as_a_get_cannot_slip_past_the_guard(cls: Any) -> None:
    """Deribit (and Coinbase International) place, amend and close orders with GET requests:
    `private_get_buy` has no `post` in its name, and it reached the venue unchecked. It is
    refused like any raw write; the venue's reads by GET still pass."""
    ex = guard(cls({"enableRateLimit": False}), limits=limits("0.1"), strategy="mm")
    try:
        for name in ("private_get_buy", "privateGetSell", "private_get_edit",
                     "privateGetEditByLabel", "private_get_close_position"):  # fmt: skip
            with pytest.raises(AdapterError, match=f"{name}: not routed through the knightwatch"):
                getattr(ex, name)
        assert callable(ex.private_get_get_open_orders_by_currency)
        assert callable(ex.public_get_get_order_book)
    finally:
        await run(ex.close())


@pytest.mark.parametrize("cls", [ccxt.revolutx, ccxt_async.revolutx], ids=["sync", "async"])
async def test_an_implicit_write_whose_name_the_pattern_misses_is_refused(cls: Any) -> None:
    """Revolut X places an order with `POST /1.0/orders`: ccxt names it `privatePost10Orders`,
    a digit where the name pattern looks for a capital, and it reached the venue unchecked.
    Every implicit endpoint that is not a GET is refused, whatever its name."""
    ex = guard(cls({"enableRateLimit": False}), limits=limits("0.1"), strategy="mm")
    try:
        for name in ("privatePost10Orders", "privatePut10OrdersVenueOrderId"):
            with pytest.raises(AdapterError, match=f"{name}: not routed through the knightwatch"):
                getattr(ex, name)
        assert callable(ex.privateGet10OrdersActive)
    finally:
        await run(ex.close())


OVERRIDES = {"binance": "quantity", "kraken": "volume"}
"""Each venue's own name for the order's amount: ccxt merges `params` over its request."""


async def test_only_what_the_guard_checked_is_sent(world: World) -> None:
    """Nothing in `params`, the type or a market order's price can change what is sent from
    what the Guard checked: each is refused before any request, with nothing reserved."""
    ex, sym, venue = world.ex, world.symbol, world.venue
    before = len(venue.requests)
    amount_key = OVERRIDES[world.spec.name]
    one = {"symbol": sym, "type": "limit", "side": "buy", "amount": 0.1, "price": 60_000}
    refusals: list[tuple[tuple[Any, ...], str]] = [
        (("limit", "buy", 0.1, 60_000, {amount_key: "5"}), f"params.{amount_key}"),
        (("limit", "buy", 0.1, 60_000, {"price": "90000"}), "params.price"),
        (("limit", "buy", 0.1, 60_000, {"side": "sell"}), "params.side"),
        (("limit", "buy", 0.1, 60_000, {"timeInForce": "GTX2"}), "params.timeInForce"),
        (("limit", "buy", 0.1, 60_000, {"clientOrderId": ["a"]}), "params.clientOrderId"),
        (("market", "buy", 0.1, 60_000), "price: a market order"),
        (("MARKET", "buy", 0.1), "type:"),
        (("stop_loss", "sell", 0.1, 60_000), "type:"),
        (("limit", "buy", 0.1), "price: a limit order needs one"),
    ]
    for args, named in refusals:
        with pytest.raises(GuardRefused, match=re.escape(named)) as refused:
            await run(ex.create_order(sym, *args))
        assert refused.value.decision.reason is R.INVALID_ORDER
    with pytest.raises(GuardRefused, match=re.escape("orders[0].cost")):
        await run(ex.create_orders([one | {"cost": 6000}]))
    with pytest.raises(GuardRefused, match=re.escape(f"params.{amount_key}")):
        await run(ex.create_orders([one], {amount_key: "5"}))
    assert len(venue.requests) == before
    assert ex.guard.working_qty(sym) == (0, 0)

    # what may be carried is sent, and the order is exactly the checked one
    carried = {"timeInForce": "GTC", "clientOrderId": "kw-keep-1"}
    order = await run(ex.create_order(sym, "limit", "buy", 0.1, 59_000, carried))
    assert venue.orders[order["id"]].amount == Decimal("0.1")
    with pytest.raises(GuardRefused, match=rf"params\.{amount_key}"):
        await run(ex.edit_order(order["id"], sym, "limit", "buy", 0.1, 59_000, {amount_key: "5"}))
    with pytest.raises(GuardRefused, match="type: an amend keeps"):
        await run(ex.edit_order(order["id"], sym, "market", "buy", 0.1))
    assert ex.guard.working_qty(sym) == (world.u("0.1"), 0)
    # a market sell with no price goes, counted as sent
    await run(ex.create_order(sym, "market", "sell", 0.05))

    # a venue that sizes spot market buys in the quote currency (okx by default):
    # the amount would be spent, not bought
    assert "createMarketBuyOrderRequiresPrice" in ccxt.okx().options
    ex.exchange.options["createMarketBuyOrderRequiresPrice"] = False
    sent = len(venue.requests)
    with pytest.raises(GuardRefused, match="sizes spot market buys in the quote currency"):
        await run(ex.create_order(sym, "market", "buy", 0.1))
    assert len(venue.requests) == sent


async def test_a_refused_batch_sends_nothing_and_reserves_nothing(world: World) -> None:
    ex, sym = world.ex, world.symbol
    batch = [
        {"symbol": sym, "type": "limit", "side": "buy", "amount": 0.1, "price": 59_000},
        {"symbol": sym, "type": "limit", "side": "buy", "amount": 3, "price": 59_000},
    ]
    before = len(world.venue.requests)
    with pytest.raises(GuardRefused) as refused:
        await run(ex.create_orders(batch))
    assert refused.value.decision.reason is R.MAX_ORDER_QTY
    assert len(world.venue.requests) == before
    assert ex.guard.working_qty(sym) == (0, 0)


def test_joining_a_fleet_needs_the_nodes_key_and_the_trust_anchor() -> None:
    for ex in (ccxt.binance(), ccxt_async.binance()):
        with pytest.raises(AdapterError, match="key, anchor: joining a fleet needs"):
            guard(ex, limits=Limits(), control_plane="nats://127.0.0.1:1")
    sync = guard(ccxt.binance(), limits=Limits())
    assert isinstance(sync, GuardedExchange)
    with pytest.raises(AdapterError, match="join: this exchange was wrapped without"):
        sync.join()


def test_units_are_the_markets_step() -> None:
    with PaperBinance("60000") as venue:
        ex = guard(make_exchange(SPECS[0], venue, "sync"), limits=limits(SPECS[0].step))
        assert isinstance(ex, GuardedExchange)
        ex.load_markets()
        assert ex.ledger.units("BTC/USDT").step == Decimal("0.00001")
        assert ex.ledger.units("ETH/USDT").step == Decimal("0.0001")


async def test_an_update_the_guard_cannot_book_halts_the_node_and_cancels(world: World) -> None:
    ex, sym = world.ex, world.symbol
    order = await run(ex.create_order(sym, "limit", "buy", 0.1, 59_000))
    # a venue answer off the market's step (half a step filled): not bookable exactly
    half_step = world.units.step / 2
    ex.ledger.apply_order({"id": order["id"], "filled": str(half_step), "status": "open"})
    halt = ex.guard.halts()[(Scope.NODE, ex.guard.node)]
    assert halt.code is R.FILL_MISMATCH and "not a whole number of steps" in halt.reason
    if isinstance(ex, AsyncGuardedExchange):
        assert ex.kill_task is not None
        await ex.kill_task
    assert world.venue.orders[order["id"]].status == "canceled"


async def test_an_end_without_a_fill_count_keeps_the_order_working(world: World) -> None:
    ex, sym, venue = world.ex, world.symbol, world.venue
    order = await run(ex.create_order(sym, "limit", "buy", 0.2, 59_000))
    venue.fill(order["id"], "0.05")  # the venue filled part of it, then cancelled it ...
    venue.cancel(order["id"])
    # ... and the first answer the wrapper sees only says it ended, with no fill count
    ex.ledger.apply_order({"id": order["id"], "status": "canceled", "filled": None})
    assert ex.guard.working_qty(sym) == (world.u("0.2"), 0)  # a fill may still come
    await run(ex.fetch_my_trades(sym))
    assert ex.guard.position(sym) == world.u("0.05")
    assert ex.guard.working_qty(sym) == (world.u("0.15"), 0)
    await run(ex.fetch_order(order["id"], sym))  # canceled with 0.05 filled: ended
    assert ex.guard.working_qty(sym) == (0, 0)
    assert ex.guard.position(sym) == world.u("0.05")
    assert not ex.guard.halts()


async def test_watch_orders_and_watch_my_trades_feed_the_guard_over_a_websocket() -> None:
    """ccxt.pro's Kraken client on the paper venue's WebSocket v2 `executions` channel:
    the same fill arrives as an execution and as an order update, and is booked once."""
    sym = "BTC/USD"
    with PaperKraken("60000") as venue, PaperKrakenStream(venue) as stream:
        raw = ccxt_pro.kraken({"apiKey": KRAKEN_KEY, "secret": KRAKEN_SECRET})
        ex = guard(stream.point(raw), limits=limits("0.00000001"), strategy="mm")
        assert isinstance(ex, AsyncGuardedExchange)
        try:
            await ex.fetch_ticker(sym)
            filled = await ex.create_order(sym, "limit", "buy", 0.2, 59_000)
            resting = await ex.create_order(sym, "limit", "buy", 0.1, 58_000)
            orders = asyncio.create_task(ex.watch_orders(sym))
            trades = asyncio.create_task(ex.watch_my_trades(sym))
            for _ in range(750):  # until ccxt has subscribed with its token (up to 15 s)
                if stream.subscribers:
                    break
                await asyncio.sleep(0.02)
            venue.fill(filled["id"], "0.2")
            await asyncio.wait_for(trades, 10)
            await asyncio.wait_for(orders, 10)
            u = Units("0.00000001")
            assert ex.guard.position(sym) == u.to_units("0.2")
            assert ex.guard.working_qty(sym) == (u.to_units("0.1"), 0)
            # a cancel seen only on the stream gives the working quantity back (Kraken's
            # names no market: ccxt hands it only to a watch naming none)
            cancelled = asyncio.create_task(ex.watch_orders())
            venue.cancel(resting["id"])
            await asyncio.wait_for(cancelled, 10)
            assert ex.guard.working_qty(sym) == (0, 0)
            assert ex.guard.position(sym) == u.to_units("0.2")
        finally:
            await ex.close()
        assert venue.bad_signatures == 0


EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("edit"), st.integers(1, 5), st.booleans()),  # tenths, venue refuses
        st.tuples(st.just("fill"), st.just(1), st.just(False)),  # a hundredth at the venue
    ),
    min_size=1,
    max_size=6,
)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@settings(max_examples=30, deadline=None)
@given(steps=EDITS)
def test_amends_never_leave_a_reservation_behind(spec: Spec, steps: list[Any]) -> None:
    """Whatever amends the venue takes or refuses, and fills between them, the Guard's
    working quantity is the venue's open leaves after each answer, and nothing after
    the cancel: every reservation is committed or rolled back."""
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "sync"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, GuardedExchange)
        sym, u = spec.symbol, Units(spec.step)
        ex.fetch_ticker(sym)
        ex.create_order(sym, "limit", "buy", 0.2, 59_000)

        def live() -> VenueOrder:
            (o,) = [o for o in venue.orders.values() if o.status == "open"]
            return o

        fills = 0
        for kind, n, refused in steps:
            if kind == "fill":
                if fills == 3:
                    continue
                fills += 1
                venue.fill(live().id, "0.01")
            else:
                venue.fault = "reject" if refused else None
                try:
                    ex.edit_order(live().id, sym, "limit", "buy", n / 10, 59_000)
                except GuardRefused:  # filled and new amount over max_order_qty: not sent
                    assert fills and n == 5
                except ccxt.ExchangeError:
                    assert refused
                venue.fault = None
            ex.fetch_order(live().id, sym)  # the venue's leaves after an amend are the truth
            o = live()
            assert ex.guard.working_qty(sym) == (u.to_units(o.amount - o.filled), 0)
            assert ex.guard.position(sym) == u.to_units(str(fills / 100))
        last = live().id
        ex.cancel_order(last, sym)
        ex.fetch_order(last, sym)  # Kraken's cancel answers with a count, not the order
        assert ex.guard.working_qty(sym) == (0, 0)
        assert not [t for t in ex.ledger.orders.values() if t.pending is not None]
        assert venue.bad_signatures == 0


def test_trades_with_the_same_id_in_two_symbols_are_two_trades() -> None:
    """Binance numbers trades per market: trade 7 of BTC/USDT and trade 7 of ETH/USDT are
    different executions, and each is booked (the second was dropped as a repeat)."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "sync"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, GuardedExchange)
        ex.fetch_ticker("BTC/USDT")
        ex.on_price("ETH/USDT", 3000)
        btc = ex.create_order("BTC/USDT", "limit", "buy", 0.2, 59_000)
        eth = ex.create_order("ETH/USDT", "limit", "buy", 0.3, 2_990)

        def trade(order: dict[str, Any], amount: float, price: float) -> dict[str, Any]:
            return {"id": "7", "order": order["id"], "symbol": order["symbol"],
                    "amount": amount, "price": price, "side": "buy"}  # fmt: skip

        both = [trade(btc, 0.2, 59_000), trade(eth, 0.3, 2_990)]
        ex.ledger.apply_trades(both)
        ex.ledger.apply_trades(both)  # reported again: still booked once each
        assert ex.guard.position("BTC/USDT") == ex.ledger.units("BTC/USDT").to_units("0.2")
        assert ex.guard.position("ETH/USDT") == ex.ledger.units("ETH/USDT").to_units("0.3")


async def test_a_market_named_by_its_venue_id_is_the_same_market_to_the_guard(
    world: World,
) -> None:
    """ccxt takes a market's venue id (`BTCUSDT`, `XXBTZUSD`) where it takes the unified
    symbol and sends the same order: the Guard counts it under the unified symbol, so
    its reference price, collar, position and symbol lists see one market, not two."""
    ex, sym, venue = world.ex, world.symbol, world.venue
    mid = ex.exchange.market(sym)["id"]
    assert mid != sym
    with pytest.raises(GuardRefused) as collar:
        await run(ex.create_order(mid, "limit", "buy", 0.1, 90_000))
    assert collar.value.decision.reason is R.PRICE_COLLAR
    order = await run(ex.create_order(mid, "limit", "buy", 0.2, 59_000))
    assert order["symbol"] == sym
    assert ex.guard.working_qty(sym) == (world.u("0.2"), 0)
    assert ex.guard.working_qty(mid) == (0, 0)
    await run(ex.edit_order(order["id"], mid, "limit", "buy", 0.3, 59_000))
    live = [o for o in venue.orders.values() if o.status == "open"]
    await run(ex.fetch_order(live[0].id, sym))
    assert ex.guard.working_qty(sym) == (world.u("0.3"), 0)
    ex.on_price(mid, 70_000)  # a feed keyed by venue id moves the unified symbol's reference
    with pytest.raises(GuardRefused) as moved:
        await run(ex.create_order(sym, "limit", "buy", 0.1, 60_000))
    assert moved.value.decision.reason is R.PRICE_COLLAR


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_a_venue_id_does_not_open_a_second_position_limit(spec: Spec) -> None:
    u = Units(spec.step)
    lim = limits(spec.step, require_reference_price=False, max_position_qty=u.to_units("0.5"))
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "sync"), limits=lim, strategy="mm")
        assert isinstance(ex, GuardedExchange)
        ex.load_markets()
        mid = ex.exchange.market(spec.symbol)["id"]
        ex.create_order(spec.symbol, "limit", "buy", 0.4, 59_000)
        with pytest.raises(GuardRefused) as refused:
            ex.create_order(mid, "limit", "buy", 0.4, 59_000)
        assert refused.value.decision.reason is R.MAX_POSITION
        assert len([o for o in venue.orders.values() if o.status == "open"]) == 1
        assert venue.bad_signatures == 0


async def test_malformed_orders_and_batches_are_refused_with_nothing_reserved(
    world: World,
) -> None:
    """A batch entry without a field, with `params` that are not a dict, or a symbol that
    is not a string is refused by name; the orders of the batch checked before it give
    back what they reserved (they were kept working forever, with a KeyError)."""
    ex, sym, venue = world.ex, world.symbol, world.venue
    one = {"symbol": sym, "type": "limit", "side": "buy", "amount": 0.1, "price": 59_000}
    no_type = {k: v for k, v in one.items() if k != "type"}
    before = len(venue.requests)
    batches: list[tuple[Any, str]] = [
        ([one, no_type], "orders[1].type: missing"),
        ([one, one | {"params": ["x"]}], "orders[1].params: must be a dict"),
        ([one, one | {"symbol": ["x"]}], "symbol: must be a string"),
        ([one, "order"], "orders[1]: must be a dict"),
        ((one,), "orders: must be a list"),
    ]
    for batch, named in batches:
        with pytest.raises(GuardRefused, match=re.escape(named)) as refused:
            await run(ex.create_orders(batch))
        assert refused.value.decision.reason is R.INVALID_ORDER
        assert ex.guard.working_qty(sym) == (0, 0)
    with pytest.raises(GuardRefused, match=re.escape("params: must be a dict")):
        await run(ex.create_order(sym, "limit", "buy", 0.1, 59_000, ["x"]))
    with pytest.raises(GuardRefused, match=re.escape("symbol: must be a string")):
        await run(ex.create_order(["x"], "limit", "buy", 0.1, 59_000))
    assert len(venue.requests) == before
    assert ex.guard.working_qty(sym) == (0, 0) and not ex.ledger.live()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_batch_is_booked_entry_by_entry(mode: str) -> None:
    """Kraken answers a batch entry by entry and ccxt raises on the first refused one, with
    the others live at the venue: those stay working and in doubt (they were given back,
    and their fills then ignored). An order missing from the answer is in doubt too. A
    batch refused before sending, or an order never placed, is not counted as a cancel."""
    spec = SPECS[1]
    u = Units(spec.step)
    lim = limits(spec.step, max_cancel_to_fill_ratio=1.0, cancel_ratio_min_cancels=1)
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, mode), limits=lim, strategy="mm")
        sym = spec.symbol
        try:
            await run(ex.fetch_ticker(sym))
            one = {"symbol": sym, "type": "limit", "side": "buy", "amount": 0.1, "price": 59_000}
            with pytest.raises(GuardRefused):  # the second is too big: nothing sent
                await run(ex.create_orders([one, one | {"amount": 3}]))

            def cid(c: str) -> dict[str, Any]:
                return one | {"params": {"clientOrderId": c}}

            venue.fault = "batch_reject_last"
            with pytest.raises(ccxt.InsufficientFunds):
                await run(ex.create_orders([cid("b1"), cid("b2")]))
            (placed,) = venue.orders.values()
            assert placed.client_id == "b1" and placed.status == "open"
            assert ex.guard.working_qty(sym) == (u.to_units("0.2"), 0)
            assert sorted(ex.ledger.in_doubt) == ["b1", "b2"]
            await run(ex.fetch_open_orders(sym))  # the venue names b1: bound again
            assert list(ex.ledger.in_doubt) == ["b2"]
            ex.resolve("b2", None)  # never placed
            venue.fill(placed.id, "0.1")
            await run(ex.fetch_my_trades(sym))
            assert ex.guard.position(sym) == u.to_units("0.1")

            venue.fault = "batch_drop_last"
            answered = await run(ex.create_orders([cid("b3"), cid("b4")]))
            assert len(answered) == 1
            assert list(ex.ledger.in_doubt) == ["b4"]
            assert ex.guard.working_qty(sym) == (u.to_units("0.2"), 0)
            await run(ex.fetch_open_orders(sym))
            assert not ex.ledger.in_doubt
            # nothing above was a cancel: the ratio (one cancel to no fill) has none to count
            await run(ex.create_order(sym, "limit", "buy", 0.1, 59_000))
            open_leaves = sum(
                o.amount - o.filled for o in venue.orders.values() if o.status == "open"
            )
            assert ex.guard.working_qty(sym) == (u.to_units(open_leaves), 0)
        finally:
            await run(ex.close())
        assert venue.bad_signatures == 0


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
async def test_an_order_on_its_way_named_by_venue_id_is_cancelled_after_the_kill(
    spec: Spec,
) -> None:
    """The kill's sweep misses an order still on its way; the async wrapper cancels it when
    the venue answers, also when the caller named the market by its venue id (`BTCUSDT`):
    it was left resting at the venue after the kill."""
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "async"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, AsyncGuardedExchange)
        try:
            await ex.fetch_ticker(spec.symbol)
            mid = ex.exchange.market(spec.symbol)["id"]
            venue.hold = threading.Event()
            placing = asyncio.ensure_future(ex.create_order(mid, "limit", "buy", 0.1, 59_000))
            while not venue.holding:
                await asyncio.sleep(0.005)
            ex.guard.halt(Scope.NODE, ex.guard.node, "fleet kill", "test")
            assert ex.kill_task is not None
            await ex.kill_task
            venue.hold.set()
            order = await placing
            assert venue.orders[str(order["id"])].status == "canceled"
            assert ex.guard.working_qty(spec.symbol) == (0, 0) and not ex.ledger.live()
        finally:
            await ex.close()
        assert venue.bad_signatures == 0


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_a_trade_or_fill_count_below_zero_halts_instead_of_hiding_later_fills(
    spec: Spec,
) -> None:
    """A venue answer with a negative trade amount was added to the order's trade sum, so
    the real executions after it were never booked (and no halt said so); a negative
    cumulative `filled` ended an order as if nothing had filled. Both halt the node."""
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "sync"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, GuardedExchange)
        sym, u = spec.symbol, Units(spec.step)
        ex.fetch_ticker(sym)
        order = ex.create_order(sym, "limit", "buy", 0.2, 59_000)
        venue.fill(order["id"], "0.1")
        bad = {"id": "bogus-1", "order": order["id"], "symbol": sym, "amount": -0.1,
               "price": 59_000, "side": "buy"}  # fmt: skip
        ex.ledger.apply_trades([bad])
        halt = ex.guard.halts()[(Scope.NODE, ex.guard.node)]
        assert halt.code is R.FILL_MISMATCH and "trade amount: must be > 0" in halt.reason
        ex.fetch_my_trades(sym)
        assert ex.guard.position(sym) == u.to_units("0.1")
        assert ex.guard.working_qty(sym) == (0, 0)

    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "sync"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, GuardedExchange)
        ex.fetch_ticker(sym)
        order = ex.create_order(sym, "limit", "buy", 0.2, 59_000)
        ex.ledger.apply_order({"id": order["id"], "filled": -0.1, "status": "canceled"})
        halt = ex.guard.halts()[(Scope.NODE, ex.guard.node)]
        assert halt.code is R.FILL_MISMATCH and "filled: must be >= 0" in halt.reason


def test_an_order_id_of_another_market_is_another_order() -> None:
    """Binance numbers orders per market: an update or a trade for ETH/USDT order 7 (placed
    elsewhere) is not BTC/USDT order 7 placed here. It was booked to it, silently."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "sync"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, GuardedExchange)
        ex.fetch_ticker("BTC/USDT")
        ex.on_price("ETH/USDT", 3000)
        btc = ex.create_order("BTC/USDT", "limit", "buy", 0.2, 59_000)
        other = {"id": btc["id"], "symbol": "ETH/USDT", "side": "buy", "amount": 0.1,
                 "filled": 0.1, "remaining": 0, "price": 3000, "status": "closed"}  # fmt: skip
        ex.ledger.apply_order(other)
        trade = {"id": "99", "order": btc["id"], "symbol": "ETH/USDT", "amount": 0.1,
                 "price": 3000, "side": "buy"}  # fmt: skip
        ex.ledger.apply_trades([trade])
        ex.ledger.apply_order(other | {"symbol": "DOGE/NOPE"})  # a market not loaded: ignored
        assert ex.guard.position("BTC/USDT") == 0 and ex.guard.position("ETH/USDT") == 0
        assert ex.guard.working_qty("BTC/USDT") == (ex.ledger.units("BTC/USDT").to_units("0.2"), 0)
        assert not ex.guard.halts()
        # the order placed here is still found by its own market and id; an update that
        # names no market finds the one order with that id
        ex.ledger.apply_order({"id": btc["id"], "filled": 0.05, "price": 59_000, "status": "open"})
        assert ex.guard.position("BTC/USDT") == ex.ledger.units("BTC/USDT").to_units("0.05")
        venue.fill(btc["id"], "0.2")
        ex.fetch_my_trades("BTC/USDT")
        assert ex.guard.position("BTC/USDT") == ex.ledger.units("BTC/USDT").to_units("0.2")
        assert ex.guard.working_qty("BTC/USDT") == (0, 0)
        assert venue.bad_signatures == 0


def test_an_answer_that_names_no_order_leaves_it_in_doubt() -> None:
    """The venue placed the order but its answer names no order id (and none was given as
    `clientOrderId`): no update can ever bind it, so it is in doubt and `resolve` settles
    it (it stayed working forever, and `resolve` refused it as not in doubt)."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "sync"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, GuardedExchange)
        sym, u = spec.symbol, Units(spec.step)
        ex.fetch_ticker(sym)
        venue.fault = "empty_answer"
        answer = ex.create_order(sym, "limit", "buy", 0.1, 59_000)
        assert answer["id"] is None
        (gid,) = ex.ledger.in_doubt
        assert ex.guard.working_qty(sym) == (u.to_units("0.1"), 0)
        (live,) = ex.fetch_open_orders(sym)  # the venue's record of it, found by hand
        ex.resolve(gid, live)
        assert not ex.ledger.in_doubt
        venue.fill(str(live["id"]), "0.1")
        ex.fetch_my_trades(sym)
        assert ex.guard.position(sym) == u.to_units("0.1")
        assert ex.guard.working_qty(sym) == (0, 0)
        assert venue.bad_signatures == 0


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_kill_cancels_every_symbol_though_one_symbols_cancel_breaks(mode: str) -> None:
    """The kill's sweep goes symbol by symbol: a failure that is not a ccxt error (a parse
    bug on one venue answer) in the first symbol stopped the sweep, and the orders of the
    other symbols stayed resting after the kill."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        try:
            await run(ex.fetch_ticker("BTC/USDT"))
            ex.on_price("ETH/USDT", 3000)
            btc = await run(ex.create_order("BTC/USDT", "limit", "buy", 0.1, 58_000))
            eth = await run(ex.create_order("ETH/USDT", "limit", "buy", 0.1, 2_950))
            real = ex.exchange.cancel_all_orders

            def broken(symbol: str | None = None, params: Any = None) -> Any:
                if symbol == "BTC/USDT":
                    raise TypeError("'NoneType' object is not subscriptable")
                return real(symbol, params or {})

            ex.exchange.cancel_all_orders = broken
            ex.guard.halt(Scope.NODE, ex.guard.node, "fleet kill", "test")
            if isinstance(ex, AsyncGuardedExchange):
                assert ex.kill_task is not None
                await ex.kill_task
            assert venue.orders[str(eth["id"])].status == "canceled"
            assert venue.orders[str(btc["id"])].status == "open"  # its cancel kept failing
            assert ex.guard.working_qty("ETH/USDT") == (0, 0)
        finally:
            await run(ex.close())
        assert venue.bad_signatures == 0


def answers(ex: GuardedExchange | AsyncGuardedExchange, name: str, value: Any) -> None:
    """The exchange's `name` answers `value` from now on (sync or async, as the exchange)."""
    if isinstance(ex, AsyncGuardedExchange):

        async def odd(*args: Any, **kwargs: Any) -> Any:
            return value

        setattr(ex.exchange, name, odd)
    else:
        setattr(ex.exchange, name, lambda *args, **kwargs: value)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_venue_answer_of_the_wrong_type_is_refused_by_name_never_a_traceback(
    mode: str,
) -> None:
    """A venue (or a ccxt parse) answering with the wrong type: `fetch_tickers` a list,
    `fetch_order` None or a list, `fetch_open_orders` a dict, `create_order` a string or a
    number, an order id that is a dict. Each raised an AttributeError from the wrapper (or
    was booked, or silently ignored); now a `VenueAnswerError` (a `ccxt.BadResponse`, never
    a reject) names the call, nothing of it is booked, and an order it answered for is
    held in doubt, working, since the venue may have taken it."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        sym, u = spec.symbol, Units(spec.step)
        try:
            await run(ex.fetch_ticker(sym))
            resting = await run(ex.create_order(sym, "limit", "buy", 0.1, 59_000))
            reads: list[tuple[str, Any, Any, str]] = [
                ("fetch_tickers", [{"symbol": sym, "last": 1.0}], lambda: ex.fetch_tickers(),
                 "fetch_tickers: the answer is list, not tickers by symbol"),
                ("fetch_ticker", "60000", lambda: ex.fetch_ticker(sym),
                 "fetch_ticker: the answer is str, not a ticker"),
                ("fetch_order", None, lambda: ex.fetch_order(resting["id"], sym),
                 "fetch_order: the answer is NoneType, not an order"),
                ("fetch_order", [resting | {"filled": 0.1, "status": "closed"}],
                 lambda: ex.fetch_order(resting["id"], sym),
                 "fetch_order: the answer is list, not an order"),
                ("fetch_open_orders", {"id": resting["id"], "status": "canceled", "filled": 0},
                 lambda: ex.fetch_open_orders(sym),
                 "fetch_open_orders: the answer is dict, not a list of orders"),
                ("fetch_open_orders", [None, resting | {"status": ["open"]}],
                 lambda: ex.fetch_open_orders(sym),
                 "fetch_open_orders: entry 0 is NoneType, not an order"),
                ("fetch_my_trades", {"id": "T1"}, lambda: ex.fetch_my_trades(sym),
                 "fetch_my_trades: the answer is dict, not a list of trades"),
            ]  # fmt: skip
            for name, value, call, named in reads:
                real = getattr(ex.exchange, name)
                answers(ex, name, value)
                with pytest.raises(ccxt.BadResponse, match=re.escape(named)) as bad:
                    await run(call())
                assert isinstance(bad.value, VenueAnswerError)
                setattr(ex.exchange, name, real)
                assert ex.guard.working_qty(sym) == (u.to_units("0.1"), 0), name
                assert ex.guard.position(sym) == 0 and not ex.ledger.in_doubt, name

            real_create = ex.exchange.create_order
            for value in ("accepted", None, 5, {"id": {"orderId": 9}, "status": "open"}):
                answers(ex, "create_order", value)
                with pytest.raises(VenueAnswerError, match="create_order: the venue's answer"):
                    await run(ex.create_order(sym, "limit", "buy", 0.1, 59_000))
                (gid,) = ex.ledger.in_doubt  # perhaps live at the venue: still working
                assert ex.guard.working_qty(sym) == (u.to_units("0.2"), 0)
                ex.resolve(gid, None)
            ex.exchange.create_order = real_create
            answers(ex, "create_orders", "accepted")
            one = {"symbol": sym, "type": "limit", "side": "buy", "amount": 0.1, "price": 59_000}
            with pytest.raises(VenueAnswerError, match="create_orders: the answer is str"):
                await run(ex.create_orders([one]))
            assert len(ex.ledger.in_doubt) == 1

            answers(ex, "edit_order", "amended")  # the amend may have been taken: in doubt
            with pytest.raises(VenueAnswerError, match="edit_order: the venue's answer is str"):
                await run(ex.edit_order(resting["id"], sym, "limit", "buy", 0.3, 59_000))
            assert ex.guard.working_qty(sym) == (u.to_units("0.4"), 0)  # the larger stays
            answers(ex, "cancel_order", "done")  # a cancel's answer never raises
            assert await run(ex.cancel_order(resting["id"], sym)) == "done"
            assert not ex.guard.halts()
        finally:
            await run(ex.close())
        assert venue.bad_signatures == 0


@pytest.mark.parametrize(
    "ticker",
    [
        {"bid": -1.0, "ask": 60_000.0, "last": 60_000.0},  # the mid would be 29,999.5
        {"bid": True, "ask": True, "last": 60_000.0},  # the mid would be 1.0
        {"bid": "59990", "ask": "60010", "last": 60_000.0},
        {"bid": float("nan"), "ask": 30_000.0, "last": 30_000.0},
        {"last": float("inf")},
    ],
    ids=["negative-bid", "bool", "strings", "nan", "inf"],
)
def test_a_ticker_price_that_is_not_a_positive_number_gives_no_reference(
    ticker: dict[str, Any],
) -> None:
    """A negative bid was averaged into the mid, halving the reference (and so opening the
    collar at half the market); a bool bid and ask gave a reference of 1. A ticker with any
    price that is not a positive finite number gives no reference: the last good one stays."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "sync"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, GuardedExchange)
        sym = spec.symbol
        ex.fetch_ticker(sym)
        answers(ex, "fetch_ticker", ticker | {"symbol": sym})
        ex.fetch_ticker(sym)
        with pytest.raises(GuardRefused) as collar:
            ex.create_order(sym, "limit", "buy", 0.1, 31_000)
        assert collar.value.decision.reason is R.PRICE_COLLAR
        ex.create_order(sym, "limit", "buy", 0.1, 59_000)
        assert venue.bad_signatures == 0


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_kill_cancels_past_an_open_orders_entry_it_cannot_read(mode: str) -> None:
    """On a venue without cancel-all the kill cancels what `fetch_open_orders` lists; one
    entry that is not an order (None) made every attempt fail with a TypeError, and every
    open order stayed resting after the kill."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        sym = spec.symbol
        try:
            await run(ex.fetch_ticker(sym))
            placed = [await run(ex.create_order(sym, "limit", "buy", 0.1, px))
                      for px in (58_000, 58_500)]  # fmt: skip
            ex.exchange.has["cancelAllOrders"] = False
            real = ex.exchange.fetch_open_orders
            if isinstance(ex, AsyncGuardedExchange):

                async def with_junk(*args: Any, **kwargs: Any) -> Any:
                    return [None, *(await real(*args, **kwargs))]

                ex.exchange.fetch_open_orders = with_junk
            else:
                ex.exchange.fetch_open_orders = lambda *a, **k: [None, *real(*a, **k)]
            ex.guard.halt(Scope.NODE, ex.guard.node, "fleet kill", "test")
            if isinstance(ex, AsyncGuardedExchange):
                assert ex.kill_task is not None
                await ex.kill_task
            assert [venue.orders[str(o["id"])].status for o in placed] == ["canceled"] * 2
            assert ex.guard.working_qty(sym) == (0, 0)
        finally:
            await run(ex.close())
        assert venue.bad_signatures == 0


def test_a_client_order_id_of_another_market_is_another_order() -> None:
    """Venues keep client order ids per market (Binance: unique among a symbol's open
    orders): an ETH/USDT update carrying the client id of a BTC/USDT order placed here
    (before its venue id was known) bound that order to the ETH order's id and booked the
    ETH fill to BTC/USDT. `resolve` with a record that is not an order raised an
    AttributeError; it is refused by name and settles nothing."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "sync"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, GuardedExchange)
        u = ex.ledger
        ex.fetch_ticker("BTC/USDT")
        venue.fault = "drop_after_accept"  # placed, no answer: known by its client id only
        with pytest.raises(ccxt.NetworkError):
            ex.create_order("BTC/USDT", "limit", "buy", 0.2, 59_000, {"clientOrderId": "c1"})
        assert list(u.in_doubt) == ["c1"]
        eth = {"id": "555", "clientOrderId": "c1", "symbol": "ETH/USDT", "side": "buy",
               "amount": 0.1, "filled": 0.1, "price": 3000, "status": "closed"}  # fmt: skip
        u.apply_order(eth)
        assert ex.guard.position("BTC/USDT") == 0 and list(u.in_doubt) == ["c1"]
        assert ex.guard.working_qty("BTC/USDT") == (u.units("BTC/USDT").to_units("0.2"), 0)
        assert not ex.guard.halts()
        with pytest.raises(AdapterError, match=r"resolve: order 'c1': the record given is str"):
            ex.resolve("c1", "filled")  # type: ignore[arg-type]
        assert list(u.in_doubt) == ["c1"]
        (live,) = ex.fetch_open_orders("BTC/USDT")  # its own market's update binds it
        assert not u.in_doubt and live["clientOrderId"] == "c1"
        assert venue.bad_signatures == 0


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
async def test_an_unreadable_amend_answer_in_a_kill_still_cancels_what_the_sweep_left(
    spec: Spec,
) -> None:
    """A kill lands while an amend is on its way and its sweep cannot reach the venue; the
    amend's answer is unreadable. The async wrapper cancels what is left live in the symbol
    once a write's answer comes, but an unreadable answer raised first and skipped that:
    both orders stayed resting after the kill."""
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "async"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, AsyncGuardedExchange)
        sym = spec.symbol
        try:
            await ex.fetch_ticker(sym)
            a = await ex.create_order(sym, "limit", "buy", 0.1, 59_000)
            b = await ex.create_order(sym, "limit", "buy", 0.1, 58_000)
            reachable = ex.exchange.cancel_all_orders

            async def unreachable(*args: Any, **kwargs: Any) -> Any:
                raise ccxt.NetworkError("venue unreachable")

            async def amend_in_the_kill(*args: Any, **kwargs: Any) -> Any:
                ex.exchange.cancel_all_orders = unreachable
                ex.guard.halt(Scope.NODE, ex.guard.node, "fleet kill", "test")
                assert ex.kill_task is not None
                await ex.kill_task  # the sweep gave up on the symbol
                ex.exchange.cancel_all_orders = reachable
                return "amended"

            ex.exchange.edit_order = amend_in_the_kill
            with pytest.raises(VenueAnswerError, match="edit_order: the venue's answer is str"):
                await ex.edit_order(a["id"], sym, "limit", "buy", 0.2, 59_000)
            assert venue.orders[str(a["id"])].status == "canceled"
            assert venue.orders[str(b["id"])].status == "canceled"
            assert not ex.ledger.live() and ex.guard.working_qty(sym) == (0, 0)
        finally:
            await ex.close()
        assert venue.bad_signatures == 0


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_a_kill_from_outside_a_running_loop_still_cancels(spec: Spec) -> None:
    """A halt reaching the async wrapper where no loop runs (a program driving its loop with
    `run_until_complete` halts between two calls; a thread of its own) logged KILL_CANCEL
    and never cancelled: the orders stayed resting after the kill. The cancels run on the
    exchange's own loop: at once if it is idle, scheduled on it if it runs elsewhere."""
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "async"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, AsyncGuardedExchange)
        sym = spec.symbol
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(ex.fetch_ticker(sym))
            a = loop.run_until_complete(ex.create_order(sym, "limit", "buy", 0.1, 59_000))
            ex.guard.halt(Scope.NODE, ex.guard.node, "operator: stop", "test")  # loop idle
            assert venue.orders[str(a["id"])].status == "canceled"
            assert ex.guard.working_qty(sym) == (0, 0) and not ex.ledger.live()
            ex.guard.resume(Scope.NODE, ex.guard.node, "operator: go", "test")

            # the exchange's loop runs in another thread; the halt comes from this one
            b = loop.run_until_complete(ex.create_order(sym, "limit", "buy", 0.1, 59_000))
            runner = threading.Thread(target=loop.run_forever, name="exchange-loop")
            runner.start()
            try:
                ex.guard.halt(Scope.NODE, ex.guard.node, "operator: stop", "test")

                async def killed() -> int:
                    assert ex.kill_task is not None  # scheduled before this coroutine
                    return await ex.kill_task

                asyncio.run_coroutine_threadsafe(killed(), loop).result(30)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                runner.join(30)
            assert venue.orders[str(b["id"])].status == "canceled"
            assert ex.guard.working_qty(sym) == (0, 0) and not ex.ledger.live()
        finally:
            loop.run_until_complete(ex.close())
            loop.close()
        assert venue.bad_signatures == 0


async def test_a_long_chain_of_amends_keeps_being_checked(world: World) -> None:
    """Each amend's Guard id was the last one's plus `~n`: a market maker re-pricing one order
    (Binance: cancel-replace, Kraken: in place) had every amend from the twenty-second on
    refused as `invalid_order` (an id over 64 characters). Each is named from the order's
    own id, so the chain goes on being checked and booked."""
    ex, sym = world.ex, world.symbol
    await run(ex.create_order(sym, "limit", "buy", 0.1, 59_000, {"clientOrderId": "mm-q-0001"}))
    for i in range(40):
        (live,) = [o for o in world.venue.orders.values() if o.status == "open"]
        await run(ex.edit_order(live.id, sym, "limit", "buy", 0.1, 59_000 + i))
    assert ex.guard.working_qty(sym) == (world.u("0.1"), 0)
    assert not ex.guard.blocked
    (live,) = [o for o in world.venue.orders.values() if o.status == "open"]
    assert live.price == Decimal("59039")


async def test_an_edit_that_only_lowers_the_amount_passes_while_halted(world: World) -> None:
    """Lowering a working order's amount only lowers risk: the stop direction is never
    gated: the Guard's replace check passes it in any state, as a cancel. The Guard's
    working quantity follows the venue down (an amend in place, or Binance's new order);
    an edit that raises the amount or moves the price is still refused, nothing sent."""
    ex, sym, venue = world.ex, world.symbol, world.venue
    order = await run(ex.create_order(sym, "limit", "buy", 0.3, 59_000))
    ex.guard.halt(Scope.STRATEGY, "mm", "operator: stop", "test")
    await run(ex.edit_order(order["id"], sym, "limit", "buy", 0.1, 59_000))
    assert ex.guard.working_qty(sym) == (world.u("0.1"), 0)
    live = [o for o in venue.orders.values() if o.status == "open"]
    assert [o.amount for o in live] == [Decimal("0.1")]
    before = len(venue.requests)
    for amount, price in ((0.2, 59_000), (0.05, 58_000)):
        with pytest.raises(GuardRefused) as refused:
            await run(ex.edit_order(live[0].id, sym, "limit", "buy", amount, price))
        assert refused.value.decision.reason is R.HALTED
    for amount in (0, -0.05):  # not a reduction: not an amount at all
        with pytest.raises(GuardRefused, match="amount: must be > 0") as bad:
            await run(ex.edit_order(live[0].id, sym, "limit", "buy", amount, 59_000))
        assert bad.value.decision.reason is R.INVALID_ORDER
    assert len(venue.requests) == before
    venue.fill(live[0].id, "0.1")
    await run(ex.fetch_order(live[0].id, sym))
    await run(ex.fetch_my_trades(sym))
    assert ex.guard.position(sym) == world.u("0.1") and ex.guard.working_qty(sym) == (0, 0)
    assert ex.guard.trading_state(Scope.NODE, ex.guard.node) is TradingState.ACTIVE


async def test_an_edit_to_an_amount_not_above_zero_is_refused_not_sent(world: World) -> None:
    """An edit's amount is the order's new amount: zero or below is no amount, refused by
    name before anything is sent, even on a partly filled order (where the Guard's total,
    what filled plus the amount, would still look like a valid smaller order)."""
    ex, sym, venue = world.ex, world.symbol, world.venue
    order = await run(ex.create_order(sym, "limit", "buy", 0.3, 59_000))
    venue.fill(order["id"], "0.2")
    await run(ex.fetch_order(order["id"], sym))
    assert ex.guard.position(sym) == world.u("0.2")
    before = len(venue.requests)
    for amount in (-0.1, 0):
        with pytest.raises(GuardRefused, match="amount: must be > 0") as bad:
            await run(ex.edit_order(order["id"], sym, "limit", "buy", amount, 59_000))
        assert bad.value.decision.reason is R.INVALID_ORDER
    assert len(venue.requests) == before
    assert ex.guard.working_qty(sym) == (world.u("0.1"), 0)


async def test_an_amount_or_price_too_far_from_one_is_refused_by_name_never_a_traceback(
    world: World,
) -> None:
    """'1e999999999' is a finite Decimal, but dividing it by the market's step overflows
    Python's decimal context: create_order, create_orders and edit_order raised
    `decimal.Overflow` / `DivisionImpossible` (no refusal, no record). Each is refused
    `invalid_order` naming the field, nothing sent, nothing reserved."""
    ex, sym, venue = world.ex, world.symbol, world.venue
    order = await run(ex.create_order(sym, "limit", "buy", 0.1, 59_000))
    before = len(venue.requests)
    huge, tiny = "1e999999999", "1e-999999999"
    batch = [{"symbol": sym, "type": "limit", "side": "buy", "amount": 0.1, "price": huge}]
    calls: list[tuple[Any, str]] = [
        (lambda: ex.create_order(sym, "limit", "buy", huge, 59_000), "amount"),
        (lambda: ex.create_order(sym, "limit", "buy", 0.1, huge), "price"),
        (lambda: ex.create_order(sym, "limit", "buy", tiny, 59_000), "amount"),
        (lambda: ex.create_orders(batch), "price"),
        (lambda: ex.edit_order(order["id"], sym, "limit", "buy", huge, 59_000), "amount"),
        (lambda: ex.edit_order(order["id"], sym, "limit", "buy", 0.1, huge), "price"),
    ]
    for call, field in calls:
        with pytest.raises(GuardRefused, match=f"{field}: .* is out of range") as refused:
            await run(call())
        assert refused.value.decision.reason is R.INVALID_ORDER
    assert len(venue.requests) == before
    assert ex.guard.working_qty(sym) == (world.u("0.1"), 0)


async def test_a_spot_market_buy_is_refused_where_the_option_is_kept_per_call(
    world: World,
) -> None:
    """Bybit (classic accounts) and Bitget keep `createMarketBuyOrderRequiresPrice` under
    `options["createOrder"]`, not at the top: with it off, ccxt sends a spot market buy's
    amount as the quote currency to spend (1,000,000 "SHIB" spends 1,000,000 USDT). The
    wrapper only looked at the top level and let such a buy through, counted in the base
    currency; it is refused like OKX's, nothing sent."""
    for venue_cls in (ccxt.bybit, ccxt.bitget):
        per_call = venue_cls().options["createOrder"]
        assert "createMarketBuyOrderRequiresPrice" in per_call
    ex, sym, venue = world.ex, world.symbol, world.venue
    ex.exchange.options["createOrder"] = {"createMarketBuyOrderRequiresPrice": False}
    before = len(venue.requests)
    with pytest.raises(GuardRefused, match="sizes spot market buys in the quote currency"):
        await run(ex.create_order(sym, "market", "buy", 0.1))
    with pytest.raises(GuardRefused, match="sizes spot market buys in the quote currency"):
        await run(ex.create_orders([{"symbol": sym, "type": "market", "side": "buy",
                                     "amount": 0.1}]))  # fmt: skip
    assert len(venue.requests) == before
    assert ex.guard.working_qty(sym) == (0, 0)
    await run(ex.create_order(sym, "market", "sell", 0.05))  # a sell is sized in the base
    assert len(venue.requests) > before


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_fills_read_through_the_other_order_and_trade_reads_feed_the_guard(
    mode: str,
) -> None:
    """`fetch_order_trades` (and `fetch_open_order`, `fetch_canceled(_and_closed)_orders`,
    `watch_*_for_symbols`) passed straight through: a strategy reading its fills there
    left the Guard's position at 0, so `max_position_qty` never bit. They book what they
    read, under their camelCase names too."""
    spec = SPECS[0]
    u = Units(spec.step)
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        sym = spec.symbol
        try:
            await run(ex.fetch_ticker(sym))
            order = await run(ex.create_order(sym, "limit", "buy", 0.5, 59_000))  # rests
            venue.fill(order["id"], "0.5")
            trades = await run(ex.fetchOrderTrades(order["id"], sym))
            assert [t["amount"] for t in trades] == [0.5]
            assert ex.guard.position(sym) == u.to_units("0.5")
            assert ex.guard.working_qty(sym) == (0, 0)
            reads = [
                "fetch_open_order",
                "fetch_canceled_orders",
                "fetch_canceled_and_closed_orders",
            ]
            if isinstance(ex, AsyncGuardedExchange):
                reads += ["watch_orders_for_symbols", "watch_my_trades_for_symbols"]
            for name in reads:  # the wrapper's own, which books (the paper venue has no route)
                assert getattr(type(ex), name).__qualname__.startswith(type(ex).__name__)
        finally:
            await run(ex.close())


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
async def test_a_spot_account_starts_from_the_base_balance_it_holds(spec: Spec, mode: str) -> None:
    """A restarted process whose account holds 1.8 BTC took a 0.5 buy under a 2 BTC
    position limit: the Guard started the market at 0. A spot venue reports no
    position; the base currency's balance, read before the first order (and the ticker
    to value it at), is the Guard's starting position."""
    with spec.fake("60000") as venue:
        base = next(iter(spec.fake.BASES.values()))
        venue.holdings[base] = Decimal("1.8")
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        u = Units(spec.step)
        try:
            await run(ex.fetch_ticker(spec.symbol))
            with pytest.raises(GuardRefused) as refused:
                await run(ex.create_order(spec.symbol, "limit", "buy", "0.5", 60_000))
            assert refused.value.decision.reason is R.MAX_POSITION
            assert ex.guard.position(spec.symbol) == u.to_units("1.8")
            assert not [r for r in venue.requests if r[1] == spec.fake.NEW_ORDER]
            await run(ex.create_order(spec.symbol, "limit", "buy", "0.2", 60_000))
            await run(ex.fetch_my_trades(spec.symbol))
            assert ex.guard.position(spec.symbol) == u.to_units("2.0")
        finally:
            await run(ex.close())
        assert venue.bad_signatures == 0


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_unreadable_starting_balance_refuses_the_order_and_is_read_again(
    mode: str,
) -> None:
    """A balance the venue does not answer readably leaves the market's start unknown:
    the order is refused (`venue_unavailable`, recorded), nothing sent, never started
    at 0; the next order reads the balance again, and the ticker to value it at."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        venue.holdings["BTC"] = Decimal("1.8")
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        try:
            real = ex.exchange.fetch_balance
            answers(ex, "fetch_balance", "not a balance")
            with pytest.raises(GuardRefused) as refused:
                await run(ex.create_order(spec.symbol, "limit", "buy", "0.5", 60_000))
            d = refused.value.decision
            assert d.reason is R.VENUE_UNAVAILABLE and "starting position of BTC/USDT" in d.detail
            assert not [r for r in venue.requests if r[1] == spec.fake.NEW_ORDER]
            ex.exchange.fetch_balance = real
            with pytest.raises(GuardRefused) as refused:
                await run(ex.create_order(spec.symbol, "limit", "buy", "0.5", 60_000))
            assert refused.value.decision.reason is R.MAX_POSITION
        finally:
            await run(ex.close())


def _with_swap(ex: Any) -> str:
    """Add a linear swap market (BTC/USDT:USDT, contracts of the spot market's step) to a
    ccxt exchange whose markets are loaded; its symbol."""
    spot = ex.market("BTC/USDT")
    swap = dict(spot, symbol="BTC/USDT:USDT", settle="USDT", settleId="USDT", type="swap",
                spot=False, swap=True, contract=True, linear=True, inverse=False,
                contractSize=1.0)  # fmt: skip
    ex.set_markets([*ex.markets.values(), swap])
    return "BTC/USDT:USDT"


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_contract_market_starts_from_the_positions_the_venue_reports(mode: str) -> None:
    """A derivatives account short 1.6 contracts took a 0.5 sell under a 2-contract limit:
    the Guard started the market at 0. Its `fetch_positions` (hedge mode: a long and a
    short) is netted before the first order; an answer it cannot read refuses the order
    and is read again."""
    spec = SPECS[0]
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, mode), limits=limits(spec.step), strategy="mm")
        u = Units(spec.step)
        try:
            await run(ex.exchange.load_markets())
            symbol = _with_swap(ex.exchange)
            ex.on_price(symbol, 60_000)
            answers(ex, "fetch_open_orders", [])  # the paper venue serves no swap market
            answers(ex, "fetch_positions", [{"symbol": symbol, "contracts": "1", "side": "long"}])
            with pytest.raises(GuardRefused) as refused:
                await run(ex.create_order(symbol, "limit", "sell", "0.3", 60_000))
            d = refused.value.decision
            assert d.reason is R.VENUE_UNAVAILABLE and "entryPrice" in d.detail
            assert ex.guard.position(symbol) == 0
            answers(ex, "fetch_positions", [
                {"symbol": symbol, "contracts": 0.5, "side": "long", "entryPrice": 59_000},
                {"symbol": symbol, "contracts": 2.1, "side": "short", "entryPrice": 61_000},
                {"symbol": "ETH/USDT:USDT", "contracts": 9, "side": "long", "entryPrice": 3},
            ])  # fmt: skip
            with pytest.raises(GuardRefused) as refused:
                await run(ex.create_order(symbol, "limit", "sell", "0.5", 60_000))
            assert refused.value.decision.reason is R.MAX_POSITION
            assert ex.guard.position(symbol) == -u.to_units("1.6")
            assert not [r for r in venue.requests if r[1] == spec.fake.NEW_ORDER]
        finally:
            await run(ex.close())
