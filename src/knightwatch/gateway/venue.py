"""A FIX venue on the project's simulated market, so the gateway meets a real counterparty.

`knightwatch venue --fix` serves QuickFIX sessions on 127.0.0.1 and trades on
the simulator's square-root-impact order books (`sim/book.py`): a marketable
order takes the ladder in clips (one execution report per clip, so an order
larger than a clip fills partially, then fully), a limit order that does not
cross rests until it is cancelled, replaced, expires, or the market reaches
it. It refuses what a real venue refuses (unknown symbol, bad quantity,
price off the tick, unsupported order type, duplicate ClOrdID) with an
ExecutionReport 39=8. It answers OrderStatus and, under FIX 4.4,
OrderMassCancel and OrderMassStatus, streams MarketDataSnapshot prices, and
copies every execution to drop-copy sessions: as ExecutionReports, or (FIX 4.4,
`drop_copy_as="AE"`) as TradeCaptureReports, one per trade, bust and correction,
as many venues send them. `new_order_id_on_replace` gives a replaced order a new
OrderID, as some venues do.

An operator API (`restate`, `bust`, `correct`, `expire`, `end_of_day`,
`execute`) produces the venue-initiated reports a gateway must handle and
that no client can provoke, for tests and the drill.
"""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from knightwatch.gateway import fields as F
from knightwatch.gateway.config import acceptor_settings
from knightwatch.gateway.containment import restrict_listener
from knightwatch.gateway.engine import (
    GatewayError,
    Handler,
    application,
    fix,
    log_factory,
    settings,
    store_factory,
)
from knightwatch.sim.book import OrderBook
from knightwatch.sim.universe import SymbolSpec, Tier, generate

log = logging.getLogger(__name__)

LIVE = ("0", "1", "A", "5", "6", "E")
"""OrdStatus values of an order that can still execute."""

DEFAULT_TIERS = (
    Tier("liquid", 6, 100.0, 5_000_000, 0.015, 0.01, 2.0),
    Tier("mid", 6, 40.0, 1_000_000, 0.02, 0.02, 1.0),
)


@dataclass
class VenueOrder:
    clordid: str
    order_id: str
    session: Any
    symbol: str
    side: str
    qty: Decimal
    price: float | None
    ord_type: str
    tif: str
    security_id: str | None = None
    cum: Decimal = Decimal(0)
    notional: float = 0.0
    status: str = "0"

    @property
    def is_buy(self) -> bool:
        return self.side in ("1", "3")

    @property
    def leaves(self) -> Decimal:
        return self.qty - self.cum if self.status in LIVE else Decimal(0)

    @property
    def avg_px(self) -> float:
        return self.notional / float(self.cum) if self.cum else 0.0


@dataclass
class Execution:
    exec_id: str
    order: VenueOrder
    qty: Decimal
    price: float
    busted: bool = False


@dataclass
class VenueStats:
    """What the venue saw: a drill reports it as "what got out"."""

    orders: int = 0
    rejected: int = 0
    executions: int = 0
    cancels: int = 0
    by_session: dict[str, int] = field(default_factory=dict)


