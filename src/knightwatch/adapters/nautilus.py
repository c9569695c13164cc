"""knightwatch inside a NautilusTrader node: the Guard on the last hop before the venue.

NautilusTrader (1.221.0, `knightwatch[nautilus]`) routes every trading command
over its message bus to the endpoint `ExecEngine.execute`: from its own
RiskEngine after that engine's checks, and directly from the OrderManager, the
OrderEmulator and execution algorithms. Whatever an ExecutionClient will send
passes there, whichever venue adapter the node uses. `install` re-registers
that endpoint with the Guard in front of the ExecutionEngine, so

* every SubmitOrder (and each order of a SubmitOrderList) meets `Guard.check`
  after NautilusTrader's own risk checks, which skip account-scoped checks for
  some broker-routed instruments, and before any client sees it; a refusal
  becomes NautilusTrader's standard `OrderDenied`, reason
  `knightwatch:<code> <detail>` (`reason_code` reads the code back); the legs
  of an OCO/OUO group in a list (a bracket's exits) are each checked, and
  counted as the largest of them, since at most one executes (a leg that fills
  takes the group down with it; the others, cancelled or resized by the venue in
  the events after, never take it back up);
* cancels, cancel-all and batch cancels always pass, halted or not, and so
  does a ModifyOrder that only lowers the quantity (the stop direction: the
  Guard's replace check passes it in any state; the adapter also holds
  `RiskEngine.execute` so that NautilusTrader's HALTED, which denies every
  amend, does not stop it);
* any other ModifyOrder is a new risk: `Guard.check_replace` reserves the larger
  of the old and new leaves until the venue answers (the `OrderUpdated` showing
  it commits it, `OrderModifyRejected` or the order ending rolls back; any other
  `OrderUpdated` is the venue's own change, which the Guard follows; NautilusTrader's
  RiskEngine refusing a later amend of the order is no answer from the venue); a
  refusal is `OrderModifyRejected`;
* fills, cancels, expiries and venue rejects (the last two not counted as
  cancels) and quotes reach the Guard from the
  bus topics before strategies see them (subscription priority), so a
  strategy reacting to a fill or a quote is checked against the updated book;
  an order the venue accepts or fills that never passed the Guard (sent past the
  bus, or an external order found by a reconciliation while trading) is counted
  from then on (its leaves working) and halts the node;
* an order whose execution client raises before sending it (a live client's send task,
  whose exception NautilusTrader only logs, included) is released and denied
  (`OrderDenied`, recorded `not_sent`); one the client marked submitted first may be at
  the venue and stays counted; an amend whose client raises before its first wait (a
  live client's `_modify_order` included) gives its larger reservation back
  (`OrderModifyRejected`, recorded `not_sent`), one it raised on after waiting (a timeout)
  may be at the venue and stays reserved until the venue answers or the order ends;
* an amend a live client sent that the venue has not answered 5 s later (`amend_read_back_s`:
  a timeout as above, or an answer that never comes) is read back from the venue (the client's
  `generate_order_status_report`, at most 10 s a read): an order the venue holds as amended
  gets the `OrderUpdated` the venue's answer would have been (the amend committed), one it
  holds as it was gives the reservation back (`OrderModifyRejected`, `venue_unavailable`;
  both recorded `amend_read_back`). A read that fails, finds no open order, or shows neither
  keeps the larger reservation (logged `AMEND_IN_DOUBT`) and is tried again after each wait
  twice the last, at most 60 s, five reads in all (then `AMEND_UNRESOLVED`, recorded
  `amend_unresolved`: reserved until the venue answers or the order ends). A venue that
  takes the amend after a read found it not taken restates the order up: the Guard halts the
  node (`fill_mismatch`), as for any order grown past its check;
* an `OrderCanceled` NautilusTrader made up itself (`reconciliation`: a live ExecutionEngine's
  in-flight check resolves an order whose cancel or amend the venue never answered CANCELED
  after its retries) does not end the order in the Guard: it stays counted working (logged
  `CANCEL_UNCONFIRMED`) and is read back from the venue until the venue shows it ended with
  no unbooked fill (then it ends, recorded `cancel_read_back`). While the node is HALTED each
  read that does not show it ended sends the kill's cancel again (0.5 s, doubling to 8 s,
  until the venue confirms); otherwise after five reads it is left counted working
  (`CANCEL_UNRESOLVED`) until an event of the venue ends it, and a later kill's sweep reads
  (and so cancels) it again, though the cache holds it closed;
* at start-up, once the host's reconciliation has run (the Guard's start-up
  actor starts before any strategy: `take_over`), what NautilusTrader's cache
  holds becomes the Guard's starting point, before the first order is checked:
  each instrument's open positions, netted, restored in the instrument's size
  increments at their average open price (`Guard.restore_position`), and every
  order open or in flight at the venue counted as working (`Guard.adopt`, no
  halt: it was there before the node traded, as the FIX gateway adopts a venue's
  working orders; a restart with resting orders is no incident, and a halt's
  kill would cancel them). The start-up fills and order events of the
  reconciliation itself are not booked one by one: the cache's positions are
  their sum. An instrument whose position cannot be read or converted is halted
  (`fill_mismatch`, recorded; the node if the instrument has no symbol), never
  started at 0, and an open order that cannot be counted halts the node;
* every change of the Guard's trading state is mirrored into the RiskEngine's
  `TradingState` (strictest scope wins: NautilusTrader has one state per node),
  so NautilusTrader itself denies new orders too; a node-wide HALTED (a kill,
  a node halt) also cancels every order of every strategy that is not closed
  (open, emulated, in flight, or held by an execution algorithm), and every open
  order no running strategy owns (external), each through the execution client it
  was sent to; a cancel that raises (its client down) is logged and spares no
  other, and the sweep runs again at the next change of state and on NautilusTrader's
  clock; a cancel the venue rejects (`OrderCancelRejected`: a rate limit) is sent again;
  both after 0.5 s, then each wait twice the last, at most 8 s, while the node is HALTED
  and the order open (logged `KILL_CANCEL_RETRY`, recorded `kill_cancel_rejected`); an
  order the venue accepts while
  the node is HALTED (in flight when the kill swept, its cancel overtook it: `not
  found`) is cancelled then, or it would work through the kill;
* an end event (cancel, expiry, reject, denial) that NautilusTrader publishes but
  its order refused (the order still open in the cache: a strategy's denial of a
  second order under a live order's id, a reject of a partly filled order) ends
  nothing: the order stays counted working (logged `EVENT_NOT_APPLIED`, recorded);
* `symbol_of` may map several instruments to one Guard symbol only if they share a
  size increment (else their orders are refused by name); their starting positions
  are summed.

In a backtest the Guard runs on NautilusTrader's clock (`NautilusClock`), so its
rate windows and throttle follow simulated time; on a live node it runs on the host's
clocks (`SystemClock`): NautilusTrader's live clock is wall time, and a wall clock set
back (an NTP step, a VM resumed) would hold the Guard's windows, its lease and its
reference prices' age for as long as the step. With `control_plane`, the node joins
the fleet through `NodeRuntime` (lease, kill state, metrics, flight-recorder shipping)
and arms once joined.

Quantities are exact: the Guard counts each instrument's size increments
(`knightwatch.adapters.units`), so for an instrument with increment 0.001 a
`max_order_qty` of 5000 means 5.0. Quote-quantity orders are refused: their
base size is only known after the ExecutionEngine converts them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

import nautilus_trader
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.component import MessageBus
from nautilus_trader.common.config import ActorConfig
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import (
    BatchCancelOrders,
    CancelAllOrders,
    CancelOrder,
    GenerateOrderStatusReport,
    ModifyOrder,
    QueryAccount,
    QueryOrder,
    SubmitOrder,
    SubmitOrderList,
)
from nautilus_trader.execution.reports import OrderStatusReport
from nautilus_trader.live.execution_client import LiveExecutionClient
from nautilus_trader.model.data import QuoteTick, TradeTick
from nautilus_trader.model.enums import ContingencyType, OrderSide, OrderStatus, PositionSide
from nautilus_trader.model.enums import TradingState as NtState
from nautilus_trader.model.events import (
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderModifyRejected,
    OrderRejected,
    OrderUpdated,
)
from nautilus_trader.model.identifiers import ClientOrderId, InstrumentId
from nautilus_trader.model.orders import Order as NtOrder

from knightwatch import (
    Clock,
    Decision,
    Fill,
    InvalidOrder,
    Limits,
    Order,
    RejectReason,
    Scope,
    Side,
    TradingState,
)
from knightwatch.adapters.fleet import (
    AdapterError,
    ControlPlaneSpec,
    FleetMember,
    Unmapped,
    WatchedGuard,
    build_guard,
    check_settings,
    identity_of,
    limits_of,
    plane_of,
    with_lease,
)
from knightwatch.adapters.units import UnitError, Units
from knightwatch.clock import SystemClock
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.order import MAX_ID_LEN

log = logging.getLogger(__name__)

ENDPOINT = "ExecEngine.execute"
"""The bus endpoint every trading command passes on its way to an ExecutionClient."""
RISK_ENDPOINT = "RiskEngine.execute"
"""Where a strategy's commands enter NautilusTrader's RiskEngine (see `NautilusGuard._risk`)."""
PROCESS_ENDPOINT = "ExecEngine.process"
REASON_PREFIX = "knightwatch:"
EVENT_PRIORITY = 5
"""Bus priority of the Guard's subscriptions: after NautilusTrader's engines (10), before
strategies (0), so the Guard's book is current when a strategy reacts."""

_PASS = (CancelOrder, CancelAllOrders, BatchCancelOrders, QueryOrder, QueryAccount)
_TO_NT = {
    TradingState.ACTIVE: NtState.ACTIVE,
    TradingState.REDUCING: NtState.REDUCING,
    TradingState.HALTED: NtState.HALTED,
}
_SEVERITY = {NtState.ACTIVE: 0, NtState.REDUCING: 1, NtState.HALTED: 2}
_NOT_SENT = RejectReason.VENUE_UNAVAILABLE
"""The reason an accepted command's client raised on: it never reached the venue."""
_UNSENT = (OrderStatus.INITIALIZED, OrderStatus.RELEASED)
"""Statuses in which an order the client raised on cannot have left: one it marked
submitted may have been sent before it raised, so it stays counted (the safe side)."""
_KILL_RETRY_FIRST_S = 0.5
_KILL_RETRY_MAX_S = 8.0
"""A kill's cancel the venue rejects (a rate-limited burst) or that raises is sent again after
`_KILL_RETRY_FIRST_S`, each wait twice the one before, never more than `_KILL_RETRY_MAX_S`,
for as long as the node stays HALTED and the order open."""
_AMEND_READ_BACK_S = 5.0
_AMEND_READ_MAX_S = 60.0
_AMEND_READS = 5
_AMEND_READ_TIMEOUT_S = 10.0
"""An amend a live client sent that the venue has not answered `amend_read_back_s` (default
`_AMEND_READ_BACK_S`) later is read back from the venue (`generate_order_status_report`, each
read given at most `_AMEND_READ_TIMEOUT_S`), up to `_AMEND_READS` times, each wait twice the
one before, never more than `_AMEND_READ_MAX_S`: a venue that never answers an amend must
not leave its larger reservation held (or the order's size unknown) for good."""
_CONTINGENT = (ContingencyType.OCO, ContingencyType.OUO)
"""Contingencies whose legs cannot all execute: one filling cancels (OCO) or reduces (OUO)
the others by what it filled."""


