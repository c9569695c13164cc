"""The gateway's own view of the orders it routed: who owns each, where it stands at the venue.

The Guard knows risk (what is working, what filled); the gateway must also
know FIX facts the Guard has no use for: which client session owns a
ClOrdID (to route the venue's reports back), the venue's OrderID, the
OrdStatus to answer a status request, the requests in flight (a cancel or
replace is answered under its own ClOrdID), which cancels the gateway
itself sent (a kill, cancel-on-disconnect, a client's mass cancel), whose
reports the client must see under its own order's ClOrdID, and which cancels
each client had forwarded (`SentCancel`): a resend of one is answered from
what became of it, never sent to the venue again.

A transparent proxy puts the client's ClOrdID on the wire, so one venue
session carries the ClOrdIDs of every client: a ClOrdID live for one client
is refused for another (the venue could not tell them apart). The venue's
answers are matched by ClOrdID, so an id names one order or one request in
flight, never both, and the gateway's own ids skip every id in use.

Bounded by the Guard's duplicate scope. The book remembers what it learnt
about an order (its ClOrdID's owner, its decision, its fills, the venue's
ExecIDs) for as long as the Guard remembers the order's id
(`duplicate_id_window_s`, a day by default): a fact is forgotten once it is
a window old and its order has been finished (filled, cancelled, rejected,
expired) for a window; a live order is never forgotten. So a gateway that
runs for days holds one window of orders, not every order since it started;
with no window (session scope) it keeps everything until it restarts. What
comes after an order is forgotten is treated as unknown: a status request
is answered "unknown order", a late fill for it halts the node (the Guard's
rule for a fill it never accepted), and a bust of a forgotten fill too.
Forgetting rides on later orders and reports, a few facts each.

The live orders have their own index, so a kill, a drain, a disconnect or
a mass cancel looks at what is working, never at every order of the day
(with a million finished orders, one scan took 46 ms, under the lock that
holds the order flow, in the stop direction).

The book's process runs the Guard: Python's garbage collector, which runs
inside whichever call allocates when a collection is due (an order's), would
walk every order. An order holds only plain values (strings, numbers, its
side), and the ExecIDs are strings, so neither is walked
(`knightwatch.guard.untracked`): with a million finished orders and their
ExecIDs, a full collection took 274 ms, and 32 ms without walking them (the
dict that indexes the orders is still walked).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from knightwatch.decision import Decision
from knightwatch.guard.untracked import untracked
from knightwatch.order import Fill, Side
from knightwatch.state import Scope

OWN: Final = "knightwatch"
"""The owner of the ClOrdIDs the gateway itself sends (its cancels, requests, ExecIDs)."""

LIVE_STATUS = frozenset({"0", "1", "A", "5", "6", "E", "D"})
"""OrdStatus values of an order that can still execute."""

FORGET_PER_CALL: Final = 4
"""Facts looked at per order or report handled; more than one such call adds, so
forgetting keeps up."""

# what a scheduled entry forgets: an order with everything known about it, or one fact
# that belongs to no order (a refusal's decision, a cancel's ClOrdID, an unknown ExecID),
# or a client's cancel forwarded (`SentCancel`)
_ORDER, _OWNER, _DECIDED, _EXEC, _CANCEL = range(5)


@dataclass(slots=True)
class GwOrder:
    """One order routed to the venue: the client's ClOrdID, its Guard id and its venue state."""

    comp: str
    clordid: str
    guard_id: str
    strategy: str
    symbol: str
    side: Side
    fix_side: str
    qty: int
    price: float | None
    parent_id: str | None = None
    cod: bool = False
    order_id: str = "NONE"
    status: str = "A"
    cum: int = 0
    leaves: int = 0
    cancel_note: str | None = None
    """Text for the client when the gateway itself cancels the order (kill, disconnect)."""
    cancel_sent: str | None = None
    """ClOrdID of the gateway's own cancel in flight, if any."""
    done_ns: int = 0
    """When the order was last seen finished (the book's clock); 0 while live."""
    execs: tuple[str, ...] = ()
    """The venue's ExecIDs applied to it (forgotten with it)."""
    former: tuple[str, ...] = ()
    """The ClOrdIDs it answered to before its replaces (forgotten with it)."""
    order_ids: tuple[str, ...] = ()
    """Every venue OrderID the venue session reported for it (a venue may give a replaced
    order a new one): a drop-copy report naming one is a copy of this order (forgotten
    with it)."""
    venue_clordid: str = ""
    """The ClOrdID the venue knows it by when the book holds it under another key: a
    second working order the venue's start-up mass status reported under a ClOrdID an
    adopted order already answers to (`clordid` is then that ClOrdID and its OrderID)."""
    venue_symbol: str = ""
    id_source: str = ""
    """With `instrument = "security_id"` (`symbol` is then the SecurityID): the Symbol(55)
    and SecurityIDSource(22) the order was sent (or the venue's status report named it)
    with, so the gateway's own cancel names the instrument as the venue knows it."""
    kills: tuple[tuple[Scope, str], ...] = ()
    """The scopes of the kills that cancelled it (`Gateway.cancel_scope`): while the Guard
    holds any of them halted, a cancel of it the venue never answers, or one lost with
    the venue session, is sent again by the gateway itself."""
    disconnected: bool = False
    """Its client's session was lost and cancel-on-disconnect cancelled it: no client and
    no kill's drain is left to cancel it, so a cancel of it the venue never answers, or
    one lost with the venue session, is sent again by the gateway itself (as a kill's)
    until the venue answers one."""
    mass_cancel: str = ""
    """ClOrdID of the client's OrderMassCancelRequest whose cancel of it is in flight or
    due: a refusal of that cancel is told to the client by an OrderCancelReject naming
    the mass cancel and the order (the MassCancelReport counted it as affected)."""
    cancel_refusals: int = 0
    """How many of the gateway's own cancels of it the venue refused while a kill held it
    or its client was gone: each fresh cancel waits twice as long as the one before
    (`Gateway._own_cancel_refused`), at most `answer_timeout_s`."""

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUS


@dataclass(slots=True)
class Request:
    """A cancel, replace or status request in flight, under its own ClOrdID."""

    kind: str
    comp: str
    order: GwOrder | None
    new_guard_id: str = ""
    new_qty: int = 0
    new_price: float | None = None
    answer_as: str = ""
    """The client's own ClOrdID when the request went to the venue under the gateway's
    (`next_id`): the venue's answers reach the client under it."""
    released: bool = False
    """A replace whose order ended while it was in flight (the venue cancelled, expired
    or filled it on its own): its reservation in the Guard was given back then, and
    the venue's late answer to it is told to the client but never applied."""
    cod: bool = False
    """A replace whose ExecInst asks for a cancel on disconnect (Q or o): the order does
    once the venue has replaced it (`GwOrder.cod`)."""
    reject: tuple[tuple[int, str], ...] = ()
    """A client's cancel the venue refused with an OrderCancelReject: that reject's
    fields as the client got them, less its ClOrdID (a resend of the cancel is answered
    with them again, `SentCancel`)."""


@dataclass(slots=True)
class SentCancel:
    """A client's cancel the gateway forwarded to the venue, kept under the client's
    CompID and ClOrdID for a resend of it (PossDupFlag or PossResend): while it is in
    flight the resend is not sent (the first's answer reaches the client), once it is
    answered the resend is answered from that answer. Sent to the venue again, the
    venue would refuse it (too late, unknown order) and that refusal, under the same
    ClOrdID, would contradict the first answer."""

    orig: str
    """The OrigClOrdID(41) it named: a resend naming another order is a new cancel."""
    sent: tuple[tuple[str, Request], ...]
    """(the ClOrdID it went under on the venue session, its request) per order it
    cancels: one, or each order start-up adopted under one ClOrdID."""
    at_ns: int = 0
    """When it was forwarded (the book's clock)."""