class FixVenue(Handler):
    """A QuickFIX acceptor trading on simulated books. Start with `start()`, end with `stop()`."""

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int,
        sessions: list[str],
        drop_copy: list[str] | None = None,
        comp_id: str = "VENUE",
        begin_string: str = "FIX.4.4",
        symbols: tuple[SymbolSpec, ...] | None = None,
        lots: dict[str, Decimal] | None = None,
        clip: int = 0,
        md_interval_s: float = 1.0,
        cancel_on_disconnect: bool = True,
        store: str = "file",
        reject_symbols: frozenset[str] = frozenset(),
        status_without_instrument: bool = False,
        drop_copy_as: str = F.EXECUTION_REPORT,
        new_order_id_on_replace: bool = False,
        log_messages: bool = True,
        security_ids: dict[str, str] | None = None,
        check_instrument: bool = False,
    ) -> None:
        super().__init__()
        self.check_instrument = check_instrument
        """Refuse a cancel naming another Symbol(55) or SecurityID(48) than its order's
        (unknown order), as many venues do."""
        self.security_ids = security_ids
        """The SecurityID(48) a market data snapshot names beside each Symbol: None, the
        Symbol itself (SecurityIDSource 8, an exchange symbol); else only the symbols
        mapped (SecurityIDSource 4), the others none."""
        if drop_copy_as not in (F.EXECUTION_REPORT, F.TRADE_CAPTURE_REPORT) or (
            drop_copy_as == F.TRADE_CAPTURE_REPORT and begin_string == "FIX.4.2"
        ):
            raise GatewayError(
                f"drop_copy_as: must be {F.EXECUTION_REPORT!r} or, under FIX.4.4, "
                f"{F.TRADE_CAPTURE_REPORT!r} (got {drop_copy_as!r})"
            )
        self.drop_copy_as = drop_copy_as
        self.new_order_id_on_replace = new_order_id_on_replace
        self.state_dir = state_dir
        self.port = port
        self.comp_id = comp_id
        self.begin = begin_string
        self.fix42 = begin_string == "FIX.4.2"
        self.sessions = list(sessions)
        self.drop_copy = list(drop_copy or [])
        specs = symbols if symbols is not None else generate(DEFAULT_TIERS, 7)
        self.books = {
            s.name: OrderBook(s, tick=0.01, impact_y=2.0, phi=2.0 / 3.0, resilience_s=180.0)
            for s in specs
        }
        self.lots = dict(lots or {})
        self.clip = clip
        self.md_interval_s = md_interval_s
        self.cancel_on_disconnect = cancel_on_disconnect
        self.reject_symbols = reject_symbols
        self.status_without_instrument = status_without_instrument
        """A fault (tests, drills): mass-status reports name no Symbol or SecurityID."""
        self.lock = threading.RLock()
        self.stats = VenueStats()
        self.orders: dict[tuple[str, str], VenueOrder] = {}
        """(session, ClOrdID) -> order, every ClOrdID the order ever had."""
        self.executions: dict[str, Execution] = {}
        self._ids = itertools.count(1)
        self._md: dict[str, set[str]] = {}
        """session key -> subscribed symbols."""
        self._logged_on: dict[str, Any] = {}
        self._stop = threading.Event()
        self._md_thread: threading.Thread | None = None
        text = acceptor_settings(
            state_dir,
            comp_id=comp_id,
            port=port,
            clients=[(s, ("127.0.0.1",)) for s in self.sessions + self.drop_copy],
            begin_string=begin_string,
            store=store,
        )
        self._settings = settings(text)
        self._app = application(self)
        self._acceptor: Any = fix().ThreadedSocketAcceptor(
            self._app,
            store_factory(store, self._settings),
            self._settings,
            log_factory(log_messages, self._settings),
        )

    # --- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._acceptor.start()
        try:
            restrict_listener(self.port, ["127.0.0.1"])
        except GatewayError:
            self._acceptor.stop(True)
            raise
        self._md_thread = threading.Thread(target=self._market_data, name="venue-md", daemon=True)
        self._md_thread.start()

    def stop(self) -> None:
        with self.lock:
            self._stop.set()  # from here no thread of the venue sends anything
        if self._acceptor is not None:
            self._acceptor.stop(True)
        if self._md_thread is not None:
            self._md_thread.join(timeout=2)
        self._acceptor = None  # destroyed: its sessions leave the process-wide registry

    def logged_on(self, comp_id: str) -> bool:
        return any(F.target_of(sid) == comp_id for sid in self._logged_on.values())

    # --- operator API --------------------------------------------------------------
    def working(self, comp_id: str | None = None) -> list[VenueOrder]:
        """Orders still live, optionally only those of one session (by its CompID)."""
        with self.lock:
            seen: dict[int, VenueOrder] = {}
            for o in self.orders.values():
                if o.status in LIVE and (comp_id is None or F.target_of(o.session) == comp_id):
                    seen[id(o)] = o
            return list(seen.values())

    def find(self, clordid: str) -> VenueOrder | None:
        with self.lock:
            for (_, cid), o in self.orders.items():
                if cid == clordid:
                    return o
        return None

    def execute(self, clordid: str, qty: Decimal | int, price: float) -> str:
        """Fill part of a live order at `price` (a trade the market brought to it)."""
        with self.lock:
            o = self._live(clordid)
            return self._trade(o, min(Decimal(qty), o.leaves), price)

    def restate(self, clordid: str, leaves: Decimal | int, text: str = "venue restatement") -> None:
        """Venue-initiated change of an order's leaves (ExecType D)."""
        with self.lock:
            o = self._live(clordid)
            o.qty = o.cum + Decimal(leaves)
            if o.leaves == 0:
                o.status = "4"
            self._report(o, "D", extra=[(F.TEXT, text)])

    def bust(self, exec_id: str) -> None:
        """Cancel an execution (ExecType H; FIX 4.2 ExecTransType 1)."""
        with self.lock:
            ex = self.executions[exec_id]
            ex.busted = True
            o = ex.order
            o.cum -= ex.qty
            o.notional -= float(ex.qty) * ex.price
            if o.status == "2":
                o.status = "1" if o.cum else "0"
            extra = [(F.EXEC_REF_ID, exec_id), (F.LAST_QTY, _q(ex.qty)), (F.LAST_PX, _p(ex.price))]
            self._report(o, "H", extra=extra, trans="1")

    def correct(self, exec_id: str, qty: Decimal | int, price: float) -> None:
        """Correct an execution's quantity and price (ExecType G; FIX 4.2 ExecTransType 2)."""
        with self.lock:
            ex = self.executions[exec_id]
            o = ex.order
            o.cum += Decimal(qty) - ex.qty
            o.notional += float(qty) * price - float(ex.qty) * ex.price
            ex.qty, ex.price = Decimal(qty), price
            extra = [(F.EXEC_REF_ID, exec_id), (F.LAST_QTY, _q(ex.qty)), (F.LAST_PX, _p(price))]
            self._report(o, "G", extra=extra, trans="2")

    def expire(self, clordid: str) -> None:
        with self.lock:
            o = self._live(clordid)
            o.status = "C"
            self._report(o, "C")

    def end_of_day(self) -> int:
        """Done for day (ExecType 3) for every live DAY order; returns how many."""
        with self.lock:
            done = [o for o in self.working() if o.tif == "0"]
            for o in done:
                o.status = "3"
                self._report(o, "3")
            return len(done)

    def misreport(self, clordid: str, exec_type: str, fields: list[tuple[int, str]]) -> None:
        """Send a report for an order with fields overridden: a venue that gets it wrong
        (a LeavesQty that disagrees, a duplicate ExecID), so a gateway can be tested on it."""
        with self.lock:
            o = self.find(clordid)
            if o is None:
                raise GatewayError(f"venue: no order {clordid!r}")
            self._report(o, exec_type, extra=fields, exec_id=dict(fields).get(F.EXEC_ID))

    def stray_fill(self, session: str, clordid: str, symbol: str, side: str, qty: int) -> None:
        """An execution reported on `session` for an order it never sent (a venue mix-up)."""
        with self.lock:
            sid = next(s for s in self._logged_on.values() if F.target_of(s) == session)
            o = VenueOrder(clordid, "V0", sid, symbol, side, Decimal(qty), None, "1", "0")
            self._trade(o, Decimal(qty), self.books[symbol].touch(o.is_buy))

    def _live(self, clordid: str) -> VenueOrder:
        o = self.find(clordid)
        if o is None or o.status not in LIVE:
            raise GatewayError(f"venue: no live order {clordid!r}")
        return o

    # --- order handling (engine thread, under the lock) ------------------------------
    def from_app(self, raw: Any, sid: Any) -> None:
        sid = F.own_sid(sid)
        msg = F.In(raw)
        mtype = msg.mtype
        key = F.session_key(sid)
        if F.target_of(sid) in self.drop_copy:
            raise fix().UnsupportedMessageType()
        with self.lock:
            if mtype == F.NEW_ORDER:
                self._new(msg, sid, key)
            elif mtype == F.CANCEL:
                self._cancel(msg, sid, key)
            elif mtype == F.REPLACE:
                self._replace(msg, sid, key)
            elif mtype == F.MASS_CANCEL and not self.fix42:
                self._mass_cancel(msg, sid, key)
            elif mtype == F.STATUS_REQUEST:
                self._status(msg, sid, key)
            elif mtype == F.MASS_STATUS and not self.fix42:
                self._mass_status(msg, sid, key)
            elif mtype == F.MD_REQUEST:
                self._subscribe(msg, sid, key)
            else:
                raise fix().UnsupportedMessageType()

    def _new(self, msg: F.In, sid: Any, key: str) -> None:
        self.stats.orders += 1
        who = F.target_of(sid)
        self.stats.by_session[who] = self.stats.by_session.get(who, 0) + 1
        clordid = msg[F.CL_ORD_ID]
        symbol = msg.get(F.SYMBOL) or ""
        side = msg[F.SIDE]
        ord_type = msg[F.ORD_TYPE]
        price_text = msg.get(F.PRICE)
        o = VenueOrder(
            clordid=clordid,
            order_id=f"V{next(self._ids)}",
            session=sid,
            symbol=symbol,
            side=side,
            qty=Decimal(0),
            price=float(price_text) if price_text is not None else None,
            ord_type=ord_type,
            tif=msg.get(F.TIME_IN_FORCE) or "0",
            security_id=msg.get(F.SECURITY_ID),
        )
        problem, code = self._problem(msg, o)
        if (key, clordid) in self.orders:
            problem, code = f"duplicate ClOrdID {clordid}", F.REJ_DUPLICATE
        if problem is not None:
            self.stats.rejected += 1
            o.status = "8"
            self._report(o, "8", extra=[(F.ORD_REJ_REASON, code), (F.TEXT, problem)])
            return
        self.orders[(key, clordid)] = o
        self._report(o, "0")
        self._match(o)

    def _problem(self, msg: F.In, o: VenueOrder) -> tuple[str | None, str]:
        if o.symbol not in self.books or o.symbol in self.reject_symbols:
            return f"unknown symbol {o.symbol!r}", F.REJ_UNKNOWN_SYMBOL
        try:
            qty = Decimal(msg.get(F.ORDER_QTY) or "0")
        except InvalidOperation:
            return "OrderQty is not a number", F.REJ_BROKER_OPTION
        lot = self.lots.get(o.symbol, Decimal(1))
        if qty <= 0 or qty % lot != 0 or qty > 10_000_000:
            return f"OrderQty {qty} is not a positive multiple of {lot}", F.REJ_BROKER_OPTION
        o.qty = qty
        if o.side not in ("1", "2", "3", "4", "5", "6"):
            return f"Side {o.side} not supported", F.REJ_BROKER_OPTION
        if o.ord_type not in ("1", "2"):
            return f"OrdType {o.ord_type} not supported", F.REJ_BROKER_OPTION
        if o.ord_type == "2":
            if o.price is None or o.price <= 0:
                return "a limit order needs a positive Price", F.REJ_BROKER_OPTION
            if abs(o.price * 100 - round(o.price * 100)) > 1e-6:
                return f"Price {o.price} is not on the 0.01 tick", F.REJ_BROKER_OPTION
        return None, ""

    def _match(self, o: VenueOrder) -> None:
        """Take the ladder while the order crosses; IOC leftovers expire."""
        book = self.books[o.symbol]
        lot = self.lots.get(o.symbol, Decimal(1))
        while o.status in LIVE and o.leaves > 0:
            touch = book.touch(o.is_buy)
            if o.price is not None and (o.price < touch if o.is_buy else o.price > touch):
                break
            clip = o.leaves if not self.clip else min(o.leaves, Decimal(self.clip) * lot)
            units = int(clip / lot)
            notional = book.take(o.is_buy, units, 0) / units
            self._trade(o, clip, round(notional, 6))
        if o.status in LIVE and o.leaves > 0 and o.tif in ("3", "4"):
            o.status = "C"
            self._report(o, "C", extra=[(F.TEXT, "immediate-or-cancel remainder")])

    def _trade(self, o: VenueOrder, qty: Decimal, price: float) -> str:
        o.cum += qty
        o.notional += float(qty) * price
        o.status = "2" if o.cum >= o.qty else "1"
        exec_id = f"E{next(self._ids)}"
        self.executions[exec_id] = Execution(exec_id, o, qty, price)
        self.stats.executions += 1
        trade = "F" if not self.fix42 else ("2" if o.status == "2" else "1")
        extra = [(F.LAST_QTY, _q(qty)), (F.LAST_PX, _p(price))]
        self._report(o, trade, extra=extra, exec_id=exec_id)
        return exec_id

    def _cancel(self, msg: F.In, sid: Any, key: str) -> None:
        clordid = msg[F.CL_ORD_ID]
        orig = msg[F.ORIG_CL_ORD_ID]
        o = self.orders.get((key, orig))
        if (
            o is not None
            and self.check_instrument
            and (
                msg.get(F.SYMBOL) not in (None, o.symbol)
                or msg.get(F.SECURITY_ID) not in (None, o.security_id)
            )
        ):
            self._cancel_reject(sid, clordid, orig, None, "1", F.CXL_UNKNOWN_ORDER)
            return
        if o is None or o.status not in LIVE:
            reason = F.CXL_UNKNOWN_ORDER if o is None else F.CXL_TOO_LATE
            self._cancel_reject(sid, clordid, orig, o, "1", reason)
            return
        o.status = "4"
        self.stats.cancels += 1
        self.orders[(key, clordid)] = o
        self._report(o, "4", clordid=clordid, orig=orig)

    def _replace(self, msg: F.In, sid: Any, key: str) -> None:
        clordid = msg[F.CL_ORD_ID]
        orig = msg[F.ORIG_CL_ORD_ID]
        o = self.orders.get((key, orig))
        if o is None or o.status not in LIVE:
            reason = F.CXL_UNKNOWN_ORDER if o is None else F.CXL_TOO_LATE
            self._cancel_reject(sid, clordid, orig, o, "2", reason)
            return
        try:
            qty = Decimal(msg.get(F.ORDER_QTY) or "0")
        except InvalidOperation:
            qty = Decimal(0)
        price_text = msg.get(F.PRICE)
        if qty <= o.cum or (key, clordid) in self.orders:
            self._cancel_reject(sid, clordid, orig, o, "2", F.CXL_BROKER_OPTION)
            return
        o.qty = qty
        o.price = float(price_text) if price_text is not None else o.price
        o.clordid = clordid
        if self.new_order_id_on_replace:
            o.order_id = f"V{next(self._ids)}"
        self.orders[(key, clordid)] = o
        self._report(o, "5", clordid=clordid, orig=orig)
        self._match(o)

    def _mass_cancel(self, msg: F.In, sid: Any, key: str) -> None:
        clordid = msg[F.CL_ORD_ID]
        kind = msg[F.MASS_CANCEL_REQUEST_TYPE]
        symbol = msg.get(F.SYMBOL)
        who = F.target_of(sid)
        hit = [o for o in self.working(who) if kind == "7" or (kind == "1" and o.symbol == symbol)]
        for o in hit:
            o.status = "4"
            self.stats.cancels += 1
            self._report(o, "4", extra=[(F.TEXT, f"mass cancel {clordid}")])
        response = kind if kind in ("1", "7") else "0"
        report = F.message(
            F.MASS_CANCEL_REPORT,
            [
                (F.CL_ORD_ID, clordid),
                (F.ORDER_ID, clordid),
                (F.MASS_CANCEL_REQUEST_TYPE, kind),
                (F.MASS_CANCEL_RESPONSE, response),
                (F.TOTAL_AFFECTED, str(len(hit))),
            ],
        )
        F.send(report, sid)

    def _status(self, msg: F.In, sid: Any, key: str) -> None:
        o = self.orders.get((key, msg[F.CL_ORD_ID]))
        if o is None:
            probe = VenueOrder(
                msg[F.CL_ORD_ID],
                "NONE",
                sid,
                msg.get(F.SYMBOL) or "NA",
                msg[F.SIDE],
                Decimal(0),
                None,
                "2",
                "0",
            )
            probe.status = "8"
            self._report(probe, "I", extra=[(F.TEXT, "unknown order")], trans="3")
            return
        self._report(o, "I", trans="3")

    def _mass_status(self, msg: F.In, sid: Any, key: str) -> None:
        req = msg[F.MASS_STATUS_REQ_ID]
        live = self.working(F.target_of(sid))
        if not live:
            none = VenueOrder("NONE", "NONE", sid, "NA", "1", Decimal(0), None, "2", "0")
            none.status = "8"
            extra = [(F.MASS_STATUS_REQ_ID, req), (F.TOT_NUM_REPORTS, "0")]
            extra += [(F.LAST_RPT_REQUESTED, "Y"), (F.TEXT, "no working orders")]
            self._report(none, "I", extra=extra)
            return
        for i, o in enumerate(live, 1):
            extra = [(F.MASS_STATUS_REQ_ID, req), (F.TOT_NUM_REPORTS, str(len(live)))]
            extra.append((F.LAST_RPT_REQUESTED, "Y" if i == len(live) else "N"))
            self._report(o, "I", extra=extra)

    def _subscribe(self, msg: F.In, sid: Any, key: str) -> None:
        group = fix().Group(F.NO_RELATED_SYM, F.SYMBOL)
        wanted = set()
        for i in range(1, msg.msg.groupCount(F.NO_RELATED_SYM) + 1):
            msg.msg.getGroup(i, group)
            wanted.add(group.getField(F.SYMBOL))
        self._md[key] = {s for s in wanted if s in self.books}
        for s in sorted(self._md[key]):
            self._snapshot(sid, s, msg[F.MD_REQ_ID])

    def _snapshot(self, sid: Any, symbol: str, req_id: str = "md") -> None:
        book = self.books[symbol]
        named = [(F.SYMBOL, symbol), (F.MD_REQ_ID, req_id)]
        if self.security_ids is None:
            named += [(F.SECURITY_ID, symbol), (F.ID_SOURCE, "8")]
        elif symbol in self.security_ids:
            named += [(F.SECURITY_ID, self.security_ids[symbol]), (F.ID_SOURCE, "4")]
        m = F.message(F.MD_SNAPSHOT, named)
        for entry, px in (("0", book.touch(False)), ("1", book.touch(True))):
            g = fix().Group(F.NO_MD_ENTRIES, F.MD_ENTRY_TYPE)
            g.setField(F.MD_ENTRY_TYPE, entry)
            g.setField(F.MD_ENTRY_PX, _p(px))
            m.addGroup(g)
        F.send(m, sid)

    def _market_data(self) -> None:
        while not self._stop.wait(self.md_interval_s):
            try:
                with self.lock:
                    if self._stop.is_set():
                        return
                    subs = [(self._logged_on.get(k), syms) for k, syms in self._md.items()]
                    for sid, syms in subs:
                        if sid is not None:
                            for s in sorted(syms):
                                self._snapshot(sid, s)
            except Exception as exc:  # a market-data hiccup must not end the venue
                self.errors.add("market data", exc)

    # --- reports ------------------------------------------------------------------------
    def _report(
        self,
        o: VenueOrder,
        exec_type: str,
        *,
        extra: list[tuple[int, str]] | None = None,
        clordid: str | None = None,
        orig: str | None = None,
        exec_id: str | None = None,
        trans: str = "0",
    ) -> None:
        fields = [
            (F.ORDER_ID, o.order_id),
            (F.CL_ORD_ID, clordid or o.clordid),
            (F.EXEC_ID, exec_id or f"E{next(self._ids)}"),
            # FIX 4.2 has no ExecType I, H or G: status, bust and correct are ExecTransType
            # 3, 1 and 2 with the order's status as ExecType
            (F.EXEC_TYPE, o.status if self.fix42 and exec_type in ("I", "H", "G") else exec_type),
            (F.ORD_STATUS, o.status),
            (F.SYMBOL, o.symbol),
            (F.SIDE, o.side),
            (F.ORDER_QTY, _q(o.qty)),
            (F.LEAVES_QTY, _q(o.leaves)),
            (F.CUM_QTY, _q(o.cum)),
            (F.AVG_PX, _p(o.avg_px)),
            (F.TRANSACT_TIME, F.now_utc()),
        ]
        if o.price is not None:
            fields.append((F.PRICE, _p(o.price)))
        if o.security_id is not None:
            fields.append((F.SECURITY_ID, o.security_id))
        if orig is not None:
            fields.append((F.ORIG_CL_ORD_ID, orig))
        if self.fix42:
            fields.append((F.EXEC_TRANS_TYPE, trans))
        merged = dict(fields)
        merged.update((t, v) for t, v in extra or [] if t != F.EXEC_ID)  # extra overrides
        if self.status_without_instrument and F.MASS_STATUS_REQ_ID in merged:
            merged.pop(F.SYMBOL, None)
            merged.pop(F.SECURITY_ID, None)
        er = F.message(F.EXECUTION_REPORT, list(merged.items()))
        F.send(er, o.session)
        if exec_type == "I":
            return
        copy = er if self.drop_copy_as == F.EXECUTION_REPORT else _trade_capture(merged)
        if copy is None:
            return
        for sid in list(self._logged_on.values()):
            if F.target_of(sid) in self.drop_copy:
                F.send(fix().Message(copy), sid)

    def _cancel_reject(
        self, sid: Any, clordid: str, orig: str, o: VenueOrder | None, to: str, reason: str
    ) -> None:
        m = F.message(
            F.CANCEL_REJECT,
            [
                (F.ORDER_ID, o.order_id if o is not None else "NONE"),
                (F.CL_ORD_ID, clordid),
                (F.ORIG_CL_ORD_ID, orig),
                (F.ORD_STATUS, o.status if o is not None else "8"),
                (F.CXL_REJ_RESPONSE_TO, to),
                (F.CXL_REJ_REASON, reason),
                (F.TEXT, "unknown order" if o is None else "order not live or replace refused"),
            ],
        )
        F.send(m, sid)

    # --- sessions -------------------------------------------------------------------------
    def on_logon(self, sid: Any) -> None:
        with self.lock:
            self._logged_on[F.session_key(sid)] = F.own_sid(sid)

    def on_logout(self, sid: Any) -> None:
        # The engine calls this holding the session's own mutex: taking the venue lock
        # here could deadlock with a thread that holds it and sends on this session.
        threading.Thread(target=self._logged_out, args=(F.own_sid(sid),), daemon=True).start()

    def _logged_out(self, sid: Any) -> None:
        key = F.session_key(sid)
        with self.lock:
            if self._stop.is_set():
                return
            self._logged_on.pop(key, None)
            self._md.pop(key, None)
            if self.cancel_on_disconnect and F.target_of(sid) not in self.drop_copy:
                for o in self.working(F.target_of(sid)):
                    o.status = "4"
                    self.stats.cancels += 1
                    self._report(o, "4", extra=[(F.TEXT, "cancel on disconnect")])