def reason_code(denied_reason: str) -> RejectReason | None:
    """The Guard's reason code in an `OrderDenied`/`OrderModifyRejected` reason, else None."""
    if not denied_reason.startswith(REASON_PREFIX):
        return None
    code = denied_reason[len(REASON_PREFIX) :].split(" ", 1)[0]
    try:
        return RejectReason(code)
    except ValueError:
        return None


class NautilusClock:
    """The Guard's `Clock` on NautilusTrader's simulated time in a backtest (`install` gives
    a live node the host's `SystemClock`).

    NautilusTrader's clock is wall time; the Guard's windows want a clock that
    never runs backwards, so `monotonic_ns` holds the latest reading it gave.
    """

    __slots__ = ("_clock", "_last")

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._last = 0

    def monotonic_ns(self) -> int:
        t: int = self._clock.timestamp_ns()
        if t > self._last:
            self._last = t
        return self._last

    def time_ns(self) -> int:
        return int(self._clock.timestamp_ns())


class _Amend:
    """An amend the Guard accepted, awaiting the venue: what its answer must show."""

    __slots__ = ("command_id", "new_id", "price", "qty", "trigger")

    def __init__(self, command_id: Any, new_id: str, qty: Any, price: Any, trigger: Any) -> None:
        self.command_id = command_id
        self.new_id = new_id
        self.qty = qty
        self.price = price
        self.trigger = trigger

    def answered_by(self, event: Any) -> bool:
        """Whether an `OrderUpdated` (or an `OrderStatusReport` read back) is the venue taking
        this amend: the quantity, price and trigger it asked for (those it left alone are not
        compared)."""
        return (
            event.quantity == self.qty
            and (self.price is None or event.price == self.price)
            and (self.trigger is None or event.trigger_price == self.trigger)
        )

    def left_out_of(self, order: NtOrder, report: OrderStatusReport) -> bool:
        """Whether the venue's `report` shows `order` as it was before this amend (its
        quantity, and the price and trigger the amend asked to change): it never took it."""
        return (
            report.quantity == order.quantity
            and (self.price is None or (order.has_price and report.price == order.price))
            and (
                self.trigger is None
                or (order.has_trigger_price and report.trigger_price == order.trigger_price)
            )
        )


class _Instrument:
    """One instrument as the Guard counts it: its symbol and its size increment."""

    __slots__ = ("step_raw", "symbol", "units")

    def __init__(self, symbol: str, units: Units, step_raw: int) -> None:
        self.symbol = symbol
        self.units = units
        self.step_raw = step_raw

    def count(self, qty: Any, what: str) -> int:
        """A NautilusTrader quantity in whole size increments, exactly (fixed-point ints)."""
        n, rest = divmod(qty.raw, self.step_raw)
        if rest:
            raise UnitError(f"{what}: {qty} is not a whole number of steps of {self.units.step}")
        return int(n)


class _StartUp(Actor):  # type: ignore[misc]
    """The adapter's actor: the trader starts it before any strategy, after the host's
    reconciliation (`NautilusGuard.take_over`)."""

    def __init__(self, ng: NautilusGuard) -> None:
        super().__init__(ActorConfig(component_id=f"knightwatch-start-{ng.guard.node}"))
        self._ng = ng

    def on_start(self) -> None:
        self._ng.take_over()


def _routing_of(engine: Any) -> dict[Any, Any]:
    """The ExecutionEngine's venue -> client routing: the one private NautilusTrader field the
    adapter reads (1.221.0 has no public accessor; `get_clients_for_orders` raises on a
    `client_id` it does not know). `check_routing` proves it at install."""
    routing: dict[Any, Any] = engine._routing_map
    return routing


def _clients_of(engine: Any) -> dict[Any, Any]:
    """The ExecutionEngine's registered clients by id: the other private field the adapter
    reads (1.221.0 offers their ids only, `registered_clients`), to follow a live client's
    sends (`NautilusGuard._watch_client`). `check_routing` proves it at install."""
    clients: dict[Any, Any] = engine._clients
    return clients


def check_routing(engine: Any) -> None:
    """Raise `AdapterError` unless this NautilusTrader's ExecutionEngine offers what the
    adapter routes by: its public client ids and its venue routing map (`_routing_of`).

    Without them the adapter cannot tell which orders would be sent: it refuses to start
    rather than guess (an order it took for unrouted would be denied, one it took for
    routed would be counted forever)."""
    version = getattr(nautilus_trader, "__version__", "unknown")
    where = (
        f"NautilusTrader {version}: ExecutionEngine.{{}} {{}}; knightwatch[nautilus] supports "
        "nautilus-trader==1.221.0 and cannot tell where this version routes orders"
    )
    for attr in ("get_external_client_ids", "registered_clients", "default_client"):
        if not hasattr(engine, attr):
            raise AdapterError(where.format(attr, "is missing"))
    try:
        routing = _routing_of(engine)
    except AttributeError:
        raise AdapterError(where.format("_routing_map", "is missing")) from None
    registered = set(engine.registered_clients)
    if not isinstance(routing, dict) or any(
        getattr(c, "id", None) not in registered for c in routing.values()
    ):
        raise AdapterError(
            where.format("_routing_map", "is not a map of venues to registered clients")
        )
    try:
        clients = _clients_of(engine)
    except AttributeError:
        raise AdapterError(where.format("_clients", "is missing")) from None
    if not isinstance(clients, dict) or set(clients) != registered:
        raise AdapterError(where.format("_clients", "is not a map of the registered clients"))


def _kernel_of(target: Any) -> Any:
    kernel = getattr(target, "kernel", target)
    for attr in ("msgbus", "exec_engine", "risk_engine", "cache", "clock", "trader"):
        if not hasattr(kernel, attr):
            raise AdapterError(
                f"install: {type(target).__name__} is not a NautilusTrader BacktestEngine, "
                f"TradingNode or kernel (no {attr!r})"
            )
    return kernel