class GatewayBook:
    """Orders by venue-facing ClOrdID (the live ones indexed apart), requests in flight,
    and what the gateway remembers about each order for one duplicate scope.

    `window_ns`: the Guard's duplicate scope (None: keep everything, session scope);
    `clock`: monotonic nanoseconds, the Guard's own clock in a gateway.
    """

    def __init__(
        self, window_ns: int | None = None, clock: Callable[[], int] = time.monotonic_ns
    ) -> None:
        if window_ns is not None and window_ns <= 0:
            raise ValueError(f"window_ns: must be > 0 or None (got {window_ns})")
        self.orders: dict[str, GwOrder] = {}
        """Every order remembered, live or finished, by the ClOrdID it answers to."""
        self.working: dict[str, GwOrder] = {}
        """The live orders only: what a kill, a drain or a disconnect must cancel."""
        self.requests: dict[str, Request] = {}
        self.renamed: dict[str, GwOrder] = {}
        """A ClOrdID an order answered to before a replace -> the order: a cancel or a
        replace sent before the client saw the replace's answer names it (FIX: the
        previous non-rejected ClOrdID), and venues resolve it to the order."""
        self.owner: dict[str, str] = {}
        """Every ClOrdID used on the venue session within the scope -> the CompID that used it."""
        self.decided: dict[str, tuple[Decision, GwOrder | None]] = {}
        """Guard id -> (decision, what answered it): a resend is answered from here."""
        self.exec_seen: set[str] = untracked(set())
        """The venue's ExecIDs already applied: a report sent twice is applied once."""
        self.fills: dict[str, Fill] = {}
        """ExecID -> the fill applied, for busts and corrections."""
        self.by_order_id: dict[str, GwOrder] = {}
        """Venue OrderID (as the venue session reported it) -> the order: a drop-copy
        report naming it is the copy of that order, whatever ClOrdID it carries."""
        self.cancels: dict[str, SentCancel] = {}
        """`<CompID>:<ClOrdID>` of a client's cancel -> what was forwarded for the
        latest cancel under that ClOrdID (`sent_cancel`), for a resend of it."""
        self._window_ns = window_ns
        self._clock = clock
        # (due, what, key, order): forgotten from `due` on, unless its order holds it
        self._later: deque[tuple[int, int, str, GwOrder | None]] = untracked(deque())
        self._ids = itertools.count(1)

    def next_id(self, prefix: str) -> str:
        """A ClOrdID for a message the gateway itself sends, never one in use.

        A client may send any string, `KW-7` too: an id a client already holds is
        skipped, or the venue's answer to the gateway's message would be applied to
        the client's order (and the answer to that order's own messages to the
        gateway's)."""
        while True:
            cid = f"{prefix}{next(self._ids)}"
            if cid not in self.orders and cid not in self.requests and self.claim(cid, OWN):
                return cid

    def free(self, clordid: str, comp: str) -> bool:
        """Whether `comp` may put `clordid` on the venue session now: no other session
        used it, and it names no order and no request in flight (the venue's answer
        to one would be taken for the other)."""
        return (
            self.owner.get(clordid, comp) == comp
            and clordid not in self.orders
            and clordid not in self.renamed
            and clordid not in self.requests
        )

    def claim(self, clordid: str, comp: str) -> bool:
        """Reserve a ClOrdID for `comp` on the venue session; False if another CompID has it."""
        n = len(self.owner)
        held = self.owner.setdefault(clordid, comp)
        if len(self.owner) != n:
            self._schedule(_OWNER, clordid, None)
        return held == comp

    def add(self, order: GwOrder) -> None:
        self.orders[order.clordid] = untracked(order)  # plain values: nothing refers back
        if order.live:
            self.working[order.clordid] = order
        else:
            order.done_ns = self._clock()
        self._schedule(_ORDER, order.clordid, order)

    def set_status(self, order: GwOrder, status: str) -> None:
        """The order's OrdStatus: a live order is indexed as working, a finished one is not."""
        was = order.live
        order.status = status
        if order.live:
            order.done_ns = 0
            if not was:
                held = self.orders.get(order.clordid)
                if held is None:  # forgotten, then reached through a request: back in
                    self.add(order)
                elif held is order:
                    self.working[order.clordid] = order
        elif was:
            order.done_ns = self._clock()
            if self.working.get(order.clordid) is order:
                del self.working[order.clordid]

    def find(self, clordid: str) -> GwOrder | None:
        """The order `clordid` names: the one answering to it, else the one it named
        before a replace."""
        return self.orders.get(clordid) or self.renamed.get(clordid)

    def rename(self, order: GwOrder, new_clordid: str, new_guard_id: str) -> None:
        """A replace took effect: the order now answers to its new ClOrdID, and its old
        one still finds it (`find`) while the order is remembered."""
        if self.orders.get(order.clordid) is order:
            del self.orders[order.clordid]
        if self.working.get(order.clordid) is order:
            del self.working[order.clordid]
        self.renamed[order.clordid] = order
        order.former += (order.clordid,)
        old = order.guard_id
        order.clordid = new_clordid
        order.guard_id = new_guard_id
        if self.decided.get(old, (None, None))[1] is order:
            self._schedule(_DECIDED, old, order)  # no longer the order's own decision
        self.orders[new_clordid] = order
        if order.live:
            self.working[new_clordid] = order

    def venue_order_id(self, order: GwOrder, order_id: str | None) -> None:
        """The venue session named `order_id` for the order: kept (with every earlier one)
        until the order is forgotten."""
        if order_id is None or order_id == "NONE" or order_id in order.order_ids:
            return
        order.order_ids += (order_id,)
        self.by_order_id[order_id] = order

    def decide(self, guard_id: str, decision: Decision, order: GwOrder | None) -> None:
        """Remember how an order (or a replace) was answered, for a resend of it."""
        self.decided[guard_id] = (decision, order)
        if order is None or order.guard_id != guard_id:  # else forgotten with its order
            self._schedule(_DECIDED, guard_id, order)

    def refused(self, guard_id: str, decision: Decision) -> None:
        """Remember a refusal, unless the id was decided before: a fresh duplicate of an
        order is refused, but a resend of the order is still answered as it was."""
        if guard_id not in self.decided:
            self.decide(guard_id, decision, None)

    def saw_exec(self, exec_id: str, order: GwOrder | None) -> None:
        """An ExecID applied (for `order`, if the gateway routed it: then it is forgotten
        with the order, and so is its fill, `keep_fill`)."""
        self.exec_seen.add(exec_id)
        if order is None:
            self._schedule(_EXEC, exec_id, None)
        else:
            order.execs += (exec_id,)

    def keep_fill(self, exec_id: str, fill: Fill) -> None:
        """A fill applied (its ExecID already `saw_exec`, with its order or with none: a
        drop-copy fill), kept for a bust or correction that names its ExecID and
        forgotten with that ExecID."""
        self.fills[exec_id] = fill

    def sent_cancel(self, comp: str, clordid: str, cancel: SentCancel) -> None:
        """A client's cancel went to the venue: a resend of it is answered from it, for as
        long as it is in flight, its order live, or either ended less than a scope ago."""
        cancel.at_ns = self._clock()
        key = f"{comp}:{clordid}"
        self.cancels[key] = cancel
        order = next((r.order for _, r in cancel.sent if r.order is not None), None)
        self._schedule(_CANCEL, key, order)

    def cancel_in_flight(self, cancel: SentCancel) -> bool:
        """Whether the venue has yet to answer (any of) what was sent for the cancel."""
        return any(self.requests.get(cid) is req for cid, req in cancel.sent)

    def unsend_cancel(self, req: Request, clordid: str) -> None:
        """The venue never took or never answered the client's cancel `req` sent under
        `clordid` (`Request.answer_as` if renamed): a resend of it goes to the venue."""
        key = f"{req.comp}:{req.answer_as or clordid}"
        held = self.cancels.get(key)
        if held is not None and any(r is req for _, r in held.sent):
            del self.cancels[key]

    def live(self) -> list[GwOrder]:
        return list(self.working.values())

    def of(self, comp: str) -> list[GwOrder]:
        return [o for o in self.working.values() if o.comp == comp]

    # ------------------------------------------------------------------ forgetting
    def _schedule(self, what: int, key: str, order: GwOrder | None) -> None:
        window = self._window_ns
        if window is not None:
            self._later.append((self._clock() + window, what, key, order))
            self.forget(FORGET_PER_CALL)

    def forget(self, budget: int) -> int:
        """Look at up to `budget` facts that are due; returns how many were forgotten.

        A fact whose order is live, or finished less than a window ago, is put
        back with a new due time: an order and what is known about it are
        forgotten between one and two windows after it finished, never while it
        can still execute (nor a ClOrdID while a request is in flight under it).
        """
        window = self._window_ns
        later = self._later
        if window is None or not later:
            return 0
        now = self._clock()
        gone = 0
        for _ in range(budget):
            if not later or later[0][0] > now:
                break
            _, what, key, order = later.popleft()
            if what == _OWNER:
                if key in self.orders:
                    continue  # an order's ClOrdID: forgotten with the order
                if key in self.requests:
                    later.append((now + window, what, key, None))
                    continue
            if order is not None:
                due = (now if order.live else order.done_ns) + window
                if due > now:
                    later.append((due, what, key, order))
                    continue
            if what == _ORDER:
                assert order is not None
                self._forget_order(order)
            elif what == _OWNER:
                self.owner.pop(key, None)
            elif what == _DECIDED:
                held = self.decided.get(key)
                if held is None or held[1] is not order:
                    continue  # decided again since: that decision has its own entry
                del self.decided[key]
            elif what == _CANCEL:
                sent = self.cancels.get(key)
                if sent is None or sent.at_ns + window > now:
                    continue  # gone, or a newer cancel under the id: it has its own entry
                if self.cancel_in_flight(sent):
                    later.append((now + window, what, key, order))
                    continue
                del self.cancels[key]
            else:
                self.exec_seen.discard(key)
                self.fills.pop(key, None)  # a drop-copy fill: kept for its bust as long
            gone += 1
        return gone

    def _forget_order(self, order: GwOrder) -> None:
        """An order, its ClOrdID's owner, its decision, its ExecIDs, fills and OrderIDs."""
        if self.orders.get(order.clordid) is not order:
            return  # already gone (a replace renamed it and its new ClOrdID was reused)
        del self.orders[order.clordid]
        self.owner.pop(order.clordid, None)
        for old in order.former:
            if self.renamed.get(old) is order:
                del self.renamed[old]
        held = self.decided.get(order.guard_id)
        if held is not None and held[1] is order:
            del self.decided[order.guard_id]
        for exec_id in order.execs:
            self.exec_seen.discard(exec_id)
            self.fills.pop(exec_id, None)
        for order_id in order.order_ids:
            if self.by_order_id.get(order_id) is order:
                del self.by_order_id[order_id]
