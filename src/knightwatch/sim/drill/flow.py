"""The order flow of a drill node: a tiny market maker, and a runaway on command.

Normal flow alternates buys and sells across a few symbols at a steady rate,
the way the fleet's seven healthy servers did. On a runaway command it behaves
like Power Peg: buys without end at a high rate. Either way every order goes
through the node runtime (Guard) first and only accepted orders reach the
venue. The loop has hard bounds that do not depend on its inputs (principle
6 in docs/architecture.md): at most `max_orders` in its life and `burst` per tick.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg

from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.nats import NatsControlPlane, connect_as
from knightwatch.control.serve import Trader
from knightwatch.inputs import UNDECODABLE
from knightwatch.order import Order, Side
from knightwatch.sim.drill.venue import FILL_DECODER, REFERENCE_PRICE, SUBJECT_VENUE, encode_order

log = logging.getLogger(__name__)

SUBJECT_RUNAWAY = "kw.drill.runaway"
SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN")
_TICK_S = 0.01
_BURST = 50
MAX_FLOW_PER_S = _BURST / _TICK_S
"""The fastest normal flow a drill node sends: `_BURST` orders per tick (5,000 orders/s)."""


class OrderFlow:
    def __init__(
        self,
        runtime: NodeRuntime,
        nc: Client,
        rate_per_s: float,
        runaway_rate_per_s: float = 400.0,
        max_orders: int = 1_000_000,
        burst: int = _BURST,
        answer_timeout_s: float = 1.0,
    ) -> None:
        for name, rate in (("rate_per_s", rate_per_s), ("runaway_rate_per_s", runaway_rate_per_s)):
            if not 0 < rate <= MAX_FLOW_PER_S:  # NaN fails too
                # an infinite rate crashed the flow at its first tick (int(inf))
                raise ValueError(
                    f"{name}: must be > 0 and <= {MAX_FLOW_PER_S:g} orders/s (got {rate})"
                )
        self.runtime = runtime
        self.answer_timeout_s = answer_timeout_s
        """How long an order waits for the venue's reply before it stays working unanswered."""
        self.nc = nc
        self.rate = rate_per_s
        self.runaway_rate = runaway_rate_per_s
        self.max_orders = max_orders
        self.burst = burst
        self.runaway = False
        self.sent = 0
        self.accepted = 0
        self.filled = 0
        self.unreadable = 0
        """Venue replies that decoded to no fill (before: each one killed its task)."""
        self._n = 0
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        node = self.runtime.node_id
        await self.nc.subscribe(f"{SUBJECT_RUNAWAY}.{node}", cb=self._on_runaway)
        await self.nc.flush()

    async def _on_runaway(self, msg: Msg) -> None:
        log.critical("node %s: runaway injected by drill", self.runtime.node_id)
        self.runaway = True

    def _next(self) -> Order:
        self._n += 1
        symbol = SYMBOLS[self._n % len(SYMBOLS)]
        if self.runaway:
            side = Side.BUY
            strategy = "powerpeg"
        else:
            side = Side.BUY if (self._n // len(SYMBOLS)) % 2 == 0 else Side.SELL
            strategy = "mm"
        return Order(
            f"{self.runtime.node_id}-{self._n}", strategy, symbol, side, 100, REFERENCE_PRICE
        )

    async def run(self) -> None:
        """Send orders until cancelled or `max_orders` is reached."""
        credit = 0.0
        loop = asyncio.get_running_loop()
        last = loop.time()
        last_price = 0.0
        while self.sent < self.max_orders:
            await asyncio.sleep(_TICK_S)
            now = loop.time()
            if now - last_price >= 1.0:
                for symbol in SYMBOLS:
                    self.runtime.on_price(symbol, REFERENCE_PRICE)
                last_price = now
            credit += (now - last) * (self.runaway_rate if self.runaway else self.rate)
            last = now
            n = min(int(credit), self.burst, self.max_orders - self.sent)
            credit -= n
            for _ in range(n):
                self._send(self._next())

    def _send(self, order: Order) -> None:
        self.sent += 1
        if not self.runtime.check(order).accepted:
            return
        self.accepted += 1
        task = asyncio.create_task(self._execute(order))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _execute(self, order: Order) -> None:
        try:
            reply = await self.nc.request(
                SUBJECT_VENUE,
                encode_order(order),
                timeout=self.answer_timeout_s,
                headers={"node": self.runtime.node_id},
            )
        except Exception as exc:  # venue unreachable: the order stays working in the Guard
            log.warning(
                "node %s: order %s not acknowledged by venue: %s",
                self.runtime.node_id,
                order.id,
                exc,
            )
            return
        try:
            fill = FILL_DECODER.decode(reply.data)
        except (*UNDECODABLE, ValueError) as exc:  # a reply no fill can be: not booked
            self.unreadable += 1
            log.warning(
                "node %s: order %s: venue reply is no fill (%s); the order stays working",
                self.runtime.node_id,
                order.id,
                exc,
            )
            return
        self.runtime.on_fill(fill)
        self.filled += 1


def synthetic_flow(rate: float) -> Trader:
    """The drill's order flow at `rate` orders/s, as the `trader` a served node runs once armed."""

    async def trade(runtime: NodeRuntime, stop: asyncio.Event) -> None:
        plane = runtime.plane
        servers = plane.servers if isinstance(plane, NatsControlPlane) else []
        nc = await connect_as(runtime.signer, servers, name=f"flow-{runtime.node_id}")
        try:
            flow = OrderFlow(runtime, nc, rate)
            await flow.start()
            await flow.run()
        finally:
            await nc.close()

    return trade
