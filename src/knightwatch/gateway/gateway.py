"""The FIX risk gateway: client sessions in, the Guard in between, the venue session out.

A transparent proxy. An accepted NewOrderSingle goes to the venue unchanged
(the client's ClOrdID on the wire; only routing header fields are dropped);
the venue's reports come back to the owning session unchanged. Inside the
Guard and the flight recorder an order is `<client CompID>:<ClOrdID>`, since
FIX scopes a ClOrdID to its session.

What the gateway decides around the Guard:

* a refused order is an ExecutionReport 39=8 with OrdRejReason and a Text
  starting `knightwatch:<reason code>`, never a session-level reject; a
  refused replace is an OrderCancelReject 434=2; a message type the Guard
  cannot check (lists, multileg, quotes, crosses, anything not on the
  allow-list) is a BusinessMessageReject 380=3;
* an order or a replace is forwarded only as the Guard read it: fields that
  make the venue trade another instrument or read Price(44) otherwise are
  refused `invalid_order` naming the tag, nothing sent. Under `instrument =
  "symbol"`: SecurityID(48) and the qualifiers SymbolSfx(65), SecurityType(167),
  CFICode(461), ContractMultiplier(231), Product(460), Factor(228), the
  maturity, option-series, bond and repo-collateral fields of the Instrument
  (the Guard checks the Symbol alone). Whatever `instrument` is:
  SecurityExchange(207) (another listing: its own price and currency) and the
  SecurityAltID group (454/455/456: an identifier the venue may resolve
  otherwise); underlyings (711), financing terms, a second leg (OrderQty2(192)),
  a quantity worked out otherwise (OrderPercent(516), rounding, QtyType(854)
  other than 0), a price against a benchmark or a yield (Spread(218)...), a peg
  or discretion offset, stipulations (232), ForexReq(121)=Y (`_TERMS`);
  SettlType(63) other than 0 (regular), any SettlDate(64), BookingType(775)
  other than 0 (a forward, a CFD or a swap: priced or booked otherwise than the
  Guard's reference and position);
  PriceType(423) other than 2 (per unit: a percentage, a yield or a
  spread is not the Guard's price); Currency(15) or SettlCurrency(120) other
  than the configured `currency` (any when none is configured). Fields that do
  not change what is traded or the price's meaning (Account, ExecInst,
  TimeInForce, Text...) go on as sent. A parent (`parent_tag`) is registered
  only by a new order the gateway passes to the Guard, never by a refused
  request or a replace;
* cancels are always forwarded (under the gateway's own ClOrdID when the
  client's is in use on the venue session, answered under the client's); a
  client's mass cancel becomes one cancel per order of that client (the venue
  sees one session for all clients), and one of those the venue refuses is told
  to the client (an OrderCancelReject under the mass cancel's ClOrdID naming
  the order), as is one it never answers (a status report, pending cancel); a
  mass cancel or mass status by instrument must name it as an order must
  (SecurityIDSource(22), no qualifier or listing), or is refused;
* resent orders and replaces (PossDupFlag/PossResend) are answered from the
  decision already taken, never checked or forwarded twice (a replace in flight:
  the venue's answer to the first; answered: the order's state if it took
  effect, else an OrderCancelReject, the venue's refusal named); a resent cancel
  the gateway already forwarded (same ClOrdID, same OrigClOrdID) is not sent
  again: in flight, the first's answer reaches the client; answered, the
  resend gets the order's state, or the same OrderCancelReject. A resent
  cancel whose first copy never reached the venue (refused with the venue
  down, not taken by the venue session, unanswered, or never seen by this
  process) is forwarded: the stop direction is never held back;
* execution reports drive the Guard (fills, cancels, expiries, venue
  rejects, replaces, restatements, busts, corrections), once per ExecID; a
  fill for an order nobody sent, or a LeavesQty that disagrees with the
  Guard, halts the node with `fill_mismatch`, as does one naming another
  instrument, side or SecurityIDSource(22) than the order's;
* a kill's cancel the venue never answers (`answer_timeout_s`), or one in
  flight when the venue session drops or resets its numbers, is sent again by
  the gateway itself (one fresh cancel per order at each timeout, logon or
  reset, recorded `kill_cancel_resent`) for as long as the Guard holds the
  kill's scope halted, until the venue answers it: the kill's drain ends long
  before the venue's answer is given up on. So is a cancel-on-disconnect's,
  until the venue answers it (its client is gone, no drain covers it). One
  of these the venue refuses (OrderCancelReject, 150=8, a business or session
  Reject) is sent again too, after a wait doubling per refusal up to
  `answer_timeout_s`, while the order is live (`_own_cancel_refused`);
* with the venue session down new orders are refused `venue_unavailable`;
  a lost client session has its orders cancelled per its policy; nothing is
  armed until working orders and positions are reconciled (an order the mass
  status adopts while a kill is in force is cancelled at once). Without the venue's
  mass status nothing would count orders an earlier process left working, so the
  state directory is marked (`LEFT_WORKING`) before a process's first order goes
  out and unmarked only at a stop with none live; such a start over the mark fails.

Threads: QuickFIX runs the client acceptor and the venue initiator on their
own threads. Every message is handled under the Guard's one lock
(`LockedGuard.lock`), check and book update and send together, so a kill
sees an order either not yet accepted or accepted and on its way. Session
events (logon, logout) arrive while the engine holds a session mutex, so
they are handed to one worker thread instead of taking the lock there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from knightwatch.clock import to_ns
from knightwatch.decision import Decision, RejectReason
from knightwatch.gateway import fields as F
from knightwatch.gateway.book import LIVE_STATUS, GatewayBook, GwOrder, Request, SentCancel
from knightwatch.gateway.config import GatewayConfig, acceptor_settings, initiator_settings
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
from knightwatch.guard import LockedGuard
from knightwatch.inputs import InputFileError, load_toml
from knightwatch.order import MAX_PRICE, MAX_QTY, Fill, InvalidOrder, Order, Side, price_problem
from knightwatch.state import Scope, TradingState, split_pair

log = logging.getLogger(__name__)
R = RejectReason

_SIDES = {
    "1": Side.BUY,
    "3": Side.BUY,
    "2": Side.SELL,
    "4": Side.SELL,
    "5": Side.SELL,
    "6": Side.SELL,
}
"""FIX Side -> Guard side: buy minus is a buy; sell short and sell short exempt are sells."""

_FINISHED = frozenset({"2", "3", "4", "8", "B", "C"})
"""OrdStatus values of an order that can no longer execute: filled, done for day,
cancelled, rejected, calculated, expired."""

_ENDS = frozenset({F.ExecKind.CANCELED, F.ExecKind.EXPIRED, F.ExecKind.DONE_FOR_DAY})
"""Reports that end an order: their OrdStatus must be a finished one."""
_GOES_ON = frozenset({F.ExecKind.NEW, F.ExecKind.PENDING})
"""Reports that leave an order working: their OrdStatus must be a working one."""
_LEAVES_COUNT = frozenset(
    {
        F.ExecKind.TRADE,
        F.ExecKind.TRADE_CORRECT,
        F.ExecKind.TRADE_CANCEL,
        F.ExecKind.RESTATED,
        F.ExecKind.REPLACED,
    }
)
"""Reports whose LeavesQty the Guard takes as the order's working quantity: with a
finished OrdStatus it must be 0 (else the Guard counts working what the book ends)."""

_ENDS_REPLACE = frozenset(
    {F.ExecKind.REJECTED, F.ExecKind.CANCELED, F.ExecKind.EXPIRED, F.ExecKind.DONE_FOR_DAY}
)
"""What the late answer to a replace of an order that ended meanwhile may say
(`Request.released`)."""

_CANCEL_REJECT_BODY = (
    F.ORDER_ID,
    F.ORIG_CL_ORD_ID,
    F.ORD_STATUS,
    F.CXL_REJ_RESPONSE_TO,
    F.CXL_REJ_REASON,
    F.TEXT,
    F.ACCOUNT,
    F.TRANSACT_TIME,
)
"""The fields of a venue's OrderCancelReject a resend of the client's cancel gets again."""

_QUALIFIERS = (
    (65, "SymbolSfx"),
    (167, "SecurityType"),
    (200, "MaturityMonthYear"),
    (201, "PutOrCall"),
    (202, "StrikePrice"),
    (205, "MaturityDay"),
    (231, "ContractMultiplier"),
    (461, "CFICode"),
    (541, "MaturityDate"),
    (460, "Product"),
    (762, "SecuritySubType"),
    (206, "OptAttribute"),
    (947, "StrikeCurrency"),
    (667, "ContractSettlMonth"),
    (228, "Factor"),
    (223, "CouponRate"),
    (224, "CouponPaymentDate"),
    (225, "IssueDate"),
    (240, "RedemptionDate"),
    (873, "DatedDate"),
    (874, "InterestAccrualDate"),
    (239, "RepoCollateralSecurityType"),
    (226, "RepurchaseTerm"),
    (227, "RepurchaseRate"),
    (691, "Pool"),
    (875, "CPProgram"),
    (876, "CPRegType"),
    (864, "NoEvents"),
)
"""Instrument fields that make the venue trade another instrument under the same Symbol(55)
(a share class, a contract month, an option series, a product type: AAPL as an option or
a CFD, a contract's size, a bond's coupon or issue, a pool's factor): the Guard checks the
Symbol alone. With `instrument = "security_id"` the SecurityID names the whole instrument
and these only restate it. Descriptive fields (Issuer, SecurityDesc) go on."""

_LISTING = (
    (207, "SecurityExchange"),
    (454, "NoSecurityAltID"),
    (455, "SecurityAltID"),
    (456, "SecurityAltIDSource"),
)
"""Fields that name the instrument or its listing beside the identifier the Guard checks,
whichever `instrument` is: another exchange's listing of the same security trades at
its own price, in its own currency; an alternative id is one the venue may resolve the
instrument by, which the gateway cannot compare with the one the Guard checks.
ExDestination(100) is passed on: a routing instruction (an exchange of the same listing,
as US desks direct orders) that most desks send on every order."""

_TERMS: tuple[tuple[str, tuple[tuple[int, str], ...]], ...] = (
    (
        "the instrument is built on underlyings the Guard does not check",
        ((711, "NoUnderlyings"),),
    ),
    (
        "they make the trade a financing agreement, a repo, the Guard does not check",
        (
            (913, "AgreementDesc"),
            (914, "AgreementID"),
            (915, "AgreementDate"),
            (918, "AgreementCurrency"),
            (788, "TerminationType"),
            (916, "StartDate"),
            (917, "EndDate"),
            (919, "DeliveryType"),
            (898, "MarginRatio"),
        ),
    ),
    (
        "a second trade, a swap's far leg, the Guard does not check",
        ((192, "OrderQty2"), (193, "SettlDate2"), (640, "Price2")),
    ),
    (
        "the venue would work out the quantity otherwise than OrderQty(38) in units",
        ((516, "OrderPercent"), (468, "RoundingDirection"), (469, "RoundingModulus")),
    ),
    (
        "the venue would read the price against a benchmark or as a yield, not Price(44) per unit",
        (
            (218, "Spread"),
            (220, "BenchmarkCurveCurrency"),
            (221, "BenchmarkCurveName"),
            (222, "BenchmarkCurvePoint"),
            (662, "BenchmarkPrice"),
            (663, "BenchmarkPriceType"),
            (699, "BenchmarkSecurityID"),
            (761, "BenchmarkSecurityIDSource"),
            (235, "YieldType"),
            (236, "Yield"),
            (701, "YieldCalcDate"),
            (696, "YieldRedemptionDate"),
            (697, "YieldRedemptionPrice"),
            (698, "YieldRedemptionPriceType"),
        ),
    ),
    (
        "a peg or a discretion lets the venue trade at another price than Price(44), "
        "which the Guard checked",
        (
            (211, "PegOffsetValue"),
            (835, "PegMoveType"),
            (836, "PegOffsetType"),
            (837, "PegLimitType"),
            (838, "PegRoundDirection"),
            (840, "PegScope"),
            (388, "DiscretionInst"),
            (389, "DiscretionOffsetValue"),
            (841, "DiscretionMoveType"),
            (842, "DiscretionOffsetType"),
            (843, "DiscretionLimitType"),
            (844, "DiscretionRoundDirection"),
            (846, "DiscretionScope"),
        ),
    ),
    (
        "stipulations change what is delivered under the instrument",
        ((232, "NoStipulations"),),
    ),
)
"""Fields that change the trade's economics beyond what the Guard checks, whatever
`instrument` is, each family with why: refused naming the tags. Before, they went to
the venue as sent: a 100-share buy at 10.00 with DiscretionOffsetValue 5 could trade at
15.00 past the collar, one with OrderQty2 was also a second trade, an OrderPercent or a
RoundingModulus made the venue work out another quantity."""

UNITS = "0"
"""QtyType(854) 0: OrderQty(38) in units (shares, contracts as the Guard counts lots)."""

REGULAR = "0"
"""SettlType(63) 0: regular settlement; BookingType(775) 0: regular booking (the instrument
itself, not a CFD or a swap on it). The one settlement and booking the Guard checks."""

PER_UNIT = "2"
"""PriceType(423) 2: Price(44) per unit (share, contract), the one way the Guard reads it."""

_ONLY: tuple[tuple[int, str, str | None, str], ...] = (
    (854, "QtyType", UNITS, "the Guard reads OrderQty(38) in units"),
    (121, "ForexReq", "N", "the venue would also trade currency to settle it"),
    (63, "SettlType", REGULAR, "the Guard checks Price(44) against regular settlement's price"),
    (
        64,
        "SettlDate",
        None,
        "the gateway cannot tell it from regular settlement: a later date is a forward, "
        "priced otherwise than the Guard's reference",
    ),
    (
        775,
        "BookingType",
        REGULAR,
        "the venue would book a CFD or a swap, not the instrument the Guard counts",
    ),
    (423, "PriceType", PER_UNIT, "the Guard reads Price(44) per unit"),
)
"""Fields refused, naming the tag and why, unless they carry the one value the Guard
assumes (None: any value refused), in this order. QtyType: contracts or units of measure
per time are not the lots the Guard counts. ForexReq=Y: the venue would also trade the
settlement currency, an FX trade unchecked. SettlType other than regular (cash, next
day, T+n, a forward, when issued, seller's option, a broken date) and any SettlDate (the
gateway knows no settlement calendar): another settlement, priced otherwise than the
reference the Guard checked Price(44) against (an FX forward's points, a when-issued
price). BookingType other than regular: a CFD or a total return swap on the instrument,
a derivative the Guard does not count as a position in it. PriceType other than per
unit: a percentage of par, a yield, a spread, while the Guard checks Price(44) per unit
against the reference price."""

_MARKET_TYPES = ("1", "3")  # market, stop
_LIMIT_TYPES = ("2", "4")  # limit, stop limit
_ALLOWED = frozenset(
    {F.NEW_ORDER, F.CANCEL, F.REPLACE, F.MASS_CANCEL, F.STATUS_REQUEST, F.MASS_STATUS}
)

_ORD_REJ = {
    R.NOT_ARMED: F.REJ_EXCHANGE_CLOSED,
    R.LEASE_EXPIRED: F.REJ_EXCHANGE_CLOSED,
    R.HALTED: F.REJ_EXCHANGE_CLOSED,
    R.REDUCING_ONLY: F.REJ_EXCHANGE_CLOSED,
    R.VENUE_UNAVAILABLE: F.REJ_EXCHANGE_CLOSED,
    R.AUDIT_UNAVAILABLE: F.REJ_EXCHANGE_CLOSED,
    R.DUPLICATE_ORDER_ID: F.REJ_DUPLICATE,
    R.MAX_ORDER_QTY: F.REJ_EXCEEDS_LIMIT,
    R.MAX_ORDER_NOTIONAL: F.REJ_EXCEEDS_LIMIT,
    R.PRICE_COLLAR: F.REJ_EXCEEDS_LIMIT,
    R.RATE_NODE: F.REJ_EXCEEDS_LIMIT,
    R.RATE_STRATEGY: F.REJ_EXCEEDS_LIMIT,
    R.RATE_SYMBOL: F.REJ_EXCEEDS_LIMIT,
    R.PARENT_QTY_EXCEEDED: F.REJ_EXCEEDS_LIMIT,
    R.MAX_CHILD_ORDERS: F.REJ_EXCEEDS_LIMIT,
    R.MAX_POSITION: F.REJ_EXCEEDS_LIMIT,
    R.MAX_GROSS_EXPOSURE: F.REJ_EXCEEDS_LIMIT,
    R.MAX_NET_EXPOSURE: F.REJ_EXCEEDS_LIMIT,
    R.MAX_TURNOVER: F.REJ_EXCEEDS_LIMIT,
}
"""OrdRejReason per reason code (values valid in FIX 4.2 and 4.4); anything else: 0."""


class Unparsed(msgspec.Struct, frozen=True):
    """What the flight recorder gets for an order the gateway could not map to an `Order`."""

    id: str
    strategy: str
    symbol: str
    side: str
    qty: int
    price: float | None
    parent_id: str | None


class _DcSide(NamedTuple):
    """One side of a drop-copy report: what ties it to an order, and its Side(54)."""

    clordid: str | None
    orig: str | None
    order_id: str | None
    side: str | None


def _tcr_sides(msg: F.In) -> list[_DcSide]:
    """The NoSides(552) entries of a TradeCaptureReport, from its text (`F.In` keeps the
    last instance of a tag; the engine's message may not outlive its callback, and a
    held report is read again later). Side(54) opens each entry; OrderID(37) and
    ClOrdID(11), body fields of a TCR only inside the group, belong to the entry
    they follow. One or two entries (both sides of a trade); ValueError otherwise."""
    count = msg.get(F.NO_SIDES) or "0"
    sides: list[list[str | None]] = []
    inside = False
    for part in msg.raw.split(F.SOH):
        tag, _, value = part.partition("=")
        if tag == str(F.NO_SIDES):
            inside = True
        elif inside and tag == str(F.SIDE):
            sides.append([None, None, value])
        elif inside and sides and tag == str(F.ORDER_ID):
            sides[-1][1] = value
        elif inside and sides and tag == str(F.CL_ORD_ID):
            sides[-1][0] = value
    if count not in ("1", "2") or len(sides) != int(count):
        raise ValueError(
            f"TradeCaptureReport NoSides(552)={F.clean(count)} with {len(sides)} Side(54) "
            "entries: the gateway reads one or two sides"
        )
    return [_DcSide(c, None, o, side) for c, o, side in sides]


_POSITION_SYMBOL = re.compile(r"[^\x00-\x1f\x7f]{1,64}")
"""A symbol in the positions file: what the Guard and the FIX sessions can carry."""

RECONCILED = "reconciled"
"""The session and the strategy of an order adopted at start-up (found working at the venue)."""

LEFT_WORKING = "orders-may-be-working"
"""The file, in the gateway's state directory, that says orders this gateway sent (or
adopted) may still work at the venue: written (whole, fsynced) before its first order
goes out, or when the start-up mass status adopts any, and removed only when it stops
with none live (or a mass status finds none). A start with `venue.mass_status` off
finds it and does not arm: nothing else would count those orders."""

MAX_MASS_STATUS_EARLIER = 64
"""Start-up mass statuses asked at earlier logons kept (`Gateway._mass_status_earlier`):
one per logon before reconciliation finished, so a venue session that flaps at start-up
costs bounded memory; a report of one forgotten is read as any status report."""

MAX_CLIENT_MESSAGE = 16_384
"""Characters a client's message may have: a single order is a few hundred."""

MAX_DC_HELD = 65_536
"""Drop-copy reports held at once (`_from_drop_copy`): held for a start-up reconciliation
that never finishes (or OrderIDs the venue session never names) they would grow without
bound. One more is booked at once as the venue reports it and the node halts."""

MAX_SENT_REMEMBERED = 65_536
"""Orders, replaces and cancels sent to the venue whose MsgSeqNum is kept, for a session
Reject (35=3) that names only that number: the venue answers at once, so the last few."""

ANSWER_TIMEOUT_S = 30.0
"""How long the gateway waits for the venue to answer an order it sent (any report of it)
or to settle a replace or cancel (accept or refuse it: a pending report does not), while
the venue session is logged on (the wait starts again at each logon, when the venue
resends what it said meanwhile). Past it the request is unanswered (`_unanswered`):
recorded, the node halts `fill_mismatch`, the client is told. Set per gateway with
`Gateway(answer_timeout_s=...)`."""

MAX_AWAITING = 65_536
"""Orders, replaces and cancels whose answer is awaited at once: with more, the oldest is
looked at before its time (unanswered still: handled as at its timeout), so a venue that
answers nothing costs bounded memory however fast clients send."""


_CXL_REASONS = frozenset({F.CXL_TOO_LATE, F.CXL_UNKNOWN_ORDER, F.CXL_BROKER_OPTION, F.CXL_PENDING})
"""CxlRejReason(102) values every FIX version has: the venue's is passed on if one."""