class NautilusGuard:
    """The Guard interposed on `ExecEngine.execute` of one NautilusTrader kernel."""

    def __init__(
        self,
        kernel: Any,
        guard: WatchedGuard,
        *,
        symbol_of: Callable[[InstrumentId], str] | None = None,
        member: FleetMember | None = None,
    ) -> None:
        self.kernel = kernel
        self.guard = guard
        self.member = member
        self.bus: MessageBus = kernel.msgbus
        self._symbol_of = symbol_of if symbol_of is not None else _instrument_value
        self._inner: Callable[[Any], None] = kernel.exec_engine.execute
        self._instruments: dict[InstrumentId, _Instrument] = {}
        self._live: dict[str, None] = {}
        """Orders the Guard accepted that have not reached a terminal state."""
        self._gid: dict[str, str] = {}
        """NautilusTrader order id -> the Guard's id for it, once an amend moved it."""
        self._pending: dict[str, _Amend] = {}
        """NautilusTrader order id -> its amend awaiting the venue."""
        self._rep: dict[str, str] = {}
        """A contingent leg's NautilusTrader id -> its group's representative (`_submit_list`):
        the Guard counts a group as one working order under the representative's id."""
        self._group: dict[str, list[str]] = {}
        """A representative's NautilusTrader id -> every leg of its group."""
        self._risk_inner: Callable[[Any], None] = kernel.risk_engine.execute
        self._own_rejects: set[Any] = set()
        self._at_nt: dict[str, list[Any]] = {}
        """NautilusTrader order id -> the ModifyOrders for it that NautilusTrader's RiskEngine
        holds (command ids, oldest first; `_risk`): until each comes out to the Guard, an
        `OrderModifyRejected` for the order is the RiskEngine's refusal of it, never the
        venue's answer to an amend the Guard let through before. A live RiskEngine queues
        what it is given and refuses it later, from its own task."""
        self._watched: set[Any] = set()
        """Ids of the live execution clients whose sends the Guard follows (`_watch_client`)."""
        self._replaces = 0
        self._mirrored: Any = None
        self._cancelled = False
        self._kill_failed = 0
        """How many cancels of the last kill sweep raised (`cancel_open_orders`)."""
        self._kill_tries: dict[str, int] = {}
        """NautilusTrader order id -> how many of the kill's cancels of it failed (rejected by
        the venue, or raised), for its retry's backoff (`_retry_later`); cleared on resume."""
        self._sweep_tries = 0
        self._sweep_due = False
        """Whether a sweep's retry is on the clock (`_sweep_later`): one at a time."""
        self._alerts = 0
        self.amend_read_back_s = _AMEND_READ_BACK_S
        """How long an amend sent through a live client may go unanswered before the venue
        is asked for the order (`_read_back_amend`)."""
        self._reads: set[asyncio.Task[None]] = set()
        """The read-backs under way (`_read_back`: amends', cancels'), held until they end."""
        self._unconfirmed: dict[str, tuple[LiveExecutionClient, asyncio.Task[None]]] = {}
        """NautilusTrader order id -> its client and cancel read-back (`_confirm_cancel`), for
        orders NautilusTrader resolved CANCELED that the venue has not shown ended."""
        self.started = False
        """Whether the Guard took over what the cache held at start-up (`take_over`)."""
        self._fill = member.runtime.on_fill if member is not None else guard.on_fill
        self.installed = False
        self.joined: asyncio.Task[None] | None = None
        self.passed = 0
        self.denied = 0
        self.check_ns: list[int] | None = None
        """Set to a list to collect the Guard's time per checked order (benchmarks)."""

    # ------------------------------------------------------------------ wiring

    def install(self) -> None:
        bus = self.bus
        check_routing(self.kernel.exec_engine)
        for endpoint in (ENDPOINT, RISK_ENDPOINT):
            if endpoint not in bus.endpoints():
                raise AdapterError(
                    f"NautilusTrader has no {endpoint!r} endpoint: this version routes orders "
                    "differently; knightwatch[nautilus] supports nautilus-trader==1.221.0"
                )
        try:
            bus.deregister(ENDPOINT, self._inner)
        except (KeyError, ValueError):
            raise AdapterError(
                f"{ENDPOINT!r} is not the ExecutionEngine's handler any more "
                "(knightwatch already installed on this node, or another interposer)"
            ) from None
        try:
            bus.deregister(RISK_ENDPOINT, self._risk_inner)
        except (KeyError, ValueError):
            bus.register(ENDPOINT, self._inner)
            raise AdapterError(
                f"{RISK_ENDPOINT!r} is not the RiskEngine's handler any more "
                "(knightwatch already installed on this node, or another interposer)"
            ) from None
        bus.register(ENDPOINT, self.execute)
        bus.register(RISK_ENDPOINT, self._risk)
        bus.subscribe("events.order.*", self._on_order_event, priority=EVENT_PRIORITY)
        bus.subscribe("data.quotes.*", self._on_quote, priority=EVENT_PRIORITY)
        bus.subscribe("data.trades.*", self._on_trade, priority=EVENT_PRIORITY)
        self.guard.watch(self._on_state_change)
        self.installed = True
        trader = self.kernel.trader
        if trader.is_running:  # installed on a running node: its reconciliation has run
            self.take_over()
        else:
            try:
                trader.add_actor(_StartUp(self))
            except RuntimeError as exc:  # installed here before: the first command takes over
                log.warning("knightwatch start-up actor not added (%s)", exc)
        log.info("knightwatch Guard interposed on %s (node %s)", ENDPOINT, self.guard.node)

    def verify(self) -> None:
        """Raise `AdapterError` unless this Guard still holds the endpoint (e.g. after start)."""
        bus = self.bus
        if ENDPOINT not in bus.endpoints():
            raise AdapterError(f"{ENDPOINT!r} vanished from the message bus")
        try:
            bus.deregister(ENDPOINT, self.execute)
        except (KeyError, ValueError):
            raise AdapterError(
                f"{ENDPOINT!r} no longer reaches the Guard: something re-registered it"
            ) from None
        bus.register(ENDPOINT, self.execute)

    def uninstall(self) -> None:
        """Give the endpoint back to the ExecutionEngine (orders flow unguarded afterwards)."""
        if not self.installed:
            return
        self.verify()
        bus = self.bus
        bus.deregister(ENDPOINT, self.execute)
        bus.register(ENDPOINT, self._inner)
        bus.deregister(RISK_ENDPOINT, self._risk)
        bus.register(RISK_ENDPOINT, self._risk_inner)
        bus.unsubscribe("events.order.*", self._on_order_event)
        bus.unsubscribe("data.quotes.*", self._on_quote)
        bus.unsubscribe("data.trades.*", self._on_trade)
        for read in list(self._reads):
            read.cancel()
        self.installed = False

    # ------------------------------------------------------------------ start-up

    def take_over(self) -> None:
        """Make what NautilusTrader's cache holds the Guard's starting point (once).

        Called when the trader starts (after the host's reconciliation, before any
        strategy), or before the first command if one comes earlier. Each instrument's
        open positions are netted and restored; an instrument whose position cannot be
        read or converted is halted, never left at 0. Every order open or in flight at
        the venue (not emulated: those are checked when released) is counted as working
        without a halt: it was there before this node traded."""
        if self.started:
            return
        self.started = True
        cache = self.kernel.cache
        held: dict[InstrumentId, list[Any]] = {}
        for p in cache.positions_open():
            held.setdefault(p.instrument_id, []).append(p)
        # instruments `symbol_of` maps to one symbol share its position: summed, then
        # restored once (restored one by one, the last would have overwritten the others)
        by_symbol: dict[str, list[tuple[int, float]]] = {}
        for instrument_id in sorted(held, key=str):
            self._restore(instrument_id, held[instrument_id], by_symbol)
        for symbol, signed in sorted(by_symbol.items()):
            net = sum(n for n, _ in signed)
            side = [(abs(n), px) for n, px in signed if n * net > 0]
            total = sum(n for n, _ in side)
            avg = sum(n * px for n, px in side) / total if total else 0.0
            try:
                self.guard.restore_position(symbol, net, avg)
            except Exception as exc:  # fail closed: never start the symbol at 0
                self._unknown_position(symbol, exc)
        adopted = 0
        for order in sorted(cache.orders(), key=lambda o: o.client_order_id.value):
            oid = order.client_order_id.value
            at_venue = (order.is_open or order.is_inflight) and not order.is_emulated
            if at_venue and oid not in self._live:
                adopted += self._adopt_at_start(order)
        self.guard.note("nautilus_start", positions=len(held), orders=adopted)

    def _restore(
        self,
        instrument_id: InstrumentId,
        positions: list[Any],
        by_symbol: dict[str, list[tuple[int, float]]],
    ) -> None:
        """Add one instrument's open positions (signed size increments, per-unit open
        prices) to its symbol's in `by_symbol` (the net at the average open price of those
        on the net side is restored); halt it if that cannot be done exactly."""
        try:
            inst = self._instrument(instrument_id)
            signed: list[tuple[int, float]] = []
            for p in positions:
                n = inst.count(p.quantity, f"position {p.id} quantity")
                if n == 0:
                    continue
                if p.side not in (PositionSide.LONG, PositionSide.SHORT):
                    raise AdapterError(f"position {p.id}: side {p.side!r} with quantity {n}")
                px = inst.units.unit_price(float(p.avg_px_open))
                signed.append((n if p.side == PositionSide.LONG else -n, px))
            by_symbol.setdefault(inst.symbol, []).extend(signed)
        except Exception as exc:  # fail closed: never start the instrument at 0
            self._unknown_position(instrument_id, exc)

    def _unknown_position(self, instrument_id: InstrumentId | str, exc: Exception) -> None:
        """Halt what a starting position belongs to: an instrument's symbol, or a symbol
        (given as a str); the node if there is none."""
        why = f"starting position of {instrument_id} could not be read: {exc}"[:400]
        log.error("POSITION_UNKNOWN node=%s %s", self.guard.node, why)
        try:
            symbol = (
                instrument_id if isinstance(instrument_id, str) else self._symbol_of(instrument_id)
            )
            self.guard.halt(
                Scope.SYMBOL,
                symbol,
                why,
                f"nautilus:{self.guard.node}",
                code=RejectReason.FILL_MISMATCH,
            )
        except Exception:  # no symbol to halt: the whole node
            self.guard.flag_mismatch(why)

    def _adopt_at_start(self, order: NtOrder) -> int:
        """Count an order at the venue at start-up as working (no halt); 1 if counted."""
        oid = order.client_order_id.value
        try:
            inst = self._instrument(order.instrument_id)
            self.guard.adopt(
                self._as_guard(order, inst), inst.count(order.leaves_qty, "leaves_qty")
            )
        except Exception as exc:  # it can execute and cannot be counted: stop trading
            self._lost(f"order {oid} at the venue at start-up could not be counted: {exc}")
            return 0
        self._live[oid] = None
        return 1

    def _as_guard(self, order: NtOrder, inst: _Instrument) -> Order:
        """An order at the venue as the Guard counts it (`adopt`)."""
        return Order(
            id=order.client_order_id.value,
            strategy=order.strategy_id.value,
            symbol=inst.symbol,
            side=Side.BUY if order.side == OrderSide.BUY else Side.SELL,
            qty=inst.count(order.quantity, "quantity"),
            price=inst.units.unit_price(order.price.as_double()) if order.has_price else None,
        )

    # ------------------------------------------------------------------ commands

    def execute(self, command: Any) -> None:
        """The handler at `ExecEngine.execute`: check new risk, pass everything that removes it."""
        if not self.started:  # a command before the trader started: the start-up comes first
            self.take_over()
        if isinstance(command, SubmitOrder):
            self._submit(command)
        elif isinstance(command, _PASS):
            self._requested(command)
            self._inner(command)
        elif isinstance(command, SubmitOrderList):
            self._submit_list(command)
        elif isinstance(command, ModifyOrder):
            self._modify(command)
        else:  # a command type this adapter does not know could add risk: fail closed
            log.error("UNKNOWN_COMMAND node=%s dropped %r", self.guard.node, command)

    def _requested(self, command: Any) -> None:
        """Tell the Guard of each order a strategy's cancel names, as it passes
        (`Guard.on_cancel_request`): one naming no order working here is counted, and more
        than `max_unknown_cancels_per_s` of them in a second halt the node
        (`unknown_cancels`), the cancels still passed. A loop cancelling orders that do not
        exist reached the venue as fast as it ran, and nothing counted it. A cancel-all
        names no order; the kill's own cancels do not come this way."""
        if isinstance(command, CancelOrder):
            self.guard.on_cancel_request(command.client_order_id.value)
        elif isinstance(command, BatchCancelOrders):
            for cancel in command.cancels:
                self.guard.on_cancel_request(cancel.client_order_id.value)

    def _risk(self, command: Any) -> None:
        """The handler at `RiskEngine.execute`, where a strategy's commands enter.

        NautilusTrader's RiskEngine denies every amend while HALTED, a state this adapter
        mirrors from the Guard, so a strategy could not even lower a working order's
        quantity during a kill. Such an amend (`_reduces_only`) is the stop direction: it
        goes straight to the Guard at `ExecEngine.execute`, whose replace check passes it
        in any state, as a cancel. Every other command goes to the RiskEngine as before."""
        if (
            isinstance(command, ModifyOrder)
            and self.kernel.risk_engine.trading_state == NtState.HALTED
        ):
            order = self.kernel.cache.order(command.client_order_id)
            if order is not None and not order.is_closed and _reduces_only(order, command):
                self.execute(command)
                return
        if isinstance(command, ModifyOrder) and command.client_order_id.value in self._live:
            # held by the RiskEngine until it passes it on to `execute` or refuses it
            self._at_nt.setdefault(command.client_order_id.value, []).append(command.id)
        self._risk_inner(command)

    def _unrouted(self, command: Any) -> Decision | None:
        """A refusal for a command no ExecutionClient would take, else None.

        The ExecutionEngine drops such a command with a log line: the order is neither
        sent nor denied, so had the Guard counted it, it would stay working forever."""
        venue = command.instrument_id.venue
        if self._client_for(command.client_id, venue) is not None:
            return None
        return Decision(
            False,
            RejectReason.VENUE_UNAVAILABLE,
            f"no execution client for venue {venue} or client_id {command.client_id}: never sent",
        )

    def _client_for(self, cid: Any, venue: Any) -> Any:
        """The id of the client the ExecutionEngine hands a command for `venue` with
        `client_id` `cid` (the id itself for an external client), or None: it would drop
        the command. NautilusTrader's public API, but for the venue routing (`_routing_of`)."""
        engine = self.kernel.exec_engine
        if cid is not None and (
            cid in engine.get_external_client_ids() or cid in engine.registered_clients
        ):
            return cid
        client = _routing_of(engine).get(venue)
        return client.id if client is not None else engine.default_client

    def _misrouted(self, command: SubmitOrderList) -> Decision | None:
        """A refusal for a list holding an order that is not routed where its instrument's
        venue is, else None.

        The ExecutionEngine sends the whole list through the client of the list's venue
        (its first order's instrument): an order of another venue in it would go to that
        client, and one whose venue has no client would be sent where it was never meant
        to go. Each order is checked where a SubmitOrder of it alone would be routed."""
        cid = command.client_id
        sent_to = self._client_for(cid, command.instrument_id.venue)
        for order in command.order_list.orders:
            venue = order.instrument_id.venue
            own = self._client_for(cid, venue)
            if own is None:
                why = f"no execution client for venue {venue} or client_id {cid}: never sent"
            elif own != sent_to:
                why = (
                    f"order {order.client_order_id} is for venue {venue}, but the list goes to "
                    f"the client of {command.instrument_id.venue}: never sent"
                )
            else:
                continue
            return Decision(False, RejectReason.VENUE_UNAVAILABLE, why)
        return None

    def _submit(self, command: SubmitOrder) -> None:
        order = command.order
        unrouted = self._unrouted(command)
        if unrouted is not None:
            self.denied += 1
            self._record_block(order.client_order_id.value, unrouted)
            self._deny(order, unrouted)
            return
        d = self._check(order)
        if d.accepted:
            self.passed += 1
            self._live[order.client_order_id.value] = None
            self._watch_client(command)
            try:
                self._inner(command)
            except Exception as exc:  # the client never sent it: not left counted as working
                self._not_sent([order], exc)
        else:
            self.denied += 1
            self._deny(order, d)

    def _submit_list(self, command: SubmitOrderList) -> None:
        """All or nothing, as NautilusTrader treats a list: one refusal denies every order.

        Every order meets `Guard.check`. The legs of an OCO/OUO group (a bracket's
        take-profit and stop-loss) cannot all execute, so the Guard counts the group as its
        largest leg, not their sum: each other leg is checked with everything else in the
        list counted but its siblings, then given back (recorded `contingent_leg`, restated
        to nothing: never recorded as a reject, it was not refused), and the
        largest is checked last and stays counted for the group; fills of every leg are
        booked to it, and it ends when the group's last leg ends.
        """
        orders = command.order_list.orders
        counted: list[str] = []
        groups: list[tuple[NtOrder, list[NtOrder]]] = []
        shadows: dict[str, str] = {}
        refusal = self._unrouted(command) or self._misrouted(command)
        if refusal is not None:
            for order in orders:
                self._record_block(order.client_order_id.value, refusal)
        else:
            for legs in _contingent_groups(orders):
                largest = max(legs, key=lambda o: o.quantity.as_decimal())
                groups.append((largest, legs))
                for leg in legs:
                    if leg is not largest:
                        shadows[leg.client_order_id.value] = largest.client_order_id.value
            grouped = {o.client_order_id.value for _, legs in groups for o in legs}
            sequence = [o for o in orders if o.client_order_id.value not in grouped]
            for largest, legs in groups:
                sequence += [o for o in legs if o is not largest] + [largest]
            for order in sequence:
                d = self._check(order)
                if not d.accepted:
                    refusal = d
                    break
                oid = order.client_order_id.value
                if oid in shadows:  # at most one leg executes: the largest stands for all
                    # given back as a restatement to nothing, never as a reject: the leg
                    # was not refused and goes to the venue with its group
                    self.guard.note("contingent_leg", order_id=oid, counted_as=shadows[oid])
                    self.guard.on_restate(oid, 0)
                else:
                    counted.append(oid)
        if refusal is None:
            self.passed += len(orders)
            self._live.update(dict.fromkeys(o.client_order_id.value for o in orders))
            for largest, legs in groups:
                rid = largest.client_order_id.value
                self._group[rid] = [o.client_order_id.value for o in legs]
                self._rep.update(dict.fromkeys(self._group[rid], rid))
            self._watch_client(command)
            try:
                self._inner(command)
            except Exception as exc:  # the client never sent it: not left counted as working
                self._not_sent(orders, exc)
            return
        self.denied += len(orders)
        for oid in counted:  # never sent: give back what the Guard reserved
            self.guard.on_reject(oid)
        for order in orders:
            if not order.is_closed:
                self._deny(order, refusal)

    def _modify(self, command: ModifyOrder) -> None:
        """An amend is a new risk: `Guard.check_replace`, reserved until the venue answers."""
        cid = command.client_order_id
        oid = cid.value
        held = self._at_nt.get(oid)
        if held is not None and command.id in held:  # out of NautilusTrader's RiskEngine
            held.remove(command.id)
            if not held:
                del self._at_nt[oid]
        order = self.kernel.cache.order(cid)
        if order is None:
            log.error("MODIFY_UNKNOWN node=%s %s dropped", self.guard.node, cid)
            return
        unrouted = self._unrouted(command)
        if unrouted is not None:
            self._record_block(oid, unrouted)
        elif oid in self._rep and not order.is_closed and _reduces_only(order, command):
            self._lower_leg(order, command)
            return
        d = self._check_replace(order, command) if unrouted is None else unrouted
        if d.accepted:
            self.passed += 1
            self._watch_client(command)
            try:
                self._inner(command)
            except Exception as exc:  # never sent: give back the amend's larger reservation
                why = f"the execution client raised {exc!r}: the amend was never sent"
                self._amend_undone(oid, order, Decision(False, _NOT_SENT, why), "not_sent")
            return
        self.denied += 1
        self._refuse_modify(order, d)

    def _lower_leg(self, order: NtOrder, command: ModifyOrder) -> None:
        """An amend that only lowers a contingent leg's quantity: the stop direction, passed
        as a cancel is, in any state.

        The group's working quantity is its open legs' largest leaves, so lowering one leg
        can only lower it; but the Guard holds the group at one leg's price, so a replace
        check of another leg would take that leg's own price for a move and refuse it while
        HALTED or REDUCING (a bracket's take-profit could not be cut during a kill). The
        venue's `OrderUpdated` then restates the group to its legs' largest leaves."""
        oid = order.client_order_id.value
        self.passed += 1
        try:
            self._inner(command)
        except Exception as exc:  # never sent: nothing was reserved for it
            why = f"the execution client raised {exc!r}: the amend was never sent"
            log.error("NOT_SENT node=%s ModifyOrder for %s: %s", self.guard.node, oid, why)
            self.guard.note("not_sent", order_id=oid, reason=_NOT_SENT.value, error=why[:400])
            self._refuse_modify(order, Decision(False, _NOT_SENT, why))

    def _refuse_modify(self, order: NtOrder, d: Decision) -> None:
        """NautilusTrader's own refusal of an amend: an `OrderModifyRejected`."""
        cid, oid = order.client_order_id, order.client_order_id.value
        ts = self.kernel.clock.timestamp_ns()
        refusal = OrderModifyRejected(
            trader_id=order.trader_id,
            strategy_id=order.strategy_id,
            instrument_id=order.instrument_id,
            client_order_id=cid,
            venue_order_id=order.venue_order_id,
            account_id=order.account_id,
            reason=_reason_text(d),
            event_id=UUID4(),
            ts_event=ts,
            ts_init=ts,
        )
        self._own_rejects.add(refusal.id)
        log.warning("ModifyOrder for %s DENIED by knightwatch: %s", oid, _reason_text(d))
        self.bus.send(PROCESS_ENDPOINT, refusal)

    def _check_replace(self, order: NtOrder, command: ModifyOrder) -> Decision:
        oid = order.client_order_id.value
        gid = self._gid_of(oid)
        try:
            inst = self._instrument(order.instrument_id)
            qty = command.quantity if command.quantity is not None else order.quantity
            total = inst.count(qty, "quantity")
            if oid in self._rep:
                # a contingent leg: the group's working order becomes the largest of this
                # leg's new leaves and its open siblings' leaves, on top of the group's fills
                leaves = max(total - inst.count(order.filled_qty, "filled_qty"), 0)
                total = (self.guard.filled(gid) or 0) + max(
                    leaves, *self._open_leaves(oid, inst, but=oid)
                )
            # a stop-market, market-if-touched or trailing-stop-market order has no limit
            # price to read: its amend is checked as it was submitted, without one
            price = command.price
            if price is None and order.has_price:
                price = order.price
            self._replaces += 1
            new = Order(
                # named from the NautilusTrader id, never the last amend's: a chain of
                # amends (a quote re-priced every tick) keeps the id within its length
                id=_amend_id(oid, self._replaces),
                strategy=order.strategy_id.value,
                symbol=inst.symbol,
                side=Side.BUY if order.side == OrderSide.BUY else Side.SELL,
                qty=total,
                price=inst.units.unit_price(price.as_double()) if price is not None else None,
            )
        except Exception as exc:  # fail closed
            d = Decision(False, RejectReason.INVALID_ORDER, f"amend could not be mapped: {exc}")
            self._record_block(oid, d)
            return d
        d = self.guard.check_replace(gid, new)
        if d.accepted:
            self._pending[oid] = _Amend(
                command.id, new.id, qty, command.price, command.trigger_price
            )
        return d

    def _check(self, order: NtOrder) -> Decision:
        try:
            o = self._to_guard(order)
        except Exception as exc:  # fail closed: an order that cannot be mapped is not sent
            why = (
                str(exc) if isinstance(exc, UnitError | InvalidOrder | AdapterError) else repr(exc)
            )
            d = Decision(False, RejectReason.INVALID_ORDER, why)
            self._record_block(order.client_order_id.value, d)
            return d
        if self.check_ns is None:
            return self.guard.check(o)
        t0 = time.perf_counter_ns()
        d = self.guard.check(o)
        self.check_ns.append(time.perf_counter_ns() - t0)
        return d

    def _to_guard(self, order: NtOrder) -> Order:
        if order.is_quote_quantity:
            raise UnitError(
                "quantity: quote-quantity orders are refused (their base size is only known "
                "after the ExecutionEngine converts them); submit a base quantity"
            )
        return self._as_guard(order, self._instrument(order.instrument_id))

    def _instrument(self, instrument_id: InstrumentId) -> _Instrument:
        inst = self._instruments.get(instrument_id)
        if inst is None:
            nt = self.kernel.cache.instrument(instrument_id)
            if nt is None:
                raise AdapterError(f"instrument: {instrument_id} is not in the cache")
            step = nt.size_increment
            if nt.is_inverse:
                # an inverse contract's notional is quantity x multiplier in the quote
                # currency whatever the price: quantity x price would misstate every limit
                raise AdapterError(
                    f"instrument: {instrument_id} is an inverse contract, refused (the Guard "
                    "counts notional as quantity x price; an inverse contract's is not)"
                )
            # a contract's quantity counts contracts, each worth `multiplier` of the underlying
            units = Units(step.as_decimal(), nt.multiplier.as_decimal())
            symbol = self._symbol_of(instrument_id)
            for other_id, other in self._instruments.items():
                if other.symbol == symbol and (
                    other.step_raw != int(step.raw) or other.units.multiplier != units.multiplier
                ):
                    # one symbol's quantities in two units: its position and order limits
                    # would add 0.001s to 0.000001s as the same thing
                    raise AdapterError(
                        f"symbol_of: {instrument_id} (size increment {step}) and {other_id} "
                        f"(size increment {other.units.step}, multiplier "
                        f"{other.units.multiplier}) both map to symbol {symbol!r}; the Guard "
                        "counts a symbol in one size increment and multiplier"
                    )
            inst = self._instruments[instrument_id] = _Instrument(symbol, units, int(step.raw))
        return inst

    def _deny(self, order: NtOrder, d: Decision) -> None:
        """NautilusTrader's own denial: an `OrderDenied` the strategy receives as usual."""
        log.warning(
            "SubmitOrder for %s DENIED by knightwatch: %s", order.client_order_id, _reason_text(d)
        )
        if order.status not in (OrderStatus.INITIALIZED, OrderStatus.RELEASED):
            return
        cache = self.kernel.cache
        if not cache.order_exists(order.client_order_id):
            cache.add_order(order)
        self.bus.send(
            PROCESS_ENDPOINT,
            OrderDenied(
                trader_id=order.trader_id,
                strategy_id=order.strategy_id,
                instrument_id=order.instrument_id,
                client_order_id=order.client_order_id,
                reason=_reason_text(d),
                event_id=UUID4(),
                ts_init=self.kernel.clock.timestamp_ns(),
            ),
        )

    def _watch_client(self, command: SubmitOrder | SubmitOrderList | ModifyOrder) -> None:
        """Follow the sends of the live execution client `command` goes to (once per client).

        A live node's ExecutionEngine hands a command to its client from a queue of its own,
        and a `LiveExecutionClient` sends it from a task of its own (`_submit_order`,
        `_submit_order_list`, `_modify_order`), whose exception NautilusTrader only logs: it
        never comes back through `execute`, and an order the client raised on before sending
        stayed counted working for good, an amend's larger reservation kept until the order
        ended. Those coroutines of the client are wrapped so that their failure reaches
        `_not_sent` (`later`) or `_amend_failed`. A backtest's client sends within the call."""
        engine = self.kernel.exec_engine
        client = _clients_of(engine).get(
            self._client_for(command.client_id, command.instrument_id.venue)
        )
        if not isinstance(client, LiveExecutionClient) or client.id in self._watched:
            return
        self._watched.add(client.id)
        live: Any = client  # its methods replaced on this one instance
        live._submit_order = self._failures_of(live._submit_order, lambda c: [c.order])
        live._submit_order_list = self._failures_of(
            live._submit_order_list, lambda c: list(c.order_list.orders)
        )
        live._modify_order = self._amend_failures_of(live._modify_order, live)

    def _amend_failures_of(self, send: Callable[[Any], Any], client: Any) -> Callable[[Any], Any]:
        """`send` (`client`'s `_modify_order`), with its failure handed to `_amend_failed`
        and raised on to NautilusTrader as before (it logs it). Whether the client yielded
        to the event loop before it raised is noted (a callback queued as it starts runs at
        its first wait, before it resumes): a client sends by awaiting its connection, so
        one that raised before its first wait never sent the amend. An amend that went out
        is followed until the venue answers it (`_follow_amend`)."""

        async def watched(command: Any) -> None:
            waited: list[bool] = []
            mark = asyncio.get_running_loop().call_soon(waited.append, True)
            try:
                await send(command)
            except Exception as exc:
                self._amend_failed(command, exc, sent=bool(waited))
                raise
            finally:
                mark.cancel()
                self._follow_amend(client, command)

        return watched

    def _amend_failed(self, command: ModifyOrder, exc: Exception, *, sent: bool) -> None:
        """A live client raised on an amend the Guard accepted. One it raised on before its
        first wait never left: its larger reservation is given back (`on_replace_reject`,
        recorded `not_sent`) and the strategy gets `OrderModifyRejected`, as when the call
        raises in a backtest (`_modify`). One it raised on after it waited (a timeout, a
        connection lost mid-request) may be at the venue: it stays reserved (the safe side),
        logged in doubt, until the venue answers, the order ends, or a read-back of the
        order settles it (`_follow_amend`)."""
        if not self._awaits(command):
            return  # answered, ended, or an amend that reserved nothing (a leg lowered)
        if sent:
            log.error(
                "NOT_SENT_IN_DOUBT node=%s ModifyOrder for %s: the client raised %r after it "
                "went out; the amend stays reserved until the venue answers or it is read back",
                self.guard.node,
                command.client_order_id.value,
                exc,
            )
            return
        why = f"the execution client raised {exc!r}: the amend was never sent"
        cid = command.client_order_id
        self._amend_undone(
            cid.value, self.kernel.cache.order(cid), Decision(False, _NOT_SENT, why), "not_sent"
        )

    def _awaits(self, command: ModifyOrder) -> bool:
        """Whether `command` is the amend the Guard holds reserved for its order, unanswered."""
        oid = command.client_order_id.value
        amend = self._pending.get(oid)
        return amend is not None and amend.command_id == command.id and oid in self._live

    def _amend_undone(self, oid: str, order: NtOrder | None, d: Decision, kind: str) -> None:
        """An amend the Guard accepted is not at the venue: its larger reservation is given
        back, the refusal recorded (`kind`), and the strategy gets `OrderModifyRejected`."""
        log.error("%s node=%s ModifyOrder for %s: %s", kind.upper(), self.guard.node, oid, d.detail)
        self._drop_amend(oid)
        self.guard.note(kind, order_id=oid, reason=d.reason.value, error=d.detail[:400])
        if order is not None and not order.is_closed:
            self._refuse_modify(order, d)

    def _follow_amend(self, client: Any, command: ModifyOrder) -> None:
        """Read the order back from the venue (`_read_back_amend`) if `client` has sent
        `command` and the venue has not answered it yet."""
        if not self._awaits(command):
            return
        self._read_back(self._read_back_amend(client, command), "knightwatch-amend-read-back")

    def _read_back(self, read: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `read` (a read-back of an order in doubt) on the node's loop, held in `_reads`
        until it ends, so that `uninstall` can stop it. Raises `RuntimeError` off the loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            read.close()  # never started: not left un-awaited
            raise
        task = loop.create_task(read, name=name)
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)
        return task

    async def _read_back_amend(self, client: Any, command: ModifyOrder) -> None:
        """An amend the venue has not answered: after `amend_read_back_s`, and again after
        each wait twice the last (at most `_AMEND_READ_MAX_S`, `_AMEND_READS` reads in all),
        the order is read from the venue until the read settles it (`_settle_amend`) or the
        venue answers. A read that fails, finds nothing, or shows neither the amend nor the
        order as it was, keeps the larger reservation (the safe side); so does the last."""
        oid = command.client_order_id.value
        delay_s = self.amend_read_back_s
        for n in range(1, _AMEND_READS + 1):
            await asyncio.sleep(delay_s)
            if not self._awaits(command):
                return
            why = await self._settle_amend(client, command)
            if why is None:
                return
            log.warning(
                "AMEND_IN_DOUBT node=%s ModifyOrder for %s unanswered, read %d of %d: %s; the "
                "larger reservation stays",
                self.guard.node,
                oid,
                n,
                _AMEND_READS,
                why[:400],
            )
            delay_s = min(delay_s * 2, _AMEND_READ_MAX_S)
        log.error(
            "AMEND_UNRESOLVED node=%s ModifyOrder for %s: no read of the venue settled it; the "
            "larger reservation stays until the venue answers or the order ends",
            self.guard.node,
            oid,
        )
        self.guard.note("amend_unresolved", order_id=oid)

    async def _settle_amend(self, client: Any, command: ModifyOrder) -> str | None:
        """Read `command`'s order from the venue and settle the amend by what it holds: the
        amend (its `OrderUpdated` is processed, which commits it, as the venue's own would),
        or the order as it was (the reservation given back, `OrderModifyRejected`, recorded
        `amend_read_back`). None once settled (or answered meanwhile), else why not."""
        order = self.kernel.cache.order(command.client_order_id)
        if order is None or order.is_closed:
            return "the order is not open in the cache"
        report = await self._read_order(client, order)
        if not self._awaits(command) or order.is_closed:
            return None  # the venue answered (or the order ended) while it was read
        oid = order.client_order_id.value
        amend = self._pending[oid]
        if isinstance(report, str):
            return report
        if not report.is_open:
            return f"the venue reports it {report.order_status.name}"
        if amend.answered_by(report):
            self.guard.note("amend_read_back", order_id=oid, taken=True)
            ts = self.kernel.clock.timestamp_ns()
            self.bus.send(
                PROCESS_ENDPOINT,
                OrderUpdated(
                    trader_id=order.trader_id,
                    strategy_id=order.strategy_id,
                    instrument_id=order.instrument_id,
                    client_order_id=order.client_order_id,
                    venue_order_id=report.venue_order_id,
                    account_id=order.account_id,
                    quantity=report.quantity,
                    price=report.price,
                    trigger_price=report.trigger_price,
                    event_id=UUID4(),
                    ts_event=report.ts_last,
                    ts_init=ts,
                ),
            )
            return None
        if amend.left_out_of(order, report):
            why = (
                f"the venue never answered the amend; read back, it holds {report.quantity} "
                f"at {report.price}: the amend was not taken"
            )
            d = Decision(False, RejectReason.VENUE_UNAVAILABLE, why)
            self._amend_undone(oid, order, d, "amend_read_back")
            return None
        return f"the venue holds {report.quantity} at {report.price}, neither the amend nor before"

    async def _read_order(self, client: Any, order: NtOrder) -> OrderStatusReport | str:
        """`order` as the venue holds it (`client.generate_order_status_report`, given at most
        `_AMEND_READ_TIMEOUT_S`), or why nothing could be read: the read-backs settle an order
        in doubt by what the venue shows, never by what NautilusTrader's cache assumes."""
        query = GenerateOrderStatusReport(
            instrument_id=order.instrument_id,
            client_order_id=order.client_order_id,
            venue_order_id=order.venue_order_id,
            command_id=UUID4(),
            ts_init=self.kernel.clock.timestamp_ns(),
        )
        try:
            report = await asyncio.wait_for(
                client.generate_order_status_report(query), _AMEND_READ_TIMEOUT_S
            )
        except Exception as exc:  # nothing read: the safe side
            return f"the read raised {exc!r}"
        if not isinstance(report, OrderStatusReport):
            return f"the venue reported no order ({report!r})"
        return report

    def _live_client(self, order: NtOrder) -> LiveExecutionClient | None:
        """The live execution client `order` was sent through, or None (a backtest's)."""
        engine = self.kernel.exec_engine
        cid = self.kernel.cache.client_id(order.client_order_id)
        client = _clients_of(engine).get(self._client_for(cid, order.instrument_id.venue))
        return client if isinstance(client, LiveExecutionClient) else None

    def _confirm_cancel(self, client: LiveExecutionClient, order: NtOrder) -> None:
        """An `OrderCanceled` NautilusTrader made up itself (`reconciliation`: its in-flight
        check gives up on a cancel or amend the venue never answered and resolves the order
        CANCELED) may end an order still working at the venue (a kill's cancel lost on the
        way). The Guard keeps it counted working and reads it back (`_read_back_cancel`)."""
        oid = order.client_order_id.value
        log.error(
            "CANCEL_UNCONFIRMED node=%s %s: NautilusTrader resolved it CANCELED without the "
            "venue's answer; it stays counted working until the venue is read",
            self.guard.node,
            oid,
        )
        self.guard.note("cancel_unconfirmed", order_id=oid)
        read = self._read_back(
            self._read_back_cancel(client, order), "knightwatch-cancel-read-back"
        )
        self._unconfirmed[oid] = (client, read)

    async def _read_back_cancel(self, client: LiveExecutionClient, order: NtOrder) -> None:
        """Read `order` from the venue until it shows it ended with no fill the Guard has not
        booked, then end it in the Guard (recorded `cancel_read_back`). Until then it stays
        counted working (the safe side); while the node is HALTED each read that finds it
        not ended sends the kill's cancel again, for as long as it takes (each wait twice
        the last, `_KILL_RETRY_FIRST_S` to `_KILL_RETRY_MAX_S`); otherwise after
        `_AMEND_READS` reads it is left counted (`CANCEL_UNRESOLVED`) until an event ends it
        or a kill reads (and cancels) it again (`_cancel_unconfirmed`)."""
        oid = order.client_order_id.value
        delay_s = _KILL_RETRY_FIRST_S
        reads = 0
        while True:
            report = await self._read_order(client, order)
            if oid not in self._live:
                return  # the venue's own answer ended it meanwhile
            if (
                not isinstance(report, str)
                and not report.is_open
                and report.filled_qty == order.filled_qty
            ):
                log.warning(
                    "CANCEL_READ_BACK node=%s %s: the venue shows it %s",
                    self.guard.node,
                    oid,
                    report.order_status.name,
                )
                self.guard.note("cancel_read_back", order_id=oid, status=report.order_status.name)
                self._end(oid, order.instrument_id, self.guard.on_cancel)
                return
            if isinstance(report, str):
                why = report
            else:
                why = f"the venue shows it {report.order_status.name}, {report.filled_qty} filled"
            reads += 1
            halted = self.guard.node_state() is TradingState.HALTED
            if not halted and reads >= _AMEND_READS:
                log.error(
                    "CANCEL_UNRESOLVED node=%s %s: %s; it stays counted working",
                    self.guard.node,
                    oid,
                    why[:400],
                )
                self.guard.note("cancel_unresolved", order_id=oid)
                return
            log.warning(
                "CANCEL_IN_DOUBT node=%s %s, read %d: %s; it stays counted working%s",
                self.guard.node,
                oid,
                reads,
                why[:400],
                ", the kill's cancel sent again" if halted else "",
            )
            if halted:
                self._cancel_one(order)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, _KILL_RETRY_MAX_S)

    def _failures_of(
        self, send: Callable[[Any], Any], orders_of: Callable[[Any], list[NtOrder]]
    ) -> Callable[[Any], Any]:
        """`send` (a live client's coroutine), with its failure handed to `_not_sent` and
        raised on to NautilusTrader as before (it logs it)."""

        async def watched(command: Any) -> None:
            try:
                await send(command)
            except Exception as exc:
                self._not_sent(orders_of(command), exc, later=True)
                raise

        return watched

    def _not_sent(self, orders: list[NtOrder], exc: Exception, *, later: bool = False) -> None:
        """The ExecutionEngine or its client raised on a command the Guard accepted (a client
        that lost its connection): the orders were never sent. Each is released (`on_reject`,
        not a cancel), recorded, and refused to the strategy as NautilusTrader would:
        `OrderDenied`. One the client had marked submitted (it may have been sent before
        the client raised) or that reached the venue stays counted, logged as in doubt.

        `later`: the client raised from its own task on a live node (`_watch_client`). The
        order's status read here may not yet hold an event the client queued before it
        raised (an `OrderSubmitted`), so it is not released here: the `OrderDenied`, queued
        behind that event, releases it when NautilusTrader applies it (`_apply_event`), and
        is refused as an invalid transition, leaving the order counted, if it was sent."""
        why = f"the execution client raised {exc!r}: never sent"
        d = Decision(False, _NOT_SENT, why)
        log.error("NOT_SENT node=%s %d order(s): %s", self.guard.node, len(orders), why)
        for order in orders:
            oid = order.client_order_id.value
            if oid not in self._live:
                continue
            if order.status not in _UNSENT:
                log.error(
                    "NOT_SENT_IN_DOUBT node=%s order %s is %s: it stays counted working",
                    self.guard.node,
                    oid,
                    order.status.name,
                )
                continue
            if not later:
                del self._live[oid]
                self._at_nt.pop(oid, None)
                self._drop_amend(oid)
                gid = self._close(oid, order.instrument_id)
                if gid is not None:
                    self.guard.on_reject(gid)
            self.guard.note("not_sent", order_id=oid, reason=d.reason.value, error=why[:400])
            self._deny(order, d)

    def _record_block(self, order_id: str, d: Decision) -> None:
        """A refusal made before the Guard could see an order, counted and recorded alike."""
        self.guard.refuse(Unmapped(order_id), d)

    # ------------------------------------------------------------------ events

    def _on_order_event(self, event: Any) -> None:
        try:
            self._apply_event(event)
        except Exception as exc:  # never break NautilusTrader's event flow; stop trading instead
            self._lost(f"{type(event).__name__} could not be applied: {exc!r}")

    def _apply_event(self, event: Any) -> None:
        if isinstance(event, OrderFilled):
            self._on_fill(event)
            return
        oid = event.client_order_id.value
        if isinstance(event, OrderCancelRejected):
            self._cancel_rejected(oid, event.reason)
            return
        if isinstance(event, OrderModifyRejected):
            self._modify_rejected(oid, event)
            return
        if oid not in self._live:
            if isinstance(event, OrderAccepted) and self.started:
                self._unchecked(oid)
            # before the start-up (`take_over`), the reconciliation's: counted from the cache
            return
        guard = self.guard
        if isinstance(event, OrderAccepted):
            if guard.node_state() is TradingState.HALTED:
                self._rested_under_kill(oid)
            return
        if isinstance(event, OrderUpdated):
            inst = self._instrument(event.instrument_id)
            leaves = self._leaves(oid, inst)
            amend = self._pending.get(oid)
            if amend is not None and amend.answered_by(event):
                del self._pending[oid]  # the venue took the amend: commit it
                guard.on_replace_ack(amend.new_id, remaining=leaves)
                self._gid[self._rep.get(oid, oid)] = amend.new_id
                return
            # Not the amend's answer: the venue changed the order itself (a trailing stop
            # moved, a reduce-only or contingent order resized). The working quantity
            # follows what the venue holds now; a pending amend still awaits its answer.
            gid = self._gid_of(oid)
            if leaves is not None and guard.remaining(gid) not in (None, leaves):
                guard.on_restate(gid, leaves)
            return
        if not isinstance(event, OrderCanceled | OrderExpired | OrderRejected | OrderDenied):
            return
        order = self.kernel.cache.order(event.client_order_id)
        if order is not None and not order.is_closed:
            # NautilusTrader publishes an event its order refused (an invalid transition)
            # all the same: a strategy's denial of a second order under a live order's id,
            # a venue's reject of an order already partly filled. The order is still open,
            # so it can still execute: it stays counted working
            log.warning(
                "EVENT_NOT_APPLIED node=%s %s for %s, which is %s: it stays counted working",
                self.guard.node,
                type(event).__name__,
                oid,
                order.status.name,
            )
            guard.note(
                "event_not_applied",
                order_id=oid,
                event=type(event).__name__,
                status=order.status.name,
            )
            return
        if (
            isinstance(event, OrderCanceled)
            and event.reconciliation
            and order is not None
            and (client := self._live_client(order)) is not None
        ):
            self._confirm_cancel(client, order)
            return
        if isinstance(event, OrderCanceled):
            self._end(oid, event.instrument_id, guard.on_cancel)
        elif isinstance(event, OrderExpired):
            self._end(oid, event.instrument_id, guard.on_expire)
        else:  # the venue, or the ExecutionEngine after the Guard, refused it
            self._end(oid, event.instrument_id, guard.on_reject)

    def _end(self, oid: str, instrument_id: InstrumentId, end: Callable[[str], Any]) -> None:
        """`oid` ended: no longer followed, and `end` (the Guard's `on_cancel`, `on_expire`
        or `on_reject`) given its Guard id, unless a contingent sibling still works."""
        del self._live[oid]
        self._unconfirmed.pop(oid, None)
        self._at_nt.pop(oid, None)
        self._drop_amend(oid)
        ended = self._close(oid, instrument_id)
        if ended is not None:  # else a contingent leg whose siblings are still working
            end(ended)

    def _modify_rejected(self, oid: str, event: OrderModifyRejected) -> None:
        """An amend refused: the adapter's own refusal (nothing reserved), NautilusTrader's
        RiskEngine refusing one it holds (`_at_nt`: the amend awaiting the venue, if any,
        is still on its way and stays reserved), else the venue's answer to the amend
        awaiting it, which rolls back. A venue's answer while the RiskEngine holds another
        amend of the order is taken for the RiskEngine's: the reservation stays (the safe
        side) until the order ends, and the Guard refuses later amends of it meanwhile."""
        if event.id in self._own_rejects:
            self._own_rejects.discard(event.id)
            return
        held = self._at_nt.get(oid)
        if held:
            held.pop(0)  # the RiskEngine takes its commands in order
            if not held:
                del self._at_nt[oid]
            log.info("MODIFY_REFUSED_BEFORE_GUARD node=%s %s", self.guard.node, oid)
            return
        if oid in self._live and (amend := self._pending.pop(oid, None)) is not None:
            self.guard.on_replace_reject(amend.new_id)  # back to the original order

    def _rested_under_kill(self, oid: str) -> None:
        """An order the Guard counted came to rest at the venue while the node is HALTED: it was
        in flight when the kill swept, and the kill's cancel reached the venue before it (a
        venue answers cancels on another queue: `not found`). No change of state sweeps
        again under the same kill, so it is cancelled now, or it works through the kill. A
        cancel the kill's own overtook is a duplicate the venue refuses: harmless."""
        order = self.kernel.cache.order(ClientOrderId(oid))
        if order is None or order.is_closed:
            return
        log.warning(
            "KILL_CANCEL node=%s order %s came to rest under the kill: cancelling",
            self.guard.node,
            oid,
        )
        self.guard.note("rested_under_kill", order_id=oid)
        self._cancel_one(order)

    def _unchecked(self, oid: str, swept: bool | None = None) -> None:
        """The venue accepted (or filled) an order the Guard never checked: one sent past the
        bus (a direct `ExecutionEngine.execute`), an external order reconciled at start. It
        can execute, so the Guard counts its leaves as working from now on (`adopt`,
        recorded), and halts the node: its limits were never applied to it (`_lost`).
        `swept`: whether a kill had swept before the event (default: now)."""
        order = self.kernel.cache.order(ClientOrderId(oid))
        if order is None or order.is_closed:
            return
        inst = self._instrument(order.instrument_id)
        self.guard.adopt(self._as_guard(order, inst), inst.count(order.leaves_qty, "leaves_qty"))
        self._live[oid] = None
        if swept is None:
            swept = self._cancelled  # a kill swept already: this halt changes no state
        self._lost(
            f"order {oid} ({order.strategy_id}) is working at the venue but never passed the "
            "Guard: counted as working from now on"
        )
        if swept and self.guard.node_state() is TradingState.HALTED:
            # accepted after the kill's sweep: no change of state sweeps again, so it is
            # cancelled here, or it would rest at the venue through the kill
            self._cancel_one(order)

    def _on_fill(self, e: OrderFilled) -> None:
        oid = e.client_order_id.value
        if not self.started:
            # the reconciliation's fills at start-up: the cache's positions, which
            # `take_over` restores, are their sum; booked one by one they would count twice
            self.guard.note("start_up_fill", order_id=oid, trade_id=e.trade_id.value)
            return
        order = self.kernel.cache.order(e.client_order_id)
        if order is not None and _repeats_a_trade(order, e):
            # NautilusTrader publishes a fill its order refused as a duplicate (same trade
            # id) all the same: booked, it would count one execution twice, silently
            log.warning(
                "DUPLICATE_FILL node=%s order %s trade %s skipped", self.guard.node, oid, e.trade_id
            )
            self.guard.note("duplicate_fill", order_id=oid, trade_id=e.trade_id.value)
            return
        try:
            inst = self._instrument(e.instrument_id)
            fill = Fill(
                order_id=self._gid_of(oid),
                symbol=inst.symbol,
                side=Side.BUY if e.order_side == OrderSide.BUY else Side.SELL,
                qty=inst.count(e.last_qty, "last_qty"),
                price=inst.units.unit_price(e.last_px.as_double()),
            )
        except (UnitError, InvalidOrder, AdapterError) as exc:
            self._lost(f"fill {oid} could not be booked: {exc}")
            return
        # a fill of an order the Guard never counted (sent past the bus, or external) whose
        # acceptance it never heard (the venue's fill came first, or alone): what it has
        # left can execute too, so it is counted as an accepted one is (`_unchecked`)
        unchecked = (
            oid not in self._live
            and order is not None
            and not order.is_closed
            and not any(isinstance(ev, _END_EVENTS) for ev in order.events)
        )  # (one that ended here and a late fill reopened, NautilusTrader's "real world
        # possibility", was counted and ended: its fill halts as one for an ended order)
        swept = self._cancelled  # before this fill: its own halt's sweep took the order in
        self._fill(fill)
        if unchecked:
            self._unchecked(oid, swept)
        elif oid in self._live and (order is None or order.is_closed):
            del self._live[oid]
            self._at_nt.pop(oid, None)
            # an amend the fill overtook: the venue's answer ("not found") will find
            # no live order here, so what the amend reserved is given back now
            self._drop_amend(oid)
            self._close(oid, e.instrument_id)

    def _gid_of(self, oid: str) -> str:
        """The Guard's id for a NautilusTrader order: a contingent leg's is its group's."""
        rid = self._rep.get(oid, oid)
        return self._gid.get(rid, rid)

    def _open_leaves(self, oid: str, inst: _Instrument, but: str | None = None) -> list[int]:
        """The leaves of `oid`, or of every open leg of its contingent group (`but` left out),
        in whole size increments; an order the cache does not hold is left out."""
        rid = self._rep.get(oid)
        legs = [oid] if rid is None else [m for m in self._group[rid] if m in self._live]
        cache = self.kernel.cache
        return [
            inst.count(o.leaves_qty, "leaves_qty")
            for m in legs
            if m != but and (o := cache.order(ClientOrderId(m))) is not None
        ]

    def _leaves(self, oid: str, inst: _Instrument) -> int | None:
        """What the Guard should hold working for `oid`: its leaves, or for a contingent leg
        the largest leaves of its group's open legs (at most one of them executes)."""
        return max(self._open_leaves(oid, inst), default=None)

    def _close(self, oid: str, instrument_id: InstrumentId) -> str | None:
        """The Guard id to end now that order `oid` ended (no longer live), or None: a
        contingent leg whose group still has open legs, whose largest leaves the Guard's
        working quantity now follows."""
        rid = self._rep.get(oid)
        if rid is None:
            return self._gid.pop(oid, oid)
        gid = self._gid.get(rid, rid)
        legs = self._group[rid]
        live = [m for m in legs if m in self._live]
        if live:
            # down only: a leg that ended by filling leaves its siblings at their size until
            # the venue cancels (OCO) or resizes (OUO) them, the event after the fill; taken
            # up to them now, a smaller leg's fill would count as the group grown past its
            # check and halt the node. Their own events bring the group down (or end it).
            leaves = self._leaves(live[0], self._instrument(instrument_id))
            remaining = self.guard.remaining(gid)
            if leaves is not None and remaining is not None and leaves < remaining:
                self.guard.on_restate(gid, leaves)
            return None
        del self._group[rid]
        for m in legs:
            del self._rep[m]
        self._gid.pop(rid, None)
        return gid

    def _drop_amend(self, oid: str) -> None:
        """An order ended with its amend unanswered: roll the reservation back."""
        amend = self._pending.pop(oid, None)
        if amend is not None:
            self.guard.on_replace_reject(amend.new_id)

    def _lost(self, why: str) -> None:
        """The Guard's picture may no longer be the venue's: halt the node (and so NT)."""
        log.error("ADAPTER_EVENT_FAILED node=%s %s", self.guard.node, why)
        self.guard.flag_mismatch(why)

    def _on_quote(self, q: QuoteTick) -> None:
        """The midpoint of a two-sided quote; the live side of a one-sided one (a side with
        no price or no size is empty: averaging it in would halve the reference and open
        the price collar); nothing from an empty one."""
        inst = self._price_instrument(q.instrument_id)
        if inst is None:
            return
        bid = q.bid_price.as_double() if q.bid_size.as_double() > 0 else 0.0
        ask = q.ask_price.as_double() if q.ask_size.as_double() > 0 else 0.0
        if bid > 0 and ask > 0:
            self._price(inst, (bid + ask) / 2, q)
        elif bid > 0 or ask > 0:
            self._price(inst, max(bid, ask), q)

    def _on_trade(self, t: TradeTick) -> None:
        inst = self._price_instrument(t.instrument_id)
        if inst is not None:
            self._price(inst, t.price.as_double(), t)

    def _price(self, inst: _Instrument, price: float, tick: Any) -> None:
        """A reference price for the Guard. One it cannot take (zero or negative, both valid
        NautilusTrader prices) is skipped, never raised into NautilusTrader's data flow: the
        last good reference stays and ages into `stale_reference_price`."""
        try:
            self.guard.on_price(inst.symbol, inst.units.unit_price(price))
        except ValueError as exc:
            log.warning("reference price skipped (%s): %s", tick, exc)

    def _price_instrument(self, instrument_id: InstrumentId) -> _Instrument | None:
        """The instrument of a price, or None: without it no order can be checked either."""
        try:
            return self._instrument(instrument_id)
        except Exception:
            return None

    # ------------------------------------------------------------------ trading state

    def _on_state_change(self) -> None:
        """Mirror the Guard's strictest state into the RiskEngine; a node-wide HALT cancels."""
        risk = self.kernel.risk_engine
        target = _TO_NT[self.guard.worst_state()]
        current = risk.trading_state
        if target != current and (
            _SEVERITY[target] > _SEVERITY[current] or current == self._mirrored
        ):
            # loosen only what the Guard itself set; a state set by a person in
            # NautilusTrader stays until that person changes it
            risk.set_trading_state(target)
            self._mirrored = target
        if self.guard.node_state() is TradingState.HALTED:
            if not self._cancelled:
                self._cancelled = True
                self.cancel_open_orders()
                # a cancel that failed (its client down) is swept again at the next
                # change of state (an operator repeating the kill), and on a timer
                self._cancelled = not self._kill_failed
                if self._kill_failed:
                    self._sweep_later()
        else:
            self._cancelled = False
            self._kill_tries.clear()
            self._sweep_tries = 0

    def cancel_open_orders(self) -> int:
        """Cancel every order of every strategy that is not closed, and every open order no
        running strategy owns (`_cancel_orphans`); returns how many.

        Open and emulated orders go by one cancel-all per instrument and execution client.
        The others a cancel-all does not reach are cancelled one by one: an order in flight
        (sent, not yet acknowledged, which would come to rest at the venue after the kill)
        and one an execution algorithm holds (whose slices would resume with the fleet).
        An order sent to a named client (`client_id`) is cancelled through that client:
        a cancel naming none goes where its venue routes, another client or nowhere.
        Each cancel that raises is counted in `_kill_failed` and spares no other."""
        cache = self.kernel.cache
        n = 0
        self._kill_failed = 0
        for strategy in self.kernel.trader.strategies():
            sid = strategy.id
            swept = cache.orders_open(strategy_id=sid) + cache.orders_emulated(strategy_id=sid)
            targets = {(o.instrument_id, cache.client_id(o.client_order_id)) for o in swept}
            for instrument_id, cid in sorted(targets, key=str):
                self._kill_cancel(
                    partial(strategy.cancel_all_orders, client_id=cid),
                    instrument_id,
                    f"{sid} all via {cid}",
                )
            seen = {o.client_order_id for o in swept}
            rest = [
                o
                for o in cache.orders(strategy_id=sid)
                if not o.is_closed and o.client_order_id not in seen
            ]
            for order in rest:
                cid = cache.client_id(order.client_order_id)
                self._kill_cancel(
                    partial(strategy.cancel_order, client_id=cid),
                    order,
                    f"order {order.client_order_id} via {cid}",
                )
            n += len(swept) + len(rest)
        n += self._cancel_orphans()
        n += self._cancel_unconfirmed()
        log.warning("KILL_CANCEL node=%s cancelling %d order(s)", self.guard.node, n)
        return n

    def _cancel_unconfirmed(self) -> int:
        """The orders NautilusTrader resolved CANCELED that the venue never showed ended
        (`_unconfirmed`) are closed in the cache, so no sweep above reaches them: each is
        cancelled, and one whose read-back ended unresolved is read again (which cancels it
        after each read while HALTED); how many. A read-back that cannot start (no loop
        running here) counts as a failed cancel, so the sweep is tried again."""
        n = 0
        for oid, (client, read) in list(self._unconfirmed.items()):
            order = self.kernel.cache.order(ClientOrderId(oid))
            if order is None:
                continue
            n += 1
            self._cancel_one(order)
            if read.done():
                try:
                    self._confirm_cancel(client, order)
                except RuntimeError as exc:  # no running event loop: swept from elsewhere
                    self._kill_failed += 1
                    log.error(
                        "KILL_CANCEL_FAILED node=%s order %s: its read-back did not start: %r",
                        self.guard.node,
                        oid,
                        exc,
                    )
        return n

    def _kill_cancel(self, cancel: Callable[[Any], None], what: Any, label: str) -> None:
        """One cancel of a kill. Its failure (a client that lost its connection raises
        through the strategy's call) is logged and never spares the cancels after it: one
        venue down must not leave another venue's orders working through the kill."""
        try:
            cancel(what)
        except Exception as exc:
            self._kill_failed += 1
            log.error("KILL_CANCEL_FAILED node=%s %s %s: %r", self.guard.node, label, what, exc)

    def _cancel_orphans(self) -> int:
        """Cancel the orders at the venue that no running strategy owns (external orders
        reconciled at start: strategy `EXTERNAL`), which no strategy's cancel reaches: a
        `CancelOrder` each, straight to the ExecutionEngine (cancels always pass)."""
        owned = {strategy.id for strategy in self.kernel.trader.strategies()}
        cache = self.kernel.cache
        orphans = [
            o
            for o in cache.orders()
            if (o.is_open or o.is_inflight) and not o.is_emulated and o.strategy_id not in owned
        ]
        for order in orphans:
            self._cancel_one(order)
        return len(orphans)

    def _cancel_rejected(self, oid: str, reason: Any) -> None:
        """The venue rejected a cancel of `oid` (a rate limit, a transient error). While the
        node is HALTED and the order open, the kill's cancel is sent again later: the stop
        direction never gives up on an order that can still execute."""
        order = self.kernel.cache.order(ClientOrderId(oid))
        if self.guard.node_state() is not TradingState.HALTED or order is None or order.is_closed:
            return
        self.guard.note("kill_cancel_rejected", order_id=oid, reason=str(reason)[:400])
        self._retry_later(oid, f"rejected: {reason}")

    def _retry_later(self, oid: str, why: str) -> None:
        """Send the kill's cancel of `oid` again after the backoff of its failures so far, on
        NautilusTrader's clock (simulated time in a backtest)."""
        n = self._kill_tries[oid] = self._kill_tries.get(oid, 0) + 1
        delay_s = min(_KILL_RETRY_FIRST_S * 2 ** min(n - 1, 32), _KILL_RETRY_MAX_S)
        log.error(
            "KILL_CANCEL_RETRY node=%s order %s (%s): cancelling again in %.2f s (retry %d)",
            self.guard.node,
            oid,
            why[:200],
            delay_s,
            n,
        )
        self._alert(delay_s, partial(self._retry_cancel, oid))

    def _alert(self, delay_s: float, callback: Callable[[Any], None]) -> None:
        """Call `callback` in `delay_s`: on a live node after that long on the host's monotonic
        clock, on the node's loop (NautilusTrader's live clock is wall time, and a wall clock
        set back would hold a kill's retry for as long as the step); in a backtest at that
        simulated time, on NautilusTrader's clock."""
        kernel = self.kernel
        if "BACKTEST" not in str(kernel.environment).upper():
            try:
                loop = kernel.loop
            except RuntimeError:  # no loop of its own and none running: the node's clock
                loop = None
            if isinstance(loop, asyncio.AbstractEventLoop):
                loop.call_later(delay_s, callback, None)
                return
        clock = kernel.clock
        self._alerts += 1
        clock.set_time_alert_ns(
            f"knightwatch-kill-retry-{self._alerts}",
            clock.timestamp_ns() + int(delay_s * 1e9),
            callback,
        )

    def _retry_cancel(self, oid: str, _event: Any = None) -> None:
        """A retry's timer: cancel `oid` again if the node is still HALTED and it is open."""
        order = self.kernel.cache.order(ClientOrderId(oid))
        if self.guard.node_state() is not TradingState.HALTED or order is None or order.is_closed:
            self._kill_tries.pop(oid, None)
            return
        if not self._cancel_one(order):
            self._retry_later(oid, "the cancel raised")

    def _sweep_later(self) -> None:
        """Sweep again, after a backoff, a kill whose cancels raised (a client down)."""
        if self._sweep_due:
            return
        self._sweep_due = True
        self._sweep_tries += 1
        delay_s = min(_KILL_RETRY_FIRST_S * 2 ** min(self._sweep_tries - 1, 32), _KILL_RETRY_MAX_S)
        log.error(
            "KILL_CANCEL_RETRY node=%s %d cancel(s) raised: sweeping again in %.2f s",
            self.guard.node,
            self._kill_failed,
            delay_s,
        )
        self._alert(delay_s, self._sweep_again)

    def _sweep_again(self, _event: Any = None) -> None:
        self._sweep_due = False
        if self.guard.node_state() is not TradingState.HALTED:
            return
        self.cancel_open_orders()
        self._cancelled = not self._kill_failed
        if self._kill_failed:
            self._sweep_later()
        else:
            log.warning("KILL_CANCEL_DONE node=%s: the kill's sweep went through", self.guard.node)

    def _cancel_one(self, order: NtOrder) -> bool:
        """A kill's `CancelOrder` for one order, straight to the ExecutionEngine (cancels
        always pass) through the client it was sent to, whoever owns it; whether it was
        handed on. Its failure is counted in `_kill_failed`, logged, and never spares the
        cancels after it."""
        cid = order.client_order_id
        try:
            self._inner(
                CancelOrder(
                    trader_id=order.trader_id,
                    strategy_id=order.strategy_id,
                    instrument_id=order.instrument_id,
                    client_order_id=cid,
                    venue_order_id=order.venue_order_id,
                    command_id=UUID4(),
                    ts_init=self.kernel.clock.timestamp_ns(),
                    client_id=self.kernel.cache.client_id(cid),
                )
            )
        except Exception as exc:  # one order's failure never spares the others
            self._kill_failed += 1
            log.error("KILL_CANCEL_FAILED node=%s order %s: %r", self.guard.node, cid, exc)
            return False
        return True

    # ------------------------------------------------------------------ fleet

    async def start(self) -> None:
        """Join the fleet and arm (what `install` schedules when given a control plane)."""
        if self.member is None:
            raise AdapterError("start: this node was installed without a control_plane")
        await self.member.start(actor=f"nautilus:{self.guard.node}")
        self.verify()

    async def stop(self) -> None:
        if self.member is not None:
            await self.member.stop()


