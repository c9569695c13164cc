"""knightwatch around a ccxt exchange: the Guard before every order leaves the process.

`guard(exchange, limits=...)` wraps any ccxt exchange, sync (`ccxt.binance`)
or async (`ccxt.async_support.binance`), and returns an object with the same
calls (`knightwatch[ccxt]`, ccxt 4.5.90):

* `create_order` (and `create_orders`, `create_limit_*`/`create_market_*`)
  passes `Guard.check` first. The amount and price are first put to the
  market's precision by ccxt itself (`amount_to_precision`), and the Guard
  checks exactly what will be sent, in whole steps of the market's amount
  precision (`knightwatch.adapters.units`: 0.1 BTC with a step of 0.00001 is
  10,000 units). A refusal raises `GuardRefused`, a `ccxt.InvalidOrder`, with
  the reason code; nothing is sent.
* A market named by its venue id (`BTCUSDT`) is the market of its unified symbol
  (`BTC/USDT`) to the Guard, which checks and counts it under that one name.
* `edit_order` passes `Guard.check_replace` first (the new amount reserved as
  fully working on top of what is filled) and is committed or rolled back by
  the venue's answer. An edit that only lowers the amount (price unchanged) is
  the stop direction: the Guard passes it in any trading state, as a cancel.
* `cancel_order`, `cancel_orders`, `cancel_all_orders` always pass. An order a
  cancel named that its answer did not end (Kraken answers with a count, not the
  order) or that the venue no longer holds (`OrderNotFound`: it filled first) is
  read back (`fetch_order`) as the call ends, and so is one an update ended
  without saying how much of it filled (Kraken's WebSocket `canceled` names no
  market, quantity or fill count): until an answer says how much filled, the
  Guard counts the order working. Kraken's status updates (a `canceled`) name no
  market, and ccxt hands those only to a `watch_orders()` naming none.
* Order updates from `create_order`, `fetch_order(s)`, `fetch_open_order(s)`,
  `fetch_closed_orders`, `fetch_canceled(_and_closed)_orders`, `cancel_*` and
  `watch_orders(_for_symbols)`, and executions from `fetch_my_trades`,
  `fetch_order_trades` and `watch_my_trades(_for_symbols)`, feed the Guard. Each order's fills are
  applied once, whichever source reports them first (cumulative `filled` and
  trade sums never double count). A trade with no id (a venue that numbers none)
  is known by its order, timestamp, side, amount and price; one with neither an id
  nor a timestamp cannot be told from a repeat and halts the node (`fill_mismatch`).
  An order neither placed through this wrapper nor found open at the start,
  reported open in a started market, is adopted (see Orders opened later); one
  reported ended is ignored.
  Tickers (`fetch_ticker(s)`, `watch_ticker(s)`) give the Guard its reference
  prices; `on_price` takes any other feed.
* A venue reject (a `ccxt.ExchangeError` answer) gives the order's working
  quantity back. A network error leaves it working and the order *in doubt*:
  it may be live at the venue; so does an `ExchangeError` whose text says the
  outcome is unknown (ccxt maps Binance options' and HashKey's "execution status
  unknown" and Bybit's "Server Timeout" to a plain `ExchangeError`), one ccxt raised
  from a transport failure it has no class for (an HTTP status outside its table,
  a CDN's 524; an answer broken off halfway on the async exchange), and an amend
  answered so keeps its larger reservation; a later update naming its id or client order id
  binds it again, `resolve` settles it by hand.
* Every venue answer read is type-checked first: an answer that is not what
  the call returns (a string for an order, a dict for a list of orders, None)
  or an order or trade whose id, symbol or status is not a string (or an id an
  int) is booked nothing and raises `VenueAnswerError` (a `ccxt.BadResponse`)
  naming the call and the field; an order it answered for is held in doubt
  (an amend keeps its larger reservation). Cancels never raise for their answer
  (logged). A ticker price that is not a positive finite number is skipped.
* A node-wide HALTED (a fleet kill, a node halt, the loss stop) cancels all
  open orders through the exchange (`cancel_all_orders` per symbol traded or
  holding an adopted order, or one by one: an order whose cancel fails never spares
  the orders after it) and reads back each order's final state. An order adopted while
  the node is HALTED (a market's first read still on its way when the kill swept, or
  another program's order read after it) has its market swept again and read back as
  the call that read it ends (the sweep ran without it). A market whose sweep failed
  (three tries at once) or that still holds an order live after the read-back (a cancel
  the venue refused: a rate limit, a transient error) is swept and read back again in the
  background (a thread on a sync exchange, a task on an async one), after 0.5 s, then
  each wait twice the last, at most 8 s, until no order is live there, the node is no
  longer HALTED, or `close()`: logged `KILL_CANCEL_RETRY` each time, `KILL_CANCEL_DONE`
  at the end. Call `close()` before dropping the wrapper. Every read-back (the kill's, a
  cancel's, a stream gap's) uses `fetch_order`; on a venue without it (`has['fetchOrder']`
  false) the order as the venue lists it: open (`fetch_open_orders`), else in the first of
  `fetch_closed_orders`, `fetch_canceled_and_closed_orders`, `fetch_orders`,
  `fetch_canceled_orders` it offers that holds it. An order the kill finds in none is not
  open at the venue: the kill leaves it (logged once, `ORDER_END_UNKNOWN`) and it stays
  counted working, its fills unknown, until an update or `resolve` with the venue's record
  of its end settles it.
* Only what the Guard checked is sent. `params` may carry only
  `clientOrderId`, `timeInForce`, `postOnly`, `reduceOnly` and `marginMode`
  (ccxt merges `params` into the venue's request, where `quantity` or
  `volume` would override the checked amount); the order type is `limit` or
  `market`; a market order carries no price (ccxt would send it sized in the
  quote currency, amount x price), and a spot market buy on a venue that sizes
  market buys in the quote currency (`createMarketBuyOrderRequiresPrice`, in
  `options` or `options["createOrder"]`) is refused: use a limit order there.
* Any other call that can create or change an order (raw implicit API writes
  such as `private_post_order`, or a venue's order entry sent as a GET such as
  Deribit's `private_get_buy`, `create_*` variants not listed,
  `close_position(s)`, and the raw `request`/`fetch`/`fetch2`) is refused with
  `AdapterError` instead of slipping past the Guard; everything else passes.

Starting positions: before the first order in a market is checked, what the
account already holds there becomes the Guard's position in it (once per market;
`start(symbols)` reads it ahead of the first order). A contract market (swap,
future, option: `market["contract"]`) is read with `fetch_positions([symbol])`:
each position's `contracts` in steps of the market's amount precision, signed by
`side`, at its `entryPrice`, netted. A spot market has no position at the venue:
the Guard counts the account's total balance of the market's base currency (free
and in orders) as a long position, valued at the Guard's last reference price
(a ticker read first: `fetch_ticker`), so a position limit covers what the
account holds, not only what this process bought.

The same read adopts the orders already open in the market (placed by hand, by
another program, or by a run that crashed): `fetch_open_orders(symbol)`, read
before the position (a fill between the two reads is then counted twice, never
missed). Each open order becomes working in the Guard (`Guard.adopt`: its amount
and `remaining` in steps of the market's amount precision, its side and price),
so it counts against the position worst case and the exposure limits, and it is
followed like an order placed here: its updates, fills (what it had filled
before is in the starting position, never booked again) and cancels apply, and
a node-wide HALTED cancels it. An open order this wrapper placed is not adopted
twice.

A start that cannot be read (the venue cannot report the position or list open
orders, `has['fetchOpenOrders']` false, a network error, an answer that is not a
position, balance or list of orders, an open order whose id, amount, remaining
or side cannot be read, no reference price for a balance held) refuses the order
(`venue_unavailable`, recorded), books nothing of it and is read again at the
next order: a market never starts at 0, nor with unknown working orders,
unknowingly. While the Guard is not armed an order is refused without the read
(nothing reaches the venue); the first order after arming reads it.

Orders opened later: another program sharing the account can open orders in a market
after its start. An order update the wrapper reads (`fetch_open_orders`, `fetch_order(s)`,
`watch_orders`, ...; not a cancel's answer) that reports such an order open adopts it at
once: working with its leaves, its fills so far booked into the position (they came
after the start read), followed and cancelled by a kill like any adopted order. A trade
of an order not followed here, or an open one that cannot be read, marks the market
`unsynced`: the next order there first lists its open orders again and adopts the new
ones, and is refused (`venue_unavailable`) if that list cannot be read. When no order is
live in that market, the next order reads its whole start again instead (position and
open orders), so what another program filled in full between two reads is counted too;
with orders live there (their fills could be counted twice) only the open orders are
read, and such a fill reaches the position at the next full read.

A stream that breaks: ccxt.pro fails a pending `watch_orders`/`watch_my_trades` (and their
`_for_symbols` forms) when its connection closes, and the next call reconnects; what the
venue pushed in between is never sent again. Any such call that raises marks every started
market `unsynced` (logged `STREAM_GAP`). Each such market with orders live here is then read
again: its open orders (new ones adopted) and the end (`fetch_order`) of each order followed
here that the venue no longer lists open, so a fill or cancel during the gap reaches the
position, the loss stop and the working quantity at the reconnect. It is read 0.5 s after the
break (time for the stream's next call to reconnect), whether or not the stream answers again
(a quiet market may push nothing, and send no order, for hours), a market whose read failed
again after each wait twice the last, at most 8 s, six reads in all (logged
`STREAM_GAP_READ_FAILED` each, `STREAM_GAP_UNREAD` after the last); and again when the first
stream call answers after the break (what happened between the first read and the
reconnection). The same read runs before the market's next order, if still needed; a
read-back that fails then refuses the order (`venue_unavailable`) and the market is read
again at the next. `close()` stops the read.

With `control_plane`, `join()` makes the process a fleet node through
`NodeRuntime`: lease, kill state, metrics, flight recorder (awaited on an
async exchange; on a sync one the runtime runs on an asyncio loop in a thread
of its own, the Guard is a `LockedWatchedGuard`, and a kill cancels from a
third thread, see `GuardedExchange`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import re
import threading
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import ccxt
from ccxt.base.types import Entry

from knightwatch import (
    Clock,
    Decision,
    Fill,
    InvalidOrder,
    Limits,
    Order,
    RejectReason,
    Side,
    SystemClock,
    TradingState,
)
from knightwatch.adapters.fleet import (
    AdapterError,
    ControlPlaneSpec,
    FleetMember,
    LoopThread,
    Unmapped,
    WatchedGuard,
    build_guard,
    check_settings,
    identity_of,
    limits_of,
    plane_of,
    with_lease,
)
from knightwatch.adapters.units import UnitError, Units, decimal_of
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.order import order_problem

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

REASON_PREFIX = "knightwatch:"
TERMINAL = frozenset({"canceled", "cancelled", "expired", "rejected", "closed"})
_WRITE = re.compile(
    r"^(create|edit)_|^(create|edit)[A-Z]|(Post|Put|Delete|Patch)[A-Z]|_(post|put|delete|patch)_"
    r"|^close_(all_)?positions?$|^close(All)?Positions?$|^(request|fetch|fetch2)$"
)
"""Names of calls that can create or change orders, refused unless wrapped here (the raw
`request`/`fetch`/`fetch2` send anything, an order included)."""
_GET_WRITES = frozenset(
    {"buy", "sell", "edit", "close", "amend", "replace", "place", "submit", "create", "modify"}
)
"""Words of an implicit API endpoint's last path segment that mark an order write even when
the venue takes it as a GET (Deribit's and Coinbase International's `private_get_buy`,
`private_get_sell`, `private_get_edit`, `private_get_close_position`): a name with no
`post`/`put`/`delete`/`patch` in it that places, amends or closes all the same."""
_WORD = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_PARAMS: dict[str, Callable[[Any], bool]] = {
    "clientOrderId": lambda v: isinstance(v, str | int) and not isinstance(v, bool),
    "timeInForce": lambda v: v in ("GTC", "IOC", "FOK", "PO"),
    "postOnly": lambda v: isinstance(v, bool),
    "reduceOnly": lambda v: isinstance(v, bool),
    "marginMode": lambda v: v in ("cross", "isolated"),
}
"""The `params` an order may carry, each with its rule: none of them changes what the Guard
checks (ccxt merges `params` into the venue's request, so any other key, `quantity`,
`volume`, `price`, `side`, `cost`, `stopPrice`, could)."""
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WRAPPED = frozenset(
    {
        "create_order",
        "create_orders",
        "create_limit_order",
        "create_market_order",
        "create_limit_buy_order",
        "create_limit_sell_order",
        "create_market_buy_order",
        "create_market_sell_order",
        "edit_order",
        "cancel_order",
        "cancel_orders",
        "cancel_all_orders",
        "fetch_order",
        "fetch_orders",
        "fetch_open_orders",
        "fetch_closed_orders",
        "fetch_my_trades",
        "fetch_order_trades",
        "fetch_open_order",
        "fetch_canceled_orders",
        "fetch_canceled_and_closed_orders",
        "fetch_ticker",
        "fetch_tickers",
        "watch_orders",
        "watch_my_trades",
        "watch_orders_for_symbols",
        "watch_my_trades_for_symbols",
        "watch_ticker",
        "watch_tickers",
    }
)
"""The calls both wrappers implement (the sync one has no watch_*: ccxt's sync exchanges
have none either)."""
_QUOTE_SIZED = ("cost", "quoteOrderQty", "quoteOrderQuantity")
_KILL_ATTEMPTS = 3
_KILL_RETRY_FIRST_S = 0.5
_KILL_RETRY_MAX_S = 8.0
"""The kill's retries of a market whose sweep failed or left an order live (a rate limit, a
transient venue error): the first after `_KILL_RETRY_FIRST_S`, each wait twice the one
before, never more than `_KILL_RETRY_MAX_S`, for as long as the node stays HALTED."""
_GAP_READ_FIRST_S = 0.5
_GAP_READ_MAX_S = 8.0
_GAP_READS = 6
"""A stream gap's own read-back (`AsyncGuardedExchange._read_gap`): the first
`_GAP_READ_FIRST_S` after the stream broke (time for its next call to reconnect), each
retry of the markets not read after twice the wait before, never more than
`_GAP_READ_MAX_S`, `_GAP_READS` reads in all."""
_SESSION_FORGET_NS = 86_400 * 10**9
"""How long an ended order is remembered when the Guard's duplicate scope is the session."""
FORGET_PER_CALL = 4
"""Ended orders `forget` looks at per order placed or ended: a scope's worth that fell due
at once (a burst a minute ago) is let go of over the next calls, never in one order's.
More than one per order ended, so forgetting keeps up."""
_ORDER, _EXCHANGE_ID, _CLIENT_ID, _TRADE = range(4)
"""The indexes an order is filed under (`_Tracked.filed`)."""


class GuardRefused(ccxt.InvalidOrder):  # type: ignore[misc]
    """The Guard refused an order before anything was sent; `decision` says why."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__(f"{REASON_PREFIX}{decision.reason.value} {decision.detail}")


class VenueAnswerError(AdapterError, ccxt.BadResponse):  # type: ignore[misc]
    """A venue answer the wrapper cannot read: the wrong type for its call, or an order or
    trade whose id, symbol or status is of the wrong type. Nothing of it is booked and an
    order it answered for is held in doubt: the venue may have taken it. A
    `ccxt.BadResponse` (never an `ExchangeError`, which would read as a reject), so a
    strategy's `except ccxt.BaseError` handles it like any unreadable answer."""


_FIELDS = (("id", (str, int)), ("clientOrderId", (str, int)), ("symbol", (str,)),
           ("status", (str,)))  # fmt: skip
_TRADE_FIELDS = (("id", (str, int)), ("order", (str, int)), ("symbol", (str,)))


_UNKNOWN_OUTCOME = re.compile(
    r"status unknown|unknown (?:execution |order )?status|time ?out|timed out", re.I
)
"""Words of a venue error that says the request's outcome is unknown, though ccxt raised an
`ExchangeError` for it (Binance options' -1006/-1007 "Send status unknown; execution status
unknown", HashKey's -1006, Bybit's 5004 "Server Timeout"): the order may be live."""


def _refused(exc: BaseException) -> bool:
    """Whether a venue error on an order write is the venue's refusal (nothing placed or
    changed): an `ExchangeError`, unless its text says the outcome is unknown or ccxt raised
    it `from` a transport failure it has no class for (requests' `HTTPError` for an HTTP
    status outside its table, a CDN's 524 "a timeout occurred"; aiohttp's payload error, an
    answer broken off halfway; an SSL error): those come from the wire, not the venue, and
    the request may have been taken."""
    if not isinstance(exc, ccxt.ExchangeError) or _UNKNOWN_OUTCOME.search(str(exc)):
        return False
    cause = exc.__cause__
    return cause is None or isinstance(cause, ccxt.BaseError)


