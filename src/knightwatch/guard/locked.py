"""A Guard for processes that call it from several threads (a FIX engine's session threads).

The Guard itself is single-threaded by design: its hot path reads and writes
plain dicts and counters with no lock, which is what keeps an in-process check
in single-digit microseconds. A FIX gateway calls it from the engine's
acceptor and initiator threads and from the node runtime's event loop, so
`LockedGuard` takes one re-entrant lock around every public call. One lock,
not a queue: an uncontended lock costs well under a microsecond, a hand-off
to another thread costs tens (bench/gateway_bench.py measures both paths).

`lock` is public so a caller can make a sequence atomic (check an order and
register it in its own book before the next message can see either).

It wraps a Guard rather than subclassing it: the Guard may be compiled (mypyc,
`knightwatch.build`), and a compiled class takes no interpreted subclass. For
the type checker it is a Guard; at run time every public call takes the lock
and goes to the wrapped Guard, and attributes (limits, node, counters) are
read from it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from knightwatch.audit import FlightRecorder
from knightwatch.clock import Clock
from knightwatch.guard.engine import Guard
from knightwatch.guard.halts import Halt
from knightwatch.limits import Limits
from knightwatch.state import Scope

P = ParamSpec("P")
T = TypeVar("T")


if TYPE_CHECKING:
    _Base = Guard
else:
    _Base = object


def _locked(fn: Callable[Concatenate[Guard, P], T]) -> Callable[Concatenate[LockedGuard, P], T]:
    def run(self: LockedGuard, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self.lock:
            return fn(self._guard, *args, **kwargs)

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


class LockedGuard(_Base):
    """`Guard` with every public call under one re-entrant lock (`self.lock`)."""

    lock: threading.RLock

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        node: str = "node",
        clock: Clock | None = None,
        recorder: FlightRecorder | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self._guard = Guard(limits, node=node, clock=clock, recorder=recorder)

    def __getattr__(self, name: str) -> Any:
        # only for what the wrapper does not define: the Guard's attributes and properties
        return getattr(self._guard, name)

    def note(self, kind: str, **fields: str | int | float | bool | None) -> None:
        with self.lock:
            self._guard.note(kind, **fields)

    def listen_for_halts(self, on_halt: Callable[[Scope, str, Halt], None]) -> None:
        with self.lock:
            self._guard.listen_for_halts(on_halt)

    def latch(self, *args: Any, **kwargs: Any) -> Callable[[], None]:
        """`Guard.latch` under the lock, and the call it returns too: the node runtime calls
        that later from its event loop, while the FIX engine's threads check orders, and
        the halt's record would otherwise be written into the flight recorder's buffer at
        the same time as an order's (the recorder has one writer: the Guard's caller)."""
        with self.lock:
            report = self._guard.latch(*args, **kwargs)

        def locked_report() -> None:
            with self.lock:
                report()

        return locked_report

    def lots(self, symbol: str, qty: Decimal | int | str) -> int:
        return self._guard.lots(symbol, qty)

    def quantity(self, symbol: str, lots: int) -> Decimal:
        return self._guard.quantity(symbol, lots)

    check = _locked(Guard.check)
    check_replace = _locked(Guard.check_replace)
    remember_order_ids = _locked(Guard.remember_order_ids)
    on_replace_ack = _locked(Guard.on_replace_ack)
    on_replace_reject = _locked(Guard.on_replace_reject)
    on_fill = _locked(Guard.on_fill)
    on_external_fill = _locked(Guard.on_external_fill)
    on_cancel = _locked(Guard.on_cancel)
    on_cancel_request = _locked(Guard.on_cancel_request)
    on_reject = _locked(Guard.on_reject)
    on_expire = _locked(Guard.on_expire)
    on_restate = _locked(Guard.on_restate)
    on_bust = _locked(Guard.on_bust)
    on_correct = _locked(Guard.on_correct)
    on_price = _locked(Guard.on_price)
    arm = _locked(Guard.arm)
    disarm = _locked(Guard.disarm)
    renew_lease = _locked(Guard.renew_lease)
    expire_lease = _locked(Guard.expire_lease)
    halt = _locked(Guard.halt)
    resume = _locked(Guard.resume)
    trading_state = _locked(Guard.trading_state)
    halts = _locked(Guard.halts)
    latched = _locked(Guard.latched)
    register_parent = _locked(Guard.register_parent)
    set_context = _locked(Guard.set_context)
    set_limits = _locked(Guard.set_limits)
    start_session = _locked(Guard.start_session)
    remaining = _locked(Guard.remaining)
    filled = _locked(Guard.filled)
    flag_mismatch = _locked(Guard.flag_mismatch)
    refuse = _locked(Guard.refuse)
    adopt = _locked(Guard.adopt)
    restore_position = _locked(Guard.restore_position)
    parent_qty = _locked(Guard.parent_qty)
    parent_committed = _locked(Guard.parent_committed)
    position = _locked(Guard.position)
    working_qty = _locked(Guard.working_qty)
    pnl = _locked(Guard.pnl)
    exposure = _locked(Guard.exposure)
    customer_exposure = _locked(Guard.customer_exposure)
    customer_position = _locked(Guard.customer_position)
    flow = _locked(Guard.flow)
    cancels = _locked(Guard.cancels)
    counters = _locked(Guard.counters)
    flush_records = _locked(Guard.flush_records)
