"""Real QuickFIX sessions on 127.0.0.1: a simulated venue, the gateway and an OMS client.

Every rig picks free ports and keeps stores and logs under the test's
tmp_path, and stops every engine in a finalizer, even when the test fails.
The venue trades the simulator's books (symbols L000.. at 100, M000.. at 40).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from knightwatch.audit import FlightRecorder, MemorySink
from knightwatch.clock import SystemClock
from knightwatch.control.plane.server import free_port
from knightwatch.gateway.client import FixClient, Received
from knightwatch.gateway.config import (
    ClientSession,
    DropCopySession,
    GatewayConfig,
    VenueSession,
)
from knightwatch.gateway.gateway import Gateway
from knightwatch.gateway.venue import FixVenue
from knightwatch.guard import LockedGuard
from knightwatch.limits import Limits

SYMBOLS = ("L000", "L001", "M000")
LIMITS = Limits(
    version="gw-test",
    max_order_qty=5_000,
    max_order_notional=1_000_000.0,
    price_collar_pct=0.05,
    max_orders_per_s_node=10_000,
    max_orders_per_min_node=100_000,
    max_orders_per_s_strategy=10_000,
    max_orders_per_min_strategy=100_000,
    max_orders_per_s_symbol=10_000,
    max_orders_per_min_symbol=100_000,
    max_executions_per_window=None,
    require_registered_parent=False,
    max_cancel_to_fill_ratio=None,
    duplicate_id_window_s=3600.0,  # the raised node rates need a window the id set can hold
)


WAIT_S = 15.0
"""How long a test waits for what it expects over real sessions: generous, for a loaded
2-core CI machine (a wait that succeeds returns as soon as it does)."""


def eventually(pred: Callable[[], Any], timeout_s: float = WAIT_S, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Client(FixClient):
    """A `FixClient` whose waits default to `WAIT_S`: an answer the test expects may take
    seconds on a loaded machine; a wait that gets it returns at once."""

    def wait_logon(self, timeout_s: float = WAIT_S) -> None:
        super().wait_logon(timeout_s)

    def wait_for(
        self, pred: Callable[[Received], bool], timeout_s: float = WAIT_S, what: str = "a message"
    ) -> Received:
        return super().wait_for(pred, timeout_s, what)

    def wait_report(
        self, clordid: str, exec_type: str | None = None, timeout_s: float = WAIT_S
    ) -> Received:
        return super().wait_report(clordid, exec_type, timeout_s)


_RIGS = itertools.count(1)


class Rig:
    """venue <- gateway <- client(s), all QuickFIX, all on loopback.

    The gateway's and the venue's CompIDs carry the rig's number (QuickFIX keeps
    sessions in a process-wide registry until an engine is destroyed); the client
    CompIDs are the ones the tests name (OMS1, ...).
    """

    def __init__(
        self,
        root: Path,
        *,
        begin: str = "FIX.4.4",
        limits: Limits = LIMITS,
        clients: tuple[str, ...] = ("OMS1",),
        config: dict[str, Any] | None = None,
        venue: dict[str, Any] | None = None,
        arm: bool = True,
        drop_copy: bool = False,
        recorder_path: Path | None = None,
        gateway: dict[str, Any] | None = None,
        venue_session: dict[str, Any] | None = None,
    ) -> None:
        self.root = root
        self.begin = begin
        n = next(_RIGS)
        self.gw_comp, self.venue_comp = f"KW{n}", f"V{n}"
        self.venue_port = free_port()
        self.gw_port = free_port()
        fix42 = begin == "FIX.4.2"
        venue_opts: dict[str, Any] = {
            "sessions": [self.gw_comp, "DIRECT"],
            "store": "memory",
            "comp_id": self.venue_comp,
        }
        self.dc_comp = f"{self.gw_comp}-DC"
        if drop_copy:
            venue_opts["drop_copy"] = [self.dc_comp]
        venue_opts.update(venue or {})
        self.venue = FixVenue(
            root / "venue",
            port=self.venue_port,
            begin_string=begin,
            md_interval_s=0.5,
            log_messages=False,
            **venue_opts,
        )
        cfg: dict[str, Any] = {
            "listen_port": self.gw_port,
            "comp_id": self.gw_comp,
            "venue": VenueSession(
                **{
                    "port": self.venue_port,
                    "comp_id": self.venue_comp,
                    "market_data": SYMBOLS,
                    "mass_cancel": not fix42,
                    "mass_status": not fix42,
                    **(venue_session or {}),
                }
            ),
            "clients": tuple(ClientSession(comp_id=c) for c in clients),
            "begin_string": begin,
            "store": "memory",
            "assume_flat": True,
            "heartbeat_s": 5,
        }
        if drop_copy:
            cfg["drop_copy"] = DropCopySession(
                port=self.venue_port, comp_id=self.venue_comp, sender_comp_id=self.dc_comp
            )
        cfg.update(config or {})
        self.config = GatewayConfig(**cfg)
        self.recorder = (
            FlightRecorder(None, clock=SystemClock(), sink=MemorySink())
            if recorder_path is None
            else FlightRecorder(recorder_path, clock=SystemClock())
        )
        self.guard = LockedGuard(limits, node="gw", clock=SystemClock(), recorder=self.recorder)
        self.gateway = Gateway(
            self.config,
            self.guard,
            root / "gateway",
            log_messages=False,
            on_reconciled=(lambda: self.guard.arm("test")) if arm else None,
            **(gateway or {}),
        )
        self.clients: dict[str, FixClient] = {}
        self._started: list[Any] = []

    def start(self, connect: tuple[str, ...] | None = None) -> Rig:
        """Start venue and gateway, then log on the clients in `connect` (default: all)."""
        self.venue.start()
        self._started.append(self.venue)
        self.gateway.start()
        self._started.append(self.gateway)
        for comp in self.config.clients:
            if connect is None or comp.comp_id in connect:
                self.client(comp.comp_id)
        return self

    def client(self, comp: str, *, start: bool = True) -> FixClient:
        c = Client(
            self.root / f"client-{comp}",
            comp_id=comp,
            target=self.config.comp_id,
            port=self.gw_port,
            begin_string=self.begin,
        )
        self.clients[comp] = c
        if start:
            c.start()
            self._started.append(c)
            c.wait_logon()
        return c

    @property
    def oms(self) -> FixClient:
        return self.clients["OMS1"]

    def ready(self, symbols: tuple[str, ...] = SYMBOLS) -> Rig:
        """Venue logged on, reconciled, armed, and a reference price for each symbol."""
        eventually(lambda: self.gateway.reconciled.is_set(), what="reconciliation")
        eventually(lambda: self.guard.armed, what="armed")
        for s in symbols:
            eventually(lambda s=s: self.guard.exposure() is not None and self._has_price(s), what=s)
        return self

    def _has_price(self, symbol: str) -> bool:
        with self.guard.lock:
            book = self.guard._ledger.books.get(symbol)
            return book is not None and book.ref is not None

    def records(self) -> list[dict[str, Any]]:
        self.guard.flush_records()
        return [msgspec.json.decode(line) for line in self.recorder.lines]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["kind"] == kind]

    def stop(self) -> None:
        """Stop every engine at once (each takes up to a second to wind down).

        Never in the background while the next rig starts: QuickFIX closes sockets by
        descriptor number when it stops, and a descriptor reused meanwhile by a new
        engine would be closed under it.
        """
        parts, self._started = self._started, []
        threads = [threading.Thread(target=p.stop) for p in parts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=15)


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(**kw: Any) -> Rig:
        r = Rig(tmp_path / f"rig{len(rigs)}", **kw)
        rigs.append(r)
        return r

    try:
        yield make
    finally:
        for r in rigs:
            r.stop()


@pytest.fixture
def rig(rig_factory: Callable[..., Rig]) -> Rig:
    return rig_factory().start().ready()