def _unreadable(
    answer: Any, what: str, fields: tuple[tuple[str, tuple[type, ...]], ...]
) -> str | None:
    """Why a venue answer that should be one `what` (a dict with `fields` of those types, or
    None) cannot be read, else None."""
    if not isinstance(answer, dict):
        return f"{type(answer).__name__}, not {what} (a dict)"
    for key, types in fields:
        v = answer.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, types)):
            kinds = " or ".join(t.__name__ for t in types)
            return f"{what} whose {key!r} is {type(v).__name__} {v!r:.40}, not {kinds}"
    return None


def _ticker_price(ticker: dict[str, Any], key: str) -> float | None:
    """A ticker's `bid`/`ask`/`last`: None when absent or 0 (an empty side), else a positive
    finite number; anything else (a string, NaN, a negative, a bool) raises UnitError."""
    v = ticker.get(key)
    if v is None or (v == 0 and type(v) in (int, float)):
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < float("inf"):
        raise UnitError(f"{key}: must be a positive finite number, got {v!r:.40}")
    return float(v)


class _Tracked:
    """One order placed through the wrapper, as the Guard counts it."""

    __slots__ = (
        "amended",
        "applied",
        "applied_cost",
        "client_id",
        "done",
        "exchange_id",
        "filed",
        "gid",
        "ordered",
        "pending",
        "price",
        "root",
        "side",
        "symbol",
        "trades",
        "units",
    )

    def __init__(
        self,
        gid: str,
        symbol: str,
        side: Side,
        ordered: int,
        units: Units,
        client_id: str | None,
        price: Decimal | None = None,
        root: str | None = None,
    ) -> None:
        self.gid = gid
        self.root = root if root is not None else gid
        """The Guard id it was placed under: its amends are named from it, never from the
        last amend's id, so a chain of amends keeps the id within its length."""
        self.price = price
        self.pending: str | None = None
        """The Guard id of an amend sent and not answered yet."""
        self.amended = False
        self.symbol = symbol
        self.side = side
        self.ordered = ordered
        self.units = units
        self.client_id = client_id
        self.exchange_id: str | None = None
        self.applied = 0
        """Units of this order already booked as fills in the Guard."""
        self.applied_cost = Decimal(0)
        self.trades = 0
        """Units reported by trades seen so far (fills may come from trades or the order)."""
        self.done = False
        self.filed: list[tuple[int, str]] = []
        """Every (index, key) the ledger holds this order under, so forgetting it is exact."""