_TCR_TRANS = {"F": "0", "H": "1", "G": "2"}
"""ExecType of a trade, bust and correction -> TradeReportTransType: new, cancel, replace."""


def _trade_capture(er: dict[int, str]) -> Any | None:
    """The TradeCaptureReport (FIX 4.4) a drop copy gets for an execution report's fields:
    a trade is a new report (TradeReportID the ExecID), a bust a cancel and a correction
    a replace of it (TradeReportRefID the ExecID busted or corrected); None for anything
    that is not a trade."""
    exec_type = er[F.EXEC_TYPE]
    trans = _TCR_TRANS.get(exec_type)
    if trans is None:
        return None
    fields = [
        (F.TRADE_REPORT_ID, er[F.EXEC_ID]),
        (F.TRADE_REPORT_TRANS_TYPE, trans),
        (F.TRD_TYPE, "0"),
        (F.EXEC_TYPE, exec_type),
        (F.EXEC_ID, er[F.EXEC_ID]),
        (F.PREVIOUSLY_REPORTED, "N"),
        (F.TRADE_DATE, er[F.TRANSACT_TIME][:8]),
        (F.TRANSACT_TIME, er[F.TRANSACT_TIME]),
    ]
    # what the report carries (a `misreport` may leave some out): as it is
    for tag, as_tag in (
        (F.LAST_QTY, F.LAST_QTY),
        (F.LAST_PX, F.LAST_PX),
        (F.SYMBOL, F.SYMBOL),
        (F.SECURITY_ID, F.SECURITY_ID),
        (F.EXEC_REF_ID, F.TRADE_REPORT_REF_ID),
    ):
        if tag in er:
            fields.append((as_tag, er[tag]))
    tcr = F.message(F.TRADE_CAPTURE_REPORT, fields)
    side = fix().Group(F.NO_SIDES, F.SIDE)
    for tag in (F.SIDE, F.ORDER_ID, F.CL_ORD_ID):
        if tag in er:
            side.setField(tag, er[tag])
    tcr.addGroup(side)
    return tcr


def _q(q: Decimal) -> str:
    return format(q.normalize(), "f") if q else "0"


def _p(p: float) -> str:
    return f"{p:.6f}".rstrip("0").rstrip(".") or "0"
