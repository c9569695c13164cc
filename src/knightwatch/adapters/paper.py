"""Paper venues: Binance and Kraken REST dialects over real HTTP on 127.0.0.1.

They let a ccxt program run end to end with no network and no account: a
drill, an example, a test. ccxt runs unchanged against them: it builds and
signs each request, rounds to the market's precision, sends it over its own
HTTP stack (requests for the sync exchange, aiohttp for the async one) and
parses the answer; only the base URL points here (`point`). Each paper venue
speaks its venue's REST dialect for the calls the adapter makes (markets,
tickers, orders, amends, cancels, open orders, trades), checks every signature the
way the venue does (a request ccxt did not sign correctly is refused and
counted), and keeps a tiny book: market orders and marketable limits fill at
once at the last price, others rest until `fill`.

Faults on the next order placement, for drills: `reject` (the venue's own
error answer), `http_503`, `drop_after_accept` (the order is placed, then
the connection closes with no answer: the in-doubt case), `http_524_after_accept`
(the order is placed, then a CDN in front of the venue answers its 524 "a
timeout occurred" page: an HTTP status ccxt has no error class for),
`cut_after_accept` (the order is placed, its answer breaks off halfway) and, on
the paper Binance, `empty_answer` (the order is placed, the answer names no order).

The keys below are the ones the paper venues accept; they are not secrets.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from aiohttp import web

BINANCE_KEY = "k" * 64
BINANCE_SECRET = "s" * 64
WS_TOKEN = "paper-ws-token"
KRAKEN_KEY = "kraken-test-key"
KRAKEN_SECRET = base64.b64encode(b"kraken test secret, 32 bytes ...").decode()


class Drop(Exception):
    """Close the connection without an answer."""


@dataclass(frozen=True)
class Raw:
    """An answer that is not the venue's JSON (a CDN's error page), or one that breaks off:
    `body` sent as is, as `content_type`; with `cut`, the connection closes after that many
    bytes of it (the headers announce all of it)."""

    body: bytes
    content_type: str = "text/html"
    cut: int | None = None


GATEWAY_TIMEOUT = Raw(
    b"<!DOCTYPE html><html><head><title>524: A timeout occurred</title></head>"
    b"<body>The origin web server timed out responding to this request.</body></html>"
)
"""Cloudflare's page for a request it passed on whose answer never came back in time."""


@dataclass
class VenueOrder:
    id: str
    client_id: str
    symbol: str  # the venue's own symbol
    side: str  # "buy" / "sell"
    type: str  # "limit" / "market"
    amount: Decimal
    price: Decimal | None
    filled: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    status: str = "open"  # open / closed / canceled
    ts: int = field(default_factory=lambda: int(time.time() * 1000))


@dataclass
class VenueTrade:
    id: str
    order_id: str
    symbol: str
    side: str
    amount: Decimal
    price: Decimal
    ts: int = field(default_factory=lambda: int(time.time() * 1000))