def _reduces_only(order: NtOrder, command: ModifyOrder) -> bool:
    """Whether an amend only lowers an order's quantity: a smaller, non-zero quantity, and the
    price and trigger price left as they are (not given, or given unchanged)."""
    qty = command.quantity
    if qty is None or qty.raw <= 0 or not qty < order.quantity:
        return False
    if command.price is not None and not (order.has_price and command.price == order.price):
        return False
    return command.trigger_price is None or (
        order.has_trigger_price and command.trigger_price == order.trigger_price
    )


def _contingent_groups(orders: list[NtOrder]) -> list[list[NtOrder]]:
    """The OCO/OUO groups of a list the Guard may count as their largest leg: two or more
    orders linked to each other only, all in the list, of one contingency, instrument,
    side and strategy, sent as they are (no execution algorithm, no emulation, not
    quote-sized). Any other contingent order counts on its own, the safe side."""
    by_id = {o.client_order_id: o for o in orders}
    seen: set[Any] = set()
    groups: list[list[NtOrder]] = []
    for o in orders:
        if o.contingency_type not in _CONTINGENT or o.client_order_id in seen:
            continue
        ids = set(o.linked_order_ids or ()) | {o.client_order_id}
        legs = [by_id.get(i) for i in ids]
        if len(ids) < 2 or ids & seen:
            continue
        if all(
            leg is not None
            and leg.contingency_type == o.contingency_type
            and leg.instrument_id == o.instrument_id
            and leg.side == o.side
            and leg.strategy_id == o.strategy_id
            and leg.exec_algorithm_id is None
            and not leg.is_emulated
            and not leg.is_quote_quantity
            and set(leg.linked_order_ids or ()) | {leg.client_order_id} == ids
            for leg in legs
        ):
            seen |= ids
            groups.append([leg for leg in orders if leg.client_order_id in ids])
    return groups


