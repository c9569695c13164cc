"""A QuickFIX order-entry client: what an OMS looks like to the gateway.

Used by the tests, `knightwatch drill --fix` and the benchmark, so all three
speak to the gateway through a real FIX session (logon, sequence numbers,
resends) rather than through function calls. Every message received is kept
as a `Received` (type, fields by tag, raw text) and can be waited for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knightwatch.gateway import fields as F
from knightwatch.gateway.config import initiator_settings
from knightwatch.gateway.engine import (
    GatewayError,
    Handler,
    application,
    fix,
    log_factory,
    settings,
    store_factory,
)


@dataclass(frozen=True)
class Received:
    """One application message the client got: type, fields by tag (last wins), raw text."""

    mtype: str
    fields: dict[int, str]
    raw: str
    at_ns: int = 0

    def get(self, tag: int, default: str = "") -> str:
        return self.fields.get(tag, default)


def parse(raw: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for part in raw.split("\x01"):
        if "=" in part:
            tag, value = part.split("=", 1)
            if tag.isdigit():
                out[int(tag)] = value
    return out


@dataclass
class _Waiters:
    cond: threading.Condition = field(default_factory=threading.Condition)


class FixClient(Handler):
    """One initiator session to `port`; `start`, `wait_logon`, send, `wait_for`, `stop`."""

    def __init__(
        self,
        state_dir: Path,
        *,
        comp_id: str,
        target: str,
        port: int,
        begin_string: str = "FIX.4.4",
        store: str = "memory",
        log_messages: bool = False,
        heartbeat_s: int = 30,
        on_message: Callable[[str, Any], None] | None = None,
    ) -> None:
        super().__init__()
        self.comp_id = comp_id
        self.begin = begin_string
        self.fix42 = begin_string == "FIX.4.2"
        self.received: list[Received] = []
        self._w = _Waiters()
        self._on_message = on_message
        self.logged_on = threading.Event()
        self.logons = 0
        self.logouts = 0
        self.sid = fix().SessionID(begin_string, comp_id, target)
        text = initiator_settings(
            state_dir,
            sessions=[(comp_id, target, "127.0.0.1", port)],
            begin_string=begin_string,
            heartbeat_s=heartbeat_s,
            store=store,
        )
        s = settings(text)
        self._initiator: Any = fix().SocketInitiator(
            application(self), store_factory(store, s), s, log_factory(log_messages, s)
        )

    # --- session -----------------------------------------------------------------
    def start(self) -> None:
        self._initiator.start()

    def stop(self) -> None:
        if self._initiator is not None:
            self._initiator.stop(True)
        self._initiator = None  # destroyed: its session leaves the process-wide registry

    def wait_logon(self, timeout_s: float = 10.0) -> None:
        if not self.logged_on.wait(timeout_s):
            raise GatewayError(f"{self.comp_id}: no logon within {timeout_s:g}s")

    def on_logon(self, sid: Any) -> None:
        self.logons += 1
        self.logged_on.set()

    def on_logout(self, sid: Any) -> None:
        self.logouts += 1
        self.logged_on.clear()

    def from_app(self, msg: Any, sid: Any) -> None:
        mtype = F.msg_type(msg)
        if self._on_message is not None:
            self._on_message(mtype, msg)
            return
        raw = msg.toString()
        got = Received(mtype, parse(raw), raw, time.monotonic_ns())
        with self._w.cond:
            self.received.append(got)
            self._w.cond.notify_all()

    def from_admin(self, msg: Any, sid: Any) -> None:
        if F.msg_type(msg) == F.SESSION_REJECT:
            raw = msg.toString()
            with self._w.cond:
                self.received.append(Received(F.SESSION_REJECT, parse(raw), raw))
                self._w.cond.notify_all()

    # --- waiting -------------------------------------------------------------------
    def wait_for(
        self, pred: Callable[[Received], bool], timeout_s: float = 5.0, what: str = "a message"
    ) -> Received:
        """The first message received (ever) matching `pred`; GatewayError on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._w.cond:
            while True:
                for r in self.received:
                    if pred(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [
                        (r.mtype, r.get(F.CL_ORD_ID), r.get(F.EXEC_TYPE)) for r in self.received
                    ]
                    raise GatewayError(
                        f"{self.comp_id}: no {what} within {timeout_s:g}s; got {kinds}"
                    )
                self._w.cond.wait(left)

    def reports(self, clordid: str) -> list[Received]:
        with self._w.cond:
            return [r for r in self.received if r.get(F.CL_ORD_ID) == clordid]

    def wait_report(
        self, clordid: str, exec_type: str | None = None, timeout_s: float = 5.0
    ) -> Received:
        def match(r: Received) -> bool:
            return (
                r.mtype == F.EXECUTION_REPORT
                and r.get(F.CL_ORD_ID) == clordid
                and (exec_type is None or r.get(F.EXEC_TYPE) == exec_type)
            )

        return self.wait_for(match, timeout_s, f"report {exec_type or '*'} for {clordid}")

    # --- sending -------------------------------------------------------------------
    def send(self, msg: Any) -> bool:
        return F.send(msg, self.sid)

    def order_message(
        self,
        clordid: str,
        symbol: str,
        side: str,
        qty: str | int,
        price: float | None = None,
        *,
        tif: str = "0",
        extra: list[tuple[int, str]] | None = None,
    ) -> Any:
        fields = [
            (F.CL_ORD_ID, clordid),
            (F.SYMBOL, symbol),
            (F.SIDE, side),
            (F.ORDER_QTY, str(qty)),
            (F.ORD_TYPE, "1" if price is None else "2"),
            (F.TIME_IN_FORCE, tif),
            (F.TRANSACT_TIME, F.now_utc()),
        ]
        if price is not None:
            fields.append((F.PRICE, f"{price:.2f}"))
        if self.fix42:
            fields.append((F.HANDL_INST, "1"))
        return F.message(F.NEW_ORDER, fields + (extra or []))

    def new_order(
        self,
        clordid: str,
        symbol: str,
        side: str,
        qty: str | int,
        price: float | None = None,
        *,
        tif: str = "0",
        extra: list[tuple[int, str]] | None = None,
    ) -> bool:
        return self.send(
            self.order_message(clordid, symbol, side, qty, price, tif=tif, extra=extra)
        )

    def cancel(self, clordid: str, orig: str, symbol: str, side: str, qty: str | int) -> bool:
        return self.send(
            F.message(
                F.CANCEL,
                [
                    (F.CL_ORD_ID, clordid),
                    (F.ORIG_CL_ORD_ID, orig),
                    (F.SYMBOL, symbol),
                    (F.SIDE, side),
                    (F.ORDER_QTY, str(qty)),
                    (F.TRANSACT_TIME, F.now_utc()),
                ],
            )
        )

    def replace(
        self, clordid: str, orig: str, symbol: str, side: str, qty: str | int, price: float
    ) -> bool:
        fields = [
            (F.CL_ORD_ID, clordid),
            (F.ORIG_CL_ORD_ID, orig),
            (F.SYMBOL, symbol),
            (F.SIDE, side),
            (F.ORDER_QTY, str(qty)),
            (F.ORD_TYPE, "2"),
            (F.PRICE, f"{price:.2f}"),
            (F.TRANSACT_TIME, F.now_utc()),
        ]
        if self.fix42:
            fields.append((F.HANDL_INST, "1"))
        return self.send(F.message(F.REPLACE, fields))

    def mass_cancel(self, clordid: str, symbol: str | None = None) -> bool:
        fields = [
            (F.CL_ORD_ID, clordid),
            (F.MASS_CANCEL_REQUEST_TYPE, "7" if symbol is None else "1"),
            (F.TRANSACT_TIME, F.now_utc()),
        ]
        if symbol is not None:
            fields.append((F.SYMBOL, symbol))
        return self.send(F.message(F.MASS_CANCEL, fields))