class PaperVenue:
    """The HTTP server, the book and the fault switches; subclasses speak a dialect."""

    def __init__(self, last_price: str) -> None:
        self.last = Decimal(last_price)
        self.orders: dict[str, VenueOrder] = {}
        self.trades: list[VenueTrade] = []
        self.requests: list[tuple[str, str]] = []
        self.fault: str | None = None
        self.hold: threading.Event | None = None
        """While set to an Event not yet set, a new order waits for it before the book sees
        it: an order on its way to the venue (what a kill's sweep can overtake)."""
        self.holding = 0
        """New orders that have waited (or wait now) at `hold`."""
        self.bad_signatures = 0
        self.holdings: dict[str, Decimal] = {}
        """The account's balance by asset (the venue's asset id): what it held at the start,
        plus what its fills bought, less what they sold."""
        self.listeners: list[Callable[[str, VenueOrder, VenueTrade | None], None]] = []
        """Told of every book change: ("new" | "trade" | "canceled", order, trade)."""
        self._n = 0
        self._lock = threading.Lock()
        venue = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

            def log_message(self, *args: Any) -> None:
                return None

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                hold = venue.hold
                if hold is not None and venue.places_order(method, self.path):
                    venue.holding += 1
                    hold.wait(30)
                try:
                    with venue._lock:
                        status, payload = venue.handle(method, self.path, dict(self.headers), body)
                except Drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                raw = payload if isinstance(payload, Raw) else None
                data = raw.body if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header(
                    "Content-Type", raw.content_type if raw is not None else "application/json"
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if raw is not None and raw.cut is not None:
                    self.wfile.write(data[: raw.cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base(self) -> str:
        port = self.server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def __enter__(self) -> PaperVenue:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def point(self, exchange: Any) -> Any:
        """Send every API URL of a ccxt exchange here, keeping its path."""
        api = exchange.urls["api"]
        for key, url in list(api.items()):
            if isinstance(url, str) and url.startswith("https://"):
                path = urlsplit(url.replace("{hostname}", "h")).path
                api[key] = self.base + path
        return exchange

    def handle(self, method: str, path: str, headers: dict[str, str], body: str) -> tuple[int, Any]:
        raise NotImplementedError

    # --- the book -------------------------------------------------------------
    def next_id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def _emit(self, kind: str, o: VenueOrder, t: VenueTrade | None = None) -> None:
        for listener in self.listeners:
            listener(kind, o, t)

    def place(self, o: VenueOrder) -> None:
        self.orders[o.id] = o
        self._emit("new", o)
        marketable = o.price is None or (
            o.price >= self.last if o.side == "buy" else o.price <= self.last
        )
        if marketable:
            self.fill(o.id, o.amount - o.filled, lock=False)

    def fill(self, order_id: str, amount: Decimal | str, *, lock: bool = True) -> None:
        """Execute `amount` of a resting order at its price (or the last price)."""
        if lock:
            with self._lock:
                self.fill(order_id, amount, lock=False)
            return
        o = self.orders[order_id]
        qty = Decimal(amount)
        px = o.price if o.price is not None else self.last
        o.filled += qty
        o.cost += qty * px
        base = self.BASES.get(o.symbol)
        if base is not None:
            held = self.holdings.get(base, Decimal(0))
            self.holdings[base] = held + qty if o.side == "buy" else held - qty
        if o.filled >= o.amount:
            o.status = "closed"
        trade = VenueTrade(self.next_id("T"), o.id, o.symbol, o.side, qty, px)
        self.trades.append(trade)
        self._emit("trade", o, trade)

    def cancel(self, order_id: str) -> VenueOrder | None:
        o = self.orders.get(order_id)
        if o is None or o.status != "open":
            return None
        o.status = "canceled"
        self._emit("canceled", o)
        return o

    NEW_ORDER = ""
    """The path of a new-order request in this venue's dialect (`hold`)."""
    BASES: ClassVar[dict[str, str]] = {}
    """Each market's base asset (the venue's ids), whose balance its fills move."""

    def places_order(self, method: str, path: str) -> bool:
        return method == "POST" and urlsplit(path).path == self.NEW_ORDER

    def take_fault(self) -> str | None:
        fault, self.fault = self.fault, None
        return fault

    @staticmethod
    def accepted(fault: str | None, status: int, answer: Any) -> tuple[int, Any]:
        """The answer to an order the book has taken, as `fault` lets it reach the caller:
        none (`drop_after_accept`), a CDN's timeout page, broken off halfway, or whole."""
        if fault == "drop_after_accept":
            raise Drop
        if fault == "http_524_after_accept":
            return 524, GATEWAY_TIMEOUT
        if fault == "cut_after_accept":
            data = json.dumps(answer).encode()
            return status, Raw(data, "application/json", cut=len(data) // 2)
        return status, answer


# ----------------------------------------------------------------------------- Binance


def _binance_filters(tick: str, step: str) -> list[dict[str, str]]:
    return [
        {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000", "tickSize": tick},
        {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000", "stepSize": step},
    ]


BINANCE_INFO = {
    "timezone": "UTC",
    "serverTime": 1_700_000_000_000,
    "rateLimits": [],
    "symbols": [
        {
            "symbol": sym,
            "status": "TRADING",
            "baseAsset": base,
            "quoteAsset": "USDT",
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "orderTypes": ["LIMIT", "MARKET"],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "permissions": ["SPOT"],
            "permissionSets": [["SPOT"]],
            "filters": _binance_filters(tick, step),
        }
        for sym, base, tick, step in (
            ("BTCUSDT", "BTC", "0.01", "0.00001"),
            ("ETHUSDT", "ETH", "0.01", "0.0001"),
        )
    ],
}
_BINANCE_STATUS = {
    "open": "NEW",
    "closed": "FILLED",
    "canceled": "CANCELED",
    "expired": "EXPIRED",
}


class PaperBinance(PaperVenue):
    NEW_ORDER = "/api/v3/order"
    BASES: ClassVar[dict[str, str]] = {"BTCUSDT": "BTC", "ETHUSDT": "ETH"}

    """Binance spot REST v3: query-string HMAC-SHA256 signatures, X-MBX-APIKEY."""

    def handle(self, method: str, path: str, headers: dict[str, str], body: str) -> tuple[int, Any]:
        parts = urlsplit(path)
        route = parts.path
        self.requests.append((method, route))
        if route == "/api/v3/exchangeInfo":
            return 200, BINANCE_INFO
        if route == "/api/v3/ticker/24hr":
            q = dict(parse_qsl(parts.query))
            return 200, self._ticker(q["symbol"])
        if route.startswith("/sapi/"):
            return 200, []
        raw = body if method == "POST" else parts.query
        q = dict(parse_qsl(raw, keep_blank_values=True))
        signed, _, signature = raw.rpartition("&signature=")
        want = hmac.new(BINANCE_SECRET.encode(), signed.encode(), hashlib.sha256).hexdigest()
        if headers.get("X-MBX-APIKEY") != BINANCE_KEY or signature != want:
            self.bad_signatures += 1
            return 401, {"code": -1022, "msg": "Signature for this request is not valid."}
        if route == "/api/v3/order" and method == "POST":
            return self._new_order(q)
        if route == "/api/v3/order/cancelReplace" and method == "POST":
            return self._cancel_replace(q)
        if route == "/api/v3/order" and method == "GET":
            o = self._find(q)
            return (
                (200, self._order(o))
                if o
                else (400, {"code": -2013, "msg": "Order does not exist."})
            )
        if route == "/api/v3/order" and method == "DELETE":
            o = self._find(q)
            if o is None or self.cancel(o.id) is None:
                return 400, {"code": -2011, "msg": "Unknown order sent."}
            return 200, self._order(o)
        if route == "/api/v3/openOrders" and method == "DELETE":
            done = [
                self.cancel(o.id) for o in list(self.orders.values()) if o.symbol == q["symbol"]
            ]
            if not any(done):  # as Binance answers a symbol with nothing open (OrderNotFound)
                return 400, {"code": -2011, "msg": "Unknown order sent."}
            return 200, [self._order(o) for o in done if o is not None]
        if route == "/api/v3/openOrders":
            return 200, [
                self._order(o)
                for o in self.orders.values()
                if o.status == "open" and o.symbol == q.get("symbol", o.symbol)
            ]
        if route == "/api/v3/allOrders":
            return 200, [self._order(o) for o in self.orders.values() if o.symbol == q["symbol"]]
        if route == "/api/v3/myTrades":
            return 200, [self._trade(t) for t in self.trades if t.symbol == q["symbol"]]
        if route == "/api/v3/account":
            return 200, {
                "accountType": "SPOT",
                "updateTime": 1_700_000_000_000,
                "balances": [
                    {"asset": a, "free": str(v), "locked": "0"} for a, v in self.holdings.items()
                ],
            }
        return 404, {"code": -1, "msg": f"paper binance: no route {method} {route}"}

    def _ticker(self, symbol: str) -> dict[str, Any]:
        last = str(self.last)
        return {
            "symbol": symbol,
            "lastPrice": last,
            "bidPrice": last,
            "askPrice": last,
            "openPrice": last,
            "highPrice": last,
            "lowPrice": last,
            "volume": "1",
            "quoteVolume": last,
            "openTime": 0,
            "closeTime": int(time.time() * 1000),
        }

    def _new_order(self, q: dict[str, str]) -> tuple[int, Any]:
        fault = self.take_fault()
        if fault == "reject":
            return 400, {
                "code": -2010,
                "msg": "Account has insufficient balance for requested action.",
            }
        if fault == "http_503":
            return 503, {"code": -1001, "msg": "Internal error; unable to process your request."}
        o = VenueOrder(
            id=self.next_id(""),
            client_id=q.get("newClientOrderId", ""),
            symbol=q["symbol"],
            side=q["side"].lower(),
            type=q["type"].lower(),
            amount=Decimal(q["quantity"]),
            price=Decimal(q["price"]) if "price" in q else None,
        )
        self.place(o)
        if fault == "empty_answer":  # placed, but the answer names no order
            return 200, {}
        return self.accepted(fault, 200, self._order(o) | {"fills": []})

    def _cancel_replace(self, q: dict[str, str]) -> tuple[int, Any]:
        """Cancel an open order and place its replacement (cancelReplaceMode STOP_ON_FAILURE)."""
        if self.take_fault() == "reject":
            return 400, {"code": -2010, "msg": "Account has insufficient balance."}
        old = self.orders.get(q.get("cancelOrderId", ""))
        if old is None or self.cancel(old.id) is None:
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        new = VenueOrder(
            id=self.next_id(""),
            client_id=q.get("newClientOrderId", ""),
            symbol=q["symbol"],
            side=q["side"].lower(),
            type=q["type"].lower(),
            amount=Decimal(q["quantity"]),
            price=Decimal(q["price"]) if "price" in q else None,
        )
        self.place(new)
        return 200, {
            "cancelResult": "SUCCESS",
            "newOrderResult": "SUCCESS",
            "cancelResponse": self._order(old),
            "newOrderResponse": self._order(new),
        }

    def _find(self, q: dict[str, str]) -> VenueOrder | None:
        if "orderId" in q:
            return self.orders.get(q["orderId"])
        cid = q.get("origClientOrderId")
        return next((o for o in self.orders.values() if o.client_id == cid), None)

    @staticmethod
    def _order(o: VenueOrder) -> dict[str, Any]:
        status = _BINANCE_STATUS[o.status]
        if o.status == "open" and o.filled:
            status = "PARTIALLY_FILLED"
        return {
            "symbol": o.symbol,
            "orderId": int(o.id),
            "clientOrderId": o.client_id,
            "transactTime": o.ts,
            "time": o.ts,
            "updateTime": o.ts,
            "price": str(o.price or 0),
            "origQty": str(o.amount),
            "executedQty": str(o.filled),
            "cummulativeQuoteQty": str(o.cost),
            "status": status,
            "timeInForce": "GTC",
            "type": o.type.upper(),
            "side": o.side.upper(),
        }

    @staticmethod
    def _trade(t: VenueTrade) -> dict[str, Any]:
        return {
            "symbol": t.symbol,
            "id": int(t.id[1:]),
            "orderId": int(t.order_id),
            "price": str(t.price),
            "qty": str(t.amount),
            "quoteQty": str(t.amount * t.price),
            "commission": "0",
            "commissionAsset": "USDT",
            "time": t.ts,
            "isBuyer": t.side == "buy",
            "isMaker": False,
            "isBestMatch": True,
        }


# ----------------------------------------------------------------------------- Kraken

KRAKEN_PAIRS = {
    "XXBTZUSD": {
        "altname": "XBTUSD",
        "wsname": "XBT/USD",
        "aclass_base": "currency",
        "base": "XXBT",
        "aclass_quote": "currency",
        "quote": "ZUSD",
        "lot": "unit",
        "cost_decimals": 5,
        "pair_decimals": 1,
        "lot_decimals": 8,
        "lot_multiplier": 1,
        "leverage_buy": [],
        "leverage_sell": [],
        "fees": [[0, 0.26]],
        "fees_maker": [[0, 0.16]],
        "fee_volume_currency": "ZUSD",
        "margin_call": 80,
        "margin_stop": 40,
        "ordermin": "0.0001",
        "costmin": "0.5",
        "tick_size": "0.1",
        "status": "online",
    }
}


def _descr(o: VenueOrder) -> dict[str, str]:
    """Kraken's description of a placed order."""
    return {"order": f"{o.side} {o.amount} XBTUSD @ {o.type} {o.price or ''}"}


class PaperKraken(PaperVenue):
    NEW_ORDER = "/0/private/AddOrder"
    BASES: ClassVar[dict[str, str]] = {"XXBTZUSD": "XXBT"}

    """Kraken: form bodies with a nonce; API-Sign = HMAC-SHA512(path + SHA256(nonce+body))."""

    def handle(self, method: str, path: str, headers: dict[str, str], body: str) -> tuple[int, Any]:
        parts = urlsplit(path)
        route = parts.path
        self.requests.append((method, route))
        if route == "/0/public/AssetPairs":
            return 200, {"error": [], "result": KRAKEN_PAIRS}
        if route == "/0/public/Assets":
            return 200, {"error": [], "result": {}}
        if route == "/0/public/Ticker":
            last = str(self.last)
            tick: dict[str, Any] = {"a": [last, "1", "1"], "b": [last, "1", "1"]}
            tick |= {"c": [last, "0.1"], "v": ["1", "1"], "p": [last, last], "t": [1, 1]}
            tick |= {"l": [last, last], "h": [last, last], "o": last}
            return 200, {"error": [], "result": {"XXBTZUSD": tick}}
        if not route.startswith("/0/private/"):
            return 404, {"error": [f"EGeneral:Unknown route {route}"]}
        if headers.get("Content-Type") == "application/json":  # AddOrderBatch's body
            q = json.loads(body)
        else:
            q = dict(parse_qsl(body, keep_blank_values=True))
        digest = hashlib.sha256((str(q.get("nonce", "")) + body).encode()).digest()
        want = hmac.new(
            base64.b64decode(KRAKEN_SECRET), route.encode() + digest, hashlib.sha512
        ).digest()
        if (
            headers.get("API-Key") != KRAKEN_KEY
            or headers.get("API-Sign") != base64.b64encode(want).decode()
        ):
            self.bad_signatures += 1
            return 200, {"error": ["EAPI:Invalid signature"]}
        call = route.rsplit("/", 1)[1]
        if call == "GetWebSocketsToken":
            return 200, {"error": [], "result": {"token": WS_TOKEN, "expires": 900}}
        if call == "AddOrder":
            return self._add(q)
        if call == "AddOrderBatch":
            return self._add_batch(q)
        if call == "QueryOrders":
            found = {
                i: self._order(self.orders[i]) for i in q["txid"].split(",") if i in self.orders
            }
            return 200, {"error": [], "result": found}
        if call == "OpenOrders":
            live = {o.id: self._order(o) for o in self.orders.values() if o.status == "open"}
            return 200, {"error": [], "result": {"open": live}}
        if call == "AmendOrder":
            return self._amend(q)
        if call == "CancelOrder":
            done = self.cancel(q["txid"])
            if done is None:
                return 200, {"error": ["EOrder:Unknown order"]}
            return 200, {"error": [], "result": {"count": 1}}
        if call == "CancelAll":
            n = sum(self.cancel(o.id) is not None for o in list(self.orders.values()))
            return 200, {"error": [], "result": {"count": n}}
        if call == "BalanceEx":
            held = {a: {"balance": str(v), "hold_trade": "0"} for a, v in self.holdings.items()}
            return 200, {"error": [], "result": held}
        if call == "TradesHistory":
            trades = {t.id: self._trade(t) for t in self.trades}
            return 200, {"error": [], "result": {"trades": trades, "count": len(trades)}}
        return 200, {"error": [f"EGeneral:Unknown method {call}"]}

    def _add(self, q: dict[str, str]) -> tuple[int, Any]:
        fault = self.take_fault()
        if fault == "reject":
            return 200, {"error": ["EOrder:Insufficient funds"]}
        if fault == "http_503":
            return 503, {"error": ["EService:Unavailable"]}
        o = self._place(q)
        return self.accepted(
            fault, 200, {"error": [], "result": {"descr": _descr(o), "txid": [o.id]}}
        )

    def _place(self, q: dict[str, Any]) -> VenueOrder:
        """Place one order as AddOrder (or one entry of AddOrderBatch) names it."""
        o = VenueOrder(
            id=self.next_id("OKW-"),
            client_id=str(q.get("cl_ord_id", "")),
            symbol="XXBTZUSD",
            side=q["type"],
            type=q["ordertype"],
            amount=Decimal(q["volume"]),
            price=Decimal(q["price"]) if "price" in q else None,
        )
        self.place(o)
        return o

    def _add_batch(self, q: dict[str, Any]) -> tuple[int, Any]:
        """Several orders of one pair. Faults: `batch_reject_last` refuses the last entry
        (Kraken answers it with an error in place of a txid); `batch_drop_last` places
        every order and leaves the last out of the answer."""
        fault = self.take_fault()
        answers: list[dict[str, Any]] = []
        for i, r in enumerate(q["orders"]):
            if fault == "batch_reject_last" and i == len(q["orders"]) - 1:
                answers.append({"error": "EOrder:Insufficient funds"})
                continue
            o = self._place(r)
            answers.append({"txid": o.id, "descr": _descr(o)})
        if fault == "batch_drop_last":
            answers.pop()
        return 200, {"error": [], "result": {"orders": answers}}

    def _amend(self, q: dict[str, str]) -> tuple[int, Any]:
        """Change an open order in place: `order_qty` is the new total, `limit_price` the price."""
        if self.take_fault() == "reject":
            return 200, {"error": ["EOrder:Insufficient funds"]}
        o = self.orders.get(q.get("txid", ""))
        if o is None or o.status != "open":
            return 200, {"error": ["EOrder:Unknown order"]}
        if "order_qty" in q:
            o.amount = Decimal(q["order_qty"])
        if "limit_price" in q:
            o.price = Decimal(q["limit_price"])
        o.status = "open"
        self.orders.pop(o.id)
        self.place(o)
        return 200, {"error": [], "result": {"amend_id": self.next_id("AMEND-")}}

    def _order(self, o: VenueOrder) -> dict[str, Any]:
        avg = o.cost / o.filled if o.filled else Decimal(0)
        return {
            "refid": None,
            "userref": 0,
            "cl_ord_id": o.client_id or None,
            "status": o.status,
            "opentm": o.ts / 1000,
            "starttm": 0,
            "expiretm": 0,
            "descr": {
                "pair": "XBTUSD",
                "type": o.side,
                "ordertype": o.type,
                "price": str(o.price or 0),
                "price2": "0",
                "leverage": "none",
                "order": f"{o.side} {o.amount} XBTUSD @ {o.type} {o.price or ''}",
                "close": "",
            },
            "vol": str(o.amount),
            "vol_exec": str(o.filled),
            "cost": str(o.cost),
            "fee": "0",
            "price": str(avg),
            "stopprice": "0",
            "limitprice": "0",
            "misc": "",
            "oflags": "fciq",
            "trades": [t.id for t in self.trades if t.order_id == o.id],
        }

    @staticmethod
    def _trade(t: VenueTrade) -> dict[str, Any]:
        return {
            "ordertxid": t.order_id,
            "postxid": "P",
            "pair": "XXBTZUSD",
            "time": t.ts / 1000,
            "type": t.side,
            "ordertype": "limit",
            "price": str(t.price),
            "cost": str(t.amount * t.price),
            "fee": "0",
            "vol": str(t.amount),
            "margin": "0",
            "misc": "",
        }


class PaperKrakenStream:
    """Kraken's WebSocket v2 `executions` channel for a `PaperKraken` book, on 127.0.0.1.

    ccxt.pro's `watch_orders` / `watch_my_trades` subscribe with the token from
    the REST `GetWebSocketsToken` call (checked here); every order placed,
    filled or cancelled in the paper book is then pushed as Kraken sends it:
    `exec_type` "new", "trade" (with the execution) and "filled" / "canceled".
    A "canceled" update carries what Kraken's does: the order id, its user
    reference, the cumulative quantity and cost filled and the reason; no symbol,
    side or order quantity (ccxt then reads `cum_qty` as the amount, no `filled`,
    and hands it only to a `watch_orders` naming no market).
    """

    def __init__(self, venue: PaperKraken) -> None:
        self.venue = venue
        self.loop = asyncio.new_event_loop()
        self.subscribers: list[web.WebSocketResponse] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> PaperKrakenStream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.venue.listeners.append(self._on_book)
        return self

    def __exit__(self, *exc: object) -> None:
        self.venue.listeners.remove(self._on_book)
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def point(self, exchange: Any) -> Any:
        """Send a ccxt.pro exchange's websocket URLs here (and its REST URLs to the venue)."""
        self.venue.point(exchange)
        ws = exchange.urls["api"].get("ws", {})
        for key, url in list(ws.items()):
            if isinstance(url, str) and url.startswith("wss://"):
                ws[key] = f"ws://127.0.0.1:{self.port}{urlsplit(url).path}"
        return exchange

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/v2", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        for ws in list(self.subscribers):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            req = json.loads(msg.data)
            params = req.get("params") or {}
            if req.get("method") == "ping":
                await ws.send_json({"method": "pong", "req_id": req.get("req_id")})
            elif req.get("method") == "subscribe" and params.get("channel") == "executions":
                ok = params.get("token") == WS_TOKEN
                await ws.send_json(
                    {
                        "method": "subscribe",
                        "success": ok,
                        "result": {"channel": "executions"},
                        "req_id": req.get("req_id"),
                    }
                    | ({} if ok else {"error": "EAPI:Invalid token"})
                )
                if ok:
                    self.subscribers.append(ws)
        if ws in self.subscribers:
            self.subscribers.remove(ws)
        return ws

    def _on_book(self, kind: str, o: VenueOrder, t: VenueTrade | None) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        order = {
            "order_id": o.id,
            "symbol": "BTC/USD",
            "side": o.side,
            "order_type": o.type,
            "order_qty": float(o.amount),
            "limit_price": float(o.price or 0),
            "cum_qty": float(o.filled),
            "cum_cost": float(o.cost),
            "avg_price": float(o.cost / o.filled) if o.filled else 0.0,
            "time_in_force": "GTC",
            "timestamp": now,
        }
        messages = []
        if kind == "trade" and t is not None:
            execution = order | {
                "exec_type": "trade",
                "exec_id": t.id,
                "last_qty": float(t.amount),
                "last_price": float(t.price),
                "cost": float(t.amount * t.price),
                "liquidity_ind": "t",
                "fees": [{"asset": "USD", "qty": 0.0}],
                "order_status": "filled" if o.status == "closed" else "partially_filled",
            }
            messages.append(execution)
            if o.status == "closed":
                messages.append(order | {"exec_type": "filled", "order_status": "filled"})
        elif kind == "canceled":
            messages.append(
                {
                    "timestamp": now,
                    "order_status": "canceled",
                    "exec_type": "canceled",
                    "order_userref": 0,
                    "order_id": o.id,
                    "cum_qty": float(o.filled),
                    "cum_cost": float(o.cost),
                    "fee_usd_equiv": 0,
                    "avg_price": order["avg_price"],
                    "cancel_reason": "User requested",
                    "reason": "User requested",
                }
            )
        else:
            messages.append(order | {"exec_type": kind, "order_status": kind})
        for data in messages:
            payload = {"channel": "executions", "type": "update", "data": [data]}
            self.loop.call_soon_threadsafe(self._broadcast, payload)

    def _broadcast(self, payload: dict[str, Any]) -> None:
        for ws in list(self.subscribers):
            self.loop.create_task(ws.send_json(payload))