def _write_whole(path: Path, text: str) -> None:
    """`text` as `path`, whole or not at all (written beside it, fsynced, renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cancel_on_disconnect(msg: F.In) -> bool:
    """Whether an order or replace asks to be cancelled when its session is lost: ExecInst
    (18) holding Q (FIX 4.4: cancel on system failure) or o (FIX 5.0: on connection loss)."""
    return bool({"o", "Q"} & set((msg.get(F.EXEC_INST) or "").split()))


def _venue_id(go: GwOrder) -> str:
    """The ClOrdID the venue knows an order by (`GwOrder.venue_clordid`)."""
    return go.venue_clordid or go.clordid


def reject_text(d: Decision) -> str:
    """Text(58) of a refusal: the stable reason code first, then the numbers."""
    return f"knightwatch:{d.reason.value} {d.detail}"[:512]


class Gateway(Handler):
    """The proxy: start with `start()`, stop with `stop()`; a fleet node wraps it (service.py)."""

    def __init__(
        self,
        config: GatewayConfig,
        guard: LockedGuard,
        state_dir: Path,
        *,
        log_messages: bool = True,
        on_reconciled: Callable[[], None] | None = None,
        on_fill: Callable[[Fill], None] | None = None,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
    ) -> None:
        super().__init__()
        if type(guard) is not LockedGuard:
            raise GatewayError("guard: the gateway needs a LockedGuard (it is called from threads)")
        if not 0 < answer_timeout_s < float("inf"):
            raise GatewayError(
                f"answer_timeout_s: must be a finite number of seconds > 0 (got {answer_timeout_s})"
            )
        self.answer_timeout_s = answer_timeout_s
        self._awaiting: deque[tuple[int, str, GwOrder | None, Request | None]] = deque()
        """(due, ClOrdID, order, request) of each order (request None), replace or cancel
        sent to the venue, in the order sent: unanswered at `due` (`_sweep_unanswered`)."""
        self._kill_resend: list[tuple[int, GwOrder, str | None, str, str]] = []
        """(due, order, the cancel it waits on, that cancel's ClOrdID, why) of each order a
        kill's mass cancel covers, of each kill's cancel let go before its time
        (`MAX_AWAITING`; it waits on None, so more killed orders than that never turn into
        a loop of cancels), and of each cancel of the gateway's own the venue refused
        while it must still be sent (`_own_cancel_refused`; it waits on None): at `due`,
        an order still live whose kill is in force (or whose client is gone) and whose
        cancel is still that one gets a fresh cancel of its own (`_sweep_unanswered`)."""
        self._sweep_s = min(1.0, answer_timeout_s / 4)
        self.cfg = config
        self.guard = guard
        self.lock = guard.lock
        self.state_dir = state_dir
        self._on_fill = on_fill if on_fill is not None else guard.on_fill
        """Where fills go: the Guard, or a node runtime that counts them on the way."""
        self.fix42 = config.begin_string == "FIX.4.2"
        window = guard.limits.duplicate_id_window_s
        self.book = GatewayBook(None if window is None else to_ns(window), guard.clock.monotonic_ns)
        """Orders and what is known about them, for as long as the Guard remembers their ids."""
        q = fix()
        begin = config.begin_string
        self.venue_sid = q.SessionID(begin, config.comp_id, config.venue.comp_id)
        self.venue_key = F.session_key(self.venue_sid)
        self.dc_key = ""
        if config.drop_copy is not None:
            dc = config.drop_copy
            self.dc_key = F.session_key(q.SessionID(begin, dc.sender_comp_id, dc.comp_id))
        self.client_sids = {
            c.comp_id: q.SessionID(begin, config.comp_id, c.comp_id) for c in config.clients
        }
        self.clients = {F.session_key(sid): config.client(c) for c, sid in self.client_sids.items()}
        self.venue_up = False
        self.stopping = False
        self.left_working = state_dir / LEFT_WORKING
        """Orders may work at the venue uncounted (`LEFT_WORKING`): read only by a start
        with `venue.mass_status` off, when the venue tells it nothing of them."""
        self._marked = False
        """This process wrote `left_working` (before its first order went out)."""
        self.clients_up: set[str] = set()
        self.reconciled = threading.Event()
        self.reconcile_error = ""
        self._on_reconciled = on_reconciled
        self._mass_status_id = ""
        self._mass_status_earlier: deque[str] = deque(maxlen=MAX_MASS_STATUS_EARLIER)
        """Start-up mass statuses asked at earlier logons that never finished: their
        reports are not applied (`_status_report`)."""
        self._positions_loaded = False
        """The positions file was applied (at the venue session's first logon)."""
        self._first_seq: dict[str, int] = {}
        """Per venue and drop-copy session, the MsgSeqNum of the first Logon this process
        read from it (lowered to a later reset Logon's): a report the engine resends
        (PossDupFlag) under a lower number was sent before this start (`_before_start`)."""
        self.venue_logons = 0
        """Venue session logons seen: start-up tells a venue that never logged on from
        one that did and never finished its mass status."""
        self._venue_events = 0
        """Logons and logouts of the venue session, counted as the engine reports them (its
        one thread for the session): a logon the worker handles after a later logout (or
        logon) is stale (`_venue_logged_on`)."""
        self.mass_status_sent = ""
        """The start-up OrderMassStatusRequest's id, once sent (kept after it ended)."""
        self.mass_status_reports = 0
        """Reports that answered it (reset when it is sent again at a new logon)."""
        self._dc_held: list[tuple[str, F.In, list[GwOrder] | None]] = []
        """Drop-copy reports the gateway cannot yet tell its own from another's, in the
        order they came, each with the orders whose venue OrderID it waits for
        (`_from_drop_copy`), or None: it came before start-up reconciliation finished
        and is read, once that has, as if it came then. Looked at again each time the
        lock is released."""
        self._admin_notes: queue.SimpleQueue[dict[str, str | int | None]] = queue.SimpleQueue()
        self._sent_lock = threading.Lock()
        self._venue_sent: dict[int, tuple[str, str]] = {}
        """MsgSeqNum -> (MsgType, ClOrdID) of the orders, replaces and cancels sent to the
        venue (`_deliver`), to match a session Reject naming only the number."""
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run_worker, name="gateway-worker", daemon=True)
        self.counts: dict[str, int] = {}
        self._keys: dict[int, str] = {}
        self._tls = threading.local()
        state_dir.mkdir(parents=True, exist_ok=True)
        allowed = [a for c in config.clients for a in c.allowed_remote_addresses]
        if config.loopback_only and any(a != "127.0.0.1" for a in allowed):
            raise GatewayError(
                "clients.allowed_remote_addresses: loopback_only = true allows only 127.0.0.1; "
                "set loopback_only = false to accept other hosts"
            )
        self._allowed = sorted(set(allowed))
        acc = acceptor_settings(
            state_dir / "clients",
            comp_id=config.comp_id,
            port=config.listen_port,
            clients=[(c.comp_id, c.allowed_remote_addresses) for c in config.clients],
            begin_string=begin,
            heartbeat_s=config.heartbeat_s,
            store=config.store,
        )
        venue = config.venue
        outbound = [(config.comp_id, venue.comp_id, venue.host, venue.port)]
        if config.drop_copy is not None:
            dc = config.drop_copy
            outbound.append((dc.sender_comp_id, dc.comp_id, dc.host, dc.port))
        ini = initiator_settings(
            state_dir / "venue",
            sessions=outbound,
            begin_string=begin,
            heartbeat_s=config.heartbeat_s,
            store=config.store,
            reconnect_s=venue.reconnect_s,
        )
        self._app = application(self)
        acc_settings, ini_settings = settings(acc), settings(ini)
        self._acceptor: Any = q.ThreadedSocketAcceptor(
            self._app,
            store_factory(config.store, acc_settings),
            acc_settings,
            log_factory(log_messages, acc_settings),
        )
        self._initiator: Any = q.SocketInitiator(
            self._app,
            store_factory(config.store, ini_settings),
            ini_settings,
            log_factory(log_messages, ini_settings),
        )

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Listen for clients (loopback-contained) and connect to the venue."""
        self._worker.start()
        self._acceptor.start()
        try:
            restrict_listener(self.cfg.listen_port, self._allowed)
        except GatewayError:
            self._acceptor.stop(True)
            raise
        self._initiator.start()

    @property
    def drop_copies_held(self) -> int:
        """Drop-copy reports held until the gateway can tell its own from another's (read
        under `lock`)."""
        return len(self._dc_held)

    def stop(self) -> None:
        """Stop both engines and free their sessions (a new gateway may reuse the ids)."""
        with self.lock:  # stop: nothing to send
            self.stopping = True  # session events from here on change nothing
        if self._initiator is not None:
            self._initiator.stop(True)
        if self._acceptor is not None:
            self._acceptor.stop(True)
        self._work.put(None)
        if self._worker.is_alive():
            self._worker.join(timeout=5)
        # QuickFIX keeps sessions in a process-wide registry until the engine object is
        # destroyed; dropping the last reference destroys it (no thread of ours sends now).
        self._initiator = self._acceptor = None
        with self._held():
            self._record_admin()
            self._flush_dc_held()
            if self._marked:
                self._left_at_stop()

    def _mark_left_working(self) -> None:
        """Before the first order of this process goes out, or once the start-up mass
        status adopted orders (caller holds the lock): a start without mass status after
        a crash must not arm on a book that lost them. Without mass status a failed write
        refuses the order (the caller's); with it, the mass status counts them: logged."""
        try:
            _write_whole(
                self.left_working,
                f"gateway {self.cfg.node} had orders at the venue and did not stop with "
                "none working (it may have crashed)\n",
            )
        except OSError as exc:
            if not self.cfg.venue.mass_status:
                raise GatewayError(f"{self.left_working}: cannot be written: {exc}") from None
            log.error("LEFT_WORKING_NOT_WRITTEN %s: %s", self.left_working, exc)
        self._marked = True  # tried once per process; the stop writes it again

    def _left_after_mass_status(self) -> None:
        """The venue's mass status said what works (caller holds the lock): the mark
        follows it, written over adopted orders, gone when none works."""
        if self.book.live():
            if not self._marked:
                self._mark_left_working()
            return
        with contextlib.suppress(OSError):  # stale: a start without mass status refuses
            self.left_working.unlink(missing_ok=True)

    def _left_at_stop(self) -> None:
        """At stop (caller holds the lock): the marker goes only if nothing is live;
        else it names what may still work at the venue."""
        live = self.book.live()
        try:
            if not live:
                self.left_working.unlink(missing_ok=True)
                _fsync_dir(self.left_working.parent)
                return
            lines = [
                f"gateway {self.cfg.node} stopped with {len(live)} order(s) live at the venue "
                "(ClOrdID, OrderID, symbol, side, leaves):"
            ]
            lines += [
                f"  {o.comp}:{o.clordid} {o.order_id} {o.symbol} {o.side.value} {o.leaves}"
                for o in live
            ]
            _write_whole(self.left_working, "\n".join(lines) + "\n")
        except OSError as exc:  # the marker written at the first order stays: fail closed
            log.error("LEFT_WORKING_NOT_UPDATED %s: %s", self.left_working, exc)

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        """The Guard's lock, with every send deferred until it is released.

        Nothing goes on a socket while the lock is held, so an engine thread waiting
        for the lock never also waits for another thread's write (or for the GIL
        that write gives up). Sends keep their order. A kill's cancel can therefore
        reach the venue before an order accepted an instant earlier; the venue
        refuses that cancel and the kill's drain sends another.
        """
        if getattr(self._tls, "box", None) is not None:
            with self.lock:  # nested: the outermost holder sends
                yield
            return
        box: list[tuple[Any, Any, tuple[str, str] | None]] = []
        self._tls.box = box
        try:
            with self.lock:
                yield
                if self._dc_held:
                    self._resolve_dc_held()
        finally:
            self._tls.box = None
            unsent = [ref for out, sid, ref in box if not self._deliver(out, sid, ref) and ref]
            for mtype, clordid in unsent:
                # a replace or cancel the venue session did not take: answered and rolled
                # back as one the venue refused (a kill's cancel is sent again by its drain)
                with self._held():
                    self.guard.note("not_sent", msg_type=mtype, clordid=clordid)
                    self._venue_refused(mtype, clordid, "the venue session did not take it")

    def _emit(self, msg: Any, sid: Any, ref: tuple[str, str] | None = None) -> None:
        """Send now, or when the lock is released if it is held (see `_held`); `ref`:
        (MsgType, ClOrdID) of an order, replace or cancel for the venue (`_deliver`)."""
        box = getattr(self._tls, "box", None)
        if box is None:
            self._deliver(msg, sid, ref)
        else:
            box.append((msg, sid, ref))

    def _deliver(self, msg: Any, sid: Any, ref: tuple[str, str] | None) -> bool:
        """Send; for an order, replace or cancel to the venue (`ref`), keep the MsgSeqNum
        it went under, so a session Reject of it (which names only that) finds it.

        The number is kept under `_sent_lock`, taken before the send: the worker that
        handles the venue's Reject takes it too (never holding the Guard's lock), so it
        never looks before the number is kept. Never raises: a send that raised is
        recorded and counts as not sent (False), so the caller answers and rolls back
        (an order left counted working for ever, its client never answered, before)."""
        if ref is None:
            return self._send(msg, sid)
        with self._sent_lock:
            ok = self._send(msg, sid)
            if ok:
                try:
                    seq = int(msg.getHeader().getField(F.MSG_SEQ_NUM))
                except Exception as exc:  # sent all the same: only its number is lost
                    self.errors.add("send (MsgSeqNum)", exc)
                    return ok
                sent = self._venue_sent
                if sent and seq <= next(reversed(sent)):
                    sent.clear()  # the session's numbers began again (a reset)
                sent[seq] = ref
                if len(sent) > MAX_SENT_REMEMBERED:
                    del sent[next(iter(sent))]
            return ok

    def _send(self, msg: Any, sid: Any) -> bool:
        try:
            return F.send(msg, sid)
        except Exception as exc:  # not sent: the caller answers and rolls back
            self.errors.add("send", exc)
            return False

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _run_worker(self) -> None:
        """Session events and venue rejects, in the order they came; between them (at
        least every `_sweep_s`), requests the venue left unanswered (`_sweep_unanswered`)."""
        every = to_ns(self._sweep_s)
        due = self.guard.clock.monotonic_ns() + every
        while True:
            try:
                job = self._work.get(timeout=self._sweep_s)
            except queue.Empty:
                job = self._sweep_unanswered
            if job is None:
                return
            jobs = [job]
            now = self.guard.clock.monotonic_ns()
            if now >= due or job == self._sweep_unanswered:
                due = now + every
                if job != self._sweep_unanswered:
                    jobs.append(self._sweep_unanswered)
            for run in jobs:
                try:
                    with self._held():
                        if self.stopping:
                            break
                    run()
                except Exception as exc:  # the worker carries the kill path: it must not die
                    self.errors.add("gateway worker", exc)

    # ------------------------------------------------------------------ unanswered requests
    def _await(self, clordid: str, go: GwOrder | None, req: Request | None) -> None:
        """An order (`req` None), replace or cancel sent to the venue under `clordid`, whose
        answer is awaited (caller holds the lock). With `MAX_AWAITING` awaited already, the
        oldest is looked at now (`_look_at`)."""
        due = self.guard.clock.monotonic_ns() + to_ns(self.answer_timeout_s)
        self._awaiting.append((due, clordid, go, req))
        if len(self._awaiting) > MAX_AWAITING:
            self._look_at(*self._awaiting.popleft(), early=True)

    def _sweep_unanswered(self) -> None:
        """Every request whose `answer_timeout_s` has passed while the venue session was
        logged on, looked at (worker): an answered one is dropped from the watch, an
        unanswered one is handled (`_unanswered`)."""
        if not self._awaiting and not self._kill_resend:
            return  # read without the lock: one sent meanwhile is looked at next time
        with self._held():
            if self.stopping or not self.venue_up:
                return  # the wait starts again at the logon (`_venue_logged_on`)
            now = self.guard.clock.monotonic_ns()
            awaiting = self._awaiting
            while awaiting and awaiting[0][0] <= now:
                self._look_at(*awaiting.popleft())
            if self._kill_resend:
                due = [e for e in self._kill_resend if e[0] <= now]
                self._kill_resend = [e for e in self._kill_resend if e[0] > now]
                for _, go, waited, previous, why in due:
                    if go.live and go.cancel_sent == waited and self._cancel_in_force(go):
                        self._resend_kill_cancel(go, why, previous)

    def _look_at(
        self, due: int, clordid: str, go: GwOrder | None, req: Request | None, early: bool = False
    ) -> None:
        """One awaited request at (or, `early`, before) its time `due` (caller holds the
        lock): still unanswered, it is handled (`_unanswered`); answered, nothing is done."""
        if req is None:
            # an order: any report applied to it (an ack, a fill, a reject) is an ExecID
            # of its own; a refusal of it by BusinessMessageReject or session Reject, or
            # one not sent, finished it
            if go is not None and go.live and not go.execs and go.order_id == "NONE":
                self._unanswered(F.NEW_ORDER, clordid, go, None)
        elif self.book.requests.get(clordid) is req:
            mtype = F.REPLACE if req.kind == "G" else F.CANCEL
            self._unanswered(mtype, clordid, req.order, req, due if early else 0)

    def _unanswered(
        self,
        mtype: str,
        clordid: str,
        go: GwOrder | None,
        req: Request | None,
        early_due: int = 0,
    ) -> None:
        """The venue never answered an order, replace or cancel within `answer_timeout_s`
        (caller holds the lock). It may have taken it (the answer lost) or not: neither
        can be assumed, so nothing is rolled back. An order stays counted working (the
        venue may hold it: its reservation is never released as if it never went out),
        and a kill cancels it; a replace keeps the larger of its old and new quantities
        reserved; a cancel leaves its order counted working. A kill's cancel is sent again
        by the gateway itself while the kill is in force (`_resend_kill_cancel`), at once
        (or, let go `early_due` before its time for `MAX_AWAITING`, at that time): before,
        only the kill's drain sent another, and it had ended long before (1.5 s against
        30), so the order could work on at the venue after a kill. Recorded
        (`venue_unanswered`), logged, the node halts
        `fill_mismatch` (the Guard's picture can no longer be vouched for), and the client
        gets a status report (ExecType I) under its ClOrdID saying so; so does the client
        of a mass cancel the cancel was one of (OrdStatus pending cancel, under the order's
        ClOrdID), as its MassCancelReport counted the order as affected. A request is no
        longer in flight (its memory is freed); the venue's late answer is applied as an
        answer to the order it names. A replace or cancel of an order that has ended since
        is only let go (`request_let_go`)."""
        names = {F.NEW_ORDER: "NewOrderSingle", F.REPLACE: "replace", F.CANCEL: "cancel"}
        gid = go.guard_id if go is not None else None
        mass = ""
        if req is not None:
            self.book.requests.pop(clordid, None)
            if req.kind == "F":
                self.book.unsend_cancel(req, clordid)  # its resend goes to the venue
            if go is not None and go.cancel_sent == clordid:
                go.cancel_sent = None  # the gateway's own cancel: a drain sends another
                # a later refusal of another cancel is not its mass cancel's
                mass, go.mass_cancel = go.mass_cancel, ""
        # a replace or cancel of an order that ended meanwhile (the venue filled, cancelled
        # or expired it, maybe reporting the end under the order's own ClOrdID, not the
        # request's): no answer can change anything, so it is let go, recorded, no halt
        if req is not None and go is not None and (req.released or not go.live):
            self.guard.note(
                "request_let_go", msg_type=mtype, clordid=F.clean(clordid)[:64], order_id=gid
            )
            return
        why = (
            f"no answer from the venue within answer_timeout_s={self.answer_timeout_s:g} s to "
            f"the {names[mtype]} {F.clean(clordid)[:64]}"
            + (f" of {gid}" if gid is not None else "")
        )
        self.guard.note(
            "venue_unanswered",
            msg_type=mtype,
            clordid=F.clean(clordid)[:64],
            order_id=gid,
            timeout_s=self.answer_timeout_s,
        )
        log.error("VENUE_UNANSWERED %s", why)
        self.guard.flag_mismatch(f"{why}: the venue may have taken it"[:400])
        if req is not None and req.kind == "KILL":
            # the gateway's own cancel: no client asked; the kill's order is cancelled again
            if go is not None and go.cancel_sent is None and self._cancel_in_force(go):
                if early_due:
                    self._kill_resend.append((early_due, go, None, clordid, "answer_timeout"))
                else:
                    self._resend_kill_cancel(go, "answer_timeout", clordid)
            elif mass and go is not None and (sid := self.client_sids.get(go.comp)) is not None:
                # a client's mass cancel's: nothing sends it again (its client is there to
                # cancel), but its MassCancelReport counted the order as affected, so the
                # client is told its state is unknown, pending cancel, under the order's
                # ClOrdID. Before, it was never told and took the order for cancelled
                self._send_status(
                    dataclasses.replace(go, status="6"),
                    sid,
                    msg_text=(
                        f"knightwatch:{R.FILL_MISMATCH.value} mass cancel {mass}: {why}; its "
                        "state at the venue is unknown: counted working, the node is halted"
                    )[:512],
                )
            return
        comp = req.comp if req is not None else go.comp if go is not None else ""
        sid = self.client_sids.get(comp)
        if sid is None:
            return
        shown = (req.answer_as or clordid) if req is not None else clordid
        extra: list[tuple[int, str]] = []
        if go is None:  # a cancel of an order the gateway does not hold
            go = GwOrder(comp, shown, "", comp, "", Side.BUY, "1", 0, None, status="8")
        elif req is not None:
            extra.append((F.ORIG_CL_ORD_ID, go.clordid))
        status = go.status
        if req is not None and go.live:
            status = "E" if req.kind == "G" else "6"
        text = f"knightwatch:{R.FILL_MISMATCH.value} {why}; its state at the venue is unknown"
        if go.live:
            text += ": counted working, the node is halted"
        self._send_status(
            dataclasses.replace(go, clordid=shown, status=status),
            sid,
            msg_text=text[:512],
            extra=extra,
        )

    # ------------------------------------------------------------------ engine callbacks
    def on_logon(self, sid: Any) -> None:
        key = F.session_key(sid)
        if key == self.venue_key:
            self._venue_events += 1
            event = self._venue_events
            self._work.put(lambda: self._venue_logged_on(event))
        elif key in self.clients:
            comp = F.target_of(sid)
            self._work.put(lambda: self._client_logged_on(comp))

    def on_logout(self, sid: Any) -> None:
        key = F.session_key(sid)
        if key == self.venue_key:
            # counted before the store: a logon handled meanwhile sees it and stays down
            self._venue_events += 1
            self.venue_up = False  # a plain store: new orders are refused from now on
            self._work.put(self._venue_logged_out)
        elif key in self.clients:
            comp = F.target_of(sid)
            self._work.put(lambda: self._client_logged_out(comp))

    def to_admin(self, msg: Any, sid: Any) -> None:
        # Called with the session's mutex held: never take the Guard's lock here.
        if F.msg_type(msg) == F.SESSION_REJECT:
            note: dict[str, str | int | None] = {
                "session": F.target_of(sid),
                "ref_seq": int(F.opt(msg, F.REF_SEQ_NUM) or 0),
                "ref_msg_type": F.opt(msg, F.REF_MSG_TYPE),
                "reason": int(F.opt(msg, F.SESSION_REJECT_REASON) or -1),
                "text": F.opt(msg, F.TEXT),
            }
            self._admin_notes.put(note)
            key = F.session_key(sid)
            reports = (F.EXECUTION_REPORT, F.TRADE_CAPTURE_REPORT)
            if key in (self.venue_key, self.dc_key) and note["ref_msg_type"] in reports:
                self._work.put(lambda: self._report_refused_by_engine(note, key))

    def _report_refused_by_engine(self, note: dict[str, str | int | None], key: str) -> None:
        """A venue report the engine refused before the gateway saw it (a field its data
        dictionary requires is missing or malformed, a type the version lacks): it was
        answered with a session Reject and dropped, so nothing of it was applied. The
        node halts `fill_mismatch`, as for a report the gateway cannot read (worker)."""
        with self._held():
            why = f"the FIX engine refused it (session reject reason {note['reason']}"
            why += f": {F.clean(str(note['text'] or ''))})"
            self._count("unapplied_reports")
            self.guard.note(
                "venue_report_unapplied",
                msg_type=note["ref_msg_type"],
                session=note["session"],
                ref_seq=note["ref_seq"],
                error=why[:400],
            )
            self.guard.flag_mismatch(
                f"venue message {note['ref_msg_type']} (MsgSeqNum {note['ref_seq']}) not "
                f"applied: {why}"[:400]
            )
            if key == self.venue_key and note["ref_msg_type"] == F.EXECUTION_REPORT:
                # while the start-up mass status is read: it may have been one of its
                # reports (its last, which ends reconciliation), an order nobody can count
                self._reconcile_failed(
                    f"venue report MsgSeqNum {note['ref_seq']}, which came while the "
                    f"OrderMassStatusRequest {self._mass_status_id} was answered, was refused "
                    f"by the FIX engine ({why[:300]}): a working order may not be counted"
                )

    def from_admin(self, msg: Any, sid: Any) -> None:
        # A session Reject (35=3) from the venue of an order, replace or cancel the gateway
        # sent: that message was not taken. Handled on the worker (a session mutex may be
        # held here).
        key = F.session_key(sid)
        mtype = F.msg_type(msg)
        if mtype == F.LOGON and key in (self.venue_key, self.dc_key):
            # read on the session's own thread before any message the logon's resend
            # brings (the engine calls this for the Logon before it asks for the gap)
            seq = int(F.hdr(msg, F.MSG_SEQ_NUM) or 0)
            first = self._first_seq.get(key)
            self._first_seq[key] = seq if first is None else min(first, seq)
        if key != self.venue_key:
            return
        if (mtype == F.LOGON and F.opt(msg, F.RESET_SEQ_NUM_FLAG) == "Y") or (
            mtype == F.SEQUENCE_RESET and F.opt(msg, F.GAP_FILL_FLAG) != "Y"
        ):
            what = (
                "a Logon with ResetSeqNumFlag(141)=Y"
                if mtype == F.LOGON
                else f"a SequenceReset to NewSeqNo(36)={F.opt(msg, F.NEW_SEQ_NO)} (no gap fill)"
            )
            self._work.put(lambda: self._venue_sequence_reset(what))
            return
        if mtype != F.SESSION_REJECT:
            return
        ref_type = F.opt(msg, F.REF_MSG_TYPE)
        text = F.clean(F.opt(msg, F.TEXT) or "")
        reason = F.opt(msg, F.SESSION_REJECT_REASON)
        if ref_type == F.MASS_STATUS:
            why = f"session reject reason {reason}: {text}"

            def refused() -> None:
                with self._held():
                    self._mass_status_refused(why)

            self._work.put(refused)
            return
        if ref_type not in (F.NEW_ORDER, F.REPLACE, F.CANCEL):
            return
        ref_seq = int(F.opt(msg, F.REF_SEQ_NUM) or 0)
        self._work.put(lambda: self._venue_session_reject(ref_seq, ref_type, reason, text))

    def _venue_sequence_reset(self, what: str) -> None:
        """The venue session's numbers began again (worker): what the venue sent since the
        gateway last read it is never resent, so a fill or a cancel of a working order may
        be lost. Before, QuickFIX took the reset and nothing was said: the Guard counted
        such an order working, its position without the fill. With orders working (or
        requests unanswered) after start-up reconciliation, the node halts `fill_mismatch`
        naming it, recorded `venue_sequence_reset`; a kill still cancels every order."""
        with self._held():
            working = len(self.book.working)
            self.guard.note(
                "venue_sequence_reset", session=self.venue_key, what=what, working=working
            )
            if not self.reconciled.is_set() or (not working and not self.book.requests):
                return  # start-up reconciliation reads the venue's state, or nothing to lose
            log.error("VENUE_SEQUENCE_RESET %s with %d order(s) working", what, working)
            self.guard.flag_mismatch(
                f"the venue session reset its sequence numbers ({what}) with {working} "
                "order(s) working: reports it sent meanwhile may be lost"
            )
            if self.venue_up:  # else the logon that follows sends them
                # the answer to a kill's cancel in flight may be among what was lost
                self._resend_lost_kill_cancels("venue_sequence_reset")

    def to_app(self, msg: Any, sid: Any) -> None:
        # Never resend an order late: an order the venue did not get before its session
        # dropped is gap-filled, and the client told it was not sent.
        h = msg.getHeader()
        if h.isSetField(F.POSS_DUP) and h.getField(F.POSS_DUP) == "Y":
            mtype = F.msg_type(msg)
            if F.session_key(sid) == self.venue_key and mtype in (F.NEW_ORDER, F.REPLACE):
                clordid = msg.getField(F.CL_ORD_ID)
                self._work.put(lambda: self._not_sent(mtype, clordid))
                raise fix().DoNotSend()

    def from_app(self, msg: Any, sid: Any) -> None:
        key = self._key(sid)
        m = F.In(msg)
        if key == self.venue_key:
            self._from_venue(m)
        elif key == self.dc_key:
            self._from_drop_copy(m)
        else:
            client = self.clients.get(key)
            if client is None:
                raise fix().UnsupportedMessageType()
            self._from_client(m, sid, client.comp_id)

    def _key(self, sid: Any) -> str:
        """The session's key; cached by the engine object's address (one call per session)."""
        ptr = int(sid.this)
        key = self._keys.get(ptr)
        if key is None:
            key = self._keys[ptr] = F.session_key(sid)
        return key

    def on_error(self, where: str, text: str, raw: Any, sid: Any) -> None:
        """A handler raised: answer the message with a reject (fail closed) and record it."""
        key = F.session_key(sid)
        msg = F.In(raw)
        with self._held():
            self.guard.note("gateway_error", where=where, error=text[:400], session=key)
            d = Decision(
                False, R.GATEWAY_ERROR, f"the gateway could not handle this message: {text}"
            )
            if key in (self.venue_key, self.dc_key):
                # the venue's report was not applied: the Guard's picture can no longer be trusted
                self.guard.flag_mismatch(f"venue message not applied ({text})"[:400])
                return
            mtype = msg.mtype
            if mtype == F.NEW_ORDER:
                self._send_reject(msg, sid, d)
            elif mtype in (F.REPLACE, F.CANCEL):
                self._send_cancel_reject(msg, sid, None, d, mtype)
            else:
                self._send_business_reject(msg, sid, d)

    # ------------------------------------------------------------------ client messages
    def _from_client(self, msg: F.In, sid: Any, comp: str) -> None:
        mtype = msg.mtype
        if mtype not in _ALLOWED:
            with self._held():
                self._record_in(msg, comp, mtype, None)
                self._count("unsupported")
                d = Decision(
                    False,
                    R.UNSUPPORTED_MESSAGE,
                    f"message type {mtype} cannot be checked by the Guard; refused",
                )
                self.guard.note("fix_refused", session=comp, msg_type=mtype, reason=d.reason.value)
                self._send_business_reject(msg, sid, d)
            return
        if len(msg.raw) > MAX_CLIENT_MESSAGE:
            self._refuse_unreadable(
                msg, sid, comp, f"message of {len(msg.raw):,} characters > {MAX_CLIENT_MESSAGE:,}"
            )
        elif (bad_tag := F.undecodable(msg)) is not None:
            self._refuse_unreadable(msg, sid, comp, f"tag {bad_tag} holds bytes that are not UTF-8")
        elif mtype == F.NEW_ORDER:
            self._new_order(msg, sid, comp)
        elif mtype == F.CANCEL:
            self._cancel(msg, sid, comp)
        elif mtype == F.REPLACE:
            self._replace(msg, sid, comp)
        elif mtype == F.MASS_CANCEL:
            self._mass_cancel(msg, sid, comp)
        elif mtype == F.STATUS_REQUEST:
            self._status_request(msg, sid, comp)
        else:
            self._mass_status(msg, sid, comp)

    def _refuse_unreadable(self, msg: F.In, sid: Any, comp: str, why: str) -> None:
        """A message the Guard cannot read as the venue would is neither checked nor
        forwarded: bytes that are not UTF-8 (the answer shows them as U+FFFD), or a size
        no order needs (a megabyte of Text would go to the venue and the log unread)."""
        mtype = msg.mtype
        d = Decision(False, R.INVALID_ORDER, f"{why}; nothing was checked or forwarded")
        with self._held():
            self._record_in(msg, comp, mtype, None)
            self._count("refused")
            self.guard.note("fix_refused", session=comp, msg_type=mtype, reason=d.reason.value)
            if mtype == F.NEW_ORDER:
                gid = f"{comp}:{F.clean(msg.get(F.CL_ORD_ID) or '')}"
                self.guard.refuse(self._unparsed(msg, gid, self._strategy_of(comp)), d)
                self._send_reject(msg, sid, d)
            elif mtype in (F.REPLACE, F.CANCEL):
                self._send_cancel_reject(msg, sid, None, d, mtype)
            else:
                self._send_business_reject(msg, sid, d)

    def _record_in(self, msg: F.In, comp: str, mtype: str, guard_id: str | None) -> None:
        """Provenance of a client message in the flight recorder (D2): session, seq, hash."""
        self._record_admin()
        self.guard.note(
            "fix_in",
            order_id=guard_id,
            session=comp,
            seq=int(msg[F.MSG_SEQ_NUM]),
            msg_type=mtype,
            clordid=F.clean(msg.get(F.CL_ORD_ID) or "") or None,
            raw_sha256=F.raw_hash(msg),
            resent=msg.resent,
        )

    def _record_admin(self) -> None:
        """Session-level rejects QuickFIX sent (malformed messages) into the recorder."""
        if self._admin_notes.empty():
            return
        while True:
            try:
                note = self._admin_notes.get_nowait()
            except queue.Empty:
                return
            self._count("session_rejects")
            self.guard.note("fix_session_reject", **note)

    def _new_order(self, msg: F.In, sid: Any, comp: str) -> None:
        with self._held():
            forward = self._decide_new(msg, sid, comp)
        if forward is None:
            return
        if self._deliver(forward, self.venue_sid, (F.NEW_ORDER, msg[F.CL_ORD_ID])):
            # counted once it went out: before, an order the venue session did not take
            # was counted forwarded (and never refused) in the gateway's metrics
            with self.lock:
                self._count("forwarded")
            return
        with self._held():  # accepted, but the venue session did not take it
            d = Decision(False, R.VENUE_UNAVAILABLE, "the venue session did not take the order")
            self._unroute(f"{comp}:{msg[F.CL_ORD_ID]}", d)
            self._count("refused")
            self._send_reject(msg, sid, d)

    def _unroute(self, gid: str, d: Decision) -> None:
        """An order the Guard accepted that never reached the venue (caller holds the
        lock): its working quantity is released (`on_reject`), it is finished in the
        book, and a resend of it is answered with `d`."""
        self.guard.on_reject(gid)
        held = self.book.decided.get(gid)
        if held is not None and held[1] is not None:
            self.book.set_status(held[1], "8")
        self.book.decide(gid, d, None)
        self.guard.note("not_sent", order_id=gid, reason=d.reason.value)

    def _decide_new(self, msg: F.In, sid: Any, comp: str) -> Any | None:
        """Check a NewOrderSingle (caller holds the lock); the message for the venue, if any."""
        clordid = msg[F.CL_ORD_ID]
        gid = f"{comp}:{clordid}"
        self._record_in(msg, comp, F.NEW_ORDER, gid)
        if gid in self.book.decided and msg.resent:
            self._answer_resend(msg, sid, gid)
            return None
        client = self.cfg.client(comp)
        assert client is not None
        parsed = self._parse_order(msg, gid, client.strategy_name)
        if isinstance(parsed, Decision):
            self.guard.refuse(self._unparsed(msg, gid, client.strategy_name), parsed)
            d = parsed
        elif not self.venue_up:
            d = Decision(
                False,
                R.VENUE_UNAVAILABLE,
                f"venue session {self.venue_key} is not logged on; nothing can be routed",
            )
            self.guard.refuse(parsed, d)
        elif not self.book.free(clordid, comp):
            d = Decision(
                False,
                R.DUPLICATE_ORDER_ID,
                f"ClOrdID(11) {clordid} is in use on the venue session (by another session, "
                "an order or a request in flight)",
            )
            self.guard.refuse(parsed, d)
        else:
            self._register_parent(parsed, msg)
            d = self.guard.check(parsed)
        if not d.accepted or isinstance(parsed, Decision):
            self._count("refused")
            self.book.refused(gid, d)
            self._send_reject(msg, sid, d)
            return None
        try:
            # claimed only once accepted: an order that never reached the venue holds no
            # id another session could then not use
            if not self._marked:
                self._mark_left_working()  # once per process, before anything goes out
            self.book.claim(clordid, comp)
            venue_symbol, id_source = self._venue_instrument(msg)
            go = GwOrder(
                comp=comp,
                clordid=clordid,
                guard_id=gid,
                strategy=parsed.strategy,
                symbol=parsed.symbol,
                side=parsed.side,
                fix_side=msg[F.SIDE],
                qty=parsed.qty,
                price=parsed.price,
                parent_id=parsed.parent_id,
                cod=_cancel_on_disconnect(msg),
                leaves=parsed.qty,
                venue_symbol=venue_symbol,
                id_source=id_source,
            )
            self.book.add(go)
            self.book.decide(gid, d, go)
            out = F.forward_copy(msg)
            self._await(clordid, go, None)
        except Exception as exc:
            # accepted, but the message for the venue could not be made: never sent, so
            # it must not stay counted working; the client's reject comes from `on_error`
            self._unroute(gid, Decision(False, R.GATEWAY_ERROR, f"not sent to the venue: {exc}"))
            self._count("refused")
            raise
        return out

    def _parse_order(self, msg: F.In, gid: str, strategy: str) -> Order | Decision:
        """The Guard's `Order` for a NewOrderSingle, or the refusal naming what is wrong."""

        def bad(what: str) -> Decision:
            return Decision(False, R.INVALID_ORDER, what)

        symbol = self._instrument(msg)
        if (why := self._instrument_problem(msg, "to name the instrument", "order")) is not None:
            return bad(why)
        assert symbol is not None  # else named by `_instrument_problem`
        for why, family in _TERMS:
            if terms := [f"{name}({tag})" for tag, name in family if tag in msg]:
                return bad(
                    f"{', '.join(terms)} cannot be checked ({why}); send the order without them"
                )
        for num, name, only, why in _ONLY:
            if (value := msg.get(num)) is not None and value != only:
                field = f"{name}({num})"
                send = "the order without it" if only is None else f"{field}={only} or none"
                return bad(
                    f"{field}={F.clean(value)[:32]!r} cannot be checked ({why}); send {send}"
                )
        for cur_tag, cur_name, reads in (
            (15, "Currency", "reads Price(44) in it"),
            (120, "SettlCurrency", "counts the trade in it, not converted into another"),
        ):
            # the venue reads Price(44) in that currency (or settles the trade converted
            # into it), the Guard in its own
            if (currency := msg.get(cur_tag)) is None or currency == self.cfg.currency:
                continue
            if self.cfg.currency is None:
                return bad(
                    f"{cur_name}({cur_tag})={F.clean(currency)[:32]!r} cannot be checked (no "
                    "currency is configured for the gateway: set `currency` in its config, or "
                    "send the order without it)"
                )
            return bad(
                f"{cur_name}({cur_tag})={F.clean(currency)[:32]!r} is not the gateway's currency "
                f"{self.cfg.currency} (the Guard {reads})"
            )
        side = _SIDES.get(msg[F.SIDE])
        if side is None:
            return bad(f"Side(54)={msg[F.SIDE]} is not supported by the gateway")
        qty_text = msg.get(F.ORDER_QTY)
        if qty_text is None:
            return bad("OrderQty(38) is required")
        if F.CASH_ORDER_QTY in msg:
            return bad(
                "CashOrderQty(152) cannot be checked (the quantity is only known at the "
                "venue); give OrderQty(38) alone"
            )
        try:
            qty = self.guard.lots(symbol, qty_text)
        except InvalidOrder as exc:
            return bad(f"OrderQty(38): {str(exc).removeprefix('qty: ')}")
        ord_type = msg[F.ORD_TYPE]
        price: float | None = None
        if ord_type in _LIMIT_TYPES:
            text = msg.get(F.PRICE)
            if text is None:
                return bad(f"Price(44) is required for OrdType(40)={ord_type}")
            try:
                price = float(text)
            except ValueError:
                return bad(f"Price(44): must be a number (got {F.clean(text)[:32]!r})")
        elif ord_type not in _MARKET_TYPES:
            return bad(f"OrdType(40)={ord_type} is not supported by the gateway")
        parent_id = msg.get(self.cfg.parent_tag)
        if parent_id is not None:
            refused = self._parent(symbol, parent_id, msg.get(self.cfg.parent_qty_tag))
            if refused is not None:
                return refused
        try:
            return Order(gid, strategy, symbol, side, qty, price, parent_id)
        except InvalidOrder as exc:
            # the FIX tag the rule is about, as every other refusal names it (before, a
            # price <= 0 was refused "price: must be > 0", no tag an OMS could look up)
            tags = {
                "id": "ClOrdID(11)",
                "symbol": self._instrument_name(),
                "qty": "OrderQty(38)",
                "price": "Price(44)",
                "parent_id": f"tag {self.cfg.parent_tag} (parent)",
            }
            rule = str(exc).removeprefix(f"{exc.field}: ")
            return bad(f"{tags.get(exc.field, exc.field)}: {rule}")

    def _parent(self, symbol: str, parent_id: str, qty_text: str | None) -> Decision | None:
        """The refusal of a child whose parent quantity is unreadable or disagrees with
        the parent's registered one; registering is `_register_parent`'s, once nothing
        but the Guard can refuse the order."""
        known = self.guard.parent_qty(parent_id)
        if qty_text is None:
            return None
        where = f"tag {self.cfg.parent_qty_tag} (parent quantity)"
        try:
            qty = self.guard.lots(symbol, qty_text)
        except InvalidOrder as exc:
            return Decision(False, R.INVALID_ORDER, f"{where}: {exc}")
        if known is not None and known != qty:
            return Decision(
                False,
                R.INVALID_ORDER,
                f"{where}: parent {parent_id} was registered with qty {known}; this child "
                f"says {qty}",
            )
        return None

    def _register_parent(self, order: Order, msg: F.In) -> None:
        """Register the parent a new order names with its quantity the first time (caller
        holds the lock), just before the Guard checks the order against it. Never for a
        request the gateway refuses itself, nor for a replace (it keeps its order's
        parent): before, a parsed request registered its parent whatever came of it, and
        a refused replace naming a new parent left it registered at that quantity (a
        later child of that parent with its true quantity was then refused)."""
        qty_text = msg.get(self.cfg.parent_qty_tag)
        if order.parent_id is None or qty_text is None:
            return
        if self.guard.parent_qty(order.parent_id) is None:
            # read and checked by `_parent` while the order was parsed, under this lock
            self.guard.register_parent(order.parent_id, self.guard.lots(order.symbol, qty_text))

    def _instrument_name(self) -> str:
        return "SecurityID(48)" if self.cfg.instrument == "security_id" else "Symbol(55)"

    def _instrument_tag(self) -> int:
        return F.SECURITY_ID if self.cfg.instrument == "security_id" else F.SYMBOL

    def _instrument(self, msg: F.In) -> str | None:
        return msg.get(self._instrument_tag())

    def _id_source_problem(self, msg: F.In) -> str | None:
        """Why `msg`'s SecurityID(48) is not read under the configured `security_id_source`
        (with SecurityIDs; None when it is): the Guard keys the SecurityID string alone,
        so one under another source would share another instrument's price, position and
        limits. Before, SecurityIDSource(22) was not read at all."""
        want = self.cfg.security_id_source
        if self.cfg.instrument == "symbol" or want is None:
            return None
        got = msg.get(F.ID_SOURCE)
        if got is None:
            return (
                f"SecurityIDSource(22) is required with SecurityID(48) (the gateway's "
                f"security_id_source is {want})"
            )
        if got != want:
            return (
                f"SecurityIDSource(22)={F.clean(got)[:16]!r} is not the gateway's "
                f"security_id_source {want} (the Guard keys SecurityID(48) under that "
                "source alone)"
            )
        return None

    def _instrument_problem(self, msg: F.In, what: str, request: str) -> str | None:
        """Why a client's `request` (an order, or a mass request by instrument) does not
        name its instrument as the Guard keys it, `what` the instrument is required for;
        None when it does. A mass cancel or mass status by instrument is read as an order
        is: before, one naming the SecurityID under another source, or a Symbol with a
        SymbolSfx, a SecurityID or another listing, was matched on the Guard's key alone
        and widened to the client's orders of another instrument (cancelled, or reported
        as the one asked about)."""
        if self._instrument(msg) is None:
            return f"{self._instrument_name()} is required {what}"
        if (why := self._id_source_problem(msg)) is not None:
            return why
        if self.cfg.instrument == "symbol" and F.SECURITY_ID in msg:
            # the venue may trade the SecurityID's instrument while the Guard checked the
            # Symbol's: an order naming both cannot be checked as the venue reads it
            return (
                'SecurityID(48) cannot be checked with instrument = "symbol" (the Guard '
                f"checks Symbol(55)); send the {request} without it"
            )
        if self.cfg.instrument == "symbol" and (
            qualified := [f"{name}({tag})" for tag, name in _QUALIFIERS if tag in msg]
        ):
            # the venue trades the instrument these name under the Symbol (a share class,
            # a contract month, an option series), at its own price, while the Guard
            # checks the Symbol's: BRK with SymbolSfx A was checked at the B shares' price
            return (
                f'{", ".join(qualified)} cannot be checked with instrument = "symbol" (the '
                "Guard checks Symbol(55) alone); name the instrument in Symbol(55) only"
            )
        if listed := [f"{name}({tag})" for tag, name in _LISTING if tag in msg]:
            # another listing (its own price and currency) or an identifier the venue may
            # resolve otherwise than the one the Guard checked: before, forwarded unchecked
            return (
                f"{', '.join(listed)} cannot be checked (the Guard checks "
                f"{self._instrument_name()} alone); name the instrument in it only"
            )
        return None

    def _venue_instrument(self, msg: F.In) -> tuple[str, str]:
        """What else names an order's instrument to the venue (`GwOrder.venue_symbol`,
        `id_source`): with SecurityIDs, the Symbol(55) and SecurityIDSource(22) of the
        order or of the venue's status report of it; nothing with symbols."""
        if self.cfg.instrument == "symbol":
            return "", ""
        return msg.get(F.SYMBOL) or "", msg.get(F.ID_SOURCE) or ""

    def _instrument_fields(self, go: GwOrder) -> list[tuple[int, str]]:
        """The instrument of the gateway's own message about `go`, as the venue and the
        client know it (a cancel to the venue, a report to the client). With SecurityIDs:
        its Symbol(55) (`[N/A]` if it had none: FIX 4.2 requires one), SecurityID(48) and
        SecurityIDSource(22). Before, the SecurityID went as Symbol(55): a venue that
        matches a cancel's instrument refused every kill's cancel, and a client OMS that
        matches reports by instrument took a status report for another instrument's. A
        placeholder of no order (`symbol` empty) names no SecurityID (Symbol `NA`)."""
        if self.cfg.instrument == "symbol":
            return [(F.SYMBOL, go.symbol or "NA")]
        fields = [(F.SYMBOL, go.venue_symbol or "[N/A]")]
        if go.symbol not in ("?", ""):  # "?": an adopted order whose report named none
            fields.append((F.SECURITY_ID, go.symbol))
            if go.id_source:
                fields.append((F.ID_SOURCE, go.id_source))
        return fields

    @staticmethod
    def _report_side(msg: F.In) -> Side:
        """The Guard side of a venue report's Side(54); ValueError for one it has none for."""
        side = _SIDES.get(msg[F.SIDE])
        if side is None:
            raise ValueError(f"Side(54)={msg[F.SIDE]} is not supported by the gateway")
        return side

    def _strategy_of(self, comp: str) -> str:
        """The Guard strategy a session's orders are checked under (its CompID if the
        config names none): a refusal the gateway records itself is filed there too, as
        the Guard's own are. Before, a replace naming an order the gateway does not hold
        was filed under the CompID, and a review of the desk's refusals missed it."""
        client = self.cfg.client(comp)
        return client.strategy_name if client is not None else comp

    def _unparsed(self, msg: F.In, gid: str, strategy: str) -> Unparsed:
        """The order as the flight recorder files a refusal the gateway made itself: its
        side as the Guard's records name it (`buy`, `sell`; a code the gateway does not
        map, as sent), so a search by side finds these with the Guard's own."""
        price = msg.get(F.PRICE)
        try:
            px = float(price) if price is not None else None
        except ValueError:
            px = None
        qty = msg.get(F.ORDER_QTY) or "0"
        try:
            q = int(Decimal(qty)) if Decimal(qty) == Decimal(qty).to_integral_value() else 0
        except InvalidOperation:
            q = 0
        parent = msg.get(self.cfg.parent_tag)
        return Unparsed(
            gid,
            strategy,
            F.clean(self._instrument(msg) or ""),
            side.value if (side := _SIDES.get(code := msg.get(F.SIDE) or "")) else F.clean(code),
            q,
            px,
            None if parent is None else F.clean(parent),
        )

    def _answer_resend(self, msg: F.In, sid: Any, gid: str) -> None:
        """A resent order already decided: the same answer again, nothing checked or forwarded."""
        self._count("resends")
        d, go = self.book.decided[gid]
        self.guard.note("fix_resend", order_id=gid, accepted=d.accepted, reason=d.reason.value)
        if go is None:
            self._send_reject(msg, sid, d)
        else:
            self._send_status(go, sid, msg_text="resent order already routed; not sent again")

    def _cancel(self, msg: F.In, sid: Any, comp: str) -> None:
        clordid = msg[F.CL_ORD_ID]
        orig = msg[F.ORIG_CL_ORD_ID]
        with self._held():
            self._record_in(msg, comp, F.CANCEL, f"{comp}:{orig}")
            if msg.resent and self._answer_cancel_resend(msg, sid, comp):
                return
            go = self.book.find(orig)
            # an id the order no longer answers to (replaced since) has its owner still:
            # the venue may resolve it to the order
            owner = go.comp if go is not None else self.book.owner.get(orig, comp)
            refused: Decision | None = None
            if owner not in (comp, RECONCILED):
                # another client's order: refused here, as if unknown (the venue, one
                # session for every client, would cancel it)
                go = None
                refused = Decision(
                    False,
                    R.INVALID_ORDER,
                    f"OrigClOrdID(41): order {orig} is not an order of {comp}",
                )
            elif not self.venue_up:
                refused = Decision(False, R.VENUE_UNAVAILABLE, "venue session is not logged on")
            if refused is not None:
                self._count("refused")
                self.guard.note(
                    "fix_refused", session=comp, msg_type=F.CANCEL, reason=refused.reason.value
                )
                # the latest cancel under this id never reached the venue: a resend goes out
                self.book.cancels.pop(f"{comp}:{clordid}", None)
                self._send_cancel_reject(msg, sid, go, refused, F.CANCEL)
                return
            # forwarded whatever the Guard holds (the venue decides: "unknown order"), and
            # counted: a loop cancelling orders the Guard does not hold halts the node
            self.guard.on_cancel_request(go.guard_id if go is not None else f"{comp}:{orig}")
            targets = self._adopted_under(go, orig, msg.get(F.ORDER_ID))
            sent: list[tuple[str, Request]] = []
            for target in targets:
                out = F.forward_copy(msg)
                if target is not None and (len(targets) > 1 or target is not go):
                    # one of two working orders adopted under this ClOrdID: named by its
                    # own venue OrderID, or the venue could take either for the other
                    out.setField(F.ORDER_ID, target.order_id)
                if clordid == orig or not self.book.free(clordid, comp):
                    # the id names an order or a request in flight (or another session used
                    # it, or names this cancel's other order): the venue's answer would be
                    # applied to that one. A cancel is never refused for its id: it goes
                    # under the gateway's own, answered under this
                    venue_id = self.book.next_id("KW-")
                    out.setField(F.CL_ORD_ID, venue_id)
                    req = self.book.requests[venue_id] = Request(
                        "F", comp, target, answer_as=clordid
                    )
                    self._await(venue_id, target, req)
                    self.guard.note(
                        "cancel_renamed", session=comp, clordid=clordid, sent_as=venue_id
                    )
                else:
                    self.book.claim(clordid, comp)
                    req = self.book.requests[clordid] = Request("F", comp, target)
                    self._await(clordid, target, req)
                sent_as = out.getField(F.CL_ORD_ID)
                sent.append((sent_as, req))
                self._count("cancels")
                self._emit(out, self.venue_sid, (F.CANCEL, sent_as))
            # before the sends go out (`_held`): one the venue session does not take
            # forgets it again (`_venue_refused`)
            self.book.sent_cancel(comp, clordid, SentCancel(orig, tuple(sent)))

    def _answer_cancel_resend(self, msg: F.In, sid: Any, comp: str) -> bool:
        """A resent cancel (caller holds the lock): if this session's cancel under its
        ClOrdID, of the same OrigClOrdID, went to the venue, it is not sent again (True).
        Still in flight, nothing is sent now: the venue's answer to the first reaches
        the client under this ClOrdID. Answered, the client gets what it was answered:
        the same OrderCancelReject, or a status report of the order (cancelled, or
        working on if the venue refused the cancel by ExecutionReport). False: the first
        never reached the venue (or was never seen), so the resend is forwarded."""
        clordid = msg[F.CL_ORD_ID]
        orig = msg[F.ORIG_CL_ORD_ID]
        first = self.book.cancels.get(f"{comp}:{clordid}")
        if first is None or first.orig != orig:
            return False
        flying = self.book.cancel_in_flight(first)
        orders = [r.order for _, r in first.sent if r.order is not None]
        self._count("resends")
        self.guard.note(
            "cancel_resend",
            session=comp,
            clordid=F.clean(clordid)[:64],
            orig_clordid=F.clean(orig)[:64],
            order_id=orders[0].guard_id if orders else None,
            in_flight=flying,
        )
        if flying:
            return True
        for _, req in first.sent:
            go = req.order
            if req.reject:
                self._emit(F.message(F.CANCEL_REJECT, [(F.CL_ORD_ID, clordid), *req.reject]), sid)
            elif go is None:  # an order the gateway does not hold: the venue answered so
                unknown = GwOrder(comp, clordid, "", comp, "", Side.BUY, "1", 0, None, status="8")
                self._send_status(
                    unknown,
                    sid,
                    msg_text="unknown order; resent cancel already answered, not sent again",
                    extra=[(F.ORIG_CL_ORD_ID, orig)],
                )
            else:
                self._send_status(
                    dataclasses.replace(go, clordid=clordid),
                    sid,
                    msg_text="resent cancel already answered; not sent again",
                    extra=[(F.ORIG_CL_ORD_ID, orig)],
                )
        return True

    def _adopted_under(
        self, go: GwOrder | None, orig: str, order_id: str | None
    ) -> list[GwOrder | None]:
        """The orders a client's cancel naming `orig` is for (caller holds the lock): the
        order it names, unless start-up adopted more than one working order under that
        ClOrdID (`_adopt`). Then every one of them that is live, each cancelled naming
        its own venue OrderID (a cancel naming only the ClOrdID reached one of them, and
        no client could name the other), or the one the cancel's OrderID(37) names."""
        if go is None or go.comp != RECONCILED:
            return [go]  # only adopted orders share a ClOrdID at the venue
        group = [go, *(o for o in self.book.working.values() if o.venue_clordid == orig)]
        if len(group) == 1:
            return [go]
        named = [o for o in group if o.order_id == order_id]
        if named:
            return [named[0]]
        live: list[GwOrder | None] = [o for o in group if o.live]
        return live or [go]

    def _replace(self, msg: F.In, sid: Any, comp: str) -> None:
        clordid = msg[F.CL_ORD_ID]
        orig = msg[F.ORIG_CL_ORD_ID]
        new_gid = f"{comp}:{clordid}"
        with self._held():
            self._record_in(msg, comp, F.REPLACE, new_gid)
            if new_gid in self.book.decided and msg.resent:
                self._answer_replace_resend(msg, sid, comp, new_gid)
                return
            go = self._visible(self.book.find(orig), comp)
            d: Decision | None = None
            if go is None or go.comp != comp or not go.live:
                d = Decision(
                    False,
                    R.INVALID_ORDER,
                    f"OrigClOrdID(41): order {orig} is not a working order of {comp}",
                )
            elif not self.venue_up:
                d = Decision(False, R.VENUE_UNAVAILABLE, "venue session is not logged on")
            elif not self.book.free(clordid, comp):
                # an order's or a request's: the venue's answer to this replace would be
                # applied to that one (and the answer to that one to this)
                d = Decision(False, R.DUPLICATE_ORDER_ID, f"ClOrdID(11) {clordid} is in use")
            else:
                parsed = self._parse_order(msg, new_gid, go.strategy)
                if isinstance(parsed, Decision):
                    d = parsed
                elif changed := [
                    tag
                    for tag, differs in (
                        (self._instrument_name(), parsed.symbol != go.symbol),
                        ("Side(54)", parsed.side is not go.side),
                        (
                            f"tag {self.cfg.parent_tag} (parent)",
                            parsed.parent_id is not None and parsed.parent_id != go.parent_id,
                        ),
                    )
                    if differs
                ]:
                    # the Guard checks the order's own; the venue would get these
                    d = Decision(
                        False,
                        R.INVALID_ORDER,
                        f"{', '.join(changed)}: a replace keeps the instrument, Side(54) and "
                        f"parent of order {orig}",
                    )
                else:
                    order = Order(
                        new_gid,
                        go.strategy,
                        go.symbol,
                        go.side,
                        parsed.qty,
                        parsed.price,
                        go.parent_id,
                    )
                    checked = self.guard.check_replace(go.guard_id, order)
                    if checked.accepted:
                        self.book.claim(clordid, comp)
                        self.book.decide(new_gid, checked, go)
                        req = self.book.requests[clordid] = Request(
                            "G",
                            comp,
                            go,
                            new_gid,
                            parsed.qty,
                            parsed.price,
                            cod=_cancel_on_disconnect(msg),
                        )
                        self._await(clordid, go, req)
                        self._count("replaces")
                        self._emit(F.forward_copy(msg), self.venue_sid, (F.REPLACE, clordid))
                        return
                    else:
                        self.book.refused(new_gid, checked)
                        self._count("refused")
                        self._send_cancel_reject(msg, sid, go, checked, F.REPLACE)
                        return
            # refused by the gateway itself: recorded here (the Guard records its own)
            strategy = go.strategy if go is not None else self._strategy_of(comp)
            self.guard.refuse(self._unparsed(msg, new_gid, strategy), d)
            self.book.refused(new_gid, d)
            self._count("refused")
            self._send_cancel_reject(msg, sid, go, d, F.REPLACE)

    @staticmethod
    def _visible(go: GwOrder | None, comp: str) -> GwOrder | None:
        """The order a client's replace names, as that client may see it: another client's
        order is none (refused as unknown, as a cancel of it is: before, the refusal gave
        the other client's OrderID and OrdStatus, and was recorded under its strategy)."""
        return go if go is None or go.comp in (comp, RECONCILED) else None

    def _answer_replace_resend(self, msg: F.In, sid: Any, comp: str, new_gid: str) -> None:
        """A resent replace already decided (caller holds the lock): never checked or sent
        again, always answered. Refused (by the Guard, the gateway or the venue): the
        same OrderCancelReject. In flight: nothing now, the venue's answer to the first
        reaches the client under this ClOrdID. Took effect: the order's state under this
        ClOrdID. Never took effect (the order ended meanwhile, the venue never answered):
        an OrderCancelReject with the order's state. Before, a resend of an accepted
        replace got no answer at all once the first was answered: the OMS, resending
        because it had none, waited for ever."""
        clordid = msg[F.CL_ORD_ID]
        orig = msg[F.ORIG_CL_ORD_ID]
        self._count("resends")
        before, go = self.book.decided[new_gid]
        req = self.book.requests.get(clordid)
        flying = before.accepted and req is not None and req.kind == "G" and req.comp == comp
        self.guard.note(
            "replace_resend",
            session=comp,
            clordid=F.clean(clordid)[:64],
            orig_clordid=F.clean(orig)[:64],
            accepted=before.accepted,
            in_flight=flying,
        )
        if flying:
            return
        if not before.accepted:
            self._send_cancel_reject(
                msg, sid, self._visible(self.book.find(orig), comp), before, F.REPLACE
            )
        elif go is not None and (go.clordid == clordid or clordid in go.former):
            self._send_status(
                dataclasses.replace(go, clordid=clordid),
                sid,
                msg_text="resent replace already answered; not sent again",
                extra=[(F.ORIG_CL_ORD_ID, orig)],
            )
        else:
            on = go.clordid if go is not None else F.clean(orig)[:64]
            d = Decision(
                False,
                R.INVALID_ORDER,
                f"ClOrdID(11) {F.clean(clordid)[:64]}: resent replace already answered; it "
                f"did not take effect on order {on}; not sent again",
            )
            self._send_cancel_reject(msg, sid, go, d, F.REPLACE)

    def _mass_cancel(self, msg: F.In, sid: Any, comp: str) -> None:
        """A client's mass cancel: one cancel per working order of that client only."""
        clordid = msg[F.CL_ORD_ID]
        kind = msg[F.MASS_CANCEL_REQUEST_TYPE]
        symbol = self._instrument(msg)
        with self._held():
            self._record_in(msg, comp, F.MASS_CANCEL, None)
            why = ""
            if not self.venue_up:
                why = "venue_unavailable venue session is not logged on"
            elif kind not in ("1", "7"):
                why = f"invalid_order MassCancelRequestType(530)={kind} is not supported (1, 7)"
            elif kind == "1" and (
                problem := self._instrument_problem(msg, "to cancel by instrument", "request")
            ):
                # nothing of an instrument not named can be found: never a cancel of no
                # orders reported as done; nor one of another instrument (another source's
                # SecurityID, a SymbolSfx) widened to the orders of the Guard's key alone
                why = f"invalid_order {problem}"
            if why:
                hit: list[GwOrder] = []
                response = "0"
            else:
                hit = [o for o in self.book.of(comp) if kind == "7" or o.symbol == symbol]
                response = kind
            for o in hit:
                o.mass_cancel = clordid
                self._cancel_at_venue(o, f"mass cancel {clordid}")
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
            if response == "0":
                report.setField(F.TEXT, f"knightwatch:{why}")
            self._emit(report, sid)

    def _status_request(self, msg: F.In, sid: Any, comp: str) -> None:
        with self._held():
            clordid = msg[F.CL_ORD_ID]
            self._record_in(msg, comp, F.STATUS_REQUEST, f"{comp}:{clordid}")
            # an id from before a replace names the order too (an OMS that has not seen the
            # replace's answer asks under the id it knows): before, it was answered
            # "unknown order" while the order worked, and an OMS could take it for dead
            go = self.book.find(clordid)
            if go is not None and go.comp == comp:
                extra = [(F.ORIG_CL_ORD_ID, clordid)] if go.clordid != clordid else None
                self._send_status(go, sid, extra=extra)
                return
            req = self.book.requests.get(clordid)
            if req is not None and req.comp == comp and req.order is not None:
                # the ClOrdID of the client's replace or cancel the venue has not answered
                # yet: the order it names, pending replace (E) or pending cancel (6) while
                # it works, under the id asked, OrigClOrdID the order's. Before, a live
                # order was answered "unknown order" (39=8) and an OMS could take it for dead
                on = req.order
                pending = "E" if req.kind == "G" else "6"
                status = pending if on.live and not req.released else on.status
                self._send_status(
                    dataclasses.replace(on, clordid=clordid, status=status),
                    sid,
                    extra=[(F.ORIG_CL_ORD_ID, on.clordid)],
                )
                return
            # named as asked: the client's Symbol(55), or SecurityID(48) and what names it
            venue_symbol, id_source = self._venue_instrument(msg)
            probe = GwOrder(
                comp,
                clordid,
                "",
                comp,
                self._instrument(msg) or "",
                Side.BUY,
                msg[F.SIDE],
                0,
                None,
                status="8",
                venue_symbol=venue_symbol,
                id_source=id_source,
            )
            self._send_status(probe, sid, msg_text="unknown order")

    def _mass_status(self, msg: F.In, sid: Any, comp: str) -> None:
        """Answered from the gateway's book: the venue would report every client's orders.

        MassStatusReqType(585) 7 (every order of the session) or 1 (one instrument, named
        as the gateway names instruments); any other type is refused with a
        BusinessMessageReject naming 585 (before, every working order was reported
        whatever was asked: an OMS asking for one instrument took the rest for its own)."""
        req = msg[F.MASS_STATUS_REQ_ID]
        kind = msg.get(F.MASS_STATUS_REQ_TYPE)
        symbol = self._instrument(msg)
        with self._held():
            self._record_in(msg, comp, F.MASS_STATUS, None)
            why = ""
            if kind not in ("1", "7"):
                got = "missing" if kind is None else f"{F.clean(kind)[:16]} is not supported"
                why = f"MassStatusReqType(585) {got} (1 by instrument, 7 all orders)"
            elif kind == "1" and (
                problem := self._instrument_problem(msg, "with MassStatusReqType(585)=1", "request")
            ):
                why = problem
            if why:
                d = Decision(False, R.INVALID_ORDER, f"{why}; nothing was reported")
                self._count("refused")
                self.guard.note(
                    "fix_refused", session=comp, msg_type=F.MASS_STATUS, reason=d.reason.value
                )
                self._send_business_reject(msg, sid, d)
                return
            mine = [o for o in self.book.of(comp) if kind == "7" or o.symbol == symbol]
            if not mine:
                none = GwOrder(comp, "NONE", "", comp, "", Side.BUY, "1", 0, None, status="8")
                extra = [
                    (F.MASS_STATUS_REQ_ID, req),
                    (F.TOT_NUM_REPORTS, "0"),
                    (F.LAST_RPT_REQUESTED, "Y"),
                ]
                self._send_status(none, sid, msg_text="no working orders", extra=extra)
                return
            for i, o in enumerate(mine, 1):
                extra = [
                    (F.MASS_STATUS_REQ_ID, req),
                    (F.TOT_NUM_REPORTS, str(len(mine))),
                    (F.LAST_RPT_REQUESTED, "Y" if i == len(mine) else "N"),
                ]
                self._send_status(o, sid, extra=extra)

    # ------------------------------------------------------------------ answers to clients
    def _send_reject(self, msg: F.In, sid: Any, d: Decision) -> None:
        fields = [
            (F.ORDER_ID, "NONE"),
            (F.CL_ORD_ID, msg.get(F.CL_ORD_ID) or "NONE"),
            (F.EXEC_ID, self.book.next_id("KWR")),
            (F.EXEC_TYPE, "8"),
            (F.ORD_STATUS, "8"),
            (F.SYMBOL, msg.get(F.SYMBOL) or "NA"),
            (F.SIDE, msg.get(F.SIDE) or "1"),
            (F.LEAVES_QTY, "0"),
            (F.CUM_QTY, "0"),
            (F.AVG_PX, "0"),
            (F.ORD_REJ_REASON, _ORD_REJ.get(d.reason, F.REJ_BROKER_OPTION)),
            (F.TEXT, reject_text(d)),
            (F.TRANSACT_TIME, F.now_utc()),
        ]
        for tag in (F.ORDER_QTY, F.SECURITY_ID, F.ID_SOURCE, F.ACCOUNT, F.PRICE):
            if tag in msg:
                fields.append((tag, msg[tag]))
        if self.fix42:
            fields.append((F.EXEC_TRANS_TYPE, "0"))
        self._emit(F.message(F.EXECUTION_REPORT, fields), sid)

    def _probe(self, clordid: str, go: GwOrder) -> F.In:
        """The fields of an order the gateway must refuse after the fact, as if just received."""
        fields = [(F.CL_ORD_ID, clordid), *self._instrument_fields(go), (F.SIDE, go.fix_side)]
        return F.In(F.message(F.NEW_ORDER, fields))

    def _send_cancel_reject(
        self, msg: F.In, sid: Any, go: GwOrder | None, d: Decision, mtype: str
    ) -> None:
        fields = [
            (F.ORDER_ID, go.order_id if go is not None else "NONE"),
            (F.CL_ORD_ID, msg.get(F.CL_ORD_ID) or "NONE"),
            (F.ORIG_CL_ORD_ID, msg.get(F.ORIG_CL_ORD_ID) or "NONE"),
            (F.ORD_STATUS, go.status if go is not None else "8"),
            (F.CXL_REJ_RESPONSE_TO, "2" if mtype == F.REPLACE else "1"),
            (F.CXL_REJ_REASON, F.CXL_UNKNOWN_ORDER if go is None else F.CXL_BROKER_OPTION),
            (F.TEXT, reject_text(d)),
        ]
        self._emit(F.message(F.CANCEL_REJECT, fields), sid)

    def _send_business_reject(self, msg: F.In, sid: Any, d: Decision) -> None:
        mtype = msg.mtype
        fields = [
            (F.REF_SEQ_NUM, msg[F.MSG_SEQ_NUM]),
            (F.REF_MSG_TYPE, mtype),
            (
                F.BUSINESS_REJECT_REASON,
                F.BIZ_UNSUPPORTED_TYPE if d.reason is R.UNSUPPORTED_MESSAGE else F.BIZ_OTHER,
            ),
            (F.TEXT, reject_text(d)),
        ]
        # ListID, BidID, CrossID, QuoteID, ClOrdID, MassStatusReqID
        for tag in (66, 390, 548, 117, F.CL_ORD_ID, F.MASS_STATUS_REQ_ID):
            if tag in msg:
                fields.append((F.BUSINESS_REJECT_REF_ID, msg[tag]))
                break
        self._emit(F.message(F.BUSINESS_REJECT, fields), sid)

    def _send_status(
        self,
        go: GwOrder,
        sid: Any,
        *,
        msg_text: str | None = None,
        extra: list[tuple[int, str]] | None = None,
    ) -> None:
        fields = [
            (F.ORDER_ID, go.order_id),
            (F.CL_ORD_ID, go.clordid),
            (F.EXEC_ID, self.book.next_id("KWS")),
            (F.EXEC_TYPE, "I" if not self.fix42 else go.status),
            (F.ORD_STATUS, go.status),
            *self._instrument_fields(go),
            (F.SIDE, go.fix_side),
            (F.LEAVES_QTY, self._qty(go.symbol, go.leaves if go.live else 0)),
            (F.CUM_QTY, self._qty(go.symbol, go.cum)),
            (F.AVG_PX, "0"),
        ]
        if self.fix42:
            fields.append((F.EXEC_TRANS_TYPE, "3"))
        if msg_text is not None:
            fields.append((F.TEXT, msg_text))
        fields += extra or []
        self._emit(F.message(F.EXECUTION_REPORT, fields), sid)

    def _qty(self, symbol: str, lots: int) -> str:
        return format(self.guard.quantity(symbol, lots), "f") if lots else "0"

    def _lots(self, symbol: str, text: str | None) -> int:
        """A venue quantity in lots; 0 for an absent or zero quantity."""
        if text is None or text == "0" or Decimal(text) == 0:
            return 0
        return self.guard.lots(symbol, text)

    # ------------------------------------------------------------------ venue messages
    def _from_venue(self, msg: F.In) -> None:
        mtype = msg.mtype
        with self._held():
            with self._applied_or_halt(msg):
                self._from_venue_read(msg, mtype)
            mass = (
                bool(self._mass_status_id)
                and mtype == F.EXECUTION_REPORT
                and msg.get(F.MASS_STATUS_REQ_ID) == self._mass_status_id
            )
            if mass:
                self.mass_status_reports += 1
            if mass and msg.get(F.LAST_RPT_REQUESTED) == "Y":
                # the last report of the start-up mass status ends reconciliation, also
                # one that could not be read (not applied, the node halted naming it):
                # before, start-up then waited out its timeout and blamed the venue session
                self._mass_status_id = ""
                self._reconciled("mass status")

    def _from_venue_read(self, msg: F.In, mtype: str) -> None:
        """One venue message (caller holds the lock, inside `_applied_or_halt`)."""
        if mtype == F.EXECUTION_REPORT:
            self._execution(msg)
        elif mtype == F.CANCEL_REJECT:
            self._venue_cancel_reject(msg)
        elif mtype == F.MD_SNAPSHOT:
            self._price(msg)
        elif mtype == F.BUSINESS_REJECT:
            self._venue_business_reject(msg)
        elif mtype == F.MASS_CANCEL_REPORT:
            self.guard.note(
                "venue_mass_cancel",
                clordid=msg.get(F.CL_ORD_ID),
                affected=int(msg.get(F.TOTAL_AFFECTED) or 0),
                response=msg.get(F.MASS_CANCEL_RESPONSE),
            )
        else:
            self.guard.note("venue_unhandled", msg_type=mtype)

    @contextlib.contextmanager
    def _applied_or_halt(self, msg: F.In) -> Iterator[None]:
        """A venue message the gateway cannot read as it needs (a field missing, a
        quantity or price that is no number) is not applied and halts the node with
        `fill_mismatch`: a fill lost would leave the Guard's picture wrong. Recorded
        (`venue_report_unapplied`); the report's ExecID is not marked seen, so the
        venue's complete resend is applied. Never left to the engine, which would
        answer it with a session Reject and drop it."""
        try:
            yield
        except (fix().FieldNotFound, ValueError, ArithmeticError) as exc:
            field = getattr(exc, "field", None)
            why = f"tag {field} missing" if field is not None else str(exc)
            self._unapplied(msg, why)
            ids = ", ".join(
                f"{name} {F.clean(value)[:64]}"
                for name, value in (
                    ("ClOrdID", msg.get(F.CL_ORD_ID)),
                    ("OrderID", msg.get(F.ORDER_ID)),
                    ("ExecID", msg.get(F.EXEC_ID)),
                )
                if value is not None
            )
            named = f" ({ids})" if ids else ""
            self.guard.flag_mismatch(f"venue message {msg.mtype}{named} not applied: {why}"[:400])

    def _execution(self, msg: F.In) -> None:
        """One execution report: everything it needs is read before anything is
        applied, and its ExecID is marked seen once it was."""
        kind = F.exec_kind(msg, self.fix42)
        exec_id = msg[F.EXEC_ID]
        if kind is not F.ExecKind.STATUS and exec_id in self.book.exec_seen:
            self._count("duplicate_exec_ids")
            self.guard.note("duplicate_exec", exec_id=exec_id)
            return
        if (
            kind is not F.ExecKind.STATUS
            and not self.reconciled.is_set()
            and self._before_start(msg, self.venue_key)
        ):
            self._replayed(msg, kind, exec_id, self.venue_key)
            return
        clordid = msg[F.CL_ORD_ID]
        # an id names an order or a request in flight, never both (`GatewayBook.free`,
        # `next_id`): neither lookup can take the venue's answer for the other's
        req = self.book.requests.get(clordid)
        go = self.book.orders.get(clordid)
        if go is None and req is not None:
            go = req.order
        if go is None:
            # an id the order answered to before a replace (the book keeps the chain, and
            # no other order or request may take it): a venue may report an execution
            # under it, with no OrigClOrdID; before, such a fill halted as an unknown one
            go = self.book.renamed.get(clordid)
        if go is None and (F.ORIG_CL_ORD_ID in msg):
            # the answer to a message the gateway sent under an id it no longer matches
            # (a mass cancel's, a request already answered) names its order this way
            go = self.book.find(msg[F.ORIG_CL_ORD_ID])
            foreign = req is None and clordid not in self.book.owner
            mass = (
                kind is F.ExecKind.STATUS
                and bool(self._mass_status_id)
                and msg.get(F.MASS_STATUS_REQ_ID) == self._mass_status_id
            )
            if go is not None and foreign and not mass:
                # a status report too: relayed, it would tell the order's client of an
                # order it never sent as if it were its own
                self._foreign_execution(msg, kind, exec_id, clordid, go)
                return
        if go is not None:
            dup = self.book.by_order_id.get(msg.get(F.ORDER_ID) or "")
            if dup is not None and dup is not go and _venue_id(dup) == _venue_id(go):
                # two working orders adopted under one ClOrdID (`_adopt`): the venue's
                # OrderID tells them apart, in a report under that ClOrdID, under a
                # request's or naming it as OrigClOrdID (a mass cancel's answer)
                go = dup
        if kind is F.ExecKind.STATUS:
            self._status_report(msg, go)
            return
        if go is None:
            self._unknown_execution(msg, kind, exec_id, clordid)
            if req is not None and req.kind == "F" and kind is not F.ExecKind.TRADE:
                # the venue's answer to a client's cancel of an order the gateway does not
                # hold (the venue decides: "unknown order"), by ExecutionReport instead of
                # OrderCancelReject: to that client, and the cancel is no longer in flight
                # (before, the client was never answered and its ClOrdID stayed held)
                if kind is not F.ExecKind.PENDING:
                    self.book.requests.pop(clordid, None)
                sid = self.client_sids.get(req.comp)
                if sid is not None:
                    out = F.forward_copy(msg)
                    if req.answer_as:
                        out.setField(F.CL_ORD_ID, req.answer_as)
                    self._count("relayed")
                    self._emit(out, sid)
            return
        gid = go.guard_id
        status = msg[F.ORD_STATUS]
        answered = kind is F.ExecKind.REJECTED and req is not None  # its OrdStatus unused
        if kind is F.ExecKind.OTHER or (
            not answered and status not in LIVE_STATUS and status not in _FINISHED
        ):
            # suspended, stopped, calculated or a type it has no meaning for: neither
            # working nor finished to the gateway. Before, it was relayed and its OrdStatus
            # taken: a suspended order left the working index (no kill cancelled it, a
            # drain counted it done) while the Guard counted it working
            raise ValueError(
                f"ExecType(150)={F.clean(msg.get(F.EXEC_TYPE) or '')[:8]} with OrdStatus(39)="
                f"{F.clean(status)[:8]} for {go.guard_id} is not a report the gateway can apply"
            )
        ends = kind in _ENDS or (kind is F.ExecKind.REJECTED and not answered)
        if (ends and status not in _FINISHED) or (kind in _GOES_ON and status not in LIVE_STATUS):
            # a report at odds with itself: an order ended (cancelled, rejected) said to
            # be working, or acknowledged (new, pending) said to be finished. Before, the
            # Guard stopped counting an order the book kept working (nothing counted it),
            # or the book dropped from its working index an order the Guard counted (a
            # kill skipped it and its drain counted it done)
            raise ValueError(
                f"ExecType(150)={F.clean(msg.get(F.EXEC_TYPE) or '')[:8]} ({kind.value}) with "
                f"OrdStatus(39)={F.clean(status)[:8]} for {gid}: the two disagree"
            )
        replace = req if req is not None and req.kind == "G" and req.order is go else None
        if kind is F.ExecKind.REPLACED and (replace is None or replace.released):
            # a replace the gateway never sent (or of an order the venue had ended since):
            # applied, the order would work at a quantity the Guard never checked. Before,
            # the node halted but the report was relayed and its OrdStatus taken
            raise ValueError(
                f"ExecType(150)=5 (replaced) for {gid} under ClOrdID {F.clean(clordid)[:64]}"
                ", with no replace of it in flight"
            )
        if replace is not None and replace.released and kind not in _ENDS_REPLACE:
            # the late answer to a replace of an order the venue ended meanwhile: only a
            # refusal (or the end) of it can be told; nothing revives a finished order
            raise ValueError(
                f"{kind.value} report under ClOrdID {F.clean(clordid)[:64]} for {gid}, which "
                "the venue ended while that replace was in flight"
            )
        ref = msg.get(F.EXEC_REF_ID) or ""
        if kind in (F.ExecKind.TRADE_CANCEL, F.ExecKind.TRADE_CORRECT) and (
            ref not in go.execs or ref not in self.book.fills
        ):
            # only an execution of this order: another's would be taken back from it (or
            # corrected as its own). Before, the node halted but the report was relayed
            # and its OrdStatus and LeavesQty taken
            what = "cancel" if kind is F.ExecKind.TRADE_CANCEL else "correction"
            raise ValueError(
                f"trade {what} of {gid} for execution {F.clean(ref)[:64]!r}, which is none "
                "of that order's"
            )
        symbol = go.symbol
        leaves = self._lots(symbol, msg.get(F.LEAVES_QTY))
        if leaves > 0 and status in _FINISHED and kind in _LEAVES_COUNT:
            # FIX's LeavesQty is 0 once an order is finished; this report says both. Before,
            # the Guard counted the LeavesQty working while the book took the OrdStatus and
            # left the order's working index: no kill cancelled it, a drain counted it done
            raise ValueError(
                f"LeavesQty(151)={F.clean(msg.get(F.LEAVES_QTY) or '')[:32]} with OrdStatus(39)"
                f"={F.clean(status)[:8]} ({kind.value}) for {gid}: a finished order leaves none"
            )
        # what the venue says executed of an order it ends: read before anything is applied
        executed = self._lots(symbol, msg.get(F.CUM_QTY)) if kind in _ENDS else 0
        trade = kind in (F.ExecKind.TRADE, F.ExecKind.TRADE_CORRECT)
        fill = self._venue_fill(msg, go) if trade else None
        self._check_instrument_side(msg, kind, go, trade=trade)
        note: str | None = None
        replaced = False
        if kind is F.ExecKind.TRADE:
            assert fill is not None
            self._on_fill(fill)
            self.book.keep_fill(exec_id, fill)
            go.cum += fill.qty  # an overfill halts inside the Guard (fill_mismatch)
            if status in _FINISHED:
                self._ended_by_fill(go, status)  # LeavesQty 0 (checked above)
            self._check_leaves(go, leaves)
        elif kind is F.ExecKind.NEW and status in LIVE_STATUS:
            # the venue's acknowledgement says what works there: more than the Guard
            # counts (a quantity read otherwise, an order the gateway had taken back as
            # not sent) worked uncounted before; the node halts
            self._check_leaves(go, leaves)
        elif kind in (F.ExecKind.CANCELED, F.ExecKind.EXPIRED, F.ExecKind.DONE_FOR_DAY):
            if replace is not None and not replace.released:
                # the order ended in the answer to a replace: the replace never took
                # effect, so its reservation is released (else held for ever)
                self.guard.on_replace_reject(replace.new_guard_id)
            if kind is F.ExecKind.CANCELED:
                self.guard.on_cancel(gid)
            else:
                self.guard.on_expire(gid)
            if executed > go.cum:
                # the venue ended the order having executed more of it than it reported
                # as fills (an IOC's fill folded into its cancel report, or a fill report
                # lost): the position is short of the venue's. Before, the order ended
                # with no word and the Guard never counted what executed
                self.guard.flag_mismatch(
                    f"CumQty(14)={F.clean(msg.get(F.CUM_QTY) or '')[:32]} in a {kind.value}"
                    f" report of {gid}, whose fills booked {self._qty(symbol, go.cum)}: the venue"
                    " executed more than it reported as fills (ExecType F); the position is"
                    " short of it"
                )
            self.book.requests.pop(clordid, None)
            note = go.cancel_note
        elif kind is F.ExecKind.REJECTED and req is not None:
            # a cancel or replace the venue refused by an ExecutionReport (FIX's answer is
            # an OrderCancelReject): the order works on as it was, never ended in the Guard
            # (also one the request named by OrigClOrdID before the gateway held it)
            self.book.requests.pop(clordid, None)
            if req.kind == "G" and not req.released:
                self.guard.on_replace_reject(req.new_guard_id)
            if req.kind == "G":
                self._venue_refused_replace(req, msg)
            if go.cancel_sent == clordid:
                go.cancel_sent = None  # the gateway's own cancel: sent again if it must be
                note = ""  # nothing for the client: it sent no cancel
            status, leaves = go.status, go.leaves
        elif kind is F.ExecKind.REJECTED:
            self.guard.on_reject(gid)
        elif kind is F.ExecKind.REPLACED:
            assert replace is not None  # else refused above
            self.book.requests.pop(clordid, None)
            self.guard.on_replace_ack(replace.new_guard_id, leaves)
            self.book.rename(go, clordid, replace.new_guard_id)
            go.qty, go.price = replace.new_qty, replace.new_price
            # an ExecInst Q or o the replace adds holds from here (one it leaves out does
            # not undo what the order asked: a cancel on disconnect is the safe side)
            go.cod = go.cod or replace.cod
            replaced = True  # the venue may have given it a new OrderID
        elif kind is F.ExecKind.RESTATED:
            self.guard.on_restate(gid, leaves)
        elif kind is F.ExecKind.TRADE_CANCEL:
            busted = self.book.fills.pop(ref)  # one of this order's (checked above)
            self.guard.on_bust(busted, parent_id=go.parent_id)
            go.cum -= busted.qty
            if self.guard.remaining(gid) is not None:
                self.guard.on_restate(gid, leaves)  # a bust may reopen it: the venue says
            elif leaves > 0:
                # the Guard cannot count a finished order working again, and nothing
                # may work that it does not count: the reopened order is cancelled
                self.guard.note("bust_reopened", order=go.guard_id, leaves=leaves)
                self._cancel_at_venue(
                    go, "knightwatch: reopened by a trade bust after it had finished; "
                    "the Guard cannot count it, so it is cancelled"
                )  # fmt: skip
        elif kind is F.ExecKind.TRADE_CORRECT:
            old = self.book.fills[ref]  # one of this order's (checked above)
            assert fill is not None
            # under the id the execution was booked under: one from before a replace is the
            # order's old id (the Guard refused the correction as another order's, so the
            # node halted and the venue's correction was never applied)
            fill = Fill(old.order_id, fill.symbol, fill.side, fill.qty, fill.price)
            self.guard.on_correct(old, fill, parent_id=go.parent_id)
            self.book.fills[ref] = fill
            go.cum += fill.qty - old.qty
            if go.cum > go.qty:  # the order may have left the Guard's working list
                self.guard.flag_mismatch(
                    f"a trade correction makes {go.guard_id} filled {go.cum} of "
                    f"{go.qty} (an overfill)"
                )
            elif self.guard.remaining(gid) is not None:
                self.guard.on_restate(gid, leaves)  # its working quantity follows the venue
            elif leaves > 0:
                # a correction down may reopen a finished order, as a bust may: the Guard
                # cannot count it working again, so it is cancelled (before, it worked on
                # at the venue counted by nothing, with no halt)
                self.guard.note("correction_reopened", order=go.guard_id, leaves=leaves)
                self._cancel_at_venue(
                    go, "knightwatch: reopened by a trade correction after it had finished; "
                    "the Guard cannot count it, so it is cancelled"
                )  # fmt: skip
        venue_oid = msg.get(F.ORDER_ID)
        if kind is F.ExecKind.NEW or replaced or go.order_id == "NONE":
            go.order_id = venue_oid or go.order_id
        self.book.venue_order_id(go, venue_oid)
        was_live = go.live
        self.book.set_status(go, status)
        go.leaves = leaves if go.live else 0
        if was_live and not go.live:
            self._release_replaces(go)
        if go.cancel_sent == clordid and not go.live:
            go.cancel_sent = None
        self.book.saw_exec(exec_id, go)
        if req is not None and req.kind in ("F", "G"):
            # the answer to a client's own cancel or replace: to that client, under its
            # ClOrdID, even for an order the gateway once meant to cancel itself or one
            # adopted at start-up (which has no session of its own)
            self._relay(msg, go, None, req.answer_as, req.comp)
        elif note == "":
            self._own_cancel_refused(go, clordid, msg)
        else:
            self._relay(msg, go, note, "", go.comp)

    def _before_start(self, msg: F.In, session: str) -> bool:
        """A report sent before this process first logged on to `session`: one the engine
        resends (PossDupFlag) under a MsgSeqNum below that Logon's, or one the venue
        resends itself (PossResend alone: under a new number, so when its first copy was
        sent cannot be told by it) unless what it says ties it to this process's life
        (`_since_start`). One resent under a number from this process's own life (a
        session lost during the start-up mass status) was never read here, or was read and
        its ExecID is known: applied once, as any report. Before, every resent report
        before reconciliation was taken for one from before this start and skipped, and a
        fill of an adopted order sent while the session was down was lost."""
        if not msg.resent:
            return False
        first = self._first_seq.get(session)
        if msg.get(F.POSS_DUP) != "Y" or first is None:
            return not self._since_start(msg)
        return msg.seq < first

    def _since_start(self, msg: F.In) -> bool:
        """Whether a report the venue resent (PossResend) before start-up reconciliation
        finished was first sent during this process's life, whatever its MsgSeqNum: a
        report of an order the start-up mass status adopted working (by the OrderID the
        status report named) that says more of it than that status report did, a
        CumQty(14) above the one adopted or the order finished. The venue sent it after it
        answered this process's mass status, so nothing at the start counts it. Before,
        any report resent with PossResend alone was taken for one from before this start
        and skipped: a fill of an adopted order after its status report was lost (the
        position short of the venue's, the order counted at its old leaves, its limits
        loosened by as much), and so was the venue's cancel of one (counted working, no
        drain of a kill covering it ever finished)."""
        go = self.book.by_order_id.get(msg.get(F.ORDER_ID) or "")
        if go is None or go.comp != RECONCILED or not go.live:
            return False
        if msg.get(F.ORD_STATUS) in _FINISHED:
            return True
        return self._lots(go.symbol, msg.get(F.CUM_QTY)) > go.cum

    def _replayed(self, msg: F.In, kind: F.ExecKind, seen: str, session: str) -> None:
        """A report the venue resent before start-up reconciliation finished that was
        sent before this process first logged on (`_before_start`): while no gateway was
        there to read it (the process restarting), so an execution from before this
        start. Start-up reconciliation already counts it (the positions file holds the
        position at the start, the venue's mass status each working order's fills and
        leaves), and the process that read it first may have booked it too: applying it
        again would count it twice, and a fill of an order this process has not adopted
        yet would halt the node as an unknown fill. Recorded (`venue_report_replayed`)
        and marked seen, not applied (caller holds the lock)."""
        self._count("replayed_reports")
        self.book.saw_exec(seen, None)
        self.guard.note(
            "venue_report_replayed",
            session=session,
            msg_type=msg.mtype,
            exec_id=msg.get(F.EXEC_ID),
            report=seen,
            clordid=msg.get(F.CL_ORD_ID),
            venue_order_id=msg.get(F.ORDER_ID),
            exec_type=kind.value,
            raw_sha256=F.raw_hash(msg),
        )

    def _venue_fill(self, msg: F.In, go: GwOrder) -> Fill:
        """The execution a trade or correction report carries for order `go`, with the
        instrument and side the venue reports (the order's where it names none): one of
        another instrument or side reaches the Guard as such, which halts the node
        (`fill_mismatch`) instead of booking it as the order's own."""
        symbol = self._instrument(msg) or go.symbol
        fix_side = msg.get(F.SIDE) or go.fix_side
        side = _SIDES.get(fix_side)
        if side is None:
            raise ValueError(f"Side(54)={fix_side} is not supported by the gateway")
        qty = self._lots(symbol, msg[F.LAST_QTY])
        return Fill(go.guard_id, symbol, side, qty, float(msg[F.LAST_PX]))

    def _check_instrument_side(
        self, msg: F.In, kind: F.ExecKind, go: GwOrder, *, trade: bool
    ) -> None:
        """A venue report of order `go` that names another instrument or side than the
        order's: the venue has the order working (or executed it) as something the Guard
        never checked and does not count (its limits, a symbol kill of what the venue works
        miss it). Applied as the report says, and the node halts `fill_mismatch` naming
        both (caller holds the lock). Before, an acknowledgement, restatement or replace of
        L000 buy reported as L001 or as a sell was applied and relayed with no word. An
        order adopted with no instrument (`?`, halted already) is compared on its side
        only. A `trade` (a fill or a correction) reaches the Guard with the instrument and
        side it names (`_venue_fill`), which halts on another: here only its
        SecurityIDSource(22) is compared (`_other_source`), which the Guard never sees."""
        named = self._instrument(msg)
        code = msg.get(F.SIDE)
        wrong: list[str] = []
        if not trade and named is not None and go.symbol != "?" and named != go.symbol:
            wrong.append(f"{self._instrument_name()}={F.clean(named)[:64]}")
        if (source := self._other_source(msg, go)) is not None:
            wrong.append(source)
        if not trade and code is not None and _SIDES.get(code) is not go.side:
            wrong.append(f"Side(54)={F.clean(code)[:8]}")
        if wrong:
            self.guard.flag_mismatch(
                f"venue {kind.value} report of {go.guard_id} names {' and '.join(wrong)}; the "
                f"order is {go.side.value} {go.symbol}, as the Guard checked and counts it"[:400]
            )

    def _other_source(self, msg: F.In, go: GwOrder) -> str | None:
        """`SecurityIDSource(22)=<x>` when a venue report of `go` names another source than
        the order's (the configured `security_id_source` for an order that named none, as
        one adopted from a status report without it); None when it names none or the
        same. The same SecurityID under another source is another instrument, while the
        Guard keys the SecurityID string alone. Before, a fill was never compared on it:
        one of the ISIN's order under an exchange symbol's source was booked as the
        ISIN's with no word."""
        source = msg.get(F.ID_SOURCE)
        want = go.id_source or self.cfg.security_id_source
        if source is None or not want or source == want:
            return None
        return f"SecurityIDSource(22)={F.clean(source)[:16]}"

    def _ended_by_fill(self, go: GwOrder, status: str) -> None:
        """A fill whose report also ends its order (caller holds the lock, the fill booked,
        LeavesQty 0): the last fill of an IOC, FOK or market order with the rest cancelled
        (OrdStatus 4) or expired (C), or of a day order done for the day (3), which many
        venues send as one report, ExecType F. What the Guard still counts working of the
        order is released, once: a separate cancel or expiry report the venue sends after
        it finds nothing left to release. Before, the node halted `fill_mismatch` (LeavesQty
        0 against the rest) and the Guard counted the rest working for ever, while the book
        had ended the order (no kill, drain or report would release it). A fill reported
        filled (2), rejected (8) or calculated (B) while the Guard counts some of the order
        still working disagrees with the quantity the Guard checked: the order is ended
        all the same (the venue has it finished: the book drops it) and the node halts."""
        gid = go.guard_id
        left = self.guard.remaining(gid)
        if not left:
            return  # the fill completed it in the Guard (or the Guard had it ended)
        if status == "4":
            self.guard.on_cancel(gid)  # counted as the separate cancel report would be
            return
        self.guard.on_expire(gid)
        if status not in ("C", "3"):
            self.guard.flag_mismatch(
                f"OrdStatus(39)={F.clean(status)[:8]} with LeavesQty(151)=0 in a fill of {gid}"
                f" (filled {go.cum} of {go.qty}) while the Guard counted {left} of it working:"
                " the venue finished it at another quantity; the rest is released"
            )

    def _check_leaves(self, go: GwOrder, venue: int) -> None:
        """The venue's LeavesQty is the truth; a Guard that disagrees halts the node."""
        mine = self.guard.remaining(go.guard_id) or 0
        if venue != mine and not self._replace_pending(go):
            self.guard.flag_mismatch(
                f"LeavesQty {venue} from the venue for {go.guard_id} != {mine} in the Guard"
            )

    def _replace_pending(self, go: GwOrder) -> bool:
        return any(
            r.kind == "G" and r.order is go and not r.released for r in self.book.requests.values()
        )

    def _release_replaces(self, go: GwOrder) -> None:
        """The order ended (the venue cancelled, expired or filled it on its own) while a
        client's replace of it was in flight (caller holds the lock): that replace can no
        longer take effect, so its reservation is given back now, not when (if ever) the
        venue answers it. The request stays, marked `released`, so the late answer reaches
        the client and is never applied to the finished order."""
        for r in self.book.requests.values():
            if r.kind == "G" and r.order is go and not r.released:
                r.released = True
                self.guard.on_replace_reject(r.new_guard_id)
                self.guard.note("replace_released", order_id=go.guard_id, replace=r.new_guard_id)

    def _unknown_execution(self, msg: F.In, kind: F.ExecKind, exec_id: str, clordid: str) -> None:
        """A report for an order this gateway did not route (V4); a fill halts the node
        (the Guard's own rule for a fill it never accepted), and so does a replace or a
        restatement: an order working at the venue under a quantity the Guard never
        checked (a replace under a ClOrdID never sent, of an order still counted at its
        old quantity), and a trade cancel or correction (of an order forgotten since, say:
        the position moves at the venue, and the Guard holds no fill to take back)."""
        fill = None
        if kind is F.ExecKind.TRADE:
            symbol = self._instrument(msg) or "?"
            side = self._report_side(msg)
            qty = self._lots(symbol, msg[F.LAST_QTY])
            fill = Fill(f"unknown:{clordid}", symbol, side, qty, float(msg[F.LAST_PX]))
        self.book.saw_exec(exec_id, None)
        self._count("unknown_reports")
        self.guard.note("unknown_report", exec_id=exec_id, clordid=clordid, exec_type=kind.value)
        halts = fill is not None or kind in (
            F.ExecKind.REPLACED,
            F.ExecKind.RESTATED,
            F.ExecKind.TRADE_CANCEL,
            F.ExecKind.TRADE_CORRECT,
        )
        log.warning(
            "UNKNOWN_REPORT exec_type=%s clordid=%s venue_order_id=%s exec_id=%s %s",
            kind.value,
            F.clean(clordid)[:64],
            F.clean(msg.get(F.ORDER_ID) or "")[:64],
            F.clean(exec_id)[:64],
            "halts fill_mismatch" if halts else "not applied",
        )
        if fill is not None:
            self._on_fill(fill)
        elif halts:
            self.guard.flag_mismatch(
                f"venue {kind.value} order {msg.get(F.ORDER_ID)} under ClOrdID {clordid}, "
                "which the gateway does not hold (never sent, or forgotten)"
            )
        elif kind in (F.ExecKind.NEW, F.ExecKind.PENDING):
            self._uncounted_working(msg, kind, clordid)

    def _uncounted_working(self, msg: F.In, kind: F.ExecKind, clordid: str) -> None:
        """A venue report that an order the gateway does not hold is working there (an
        acknowledgement, a pending or a status report in a working OrdStatus; caller
        holds the lock): an order sent by a previous process of the gateway (its book is
        memory only, so a restart without the venue's mass status knows none of them),
        or one that never passed it. It works uncounted by the Guard and no kill cancels
        it, so the node halts `fill_mismatch` naming it (before, such a report was
        recorded and nothing more: an order working unseen)."""
        status = msg.get(F.ORD_STATUS) or ""
        if status not in LIVE_STATUS:
            return
        self.guard.flag_mismatch(
            f"venue {kind.value} report (OrdStatus {F.clean(status)[:8]}) of order "
            f"{F.clean(msg.get(F.ORDER_ID) or 'NONE')[:64]} under ClOrdID "
            f"{F.clean(clordid)[:64]}, which the gateway does not hold: working at the venue "
            "uncounted by the Guard"[:400]
        )

    def _foreign_execution(
        self, msg: F.In, kind: F.ExecKind, exec_id: str, clordid: str, go: GwOrder
    ) -> None:
        """A report under a ClOrdID the gateway never put on the venue session whose
        OrigClOrdID names one of its orders: no answer to anything it sent, so an order
        that did not pass the gateway (another session, a venue mix-up) claims the
        order's id. Never applied to the order (a fill would be booked as its own, a
        cancel would end it in the Guard): booked as the venue reports it, as an unknown
        order's (`_unknown_execution`), and the node halts `fill_mismatch`, as for a
        drop-copy collision. Recorded as it arrived (`foreign_report`: both ids, the
        ExecType, the venue's OrderID and OrdStatus); nothing reaches the order's client
        (a cancel, expiry or pending report relayed would tell it something of its order
        that the venue never said of it)."""
        self._count("foreign_reports")
        self.guard.note(
            "foreign_report",
            clordid=F.clean(clordid)[:64],
            orig_clordid=F.clean(msg[F.ORIG_CL_ORD_ID])[:64],
            order_id=go.guard_id,
            exec_id=F.clean(exec_id)[:64],
            exec_type=F.clean(msg.get(F.EXEC_TYPE) or "")[:8],
            exec_kind=kind.value,
            ord_status=F.clean(msg.get(F.ORD_STATUS) or "")[:8],
            venue_order_id=F.clean(msg.get(F.ORDER_ID) or "")[:64] or None,
            raw_sha256=F.raw_hash(msg),
        )
        self._unknown_execution(msg, kind, exec_id, clordid)
        self.guard.flag_mismatch(
            f"venue {kind.value} under ClOrdID {clordid}, which the gateway never sent, "
            f"names order {go.guard_id} as OrigClOrdID: not applied to it"[:400]
        )

    def _relay(
        self, msg: F.In, go: GwOrder, note: str | None, answer_as: str = "", to: str = ""
    ) -> None:
        """The venue's report to the order's client (or `to`, the client whose request it
        answers), unchanged unless the gateway cancelled it or sent the client's cancel
        under its own ClOrdID (`answer_as`)."""
        sid = self.client_sids.get(to or go.comp)
        if sid is None:
            return
        out = F.forward_copy(msg)
        if answer_as:
            out.setField(F.CL_ORD_ID, answer_as)
        if note is not None:
            # the client never sent this cancel: show it under the order's own ClOrdID
            out.setField(F.CL_ORD_ID, go.clordid)
            if F.ORIG_CL_ORD_ID in msg:
                out.removeField(F.ORIG_CL_ORD_ID)
            out.setField(F.TEXT, note[:512])
        self._count("relayed")
        self._emit(out, sid)

    def _venue_cancel_reject(self, msg: F.In) -> None:
        clordid = msg[F.CL_ORD_ID]
        req = self.book.requests.pop(clordid, None)
        if req is None:
            self.guard.note("unknown_cancel_reject", clordid=clordid)
            return
        if req.kind == "G" and not req.released:
            self.guard.on_replace_reject(req.new_guard_id)
        if req.kind == "G":
            self._venue_refused_replace(req, msg)
        if req.order is not None and req.order.cancel_sent == clordid:
            req.order.cancel_sent = None  # the gateway's own cancel: sent again if it must be
            self._own_cancel_refused(req.order, clordid, msg)
            return
        if req.kind == "F":
            # a resend of the client's cancel is answered with this again (`SentCancel`)
            req.reject = tuple((t, msg[t]) for t in _CANCEL_REJECT_BODY if t in msg)
        sid = self.client_sids.get(req.comp)
        if sid is not None:
            out = F.forward_copy(msg)
            if req.answer_as:
                out.setField(F.CL_ORD_ID, req.answer_as)
            self._emit(out, sid)

    def _venue_refused_replace(self, req: Request, msg: F.In) -> None:
        """The venue refused a client's replace (caller holds the lock): a resend of it is
        answered as refused (`_answer_replace_resend`), naming the venue's reason."""
        why = F.clean(msg.get(F.TEXT) or "")[:200]
        code = msg.get(F.CXL_REJ_REASON) or msg.get(F.ORD_REJ_REASON) or "none"
        self.book.decide(
            req.new_guard_id,
            Decision(
                False,
                R.INVALID_ORDER,
                f"the venue refused this replace (reason {F.clean(code)[:8]}): {why}",
            ),
            None,
        )

    def _venue_business_reject(self, msg: F.In) -> None:
        ref_type = msg.get(F.REF_MSG_TYPE)
        ref_id = msg.get(F.BUSINESS_REJECT_REF_ID) or ""
        self.guard.note("venue_business_reject", ref_msg_type=ref_type, ref_id=ref_id)
        if ref_type == F.MASS_STATUS:
            self._mass_status_refused(f"BusinessMessageReject: {F.clean(msg.get(F.TEXT) or '')}")
            return
        self._venue_refused(ref_type, ref_id, f"venue refused: {msg.get(F.TEXT)}")

    def _mass_status_refused(self, why: str) -> None:
        """The venue refused the start-up mass status request (caller holds the lock): no
        report of it will come, so start-up fails naming that (before, it waited out its
        timeout and asked whether the venue session was logging on)."""
        self._reconcile_failed(
            f"the venue refused the OrderMassStatusRequest {self._mass_status_id} ({why})"[:300]
            + "; set venue.mass_status = false if the venue does not support it"
        )

    def _reconcile_failed(self, error: str) -> None:
        """Start-up reconciliation cannot finish as it should (caller holds the lock): while
        the mass status is still awaited, it never finishes and start-up fails naming
        `error` (`reconcile_error`)."""
        if not self._mass_status_id or self.reconciled.is_set():
            return
        self.reconcile_error = error
        self._mass_status_id = ""
        self.guard.note("reconcile_failed", error=error[:400])
        log.error("RECONCILE_FAILED %s", error)

    def _venue_session_reject(
        self, ref_seq: int, ref_type: str, reason: str | None, text: str
    ) -> None:
        """The venue's session Reject of an order, replace or cancel the gateway sent
        (worker): answered as a BusinessMessageReject of it is (the order leaves the
        Guard's working count, the client gets its reject)."""
        with self._sent_lock:
            ref = self._venue_sent.pop(ref_seq, None)
        with self._held():
            ref_id = ref[1] if ref is not None and ref[0] == ref_type else None
            self._count("venue_session_rejects")
            self.guard.note(
                "venue_session_reject",
                ref_seq=ref_seq,
                ref_msg_type=ref_type,
                ref_id=ref_id,
                reason=reason,
                text=text[:400],
            )
            if ref_id is not None:
                self._venue_refused(
                    ref_type, ref_id, f"venue session reject (reason {reason}): {text}"
                )

    def _venue_refused(self, ref_type: str | None, ref_id: str, why: str) -> None:
        """The venue did not take the order, replace or cancel the gateway sent under
        ClOrdID `ref_id` (caller holds the lock)."""
        go = self.book.orders.get(ref_id)
        if ref_type == F.NEW_ORDER and go is not None and go.live and go.execs:
            # a refusal of an order the venue already reported on (acknowledged, filled):
            # the venue contradicts itself. Before, the order left the Guard's working
            # count and its client was told it was rejected while it worked at the venue,
            # uncounted. Not applied: it stays counted, the node halts
            self.guard.note("venue_refusal_unapplied", order_id=go.guard_id, ref_id=ref_id)
            self.guard.flag_mismatch(
                f"the venue refused order {go.guard_id} (ClOrdID {F.clean(ref_id)[:64]}) after "
                f"reporting it {go.status}: not applied, still counted ({F.clean(why)})"[:400]
            )
        elif ref_type == F.NEW_ORDER and go is not None and go.live:
            self.guard.on_reject(go.guard_id)
            self.book.set_status(go, "8")
            self._release_replaces(go)  # a replace sent before the venue's answer
            sid = self.client_sids.get(go.comp)
            if sid is not None:
                d = Decision(False, R.VENUE_UNAVAILABLE, why)
                self._send_reject(self._probe(go.clordid, go), sid, d)
        elif ref_type == F.REPLACE and (req := self.book.requests.pop(ref_id, None)) is not None:
            if not req.released:
                self.guard.on_replace_reject(req.new_guard_id)
            d = Decision(False, R.VENUE_UNAVAILABLE, why)
            self.book.decide(req.new_guard_id, d, None)  # a resend of it: this answer
            sid = self.client_sids.get(req.comp)
            if sid is not None:
                orig = req.order.clordid if req.order is not None else "NONE"
                probe = F.In(
                    F.message(F.REPLACE, [(F.CL_ORD_ID, ref_id), (F.ORIG_CL_ORD_ID, orig)])
                )
                self._send_cancel_reject(probe, sid, req.order, d, F.REPLACE)
        elif ref_type == F.CANCEL and (req := self.book.requests.pop(ref_id, None)) is not None:
            # a cancel the venue would not take (throttled, busy): the order works on, and
            # the client's resend of it goes to the venue
            self.book.unsend_cancel(req, ref_id)
            go = req.order
            if go is not None and go.cancel_sent == ref_id:
                go.cancel_sent = None  # the gateway's own cancel: sent again if it must be
                self._own_cancel_refused(go, ref_id, None, why)
                return
            sid = self.client_sids.get(req.comp)
            if sid is not None:
                d = Decision(False, R.VENUE_UNAVAILABLE, why)
                orig = go.clordid if go is not None else "NONE"
                probe = F.In(
                    F.message(
                        F.CANCEL,
                        [(F.CL_ORD_ID, req.answer_as or ref_id), (F.ORIG_CL_ORD_ID, orig)],
                    )
                )
                self._send_cancel_reject(probe, sid, go, d, F.CANCEL)

    def _price(self, msg: F.In) -> None:
        """A reference price from the venue's snapshot: the mid of its best bid and ask.

        A side priced at zero or below (how venues send "no bid"), or a mid the Guard
        refuses, is no reference: it is recorded (`venue_price_refused`) and the previous
        one stays, ageing into `stale_reference_price` as the Guard has it. Never half
        the ask as the mid (every market order's notional checked at half its value),
        and never a halt (a price feed's glitch is not a fill the Guard missed).

        Filed under the identifier the Guard checks orders by (`instrument`): with
        SecurityIDs, the SecurityID(48) the snapshot names; one that names none is no
        reference either. Before, every mid was filed under the Symbol(55): an order named
        by SecurityID was never checked against it (with `require_reference_price = false`
        a buy at 1.5 times the market passed with no collar)."""
        symbol = self._instrument(msg)
        why = (
            f"the snapshot names no {self._instrument_name()}"
            if symbol is None
            else self._id_source_problem(msg)
        )
        if symbol is None or why is not None:
            # under another source the SecurityID names another instrument: never filed
            self._count("prices_refused")
            self.guard.note(
                "venue_price_refused",
                symbol=F.clean(msg.get(F.SYMBOL) or "")[:64] or None,
                why=why,
            )
            return
        group = fix().Group(F.NO_MD_ENTRIES, F.MD_ENTRY_TYPE)
        bid = ask = None
        unusable: list[str] = []
        for i in range(1, msg.msg.groupCount(F.NO_MD_ENTRIES) + 1):
            msg.msg.getGroup(i, group)
            if not group.isSetField(F.MD_ENTRY_PX):
                continue
            entry, text = group.getField(F.MD_ENTRY_TYPE), group.getField(F.MD_ENTRY_PX)
            if entry not in ("0", "1"):
                continue
            try:
                px = float(text)
            except ValueError:
                px = float("nan")
            if not 0 < px < float("inf"):
                unusable.append(f"{'bid' if entry == '0' else 'ask'} {F.clean(text)}")
            elif entry == "0":
                bid = px
            else:
                ask = px
        why = ", ".join(unusable)
        if bid is not None and ask is not None and not unusable:
            try:
                self.guard.on_price(symbol, (bid + ask) / 2)
                return
            except ValueError as exc:
                why = str(exc)
        if why:
            self._count("prices_refused")
            self.guard.note("venue_price_refused", symbol=F.clean(symbol)[:64], why=why[:400])

    def _from_drop_copy(self, msg: F.In) -> None:
        """Executions from the drop copy: orders that bypassed the gateway (D1, K4).

        Read as ExecutionReports (35=8) or TradeCaptureReports (35=AE, `_read_tcr`).
        Its copies of the gateway's own orders are ignored (the venue session reports
        them): a copy names a venue OrderID the venue session reported for the order.
        One the gateway cannot tell yet is held, never booked or dropped on a guess
        (`_own_copy`): under the ClOrdID of an order of the gateway whose OrderID is not
        known yet (before its ack, or while a replace that may bring a new one is in
        flight), or naming no ClOrdID while some order's OrderID is not known. It is
        looked at again once the venue session has named those OrderIDs (or the orders
        ended without one), before the lock is released (`_held`): dropped if it is the
        copy of one, else applied as below. One under a ClOrdID a client's order holds
        but naming another OrderID is an order that bypassed the gateway under that
        ClOrdID: booked as the venue reports it (never onto or instead of the client's
        order) and the node halts `fill_mismatch`. Busts and corrections of bypass fills
        are taken back (by the ExecRefID, or TradeReportRefID, they name). Before
        start-up reconciliation has finished every report is held (the orders the mass
        status adopts are not known yet) and read once it has; a resent one then is
        from before this start, which reconciliation counts (`_replayed`)."""
        if msg.mtype not in (F.EXECUTION_REPORT, F.TRADE_CAPTURE_REPORT):
            return
        with self._held(), self._applied_or_halt(msg):
            self._drop_copy(msg, None)

    def _resolve_dc_held(self) -> None:
        """The drop-copy reports held (`_from_drop_copy`) looked at again, in the order
        they came (caller holds the lock): each is dropped, applied, or held on. One the
        gateway cannot read now is not applied and halts, as when it arrives."""
        if not self.reconciled.is_set():
            return  # every report held so far waits for the orders reconciliation adopts
        held, self._dc_held = self._dc_held, []
        for _seen, msg, waits in held:
            with self._applied_or_halt(msg):
                self._drop_copy(msg, waits)

    def _flush_dc_held(self) -> None:
        """The gateway stops with drop-copy reports still held (caller holds the lock):
        the order session can no longer name the OrderIDs they wait for, and a fill
        the venue reported must not vanish with the gateway. Each is booked as a bypass
        fill (conservative: the venue says the firm traded) and the node halts
        `fill_mismatch`; each is recorded `drop_copy_unresolved` for the person who
        reconciles the positions before the next start."""
        held, self._dc_held = self._dc_held, []
        for _seen, msg, waits in held:
            with self._applied_or_halt(msg):
                self._drop_copy(msg, waits, final=True)

    def _drop_copy(
        self, msg: F.In, waits_for: list[GwOrder] | None, *, final: bool = False
    ) -> None:
        """One drop-copy report (caller holds the lock); `waits_for`: the orders a held
        report waited for (None: it just came). `final`: the gateway is stopping, so a
        report that still cannot be told is booked as a bypass fill and the node halts
        (`drop_copy_unresolved`), never dropped with the gateway.

        Read side by side (`_DcSide`: a TradeCaptureReport may carry both sides of a
        trade): the side of one of the gateway's orders is its copy (dropped); with two
        sides, one that is none of the gateway's while the other is, is the
        counterparty's (ignored); with neither the gateway's, which side is the firm's
        cannot be told (not applied, the node halts)."""
        read = self._read_dc_execution if msg.mtype == F.EXECUTION_REPORT else self._read_tcr
        seen, kind, ref, key, sides = read(msg)
        full = False  # `MAX_DC_HELD` reports held already: this one is booked now
        if seen in self.book.exec_seen:
            return
        if waits_for is None and any(h[0] == seen for h in self._dc_held):
            return  # sent again while it is held: held once
        if not final and not self.reconciled.is_set():
            # before start-up reconciliation the orders the venue's mass status adopts
            # are not known yet: a copy of one's fill would be booked as a bypass fill
            # and then again as the order's own. A report resent from before this
            # start is counted by reconciliation; any other is held and read after it
            if self._before_start(msg, self.dc_key):
                self._replayed(msg, kind, seen, self.dc_key)
                return
            if len(self._dc_held) < MAX_DC_HELD:
                self._count("drop_copy_held")
                self.guard.note(
                    "drop_copy_held",
                    clordid=sides[0].clordid,
                    venue_order_id=sides[0].order_id,
                    exec_type=kind.value,
                    waits_for="reconciliation",
                )
                self._dc_held.append((seen, msg, None))
                return
            final = full = True  # no more can be held: booked now, as at a stop
        told = [(s, *self._own_copy(s.clordid, s.orig, s.order_id, waits_for)) for s in sides]
        waits = [go for *_, w in told for go in w]
        if waits and not final:
            if waits_for is None:
                if len(self._dc_held) >= MAX_DC_HELD:
                    final = full = True
                else:
                    first = next(s for s, _own, _col, w in told if w)
                    self._count("drop_copy_held")
                    self.guard.note(
                        "drop_copy_held",
                        clordid=first.clordid,
                        venue_order_id=first.order_id,
                        exec_type=kind.value,
                        waits_for=len(waits),
                    )
            if not final:
                self._dc_held.append((seen, msg, waits))
                return
        # stopping before reconciliation finished: which orders are the gateway's own
        # was never learnt, so a report is booked as the venue reports it and halts
        blind = final and not self.reconciled.is_set()
        if len(sides) == 1:
            booked = [(s, col, bool(w) or blind) for s, own, col, w in told if not own]
        else:
            # a side that waits names a ClOrdID of the gateway's (or may be an order of it
            # whose OrderID is unknown): it is the gateway's side, booked when stopping
            ours = [t for t in told if t[1] or t[2] or (t[3] and self._names_held(t[0]))]
            if not ours:
                raise ValueError(
                    f"TradeCaptureReport NoSides(552)={len(sides)}: no side is an order of "
                    "the gateway's, so it cannot tell which is the firm's"
                )
            booked = [(s, col, bool(w) or blind) for s, own, col, w in ours if not own]
        if not booked:
            return  # routed here: the venue session reports it
        legs: list[tuple[_DcSide, bool, bool, Fill | None, Fill | None, str, str]] = []
        for side, collided, unresolved in booked:
            # one key per side of a report with more than one (a cancel names both)
            suffix = f":{side.side}" if len(sides) > 1 else ""
            label = side.clordid if side.clordid is not None else f"order {side.order_id}"
            fill = old = None
            if kind in (F.ExecKind.TRADE, F.ExecKind.TRADE_CORRECT):
                # booked as the venue reports it, or not at all: a buy assumed for a side
                # the gateway does not know, or an instrument "?", would be a position
                # nobody holds (unreadable: not applied, the node halts)
                symbol = msg[self._instrument_tag()]
                qty = self._lots(symbol, msg[F.LAST_QTY])
                px = float(msg[F.LAST_PX])
                fill = Fill(f"dropcopy:{label}", symbol, self._side_of(side.side), qty, px)
            if kind is F.ExecKind.TRADE_CANCEL:
                old = self.book.fills.get(ref + suffix)
            elif kind is F.ExecKind.TRADE_CORRECT:
                old = self.book.fills.get(ref + suffix)
                if old is not None and fill is not None:
                    fill = Fill(old.order_id, fill.symbol, fill.side, fill.qty, fill.price)
            legs.append((side, collided, unresolved, fill, old, ref + suffix, key + suffix))
        if len({leg[5] for leg in legs}) != len(legs):
            raise ValueError("TradeCaptureReport: two sides with the same Side(54)")
        # a SecurityID under another source names another instrument than the Guard keys
        # under that string: booked all the same (the venue says the firm traded it), and
        # the node halts until a person looks, as for an order adopted under it. Before,
        # booked as the configured source's instrument with no word
        other = (
            self._id_source_problem(msg)
            if F.ID_SOURCE in msg and kind in (F.ExecKind.TRADE, F.ExecKind.TRADE_CORRECT)
            else None
        )
        for side, collided, unresolved, fill, old, leg_ref, leg_key in legs:
            self._count("drop_copy_reports")
            if collided:
                self.guard.note(
                    "drop_copy_collision",
                    clordid=side.clordid,
                    venue_order_id=side.order_id,
                    exec_type=kind.value,
                )
            if unresolved:
                self._count("drop_copy_unresolved")
                self.guard.note(
                    "drop_copy_unresolved",
                    clordid=side.clordid,
                    venue_order_id=side.order_id,
                    exec_type=kind.value,
                    report=seen,
                    raw_sha256=F.raw_hash(msg),
                )
            if kind is F.ExecKind.TRADE:
                assert fill is not None
                self.guard.on_external_fill(fill)
                self.book.keep_fill(leg_key, fill)
            elif kind in (F.ExecKind.TRADE_CANCEL, F.ExecKind.TRADE_CORRECT):
                if old is None:
                    self.guard.flag_mismatch(
                        f"drop copy: {kind.value} for unknown execution {leg_ref!r}"[:400]
                    )
                elif fill is None:
                    self.book.fills.pop(leg_ref, None)
                    self.guard.on_bust(old)
                else:
                    self.guard.on_correct(old, fill)
                    self.book.keep_fill(leg_ref, fill)
            else:
                self.guard.note("drop_copy_report", clordid=side.clordid, exec_type=kind.value)
            if collided:
                self.guard.flag_mismatch(
                    f"drop copy: order {side.order_id} that did not pass the gateway "
                    f"reports under ClOrdID {side.clordid}, which the gateway holds for its "
                    "own"[:400]
                )
            if unresolved:
                what = (
                    "start-up reconciliation" if blind else "the order session to name an OrderID"
                )
                when = (
                    f"with {len(self._dc_held):,} reports held already (the most, MAX_DC_HELD)"
                    if full
                    else "when the gateway stopped"
                )
                self.guard.flag_mismatch(
                    f"drop copy: report {seen} (order {side.order_id}, ClOrdID "
                    f"{side.clordid}) still waited for {what} {when}: booked "
                    "as a bypass fill"[:400]
                )
        if other is not None:
            self.guard.flag_mismatch(f"drop copy: {kind.value} report {seen}: {other}"[:400])
        self.book.saw_exec(seen, None)

    def _names_held(self, side: _DcSide) -> bool:
        return any(c is not None and c in self.book.owner for c in (side.clordid, side.orig))

    @staticmethod
    def _side_of(fix_side: str | None) -> Side:
        """The Guard side of a drop-copy side's Side(54); ValueError for none or another."""
        side = _SIDES.get(fix_side or "")
        if side is None:
            shown = "missing" if fix_side is None else f"={F.clean(fix_side)}"
            raise ValueError(f"Side(54){shown} is not supported by the gateway")
        return side

    def _read_dc_execution(self, msg: F.In) -> tuple[str, F.ExecKind, str, str, list[_DcSide]]:
        """A drop-copy ExecutionReport: (the id it is seen under, what it means, the
        execution a bust or correction names, the id its fill is kept under, its one
        side: ClOrdID, OrigClOrdID, OrderID, Side)."""
        exec_id = msg[F.EXEC_ID]
        kind = F.exec_kind(msg, self.fix42)
        side = _DcSide(
            msg.get(F.CL_ORD_ID),  # FIX does not require it on an ExecutionReport
            msg.get(F.ORIG_CL_ORD_ID),
            msg.get(F.ORDER_ID),
            msg.get(F.SIDE),
        )
        # kept apart from the order session's ExecIDs: a venue may number each session's
        # own, and a bypass fill's ExecID must not hide (as a duplicate) or be busted as
        # a fill of the gateway's order, nor the reverse
        ref = msg.get(F.EXEC_REF_ID)
        seen = f"DC:{exec_id}"
        return seen, kind, ("" if ref is None else f"DC:{ref}"), seen, [side]

    def _read_tcr(self, msg: F.In) -> tuple[str, F.ExecKind, str, str, list[_DcSide]]:
        """A drop-copy TradeCaptureReport (35=AE), as `_read_dc_execution` reads an
        ExecutionReport. TradeReportTransType(487) 0 (or none) is a new trade, 1 a cancel
        and 4 a reversal (taken back, as a bust), 2 a replace (a correction); ExecType
        F/H/G or TradeReportType 6 (a trade report cancel) say the same. A cancel or
        replace names the trade by TradeReportRefID(572), or with none by its own
        TradeReportID. Side, OrderID and ClOrdID are read from each entry of NoSides
        (552), one or two (both sides of a trade); anything else it cannot read is not
        applied (the node halts, as for an unreadable ExecutionReport)."""
        sides = _tcr_sides(msg)
        trade_id = msg[F.TRADE_REPORT_ID]
        trans = msg.get(F.TRADE_REPORT_TRANS_TYPE) or "0"
        exec_type = msg.get(F.EXEC_TYPE)
        if trans in ("1", "4") or exec_type == "H" or msg.get(F.TRADE_REPORT_TYPE) == "6":
            kind = F.ExecKind.TRADE_CANCEL
        elif trans == "2" or exec_type == "G":
            kind = F.ExecKind.TRADE_CORRECT
        elif trans == "0" and exec_type in (None, "F"):
            kind = F.ExecKind.TRADE
        else:
            raise ValueError(
                f"TradeCaptureReport TradeReportTransType(487)={F.clean(trans)} with "
                f"ExecType(150)={F.clean(exec_type or '')} is no trade, cancel or replace"
            )
        if kind is F.ExecKind.TRADE:
            seen = f"AE:{trade_id}"
        else:
            seen = f"AE:{trade_id}:{trans}:{exec_type or ''}"
        ref = f"AE:{msg.get(F.TRADE_REPORT_REF_ID) or trade_id}"
        return seen, kind, ref, seen, sides

    def _own_copy(
        self,
        clordid: str | None,
        orig: str | None,
        venue_oid: str | None,
        waited: list[GwOrder] | None = None,
    ) -> tuple[bool, bool, list[GwOrder]]:
        """Whether a drop-copy report is the copy of an order of the gateway's own,
        whether it collides with one (another order under a ClOrdID the gateway holds),
        and the orders it must wait for before either can be told (none: tell now).

        Its own: the venue session reported the report's OrderID for one of its orders
        (also an OrderID a replace gave it). Wait: the ClOrdID (or OrigClOrdID) is one of
        its live orders' whose OrderID the venue session has not named yet, or that has
        a replace in flight (the venue may give a replaced order a new OrderID); or the
        report names no ClOrdID (FIX does not require one) but an OrderID, and some live
        order's OrderID is not known yet (of those it `waited` for, if it was held): it
        may be that order's. An order that ended without the venue session naming an
        OrderID waits no more: a report under its ClOrdID collides."""
        if venue_oid is not None and venue_oid in self.book.by_order_id:
            return True, False, []
        held = [c for c in (clordid, orig) if c is not None and c in self.book.owner]
        if not held:
            if clordid is not None or venue_oid is None:
                return False, False, []
            replacing = {id(r.order) for r in self.book.requests.values() if r.kind == "G"}
            orders = self.book.working.values() if waited is None else waited
            unnamed = [
                go for go in orders if go.live and (go.order_id == "NONE" or id(go) in replacing)
            ]
            return False, False, unnamed
        go: GwOrder | None = None
        for c in held:
            go = self.book.find(c)
            if go is None and (req := self.book.requests.get(c)) is not None:
                go = req.order
            if go is not None:
                break
        if go is None:
            return False, True, []  # an id of the gateway's own, or a request for no order
        if go.live and (go.order_id == "NONE" or self._replace_pending(go)):
            return False, False, [go]
        return False, True, []

    # ------------------------------------------------------------------ reconciliation
    def _status_report(self, msg: F.In, go: GwOrder | None) -> None:
        req = msg.get(F.MASS_STATUS_REQ_ID)
        if req is not None and req == self._mass_status_id:
            self._adopt(msg, go)  # its last report ends reconciliation (`_from_venue`)
            return
        if req is not None and req in self._mass_status_earlier:
            # the answer to a start-up mass status asked before the venue session was
            # lost (resent after the next logon, or late): the one asked since says what
            # works. Before, an order it named that the later one had not adopted yet was
            # taken for one working uncounted, and the node halted at start-up
            self._count("mass_status_superseded")
            self.guard.note(
                "mass_status_superseded",
                mass_status=F.clean(req)[:64],
                clordid=F.clean(msg.get(F.CL_ORD_ID) or "")[:64] or None,
                venue_order_id=F.clean(msg.get(F.ORDER_ID) or "")[:64] or None,
                raw_sha256=F.raw_hash(msg),
            )
            return
        if go is not None:
            self._relay(msg, go, None)
            return
        clordid = F.clean(msg.get(F.CL_ORD_ID) or "NONE")[:64]
        self._count("unknown_reports")
        self.guard.note("unknown_report", exec_id=msg.get(F.EXEC_ID), clordid=clordid,
                        exec_type=F.ExecKind.STATUS.value)  # fmt: skip
        log.warning("UNKNOWN_REPORT exec_type=status clordid=%s venue_order_id=%s", clordid,
                    F.clean(msg.get(F.ORDER_ID) or "")[:64])  # fmt: skip
        self._uncounted_working(msg, F.ExecKind.STATUS, clordid)

    def _adopt(self, msg: F.In, go: GwOrder | None) -> None:
        """A working order the venue reports at start-up becomes working in the Guard."""
        clordid = msg[F.CL_ORD_ID]
        status = msg[F.ORD_STATUS]
        if status in _FINISHED or (clordid == "NONE" and msg.get(F.TOT_NUM_REPORTS) == "0"):
            return  # finished, or the venue's answer that no order works
        oid = msg.get(F.ORDER_ID) or "NONE"
        where = f"reconciled order {clordid} (venue OrderID {F.clean(oid)})"
        if clordid == "NONE":
            # FIX's ClOrdID of an order not sent electronically by this session (entered
            # at the venue on the firm's behalf): working all the same. Before, every
            # report under NONE was skipped as the "no working orders" answer, and such an
            # order worked uncounted, out of every kill's reach. Counted (a kill names its
            # OrderID), and the node halts: no order the gateway sent has no ClOrdID
            self.guard.flag_mismatch(
                f"{where}: the venue reports it working with no ClOrdID; no order the "
                "gateway sent has none: adopted"[:400]
            )
        if status not in LIVE_STATUS:
            # before, any status but six was skipped as finished: one the book counts as
            # live (D, accepted for bidding) executed uncounted, and so could one that is
            # no status the gateway knows (suspended, stopped, garbage)
            self._not_adopted(msg, f"{where}: OrdStatus(39)={F.clean(status)[:16]} is not one "
                              "the gateway can count")  # fmt: skip
            return
        key = clordid
        if go is not None:
            if oid == "NONE" or go.order_id in ("NONE", oid) or oid in self.book.by_order_id:
                return  # the same order reported again
            # a second working order under a ClOrdID already held (a distinct venue
            # OrderID): before, it was skipped, so it executed uncounted and no kill
            # cancelled it. Counted under its own Guard id, cancelled by any kill (by
            # its OrderID), and the node halts: a person must find out why
            key = f"{clordid}#{oid}"
            while key in self.book.orders or key in self.book.owner:
                key += "#"
            self.guard.flag_mismatch(
                f"reconciled order {F.clean(clordid)}: the venue reports two working orders "
                f"under this ClOrdID (venue OrderIDs {F.clean(go.order_id)} and "
                f"{F.clean(oid)}); both adopted"[:400]
            )
        named = self._instrument(msg)
        symbol = named or "?"
        side = _SIDES.get(msg[F.SIDE])
        if side is None:
            self._not_adopted(msg, f"{where}: Side(54)={F.clean(msg[F.SIDE])[:16]} unsupported")
            return
        if named is None:
            # counted all the same (a fleet, node or strategy kill covers it), but no
            # symbol kill can find it and no price values it: the node halts until a
            # person looks (as for a drop-copy fill that names no instrument)
            self.guard.flag_mismatch(
                f"reconciled order {clordid}: the venue's status report names no instrument"
            )
        elif F.ID_SOURCE in msg and (why := self._id_source_problem(msg)) is not None:
            # another source's SecurityID names another instrument than the Guard keys
            # under that string: counted all the same (a kill cancels it), and the node
            # halts until a person looks. Before, adopted as the configured source's
            self.guard.flag_mismatch(f"reconciled order {F.clean(clordid)}: {why}"[:400])
        try:
            leaves = self._lots(symbol, msg.get(F.LEAVES_QTY))
            cum = self._lots(symbol, msg.get(F.CUM_QTY))
        except (InvalidOrder, ArithmeticError) as exc:
            self._not_adopted(msg, f"{where}: LeavesQty(151)/CumQty(14): {exc}")
            return
        if leaves + cum == 0:
            # working with no quantity: nothing the Guard could count (an order of no
            # quantity cannot exist); a person must find out what works at the venue
            self._not_adopted(msg, f"{where}: the venue reports it working with no quantity")
            return
        text = msg.get(F.PRICE)
        price: float | None = None
        if text:
            try:
                price = float(text)
            except ValueError:
                price = float("nan")
            if price_problem(price) is not None:
                # counted all the same, at no price (valued at the reference, as a market
                # order), so every limit counts it and a kill cancels it; the node halts
                price = None
                self.guard.flag_mismatch(
                    f"{where}: Price(44)={F.clean(text)} is no usable price; adopted at no price"[
                        :400
                    ]
                )
        gid = f"reconciled:{key}"
        venue_symbol, id_source = self._venue_instrument(msg)
        try:
            order = Order(gid, RECONCILED, symbol, side, leaves + cum, price)
        except InvalidOrder as exc:
            self._not_adopted(msg, f"{where}: {exc}")
            return
        self.guard.adopt(order, leaves)
        self.book.claim(key, RECONCILED)
        adopted = GwOrder(
            RECONCILED,
            key,
            gid,
            RECONCILED,
            symbol,
            side,
            msg[F.SIDE],
            leaves + cum,
            order.price,
            order_id=oid,
            status=status,
            cum=cum,
            leaves=leaves,
            venue_clordid="" if key == clordid else clordid,
            venue_symbol=venue_symbol,
            id_source=id_source,
        )
        self.book.add(adopted)
        self.book.venue_order_id(adopted, msg.get(F.ORDER_ID))
        self._cancel_if_killed(adopted)

    def _cancel_if_killed(self, go: GwOrder) -> None:
        """An order the start-up mass status adopted that a kill in force covers is
        cancelled at once, the kill remembered on it (`GwOrder.kills`: its cancel is sent
        again while the kill holds); caller holds the lock. A kill is an operator's latch
        (`halted`) of a scope other than ACTIVE, held since before this start (restored
        before the sessions, so no drain ran for it) or heard while the mass status is
        answered (its drain cancelled only what was adopted by then). The Guard's own
        halts (a fill mismatch, a loss stop) cancel nothing here, as in a running gateway.
        Before, such an order worked on at the venue through the kill."""
        for (scope, key), halt in self.guard.latched(R.HALTED).items():
            if halt.state is TradingState.ACTIVE:
                continue
            if not self._covers(scope, key)(go):
                continue
            if (scope, key) not in go.kills:
                go.kills += ((scope, key),)
            self.guard.note("adopted_under_kill", order_id=go.guard_id, scope=scope.value, key=key)
            log.warning(
                "ADOPTED_UNDER_KILL order=%s scope=%s key=%s: cancelled at the venue",
                go.guard_id,
                scope.value,
                key,
            )
            self._cancel_at_venue(go, f"knightwatch kill: {halt.reason}"[:512])

    def _not_adopted(self, msg: F.In, why: str) -> None:
        """A working order of the venue's mass status the Guard cannot count (caller holds
        the lock): recorded (`venue_report_unapplied`) and the node halts naming it."""
        self._unapplied(msg, why)
        self.guard.flag_mismatch(f"{why}: not adopted"[:400])

    def _unapplied(self, msg: F.In, why: str) -> None:
        """Record a venue report that was not applied, as it arrived (caller holds the
        lock); the caller halts the node naming it."""
        self._count("unapplied_reports")
        self.guard.note(
            "venue_report_unapplied",
            msg_type=msg.mtype,
            exec_id=msg.get(F.EXEC_ID),
            clordid=msg.get(F.CL_ORD_ID),
            venue_order_id=msg.get(F.ORDER_ID),
            error=why[:400],
            raw_sha256=F.raw_hash(msg),
        )

    def _reconciled(self, how: str) -> None:
        if self.reconciled.is_set():
            return
        self.guard.note("reconciled", how=how, working=len(self.book.live()))
        if how == "mass status":
            self._left_after_mass_status()
        self.reconciled.set()
        if self._on_reconciled is not None:
            self._on_reconciled()

    def load_positions(self, path: Path) -> int:
        """Positions from a TOML file: `[positions] SYMBOL = qty` or `{qty=.., avg_price=..}`.

        Every entry is checked before any is applied; a bad one is a GatewayError naming
        the file, the symbol and the rule (never a traceback in the worker, which left
        start-up waiting for a reconciliation that could not come)."""
        try:
            data = load_toml(path, "positions file")
        except InputFileError as exc:
            raise GatewayError(str(exc)) from None
        table = data.get("positions")
        if not isinstance(table, dict):
            raise GatewayError(f"{path}: positions: must be a table of SYMBOL = qty")
        loaded: list[tuple[str, int, float]] = []
        for symbol, value in table.items():
            where = f"{path}: positions.{symbol}"
            if not _POSITION_SYMBOL.fullmatch(symbol):
                raise GatewayError(
                    f"{path}: positions: symbol {symbol!r} must be 1-64 characters without "
                    "control characters"
                )
            entry = value if isinstance(value, dict) else {"qty": value}
            unknown = sorted(set(entry) - {"qty", "avg_price"})
            if unknown:
                raise GatewayError(f"{where}: unknown key {unknown[0]!r} (qty, avg_price)")
            qty, avg = entry.get("qty"), entry.get("avg_price", 0.0)
            if type(qty) not in (int, float, str) or type(avg) not in (int, float):
                raise GatewayError(f"{where}: qty must be a number and avg_price a number")
            if not 0 <= avg <= MAX_PRICE:  # as `Guard.restore_position` takes it
                raise GatewayError(
                    f"{where}: avg_price must be from 0 to {MAX_PRICE:g} (got {avg})"
                )
            try:
                d = Decimal(str(qty))
                lots = self.guard.lots(symbol, abs(d)) if d else 0
            except InvalidOrder as exc:
                raise GatewayError(f"{where}: {exc}") from None
            except ArithmeticError:  # decimal.InvalidOperation: not a number at all
                raise GatewayError(f"{where}: qty must be a decimal number (got {qty!r})") from None
            if lots > MAX_QTY:
                raise GatewayError(f"{where}: qty must be at most {MAX_QTY:.0e} lots (got {qty!r})")
            loaded.append((symbol, -lots if d < 0 else lots, float(avg)))
        with self._held():
            for symbol, lots, avg in loaded:
                self.guard.restore_position(symbol, lots, avg)
        return len(loaded)

    # ------------------------------------------------------------------ session events (worker)
    def _venue_logged_on(self, event: int) -> None:
        """The venue session logged on (worker); `event`: its number among the session's
        logons and logouts. One the session has logged out of since (the worker was busy,
        or waited for the lock) is stale: the session is not taken as up, and the logon
        after it, if any, does what a logon does. Before, the logout's `venue_up = False`
        came first and this set it True again: with the session down, orders were
        accepted and never answered, and a kill's cancels were taken as sent."""
        with self._held():
            self.venue_logons += 1
            self.venue_up = True  # then the count: a logout from here on stores False after
            if event != self._venue_events:
                self.venue_up = False
                self.guard.note("venue_logon_stale", session=self.venue_key)
                log.warning("VENUE_LOGON_STALE the session logged out before its logon was handled")
                return
            # what was sent before the session dropped is answered (or resent by the
            # venue) after the logon: its wait starts again now
            fresh = self.guard.clock.monotonic_ns() + to_ns(self.answer_timeout_s)
            self._awaiting = deque((max(d, fresh), c, o, r) for d, c, o, r in self._awaiting)
            self.guard.note("venue_session", up=True, session=self.venue_key)
            symbols = self.cfg.venue.market_data
            if symbols:
                md = F.message(
                    F.MD_REQUEST,
                    [
                        (F.MD_REQ_ID, self.book.next_id("KWMD")),
                        (F.SUBSCRIPTION_TYPE, "1"),
                        (F.MARKET_DEPTH, "1"),
                    ],
                )
                for entry in ("0", "1"):
                    g = fix().Group(F.NO_MD_ENTRY_TYPES, F.MD_ENTRY_TYPE)
                    g.setField(F.MD_ENTRY_TYPE, entry)
                    md.addGroup(g)
                for s in symbols:
                    g = fix().Group(F.NO_RELATED_SYM, F.SYMBOL)
                    g.setField(F.SYMBOL, s)
                    md.addGroup(g)
                self._emit(md, self.venue_sid)
            # a kill's cancel in flight when the session dropped may be lost with it (a
            # sequence reset forgets it, or the answer never comes): a fresh one now
            self._resend_lost_kill_cancels("venue_logon")
            for o in self.book.live():
                # cancels the gateway decided while the session was down (a kill, a
                # cancel-on-disconnect, a client's mass cancel) go out now, once
                if o.cancel_note is not None and o.cancel_sent is None:
                    self._cancel_at_venue(o, o.cancel_note)
            if self.reconciled.is_set():
                return
            try:
                if self.cfg.positions_file is not None and not self._positions_loaded:
                    # once: a logon again before the mass status ended (the session lost
                    # meanwhile) set the positions back to the file's, and a fill of an
                    # adopted order applied in between was lost
                    self.load_positions(Path(self.cfg.positions_file))
                    self._positions_loaded = True
            except GatewayError as exc:
                self.reconcile_error = str(exc)
                log.error("RECONCILE_FAILED %s", exc)
                return
            if self.cfg.venue.mass_status:
                if self._mass_status_id:  # asked at an earlier logon, never finished
                    self._mass_status_earlier.append(self._mass_status_id)
                self._mass_status_id = self.book.next_id("KWMS")
                self.mass_status_sent = self._mass_status_id
                self.mass_status_reports = 0
                req = F.message(
                    F.MASS_STATUS,
                    [(F.MASS_STATUS_REQ_ID, self._mass_status_id), (F.MASS_STATUS_REQ_TYPE, "7")],
                )
                self._emit(req, self.venue_sid)
            elif self.left_working.exists():
                # no mass status: the orders an earlier process left working would be
                # counted nowhere (limits widened, out of every kill's reach)
                self.reconcile_error = (
                    f"{self.left_working}: orders an earlier gateway process sent may still "
                    "be working at the venue, and with venue.mass_status = false nothing "
                    "counts them; cancel them at the venue (or confirm none is working), "
                    "then delete this file"
                )
                log.error("RECONCILE_FAILED %s", self.reconcile_error)
            else:
                self._reconciled("positions file" if self.cfg.positions_file else "assume_flat")

    def _venue_logged_out(self) -> None:
        with self._held():
            self.guard.note("venue_session", up=False, session=self.venue_key)

    def _client_logged_on(self, comp: str) -> None:
        with self._held():
            self.clients_up.add(comp)
            self.guard.note("client_session", up=True, session=comp)

    def _client_logged_out(self, comp: str) -> None:
        """Cancel-on-disconnect: the session's policy, or ExecInst `Q` or `o` on the order."""
        with self._held():
            self.clients_up.discard(comp)
            client = self.cfg.client(comp)
            policy = client is not None and client.cancel_on_disconnect
            doomed = [o for o in self.book.of(comp) if policy or o.cod]
            self.guard.note("client_session", up=False, session=comp, cancelling=len(doomed))
            for o in doomed:
                o.disconnected = True  # its cancel is sent until the venue answers one
                self._cancel_at_venue(o, "knightwatch cancel-on-disconnect")

    def _not_sent(self, mtype: str, clordid: str) -> None:
        """An order or replace the engine would have resent late: it counts as not sent."""
        with self._held():
            if mtype == F.NEW_ORDER and (go := self.book.orders.get(clordid)) is not None:
                self.guard.on_reject(go.guard_id)
                self.book.set_status(go, "8")
                self._release_replaces(go)
                self.guard.note("not_resent", order_id=go.guard_id)
                sid = self.client_sids.get(go.comp)
                if sid is not None:
                    d = Decision(
                        False,
                        R.VENUE_UNAVAILABLE,
                        "the venue session dropped before the order reached it",
                    )
                    self._send_reject(self._probe(clordid, go), sid, d)
            elif mtype == F.REPLACE and (req := self.book.requests.pop(clordid, None)) is not None:
                if not req.released:
                    self.guard.on_replace_reject(req.new_guard_id)
                self.guard.note("not_resent", order_id=req.new_guard_id)
                d = Decision(
                    False,
                    R.VENUE_UNAVAILABLE,
                    "the venue session dropped before the replace reached it",
                )
                self.book.decide(req.new_guard_id, d, None)  # a resend of it: this answer
                sid = self.client_sids.get(req.comp)
                if sid is not None:
                    orig = req.order.clordid if req.order is not None else "NONE"
                    probe = F.In(
                        F.message(F.REPLACE, [(F.CL_ORD_ID, clordid), (F.ORIG_CL_ORD_ID, orig)])
                    )
                    self._send_cancel_reject(probe, sid, req.order, d, F.REPLACE)

    # ------------------------------------------------------------------ kill
    def _cancel_at_venue(self, go: GwOrder, note: str) -> None:
        """The gateway's own cancel of one order (caller holds the lock)."""
        go.cancel_note = note
        if go.cancel_sent is not None or not self.venue_up:
            return
        cid = self.book.next_id("KW-")
        go.cancel_sent = cid
        req = self.book.requests[cid] = Request("KILL", go.comp, go)
        self._await(cid, go, req)
        fields = [
            (F.CL_ORD_ID, cid),
            (F.ORIG_CL_ORD_ID, go.venue_clordid or go.clordid),
            *self._instrument_fields(go),
            (F.SIDE, go.fix_side),
            (F.ORDER_QTY, self._qty(go.symbol, go.qty)),
            (F.TRANSACT_TIME, F.now_utc()),
        ]
        if go.order_id != "NONE":
            fields.append((F.ORDER_ID, go.order_id))
        self._emit(F.message(F.CANCEL, fields), self.venue_sid, (F.CANCEL, cid))

    def _own_cancel_refused(
        self, go: GwOrder, clordid: str, msg: F.In | None, why: str = ""
    ) -> None:
        """The venue refused the gateway's own cancel `clordid` of `go` (OrderCancelReject,
        an ExecutionReport 150=8, a BusinessMessageReject or session Reject, or the venue
        session did not take it; caller holds the lock, `go.cancel_sent` already cleared).

        While a kill holds the order or its client is gone (`_cancel_in_force`) and it is
        still live, a fresh cancel is sent after a wait that doubles with each refusal
        (the sweep's period first, at most `answer_timeout_s`), until the venue cancels or
        ends it: a venue refuses a cancel it cannot act on yet (the order's ack in flight,
        unknown order; a pending state; too late, with the fill still to come). Before,
        a refused cancel-on-disconnect was never sent again (no client, no drain left)
        and the order worked on at the venue with its owner gone, and a kill's refused
        after its drain had ended worked on through the kill. Recorded
        (`own_cancel_rejected`, with the venue's reason and when the next goes) and logged
        `OWN_CANCEL_REFUSED`; a client's mass cancel's refused cancel is not sent again
        (its client is there to cancel) but is told to that client: an OrderCancelReject
        under the mass cancel's ClOrdID naming the order (OrigClOrdID, OrderID, its
        OrdStatus), as FIX answers each order a mass cancel affects. Before, the client,
        whose MassCancelReport had counted the order as affected, was never told, and took
        for cancelled an order still working at the venue."""
        reason = F.clean((msg.get(F.CXL_REJ_REASON) or msg.get(F.ORD_REJ_REASON) or "")
                         if msg is not None else "")[:8]  # fmt: skip
        text = F.clean((msg.get(F.TEXT) or "") if msg is not None else why)[:200]
        resend_in: float | None = None
        if go.live and self._cancel_in_force(go):
            resend_in = min(self.answer_timeout_s, self._sweep_s * 2 ** min(go.cancel_refusals, 16))
            go.cancel_refusals += 1
            due = self.guard.clock.monotonic_ns() + to_ns(resend_in)
            self._kill_resend.append((due, go, None, clordid, "cancel_refused"))
            log.error(
                "OWN_CANCEL_REFUSED order=%s cancel=%s reason=%s text=%r: another in %.2f s",
                go.guard_id,
                F.clean(clordid)[:64],
                reason,
                text,
                resend_in,
            )
        self.guard.note(
            "own_cancel_rejected",
            order_id=go.guard_id,
            clordid=F.clean(clordid)[:64],
            reason=reason or None,
            text=text or None,
            resend_in_s=resend_in,
        )
        mass, go.mass_cancel = go.mass_cancel, ""
        sid = self.client_sids.get(go.comp)
        if mass and resend_in is None and go.live and sid is not None:
            venue = msg.get(F.CXL_REJ_REASON) if msg is not None else None
            fields = [
                (F.ORDER_ID, go.order_id),
                (F.CL_ORD_ID, mass),
                (F.ORIG_CL_ORD_ID, go.clordid),
                (F.ORD_STATUS, go.status),
                (F.CXL_REJ_RESPONSE_TO, "1"),
                (F.CXL_REJ_REASON, venue if venue in _CXL_REASONS else F.CXL_BROKER_OPTION),
                (
                    F.TEXT,
                    f"mass cancel {mass}: the venue refused this order's cancel"
                    f"{f' ({text})' if text else ''}; it is still working"[:512],
                ),
            ]
            self._emit(F.message(F.CANCEL_REJECT, fields), sid)

    def _kill_in_force(self, go: GwOrder) -> bool:
        """Whether a kill that cancelled `go` (`GwOrder.kills`) is still in force: the Guard
        holds its scope halted or reducing (caller holds the lock). A resume of it ends
        the gateway's own resends of the order's cancel."""
        return any(
            self.guard.trading_state(scope, key) is not TradingState.ACTIVE
            for scope, key in go.kills
        )

    def _cancel_in_force(self, go: GwOrder) -> bool:
        """Whether the gateway's own cancel of `go` must be sent again when the venue never
        answers it or loses it (caller holds the lock): a kill that cancelled it is in
        force, or its client's session was lost and cancel-on-disconnect cancelled it
        (`GwOrder.disconnected`: nobody else is left to cancel it). Before, only a kill's
        was: a disconnect's cancel the venue left unanswered was given up, and the order
        worked on at the venue with its owner gone."""
        return go.disconnected or self._kill_in_force(go)

    def _resend_kill_cancel(self, go: GwOrder, why: str, previous: str | None = None) -> None:
        """A fresh cancel of an order a kill in force covers, whose kill's cancel the venue
        never answered (`why`: answer_timeout) or that was in flight when the venue session
        dropped or reset its numbers (venue_logon, venue_sequence_reset); caller holds the
        lock. The earlier cancel is no longer awaited (the venue's late answer to it is
        applied to the order it names, as any answer to a request let go). Recorded
        (`kill_cancel_resent`) and logged each time; it ends when the venue answers (the
        order cancelled, filled, or the cancel refused) or the kill is resumed. `previous`:
        the cancel it replaces, when no longer `GwOrder.cancel_sent`."""
        lost = go.cancel_sent
        if lost is not None:
            previous = lost
            held = self.book.requests.get(lost)
            if held is not None and held.kind == "KILL" and held.order is go:
                del self.book.requests[lost]
            go.cancel_sent = None
        self._cancel_at_venue(go, go.cancel_note or "knightwatch kill")
        self.guard.note(
            "kill_cancel_resent",
            order_id=go.guard_id,
            clordid=go.cancel_sent,
            previous=previous,
            why=why,
        )
        log.warning(
            "KILL_CANCEL_RESENT order=%s cancel=%s previous=%s why=%s",
            go.guard_id,
            go.cancel_sent,
            previous,
            why,
        )

    def _resend_lost_kill_cancels(self, why: str) -> None:
        """Every live order a kill in force covers whose cancel is in flight (one cancel of
        its own or a mass cancel) gets a fresh one (`_resend_kill_cancel`); caller holds
        the lock, the venue session is up."""
        for o in self.book.live():
            if o.cancel_sent is not None and self._cancel_in_force(o):
                self._resend_kill_cancel(o, why)

    def in_scope(self, scope: Scope, key: str) -> list[GwOrder]:
        """Live orders a kill of (scope, key) covers (caller holds the lock).

        An order adopted at start-up belongs to no known strategy: it may be the killed
        strategy's, so any kill covers it (a strategy-and-symbol kill, in its symbol). A
        symbol matches in any case, as the Guard's halt does (`guard.halts.view_slot`)."""
        live = self.book.live()
        if scope in (Scope.FLEET, Scope.NODE):
            return live if scope is Scope.FLEET or key == self.guard.node else []
        covers = self._covers(scope, key)
        return [o for o in live if covers(o)]

    def _covers(self, scope: Scope, key: str) -> Callable[[GwOrder], bool]:
        """Whether a kill of (scope, key) covers an order (`in_scope`'s rule, one order)."""
        if scope in (Scope.FLEET, Scope.NODE):
            everything = scope is Scope.FLEET or key == self.guard.node
            return lambda o: everything
        if scope is Scope.STRATEGY:
            return lambda o: o.strategy in (key, RECONCILED)
        strategy, symbol = (None, key) if scope is Scope.SYMBOL else split_pair(key)
        folded = symbol.casefold()
        return lambda o: (
            o.symbol.casefold() == folded
            and (strategy is None or o.strategy in (strategy, RECONCILED))
        )

    def cancel_scope(self, scope: Scope, key: str, reason: str) -> list[str]:
        """Cancel every live order of a scope at the venue; returns their Guard ids.

        One mass cancel where the venue supports it and the scope is everything the
        gateway routed (or one symbol); otherwise one cancel per order. Orders whose
        cancel is still in flight are not sent another. Each order remembers the kill
        (`GwOrder.kills`): while the Guard holds its scope halted, a cancel of it the venue
        leaves unanswered or loses with the session is sent again (`_resend_kill_cancel`).
        """
        note = f"knightwatch kill: {reason}"[:512]
        slot = (scope, key)
        with self._held():
            orders = self.in_scope(scope, key)
            for o in orders:
                if slot not in o.kills:
                    o.kills += (slot,)
            self.guard.note("kill_cancels", scope=scope.value, key=key, orders=len(orders))
            whole = scope in (Scope.FLEET, Scope.NODE)
            # a symbol's mass cancel names it in Symbol(55): with instruments named by
            # SecurityID the key is no Symbol (the venue would cancel none, or another's)
            # (and the orders' own spelling of it: a kill typed in another case covers them)
            by_symbol = (
                scope is Scope.SYMBOL
                and self.cfg.instrument == "symbol"
                and all(o.symbol == key for o in orders)
            )
            mass = self.cfg.venue.mass_cancel and self.venue_up and (whole or by_symbol)
            if mass and orders and not any(o.cancel_sent for o in orders):
                cid = self.book.next_id("KWMC")
                fields = [
                    (F.CL_ORD_ID, cid),
                    (F.MASS_CANCEL_REQUEST_TYPE, "7" if whole else "1"),
                    (F.TRANSACT_TIME, F.now_utc()),
                ]
                if not whole:
                    fields.append((F.SYMBOL, key))
                due = self.guard.clock.monotonic_ns() + to_ns(self.answer_timeout_s)
                for o in orders:
                    o.cancel_note = note
                    o.cancel_sent = cid
                    # unanswered: one cancel each
                    self._kill_resend.append((due, o, cid, cid, "answer_timeout"))
                self._emit(F.message(F.MASS_CANCEL, fields), self.venue_sid)
            else:
                for o in orders:
                    self._cancel_at_venue(o, note)
            return [o.guard_id for o in orders]

    def retry_cancels(self, scope: Scope, key: str) -> None:
        """Send a cancel again for live orders of the scope whose cancel came back refused."""
        with self._held():
            for o in self.in_scope(scope, key):
                if o.cancel_sent is None and o.cancel_note is not None:
                    self._cancel_at_venue(o, o.cancel_note)
                elif o.cancel_sent is not None and o.cancel_sent.startswith("KWMC"):
                    # a mass cancel that did not reach this order: fall back to one cancel
                    o.cancel_sent = None
                    self._cancel_at_venue(o, o.cancel_note or "knightwatch kill")

    def still_working(self, scope: Scope, key: str) -> list[str]:
        with self._held():
            return [o.guard_id for o in self.in_scope(scope, key)]