_END_EVENTS = (OrderCanceled, OrderExpired, OrderRejected, OrderDenied)
"""The events that end an order here (`_apply_event`)."""


def _repeats_a_trade(order: NtOrder, e: OrderFilled) -> bool:
    """Whether the order already holds another fill with `e`'s trade id: `e` repeats it.

    A fill with a new trade id is booked even when the order could not apply it (an
    overfill): NautilusTrader's portfolio books it, and the Guard halts on it."""
    return any(
        ev is not e and isinstance(ev, OrderFilled) and ev.trade_id == e.trade_id
        for ev in order.events
    )


def _amend_id(oid: str, n: int) -> str:
    """The Guard's id for the `n`-th amend (`n` unique per adapter) of NautilusTrader
    order `oid`: `oid~n`, with `oid` cut so that the whole fits the Guard's id length.
    Named in full, an amend of an order whose id is near that length was refused as an
    invalid id in every state, one that only lowers the order while halted too."""
    suffix = f"~{n}"
    return oid[: MAX_ID_LEN - len(suffix)] + suffix


def _instrument_value(instrument_id: InstrumentId) -> str:
    return str(instrument_id.value)


def _reason_text(d: Decision) -> str:
    return f"{REASON_PREFIX}{d.reason.value} {d.detail}"


