"""The pre-trade Guard: every order passes here before it leaves the process.

It lives inside the order-emitting process so that no network hop, broker or
control plane sits between a runaway loop and the check that stops it. Every
decision is O(1): state that the rules need (positions with working orders,
exposure totals, rate windows, parent quantities) is kept incrementally as
orders, fills, cancels and prices arrive, never recomputed per order.

Fail closed: an order the Guard cannot evaluate is blocked with
`invalid_order`; an unarmed guard, an expired lease, or a flight recorder that
cannot record blocks everything. `check` never raises.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import Callable
from decimal import Context, Decimal, DecimalException, Inexact, InvalidOperation, localcontext
from typing import Any

from knightwatch.audit import AuditContext, FlightRecorder, MemorySink
from knightwatch.clock import MINUTE_NS, NS_PER_S, Clock, SystemClock, to_ns
from knightwatch.decision import ACCEPTED, Decision, RejectReason
from knightwatch.errors import QUOTE_LIMIT, quoted
from knightwatch.guard.errors import RecorderUnavailable
from knightwatch.guard.halts import Halt, HaltLatches, view_slot
from knightwatch.guard.lanes import Effective, Lane
from knightwatch.guard.ledger import (
    CustomerLine,
    Ledger,
    Parent,
    Pending,
    SymbolBook,
    Working,
    customer_part,
)
from knightwatch.guard.orderids import SHARD_MASK, OrderIds
from knightwatch.guard.rates import Window, windows
from knightwatch.guard.untracked import untracked
from knightwatch.limits import Limits
from knightwatch.order import (
    MAX_ID_LEN,
    MAX_PRICE,
    MAX_QTY,
    MAX_SYMBOL_LEN,
    MIN_PRICE,
    Fill,
    InvalidOrder,
    Order,
    Side,
    fill_problem,
    order_problem,
    price_problem,
)
from knightwatch.state import FLEET_KEY, Scope, TradingState, pair_key, scope_key

try:  # a directive to mypyc (the compiled build); a no-op when interpreted
    from mypy_extensions import mypyc_attr
except ImportError:  # not installed: nothing to direct

    def mypyc_attr(*_args: object, **_kwargs: object) -> Callable[[type], type]:  # type: ignore[misc]
        return lambda cls: cls


log = logging.getLogger("knightwatch.guard")

Checked = Any
"""A parameter the Guard checks itself (a ValueError naming it). Typed `Any` so that the
compiled build does not reject a wrong type first with its own TypeError: both builds
answer a bad argument alike. The docstrings say what each one must be."""

# module-level aliases: the hot path reads locals and globals, not enum attributes
R = RejectReason
_BUY = Side.BUY
_ACTIVE = TradingState.ACTIVE
_HALTED = TradingState.HALTED
_INF = float("inf")


def _log_has_sink() -> bool:
    """True if a BLOCK_ORDER record would reach a handler that writes it somewhere.

    With only the library's NullHandler the record would be built and dropped;
    skipping it changes no output and takes most of the blocked-path cost away.
    """
    lg: logging.Logger | None = log
    while lg is not None:
        for h in lg.handlers:
            if type(h) is not logging.NullHandler:
                return True
        if not lg.propagate:
            return False
        lg = lg.parent
    return False


def _blocked(reason: RejectReason, detail: str) -> Decision:
    return Decision(False, reason, detail)


_NOT_ARMED = Decision(False, R.NOT_ARMED, "guard is not armed; nothing leaves until arm()")
DEFAULT_MEMORY_RECORDS = 1_000_000
"""Records a Guard built without a recorder keeps in memory before it blocks (fail closed)."""
_LEASE_NEVER = Decision(False, R.LEASE_EXPIRED, "no control-plane lease yet; renew to trade")
_LEASE_LAPSED = Decision(False, R.LEASE_EXPIRED, "control-plane lease expired; renew to trade")
PROVISIONAL_LANES = 1024
"""Lanes without an accepted order held for the refusals that follow (the newest)."""
TRIM_PER_TICK = 64
"""Strategy or symbol windows each lease renewal looks at for a minute of idleness."""
_ONE_LOT = Decimal(1)
"""The lot size of a symbol the limits give none (`Limits.lot`)."""
_FAST_DIGITS = len(str(MAX_QTY)) - 1
"""Digits of a whole quantity `Guard.lots` converts without decimal arithmetic (any more
could be beyond MAX_QTY, or beyond what `int` converts)."""
_WIDE = Context(prec=60)
"""`Guard.quantity` multiplies in it: every lot count up to MAX_QTY (16 digits) times a lot
size (a float's 17 digits at most) is exact in it."""
_HUGE_LOTS = Decimal("1e400")
"""Lots `Guard.lots` refuses to convert at all: far beyond MAX_QTY (above which an `Order`
or its caller refuses), and short of what takes `int` long to build (1E+999999 lots held
a gateway for 40 s). Between the two, the whole lots are returned for the caller to refuse."""
_EXACT = Context(prec=60, traps=[Inexact, InvalidOperation])
"""`Guard.lots` divides by the lot exactly: a quotient the default 28 digits would round
(1.00000000000000000000000000001 lots to 1) raises instead of passing as a multiple."""
_AUDIT_DOWN = Decision(
    False, R.AUDIT_UNAVAILABLE, "flight recorder cannot record; blocking until it can"
)


@mypyc_attr(allow_interpreted_subclasses=True)  # adapters extend it (WatchedGuard)
class Guard:
    """The pre-trade check for one order-emitting process.

    Parameters
    ----------
    limits:
        The numbers to enforce (`Limits()` is safe: every rule on).
    node:
        This process's node id, used for node-scoped halts and records.
    clock:
        Time source (`SystemClock` live, `SimClock` in replays and tests).
    recorder:
        The flight recorder every decision is written to; without one the Guard
        keeps `DEFAULT_MEMORY_RECORDS` in memory and then blocks (fail closed).

    State is delegated: the ledger (`guard/ledger.py`) counts positions,
    working orders, parents and totals; the halt latches (`guard/halts.py`)
    hold why each scope is halted. The checks stay inline in `_evaluate`.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        node: Checked = "node",
        clock: Clock | None = None,
        recorder: FlightRecorder | None = None,
    ) -> None:
        self.limits = limits if limits is not None else Limits()
        if type(node) is not str or not node.strip() or len(node) > MAX_ID_LEN:
            # the node's own halts (fill mismatch, loss stop) are latched under this key
            raise ValueError(
                f"node: must be a non-empty string of at most {MAX_ID_LEN} characters "
                f"(got {quoted(node)})"
            )
        self.node = node
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._monotonic_ns = self._clock.monotonic_ns  # read on every order: looked up once
        if recorder is None:
            recorder = FlightRecorder(
                None, clock=self._clock, sink=MemorySink(capacity=DEFAULT_MEMORY_RECORDS)
            )
        self._recorder = recorder
        self._ctx = AuditContext(node=node, limits_version=self.limits.version)
        self._armed = False
        lease = self.limits.lease_timeout_s
        self._lease_ns: int | None = None if lease is None else to_ns(lease)
        self._lease_deadline = 0
        self._lease_why = _LEASE_NEVER
        self._halts = HaltLatches()
        self._on_halt: Callable[[Scope, str, Halt], None] | None = None
        self._unrecorded = 0
        self._unrecorded_ids: tuple[str, str] = ("", "")
        window = self.limits.duplicate_id_window_s
        self._lanes: dict[tuple[str, str], Lane] = {}
        # lanes built for orders that were refused, with the windows they were built from
        self._provisional: dict[
            tuple[str, str], tuple[Lane, tuple[Window, ...], tuple[Window, ...]]
        ] = {}
        self._ledger = Ledger(self.limits.lot)
        self._ids = OrderIds(
            None if window is None else to_ns(window), self._ledger.working, self._ledger.pending
        )
        self._lot_sizes: dict[str, Decimal] = {}
        self._symbols_folded = frozenset(n.casefold() for n in self.limits.symbol)
        """The symbol tables' names case-folded: a symbol's lot size in any case (`lots`)."""
        self._node_windows = windows(
            self.limits.max_orders_per_s_node,
            self.limits.max_orders_per_min_node,
            R.RATE_NODE,
            "node",
            node,
        )
        self._unknown_cancel_windows = _unknown_cancel_windows(self.limits, node)
        self.unknown_cancels = 0
        """Cancel requests for orders this Guard did not hold, since it started
        (`on_cancel_request`): what the node reports to the supervisor."""
        self._strategy_windows: dict[str, tuple[Window, ...]] = {}
        self._symbol_windows: dict[str, tuple[Window, ...]] = {}
        self._trim_todo: list[tuple[Window, ...]] = []  # windows `_trim_windows` looks at next
        self._executions: dict[tuple[str, str, Side], deque[int]] = {}
        self._turnover: deque[tuple[int, float]] = untracked(deque())  # a minute of orders
        self._turnover_sum = 0.0
        self.accepted = 0
        self.lowered = 0
        """Of `accepted`, the replaces that only lowered what was working at its price (the
        stop direction, accepted in any trading state)."""
        self.blocked: dict[RejectReason, int] = {}

    # ------------------------------------------------------------------ hot path

    def check(self, order: Order) -> Decision:
        """Decide on one new order; on accept it counts as working from now on."""
        if not self._recorder.ready():
            self._count_unrecorded(order)
            self._block(order, _AUDIT_DOWN)
            return _AUDIT_DOWN
        if self._unrecorded:
            self._record_outage()
        # An Order's fields are read once, here, for the checks and for the record. Untyped:
        # an Order built around its validation may hold anything, and the compiled build
        # would reject a typed read of a wrong type with its own TypeError.
        is_order = type(order) is Order
        u: Any = order
        if is_order:
            oid, st, sy, sd, q, p, pid = (
                u.id, u.strategy, u.symbol, u.side, u.qty, u.price, u.parent_id
            )  # fmt: skip
        else:  # refused as not an Order before any of them is looked at
            oid = st = sy = sd = q = p = pid = None
        try:
            d, eff = self._evaluate(order, oid, st, sy, sd, q, p, pid)
        except Exception as exc:  # fail closed: whatever went wrong, nothing leaves
            d, eff = _blocked(R.INVALID_ORDER, f"order could not be checked: {exc!r}"), None
        rules = eff.rules if eff is not None else ("validity",)
        if is_order:
            self._recorder.record_order(order, oid, st, sy, sd, q, p, pid, d, self._ctx, rules)
        else:
            self._recorder.record_decision(order, d, self._ctx, rules)
        if d is ACCEPTED:
            self.accepted += 1
        else:
            self._block(order, d)
        return d

    def _evaluate(
        self, o: Order, oid: Any, st: Any, sy: Any, sd: Any, q: Any, p: Any, parent_id: Any
    ) -> tuple[Decision, Effective | None]:
        # The rows of the README's check table, in order. Row 1 (audit can record) is
        # in `check`; every block returns here, so `check` is the one funnel.
        # -- 2. armed, lease
        if not self._armed:
            return _NOT_ARMED, None
        now = self._monotonic_ns()
        if self._lease_ns is not None and now >= self._lease_deadline:
            return self._lease_why, None
        # -- 3. order validity
        if type(o) is not Order:
            return _blocked(R.INVALID_ORDER, f"not an Order: {type(o).__name__}"), None
        # The fields as `check` read them. The common case of `order_problem` is one
        # expression here; only an order that fails it pays for the scan that names the field.
        if not (
            type(oid) is str
            and 0 < len(oid) <= MAX_ID_LEN
            and type(st) is str
            and 0 < len(st) <= MAX_ID_LEN
            and type(sy) is str
            and 0 < len(sy) <= MAX_SYMBOL_LEN
            and type(sd) is Side
            and type(q) is int
            and 0 < q <= MAX_QTY
            and (p is None or (type(p) is float and MIN_PRICE <= p <= MAX_PRICE))
        ):
            problem = order_problem(oid, st, sy, sd, q, p)
            if problem is not None:
                what = f"{problem[0]}: {problem[1]} (got {quoted(problem[2])})"
                return _blocked(R.INVALID_ORDER, what), None
        order_id: str = oid
        strategy: str = st
        symbol: str = sy
        side: Side = sd
        qty: int = q
        price: float | None = p
        lane = self._lanes.get((strategy, symbol))
        kept = lane is not None
        if lane is None:  # kept only once an order in it is accepted (`_keep`)
            if "/" in strategy:  # checked here, once per lane: a kept lane's strategy is valid
                problem = order_problem(oid, st, sy, sd, q, p)
                assert problem is not None
                what = f"{problem[0]}: {problem[1]} (got {quoted(problem[2])})"
                return _blocked(R.INVALID_ORDER, what), None
            for field, name in (("strategy", strategy), ("symbol", symbol)):
                # a padded or control-character name is no name the limits can hold
                # (`limits._name_problem`): it would escape the restricted list, the
                # overrides and the halts kept under the real one
                if name != name.strip() or not name.isprintable():
                    what = (
                        f"{field}: must not start or end with whitespace or contain "
                        f"control characters (got {quoted(name)})"
                    )
                    return _blocked(R.INVALID_ORDER, what), None
            lane = self._lane(strategy, symbol)
        eff = lane.eff
        book = lane.book
        # -- 4. trading state per scope
        halts = self._halts
        if halts.states:
            halt = halts.worst(lane.scopes)
            if halt is not None and (
                halt.state is _HALTED
                or not self._ledger.reducing(book, symbol, side, qty, parent_id)
            ):
                return halt.decision, eff
        # -- 5. duplicate id, allow-list, restricted list
        ids = self._ids
        if order_id in ids.shards[hash(order_id) & SHARD_MASK] and ids.recent(order_id, now):
            return _blocked(R.DUPLICATE_ORDER_ID, f"order id {order_id!r} was already used"), eff
        if eff.allowed_symbols is not None and symbol not in eff.allowed_symbols:
            return _blocked(R.SYMBOL_NOT_ALLOWED, f"symbol {symbol} not in allowed_symbols"), eff
        if symbol in eff.restricted_symbols:
            return _blocked(R.SYMBOL_RESTRICTED, f"symbol {symbol} is on the restricted list"), eff
        # -- 6. quantity and notional
        if eff.max_order_qty is not None and qty > eff.max_order_qty:
            return _blocked(
                R.MAX_ORDER_QTY,
                f"qty {qty} > max_order_qty {eff.max_order_qty} for strategy {strategy}",
            ), eff

        ref = book.ref
        if ref is None or (
            eff.max_price_age_ns is not None and now - book.ref_ns > eff.max_price_age_ns
        ):
            if ref is None:
                why = f"no reference price for {symbol}"
                code = R.NO_REFERENCE_PRICE
            else:
                age = (now - book.ref_ns) / NS_PER_S
                why = f"reference price for {symbol} is {age:.3f}s old > max_price_age_s"
                code = R.STALE_REFERENCE_PRICE
            if eff.require_reference_price or price is None:
                return _blocked(code, why), eff
            ref = price
        lot = book.lot
        value = qty * (ref if price is None else price) * lot
        if eff.max_order_notional is not None and value > eff.max_order_notional:
            return _blocked(
                R.MAX_ORDER_NOTIONAL,
                f"notional {value:,.2f} > max_order_notional {eff.max_order_notional:,.2f}",
            ), eff
        # -- 7. price collar (the reference's age was checked with it above)
        if price is not None:
            dev = abs(price - ref)
            pct = eff.price_collar_pct
            if pct is not None and dev > pct * ref * (1 + 1e-9):
                return _blocked(
                    R.PRICE_COLLAR,
                    f"price {price:.15g} is {dev / ref:.2%} from reference {ref:.15g} "
                    f"> collar {pct:.2%}",
                ), eff
            ticks = eff.price_collar_ticks
            if ticks is not None and dev > ticks * eff.tick_size * (1 + 1e-9):
                return _blocked(
                    R.PRICE_COLLAR,
                    f"price {price:.15g} is {dev / eff.tick_size:.1f} ticks from reference "
                    f"{ref:.15g} "
                    f"> collar {ticks} ticks",
                ), eff

        # -- 8. parent reconciliation
        led = self._ledger
        parent = None
        pid: str | None = None
        if parent_id is not None:
            parent = led.parents.get(parent_id)
            # a registered parent's id was checked when it was registered; any other is
            # checked here, as `Order` would have (an order built around it), before it is
            # read as a string (the compiled build would raise on a typed read)
            if type(parent_id) is not str or (
                parent is None and not 0 < len(parent_id) <= MAX_ID_LEN
            ):
                why = f"parent_id: must be 1..{MAX_ID_LEN} characters (got {quoted(parent_id)})"
                return _blocked(R.INVALID_ORDER, why), eff
            pid = parent_id
            if parent is None:
                if eff.require_registered_parent:
                    return _blocked(R.UNKNOWN_PARENT, f"parent {pid!r} is not registered"), eff
            else:
                if parent.opposite is side:  # None (side not registered) is never a Side
                    return _blocked(
                        R.PARENT_SIDE_MISMATCH,
                        f"order {oid} is a {side.value} but parent {pid} is a {parent.side}",
                    ), eff
                mc = eff.max_child_orders_per_parent
                if mc is not None and parent.children >= mc:
                    return _blocked(
                        R.MAX_CHILD_ORDERS,
                        f"child {parent.children + 1} > max_child_orders_per_parent {mc} "
                        f"for parent {pid}",
                    ), eff
                if parent.committed + qty > parent.cap:
                    return _blocked(
                        R.PARENT_QTY_EXCEEDED,
                        f"children would total {parent.committed + qty} > {parent.cap} "
                        f"allowed for parent {pid} of qty {parent.qty}",
                    ), eff

        # -- 9. message rates (`Window.over`, inlined: one call fewer per window and order)
        for w in lane.windows:
            ev = w.events
            held = len(ev)
            ps = w.per_s
            pm = w.per_min
            if (ps and held >= ps and now - ev[held - ps] < NS_PER_S) or (
                pm and held >= pm and now - ev[held - pm] < MINUTE_NS
            ):
                return _blocked(w.reason, w.detail(w.over(now))), eff

        # -- 10. exposure counting working orders, by capacity: the part of a child within
        # its registered parent's uncommitted quantity is the customer's and counts against
        # that account; the rest (and every order without a parent) is the firm's own and
        # counts against the node's position and exposure limits (`customer_part`, inline)
        is_buy = side is _BUY
        cust = 0
        if parent is not None:
            free = parent.qty - parent.committed
            if free > 0:
                cust = qty if qty <= free else free
        prin = qty - cust
        # Exposure is valued at the mark, which is the reference price while one is usable
        # (`Ledger.price` sets both). Without one (`require_reference_price = false`), the
        # order counts at its own price or the symbol's provisional mark, whichever is
        # higher: before, the first order's price valued every later one (1 @ 0.01, then
        # 100,000 @ 100 passed a $1M gross cap as $1,000).
        bm = book.mark
        mark = (ref if bm is None or ref > bm else bm) * lot
        if prin:
            long_q, short_q = book.worst(is_buy, prin)
            mp = eff.max_position_qty
            # only the side the order moves: a sell never makes the worst long larger, so a
            # position already over the limit (a tightened limit) can always be reduced
            if mp is not None and (long_q > mp if is_buy else -short_q > mp):
                worst = long_q if is_buy else short_q
                return _blocked(
                    R.MAX_POSITION,
                    f"{symbol} principal position with working orders would reach {worst} "
                    f"> max_position_qty {mp}",
                ), eff
            new_gross = max(abs(long_q), abs(short_q)) * mark
            if eff.max_gross_exposure is not None:
                gross = led.gross - book.gross_c + new_gross
                # over the limit (a price move, a tightened limit), an order that adds
                # nothing to gross (one that reduces) still passes: gross now and with it
                # at the same mark (without a reference, above the stored one)
                if gross > eff.max_gross_exposure and new_gross > book.gross_at(mark):
                    return _blocked(
                        R.MAX_GROSS_EXPOSURE,
                        f"principal gross exposure with working orders {gross:,.0f} "
                        f"> max_gross_exposure {eff.max_gross_exposure:,.0f}",
                    ), eff
            if eff.max_net_exposure is not None:
                if is_buy:
                    net = led.net_long - book.long_c + long_q * mark
                else:
                    net = -(led.net_short - book.short_c + short_q * mark)
                if net > eff.max_net_exposure:
                    return _blocked(
                        R.MAX_NET_EXPOSURE,
                        f"principal net {'long' if is_buy else 'short'} exposure with working "
                        f"orders {net:,.0f} > max_net_exposure {eff.max_net_exposure:,.0f}",
                    ), eff
        line = None
        if cust:
            assert parent is not None
            line = parent.line
            if line is None or line.book is not book:
                line = led.line(parent, symbol) if kept else led.line_for(parent, symbol, book)
            acct = line.account
            if is_buy:
                c_long, c_short = line.pos + line.wbuy + cust, line.pos - line.wsell
            else:
                c_long, c_short = line.pos + line.wbuy, line.pos - line.wsell - cust
            c_gross = max(abs(c_long), abs(c_short)) * mark
            cg = eff.max_customer_gross_exposure
            if cg is not None:
                g = acct.gross - line.gross_c + c_gross
                if g > cg and c_gross > line.gross_at(mark):  # as the firm's: reducing passes
                    return _blocked(
                        R.CUSTOMER_GROSS_EXPOSURE,
                        f"customer {acct.name} gross exposure with working orders {g:,.0f} "
                        f"> max_customer_gross_exposure {cg:,.0f}",
                    ), eff
            cn = eff.max_customer_net_exposure
            if cn is not None:
                if is_buy:
                    n = acct.net_long - line.long_c + c_long * mark
                else:
                    n = -(acct.net_short - line.short_c + c_short * mark)
                if n > cn:
                    return _blocked(
                        R.CUSTOMER_NET_EXPOSURE,
                        f"customer {acct.name} net {'long' if is_buy else 'short'} exposure "
                        f"with working orders {n:,.0f} > max_customer_net_exposure {cn:,.0f}",
                    ), eff
        # -- 11. turnover, cancel-to-fill ratio
        mt = eff.max_turnover_per_min
        if mt is not None:
            tq = self._turnover
            cutoff = now - MINUTE_NS
            while tq and tq[0][0] <= cutoff:
                self._turnover_sum -= tq.popleft()[1]
            own = value * prin / qty  # the firm's share: customers have credit limits instead
            if own and self._turnover_sum + own > mt:
                return _blocked(
                    R.MAX_TURNOVER,
                    f"principal turnover in the last minute would be "
                    f"{self._turnover_sum + own:,.0f} > max_turnover_per_min {mt:,.0f}",
                ), eff
        mr = eff.max_cancel_to_fill_ratio
        if (
            mr is not None
            and led.cancels >= eff.cancel_ratio_min_cancels
            and led.cancels > mr * max(led.fills, 1)
        ):
            return self._cancel_ratio_halt(mr), eff

        # -- 12. order-id capacity; then accepted: from here on the order is working
        cap = eff.max_tracked_order_ids
        if ids.count >= cap and ids.full(cap, now):
            return _blocked(
                R.ORDER_ID_CAPACITY,
                f"cannot track more than {cap} order ids within the duplicate scope; "
                "duplicate detection would be blind",
            ), eff
        if not kept:
            self._keep(strategy, symbol, parent, line)
        ids.add(order_id, now)
        led.working[order_id] = Working(strategy, symbol, side, qty, price, pid, parent, cust, line)
        if parent is not None:
            parent.children += 1
            parent.committed += qty
        for w in lane.windows:
            w.events.append(now)
        if mt is not None and prin:
            self._turnover.append((now, own))
            self._turnover_sum += own
        if book.mark is None:
            book.mark = ref
        if prin:
            if is_buy:
                book.wbuy += prin
            else:
                book.wsell += prin
            # the book's new contributions are the worst-case figures computed above
            # (position and unrealized P&L are unchanged by a new working order)
            # (inlined rather than `led.refresh(book)`: the figures are already at hand)
            long_c, short_c = long_q * mark, short_q * mark
            led.gross += new_gross - book.gross_c
            led.net_long += long_c - book.long_c
            led.net_short += short_c - book.short_c
            book.gross_c, book.long_c, book.short_c = new_gross, long_c, short_c
        if line is not None:  # the customer's part, inlined the same way
            if is_buy:
                line.wbuy += cust
            else:
                line.wsell += cust
            long_c, short_c = c_long * mark, c_short * mark
            acct.gross += c_gross - line.gross_c
            acct.net_long += long_c - line.long_c
            acct.net_short += short_c - line.short_c
            line.gross_c, line.long_c, line.short_c = c_gross, long_c, short_c
        if bm is not None and ref > bm:
            # valued above the stored mark for the check (no usable reference): what is
            # kept stays at the mark, as every other contribution of the book is
            led.refresh(book)
            if line is not None:
                line.refresh()
        return ACCEPTED, eff

    def _lane(self, strategy: str, symbol: str) -> Lane:
        """What an order in (strategy, symbol) is checked with: built here, remembered
        only by `_keep`, once an order in it is accepted. Until then nothing of it is
        kept (no lane, book, window or customer line) beyond the newest
        `PROVISIONAL_LANES` such lanes, so refused orders for made-up symbols or
        strategies, however many, leave no state behind that grows with them."""
        key = (strategy, symbol)
        led = self._ledger
        held = self._provisional.get(key)
        if held is not None:
            held_lane, held_sw, held_yw = held
            # still what it would be built from: a book, a window kept since would be others
            if (
                led.books.get(symbol, held_lane.book) is held_lane.book
                and self._strategy_windows.get(strategy, held_sw) is held_sw
                and self._symbol_windows.get(symbol, held_yw) is held_yw
            ):
                return held_lane
        eff = Effective(self.limits, strategy, symbol)
        book = led.books.get(symbol)
        if book is None:
            book = led.new_book(symbol)
        sw = self._strategy_windows.get(strategy)
        if sw is None:
            sw = windows(
                eff.max_orders_per_s_strategy,
                eff.max_orders_per_min_strategy,
                R.RATE_STRATEGY,
                "strategy",
                strategy,
            )
        yw = self._symbol_windows.get(symbol)
        if yw is None:
            yw = windows(
                eff.max_orders_per_s_symbol,
                eff.max_orders_per_min_symbol,
                R.RATE_SYMBOL,
                "symbol",
                symbol,
            )
        scopes = (  # as the halts' hot-path view holds them (a symbol's case-folded)
            (Scope.FLEET, FLEET_KEY),
            (Scope.NODE, self.node),
            (Scope.STRATEGY, strategy),
            view_slot((Scope.SYMBOL, symbol)),
            view_slot((Scope.STRATEGY_SYMBOL, pair_key(strategy, symbol))),
        )
        lane = Lane(eff, book, self._node_windows + sw + yw, scopes)
        # Held a while, bounded, so a halted fleet's refusals in a lane that never accepted
        # an order do not rebuild it for each one (the stop direction is never slowed).
        prov = self._provisional
        prov[key] = (lane, sw, yw)
        if len(prov) > PROVISIONAL_LANES:
            del prov[next(iter(prov))]
        return lane

    def _keep(
        self, strategy: str, symbol: str, parent: Parent | None, line: CustomerLine | None
    ) -> Lane:
        """Remember the lane `_lane` just returned for (strategy, symbol), with its book, its
        windows and the customer line an accepted order in it counts on: from now on they
        hold state. (`_lane` leaves what it returns in `_provisional`, windows included.)"""
        lane, sw, yw = self._provisional.pop((strategy, symbol))
        self._lanes[(strategy, symbol)] = lane
        led = self._ledger
        led.books.setdefault(symbol, lane.book)
        self._strategy_windows.setdefault(strategy, sw)
        self._symbol_windows.setdefault(symbol, yw)
        if parent is not None and line is not None:
            led.keep_line(parent, symbol, line)
        return lane

    def _block(self, o: object, d: Decision) -> None:
        self.blocked[d.reason] = self.blocked.get(d.reason, 0) + 1
        if log.isEnabledFor(logging.WARNING) and _log_has_sink():
            g = _shown
            log.warning(
                "BLOCK_ORDER node=%s order=%s strategy=%s symbol=%s side=%s qty=%s price=%s "
                "parent=%s reason=%s detail=%r",
                self.node,
                g(o, "id"),
                g(o, "strategy"),
                g(o, "symbol"),
                g(o, "side"),
                g(o, "qty"),
                g(o, "price"),
                g(o, "parent_id"),
                d.reason.value,
                d.detail,
            )

    # ------------------------------------------------------------------ events

    def on_fill(self, fill: Fill) -> None:
        """Apply an execution: position, P&L, parent bookkeeping, throttle, loss stop.

        A fill that does not match what the Guard let out (an unknown order, an
        order already complete, more than the order had left, another side or
        symbol) is applied as the venue's truth, recorded with the mismatch, and
        halts this node with `fill_mismatch` until a person reconciles. A fill
        that cannot be applied at all (built around `Fill` validation: a NaN
        price, a bool quantity) is not applied, so no non-finite value enters the
        Guard's state, and halts the node the same way. Never raises.
        """
        if self._unappliable("fill", fill):
            return
        w, mismatch, principal = self._ledger.fill(fill)
        if w is None:
            mismatch += (
                ": it was accepted here and is complete (a duplicate or late fill)"
                if fill.order_id in self._ids
                else ": no order with this id was accepted here"
            )
        strategy = "?" if w is None else w.strategy
        self._recorder.record_event(
            "fill",
            self._ctx,
            order_id=fill.order_id,
            symbol=fill.symbol,
            side=fill.side.value,
            qty=fill.qty,
            price=fill.price,
            strategy=strategy,
            known=w is not None,
            mismatch=mismatch,
            principal=principal,
        )
        if mismatch:
            # the venue's report is applied as the truth, but the Guard's picture can no
            # longer be trusted: stop the node until a person has reconciled it
            self._auto_halt(Scope.NODE, self.node, mismatch, R.FILL_MISMATCH)
        elif w is not None and principal:
            # customer fills within their parent are bounded by it; the firm's repeat
            self._throttle(strategy, fill.symbol, fill.side)
        self._check_loss()

    def _throttle(self, strategy: str, symbol: str, side: Side) -> None:
        lane = self._lanes.get((strategy, symbol))
        eff = None if lane is None else lane.eff
        if eff is None or eff.max_executions_per_window is None:
            return
        key = (strategy, symbol, side)
        size = eff.max_executions_per_window + 1
        ex = self._executions.get(key)
        if ex is None or ex.maxlen != size:
            # new, or the limit changed since (`set_limits`, a resume ramp's stage): the
            # newest executions count against the limit in force now
            ex = self._executions[key] = deque(() if ex is None else ex, maxlen=size)
        now = self._clock.monotonic_ns()
        ex.append(now)
        if len(ex) == ex.maxlen and now - ex[0] < eff.exec_window_ns:
            self._auto_halt(
                Scope.STRATEGY_SYMBOL,
                pair_key(strategy, symbol),
                f"{len(ex)} {side.value} executions in {symbol} within "
                f"{eff.exec_window_ns / NS_PER_S:g}s > max_executions_per_window "
                f"{eff.max_executions_per_window}",
                R.EXECUTION_THROTTLE,
            )

    def on_cancel(self, order_id: Checked) -> None:
        """A cancel confirmed: free the working quantity. Never refused, in any state.

        Raises ValueError (changing nothing) only when `order_id` is not a string.
        """
        if type(order_id) is not str or not order_id:
            raise ValueError(
                f"on_cancel: order_id must be a non-empty string (got {quoted(order_id)})"
            )
        w = self._ledger.cancel(order_id)
        self._recorder.record_event(
            "cancel",
            self._ctx,
            order_id=order_id,
            known=w is not None,
            remaining=0 if w is None else w.remaining,
        )

    def on_cancel_request(self, order_id: Checked) -> None:
        """A cancel request on its way to the venue: a gateway or an adapter calls it for
        every cancel it forwards, before or after forwarding it (never instead of).

        One naming an order this Guard does not hold (filled or cancelled already, never
        accepted, or no id at all) is counted (`unknown_cancels`); more than
        `max_unknown_cancels_per_s` of them in any second halt the node
        (`unknown_cancels`): a loop cancelling orders that do not exist floods the
        venue, and the cancel-to-fill ratio counts only the cancels the venue confirmed.
        The cancel itself is never refused or held: this never raises (a halt that
        cannot be recorded or told is latched and logged), and new orders are what
        the halt refuses. Off the order path: `check` reads nothing of it.
        """
        led = self._ledger
        if type(order_id) is str and (order_id in led.working or order_id in led.pending):
            return  # a cancel of an order the Guard holds: `on_cancel` counts it confirmed
        self.unknown_cancels += 1
        for w in self._unknown_cancel_windows:
            now = self._monotonic_ns()
            breached = w.over(now)
            w.events.append(now)
            if breached:
                why = (
                    f"{w.per_s + 1} cancel requests for orders this Guard does not hold in "
                    f"the last 1s > max_unknown_cancels_per_s {w.per_s}"
                )
                try:
                    self._auto_halt(Scope.NODE, self.node, why, R.UNKNOWN_CANCELS)
                except Exception as exc:  # latched before it is recorded: it blocks anyway
                    log.error("unknown-cancel halt latched but not recorded or told: %r", exc)

    def on_external_fill(self, fill: Fill) -> None:
        """An execution of an order that did not pass this Guard, reported by a source that
        sees every order at the venue (a drop copy): the firm's own (no parent of this
        Guard's covers it), it moves the position, the principal flow and the loss stop
        like any fill, and is recorded `known=False`, but it is expected, so unlike
        an unknown fill in `on_fill` it does not halt. Never raises; a fill that cannot
        be applied at all halts as in `on_fill`."""
        problem = fill_problem(fill)
        if problem is not None:
            self.on_fill(fill)  # records and halts: nothing unappliable enters the state
            return
        self._ledger.external(fill)
        self._recorder.record_event(
            "fill",
            self._ctx,
            order_id=fill.order_id,
            symbol=fill.symbol,
            side=fill.side.value,
            qty=fill.qty,
            price=fill.price,
            strategy="?",
            known=False,
            external=True,
            principal=fill.qty,
        )
        self._check_loss()

    def on_reject(self, order_id: Checked) -> None:
        """The venue refused an order the Guard accepted: free its working quantity.

        Not a cancel: it does not count towards `max_cancel_to_fill_ratio`, so a venue
        rejecting a burst of orders cannot halt the node on a ratio it never chose.
        """
        self._end(order_id, "reject")

    def on_expire(self, order_id: Checked) -> None:
        """The order ended by its time in force (expired, done for day): free its working
        quantity. Like `on_reject`, not counted as a cancel."""
        self._end(order_id, "expire")

    def _end(self, order_id: Checked, kind: str) -> None:
        _id_arg(f"on_{kind}", "order_id", order_id)
        w = self._ledger.cancel(order_id, counted=False)
        self._recorder.record_event(
            kind,
            self._ctx,
            order_id=order_id,
            known=w is not None,
            remaining=0 if w is None else w.remaining,
        )

    def on_restate(self, order_id: Checked, remaining: Checked) -> None:
        """The venue changed what is left of a working order (ExecType restated, e.g. a
        venue-initiated reduction): the Guard's working quantity follows the venue.

        A restatement that leaves more working than the order's checked quantity less
        what filled (its pending replace's, if larger) grew the order past every check:
        it is applied as the venue's truth and halts the node with `fill_mismatch`."""
        _id_arg("on_restate", "order_id", order_id)
        if type(remaining) is not int or not 0 <= remaining <= MAX_QTY:
            raise ValueError(
                f"on_restate: remaining must be an integer from 0 to {MAX_QTY:.0e} "
                f"(got {quoted(remaining)})"
            )
        led = self._ledger
        w = led.working.get(order_id)
        grown = ""
        if w is not None:
            pending = led.pending.get(w.replacing) if w.replacing is not None else None
            checked = max(w.qty, pending.qty if pending is not None else 0)
            if w.filled + remaining > checked:
                grown = (
                    f"venue restated order {quoted(order_id)} to {remaining} working with "
                    f"{w.filled} filled, beyond the {checked} the Guard checked"
                )
            if pending is not None and remaining < w.remaining:
                # cut while a replace is pending: the replace, if the venue takes it, works
                # its full quantity again, so what was cut stays held, in the reservation,
                # until the venue answers (freed by a reject). Before, it was freed for other
                # orders and the ack worked it again unchecked, past the limits
                cust = min(w.cust, remaining)
                pending.reserved += w.remaining - remaining
                pending.cust += w.cust - cust
                w.remaining, w.cust = remaining, cust
            else:
                led.rework(w, remaining)
            if remaining == 0:
                del led.working[order_id]
                if w.parent is not None:
                    # as a child that was cancelled or filled: its late fill is its parent's
                    led.keep(order_id, w)
        self._recorder.record_event(
            "restate", self._ctx, order_id=order_id, known=w is not None, remaining=remaining
        )
        if grown:
            self._auto_halt(Scope.NODE, self.node, grown, R.FILL_MISMATCH)

    def on_bust(self, fill: Checked, *, parent_id: Checked = None) -> None:
        """The venue cancelled an execution (trade bust): the Guard takes it back.

        Position returns exactly, in the capacity the execution was booked in: the
        customer's part of it (within the order's registered parent) off the customer's
        account, the rest off the firm's. A child of a registered parent is remembered
        for a while after it ends (`ledger.BOOKED_WINDOW`) with its executions, so the
        one busted (same order, quantity and price) is taken back as it was booked;
        an order without a parent was the firm's. For an order no longer remembered,
        `parent_id` names its parent (without it, the bust is taken back as the firm's
        own). Where the Guard cannot tell the capacity (both were possible: a child
        straddling its parent's quantity, an order no longer remembered), the firm's
        part is taken back first and the node halts with `fill_mismatch` until a person
        reconciles: a wrong guess understates one capacity's exposure, whichever it
        is, so neither guess is safe. So does a bust the order cannot have (more than
        it filled, another side or symbol). Realized P&L moves by the reversal at the
        busted price against the average cost. The order's working quantity and its
        parent's commitment are not given back (a bust does not reopen the order at the
        venue; if it does, the venue restates the leaves).
        """
        if type(fill) is not Fill:
            raise ValueError(f"on_bust: expected a Fill (got {type(fill).__name__})")
        if parent_id is not None:
            _id_arg("on_bust", "parent_id", parent_id)
        if self._unappliable("bust", fill):
            return
        w = self._ledger.order(fill.order_id)
        mismatch = ""
        if w is not None and (
            fill.qty > w.filled or fill.side is not w.side or fill.symbol != w.symbol
        ):
            # a working order's fills are known: a bust of more than it filled, or of
            # another side or symbol, means the Guard's picture and the venue's disagree
            mismatch = (
                f"bust of {fill.qty} {fill.side.value} {fill.symbol} for order "
                f"{quoted(fill.order_id)}, which filled {w.filled} {w.side.value} {w.symbol}"
            )
        principal, _, guess = self._ledger.unfill(fill, self._parent_of(fill.order_id, parent_id))
        if guess:
            mismatch = (mismatch + "; " if mismatch else "") + (
                f"bust of {fill.qty} {fill.side.value} {fill.symbol} for order "
                f"{quoted(fill.order_id)} cannot be told the customer's or the firm's "
                f"({guess}): taken back as the firm's first"
            )
        self._recorder.record_event(
            "bust",
            self._ctx,
            order_id=fill.order_id,
            symbol=fill.symbol,
            side=fill.side.value,
            qty=fill.qty,
            price=fill.price,
            principal=principal,
            mismatch=mismatch or None,
        )
        if mismatch:
            # applied as the venue's truth, as a mismatched fill is; halted until reconciled
            self._auto_halt(Scope.NODE, self.node, mismatch, R.FILL_MISMATCH)
        self._check_loss()

    def _unappliable(self, kind: str, fill: object) -> bool:
        """A fill, bust or correction that is no `Fill` or was built around its validation
        (a NaN price, a negative quantity) is not applied, so no non-finite value enters
        the Guard's state: it is recorded and halts the node with `fill_mismatch`."""
        problem = fill_problem(fill)
        if problem is None:
            return False
        oid = getattr(fill, "order_id", None)
        why = (
            f"{kind} for order {quoted(oid)} cannot be applied: {problem[0]}: {problem[1]} "
            f"(got {quoted(problem[2])})"
        )
        self._recorder.record_event(
            kind,
            self._ctx,
            order_id=oid if type(oid) is str else quoted(oid),
            applied=False,
            mismatch=why,
        )
        self._auto_halt(Scope.NODE, self.node, why, R.FILL_MISMATCH)
        return True

    def _parent_of(self, order_id: str, parent_id: str | None) -> Parent | None:
        """The registered parent an execution of `order_id` was booked against: the order's
        own while the Guard knows it (working, or remembered), else `parent_id`'s."""
        led = self._ledger
        w = led.order(order_id)
        if w is not None:
            return w.parent
        return None if parent_id is None else led.parents.get(parent_id)

    def on_correct(self, old: Checked, new: Checked, *, parent_id: Checked = None) -> None:
        """The venue corrected an execution (trade correct): `old` out, `new` in, by
        capacity as in `on_bust` (`parent_id` as there).

        Only the position side changes; the order's working quantity follows the
        venue's restatement, if any, through `on_restate`. A correction that leaves a
        working order filled beyond its quantity is applied as the venue's truth and
        halts the node with `fill_mismatch`, as an overfilling fill does; so does one
        whose old execution's capacity cannot be told (as in `on_bust`). A `parent_id`
        that is no string raises ValueError, changing nothing.
        """
        if type(old) is not Fill or type(new) is not Fill:
            raise ValueError("on_correct: old and new must be Fill")
        if parent_id is not None:
            _id_arg("on_correct", "parent_id", parent_id)
        if self._unappliable("correct", old) or self._unappliable("correct", new):
            return
        if (old.order_id, old.symbol, old.side) != (new.order_id, new.symbol, new.side):
            raise ValueError(
                "on_correct: a correction keeps the order, symbol and side "
                f"(got {old.order_id}/{old.symbol}/{old.side} -> "
                f"{new.order_id}/{new.symbol}/{new.side})"
            )
        led = self._ledger
        parent = self._parent_of(new.order_id, parent_id)
        _, cust, guess = led.unfill(old, parent)
        # no more of it the customer's than was
        w = led.rebook(new, parent, min(cust, new.qty))
        if parent is not None and new.qty > old.qty:
            # the children executed more: committed (filled plus working) follows, or after
            # the venue restates the leaves down the parent check allows the increase again
            parent.committed += new.qty - old.qty
        mismatch = ""
        if guess:
            mismatch = (
                f"correction of order {quoted(new.order_id)} from {old.qty} cannot be told "
                f"the customer's or the firm's ({guess}): taken back as the firm's first"
            )
        if w is not None and new.order_id in led.working:
            w.filled += new.qty
            if w.filled > w.qty:
                mismatch += ("; " if mismatch else "") + (
                    f"correction of order {quoted(new.order_id)} to {new.qty} makes it filled "
                    f"{w.filled} of {w.qty} (an overfill)"
                )
        self._recorder.record_event(
            "correct",
            self._ctx,
            order_id=new.order_id,
            symbol=new.symbol,
            side=new.side.value,
            old_qty=old.qty,
            old_price=old.price,
            qty=new.qty,
            price=new.price,
            mismatch=mismatch or None,
        )
        if mismatch:  # applied as the venue's truth, as an overfilling fill is; halted
            self._auto_halt(Scope.NODE, self.node, mismatch, R.FILL_MISMATCH)
        self._check_loss()

    def on_price(self, symbol: Checked, price: Checked) -> None:
        """A new reference price: marks exposure and unrealized P&L, may trip the loss stop.

        A bad symbol or price (bool, NaN, inf, subnormal, out of range) raises
        ValueError naming it and changes nothing: the previous reference stays,
        and ages into `stale_reference_price` if the feed keeps sending garbage.
        """
        if type(symbol) is not str or not symbol or len(symbol) > MAX_SYMBOL_LEN:
            raise ValueError(
                f"on_price: symbol must be 1..{MAX_SYMBOL_LEN} characters (got {quoted(symbol)})"
            )
        problem = price_problem(price)
        if problem is not None:
            raise ValueError(f"on_price {symbol}: price {problem[1]} (got {quoted(price)})")
        book = self._ledger.price(symbol, float(price), self._clock.monotonic_ns())
        self._recorder.ready()  # a quiet order path still gets its records flushed on time
        if book.pos:
            self._check_loss()

    def _check_loss(self) -> None:
        ml = self.limits.max_loss
        if ml is None:
            return
        led = self._ledger
        pnl = led.realized + led.unrealized
        if not -pnl <= ml:  # NaN halts too: a P&L that cannot be computed is not within limits
            self._auto_halt(
                Scope.NODE,
                self.node,
                f"loss {-pnl:,.2f} > max_loss {ml:,.2f} (realized {led.realized:,.2f}, "
                f"unrealized {led.unrealized:,.2f})",
                R.LOSS_LIMIT,
            )

    # ------------------------------------------------------------------ replace

    def check_replace(self, orig_id: Checked, new: Checked) -> Decision:
        """Decide on replacing working order `orig_id` by `new` (a new id, total qty, price).

        Checked as a new risk: the order-size, notional, collar, reference-price,
        symbol-list and rate rules apply to `new` as to a new order, and position,
        exposure, parent and turnover count the increase of leaves (`new.qty` minus
        what was filled, minus what is working now). A decrease at the same price is
        always a smaller risk and only needs the trading state, id and rate checks.

        On accept the larger of the old and the new leaves stays reserved until the
        venue answers: `on_replace_ack(new.id)` commits the new order,
        `on_replace_reject(new.id)` rolls back to the original. HALTED and REDUCING
        refuse a replace that raises leaves or moves the price; one that does neither
        only lowers what is working and passes in any state, as a cancel does (the stop
        direction). Symbol, side, strategy and parent cannot change. Never raises.
        """
        if not self._recorder.ready():
            self._count_unrecorded(new)
            self._block(new, _AUDIT_DOWN)
            return _AUDIT_DOWN
        if self._unrecorded:
            self._record_outage()
        try:
            d, eff = self._evaluate_replace(orig_id, new)
        except Exception as exc:  # fail closed
            d, eff = _blocked(R.INVALID_ORDER, f"replace could not be checked: {exc!r}"), None
        nid = getattr(new, "id", "?") if type(new) is Order else "?"
        self._recorder.record_event(
            "replace",
            self._ctx,
            order_id=nid if type(nid) is str else quoted(nid),
            orig_id=orig_id if type(orig_id) is str else quoted(orig_id),
        )
        self._recorder.record_decision(
            new, d, self._ctx, eff.rules if eff is not None else ("validity",)
        )
        if d.accepted:
            self.accepted += 1
            pending = self._ledger.pending.get(nid) if type(nid) is str else None
            # nothing reserved (no more leaves) and the price kept: it only lowers
            if (
                pending is not None
                and not pending.reserved
                and pending.price == pending.working.price
            ):
                self.lowered += 1
        else:
            self._block(new, d)
        return d

    def _evaluate_replace(self, orig_id: str, o: Order) -> tuple[Decision, Effective | None]:
        """`_evaluate` for a replace, in the same rule order (see `check_replace`).

        A replace that only lowers what is working (no more leaves, the same price) is the
        stop direction, as a cancel is: no trading state, lease, arming, rate, cancel
        ratio or id capacity refuses it (before, a disarmed Guard, an expired lease or a
        rate limit refused cutting an order during a kill). Only what keeps the books
        exact applies: a valid order, a working original with no replace pending, the same
        symbol, side, strategy and parent, and a new id not used within the scope."""
        now = self._clock.monotonic_ns()
        out = not self._armed or (self._lease_ns is not None and now >= self._lease_deadline)
        if out and not self._only_lowers(orig_id, o):
            return (_NOT_ARMED if not self._armed else self._lease_why), None
        if type(o) is not Order:
            return _blocked(R.INVALID_ORDER, f"not an Order: {type(o).__name__}"), None
        problem = order_problem(o.id, o.strategy, o.symbol, o.side, o.qty, o.price)
        if problem is not None:
            return _blocked(
                R.INVALID_ORDER, f"{problem[0]}: {problem[1]} (got {problem[2]!r})"
            ), None
        led = self._ledger
        w = led.working.get(orig_id)
        if w is None:
            return _blocked(R.INVALID_ORDER, f"order {orig_id!r} is not working; no replace"), None
        if w.replacing is not None:
            return _blocked(
                R.INVALID_ORDER, f"a replace of {orig_id!r} ({w.replacing!r}) is already pending"
            ), None
        if (o.symbol, o.side, o.strategy, o.parent_id) != (
            w.symbol,
            w.side,
            w.strategy,
            w.parent_id,
        ):
            return _blocked(
                R.INVALID_ORDER,
                f"a replace keeps symbol, side, strategy and parent of {orig_id!r}",
            ), None
        lane = self._lanes.get((o.strategy, o.symbol))
        if lane is None:  # an adopted order's first replace: its symbol's book is kept
            self._lane(o.strategy, o.symbol)
            lane = self._keep(o.strategy, o.symbol, None, None)
        eff, book = lane.eff, lane.book
        qty, price = o.qty, o.price
        grow = max(max(qty - w.filled, 0) - w.remaining, 0)
        moves = price != w.price
        lowers = grow == 0 and not moves
        halt = self._halts.worst(lane.scopes) if self._halts.states else None
        # a replace that neither raises leaves nor moves the price only lowers what is
        # working: the stop direction, as a cancel is, so no trading state refuses it
        if halt is not None and (grow > 0 or moves):
            return halt.decision, eff
        if o.id in self._ids and self._ids.recent(o.id, now):
            return _blocked(R.DUPLICATE_ORDER_ID, f"order id {o.id!r} was already used"), eff
        value = px = vref = 0.0
        if grow > 0 or moves:
            symbol = o.symbol
            if eff.allowed_symbols is not None and symbol not in eff.allowed_symbols:
                return _blocked(
                    R.SYMBOL_NOT_ALLOWED, f"symbol {symbol} not in allowed_symbols"
                ), eff
            if symbol in eff.restricted_symbols:
                return _blocked(
                    R.SYMBOL_RESTRICTED, f"symbol {symbol} is on the restricted list"
                ), eff
            if eff.max_order_qty is not None and qty > eff.max_order_qty:
                return _blocked(
                    R.MAX_ORDER_QTY,
                    f"qty {qty} > max_order_qty {eff.max_order_qty} for strategy {o.strategy}",
                ), eff
            ref = book.ref
            if ref is None or (
                eff.max_price_age_ns is not None and now - book.ref_ns > eff.max_price_age_ns
            ):
                code = R.NO_REFERENCE_PRICE if ref is None else R.STALE_REFERENCE_PRICE
                if eff.require_reference_price or price is None:
                    return _blocked(code, f"reference price for {symbol}: {code.value}"), eff
                ref = price
            px = ref if price is None else price
            vref = ref
            notional = qty * px * book.lot
            if eff.max_order_notional is not None and notional > eff.max_order_notional:
                return _blocked(
                    R.MAX_ORDER_NOTIONAL,
                    f"notional {notional:,.2f} > max_order_notional {eff.max_order_notional:,.2f}",
                ), eff
            if price is not None:
                dev = abs(price - ref)
                pct = eff.price_collar_pct
                if pct is not None and dev > pct * ref * (1 + 1e-9):
                    return _blocked(
                        R.PRICE_COLLAR,
                        f"price {price:.15g} is {dev / ref:.2%} from reference {ref:.15g} "
                        f"> collar {pct:.2%}",
                    ), eff
                ticks = eff.price_collar_ticks
                if ticks is not None and dev > ticks * eff.tick_size * (1 + 1e-9):
                    return _blocked(
                        R.PRICE_COLLAR,
                        f"price {price:.15g} is {dev / eff.tick_size:.1f} ticks from reference "
                        f"{ref:.15g} > collar {ticks} ticks",
                    ), eff
            value = grow * px * book.lot
        parent = w.parent
        if grow > 0 and parent is not None and parent.committed + grow > parent.cap:
            return _blocked(
                R.PARENT_QTY_EXCEEDED,
                f"children would total {parent.committed + grow} > {parent.cap} "
                f"allowed for parent {o.parent_id} of qty {parent.qty}",
            ), eff
        if not lowers:  # the stop direction is never refused for the messages sent
            for win in lane.windows:
                span = win.over(now)
                if span:
                    return _blocked(win.reason, win.detail(span)), eff
            mr = eff.max_cancel_to_fill_ratio
            if (
                mr is not None
                and led.cancels >= eff.cancel_ratio_min_cancels
                and led.cancels > mr * max(led.fills, 1)
            ):
                return self._cancel_ratio_halt(mr), eff  # an amend storm is a cancel storm
        # the increase by capacity, as for a new child: within the parent's uncommitted
        # quantity it is the customer's, the rest (all of it without a parent) the firm's
        cust = 0
        own = 0.0
        if grow > 0:
            is_buy = o.side is _BUY
            cust = customer_part(parent, grow)
            prin = grow - cust
            bm = book.mark  # valued as `_evaluate` values a new order (step 10)
            mark = (vref if bm is None or vref > bm else bm) * book.lot
            if prin:
                blocked = self._principal_block(eff, book, o.symbol, is_buy, prin, mark)
                if blocked is not None:
                    return blocked, eff
            if cust:
                assert parent is not None
                blocked = self._customer_block(eff, parent, book, o.symbol, is_buy, cust, mark)
                if blocked is not None:
                    return blocked, eff
            mt = eff.max_turnover_per_min
            own = value * prin / grow  # the firm's share, as for a new order
            if mt is not None and own:
                tq = self._turnover
                cutoff = now - MINUTE_NS
                while tq and tq[0][0] <= cutoff:
                    self._turnover_sum -= tq.popleft()[1]
                if self._turnover_sum + own > mt:
                    return _blocked(
                        R.MAX_TURNOVER,
                        f"principal turnover in the last minute would be "
                        f"{self._turnover_sum + own:,.0f} > max_turnover_per_min {mt:,.0f}",
                    ), eff
        cap = eff.max_tracked_order_ids
        if not lowers and self._ids.count >= cap and self._ids.full(cap, now):
            # (one that only lowers is tracked over the capacity: its id stays caught)
            return _blocked(
                R.ORDER_ID_CAPACITY,
                f"cannot track more than {cap} order ids within the duplicate scope",
            ), eff
        # accepted: the new id is used, the message counted, the increase reserved
        self._ids.add(o.id, now)
        for win in lane.windows:
            win.events.append(now)
        if own and eff.max_turnover_per_min is not None:
            self._turnover.append((now, own))
            self._turnover_sum += own
        if book.mark is None and book.ref is not None:
            book.mark = book.ref
        held = led.hold(w, grow) if grow else 0
        led.pending[o.id] = Pending(orig_id, w, qty, price, grow, held)
        w.replacing = o.id
        return Decision(True, R.OK, f"replaces {orig_id}: all checks passed"), eff

    def _only_lowers(self, orig_id: object, o: object) -> bool:
        """Would replacing `orig_id` by `o` only lower what is working (a valid order for the
        same working order, no more leaves, the same price)? The rest of the replace's
        checks still run after it (`_evaluate_replace`)."""
        if type(o) is not Order or type(orig_id) is not str:
            return False
        w = self._ledger.working.get(orig_id)
        if w is None or order_problem(o.id, o.strategy, o.symbol, o.side, o.qty, o.price):
            return False
        return o.price == w.price and max(o.qty - w.filled, 0) <= w.remaining

    def _cancel_ratio_halt(self, ratio: float) -> Decision:
        """Halt the node: more cancels (a replace the venue took counts as one) than
        `ratio` per fill, as a new order or a replace found it."""
        led = self._ledger
        why = f"{led.cancels} cancels to {led.fills} fills > max_cancel_to_fill_ratio {ratio:g}"
        led.cancels = led.fills = 0  # the halt now carries the breach; resume starts afresh
        return self._auto_halt(Scope.NODE, self.node, why, R.CANCEL_FILL_RATIO)

    def _principal_block(
        self, eff: Effective, book: SymbolBook, symbol: str, is_buy: bool, prin: int, mark: float
    ) -> Decision | None:
        """The firm's position and exposure limits for `prin` more working (step 10 of
        `_evaluate`, for a replace's increase); None if within them."""
        led = self._ledger
        long_q, short_q = book.worst(is_buy, prin)
        mp = eff.max_position_qty
        if mp is not None and (long_q > mp if is_buy else -short_q > mp):  # the side it moves
            worst = long_q if is_buy else short_q
            return _blocked(
                R.MAX_POSITION,
                f"{symbol} principal position with working orders would reach {worst} "
                f"> max_position_qty {mp}",
            )
        if eff.max_gross_exposure is not None:
            new_gross = max(abs(long_q), abs(short_q)) * mark
            gross = led.gross - book.gross_c + new_gross
            if gross > eff.max_gross_exposure and new_gross > book.gross_at(mark):
                return _blocked(
                    R.MAX_GROSS_EXPOSURE,
                    f"principal gross exposure with working orders {gross:,.0f} "
                    f"> max_gross_exposure {eff.max_gross_exposure:,.0f}",
                )
        if eff.max_net_exposure is not None:
            if is_buy:
                net = led.net_long - book.long_c + long_q * mark
            else:
                net = -(led.net_short - book.short_c + short_q * mark)
            if net > eff.max_net_exposure:
                return _blocked(
                    R.MAX_NET_EXPOSURE,
                    f"principal net {'long' if is_buy else 'short'} exposure with working "
                    f"orders {net:,.0f} > max_net_exposure {eff.max_net_exposure:,.0f}",
                )
        return None

    def _customer_block(
        self,
        eff: Effective,
        parent: Parent,
        book: SymbolBook,
        symbol: str,
        is_buy: bool,
        cust: int,
        mark: float,
    ) -> Decision | None:
        """The parent's customer account limits for `cust` more working (step 10 of
        `_evaluate`, for a replace's increase); None if within them."""
        line = parent.line
        if line is None or line.book is not book:
            line = self._ledger.line(parent, symbol)
        acct = line.account
        if is_buy:
            c_long, c_short = line.pos + line.wbuy + cust, line.pos - line.wsell
        else:
            c_long, c_short = line.pos + line.wbuy, line.pos - line.wsell - cust
        cg = eff.max_customer_gross_exposure
        if cg is not None:
            c_gross = max(abs(c_long), abs(c_short)) * mark
            g = acct.gross - line.gross_c + c_gross
            if g > cg and c_gross > line.gross_at(mark):
                return _blocked(
                    R.CUSTOMER_GROSS_EXPOSURE,
                    f"customer {acct.name} gross exposure with working orders {g:,.0f} "
                    f"> max_customer_gross_exposure {cg:,.0f}",
                )
        cn = eff.max_customer_net_exposure
        if cn is not None:
            if is_buy:
                n = acct.net_long - line.long_c + c_long * mark
            else:
                n = -(acct.net_short - line.short_c + c_short * mark)
            if n > cn:
                return _blocked(
                    R.CUSTOMER_NET_EXPOSURE,
                    f"customer {acct.name} net {'long' if is_buy else 'short'} exposure "
                    f"with working orders {n:,.0f} > max_customer_net_exposure {cn:,.0f}",
                )
        return None

    def on_replace_ack(self, new_id: Checked, remaining: Checked = None) -> None:
        """The venue replaced the order (ExecType replaced): commit the reservation.

        The working order moves to `new_id` with `remaining` (the venue's LeavesQty)
        or, if not given, the new quantity less what was filled. Leaves beyond the new
        quantity less what filled are applied as the venue's truth and halt the node
        with `fill_mismatch`, as such a restatement does.
        """
        _id_arg("on_replace_ack", "new_id", new_id)
        if remaining is not None and (type(remaining) is not int or not 0 <= remaining <= MAX_QTY):
            raise ValueError(
                f"on_replace_ack: remaining must be an integer from 0 to {MAX_QTY:.0e} "
                f"(got {quoted(remaining)})"
            )
        led = self._ledger
        p = led.pending.pop(new_id, None)
        if p is None:
            self._recorder.record_event("replace_ack", self._ctx, order_id=new_id, known=False)
            return
        w = p.working
        w.replacing = None
        led.cancels += 1  # the original is cancelled: a replace counts in the cancel-to-fill ratio
        led.cancelled += 1
        if led.working.pop(p.orig_id, None) is not w:
            w.remaining = w.cust = 0  # it ended meanwhile: what it held is released already
        if w.filled or w.parent is not None:
            # a bust or late fill reported under the original's id is this order's: before, a
            # firm's order's bust of a fill from before the replace left its fill count high,
            # so a later replace reserved less than the venue then had working
            led.keep(p.orig_id, w)
        checked = max(p.qty - w.filled, 0)
        target = checked if remaining is None else remaining
        grown = ""
        if target > checked:
            # as in `on_restate`: more working than the replace's checked quantity less what
            # filled grew the order past every check
            grown = (
                f"venue replaced order {quoted(p.orig_id)} by {quoted(new_id)} with {target} "
                f"working and {w.filled} filled, beyond the {p.qty} the Guard checked"
            )
        # what was held (the original's leaves and the reservation) is released, and the
        # new leaves held again: the customer's as far as the original's customer part and
        # the reservation's hold them (as they were checked), any more split afresh
        kept = w.cust + p.cust
        led.release(w, p.cust, p.reserved - p.cust)
        w.qty, w.price = p.qty, p.price
        led.rework(w, target, kept)
        if target > 0:
            led.working[new_id] = w
        elif w.filled or w.parent is not None:
            # it ended here (nothing left to work): a late fill or bust under the new id is
            # this order's, as one under the original's is (before, a child's late fill
            # under it was nobody's, not committed in its parent)
            led.keep(new_id, w)
        self._recorder.record_event(
            "replace_ack",
            self._ctx,
            order_id=new_id,
            orig_id=p.orig_id,
            known=True,
            remaining=target,
            mismatch=grown or None,
        )
        if grown:  # applied as the venue's truth, as a restatement is; halted until reconciled
            self._auto_halt(Scope.NODE, self.node, grown, R.FILL_MISMATCH)

    def on_replace_reject(self, new_id: Checked) -> None:
        """The venue refused the replace (OrderCancelReject): roll back to the original."""
        _id_arg("on_replace_reject", "new_id", new_id)
        led = self._ledger
        p = led.pending.pop(new_id, None)
        if p is not None:
            p.working.replacing = None
            if p.reserved:
                led.release(p.working, p.cust, p.reserved - p.cust)
        self._recorder.record_event(
            "replace_reject",
            self._ctx,
            order_id=new_id,
            orig_id=None if p is None else p.orig_id,
            known=p is not None,
        )

    # ------------------------------------------------------------------ embedding

    def remaining(self, order_id: str) -> int | None:
        """What is still working of an order, or None if the Guard holds no such order."""
        w = self._ledger.working.get(order_id)
        return None if w is None else w.remaining

    def filled(self, order_id: str) -> int | None:
        """What has filled of a working order, across the replaces that carried it on, or
        None if the Guard holds no such order: a replace's total quantity counts it."""
        w = self._ledger.working.get(order_id)
        return None if w is None else w.filled

    def flag_mismatch(self, detail: str) -> None:
        """The caller found the Guard's picture wrong (e.g. a venue's LeavesQty disagrees,
        a fill for an order nobody sent): halt the node with `fill_mismatch`."""
        self._auto_halt(Scope.NODE, self.node, detail, R.FILL_MISMATCH)

    def note(self, kind: str, **fields: str | int | float | bool | None) -> None:
        """Write an event to the flight recorder under this Guard's context (provenance of
        an order, a session event): it lands in the same hash chain as the decisions."""
        self._recorder.record_event(kind, self._ctx, **fields)

    def refuse(self, order: object, decision: Decision) -> None:
        """Record and count a refusal decided outside the checks (an order a gateway could
        not even map to an `Order`); `order` needs the attributes of one."""
        if decision.accepted:
            raise ValueError("refuse: the decision must be a refusal")
        self._recorder.record_decision(order, decision, self._ctx, ("validity",))
        self._block(order, decision)

    def adopt(self, order: Checked, remaining: Checked = None) -> None:
        """Take over an order found working at start-up (reconciliation): it counts as
        working, its id as used. No check is made: it is already at the venue."""
        if type(order) is not Order:
            raise ValueError(f"adopt: expected an Order (got {type(order).__name__})")
        rem = order.qty if remaining is None else remaining
        if type(rem) is not int or not 0 <= rem <= order.qty:
            raise ValueError(f"adopt: remaining must be an integer in 0..qty (got {rem!r})")
        led = self._ledger
        if order.id in led.working or order.id in led.pending:
            # a second Working under the id would orphan the first: its quantity counted as
            # working for good, with no cancel able to free it
            raise ValueError(f"adopt: order {quoted(order.id)} is already working here")
        self._ids.add(order.id, self._clock.monotonic_ns())
        led.book(order.symbol)
        if rem:
            # by capacity, as if it had been accepted here: what it filled already is its
            # registered parent's (if any), its leaves the customer's within the parent
            parent = None if order.parent_id is None else led.parents.get(order.parent_id)
            w = Working(
                order.strategy,
                order.symbol,
                order.side,
                order.qty,
                order.price,
                order.parent_id,
                parent,
                0,
                None,
            )
            w.filled = order.qty - rem
            if parent is not None:
                parent.children += 1
                parent.committed += w.filled
                parent.filled += w.filled
            w.remaining = rem
            w.cust = led.hold(w, rem)
            led.working[order.id] = w
        self._recorder.record_event(
            "adopt",
            self._ctx,
            order_id=order.id,
            strategy=order.strategy,
            symbol=order.symbol,
            side=order.side.value,
            qty=order.qty,
            remaining=rem,
        )

    def restore_position(self, symbol: Checked, qty: Checked, avg_price: Checked) -> None:
        """Set a symbol's position at start-up (from a positions file or the venue).

        An `avg_price` of 0 for a position is a cost not known (a positions file's short
        form `SYMBOL = qty`): the position then costs the price it is marked at, now or,
        before any, its first price or fill, so the P&L it carries starts at 0. Before, it
        started as a gain of the whole position's value, which loosened `max_loss` by as
        much (a short's as a loss of it, halting the node at its first price).
        """
        if type(symbol) is not str or not symbol or len(symbol) > MAX_SYMBOL_LEN:
            # before, any value became a book no order can name (None, "", a list's repr)
            raise ValueError(
                f"restore_position: symbol must be 1..{MAX_SYMBOL_LEN} characters "
                f"(got {quoted(symbol)})"
            )
        if type(qty) is not int or abs(qty) > MAX_QTY:
            raise ValueError(
                f"restore_position: qty must be an integer from -{MAX_QTY:.0e} to {MAX_QTY:.0e} "
                f"(got {quoted(qty)})"
            )
        if not (type(avg_price) in (int, float) and 0 <= avg_price <= MAX_PRICE):
            # above MAX_PRICE the position's value is inf, and the P&L NaN for good
            raise ValueError(
                f"restore_position: avg_price must be from 0 to {MAX_PRICE:g} "
                f"(got {quoted(avg_price)})"
            )
        led = self._ledger
        book = led.book(symbol)
        avg = float(avg_price)
        if qty and not avg and book.mark is not None:
            avg = book.mark  # no cost given: what it is marked at (else its first price)
        book.pos, book.avg = qty, avg
        if book.mark is None and avg_price:
            book.mark = float(avg_price)
        led.refresh(book)
        self._recorder.record_event(
            "position", self._ctx, symbol=symbol, qty=qty, avg_price=float(avg_price)
        )

    def lots(self, symbol: str, qty: Checked) -> int:
        """A quantity in the instrument's unit (FIX Qty "0.25") as whole lots of `symbol`.

        Exact decimal arithmetic; a quantity that is not a positive whole number of
        lots raises `InvalidOrder` naming the lot size (a venue would refuse it too), as
        does one that is no plain ASCII decimal (a bool, "1_000", " 5", Unicode digits).
        More than MAX_QTY lots is the caller's to refuse (`Order` does).
        """
        lot = self._lot_sizes.get(symbol)
        if lot is None:
            lot = self._lot_size(symbol)
        if (
            lot == 1
            and type(qty) is str
            and len(qty) <= _FAST_DIGITS
            and qty.isascii()
            and qty.isdigit()
            and qty[0] != "0"
        ):
            return int(qty)  # the common case, a whole number of shares: no decimal arithmetic
        # ASCII only, as a venue reads it: Decimal would take "1_000", " 5" or Unicode digits
        # ("١٢"), and a bool is no quantity
        if type(qty) is str and (not qty.isascii() or "_" in qty or qty != qty.strip()):
            raise InvalidOrder("qty", "must be a decimal number", qty)
        try:
            if type(qty) is bool:
                raise TypeError
            q = qty if isinstance(qty, Decimal) else Decimal(qty)
        except (InvalidOperation, TypeError, ValueError):
            raise InvalidOrder("qty", "must be a decimal number", qty) from None
        if q.is_finite() and q > lot * _HUGE_LOTS:  # exact: no rounding, no huge int built
            raise InvalidOrder("qty", f"must be at most {MAX_QTY:.0e} lots of {lot}", qty)
        try:
            with localcontext(_EXACT):  # a quotient rounded to an integer is not a multiple
                n = q / lot if q.is_finite() else q
        except DecimalException:
            raise InvalidOrder(
                "qty", f"must be a positive multiple of lot_size {lot}", qty
            ) from None
        if not n.is_finite() or n <= 0 or n != n.to_integral_value():
            raise InvalidOrder("qty", f"must be a positive multiple of lot_size {lot}", qty)
        return int(n)

    def quantity(self, symbol: str, lots: int) -> Decimal:
        """Whole lots of `symbol` back in the instrument's unit (the inverse of `lots`)."""
        lot = self._lot_sizes.get(symbol)
        if lot is None:
            lot = self._lot_size(symbol)
        with localcontext(_WIDE):  # exact: 28 digits rounded 999999999999999 lots of 0.3...04
            q = lots * lot
            return q.quantize(Decimal(1)) if q == q.to_integral_value() else q.normalize()

    def _lot_size(self, symbol: str) -> Decimal:
        """A symbol's lot size as a Decimal, cached only for a symbol the limits give one
        (any other has the default: made-up symbols in orders grow no cache)."""
        if symbol in self.limits.symbol or symbol.casefold() in self._symbols_folded:
            lot = self._lot_sizes[symbol] = Decimal(repr(self.limits.lot(symbol)))
            return lot
        return _ONE_LOT

    def parent_qty(self, parent_id: str) -> int | None:
        """The registered quantity of a parent, or None if it is not registered."""
        p = self._ledger.parents.get(parent_id)
        return None if p is None else p.qty

    def counters(self) -> tuple[int, dict[RejectReason, int]]:
        """(accepted, blocked by reason) as a consistent copy, for metrics."""
        return self.accepted, dict(self.blocked)

    def flush_records(self) -> bool:
        """Write what the flight recorder holds; the one way other threads should flush it."""
        return self._recorder.flush()

    # ------------------------------------------------------------------ control

    def arm(self, actor: Checked = "operator") -> None:
        """Allow orders through (after the other checks). Refused, changing nothing, while
        the flight recorder cannot record (`RecorderUnavailable`)."""
        _text_arg("arm", "actor", actor)
        if not self._recorder.ready():
            raise RecorderUnavailable("arm: the flight recorder cannot record; not armed")
        self._recorder.record_event("arm", self._ctx, actor=actor)
        self._armed = True

    def disarm(self, actor: Checked = "operator") -> None:
        _text_arg("disarm", "actor", actor)
        self._armed = False
        self._recorder.record_event("disarm", self._ctx, actor=actor)

    @property
    def armed(self) -> bool:
        return self._armed

    def set_limits(self, limits: Limits, actor: str = "operator") -> None:
        """Replace the limits in one step (a resume ramp's stage, a reviewed change).

        The lease timeout cannot change here (the node's lease policy owns it).
        Rate windows keep the orders they already counted, so a tighter limit
        applies to the last second at once, and so does the execution throttle;
        the duplicate-id scope keeps every id remembered and holds the new window
        from now on. Every lane is rebuilt under the new limits before this
        returns, every registered parent's cap follows `max_parent_qty_multiple`,
        and a loss already beyond `max_loss` halts the node. The change is recorded
        with both versions and who made it.
        """
        if not isinstance(limits, Limits):
            raise TypeError(f"set_limits: limits must be Limits (got {type(limits).__name__})")
        if limits.lease_timeout_s != self.limits.lease_timeout_s:
            raise ValueError(
                f"set_limits: lease_timeout_s must stay {self.limits.lease_timeout_s!r} "
                f"(got {limits.lease_timeout_s!r})"
            )
        for symbol in sorted(set(limits.symbol) | set(self.limits.symbol)):
            if limits.lot(symbol) != self.limits.lot(symbol):
                raise ValueError(
                    f"set_limits: symbol.{symbol}.lot_size must stay {self.limits.lot(symbol)!r} "
                    "(quantities held are counted in it)"
                )
        old = self.limits.version
        window = limits.duplicate_id_window_s
        if window != self.limits.duplicate_id_window_s:
            # every id remembered stays; the new scope holds from now on
            self._ids.retune(None if window is None else to_ns(window), self._monotonic_ns())

        def carry(old_w: tuple[Window, ...], new_w: tuple[Window, ...]) -> tuple[Window, ...]:
            for w in new_w:  # one window per scope key: the newest events the new one holds
                for o in old_w:
                    w.events.extend(o.events)
            return new_w

        self._node_windows = carry(
            self._node_windows,
            windows(
                limits.max_orders_per_s_node,
                limits.max_orders_per_min_node,
                R.RATE_NODE,
                "node",
                self.node,
            ),
        )
        self._unknown_cancel_windows = carry(
            self._unknown_cancel_windows, _unknown_cancel_windows(limits, self.node)
        )
        old_strategy, old_symbol = self._strategy_windows, self._symbol_windows
        pairs = list(self._lanes)
        self.limits = limits
        self._symbols_folded = frozenset(n.casefold() for n in limits.symbol)
        self._ledger.lot = limits.lot
        self._strategy_windows = {}
        self._symbol_windows = {}
        self._lanes = {}
        self._provisional = {}
        for strategy, symbol in pairs:
            self._lane(strategy, symbol)
            self._keep(strategy, symbol, None, None)
        for strategy, ws in self._strategy_windows.items():
            carry(old_strategy.get(strategy, ()), ws)
        for symbol, ws in self._symbol_windows.items():
            carry(old_symbol.get(symbol, ()), ws)
        # a registered parent's cap is the multiple in force, not the one it was registered
        # under (before, a tightened multiple let the children of every parent already
        # registered run to the old one)
        multiple = limits.max_parent_qty_multiple
        for p in self._ledger.parents.values():
            p.cap = sys.maxsize if multiple is None else int(p.qty * multiple)
        self._ctx = AuditContext(
            node=self._ctx.node,
            release_id=self._ctx.release_id,
            flag_snapshot_id=self._ctx.flag_snapshot_id,
            limits_version=limits.version,
        )
        self._recorder.record_event(
            "limits_set", self._ctx, previous=old, version=limits.version, actor=actor
        )
        # a loss already beyond a tightened max_loss stops the node now, not at the next
        # fill or price (orders went out under the new limits until one came)
        self._check_loss()

    def renew_lease(self) -> None:
        """Extend the right to trade; also the idle tick that flushes recorded decisions
        (and finishes sealing a flood's batch once the Guard is idle: `FlightRecorder.tick`)."""
        self._recorder.tick()
        now = self._clock.monotonic_ns()
        if self._lease_ns is not None:
            self._lease_deadline = now + self._lease_ns
            self._lease_why = _LEASE_LAPSED
        self._trim_windows(now)

    def _trim_windows(self, now: int) -> None:
        """Forget the timestamps of strategies and symbols idle for a minute, a few per tick.

        A rate window keeps up to max(per_s, per_min) timestamps, 36 B each, for as long
        as the Guard runs, though none older than a minute can decide an order again
        (`Window.over` reads the last second and the last minute): with the default 1,000
        per symbol, 35 KiB per symbol, 170 MB for a desk that had traded 5,000 symbols,
        idle or not (`python bench/guard_bench.py --idle-symbols 200`). Each lease
        renewal (a node's heartbeat) looks at `TRIM_PER_TICK` windows and empties those
        whose newest timestamp is a minute old; no decision changes.
        """
        todo = self._trim_todo
        if not todo:
            todo.extend(self._strategy_windows.values())
            todo.extend(self._symbol_windows.values())
        for _ in range(min(TRIM_PER_TICK, len(todo))):
            for w in todo.pop():
                ev = w.events
                if ev and now - ev[-1] >= MINUTE_NS:
                    ev.clear()

    def expire_lease(self, reason: Checked, actor: Checked = "control") -> None:
        """End the right to trade now, not at the deadline: the control plane is gone.

        Orders are then blocked (and recorded) by the Guard itself with
        `lease_expired`, so an embedding runtime never needs a refusal path of its own.
        """
        if self._lease_ns is None:
            raise ValueError("expire_lease: this Guard has no lease (limits.lease_timeout_s)")
        _text_arg("expire_lease", "reason", reason)
        _text_arg("expire_lease", "actor", actor)
        self._lease_deadline = self._clock.monotonic_ns()
        self._lease_why = Decision(False, R.LEASE_EXPIRED, f"lease revoked: {reason}")
        self._recorder.record_event("lease_expired", self._ctx, reason=reason, actor=actor)

    def halt(
        self,
        scope: Checked,
        key: Checked,
        reason: Checked,
        actor: Checked,
        *,
        state: Checked = TradingState.HALTED,
        code: Checked = RejectReason.HALTED,
    ) -> None:
        """Latch a scope HALTED (or REDUCING). Sticky: only `resume` clears it.

        Every argument is checked before anything changes; a bad one raises
        `ValueError` naming it. The latch is set before the record is written:
        if recording fails the exception propagates, and the halt still blocks.
        """
        self.latch(scope, key, reason, actor, state=state, code=code)()

    def latch(
        self,
        scope: Checked,
        key: Checked,
        reason: Checked,
        actor: Checked,
        *,
        state: Checked = TradingState.HALTED,
        code: Checked = RejectReason.HALTED,
    ) -> Callable[[], None]:
        """`halt` in two steps: latch now, and return the call that records and logs it.

        For a node runtime that confirms a kill before it does anything else:
        the halt blocks orders from the moment `latch` returns; the runtime
        confirms, then calls what `latch` returned to write the flight record and
        the log line. Arguments are checked as in `halt`.
        """
        sc = _scope_arg("halt", scope)
        slot = (sc, _key_arg("halt", sc, key))
        _text_arg("halt", "reason", reason)
        _text_arg("halt", "actor", actor)
        if type(state) is not TradingState or state is _ACTIVE:
            raise ValueError(
                f"halt: state must be TradingState.HALTED or REDUCING (got {state!r}); "
                "use resume() for ACTIVE"
            )
        if type(code) is not RejectReason:
            raise ValueError(f"halt: code must be a RejectReason (got {code!r})")
        latched = self._clock.time_ns()
        self._halts.latch(slot, Halt(state, code, reason, actor, latched))

        def report() -> None:
            self._recorder.record_event(
                "halt",
                self._ctx,
                scope=sc.value,
                key=slot[1],
                state=state.name,
                code=code.value,
                reason=reason,
                actor=actor,
                latched_ns=latched,  # it blocked from then on, whenever this is written
            )
            log.warning(
                "HALT node=%s scope=%s key=%s state=%s code=%s actor=%s reason=%r",
                self.node,
                sc.value,
                _plain(slot[1]),
                state.name,
                code.value,
                _plain(actor),
                reason,
            )

        return report

    def resume(
        self,
        scope: Checked,
        key: Checked,
        reason: Checked,
        actor: Checked,
        *,
        code: Checked = None,
    ) -> bool:
        """Clear a latched scope; returns False if nothing was cleared. Recorded either way.

        Halts are kept per source (`code`): an operator's kill and the Guard's own loss
        stop on the same node are two latches. `code=None` (a person resuming the
        scope) clears them all; a code clears only that source, so resuming a
        control-plane kill never lifts a loss stop as a side effect.

        Every argument is checked first, and the resume is recorded before the latch
        is lifted: if the flight recorder cannot record (a full disk), it raises
        `RecorderUnavailable` and the scope stays halted.
        """
        sc = _scope_arg("resume", scope)
        slot = (sc, _key_arg("resume", sc, key))
        _text_arg("resume", "reason", reason)
        _text_arg("resume", "actor", actor)
        if code is not None and type(code) is not RejectReason:
            raise ValueError(f"resume: code must be a RejectReason or None (got {code!r})")
        if not self._recorder.ready():
            raise RecorderUnavailable(
                f"resume {sc.value} {slot[1]!r}: the flight recorder cannot record; "
                "the scope stays halted until it can"
            )
        cleared = self._halts.clears(slot, code)
        self._recorder.record_event(
            "resume",
            self._ctx,
            scope=sc.value,
            key=slot[1],
            reason=reason,
            actor=actor,
            cleared=cleared,
            code=None if code is None else code.value,
        )
        self._halts.clear(slot, code)
        return cleared

    def listen_for_halts(self, on_halt: Callable[[Scope, str, Halt], None]) -> None:
        """Attach the one listener told of every automatic halt (a node runtime stores them).

        One listener only, so an automatic halt can never be half-published by a
        second, forgotten hook; attaching twice is a wiring error.
        """
        if self._on_halt is not None:
            raise ValueError("listen_for_halts: this Guard already has a halt listener")
        self._on_halt = on_halt

    def _auto_halt(self, scope: Scope, key: str, reason: str, code: RejectReason) -> Decision:
        """A halt the Guard decides itself: latched once per source, told to the listener."""
        existing = self._halts.source((scope, key), code)
        if existing is None:
            self.halt(scope, key, reason, actor=f"guard:{code.value}", code=code)
            existing = self._halts.source((scope, key), code)
            assert existing is not None
            if self._on_halt is not None:
                self._on_halt(scope, key, existing)
        return existing.decision

    def _count_unrecorded(self, order: object) -> None:
        """While the recorder is down, count blocks instead of queueing millions of records."""
        oid = str(getattr(order, "id", "?"))
        self._unrecorded_ids = (self._unrecorded_ids[0] or oid, oid)
        self._unrecorded += 1

    def _record_outage(self) -> None:
        first, last = self._unrecorded_ids
        self._recorder.record_event(
            "audit_outage", self._ctx, blocked=self._unrecorded, first_order=first, last_order=last
        )
        self._unrecorded = 0
        self._unrecorded_ids = ("", "")

    def trading_state(self, scope: Checked, key: Checked = FLEET_KEY) -> TradingState:
        sc = _scope_arg("trading_state", scope)
        h = self._halts.states.get((sc, scope_key(sc, key)))
        return _ACTIVE if h is None else h.state

    def halts(self) -> dict[tuple[Scope, str], Halt]:
        return dict(self._halts.states)

    def latched(self, code: RejectReason) -> dict[tuple[Scope, str], Halt]:
        """Each scope one source holds (`code`: `halted` for an operator's kill), whatever
        other sources hold it too. `halts()` names the worst latch of each scope only, and
        of two alike (an operator's node kill over the Guard's own fill-mismatch halt) the
        one latched first: the kill was not seen by a reader that looked for it there."""
        return {slot: by[code] for slot, by in self._halts.sources.items() if code in by}

    def start_session(self, actor: Checked) -> int:
        """A new trading session: forget every order id (FIX scopes ClOrdID to a session)
        but those of orders still working (a GTC order's id stays taken while it lives).

        Only for a `duplicate_id_window_s` of None (the session is the scope);
        with a window, ids age out by themselves, and a ValueError says so and
        changes nothing (before, every id within the window was forgotten, and a
        duplicate within it went out). Recorded; returns how many ids were forgotten.
        """
        if type(actor) is not str or not actor:
            raise ValueError(f"start_session: actor must be a non-empty string (got {actor!r})")
        window = self.limits.duplicate_id_window_s
        if window is not None:
            raise ValueError(
                f"start_session: the duplicate scope is duplicate_id_window_s {window:g}s, not "
                "the session; ids age out of the window by themselves (nothing forgotten)"
            )
        n = self._ids.clear(self._monotonic_ns())
        self._recorder.record_event("session", self._ctx, actor=actor, forgotten_order_ids=n)
        return n

    def register_parent(
        self, parent_id: Checked, qty: Checked, *, account: Checked = None, side: Checked = None
    ) -> None:
        """Declare a customer's parent order: its children can never exceed it (with
        `max_parent_qty_multiple`), whatever the router does, and their fills within it are
        the customer's, counted against `account` (the parent's own id when not given)
        rather than the node's own position. With `side` (a `Side`), a child on the other
        side is refused (`parent_side_mismatch`): a router's sign bug would otherwise trade
        against the customer under the customer's name; None (not known) checks no side."""
        if type(parent_id) is not str or not parent_id:
            raise ValueError(
                f"register_parent: parent_id must be a non-empty string, got {parent_id!r}"
            )
        if type(qty) is not int or not 0 < qty <= MAX_QTY:
            # bounded as an order's: a larger one overflows the float sums it is valued in
            raise ValueError(
                f"register_parent: qty must be a positive integer of at most {MAX_QTY:.0e}, "
                f"got {quoted(qty)}"
            )
        if account is not None and (type(account) is not str or not account):
            raise ValueError(
                f"register_parent: account must be a non-empty string or None, got {account!r}"
            )
        if side is not None and type(side) is not Side:
            raise ValueError(
                f"register_parent: side must be Side.BUY, Side.SELL or None, got {quoted(side)}"
            )
        led = self._ledger
        if parent_id in led.parents:
            raise ValueError(f"register_parent: parent {parent_id!r} is already registered")
        name = parent_id if account is None else account
        multiple = self.limits.max_parent_qty_multiple
        cap = sys.maxsize if multiple is None else int(qty * multiple)
        led.parents[parent_id] = Parent(qty, led.account(name), cap, side)
        if side is None:
            self._recorder.record_event(
                "parent", self._ctx, parent_id=parent_id, qty=qty, account=name
            )
        else:  # with its side: the record says what its children were held to
            self._recorder.record_event(
                "parent", self._ctx, parent_id=parent_id, qty=qty, account=name, side=side.value
            )

    def set_context(self, *, release_id: Checked = None, flag_snapshot_id: Checked = None) -> None:
        """What this process runs; stamped on every record so a decision says under which code."""
        for name, value in (("release_id", release_id), ("flag_snapshot_id", flag_snapshot_id)):
            if value is not None and type(value) is not str:
                raise ValueError(
                    f"set_context: {name} must be a string or None (got {quoted(value)})"
                )
        self._ctx = AuditContext(
            node=self.node,
            release_id=release_id,
            flag_snapshot_id=flag_snapshot_id,
            limits_version=self.limits.version,
        )
        self._recorder.record_event("context", self._ctx)

    # ------------------------------------------------------------------ reads

    def remember_order_ids(self, ids: list[str], ts: list[int]) -> int:
        """Take back the order ids this node accepted before it restarted, before it accepts
        any order: `ids[i]` was accepted at wall time `ts[i]` (ns), oldest first (its flight
        recorder's accepted decisions within the duplicate scope, `audit.read.accepted_ids`).

        Each is remembered as if accepted here at that age, so it is refused as
        `duplicate_order_id` for the rest of its window, as it was before the restart, then
        forgotten. A time after now (a clock stepped back) counts as now, one before the
        id before it as that one's: never forgotten earlier. Beyond
        `max_tracked_order_ids` all are remembered and orders block for capacity, as they
        would have. Returns how many ids are remembered.
        """
        if self._armed:
            raise ValueError("remember_order_ids: only before the Guard is armed")
        if len(ids) != len(ts):
            raise ValueError(f"remember_order_ids: {len(ids)} ids but {len(ts)} times (one each)")
        wall, now = self._clock.time_ns(), self._monotonic_ns()
        add = self._ids.add
        at = None
        for oid, t in zip(ids, ts, strict=True):
            here = now - max(wall - t, 0)  # monotonic, may be before 0 (a fresh boot)
            at = here if at is None or here > at else at
            add(oid, at)
        return self._ids.count

    def position(self, symbol: str) -> int:
        """The firm's own (principal) position in `symbol`."""
        book = self._ledger.books.get(symbol)
        return 0 if book is None else book.pos

    def working_qty(self, symbol: str) -> tuple[int, int]:
        book = self._ledger.books.get(symbol)
        return (0, 0) if book is None else (book.wbuy, book.wsell)

    def pnl(self) -> float:
        return self._ledger.pnl()

    def exposure(self) -> tuple[float, float, float]:
        """The firm's own (principal) (gross, worst net long, worst net short) with working
        orders, at reference prices; customers' fills within their parents are not in it."""
        led = self._ledger
        return led.gross, led.net_long, led.net_short

    def customer_exposure(self, account: str) -> tuple[float, float, float]:
        """One customer account's (gross, worst net long, worst net short) with working orders."""
        acct = self._ledger.accounts.get(account)
        return (0.0, 0.0, 0.0) if acct is None else (acct.gross, acct.net_long, acct.net_short)

    def customer_position(self, account: str, symbol: str) -> int:
        acct = self._ledger.accounts.get(account)
        line = None if acct is None else acct.lines.get(symbol)
        return 0 if line is None else line.pos

    def flow(self) -> tuple[int, float, float, int, int]:
        """Cumulative (executions, customer notional, principal notional, principal fills,
        parents registered) since the Guard started: what the node reports to the supervisor."""
        led = self._ledger
        return (
            led.executions,
            led.customer_notional,
            led.principal_notional,
            led.principal_fills,
            len(led.parents),
        )

    def cancels(self) -> int:
        """Cancels since the Guard started (a replace the venue took counts as one), never set
        back (the cancel-to-fill ratio's count is, at its halt): what the node reports."""
        return self._ledger.cancelled

    def parent_committed(self, parent_id: str) -> int:
        p = self._ledger.parents.get(parent_id)
        return 0 if p is None else p.committed

    @property
    def recorder(self) -> FlightRecorder:
        return self._recorder

    @property
    def clock(self) -> Clock:
        """The time source every decision is taken by."""
        return self._clock


def _unknown_cancel_windows(limits: Limits, node: str) -> tuple[Window, ...]:
    """The node's window of cancel requests for orders it does not hold (none when
    `max_unknown_cancels_per_s` is off)."""
    return windows(limits.max_unknown_cancels_per_s, None, R.UNKNOWN_CANCELS, "node", node)


def _scope_arg(method: str, scope: object) -> Scope:
    """A `Scope`, or its string value ("fleet"); anything else names the argument."""
    if type(scope) is Scope:
        return scope
    if type(scope) is str:
        try:
            return Scope(scope)
        except ValueError:
            pass
    choices = ", ".join(s.value for s in Scope)
    raise ValueError(f"{method}: scope must be a Scope or one of {choices} (got {scope!r})")


def _shown(o: object, name: str) -> str:
    """A field of what was refused, for its log line: read and shown so that nothing it
    does (a raising attribute or repr, a megabyte id) can fail or flood the line."""
    try:
        value = getattr(o, name, "?")
    except Exception:
        return "?"
    if type(value) is str:
        return _plain(value)
    if type(value) in (int, float) or value is None:
        return str(value)
    if type(value) is Side:
        return value.value
    return quoted(value)


def _plain(text: str) -> str:
    """A string for a log line: as it is when short and printable, else quoted (escaped):
    a newline in an order id or a halt's key forged a second log line, an escape
    sequence reached the operator's terminal."""
    return text if len(text) <= QUOTE_LIMIT and text.isprintable() else quoted(text)


def _key_arg(method: str, scope: Scope, key: object) -> str:
    """The slot key; only the fleet may go without one (an empty key would block nothing)."""
    if scope is Scope.FLEET:
        return FLEET_KEY
    if type(key) is not str or not key.strip():
        raise ValueError(
            f"{method}: key must be a non-empty string for scope {scope.value} (got {key!r})"
        )
    return key


def _id_arg(method: str, name: str, value: object) -> None:
    """An order id a venue event names: a string, or a ValueError naming it, raised before
    anything changes (a list would otherwise fail as unhashable, deep in the ledger)."""
    if type(value) is not str:
        raise ValueError(f"{method}: {name} must be a string (got {quoted(value)})")


def _text_arg(method: str, name: str, value: object) -> None:
    if type(value) is not str:
        raise ValueError(f"{method}: {name} must be a string (got {type(value).__name__})")