class Ledger:
    """What both wrappers share: the Guard, the orders it placed, and how updates map.

    An ended order (filled, cancelled, rejected, expired, or replaced by a successor)
    is remembered for the Guard's duplicate scope (`duplicate_id_window_s`; a day when
    the scope is the session), so a late update or trade still finds it, and then
    forgotten with its ids and trade ids: a process that runs for weeks holds one
    scope of ended orders, not every order it ever sent. A kill's read-back walks only
    the orders still live. An update naming a forgotten order is ignored, as one for
    an order not placed here.
    """

    def __init__(self, exchange: Any, guard: WatchedGuard, strategy: str) -> None:
        self.exchange = exchange
        self.guard = guard
        self.strategy = strategy
        self.orders: dict[str, _Tracked] = {}
        self._by_exchange_id: dict[str, _Tracked] = {}
        """By `_xkey(symbol, venue order id)`: venues number orders per market (Binance), so
        order 7 of BTC/USDT and order 7 of ETH/USDT are two orders."""
        self._by_client_id: dict[str, _Tracked] = {}
        self.in_doubt: dict[str, _Tracked] = {}
        """Orders whose placement got no answer: perhaps live at the venue, still working."""
        self.symbols: set[str] = set()
        self._seen_trades: set[str] = set()
        self._live: dict[_Tracked, None] = {}
        """The orders not ended yet, in the order they were placed."""
        self._ended: deque[tuple[int, _Tracked]] = deque()
        """(when it ended, order), oldest first: what `_forget` lets go of."""
        self._markets: dict[str, tuple[Units, Decimal | None]] = {}
        self._symbols: dict[str, str] = {}
        self._edits = 0
        self.started: dict[str, None] = {}
        """The markets whose starting position the Guard holds (`start_from`)."""
        self._prices: dict[str, float] = {}
        """The last per-unit reference price given to the Guard, by market (a balance's value)."""
        self.unsynced: dict[str, None] = {}
        """Started markets where an order not placed here was reported (a trade of one, or an
        open one that could not be read): their open orders are read again, and any new one
        adopted, before the next order there (`resync`)."""
        self.adopted_in_kill: list[_Tracked] = []
        """Orders adopted while the node is HALTED: the kill's sweep ran without them (their
        market's first read was still on its way, or another program opened them after
        the sweep), so the wrapper sweeps their markets again once the call that adopted
        them is done (`kill_adopted`)."""
        self.unsettled: dict[_Tracked, None] = {}
        """Live orders whose end the wrapper may not have been told how much of them filled:
        an update with an end status and no fill count (Kraken's WebSocket `canceled`), or
        one a cancel named (Kraken answers a cancel with a count, not the order). Read back
        (`fetch_order`) as the call ends (`to_settle`); an order leaves it when it ends."""
        self.end_unknown: dict[_Tracked, None] = {}
        """Live orders a read-back found no longer open at the venue, whose end it could not
        read (`read_back`): nothing is left to cancel, so a kill's retries leave them
        (`live_in`), and they stay counted working until an update says how much filled."""

    # --- starting positions -----------------------------------------------------
    def start_needed(self, symbol: Any) -> str | None:
        """The unified symbol of a market whose starting position is still to be read, else
        None (read already, or no market: the order's own check refuses that)."""
        try:
            unified = self.symbol_of(symbol)
        except Exception:
            return None
        return None if unified in self.started else unified

    def start_kind(self, symbol: str) -> str:
        """'positions' for a contract market (read with `fetch_positions`), else 'balance'."""
        return "positions" if self.exchange.market(symbol).get("contract") else "balance"

    def open_orders_readable(self) -> None:
        """Raises unless the venue can list a market's open orders (`fetch_open_orders`):
        without that list a market would start with unknown working orders."""
        has = getattr(self.exchange, "has", None) or {}
        if not has.get("fetchOpenOrders"):
            raise UnitError(
                f"fetch_open_orders: {self.exchange.id} cannot list open orders "
                "(has['fetchOpenOrders'] is false); its working orders cannot be counted"
            )

    def start_from(self, symbol: str, answer: Any, open_orders: Any) -> None:
        """Restore `symbol`'s starting position from the venue's answer to `start_kind`'s read
        (a list of positions, or the balance) and adopt the orders open there
        (`fetch_open_orders`); raises naming what it cannot read, having changed nothing:
        every answer is read before anything is booked."""
        if symbol in self.started:
            return  # a read that ran alongside (two async orders in one market) started it
        units = self.units(symbol)
        adopting, known = self._open_orders(symbol, units, open_orders)
        if self.start_kind(symbol) == "positions":
            qty, avg = self._net_position(symbol, units, answer)
        else:
            qty, avg = self._balance_position(symbol, units, answer)
        self.guard.restore_position(symbol, qty, avg)
        for order, remaining, tracked, venue_order in adopting:
            self._adopt(order, remaining, tracked, venue_order)
        self.started[symbol] = None
        if known:  # orders placed here already (an in-doubt one is bound by its client id)
            self.apply_orders(known, "fetch_open_orders")

    def _open_orders(
        self, symbol: str, units: Units, answer: Any
    ) -> tuple[list[tuple[Order, int, _Tracked, dict[str, Any]]], list[dict[str, Any]]]:
        """The orders open in `symbol` at the venue, read whole before any is adopted:
        (each as the Guard adopts it, with its leaves and its ledger entry; the orders
        this wrapper placed already). Raises `UnitError` naming the first entry it cannot
        read: a market never starts with unknown working orders."""
        if not isinstance(answer, list):
            raise UnitError(
                f"fetch_open_orders: the answer is {type(answer).__name__}, not a list of orders"
            )
        adopting: list[tuple[Order, int, _Tracked, dict[str, Any]]] = []
        known: list[dict[str, Any]] = []
        for i, o in enumerate(answer):
            what = f"fetch_open_orders[{i}]"
            why = _unreadable(o, "an order", _FIELDS)
            if why is not None:
                raise UnitError(f"{what}: {why}")
            if not self._in_market(symbol, o.get("symbol")) or o.get("status") in TERMINAL:
                continue  # another market's order, or one no longer open
            if self._placed_here(symbol, o):
                known.append(o)
                continue
            found = self._open_order(symbol, units, o, what)
            if found is not None:
                adopting.append((*found, o))
        return adopting, known

    def _in_market(self, symbol: str, named: Any) -> bool:
        """Whether an open order naming market `named` (None: none named) is `symbol`'s."""
        if named is None:
            return True  # asked for `symbol`'s open orders: counted there
        try:
            return self.symbol_of(named) == symbol
        except (UnitError, ccxt.BaseError):  # a market not loaded: not this one
            return False

    def _placed_here(self, symbol: str, o: dict[str, Any]) -> bool:
        """Whether an open order is one this wrapper placed (by venue id or client id)."""
        xid = o.get("id")
        if xid is not None and _xkey(symbol, xid) in self._by_exchange_id:
            return True
        tracked = self._by_client_id_of(o)
        return tracked is not None and tracked.symbol == symbol

    def _by_client_id_of(self, o: dict[str, Any]) -> _Tracked | None:
        """The order an update names by its client order id, if that id can still be the
        update's: an order whose venue id is known is another order when the update names
        another venue id. Venues reuse client ids: Kraken reports a `userref` of 0 (ccxt's
        `clientOrderId` "0") for every order placed without one, so every order another
        program placed there was taken for the first one adopted and never counted."""
        cid = o.get("clientOrderId")
        tracked = self._by_client_id.get(str(cid)) if cid else None
        xid = o.get("id")
        if tracked is None or tracked.exchange_id is None or xid is None:
            return tracked
        return tracked if tracked.exchange_id == str(xid) else None

    def _open_order(
        self, symbol: str, units: Units, o: dict[str, Any], what: str, late: bool = False
    ) -> tuple[Order, int, _Tracked] | None:
        """One open order as the Guard adopts it (None: nothing of it is left working).
        `late`: opened after the market's start, so what it filled is not in the starting
        position (nothing of it applied yet; a filled one is returned too)."""
        if o.get("id") is None:
            raise UnitError(f"{what}.id: missing; an update could never name the order")
        side = o.get("side")
        if side not in ("buy", "sell"):
            raise UnitError(f"{what}.side: must be 'buy' or 'sell', got {side!r:.40}")
        qty = units.to_units(o.get("amount"), f"{what}.amount")
        if qty <= 0:
            raise UnitError(f"{what}.amount: must be > 0, got {o.get('amount')!r:.40}")
        remaining, filled = o.get("remaining"), o.get("filled")
        if remaining is not None:
            left = units.to_units(remaining, f"{what}.remaining")
        elif filled is not None:
            left = qty - units.to_units(filled, f"{what}.filled")
        else:
            raise UnitError(f"{what}.remaining: missing, and no filled to derive it from")
        if not 0 <= left <= qty:
            raise UnitError(
                f"{what}.remaining: must be from 0 to the amount ({qty} units), got {left} units"
            )
        price = o.get("price")
        price_d = None if price is None else decimal_of(price, f"{what}.price")
        if price_d is not None and price_d <= 0:
            price_d = None  # no limit price (a market or trigger order)
        cost = o.get("cost")
        done = units.to_amount(qty - left)
        if cost is not None:
            paid = decimal_of(cost, f"{what}.cost")
        else:  # in the venue's cost terms: a contract's is amount x contractSize x price
            paid = price_d * done * units.multiplier if price_d is not None else Decimal(0)
        if left == 0 and not late:
            return None  # filled in full: in the position read, nothing working
        gid = f"kw-open-{uuid.uuid4().hex[:20]}"
        order = Order(
            id=gid,
            strategy=self.strategy,
            symbol=symbol,
            side=Side(side),
            qty=qty,
            price=None if price_d is None else units.unit_price(price_d, f"{what}.price"),
        )
        cid = o.get("clientOrderId")
        tracked = _Tracked(gid, symbol, order.side, qty, units, str(cid) if cid else None, price_d)
        if not late:
            tracked.applied = qty - left  # in the starting position already: never booked again
            tracked.applied_cost = paid
        return order, left, tracked

    def adopt_late(self, o: dict[str, Any], what: str, strict: bool = False) -> None:
        """An order not placed here, reported open in a started market after its start
        (another program, a hand on the venue's screen): adopted as working, its fills so
        far booked (they are not in the starting position), and followed from then on. An
        order in a market not started is left to the start read; one no longer open, or
        naming no market, is ignored. One that cannot be read marks the market `unsynced`
        (`strict`: raises `UnitError` instead): an order never counts as nothing unknowingly."""
        try:
            symbol = self.symbol_of(o.get("symbol"))
        except (UnitError, ccxt.BaseError):
            return  # no market named, or one not loaded: no market traded here
        if symbol not in self.started or o.get("status") in TERMINAL or self._maybe_ours(symbol, o):
            return
        try:
            found = self._open_order(symbol, self.units(symbol), o, what, late=True)
        except (UnitError, InvalidOrder, ccxt.BaseError) as exc:
            if strict:
                raise
            self.unsynced[symbol] = None
            log.warning(
                "UNKNOWN_ORDER node=%s symbol=%s cannot be adopted, open orders read again "
                "before the next order: %s",
                self.guard.node,
                symbol,
                exc,
            )
            return
        if found is None:  # `late`: never None
            return
        order, left, tracked = found
        self._adopt(order, order.qty, tracked, o)  # what it filled is booked next, as fills
        done = order.qty - left
        if done:
            price = self._fill_price(tracked, o, done)
            if price is None:
                self._unbookable(tracked, UnitError(f"{what}: filled without any price"))
                return
            self._book(tracked, done, price)

    def _maybe_ours(self, symbol: str, o: dict[str, Any]) -> bool:
        """Whether an open order not followed here may be one placed here whose venue id is
        not known yet (its answer still on its way, or in doubt): the same market, side,
        amount and limit price as such an order, which counts it already. Adopting it too
        would count it twice for good once its answer binds the order placed here."""
        for t in self._live:
            if t.symbol != symbol or t.exchange_id is not None or t.side.value != o.get("side"):
                continue
            try:
                qty = t.units.to_units(o.get("amount"), "amount")
                price = o.get("price")
                px = None if price is None else decimal_of(price, "price")
            except (UnitError, InvalidOrder):
                return False
            if qty == t.ordered and (px or None) == t.price:
                return True
        return False

    def resync(self, symbol: str, answer: Any) -> list[_Tracked]:
        """Read `symbol`'s open orders again (`unsynced`): every one not followed yet is
        adopted (`adopt_late`); raises `UnitError` naming the first that cannot be read,
        having adopted nothing, and the market stays unsynced. Returns the orders followed
        here, known by venue id, that the list no longer holds: they ended unseen (a fill
        or cancel pushed while a stream was down), and are to be read back (`fetch_order`)
        before the market's next order is checked."""
        if not isinstance(answer, list):
            raise UnitError(
                f"fetch_open_orders: the answer is {type(answer).__name__}, not a list of orders"
            )
        units = self.units(symbol)
        new: list[tuple[dict[str, Any], str]] = []
        for i, o in enumerate(answer):
            what = f"fetch_open_orders[{i}]"
            why = _unreadable(o, "an order", _FIELDS)
            if why is not None:
                raise UnitError(f"{what}: {why}")
            if not self._in_market(symbol, o.get("symbol")) or o.get("status") in TERMINAL:
                continue
            if self._placed_here(symbol, o) or self._maybe_ours(symbol, o):
                continue
            self._open_order(symbol, units, o, what, late=True)  # raises if unreadable
            new.append((o | {"symbol": symbol}, what))
        for o, what in new:
            self.adopt_late(o, what, strict=True)
        self.unsynced.pop(symbol, None)
        self.apply_orders(answer, "fetch_open_orders")
        listed = {
            str(o["id"])
            for o in answer
            if o.get("id") is not None and self._in_market(symbol, o.get("symbol"))
        }
        return [
            t
            for t in self._live
            if t.symbol == symbol and t.exchange_id is not None and t.exchange_id not in listed
        ]

    def stream_gap(self, call: str, exc: BaseException) -> None:
        """A stream call raised (ccxt.pro fails a pending `watch_*` when its connection
        closes; the next call reconnects, and what the venue pushed meanwhile is not sent
        again): every started market is `unsynced`, so its next order first lists its open
        orders again and reads back each order followed here that ended unseen (`resync`)."""
        self.unsync_started()
        log.warning(
            "STREAM_GAP node=%s %s raised %r: open orders read again before the next order",
            self.guard.node,
            call,
            exc,
        )

    def unsync_started(self) -> None:
        """Mark every started market `unsynced`: what the venue pushed may have been lost."""
        for symbol in self.started:
            self.unsynced[symbol] = None

    def _adopt(
        self, order: Order, remaining: int, tracked: _Tracked, venue_order: dict[str, Any]
    ) -> None:
        """An order found open at the venue counts as working in the Guard and is followed
        like one placed here: its updates, fills and cancels apply, a kill cancels it."""
        self.guard.adopt(order, remaining)
        self._start(tracked)
        self._bind(tracked, venue_order)
        self.symbols.add(tracked.symbol)
        if self.guard.node_state() is TradingState.HALTED:
            self.adopted_in_kill.append(tracked)  # the kill may have swept without it
        log.warning(
            "OPEN_ORDER_ADOPTED node=%s order=%s venue_id=%s symbol=%s side=%s remaining=%d",
            self.guard.node,
            tracked.gid,
            tracked.exchange_id,
            tracked.symbol,
            tracked.side.value,
            remaining,
        )

    def _net_position(self, symbol: str, units: Units, answer: Any) -> tuple[int, float]:
        if not isinstance(answer, list):
            raise UnitError(f"fetch_positions: the answer is {type(answer).__name__}, not a list")
        signed: list[tuple[int, float]] = []
        for i, p in enumerate(answer):
            if not isinstance(p, dict):
                raise UnitError(f"fetch_positions[{i}]: {type(p).__name__}, not a position")
            if p.get("symbol") != symbol:
                continue
            contracts = p.get("contracts")
            n = 0 if contracts is None else units.to_units(contracts, f"positions[{i}].contracts")
            if n == 0:
                continue
            side = p.get("side")
            if side not in ("long", "short") or n < 0:
                raise UnitError(f"positions[{i}].side: {side!r} with contracts {contracts!r}")
            price = units.unit_price(p.get("entryPrice"), f"positions[{i}].entryPrice")
            signed.append((n if side == "long" else -n, price))
        net = sum(n for n, _ in signed)
        on_side = [(abs(n), px) for n, px in signed if n * net > 0]
        total = sum(n for n, _ in on_side)
        return net, (sum(n * px for n, px in on_side) / total if total else 0.0)

    def _balance_position(self, symbol: str, units: Units, answer: Any) -> tuple[int, float]:
        qty = self.held(symbol, answer)
        if qty == 0:
            return 0, 0.0
        price = self._prices.get(symbol)
        if price is None:
            raise UnitError("a balance is held, but no reference price to value it at")
        return qty, price

    def held(self, symbol: str, answer: Any) -> int:
        """The total balance of `symbol`'s base currency in a `fetch_balance` answer, in whole
        steps rounded up (a balance carries more decimals than the step: fees), so the
        Guard counts at least what is held."""
        base = self.exchange.market(symbol).get("base")
        if not isinstance(answer, dict) or not isinstance(base, str):
            raise UnitError(f"fetch_balance: the answer is {type(answer).__name__}, not a balance")
        entry = answer.get(base)
        total = 0 if entry is None else entry.get("total") if isinstance(entry, dict) else entry
        if total is None:
            raise UnitError(f"fetch_balance: {base}: no total")
        d = decimal_of(total, f"fetch_balance: {base}.total")
        if d < 0:
            raise UnitError(f"fetch_balance: {base}.total: must be >= 0, got {d}")
        return int(-(-d // self.units(symbol).step))

    def unsynced_of(self, symbols: Iterable[Any]) -> list[str]:
        """The unified symbols among `symbols` whose open orders are to be read again."""
        found: dict[str, None] = {}
        for symbol in symbols:
            try:
                unified = self.symbol_of(symbol)
            except Exception:
                continue  # no market: the order's own check refuses it
            if unified in self.unsynced:
                found[unified] = None
        return list(found)

    def unsynced_live(self) -> list[str]:
        """The `unsynced` markets with orders live here (known by venue id): a stream gap may
        have ended or filled them unseen. One with none is read from its start at its next
        order (`restart`)."""
        return [s for s in self.unsynced if self.live_in(s)]

    def restart(self, symbol: str) -> bool:
        """Whether an `unsynced` market is read again from its start (position and open
        orders) rather than its open orders alone: when no order is live there, nothing
        it filled can still be on its way to be booked, so the position read is exact, and
        it counts what another program's orders filled in full between two reads. The
        market is then no longer started (a read that fails leaves it so: refused until
        read)."""
        if any(t.symbol == symbol for t in self._live):
            return False
        self.started.pop(symbol, None)
        self.unsynced.pop(symbol, None)
        return True

    def resync_failed(self, symbol: str, exc: BaseException) -> GuardRefused:
        """The refusal of an order whose market's open orders, or the end of an order they no
        longer hold, could not be read again: the market stays unsynced."""
        self.unsynced[symbol] = None
        d = Decision(
            False, RejectReason.VENUE_UNAVAILABLE, f"open orders of {symbol} unknown: {exc}"[:400]
        )
        log.error("OPEN_ORDERS_UNKNOWN node=%s %s", self.guard.node, d.detail)
        self.record_block(symbol, d)
        return GuardRefused(d)

    def has_price(self, symbol: str) -> bool:
        return symbol in self._prices

    def start_failed(self, symbol: str, exc: BaseException) -> GuardRefused:
        """The refusal of an order whose market's starting position could not be read."""
        d = Decision(
            False,
            RejectReason.VENUE_UNAVAILABLE,
            f"starting position of {symbol} unknown: {exc}"[:400],
        )
        log.error("POSITION_UNKNOWN node=%s %s", self.guard.node, d.detail)
        self.record_block(symbol, d)
        return GuardRefused(d)

    # --- before sending -------------------------------------------------------
    def symbol_of(self, symbol: Any) -> str:
        """The unified symbol of a market named by it or by the venue's market id.

        ccxt takes either (`BTCUSDT` is Binance's `BTC/USDT`) and sends the same order, so
        the Guard counts a market under one name only: under two, its position, working
        quantity, reference price and symbol lists would each see half of it.
        """
        if not isinstance(symbol, str):
            raise UnitError(f"symbol: must be a string, got {symbol!r}")
        unified = self._symbols.get(symbol)
        if unified is None:
            unified = self.exchange.market(symbol).get("symbol")
            if not isinstance(unified, str):
                raise UnitError(f"symbol: market {symbol!r} has no unified symbol")
            self._symbols[symbol] = unified
        return unified

    def params_of(self, params: Any, what: str = "params") -> dict[str, Any]:
        """A copy of an order's `params`; anything but a dict (or None) is refused."""
        if params is None:
            return {}
        if not isinstance(params, dict):
            d = Decision(
                False,
                RejectReason.INVALID_ORDER,
                f"{what}: must be a dict, got {type(params).__name__}",
            )
            self.record_block(what, d)
            raise GuardRefused(d)
        return dict(params)

    def units(self, symbol: str) -> Units:
        """The market's amount step, as the Guard counts `symbol`."""
        return self._market(symbol)[0]

    def _market(self, symbol: str) -> tuple[Units, Decimal | None]:
        """(amount step, price tick) of a market, read once from ccxt's loaded markets."""
        known = self._markets.get(symbol)
        if known is None:
            market = self.exchange.market(symbol)
            precision = market.get("precision") or {}
            step = self._step(symbol, precision.get("amount"))
            known = (
                Units(step.step, self._contract_size(symbol, market)),
                self._step(symbol, precision.get("price"), required=False),
            )
            self._markets[symbol] = known
        return known

    @staticmethod
    def _contract_size(symbol: str, market: dict[str, Any]) -> Any:
        """What one amount of a contract market is worth (its `contractSize`; 1 for spot).

        A linear contract's notional is amount x contractSize x price: counted as
        amount x price, 1,000-DOGE contracts read 1/1000 of their value against every
        notional limit. An inverse contract's is amount x contractSize in the quote
        currency whatever the price, which the Guard's quantity x price cannot state:
        it is refused, never counted as if linear."""
        if not market.get("contract"):
            return 1
        if market.get("inverse") or not market.get("linear"):
            raise UnitError(
                f"market {symbol}: inverse contracts are refused (the Guard counts "
                "notional as amount x price; an inverse contract's is not)"
            )
        size = market.get("contractSize")
        if size is None:
            raise UnitError(f"market {symbol}: contractSize: missing for a contract market")
        return size

    def _step(self, symbol: str, value: Any, required: bool = True) -> Any:
        mode = self.exchange.precisionMode
        if value is None or mode not in (ccxt.TICK_SIZE, ccxt.DECIMAL_PLACES):
            if not required:
                return None
            raise UnitError(
                f"market {symbol}: no fixed amount step (precision {value!r}, mode {mode}); "
                "the Guard needs one to count exactly"
            )
        units = Units(value) if mode == ccxt.TICK_SIZE else Units.from_places(int(value))
        return units if required else units.step

    def _as_sent(self, symbol: str, amount: Any, price: Any) -> tuple[int, Decimal, Any]:
        """(units, amount, price) exactly as ccxt will send them (see `_amount`, `_price`)."""
        units, d = self._amount(symbol, amount)
        return units, d, None if price is None else self._price(symbol, price)

    def _amount(self, symbol: str, amount: Any) -> tuple[int, Decimal]:
        """An amount on the market's step is what ccxt's `amount_to_precision` would return
        unchanged, so ccxt is only asked for one off the grid: then the Guard checks what
        ccxt cuts it to."""
        units = self._market(symbol)[0]
        d = decimal_of(amount, "amount")
        n = d / units.step
        if n != n.to_integral_value():
            d = decimal_of(self.exchange.amount_to_precision(symbol, amount), "amount")
        return units.to_units(d), d

    def _price(self, symbol: str, price: Any) -> Decimal:
        """A limit price on the market's tick, as ccxt's `price_to_precision` sends it."""
        tick = self._market(symbol)[1]
        p = decimal_of(price, "price")
        if tick is None or p % tick:
            p = decimal_of(self.exchange.price_to_precision(symbol, price), "price")
        return p

    def _limit(self, symbol: str, type: Any, side: str, price: Any) -> bool:
        """Whether an order is a limit order (its price checked); refuses what would be sent
        other than as checked: an unknown type, a market order with a price (ccxt sizes it
        in the quote currency, amount x price), a spot market buy where the venue sizes
        market buys in the quote currency."""
        if type not in ("limit", "market"):
            raise UnitError(f"type: must be 'limit' or 'market', got {type!r}")
        if type == "limit":
            if price is None:
                raise UnitError("price: a limit order needs one")
            return True
        if price is not None:
            raise UnitError(
                "price: a market order is sent without one (ccxt would size it in the quote "
                "currency, amount x price); leave it out or use a limit order"
            )
        options = getattr(self.exchange, "options", None) or {}
        per_call = options.get("createOrder")  # Bybit and Bitget keep the option per call
        quote_sized = "createMarketBuyOrderRequiresPrice" in options or (
            isinstance(per_call, dict) and "createMarketBuyOrderRequiresPrice" in per_call
        )
        market = self.exchange.market(symbol)
        if side == "buy" and market.get("spot") and quote_sized:
            raise UnitError(
                f"type: {self.exchange.id} sizes spot market buys in the quote currency, which "
                "the Guard cannot count exactly; use a limit order"
            )
        return False

    def prepare(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: Any,
        price: Any,
        params: dict[str, Any],
    ) -> tuple[_Tracked, Decimal, Any]:
        """Check one order as it will be sent; returns it tracked, with the amount and price
        to send (a limit's price on the market's tick; none for a market order)."""
        client_id = params.get("clientOrderId")
        gid = str(client_id) if client_id else f"kw-{uuid.uuid4().hex[:20]}"
        try:
            if any(k in params for k in _QUOTE_SIZED):
                raise UnitError(
                    "amount: quote-sized orders are refused (the base amount is only known "
                    "at the venue); give the amount in the base currency"
                )
            _check_params(params)
            symbol = self.symbol_of(symbol)
            if side not in ("buy", "sell"):
                raise UnitError(f"side: must be 'buy' or 'sell', got {side!r}")
            limit = self._limit(symbol, type, side, price)
            qty, amount_d, price_d = self._as_sent(symbol, amount, price if limit else None)
            order = Order(
                id=gid,
                strategy=self.strategy,
                symbol=symbol,
                side=Side(side),
                qty=qty,
                price=self.units(symbol).unit_price(price_d) if price_d is not None else None,
            )
        except (UnitError, InvalidOrder, ccxt.BaseError) as exc:
            d = Decision(False, RejectReason.INVALID_ORDER, str(exc))
            self.record_block(gid, d)
            raise GuardRefused(d) from None
        if symbol not in self.started and self.guard.armed:
            # the start was skipped while the Guard was not armed, and it was armed since:
            # refused before the check (nothing reserved), the next order reads the start
            raise self.start_failed(symbol, UnitError("not read yet (the Guard was not armed)"))
        d = self.guard.check(order)
        if not d.accepted:
            raise GuardRefused(d)
        if symbol not in self.started:  # armed between the two: the reservation goes back
            self.guard.on_reject(gid)
            raise self.start_failed(symbol, UnitError("not read yet (the Guard was not armed)"))
        tracked = _Tracked(
            gid, symbol, order.side, order.qty, self.units(symbol), client_id, price_d
        )
        self.forget(FORGET_PER_CALL)
        self._start(tracked)
        if client_id:
            self._file(tracked, _CLIENT_ID, str(client_id))
        self.symbols.add(symbol)
        return tracked, amount_d, price_d

    def _file(self, tracked: _Tracked, index: int, key: str) -> None:
        """Hold `tracked` under `key` in one of its indexes (once per key)."""
        if index == _TRADE:
            self._seen_trades.add(key)
        else:
            m = (self.orders, self._by_exchange_id, self._by_client_id)[index]
            if m.get(key) is tracked:
                return
            m[key] = tracked
        tracked.filed.append((index, key))

    def _start(self, tracked: _Tracked) -> None:
        """A new order (or a replace's successor) is live from now on."""
        self._file(tracked, _ORDER, tracked.gid)
        self._live[tracked] = None

    def _end(self, tracked: _Tracked) -> None:
        """The order ended: no longer live; remembered for one duplicate scope more."""
        tracked.done = True
        self.unsettled.pop(tracked, None)
        self.end_unknown.pop(tracked, None)
        if tracked in self._live:
            del self._live[tracked]
            self._ended.append((self.guard.clock.monotonic_ns(), tracked))
            self.forget(FORGET_PER_CALL)

    def forget(self, budget: int) -> int:
        """Let go of up to `budget` orders that ended more than one duplicate scope ago;
        returns how many."""
        ended = self._ended
        if not ended:
            return 0
        window = self.guard.limits.duplicate_id_window_s
        keep_ns = _SESSION_FORGET_NS if window is None else int(window * 1e9)
        cutoff = self.guard.clock.monotonic_ns() - keep_ns
        maps = (self.orders, self._by_exchange_id, self._by_client_id)
        gone = 0
        while gone < budget and ended and ended[0][0] <= cutoff:
            tracked = ended.popleft()[1]
            for index, key in tracked.filed:
                if index == _TRADE:
                    self._seen_trades.discard(key)
                elif maps[index].get(key) is tracked:
                    del maps[index][key]
            tracked.filed.clear()
            gone += 1
        return gone

    def record_block(self, order_id: str, d: Decision) -> None:
        """A refusal made before the Guard could see an order, counted and recorded alike."""
        self.guard.refuse(Unmapped(order_id), d)

    def prepare_edit(
        self,
        id: str,
        symbol: str,
        type: str,
        side: str,
        amount: Any,
        price: Any,
        params: dict[str, Any],
    ) -> tuple[_Tracked, str, Decimal | None, Decimal | None]:
        """Check an amend with the Guard's replace check before it is sent.

        Venues differ (an amend in place, or cancel-replace into a new order), so
        the new amount is taken as fully working on top of what is filled: the
        most the venue could end up with. The venue's answer then sets the leaves.
        """
        try:
            tracked = self._by_exchange_id.get(_xkey(self.symbol_of(symbol), id))
            if tracked is None or tracked.done:
                raise UnitError(
                    f"order {id}: not a live order placed through this wrapper; "
                    "the Guard cannot check an amend of it"
                )
            if self.symbol_of(symbol) != tracked.symbol or side != tracked.side.value:
                raise UnitError("an amend keeps the order's symbol and side")
            symbol = tracked.symbol
            _check_params(params)
            limit = tracked.price is not None
            if type != ("limit" if limit else "market"):
                raise UnitError(f"type: an amend keeps the order's type, got {type!r}")
            if price is not None and not limit:
                raise UnitError("price: a market order is sent without one")
            if amount is None:
                add, amount_d = tracked.ordered - tracked.applied, None
            else:
                add, amount_d = self._amount(symbol, amount)
                if add <= 0:  # the new amount of the order, never a change by a signed delta
                    raise UnitError(f"amount: must be > 0, got {amount!r}")
            price_d = self._price(symbol, price) if price is not None and limit else tracked.price
            self._edits += 1
            new = Order(
                id=f"{tracked.root}~{self._edits}",
                strategy=self.strategy,
                symbol=symbol,
                side=tracked.side,
                # a total as the Guard counts it: every fill of the chain of orders the
                # amends carried on (a cancel-replace venue's new order starts at none)
                qty=(self.guard.filled(tracked.gid) or tracked.applied) + add,
                price=tracked.units.unit_price(price_d) if price_d is not None and limit else None,
            )
        except (UnitError, InvalidOrder, ccxt.BaseError) as exc:
            d = Decision(False, RejectReason.INVALID_ORDER, str(exc))
            self.record_block(str(id), d)
            raise GuardRefused(d) from None
        d = self.guard.check_replace(tracked.gid, new)
        if not d.accepted:
            raise GuardRefused(d)
        tracked.pending = new.id
        return tracked, new.id, amount_d, price_d

    def edited(self, tracked: _Tracked, new_gid: str, order: Any) -> None:
        """The venue took the amend: the Guard's order moves to `new_gid`. An answer that
        cannot be read leaves the amend in doubt (its larger reservation stays, as with
        no answer) and raises `VenueAnswerError`."""
        why = _unreadable(order, "an order", _FIELDS)
        left: int | None = None
        replaced = False
        if why is None:
            xid = order.get("id")
            describes_order = order.get("amount") is not None and order.get("status") is not None
            # cancel-replace: a new venue order with its own fill count takes over (an
            # amend in place may answer with an amend id instead, with no order in it)
            replaced = xid is not None and str(xid) != tracked.exchange_id and describes_order
            remaining = order.get("remaining")
            if remaining is None:
                remaining = order.get("amount")
            try:
                if replaced and remaining is not None:
                    left = tracked.units.to_units(remaining, "remaining")
            except UnitError as exc:
                why = f"an order with {exc}"
        if why is not None:
            log.warning(
                "AMEND_IN_DOUBT node=%s order=%s: edit_order answer is %s",
                self.guard.node,
                tracked.gid,
                why,
            )
            raise VenueAnswerError(
                f"edit_order: the venue's answer is {why}; the amend may have been taken, its "
                "larger reservation stays until the order ends"
            )
        tracked.pending = None
        if replaced:
            self.guard.on_replace_ack(new_gid, remaining=left)
            self._end(tracked)
            successor = _Tracked(
                new_gid,
                tracked.symbol,
                tracked.side,
                left if left is not None else 0,
                tracked.units,
                None,
                tracked.price,
                tracked.root,
            )
            successor.amended = True
            self._start(successor)
            self._bind(successor, order)
            self.apply_order(order)
            return
        self.guard.on_replace_ack(new_gid)
        tracked.gid = new_gid
        tracked.amended = True
        self._file(tracked, _ORDER, new_gid)
        left = self.guard.remaining(new_gid)
        tracked.ordered = tracked.applied + (left or 0)
        if describes_order and str(xid) == tracked.exchange_id:
            self.apply_order(order)

    def edit_failed(self, tracked: _Tracked, new_gid: str, exc: BaseException) -> None:
        """A venue refusal rolls the amend back; no answer (or one saying the outcome is
        unknown) keeps the larger reservation."""
        if _refused(exc):
            tracked.pending = None
            self.guard.on_replace_reject(new_gid)

    # --- after sending --------------------------------------------------------
    def placed(self, tracked: _Tracked, order: Any, call: str = "create_order") -> None:
        """Book the venue's answer to a placement; one that cannot be read holds the order in
        doubt (the venue may have taken it) and raises `VenueAnswerError`."""
        why = _unreadable(order, "an order", _FIELDS)
        if why is not None:
            exc = VenueAnswerError(f"{call}: the venue's answer is {why}; the order may be live")
            self.failed(tracked, exc)
            raise exc
        self._bind(tracked, order)
        if tracked.exchange_id is None and tracked.client_id is None:
            # an answer naming no order: no update can ever bind it, yet it may be live
            self.failed(tracked, AdapterError("the venue's answer names no order id"))
        self.apply_order(order)

    def failed(self, tracked: _Tracked, exc: BaseException) -> None:
        """The venue refused (nothing placed), or did not answer or said the outcome is
        unknown (in doubt: it may be live)."""
        if _refused(exc):
            self._finish(tracked, why=f"venue reject: {exc}", end=self.guard.on_reject)
        else:
            self.in_doubt[tracked.gid] = tracked
            log.warning(
                "ORDER_IN_DOUBT node=%s order=%s symbol=%s: %s",
                self.guard.node,
                tracked.gid,
                tracked.symbol,
                exc,
            )

    def resolve(self, gid: str, order: dict[str, Any] | None) -> None:
        """Settle an in-doubt order: the venue's record of it, or None if it never arrived; or
        an order whose end could not be read (`end_unknown`): the venue's record of its end."""
        tracked = self.in_doubt.get(gid)
        if tracked is None:
            tracked = next((t for t in self.end_unknown if t.gid == gid), None)
            if tracked is None:
                raise AdapterError(f"resolve: order {gid!r} is not in doubt")
            if order is None:
                raise AdapterError(
                    f"resolve: order {gid!r} reached the venue (venue id {tracked.exchange_id}); "
                    "give the venue's record of its end (its status and filled amount)"
                )
        why = None if order is None else _unreadable(order, "an order", _FIELDS)
        if why is not None:
            raise AdapterError(f"resolve: order {gid!r}: the record given is {why}; not settled")
        followed = None if order is None else self._by_venue_id(tracked.symbol, order.get("id"))
        if order is None:
            self._finish(tracked, why="resolved: never reached the venue", end=self.guard.on_reject)
        elif followed is not None and followed is not tracked:
            # an update adopted it already (it named no id, so it looked like another
            # program's order): that copy follows it; this one's reservation goes back
            self._finish(
                tracked, why=f"resolved: followed as {followed.gid}", end=self.guard.on_reject
            )
            self.apply_order(order)
        else:
            self._bind(tracked, order)
            self.apply_order(order)

    def _bind(self, tracked: _Tracked, order: dict[str, Any]) -> None:
        xid = order.get("id")
        if xid is not None:
            tracked.exchange_id = str(xid)
            self._file(tracked, _EXCHANGE_ID, _xkey(tracked.symbol, xid))
        cid = order.get("clientOrderId")
        if cid:
            tracked.client_id = str(cid)
            self._file(tracked, _CLIENT_ID, str(cid))
        self.in_doubt.pop(tracked.gid, None)

    def _find(self, order: dict[str, Any]) -> _Tracked | None:
        tracked = self._by_venue_id(order.get("symbol"), order.get("id"))
        if tracked is None:
            tracked = self._by_client_id_of(order)
            if tracked is not None and not self._same_market(tracked, order.get("symbol")):
                return None  # venues keep client ids per market: another market's order
            if tracked is not None:
                self._bind(tracked, order)
        return tracked

    def _same_market(self, tracked: _Tracked, symbol: Any) -> bool:
        """Whether an update naming `symbol` (None: no market named) can be `tracked`'s."""
        if symbol is None:
            return True
        try:
            return self.symbol_of(symbol) == tracked.symbol
        except (UnitError, ccxt.BaseError):  # a market not loaded: no order placed here
            return False

    def _by_venue_id(self, symbol: Any, xid: Any) -> _Tracked | None:
        """The order a venue's update names by (market, venue order id). An update without
        a market is the one order with that id, if only one has it."""
        if xid is None:
            return None
        if isinstance(symbol, str):
            try:
                unified = self.symbol_of(symbol)
            except (UnitError, ccxt.BaseError):  # a market not loaded: no order placed here
                return None
            return self._by_exchange_id.get(_xkey(unified, xid))
        found = {t for t in self.orders.values() if t.exchange_id == str(xid)}  # amended: 2 ids
        return found.pop() if len(found) == 1 else None

    def apply_orders(self, orders: Any, call: str = "order update") -> str | None:
        """Book order updates (a list or one order); a failure to book halts, never raises.

        Returns why the answer, or an entry of it, could not be read (logged; nothing
        of that entry booked, the readable ones are), else None."""
        many = isinstance(orders, list)
        problem = None
        try:
            for i, order in enumerate(orders if many else [orders]):
                why = _unreadable(order, "an order", _FIELDS)
                if why is None:
                    self._apply_order(order, adopt=not call.startswith("cancel"))
                elif problem is None:
                    problem = f"{call}: {f'entry {i}' if many else 'the answer'} is {why}"
        except Exception as exc:
            self._lost(f"order update could not be applied: {exc!r}")
        if problem is not None:
            log.warning("BAD_ANSWER node=%s %s; not booked", self.guard.node, problem)
        return problem

    def apply_order(self, order: Any) -> None:
        self.apply_orders([order])

    def read_orders(self, call: str, answer: Any, *, many: bool) -> None:
        """Book a fetch's or a stream's answer (`many`: a list of orders, else one order);
        raises `VenueAnswerError` naming `call` if it, or any entry, cannot be read."""
        if many == isinstance(answer, list):  # one order is a dict, checked when booked
            problem = self.apply_orders(answer, call)
        else:
            problem = f"{call}: the answer is {type(answer).__name__}, not " + (
                "a list of orders" if many else "an order (a dict)"
            )
            log.warning("BAD_ANSWER node=%s %s; not booked", self.guard.node, problem)
        if problem is not None:
            raise VenueAnswerError(f"{problem}; not booked")

    def read_trades(self, call: str, answer: Any) -> None:
        """Book a list of trades; raises `VenueAnswerError` if it, or an entry, is unreadable."""
        problem = self.apply_trades(answer, call)
        if problem is not None:
            raise VenueAnswerError(f"{problem}; not booked")

    def read_ticker(self, call: str, answer: Any) -> None:
        """Take a ticker's price; raises `VenueAnswerError` if it is not a ticker (a dict)."""
        if not isinstance(answer, dict):
            raise VenueAnswerError(
                f"{call}: the answer is {type(answer).__name__}, not a ticker (a dict)"
            )
        self.on_ticker(answer)

    def read_tickers(self, call: str, answer: Any) -> None:
        """Take the prices of tickers by symbol; raises `VenueAnswerError` if the answer, or
        one of its tickers, is not a dict (the readable ones are taken)."""
        if not isinstance(answer, dict):
            raise VenueAnswerError(
                f"{call}: the answer is {type(answer).__name__}, not tickers by symbol (a dict)"
            )
        bad = None
        for key, ticker in answer.items():
            if isinstance(ticker, dict):
                self.on_ticker(ticker)
            elif bad is None:
                bad = f"{call}: ticker {key!r:.40} is {type(ticker).__name__}, not a dict"
        if bad is not None:
            raise VenueAnswerError(bad)

    def _apply_order(self, order: dict[str, Any], adopt: bool = False) -> None:
        """Book an order update: new fills (cumulative `filled` beyond what is booked), end.
        `adopt`: an open order not followed here is adopted (`adopt_late`); a cancel's
        answer adopts nothing (an order being cancelled adds no risk).

        An answer that ends the order without saying how much was filled (some
        cancel answers, some streams) does not end it here: a fill may still be
        on its way, and the Guard treats a fill for an ended order as a mismatch.
        The order stays working until an update carries its fill count.
        """
        tracked = self._find(order)
        if tracked is None:
            if adopt:
                self.adopt_late(order, "order update")
            return
        filled = order.get("filled")
        cost = order.get("cost")
        if filled is None and cost is not None and decimal_of(cost, "cost") == 0:
            filled = 0  # nothing was paid, so nothing was filled
        if filled is not None:
            try:
                filled_units = tracked.units.to_units(filled, "filled")
                if filled_units < 0:
                    raise UnitError(f"filled: must be >= 0, got {filled!r}")
            except UnitError as exc:
                self._unbookable(tracked, exc)
                return
            delta = filled_units - tracked.applied
            if delta > 0:
                price = self._fill_price(tracked, order, filled_units)
                if price is None:
                    self._unbookable(tracked, UnitError("filled without any price"))
                    return
                self._book(tracked, delta, price)
        remaining = order.get("remaining")
        if tracked.amended and remaining is not None and not tracked.done:
            # after an amend the venue's leaves are the truth (amend semantics differ)
            left = tracked.units.to_units(remaining, "remaining")
            if self.guard.remaining(tracked.gid) not in (None, left):
                self.guard.on_restate(tracked.gid, left)
        status = order.get("status")
        if status in TERMINAL and filled is not None:
            end = {"expired": self.guard.on_expire, "rejected": self.guard.on_reject}
            self._finish(tracked, why=f"status {status}", end=end.get(str(status)))
        elif status in TERMINAL and not tracked.done:
            self.unsettled[tracked] = None  # its fill count is read back as the call ends

    def _fill_price(self, tracked: _Tracked, order: dict[str, Any], filled_units: int) -> Any:
        """The price (per base unit, as a ticker quotes it) of the fills an update adds:
        from the order's cumulative `cost` beyond what is booked, else its average or
        limit price. A contract's cost is amount x contractSize x price (ccxt's
        `safe_order`, and the venues' cumulative quote), so it is divided by the
        contract size too: read as amount x price, a 10-BTC contract's fill was booked
        at 10x its price (a buy at 60,000 booked at 600,000: a loss of nine times its value)."""
        cost = order.get("cost")
        if cost:
            new_cost = decimal_of(cost, "cost") - tracked.applied_cost
            new_amount = tracked.units.to_amount(filled_units - tracked.applied)
            if new_cost > 0 and new_amount > 0:
                return new_cost / (new_amount * tracked.units.multiplier)
        return order.get("average") or order.get("price")

    def apply_trades(self, trades: Any, call: str = "trades") -> str | None:
        """Book executions; a failure to book halts, never raises (the venue call itself
        succeeded). Returns why the answer or an entry could not be read (logged), else
        None."""
        problem = None
        if not isinstance(trades, list):
            problem = f"{call}: the answer is {type(trades).__name__}, not a list of trades"
            trades = []
        for i, trade in enumerate(trades):
            why = _unreadable(trade, "a trade", _TRADE_FIELDS)
            if why is not None and problem is None:
                problem = f"{call}: entry {i} is {why}"
        try:
            self._apply_trades(t for t in trades if _unreadable(t, "", _TRADE_FIELDS) is None)
        except Exception as exc:
            self._lost(f"trades could not be applied: {exc!r}")
        if problem is not None:
            log.warning("BAD_ANSWER node=%s %s; not booked", self.guard.node, problem)
        return problem

    def _apply_trades(self, trades: Iterable[dict[str, Any]]) -> None:
        for trade in trades:
            tid = trade.get("id")
            tracked = self._by_venue_id(trade.get("symbol"), trade.get("order"))
            if tracked is None:
                self._foreign_trade(trade)
                continue
            # venues number trades per market (Binance): the same id in two symbols is two
            # trades, so a trade is known by its symbol and id
            key = f"{tracked.symbol}\x00{tid}"
            if tid is None:
                # a venue that numbers no trades: known by when, how much and at what price
                # (it was skipped, so a desk reading fills from trades never counted it)
                if trade.get("timestamp") is None:
                    self._unbookable(
                        tracked,
                        UnitError(
                            "trade id: missing, and no timestamp to tell a repeat from a new fill"
                        ),
                    )
                    continue
                fields = (trade.get(k) for k in ("order", "timestamp", "side", "amount", "price"))
                key = "\x00".join(("", tracked.symbol, *map(str, fields)))
            if key in self._seen_trades:
                continue  # a trade of an ended order is still booked: the Guard judges it
            self._file(tracked, _TRADE, key)
            try:
                amount = tracked.units.to_units(trade.get("amount"), "trade amount")
                if amount <= 0:  # it would cut the trade sum: later fills go unbooked
                    raise UnitError(f"trade amount: must be > 0, got {trade.get('amount')!r}")
            except UnitError as exc:
                self._unbookable(tracked, exc)
                continue
            tracked.trades += amount
            delta = tracked.trades - tracked.applied
            if delta > 0:
                self._book(tracked, delta, trade.get("price"))

    def _foreign_trade(self, trade: dict[str, Any]) -> None:
        """A trade of an order not followed here in a started market: another program
        trades there, so its open orders are read again before the next order."""
        try:
            symbol = self.symbol_of(trade.get("symbol"))
        except (UnitError, ccxt.BaseError):
            return
        if symbol in self.started and symbol not in self.unsynced:
            self.unsynced[symbol] = None
            log.warning(
                "UNKNOWN_TRADE node=%s symbol=%s order=%.40r: open orders read again before "
                "the next order",
                self.guard.node,
                symbol,
                trade.get("order"),
            )

    def _book(self, tracked: _Tracked, units: int, price: Any) -> None:
        try:
            unit_price = tracked.units.unit_price(price, "fill price")
            fill = Fill(
                order_id=tracked.gid,
                symbol=tracked.symbol,
                side=tracked.side,
                qty=units,
                price=unit_price,
            )
        except (UnitError, InvalidOrder) as exc:
            self._unbookable(tracked, exc)
            return
        tracked.applied += units
        # in the venue's cost terms (`_fill_price`): a contract's cost counts its contract size
        u = tracked.units
        tracked.applied_cost += decimal_of(price, "fill price") * u.to_amount(units) * u.multiplier
        self.guard.on_fill(fill)
        if tracked.applied >= tracked.ordered:
            self._finish(tracked, why="filled")

    def _finish(
        self, tracked: _Tracked, why: str, end: Callable[[str], None] | None = None
    ) -> None:
        """A terminal state: whatever is still working is given back to the Guard
        (`end`: on_cancel, or on_reject / on_expire, which do not count as cancels)."""
        if tracked.done:
            return
        self._end(tracked)
        self.in_doubt.pop(tracked.gid, None)
        if tracked.pending is not None:  # an amend still in flight dies with the order
            self.guard.on_replace_reject(tracked.pending)
            tracked.pending = None
        if self.guard.remaining(tracked.gid):
            (end or self.guard.on_cancel)(tracked.gid)
        log.debug("order %s done (%s)", tracked.gid, why)

    def _unbookable(self, tracked: _Tracked, exc: Exception) -> None:
        self._lost(f"update for order {tracked.gid} could not be booked: {exc}")

    def _lost(self, why: str) -> None:
        """The Guard cannot book what the venue reports: its picture is no longer the truth."""
        log.error("ADAPTER_UPDATE_FAILED node=%s %s", self.guard.node, why)
        self.guard.flag_mismatch(why)

    def on_ticker(self, ticker: Any) -> None:
        """A ticker's reference price: the mid of a two-sided one, else its last. A ticker
        with a price that is not a positive finite number (a string, NaN, a negative bid
        that would drag the mid down and open the collar) gives none, logged."""
        if not isinstance(ticker, dict):
            log.warning(
                "BAD_TICKER node=%s %s, not a ticker", self.guard.node, type(ticker).__name__
            )
            return
        try:
            self._on_ticker(ticker)
        except Exception as exc:  # a bad ticker is a missing price, not a crash
            log.warning("BAD_TICKER node=%s %r: %s", self.guard.node, ticker.get("symbol"), exc)

    def _on_ticker(self, ticker: dict[str, Any]) -> None:
        symbol = ticker.get("symbol")
        if not isinstance(symbol, str):
            raise UnitError(f"symbol: must be a string, got {symbol!r:.40}")
        bid, ask, last = (_ticker_price(ticker, k) for k in ("bid", "ask", "last"))
        price = (bid + ask) / 2 if bid and ask else last
        if price:
            self.on_price(symbol, price)

    def on_price(self, symbol: str, price: Any) -> None:
        """A reference price for `symbol` in the quote currency (per whole base unit)."""
        try:
            symbol = self.symbol_of(symbol)
            unit = self.units(symbol).unit_price(price)
            self.guard.on_price(symbol, unit)
            self._prices[symbol] = unit
        except (ValueError, ccxt.BaseError) as exc:  # UnitError, or the Guard refusing NaN
            log.warning(
                "BAD_PRICE node=%s symbol=%s price=%r: %s", self.guard.node, symbol, price, exc
            )

    def live(self) -> list[_Tracked]:
        """The orders not ended yet (a kill reads back each of them)."""
        return list(self._live)

    def cancelling(self, ids: Any, symbol: Any) -> None:
        """Mark the live orders a cancel the venue took names, and its answer did not end,
        to be read back as the call ends (`unsettled`): `ids`, venue ids (in `symbol`, or
        the one order with that id); None, every order in `symbol`, or every order (a
        cancel-all)."""
        if ids is not None and not isinstance(ids, list | tuple):
            return  # not ids: the venue's call refuses it
        if ids is None:
            try:
                unified = None if symbol is None else self.symbol_of(symbol)
            except (UnitError, ccxt.BaseError):
                return  # no market loaded by that name: the venue refuses the cancel
            found: list[_Tracked | None] = [t for t in self._live if unified in (None, t.symbol)]
        else:
            found = [self._by_venue_id(symbol, xid) for xid in ids]
        for t in found:
            if t is not None and not t.done and t.exchange_id is not None:
                self.unsettled[t] = None

    def requesting(self, ids: Any, symbol: Any) -> None:
        """Tell the Guard of each order a cancel call names by venue id, before it is sent
        (`Guard.on_cancel_request`): one naming no order working here (filled or cancelled
        already, never placed through this wrapper) is counted, and more than
        `max_unknown_cancels_per_s` of them in a second halt the node (`unknown_cancels`),
        the cancels still sent. A loop cancelling ids that do not exist flooded the venue
        with requests it answered "order not found", and nothing counted them. A cancel-all
        names no order."""
        if not isinstance(ids, list | tuple):
            return
        for xid in ids:
            tracked = self._by_venue_id(symbol, xid)
            self.guard.on_cancel_request(tracked.gid if tracked is not None else f"?{xid}")

    def to_settle(self) -> list[_Tracked]:
        """The `unsettled` orders to read back now (taken: each is read once per call)."""
        taken, self.unsettled = self.unsettled, {}
        return [t for t in taken if not t.done and t.exchange_id is not None]

    def settled(self, tracked: _Tracked, answer: Any) -> None:
        """Book the read-back of an `unsettled` order. An answer that again says no fill count
        leaves it working (as before the read), not marked again: no read loops."""
        self.apply_order(answer)
        self.unsettled.pop(tracked, None)

    def kill_symbols(self) -> list[str]:
        return sorted(self.symbols)

    def live_in(self, symbol: str) -> bool:
        """Whether an order known by venue id is still live in `symbol` (after a kill's sweep
        and read-back: its cancel failed, or its end has not been read yet)."""
        return any(
            t.symbol == symbol and t.exchange_id is not None and t not in self.end_unknown
            for t in self._live
        )

    def read_back(self, tracked: _Tracked, answer: dict[str, Any] | None) -> None:
        """Book a kill's read-back of `tracked` (`_read_order`). None: the venue no longer
        lists it open and holds no record of its end that can be read: it is left to no
        cancel (`end_unknown`), logged once, and stays counted working (its fills unknown)."""
        if answer is not None:
            self.end_unknown.pop(tracked, None)
            self.apply_order(answer)
            return
        if tracked.done or tracked in self.end_unknown:
            return
        self.end_unknown[tracked] = None
        log.error(
            "ORDER_END_UNKNOWN node=%s order=%s venue_id=%s %s: no longer open at the venue, "
            "and its end cannot be read (no fetchOrder, no list of ended orders holds it): "
            "counted working until an update says how much filled",
            self.guard.node,
            tracked.gid,
            tracked.exchange_id,
            tracked.symbol,
        )

    def kill_adopted(self) -> list[str]:
        """The markets to sweep again for the orders adopted while the node was HALTED
        (`adopted_in_kill`, taken): those of the ones still live, while the node is still
        HALTED (after a resume they stay working, as any adopted order)."""
        taken, self.adopted_in_kill = self.adopted_in_kill, []
        if self.guard.node_state() is not TradingState.HALTED:
            return []
        return list(dict.fromkeys(t.symbol for t in taken if not t.done))


def _passthrough(wrapper: Any, ex: Any, name: str) -> Any:
    """ccxt's camelCase names reach the wrapped snake_case calls (`createOrder` is
    `create_order`, `fetchMyTrades` feeds the Guard too); anything else passes through
    unless it could write orders."""
    snake = _CAMEL.sub("_", name).lower()
    if snake != name and snake in _WRAPPED:
        return getattr(wrapper, snake)
    value = getattr(ex, name)
    if callable(value) and (_WRITE.search(name) or _implicit_write(ex, name)):
        raise AdapterError(
            f"{name}: not routed through the knightwatch Guard; use create_order / "
            "create_orders (or call the exchange object directly and bypass the Guard knowingly)"
        )
    return value


def _implicit_write(ex: Any, name: str) -> bool:
    """Whether `name` is one of ccxt's implicit API endpoints (an `Entry`: its HTTP method and
    path) that can write orders: any but a GET (whatever its name: Revolut X's
    `privatePost10Orders` has a digit where `_WRITE` looks for a capital), or a GET whose path
    places, amends or closes (`_GET_WRITES`). The camelCase name is a plain function holding
    its `Entry` in its closure."""
    entry = inspect.getattr_static(ex, name, None)
    if not isinstance(entry, Entry):
        cells = getattr(entry, "__closure__", None) or ()
        found = [v for c in cells if isinstance(v := _cell(c), Entry)]
        entry = found[0] if found else None
    method, path = getattr(entry, "method", None), getattr(entry, "path", None)
    if not isinstance(method, str) or not isinstance(path, str):
        return False
    if method.upper() != "GET":
        return True
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return any(w.lower() in _GET_WRITES for w in _WORD.split(last) if w)


def _cell(cell: Any) -> Any:
    """What a closure cell holds (None for an empty one, which raises on reading)."""
    try:
        return cell.cell_contents
    except ValueError:
        return None


def _serialized(
    method: Callable[Concatenate[GuardedExchange, P], T],
) -> Callable[Concatenate[GuardedExchange, P], T]:
    """A `GuardedExchange` call under its `calls` lock (see the class doc)."""

    @functools.wraps(method)
    def run(self: GuardedExchange, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self.calls:
            try:
                return method(self, *args, **kwargs)
            finally:
                if self.ledger.adopted_in_kill:
                    self._cancel_adopted()

    return run


def _sweeping(
    method: Callable[Concatenate[AsyncGuardedExchange, P], Awaitable[T]],
) -> Callable[Concatenate[AsyncGuardedExchange, P], Coroutine[Any, Any, T]]:
    """An `AsyncGuardedExchange` call that can adopt orders: once it is done (answered or
    raised), the markets of orders it adopted while the node is HALTED are swept again
    (`_cancel_adopted`): the kill's own sweep may have run without them."""

    @functools.wraps(method)
    async def run(self: AsyncGuardedExchange, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(self, *args, **kwargs)
        finally:
            if self.ledger.adopted_in_kill:
                await self._cancel_adopted()

    return run


class GuardedExchange:
    """A sync ccxt exchange with the Guard in front of every order (see the module doc).

    Every call that touches the exchange or the ledger holds `calls`, a re-entrant
    lock: in the fleet, a kill cancels from a thread of its own while the program
    may be in a call, and neither ccxt's sync exchange (its HTTP session, a
    venue's nonce) nor the ledger is shared across threads unguarded. Stopping
    never waits for that lock: the Guard refuses from the moment the kill
    latches; only the cancels at the venue wait for a call in flight to return.
    """

    def __init__(
        self,
        exchange: Any,
        guard: WatchedGuard,
        *,
        strategy: str,
        member: FleetMember | None = None,
    ) -> None:
        self.exchange = exchange
        self.guard = guard
        self.member = member
        self.ledger = Ledger(exchange, guard, strategy)
        self.calls = threading.RLock()
        self._killing = False
        self._loop: LoopThread | None = None
        self.kill_thread: threading.Thread | None = None
        """The thread cancelling open orders after a fleet kill (joined to the fleet only)."""
        self.kill_retry: threading.Thread | None = None
        """The thread trying again the markets a kill left orders live in (`_retry_kill`)."""
        self._kill_left: set[str] = set()
        self._closed = threading.Event()
        guard.watch(self._on_state_change)

    def __getattr__(self, name: str) -> Any:
        value = _passthrough(self, self.exchange, name)
        if not callable(value) or name in _WRAPPED:
            return value
        calls = self.calls

        def serialized(*args: Any, **kwargs: Any) -> Any:
            with calls:
                return value(*args, **kwargs)

        return serialized

    # --- fleet ------------------------------------------------------------------
    def join(self, timeout_s: float = 30.0) -> None:
        """Join the fleet (lease, kill state, metrics, flight recorder) and arm.

        The node runtime runs on an asyncio loop in a daemon thread of its own
        (`knightwatch-<node>`); this call returns once the node has joined and
        armed, and raises what joining raised.
        """
        if self.member is None:
            raise AdapterError("join: this exchange was wrapped without a control_plane")
        if self._loop is not None:
            raise AdapterError("join: this exchange has joined the fleet already")
        loop = LoopThread(f"knightwatch-{self.guard.node}")
        try:
            loop.run(self.member.start(actor=f"ccxt:{self.guard.node}"), timeout_s)
        except BaseException:
            with contextlib.suppress(Exception):
                loop.run(self.member.stop(), timeout_s)
            loop.close()
            raise
        self._loop = loop

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the kill's retries and leave the fleet (if joined): stop the node runtime and
        its loop thread."""
        self._closed.set()
        retry = self.kill_retry
        if retry is not None:
            retry.join(timeout_s)
        loop, self._loop = self._loop, None
        if loop is None or self.member is None:
            return
        try:
            loop.run(self.member.stop(), timeout_s)
        finally:
            loop.close()
        if self.kill_thread is not None:
            self.kill_thread.join(timeout_s)

    # --- starting positions -------------------------------------------------------
    @_serialized
    def start(self, symbols: Iterable[Any]) -> None:
        """Read the start of each market not read yet (see the module doc): its position
        and the orders open there, adopted; an order in a market not read reads it first.
        Raises `GuardRefused` for one that cannot be read."""
        ledger = self.ledger
        self.exchange.load_markets()
        for symbol in symbols:
            unified = ledger.start_needed(symbol)
            if unified is None:
                continue
            try:
                ledger.open_orders_readable()
                # open orders first: a fill between the two reads is then counted twice
                # (in the balance and again by the order's update), never missed
                open_orders = self.exchange.fetch_open_orders(unified)
                if ledger.start_kind(unified) == "positions":
                    answer = self.exchange.fetch_positions([unified])
                else:
                    answer = self.exchange.fetch_balance()
                    if ledger.held(unified, answer) and not ledger.has_price(unified):
                        ledger.read_ticker("fetch_ticker", self.exchange.fetch_ticker(unified))
                ledger.start_from(unified, answer, open_orders)
            except Exception as exc:
                raise ledger.start_failed(unified, exc) from None

    def _start_for_order(self, symbols: Iterable[Any]) -> None:
        """`start` before an order is checked, and the open orders of an `unsynced` market
        read again; skipped while the Guard is not armed (it refuses the order anyway, and
        nothing, not even a read, reaches the venue)."""
        if self.guard.armed:
            symbols = list(symbols)
            self.start(symbols)
            for unified in self.ledger.unsynced_of(symbols):
                if self.ledger.restart(unified):
                    self.start([unified])
                    continue
                try:
                    self.ledger.open_orders_readable()
                    gone = self.ledger.resync(unified, self.exchange.fetch_open_orders(unified))
                    for t in gone:  # ended unseen: how much did it fill?
                        ended = _read_order(self.exchange, t)
                        self.ledger.read_orders("fetch_order", _found(t, ended), many=False)
                except Exception as exc:
                    raise self.ledger.resync_failed(unified, exc) from None

    # --- orders -----------------------------------------------------------------
    @_serialized
    def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: Any,
        price: Any = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        params = self.ledger.params_of(params)
        self.exchange.load_markets()
        self._start_for_order([symbol])
        tracked, amount_d, price_d = self.ledger.prepare(symbol, type, side, amount, price, params)
        try:
            order: dict[str, Any] = self.exchange.create_order(
                tracked.symbol, type, side, float(amount_d), _num(price_d, price), params
            )
        except BaseException as exc:  # cancelled or interrupted too: in doubt
            self.ledger.failed(tracked, exc)
            raise
        self.ledger.placed(tracked, order)
        return order

    @_serialized
    def create_orders(
        self, orders: list[dict[str, Any]], params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """All checked before any is sent; one refusal refuses the batch."""
        self.exchange.load_markets()
        params = self.ledger.params_of(params)
        self._start_for_order(_batch_symbols(orders))
        prepared, requests = _prepare_batch(self.ledger, orders, params)
        try:
            result: list[dict[str, Any]] = self.exchange.create_orders(requests, params)
        except BaseException as exc:  # cancelled or interrupted too: in doubt
            _batch_failed(self.ledger, prepared, exc)
            raise
        _placed_batch(self.ledger, prepared, result)
        return result

    def create_limit_order(
        self, symbol: str, side: str, amount: Any, price: Any, params: Any = None
    ) -> dict[str, Any]:
        return self.create_order(symbol, "limit", side, amount, price, params)

    def create_market_order(
        self, symbol: str, side: str, amount: Any, price: Any = None, params: Any = None
    ) -> dict[str, Any]:
        return self.create_order(symbol, "market", side, amount, price, params)

    def create_limit_buy_order(
        self, symbol: str, amount: Any, price: Any, params: Any = None
    ) -> dict[str, Any]:
        return self.create_order(symbol, "limit", "buy", amount, price, params)

    def create_limit_sell_order(
        self, symbol: str, amount: Any, price: Any, params: Any = None
    ) -> dict[str, Any]:
        return self.create_order(symbol, "limit", "sell", amount, price, params)

    def create_market_buy_order(
        self, symbol: str, amount: Any, params: Any = None
    ) -> dict[str, Any]:
        return self.create_order(symbol, "market", "buy", amount, None, params)

    def create_market_sell_order(
        self, symbol: str, amount: Any, params: Any = None
    ) -> dict[str, Any]:
        return self.create_order(symbol, "market", "sell", amount, None, params)

    @_serialized
    def edit_order(
        self,
        id: str,
        symbol: str,
        type: str,
        side: str,
        amount: Any = None,
        price: Any = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.exchange.load_markets()
        ledger = self.ledger
        params = ledger.params_of(params)
        tracked, new_gid, amount_d, price_d = ledger.prepare_edit(
            id, symbol, type, side, amount, price, params
        )
        try:
            order: dict[str, Any] = self.exchange.edit_order(
                id, tracked.symbol, type, side, _num(amount_d, amount), _num(price_d, price), params
            )
        except BaseException as exc:  # cancelled or interrupted too: in doubt
            ledger.edit_failed(tracked, new_gid, exc)
            raise
        ledger.edited(tracked, new_gid, order)
        return order

    @_serialized
    def cancel_order(self, id: str, symbol: str | None = None, params: Any = None) -> Any:
        ex = self.exchange
        return self._cancel(
            "cancel_order", [id], symbol, lambda: ex.cancel_order(id, symbol, params or {})
        )

    @_serialized
    def cancel_orders(self, ids: list[str], symbol: str | None = None, params: Any = None) -> Any:
        ex = self.exchange
        return self._cancel(
            "cancel_orders", ids, symbol, lambda: ex.cancel_orders(ids, symbol, params or {})
        )

    @_serialized
    def cancel_all_orders(self, symbol: str | None = None, params: Any = None) -> Any:
        ex = self.exchange
        return self._cancel(
            "cancel_all_orders", None, symbol, lambda: ex.cancel_all_orders(symbol, params or {})
        )

    def _cancel(self, call: str, ids: Any, symbol: Any, send: Callable[[], Any]) -> Any:
        """A cancel call: its answer booked, then each order it named that the answer did
        not end read back (`Ledger.cancelling`); so too when the venue no longer holds the
        order (`OrderNotFound`: it filled or ended meanwhile)."""
        self.ledger.requesting(ids, symbol)
        try:
            result = send()
        except ccxt.OrderNotFound:
            self.ledger.cancelling(ids, symbol)
            self._settle()
            raise
        self.ledger.apply_orders(result, call)
        self.ledger.cancelling(ids, symbol)
        self._settle()
        return result

    def _settle(self) -> None:
        """Read back each order an answer ended without its fill count (`Ledger.unsettled`):
        until then the Guard counts it working. A read that fails leaves it so, logged."""
        for tracked in self.ledger.to_settle():
            try:
                answer = _found(tracked, _read_order(self.exchange, tracked))
                self.ledger.settled(tracked, answer)
            except Exception as exc:
                _settle_failed(self.guard.node, tracked, exc)

    # --- updates ------------------------------------------------------------------
    @_serialized
    def fetch_order(self, id: str, symbol: str | None = None, params: Any = None) -> Any:
        order = self.exchange.fetch_order(id, symbol, params or {})
        self.ledger.read_orders("fetch_order", order, many=False)
        return order

    @_serialized
    def fetch_orders(self, *args: Any, **kwargs: Any) -> Any:
        orders = self.exchange.fetch_orders(*args, **kwargs)
        self.ledger.read_orders("fetch_orders", orders, many=True)
        return orders

    @_serialized
    def fetch_open_orders(self, *args: Any, **kwargs: Any) -> Any:
        orders = self.exchange.fetch_open_orders(*args, **kwargs)
        self.ledger.read_orders("fetch_open_orders", orders, many=True)
        return orders

    @_serialized
    def fetch_closed_orders(self, *args: Any, **kwargs: Any) -> Any:
        orders = self.exchange.fetch_closed_orders(*args, **kwargs)
        self.ledger.read_orders("fetch_closed_orders", orders, many=True)
        return orders

    @_serialized
    def fetch_my_trades(self, *args: Any, **kwargs: Any) -> Any:
        trades = self.exchange.fetch_my_trades(*args, **kwargs)
        self.ledger.read_trades("fetch_my_trades", trades)
        return trades

    @_serialized
    def fetch_order_trades(self, *args: Any, **kwargs: Any) -> Any:
        trades = self.exchange.fetch_order_trades(*args, **kwargs)
        self.ledger.read_trades("fetch_order_trades", trades)
        return trades

    @_serialized
    def fetch_open_order(self, *args: Any, **kwargs: Any) -> Any:
        order = self.exchange.fetch_open_order(*args, **kwargs)
        self.ledger.read_orders("fetch_open_order", order, many=False)
        return order

    @_serialized
    def fetch_canceled_orders(self, *args: Any, **kwargs: Any) -> Any:
        orders = self.exchange.fetch_canceled_orders(*args, **kwargs)
        self.ledger.read_orders("fetch_canceled_orders", orders, many=True)
        return orders

    @_serialized
    def fetch_canceled_and_closed_orders(self, *args: Any, **kwargs: Any) -> Any:
        orders = self.exchange.fetch_canceled_and_closed_orders(*args, **kwargs)
        self.ledger.read_orders("fetch_canceled_and_closed_orders", orders, many=True)
        return orders

    @_serialized
    def fetch_ticker(self, symbol: str, params: Any = None) -> Any:
        ticker = self.exchange.fetch_ticker(symbol, params or {})
        self.ledger.read_ticker("fetch_ticker", ticker)
        return ticker

    @_serialized
    def fetch_tickers(self, *args: Any, **kwargs: Any) -> Any:
        tickers = self.exchange.fetch_tickers(*args, **kwargs)
        self.ledger.read_tickers("fetch_tickers", tickers)
        return tickers

    @_serialized
    def on_price(self, symbol: str, price: Any) -> None:
        self.ledger.on_price(symbol, price)

    @_serialized
    def resolve(self, order_id: str, order: dict[str, Any] | None) -> None:
        self.ledger.resolve(order_id, order)

    # --- kill -------------------------------------------------------------------------
    def _on_state_change(self) -> None:
        if self.guard.node_state() is not TradingState.HALTED:
            self._killing = False
        elif not self._killing:
            self._killing = True
            if self.member is None:  # halted by the Guard itself, on the caller's thread
                self.cancel_everything()
                return
            # a kill arrives on the runtime's loop with the Guard's lock held: cancel
            # from another thread, so neither waits for the venue
            self.kill_thread = threading.Thread(
                target=self._cancel_after_kill, name="knightwatch-kill", daemon=True
            )
            self.kill_thread.start()

    def _cancel_after_kill(self) -> None:
        try:
            n = self.cancel_everything()
        except Exception:
            log.exception("KILL_CANCEL node=%s failed", self.guard.node)
            return
        log.warning("KILL_CANCEL node=%s symbols=%d cancelled", self.guard.node, n)

    @_serialized
    def cancel_everything(self) -> int:
        """Cancel every open order in the symbols traded here, then read back final states; a
        market whose cancel failed or that still holds a live order is tried again
        (`_retry_kill`)."""
        cancelled, failed = 0, []
        for symbol in self.ledger.kill_symbols():
            if self._cancel_symbol(symbol):
                cancelled += 1
            else:
                failed.append(symbol)
        self._read_back()
        self._retry_kill(failed)
        return cancelled

    def _retry_kill(self, failed: Iterable[str]) -> None:
        """Hand the markets a kill's sweep left something live in (`failed`, or an order
        still live there after the read-back) to the retry thread, started if not running.
        Called under `calls`, which the thread also holds to decide that it is done."""
        ledger = self.ledger
        left = set(failed) | {s for s in ledger.kill_symbols() if ledger.live_in(s)}
        if not left or self.guard.node_state() is not TradingState.HALTED:
            return
        self._kill_left |= left
        if self.kill_retry is None:
            self.kill_retry = threading.Thread(
                target=self._kill_retries, name="knightwatch-kill-retry", daemon=True
            )
            self.kill_retry.start()

    def _kill_retries(self) -> None:
        """Sweep again, with a bounded backoff, each market a kill left something live in,
        until none is left, the node is no longer HALTED (resumed: the orders are the
        strategy's again) or the wrapper is closed. Sleeps outside `calls`."""
        delay, attempt = _KILL_RETRY_FIRST_S, 0
        while not self._closed.wait(delay):
            with self.calls:
                if self.guard.node_state() is not TradingState.HALTED or not self._kill_left:
                    self._kill_left.clear()
                    self.kill_retry = None
                    return
                attempt += 1
                for symbol in sorted(self._kill_left):
                    swept = self._cancel_symbol(symbol)
                    self._read_back(symbol)
                    if swept and not self.ledger.live_in(symbol):
                        self._kill_left.discard(symbol)
                if _kill_retried(self.guard.node, attempt, self._kill_left):
                    self.kill_retry = None
                    return
            delay = min(delay * 2, _KILL_RETRY_MAX_S)
        with self.calls:
            self.kill_retry = None

    def _cancel_symbol(self, symbol: str) -> bool:
        """Cancel every open order in `symbol` at the venue (`cancel_all_orders`, else one by
        one from its open orders), tried `_KILL_ATTEMPTS` times; whether it went through."""
        ex, ledger = self.exchange, self.ledger
        for attempt in range(1, _KILL_ATTEMPTS + 1):
            try:
                if ex.has.get("cancelAllOrders"):
                    # nothing open in the market is Binance's -2011 (OrderNotFound): swept
                    with contextlib.suppress(ccxt.OrderNotFound):
                        ledger.apply_orders(ex.cancel_all_orders(symbol), "cancel_all_orders")
                else:
                    left = 0
                    for xid in _open_ids(ex.fetch_open_orders(symbol)):
                        try:
                            ledger.apply_orders(ex.cancel_order(xid, symbol), "cancel_order")
                        except Exception as exc:
                            left += _cancel_failed(symbol, xid, exc)
                    _all_cancelled(symbol, left)
                return True
            except Exception as exc:  # one symbol's failure never spares the others
                log.error("KILL_CANCEL_FAILED symbol=%s attempt=%d: %r", symbol, attempt, exc)
        return False

    def _read_back(self, symbol: str | None = None) -> None:
        """Read the final state of each live order known by venue id (in `symbol`, or all)."""
        ex, ledger = self.exchange, self.ledger
        for tracked in ledger.live():
            if tracked.exchange_id is not None and symbol in (None, tracked.symbol):
                try:
                    ledger.read_back(tracked, _read_order(ex, tracked))
                except Exception as exc:
                    log.error("KILL_READBACK_FAILED order=%s: %s", tracked.gid, exc)

    def _cancel_adopted(self) -> None:
        """Sweep again the markets of orders adopted while the node is HALTED, and read them
        back (`Ledger.kill_adopted`): the kill swept before they were known (a market's
        first read on its way when it landed, or another program's order opened after
        it). Runs as the call that adopted them ends, under `calls`; never raises."""
        try:
            for symbol in self.ledger.kill_adopted():
                swept = self._cancel_symbol(symbol)
                self._read_back(symbol)
                _log_adopted_swept(self.guard.node, symbol, swept)
                self._retry_kill([] if swept else [symbol])
        except Exception:
            log.exception("KILL_CANCEL node=%s: orders adopted during the kill", self.guard.node)


class AsyncGuardedExchange:
    """An async ccxt exchange with the Guard in front of every order (see the module doc)."""

    def __init__(
        self,
        exchange: Any,
        guard: WatchedGuard,
        *,
        strategy: str,
        member: FleetMember | None = None,
    ) -> None:
        self.exchange = exchange
        self.guard = guard
        self.member = member
        self.ledger = Ledger(exchange, guard, strategy)
        self._killing = False
        self.kill_task: asyncio.Task[int] | None = None
        self.kill_retry: asyncio.Task[None] | None = None
        """The task trying again the markets a kill left orders live in (`_retry_kill`)."""
        self._kill_left: set[str] = set()
        self._gap = False
        """Whether a stream call raised and no stream call has answered since (`_after_gap`)."""
        self.gap_read: asyncio.Task[None] | None = None
        """The read-back of a stream gap that runs whether or not the stream answers again
        (`_read_gap`)."""
        guard.watch(self._on_state_change)

    def __getattr__(self, name: str) -> Any:
        return _passthrough(self, self.exchange, name)

    async def join(self) -> None:
        """Join the fleet (lease, kill state, metrics, flight recorder) and arm."""
        if self.member is None:
            raise AdapterError("join: this exchange was wrapped without a control_plane")
        await self.member.start(actor=f"ccxt:{self.guard.node}")

    async def close(self) -> None:
        """Stop the kill's retries and a stream gap's read-back, leave the fleet (if joined)
        and close the exchange's HTTP session."""
        for task in (self.kill_retry, self.gap_read):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.kill_retry = self.gap_read = None
        if self.member is not None:
            await self.member.stop()
        await self.exchange.close()

    # --- starting positions -------------------------------------------------------
    @_sweeping
    async def start(self, symbols: Iterable[Any]) -> None:
        """Read the start of each market not read yet (see the module doc): its position
        and the orders open there, adopted; an order in a market not read reads it first.
        Raises `GuardRefused` for one that cannot be read."""
        ledger = self.ledger
        await self.exchange.load_markets()
        for symbol in symbols:
            unified = ledger.start_needed(symbol)
            if unified is None:
                continue
            try:
                ledger.open_orders_readable()
                # open orders first: a fill between the two reads is then counted twice
                # (in the balance and again by the order's update), never missed
                open_orders = await self.exchange.fetch_open_orders(unified)
                if ledger.start_kind(unified) == "positions":
                    answer = await self.exchange.fetch_positions([unified])
                else:
                    answer = await self.exchange.fetch_balance()
                    if ledger.held(unified, answer) and not ledger.has_price(unified):
                        ticker = await self.exchange.fetch_ticker(unified)
                        ledger.read_ticker("fetch_ticker", ticker)
                ledger.start_from(unified, answer, open_orders)
            except Exception as exc:
                raise ledger.start_failed(unified, exc) from None

    async def _start_for_order(self, symbols: Iterable[Any]) -> None:
        """`start` before an order is checked, and the open orders of an `unsynced` market
        read again; skipped while the Guard is not armed (it refuses the order anyway, and
        nothing, not even a read, reaches the venue)."""
        if self.guard.armed:
            symbols = list(symbols)
            await self.start(symbols)
            for unified in self.ledger.unsynced_of(symbols):
                if self.ledger.restart(unified):
                    await self.start([unified])
                    continue
                try:
                    await self._resync(unified)
                except Exception as exc:
                    raise self.ledger.resync_failed(unified, exc) from None

    async def _resync(self, unified: str) -> None:
        """Read an `unsynced` market's open orders again (new ones adopted) and read back each
        order followed here that they no longer hold: it ended unseen, how much filled?"""
        self.ledger.open_orders_readable()
        answer = await self.exchange.fetch_open_orders(unified)
        for t in self.ledger.resync(unified, answer):
            ended = await _aread_order(self.exchange, t)
            self.ledger.read_orders("fetch_order", _found(t, ended), many=False)

    def _stream_broke(self, call: str, exc: BaseException) -> None:
        """A stream call raised: the gap is read back when the stream answers again
        (`_after_gap`), and on its own (`_read_gap`), since a quiet market may never make it
        answer, nor send an order."""
        self._gap = True
        self.ledger.stream_gap(call, exc)
        if self.gap_read is None or self.gap_read.done():
            self.gap_read = asyncio.get_running_loop().create_task(
                self._read_gap(), name="knightwatch-stream-gap-read"
            )

    async def _after_gap(self) -> None:
        """A stream call answered after one raised: the stream is connected again, and each
        market with orders live here is read again now (`_resync_live`), so the gap's fills
        and cancels reach the position, the loss stop and the working quantity at the
        reconnect, not only before the market's next order. Once per gap."""
        if not self._gap:
            return
        self._gap = False
        # read again even if the gap's own read (`_read_gap`) did: the venue's pushes between
        # that read and the reconnection were lost too
        self.ledger.unsync_started()
        await self._resync_live()

    @_sweeping  # the read may adopt orders
    async def _read_gap(self) -> None:
        """The gap's read-back on its own: `_GAP_READ_FIRST_S` after the stream broke, each
        market with orders live here is read again (`_resync_live`), then, while one could
        not be read, again after each wait twice the last (at most `_GAP_READ_MAX_S`,
        `_GAP_READS` reads in all). A market still not read stays `unsynced`: its next order
        reads it first, or is refused. Ends early once the stream answers (`_after_gap` has
        read it) or nothing is left to read."""
        delay_s = _GAP_READ_FIRST_S
        for _ in range(_GAP_READS):
            await asyncio.sleep(delay_s)
            if not self._gap or await self._resync_live():
                return
            delay_s = min(delay_s * 2, _GAP_READ_MAX_S)
        log.error(
            "STREAM_GAP_UNREAD node=%s %s: not read after %d tries; read before the next order",
            self.guard.node,
            ", ".join(self.ledger.unsynced_live()),
            _GAP_READS,
        )

    async def _resync_live(self) -> bool:
        """Read again each `unsynced` market with orders live here (`_resync`); whether all
        were read. A read that fails is logged and leaves its market `unsynced`."""
        read = True
        for unified in self.ledger.unsynced_live():
            try:
                await self._resync(unified)
            except Exception as exc:
                read = False
                self.ledger.unsynced[unified] = None
                log.error(
                    "STREAM_GAP_READ_FAILED node=%s %s: read again before its next order: %r",
                    self.guard.node,
                    unified,
                    exc,
                )
        return read

    # --- orders -----------------------------------------------------------------
    @_sweeping
    async def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: Any,
        price: Any = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        params = self.ledger.params_of(params)
        await self.exchange.load_markets()
        await self._start_for_order([symbol])
        tracked, amount_d, price_d = self.ledger.prepare(symbol, type, side, amount, price, params)
        try:  # whatever the venue answered, a kill's late cancels still run
            try:
                order: dict[str, Any] = await self.exchange.create_order(
                    tracked.symbol, type, side, float(amount_d), _num(price_d, price), params
                )
            except BaseException as exc:  # cancelled or interrupted too: in doubt
                self.ledger.failed(tracked, exc)
                raise
            self.ledger.placed(tracked, order)
        finally:
            await self._cancel_late([tracked.symbol])
        return order

    @_sweeping
    async def create_orders(
        self, orders: list[dict[str, Any]], params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """All checked before any is sent; one refusal refuses the batch."""
        await self.exchange.load_markets()
        params = self.ledger.params_of(params)
        await self._start_for_order(_batch_symbols(orders))
        prepared, requests = _prepare_batch(self.ledger, orders, params)
        try:  # whatever the venue answered, a kill's late cancels still run
            try:
                result: list[dict[str, Any]] = await self.exchange.create_orders(requests, params)
            except BaseException as exc:  # cancelled or interrupted too: in doubt
                _batch_failed(self.ledger, prepared, exc)
                raise
            _placed_batch(self.ledger, prepared, result)
        finally:
            await self._cancel_late([t.symbol for t in prepared])
        return result

    async def create_limit_order(
        self, symbol: str, side: str, amount: Any, price: Any, params: Any = None
    ) -> dict[str, Any]:
        return await self.create_order(symbol, "limit", side, amount, price, params)

    async def create_market_order(
        self, symbol: str, side: str, amount: Any, price: Any = None, params: Any = None
    ) -> dict[str, Any]:
        return await self.create_order(symbol, "market", side, amount, price, params)

    async def create_limit_buy_order(
        self, symbol: str, amount: Any, price: Any, params: Any = None
    ) -> dict[str, Any]:
        return await self.create_order(symbol, "limit", "buy", amount, price, params)

    async def create_limit_sell_order(
        self, symbol: str, amount: Any, price: Any, params: Any = None
    ) -> dict[str, Any]:
        return await self.create_order(symbol, "limit", "sell", amount, price, params)

    async def create_market_buy_order(
        self, symbol: str, amount: Any, params: Any = None
    ) -> dict[str, Any]:
        return await self.create_order(symbol, "market", "buy", amount, None, params)

    async def create_market_sell_order(
        self, symbol: str, amount: Any, params: Any = None
    ) -> dict[str, Any]:
        return await self.create_order(symbol, "market", "sell", amount, None, params)

    @_sweeping
    async def edit_order(
        self,
        id: str,
        symbol: str,
        type: str,
        side: str,
        amount: Any = None,
        price: Any = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        await self.exchange.load_markets()
        ledger = self.ledger
        params = ledger.params_of(params)
        tracked, new_gid, amount_d, price_d = ledger.prepare_edit(
            id, symbol, type, side, amount, price, params
        )
        try:  # whatever the venue answered (an unreadable answer too), late cancels run
            try:
                order: dict[str, Any] = await self.exchange.edit_order(
                    id,
                    tracked.symbol,
                    type,
                    side,
                    _num(amount_d, amount),
                    _num(price_d, price),
                    params,
                )
            except BaseException as exc:  # cancelled or interrupted too: in doubt
                ledger.edit_failed(tracked, new_gid, exc)
                raise
            ledger.edited(tracked, new_gid, order)
        finally:
            await self._cancel_late([tracked.symbol])
        return order

    async def cancel_order(self, id: str, symbol: str | None = None, params: Any = None) -> Any:
        ex = self.exchange
        return await self._cancel(
            "cancel_order", [id], symbol, lambda: ex.cancel_order(id, symbol, params or {})
        )

    async def cancel_orders(
        self, ids: list[str], symbol: str | None = None, params: Any = None
    ) -> Any:
        ex = self.exchange
        return await self._cancel(
            "cancel_orders", ids, symbol, lambda: ex.cancel_orders(ids, symbol, params or {})
        )

    async def cancel_all_orders(self, symbol: str | None = None, params: Any = None) -> Any:
        ex = self.exchange
        return await self._cancel(
            "cancel_all_orders", None, symbol, lambda: ex.cancel_all_orders(symbol, params or {})
        )

    async def _cancel(
        self, call: str, ids: Any, symbol: Any, send: Callable[[], Awaitable[Any]]
    ) -> Any:
        """A cancel call: its answer booked, then each order it named that the answer did
        not end read back (`Ledger.cancelling`); so too when the venue no longer holds the
        order (`OrderNotFound`: it filled or ended meanwhile)."""
        self.ledger.requesting(ids, symbol)
        try:
            result = await send()
        except ccxt.OrderNotFound:
            self.ledger.cancelling(ids, symbol)
            await self._settle()
            raise
        self.ledger.apply_orders(result, call)
        self.ledger.cancelling(ids, symbol)
        await self._settle()
        return result

    async def _settle(self) -> None:
        """Read back each order an answer ended without its fill count (`Ledger.unsettled`):
        until then the Guard counts it working. A read that fails leaves it so, logged."""
        for tracked in self.ledger.to_settle():
            try:
                answer = _found(tracked, await _aread_order(self.exchange, tracked))
                self.ledger.settled(tracked, answer)
            except Exception as exc:
                _settle_failed(self.guard.node, tracked, exc)

    # --- updates ------------------------------------------------------------------
    @_sweeping
    async def fetch_order(self, id: str, symbol: str | None = None, params: Any = None) -> Any:
        order = await self.exchange.fetch_order(id, symbol, params or {})
        self.ledger.read_orders("fetch_order", order, many=False)
        return order

    @_sweeping
    async def fetch_orders(self, *args: Any, **kwargs: Any) -> Any:
        orders = await self.exchange.fetch_orders(*args, **kwargs)
        self.ledger.read_orders("fetch_orders", orders, many=True)
        return orders

    @_sweeping
    async def fetch_open_orders(self, *args: Any, **kwargs: Any) -> Any:
        orders = await self.exchange.fetch_open_orders(*args, **kwargs)
        self.ledger.read_orders("fetch_open_orders", orders, many=True)
        return orders

    @_sweeping
    async def fetch_closed_orders(self, *args: Any, **kwargs: Any) -> Any:
        orders = await self.exchange.fetch_closed_orders(*args, **kwargs)
        self.ledger.read_orders("fetch_closed_orders", orders, many=True)
        return orders

    async def fetch_my_trades(self, *args: Any, **kwargs: Any) -> Any:
        trades = await self.exchange.fetch_my_trades(*args, **kwargs)
        self.ledger.read_trades("fetch_my_trades", trades)
        return trades

    async def fetch_order_trades(self, *args: Any, **kwargs: Any) -> Any:
        trades = await self.exchange.fetch_order_trades(*args, **kwargs)
        self.ledger.read_trades("fetch_order_trades", trades)
        return trades

    @_sweeping
    async def fetch_open_order(self, *args: Any, **kwargs: Any) -> Any:
        order = await self.exchange.fetch_open_order(*args, **kwargs)
        self.ledger.read_orders("fetch_open_order", order, many=False)
        return order

    @_sweeping
    async def fetch_canceled_orders(self, *args: Any, **kwargs: Any) -> Any:
        orders = await self.exchange.fetch_canceled_orders(*args, **kwargs)
        self.ledger.read_orders("fetch_canceled_orders", orders, many=True)
        return orders

    @_sweeping
    async def fetch_canceled_and_closed_orders(self, *args: Any, **kwargs: Any) -> Any:
        orders = await self.exchange.fetch_canceled_and_closed_orders(*args, **kwargs)
        self.ledger.read_orders("fetch_canceled_and_closed_orders", orders, many=True)
        return orders

    @_sweeping
    async def watch_orders(self, *args: Any, **kwargs: Any) -> Any:
        try:
            orders = await self.exchange.watch_orders(*args, **kwargs)
        except Exception as exc:  # the stream broke: what it missed is read when it answers again
            self._stream_broke("watch_orders", exc)
            raise
        self.ledger.read_orders("watch_orders", orders, many=True)
        await self._settle()
        await self._after_gap()
        return orders

    @_sweeping  # the read after a gap may adopt orders (`_after_gap`)
    async def watch_my_trades(self, *args: Any, **kwargs: Any) -> Any:
        try:
            trades = await self.exchange.watch_my_trades(*args, **kwargs)
        except Exception as exc:  # the stream broke: what it missed is read when it answers again
            self._stream_broke("watch_my_trades", exc)
            raise
        self.ledger.read_trades("watch_my_trades", trades)
        await self._after_gap()
        return trades

    @_sweeping
    async def watch_orders_for_symbols(self, *args: Any, **kwargs: Any) -> Any:
        try:
            orders = await self.exchange.watch_orders_for_symbols(*args, **kwargs)
        except Exception as exc:  # the stream broke: what it missed is read when it answers again
            self._stream_broke("watch_orders_for_symbols", exc)
            raise
        self.ledger.read_orders("watch_orders_for_symbols", orders, many=True)
        await self._settle()
        await self._after_gap()
        return orders

    @_sweeping  # the read after a gap may adopt orders (`_after_gap`)
    async def watch_my_trades_for_symbols(self, *args: Any, **kwargs: Any) -> Any:
        try:
            trades = await self.exchange.watch_my_trades_for_symbols(*args, **kwargs)
        except Exception as exc:  # the stream broke: what it missed is read when it answers again
            self._stream_broke("watch_my_trades_for_symbols", exc)
            raise
        self.ledger.read_trades("watch_my_trades_for_symbols", trades)
        await self._after_gap()
        return trades

    async def fetch_ticker(self, symbol: str, params: Any = None) -> Any:
        ticker = await self.exchange.fetch_ticker(symbol, params or {})
        self.ledger.read_ticker("fetch_ticker", ticker)
        return ticker

    async def fetch_tickers(self, *args: Any, **kwargs: Any) -> Any:
        tickers = await self.exchange.fetch_tickers(*args, **kwargs)
        self.ledger.read_tickers("fetch_tickers", tickers)
        return tickers

    async def watch_ticker(self, symbol: str, params: Any = None) -> Any:
        ticker = await self.exchange.watch_ticker(symbol, params or {})
        self.ledger.read_ticker("watch_ticker", ticker)
        return ticker

    async def watch_tickers(self, *args: Any, **kwargs: Any) -> Any:
        tickers = await self.exchange.watch_tickers(*args, **kwargs)
        self.ledger.read_tickers("watch_tickers", tickers)
        return tickers

    def on_price(self, symbol: str, price: Any) -> None:
        self.ledger.on_price(symbol, price)

    def resolve(self, order_id: str, order: dict[str, Any] | None) -> None:
        self.ledger.resolve(order_id, order)

    # --- kill -------------------------------------------------------------------------
    def _on_state_change(self) -> None:
        if self.guard.node_state() is not TradingState.HALTED:
            self._killing = False
        elif not self._killing:
            self._killing = True
            try:
                self._start_kill()
            except RuntimeError:  # no running loop on this thread
                self._kill_off_loop()

    def _start_kill(self) -> None:
        """The kill's cancels as a task on the running loop (`kill_task`)."""
        loop = asyncio.get_running_loop()
        self.kill_task = loop.create_task(self.cancel_everything(), name="knightwatch-kill")

    def _kill_off_loop(self) -> None:
        """A node-wide halt from outside any running loop (a plain function between two
        `run_until_complete`, another thread): the cancels run on the exchange's own loop,
        at once if it is idle, scheduled on it if it runs in another thread. With no loop
        at all (the exchange never used, or its loop closed) there is nothing to cancel
        through: logged."""
        loop = getattr(self.exchange, "asyncio_loop", None)
        node = self.guard.node
        if isinstance(loop, asyncio.AbstractEventLoop) and not loop.is_closed():
            if loop.is_running():
                loop.call_soon_threadsafe(self._start_kill)
                return
            self._start_kill_on(loop)
            return
        log.error("KILL_CANCEL node=%s: no event loop to cancel orders on", node)

    def _start_kill_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """The kill's cancels at once on the exchange's idle loop, on the caller's thread (as
        the sync wrapper cancels on the caller's thread)."""
        self.kill_task = loop.create_task(self.cancel_everything(), name="knightwatch-kill")
        try:
            loop.run_until_complete(self.kill_task)
        except Exception:
            log.exception("KILL_CANCEL node=%s failed", self.guard.node)

    async def _cancel_late(self, symbols: list[str]) -> None:
        """After a write the venue answered while the node was halted: cancel what it left
        live in `symbols`. The order was on its way when the kill came, so the kill's
        cancel-all may have reached the venue first and missed it (the sync wrapper holds
        its calls lock instead, so its sweep waits for the write). An order whose venue id
        is not known (its answer lost: in doubt, perhaps live) cannot be cancelled by id,
        so its market is swept again, as the kill swept it. Stopping is never gated: this
        runs only after the venue has answered."""
        if not self._killing:
            return
        wanted = set(symbols)
        unknown: dict[str, None] = {}
        for tracked in self.ledger.live():
            if tracked.symbol not in wanted:
                continue
            if tracked.exchange_id is None:
                unknown[tracked.symbol] = None  # perhaps live under an id not known here
                continue
            xid, symbol = tracked.exchange_id, tracked.symbol
            try:
                answer = await self.exchange.cancel_order(xid, symbol)
                self.ledger.apply_orders(answer, "cancel_order")
            except ccxt.OrderNotFound:
                pass  # the kill's sweep (or a fill) ended it meanwhile: read back below
            except ccxt.BaseError as exc:
                log.error("KILL_CANCEL_FAILED order=%s (placed in the kill): %s", tracked.gid, exc)
            else:
                log.warning(
                    "KILL_CANCEL node=%s order=%s placed during the kill, cancelled",
                    self.guard.node,
                    tracked.gid,
                )
            # read back, as the sweep does: some venues answer a cancel with ids only, and
            # one the sweep cancelled before its answer bound it here ends only so
            try:
                self.ledger.read_back(tracked, await _aread_order(self.exchange, tracked))
            except ccxt.BaseError as exc:
                log.error("KILL_READBACK_FAILED order=%s: %s", tracked.gid, exc)
        failed = []
        for symbol in unknown:
            if await self._cancel_symbol(symbol):
                log.warning(
                    "KILL_CANCEL node=%s symbol=%s swept again: an order placed during the "
                    "kill got no answer",
                    self.guard.node,
                    symbol,
                )
            else:
                failed.append(symbol)
            await self._read_back(symbol)
        self._retry_kill(failed)  # and any order of the kill still live

    async def _cancel_symbol(self, symbol: str) -> bool:
        """Cancel every open order in `symbol` at the venue (`cancel_all_orders`, else one by
        one from its open orders), tried `_KILL_ATTEMPTS` times; whether it went through."""
        ex, ledger = self.exchange, self.ledger
        for attempt in range(1, _KILL_ATTEMPTS + 1):
            try:
                if ex.has.get("cancelAllOrders"):
                    # nothing open in the market is Binance's -2011 (OrderNotFound): swept
                    with contextlib.suppress(ccxt.OrderNotFound):
                        ledger.apply_orders(await ex.cancel_all_orders(symbol), "cancel_all_orders")
                else:
                    left = 0
                    for xid in _open_ids(await ex.fetch_open_orders(symbol)):
                        try:
                            ledger.apply_orders(await ex.cancel_order(xid, symbol), "cancel_order")
                        except Exception as exc:
                            left += _cancel_failed(symbol, xid, exc)
                    _all_cancelled(symbol, left)
                return True
            except Exception as exc:  # one symbol's failure never spares the others
                log.error("KILL_CANCEL_FAILED symbol=%s attempt=%d: %r", symbol, attempt, exc)
        return False

    async def _read_back(self, symbol: str | None = None) -> None:
        """Read the final state of each live order known by venue id (in `symbol`, or all)."""
        ex, ledger = self.exchange, self.ledger
        for tracked in ledger.live():
            if tracked.exchange_id is not None and symbol in (None, tracked.symbol):
                try:
                    ledger.read_back(tracked, await _aread_order(ex, tracked))
                except Exception as exc:
                    log.error("KILL_READBACK_FAILED order=%s: %s", tracked.gid, exc)

    async def cancel_everything(self) -> int:
        """Cancel every open order in the symbols traded here, then read back final states; a
        market whose cancel failed or that still holds a live order is tried again
        (`_retry_kill`)."""
        cancelled, failed = 0, []
        for symbol in self.ledger.kill_symbols():
            if await self._cancel_symbol(symbol):
                cancelled += 1
            else:
                failed.append(symbol)
        await self._read_back()
        log.warning("KILL_CANCEL node=%s symbols=%d cancelled", self.guard.node, cancelled)
        self._retry_kill(failed)
        return cancelled

    def _retry_kill(self, failed: Iterable[str]) -> None:
        """Hand the markets a kill's sweep left something live in (`failed`, or an order
        still live there after the read-back) to the retry task, started if not running."""
        ledger = self.ledger
        left = set(failed) | {s for s in ledger.kill_symbols() if ledger.live_in(s)}
        if not left or self.guard.node_state() is not TradingState.HALTED:
            return
        self._kill_left |= left
        if self.kill_retry is None or self.kill_retry.done():
            self.kill_retry = asyncio.get_running_loop().create_task(
                self._kill_retries(), name="knightwatch-kill-retry"
            )

    async def _kill_retries(self) -> None:
        """Sweep again, with a bounded backoff, each market a kill left something live in,
        until none is left, the node is no longer HALTED (resumed: the orders are the
        strategy's again) or `close` cancels it."""
        delay, attempt = _KILL_RETRY_FIRST_S, 0
        while True:
            await asyncio.sleep(delay)
            if self.guard.node_state() is not TradingState.HALTED or not self._kill_left:
                self._kill_left.clear()
                return
            attempt += 1
            for symbol in sorted(self._kill_left):
                swept = await self._cancel_symbol(symbol)
                await self._read_back(symbol)
                if swept and not self.ledger.live_in(symbol):
                    self._kill_left.discard(symbol)
            if _kill_retried(self.guard.node, attempt, self._kill_left):
                return
            delay = min(delay * 2, _KILL_RETRY_MAX_S)

    async def _cancel_adopted(self) -> None:
        """Sweep again the markets of orders adopted while the node is HALTED, and read them
        back (`Ledger.kill_adopted`): the kill swept before they were known (a market's
        first read awaiting the venue when it landed, or another program's order opened
        after it). Runs as the call that adopted them ends (`_sweeping`); never raises
        but for the task's own cancellation."""
        try:
            for symbol in self.ledger.kill_adopted():
                swept = await self._cancel_symbol(symbol)
                await self._read_back(symbol)
                _log_adopted_swept(self.guard.node, symbol, swept)
                self._retry_kill([] if swept else [symbol])
        except Exception:
            log.exception("KILL_CANCEL node=%s: orders adopted during the kill", self.guard.node)


_ENDED_LISTS = (
    ("fetchClosedOrders", "fetch_closed_orders"),
    ("fetchCanceledAndClosedOrders", "fetch_canceled_and_closed_orders"),
    ("fetchOrders", "fetch_orders"),
    ("fetchCanceledOrders", "fetch_canceled_orders"),
)
"""The calls that list a market's ended orders, in the order `_read_order` asks them."""


def _order_reads(ex: Any) -> list[str]:
    """The calls `_read_order` asks, in order: `fetch_order` if the venue has it, else its
    open orders, then each list of ended orders it offers."""
    has = getattr(ex, "has", None) or {}
    if has.get("fetchOrder"):
        return ["fetch_order"]
    lists = [("fetchOpenOrders", "fetch_open_orders"), *_ENDED_LISTS]
    return [call for capability, call in lists if has.get(capability)]


def _listed(tracked: _Tracked, answer: Any) -> dict[str, Any] | None:
    """`tracked` in a list of orders (by venue id, in its market), else None."""
    if not isinstance(answer, list):
        raise VenueAnswerError(
            f"order lists: the answer is {type(answer).__name__}, not a list of orders"
        )
    for o in answer:
        if isinstance(o, dict) and str(o.get("id")) == str(tracked.exchange_id):
            return o
    return None


def _read_order(ex: Any, tracked: _Tracked) -> dict[str, Any] | None:
    """`tracked`'s state at the venue: `fetch_order`; on a venue without it
    (`has['fetchOrder']` false) the order as listed open, else in the first list of ended
    orders it offers that holds it. None: not open there and no list holds its end."""
    for call in _order_reads(ex):
        answer = getattr(ex, call)(*_read_args(call, tracked))
        if call == "fetch_order":
            return answer  # type: ignore[no-any-return]
        found = _listed(tracked, answer)
        if found is not None:
            return found
    return None


async def _aread_order(ex: Any, tracked: _Tracked) -> dict[str, Any] | None:
    """`_read_order` on an async exchange."""
    for call in _order_reads(ex):
        answer = await getattr(ex, call)(*_read_args(call, tracked))
        if call == "fetch_order":
            return answer  # type: ignore[no-any-return]
        found = _listed(tracked, answer)
        if found is not None:
            return found
    return None


def _read_args(call: str, tracked: _Tracked) -> tuple[Any, ...]:
    return (tracked.exchange_id, tracked.symbol) if call == "fetch_order" else (tracked.symbol,)


def _found(tracked: _Tracked, answer: dict[str, Any] | None) -> dict[str, Any]:
    """A read-back's answer, or `OrderNotFound` naming the order if the venue holds none."""
    if answer is None:
        raise ccxt.OrderNotFound(
            f"order {tracked.gid} (venue id {tracked.exchange_id}, {tracked.symbol}) is no "
            "longer open at the venue, and its end cannot be read (no fetchOrder, and no list "
            "of ended orders holds it)"
        )
    return answer


def _settle_failed(node: str, tracked: _Tracked, exc: BaseException) -> None:
    log.warning(
        "SETTLE_READ_FAILED node=%s order=%s venue_id=%s: ended without a fill count, still "
        "counted working until an update says how much filled: %r",
        node,
        tracked.gid,
        tracked.exchange_id,
        exc,
    )


def _kill_retried(node: str, attempt: int, left: set[str]) -> bool:
    """Report one retry of a kill's sweep; whether nothing is left to try again."""
    if not left:
        log.warning("KILL_CANCEL_DONE node=%s: every market swept, after %d retries", node, attempt)
        return True
    log.error(
        "KILL_CANCEL_RETRY node=%s retry=%d: orders may still rest in %s; trying again",
        node,
        attempt,
        ", ".join(sorted(left)),
    )
    return False


def _log_adopted_swept(node: str, symbol: str, swept: bool) -> None:
    if swept:
        log.warning(
            "KILL_CANCEL node=%s symbol=%s swept again: orders adopted there during the kill",
            node,
            symbol,
        )
    else:
        log.error(
            "KILL_CANCEL_FAILED node=%s symbol=%s: orders adopted there during the kill are "
            "still open",
            node,
            symbol,
        )


def _open_ids(answer: Any) -> list[Any]:
    """The venue ids in a kill's `fetch_open_orders` answer. An entry that names no order is
    logged and skipped: one unreadable entry never spares the orders after it."""
    if not isinstance(answer, list):
        raise VenueAnswerError(
            f"fetch_open_orders: the answer is {type(answer).__name__}, not a list of orders"
        )
    ids = []
    for i, o in enumerate(answer):
        if _unreadable(o, "an order", _FIELDS) is None and o.get("id") is not None:
            ids.append(o["id"])
        else:
            log.error("KILL_CANCEL_SKIPPED fetch_open_orders entry %d names no order: %.80r", i, o)
    return ids


def _cancel_failed(symbol: str, xid: Any, exc: BaseException) -> int:
    """One order of a kill's one-by-one sweep whose cancel raised: 0 if the venue no longer
    holds it (`OrderNotFound`: it filled or ended meanwhile), else 1, logged. The sweep goes
    on to the orders after it either way: one order's failure never spares the others."""
    if isinstance(exc, ccxt.OrderNotFound):
        return 0
    log.error("KILL_CANCEL_FAILED symbol=%s order=%.40s: %r", symbol, xid, exc)
    return 1


def _all_cancelled(symbol: str, left: int) -> None:
    """Raises if `left` orders of `symbol`'s one-by-one sweep were not cancelled, so the kill
    lists the market's open orders again and tries those once more."""
    if left:
        raise ccxt.ExchangeError(f"{left} open order(s) of {symbol} not cancelled")


def _xkey(symbol: str, xid: Any) -> str:
    """An order's key among the venue's: its unified symbol and the venue's id in it."""
    return f"{symbol}\x00{xid}"


def _check_params(params: dict[str, Any]) -> None:
    """Refuses `params` that could change what is sent from what the Guard checked."""
    for key, value in params.items():
        rule = _PARAMS.get(key)
        if rule is None:
            raise UnitError(
                f"params.{key}: not checked by the Guard and ccxt may send it in place of a "
                f"checked field; allowed: {', '.join(_PARAMS)}"
            )
        if not rule(value):
            raise UnitError(f"params.{key}: {value!r} is not a valid value")


def _num(checked: Decimal | None, given: Any) -> Any:
    """The price to hand ccxt: the checked limit price, else what the caller gave."""
    return float(checked) if checked is not None else given


_BATCH_KEYS = frozenset({"symbol", "type", "side", "amount", "price", "params"})
_BATCH_NEEDS = ("symbol", "type", "side", "amount")


def _batch_symbols(orders: Any) -> list[Any]:
    """The markets a batch names (its malformed entries are `_prepare_batch`'s to refuse)."""
    if not isinstance(orders, list):
        return []
    return [o.get("symbol") for o in orders if isinstance(o, dict)]


def _prepare_batch(
    ledger: Ledger, orders: list[dict[str, Any]], params: dict[str, Any]
) -> tuple[list[_Tracked], list[dict[str, Any]]]:
    prepared: list[_Tracked] = []
    requests: list[dict[str, Any]] = []
    try:
        try:
            _check_params(params)  # the batch's own params reach every order's request
            if not isinstance(orders, list):
                raise UnitError(f"orders: must be a list, got {type(orders).__name__}")
            for i, o in enumerate(orders):
                if not isinstance(o, dict):
                    raise UnitError(f"orders[{i}]: must be a dict, got {type(o).__name__}")
                if extra := sorted(set(o) - _BATCH_KEYS):
                    raise UnitError(f"orders[{i}].{extra[0]}: not a field an order may carry")
                if missing := [k for k in _BATCH_NEEDS if k not in o]:
                    raise UnitError(f"orders[{i}].{missing[0]}: missing")
                if not isinstance(o.get("params") or {}, dict):
                    raise UnitError(f"orders[{i}].params: must be a dict")
        except UnitError as exc:
            d = Decision(False, RejectReason.INVALID_ORDER, str(exc))
            ledger.record_block("batch", d)
            raise GuardRefused(d) from None
        for o in orders:
            params = dict(o.get("params") or {})
            tracked, amount_d, price_d = ledger.prepare(
                o["symbol"], o["type"], o["side"], o["amount"], o.get("price"), params
            )
            prepared.append(tracked)
            requests.append(
                o | {"symbol": tracked.symbol, "amount": float(amount_d),
                     "price": _num(price_d, o.get("price")), "params": params}
            )  # fmt: skip
    except BaseException:  # a refusal, or anything else before sending
        for tracked in prepared:  # never sent: give back what the Guard reserved (no cancel)
            ledger._finish(tracked, why="batch refused", end=ledger.guard.on_reject)
        raise
    return prepared, requests


def _batch_failed(ledger: Ledger, prepared: list[_Tracked], exc: BaseException) -> None:
    """A batch call that raised. A venue error refuses a one-order batch; with more, ccxt
    raises for the whole call when the venue refused any one entry (Kraken's
    AddOrderBatch answers each entry, and ccxt throws on the first error) while the
    others were placed: so every order stays working and in doubt, unless the error
    was raised before anything was sent (`NotSupported`, `ArgumentsRequired`)."""
    local = isinstance(exc, ccxt.NotSupported | ccxt.ArgumentsRequired)
    if len(prepared) > 1 and _refused(exc) and not local:
        exc = AdapterError(f"a batch answered with an error; this order may be live: {exc}")
    for tracked in prepared:
        ledger.failed(tracked, exc)


def _placed_batch(ledger: Ledger, prepared: list[_Tracked], result: Any) -> None:
    """Book a batch's answer, entry by entry. An entry the venue refused (ccxt marks it
    `rejected`, or it carries no order id) ends as a reject, not a cancel; an order the
    answer does not account for (fewer entries than sent, or one that is not an order)
    may be live at the venue, so it stays working and in doubt."""
    entries = result if isinstance(result, list) else []
    for i, tracked in enumerate(prepared):
        order: Any = entries[i] if i < len(entries) else None
        why = _unreadable(order, "an order", _FIELDS) if i < len(entries) else "missing"
        if why is not None:
            ledger.failed(tracked, VenueAnswerError(f"create_orders: entry {i} is {why}"))
        elif order.get("status") == "rejected" or order.get("id") is None:
            ledger._finish(tracked, why="batch entry rejected", end=ledger.guard.on_reject)
        else:
            ledger.placed(tracked, order)
    if not isinstance(result, list):
        raise VenueAnswerError(
            f"create_orders: the answer is {type(result).__name__}, not a list of orders; "
            "every order of the batch is in doubt"
        )


def _check_exchange(exchange: Any) -> None:
    """Raises `AdapterError` unless `exchange` is a ccxt exchange object, sync or async: not
    None, a name, or the class itself (`ccxt.binance` for `ccxt.binance()`), which would
    pass here and fail at the first order with a traceback from inside ccxt."""
    from ccxt.async_support.base.exchange import Exchange as AsyncExchange

    if not isinstance(exchange, ccxt.Exchange | AsyncExchange):
        what = (
            f"the class {exchange.__name__}, not an instance (call it: {exchange.__name__}(...))"
            if isinstance(exchange, type)
            else type(exchange).__name__
        )
        raise AdapterError(f"exchange: must be a ccxt exchange object, got {what}")


def _check_config(strategy: Any) -> None:
    """Raises `AdapterError` naming a strategy name no order could carry (every order would
    be refused, the first perhaps as a start that cannot be read); the other settings are
    `check_settings`'."""
    problem = order_problem("x", strategy, "x", Side.BUY, 1, None)
    if problem is not None and problem[0] == "strategy":
        raise AdapterError(f"strategy: {problem[1]} (got {strategy!r:.80})")
    if strategy != strategy.strip() or not strategy.isprintable():
        raise AdapterError(
            f"strategy: must not start or end with whitespace or contain control characters "
            f"(got {strategy!r:.80})"
        )


def guard(
    exchange: Any,
    *,
    limits: Limits | str | Path,
    strategy: str = "ccxt",
    node: str | None = None,
    control_plane: ControlPlaneSpec | None = None,
    key: str | Path | None = None,
    anchor: str | Path | None = None,
    clock: Clock | None = None,
    recorder: str | Path | None = None,
    policy: LeasePolicy | None = None,
    metrics_port: int | None = None,
) -> GuardedExchange | AsyncGuardedExchange:
    """Wrap a ccxt exchange with a knightwatch Guard; sync in, sync out; async in, async out.

    Without `control_plane` the Guard is armed at once. With one (and the node's
    enrolled `key` and the fleet's trust `anchor` files) call `await ex.join()`
    on an async exchange, `ex.join()` on a sync one (its node runtime then runs
    on a loop thread of its own); until then orders are refused.
    """
    _check_exchange(exchange)
    _check_config(strategy)
    check_settings(
        node=node,
        clock=clock,
        recorder=recorder,
        policy=policy,
        control_plane=control_plane,
        key=key,
        anchor=anchor,
        metrics_port=metrics_port,
    )
    lim = limits_of(limits)
    node_id = node if node is not None else f"ccxt-{exchange.id}"
    clk = clock if clock is not None else SystemClock()
    is_async = asyncio.iscoroutinefunction(getattr(exchange, "create_order", None))
    if control_plane is None:
        g, _ = build_guard(lim, node=node_id, clock=clk, recorder=recorder, ship=False)
        g.arm(f"ccxt:{node_id}")
        if is_async:
            return AsyncGuardedExchange(exchange, g, strategy=strategy)
        return GuardedExchange(exchange, g, strategy=strategy)
    signer, trust = identity_of(node_id, key, anchor)
    pol = policy if policy is not None else LeasePolicy()
    g, shipper = build_guard(
        with_lease(lim, pol),
        node=node_id,
        clock=clk,
        recorder=recorder,
        ship=True,
        locked=not is_async,  # the sync program's thread and the runtime's loop thread
    )
    member = FleetMember(
        g,
        plane_of(control_plane, node_id, signer),
        clock=clk,
        policy=pol,
        shipper=shipper,
        signer=signer,
        trust=trust,
        metrics_port=metrics_port,
        owns_plane=not hasattr(control_plane, "connect"),
    )
    if is_async:
        return AsyncGuardedExchange(exchange, g, strategy=strategy, member=member)
    return GuardedExchange(exchange, g, strategy=strategy, member=member)


__all__ = [
    "AsyncGuardedExchange",
    "GuardRefused",
    "GuardedExchange",
    "Ledger",
    "VenueAnswerError",
    "guard",
]