def install(
    target: Any,
    *,
    limits: Limits | str | Path,
    node: str | None = None,
    control_plane: ControlPlaneSpec | None = None,
    key: str | Path | None = None,
    anchor: str | Path | None = None,
    clock: Clock | None = None,
    recorder: str | Path | None = None,
    policy: LeasePolicy | None = None,
    metrics_port: int | None = None,
    symbol_of: Callable[[InstrumentId], str] | None = None,
) -> NautilusGuard:
    """Put a knightwatch Guard in front of a BacktestEngine's or TradingNode's executions.

    Call it after adding strategies and before running. Without `control_plane`
    the Guard is armed at once. With one (a `ControlPlane`, or NATS URLs, and
    the node's enrolled `key` and the fleet's trust `anchor` files) the
    node joins the fleet on the running asyncio loop, or on the TradingNode's
    loop, and arms once joined; until then every order is denied
    (`not_armed`; `lease_expired` once joined if the plane goes away).
    `install(...).joined` is that task.
    """
    kernel = _kernel_of(target)
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
    if symbol_of is not None and not callable(symbol_of):
        raise AdapterError(
            f"symbol_of: must be a function of an InstrumentId (got {type(symbol_of).__name__})"
        )
    lim = limits_of(limits)
    node_id = node if node is not None else str(kernel.trader_id.value)
    backtest = "BACKTEST" in str(kernel.environment).upper()
    if clock is None:
        if control_plane is not None and backtest:
            raise AdapterError(
                "clock: a backtest's simulated clock cannot hold a fleet lease (real time); "
                "pass clock=SystemClock() to join a fleet from a BacktestEngine"
            )
        # a backtest's simulated time; live, the host's clocks: NautilusTrader's live clock
        # is wall time, and a wall clock set back (an NTP step) held every window with it
        clock = NautilusClock(kernel.clock) if backtest else SystemClock()
    member: FleetMember | None = None
    if control_plane is None:
        guard, _ = build_guard(lim, node=node_id, clock=clock, recorder=recorder, ship=False)
    else:
        signer, trust = identity_of(node_id, key, anchor)
        pol = policy if policy is not None else LeasePolicy()
        guard, shipper = build_guard(
            with_lease(lim, pol), node=node_id, clock=clock, recorder=recorder, ship=True
        )
        member = FleetMember(
            guard,
            plane_of(control_plane, node_id, signer),
            clock=clock,
            policy=pol,
            shipper=shipper,
            signer=signer,
            trust=trust,
            metrics_port=metrics_port,
            owns_plane=not hasattr(control_plane, "connect"),
        )
    ng = NautilusGuard(kernel, guard, symbol_of=symbol_of, member=member)
    ng.install()
    if member is None:
        guard.arm(f"nautilus:{node_id}")
    else:
        ng.joined = _schedule(kernel, ng.start())
    return ng


def _schedule(kernel: Any, coro: Any) -> asyncio.Task[None]:
    loop: asyncio.AbstractEventLoop | None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = getattr(kernel, "loop", None)
        if loop is None:
            coro.close()
            raise AdapterError(
                "control_plane: joining the fleet needs an asyncio loop; call install from a "
                "coroutine or on a TradingNode (which has its own loop)"
            ) from None
    task: asyncio.Task[None] = loop.create_task(coro, name="knightwatch-join")
    return task
