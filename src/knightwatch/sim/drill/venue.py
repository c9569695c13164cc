"""A simulated venue behind NATS subjects, for the live drill and `knightwatch up`.

Deliberately simple and real: a separate connection answers each order request
with a full fill at the order's price (or at the reference price for a market
order). What matters in a drill is that orders actually leave the node's
process, cross the network and come back as executions the Guard books.
"""

from __future__ import annotations

import logging

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from knightwatch.control.plane.authz import answerable
from knightwatch.inputs import UNDECODABLE
from knightwatch.order import Fill, Order

log = logging.getLogger(__name__)

SUBJECT_VENUE = "kw.venue.orders"
REFERENCE_PRICE = 100.0

_ORDER = msgspec.json.Decoder(Order)
_ENCODER = msgspec.json.Encoder()
FILL_DECODER = msgspec.json.Decoder(Fill)


class VenueResponder:
    """Fills every well-formed order; counts what it saw so a drill can report it."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.orders = 0
        self.by_node: dict[str, int] = {}
        self.rejected = 0

    async def start(self) -> None:
        await self.nc.subscribe(SUBJECT_VENUE, queue="venue", cb=self._on_order)
        await self.nc.flush()

    async def _on_order(self, msg: Msg) -> None:
        if not answerable(msg.reply):  # its answer would go where the sender chose
            self.rejected += 1
            log.warning("venue: an order asks for its fill on %r, not an inbox", msg.reply)
            return
        try:
            order = _ORDER.decode(msg.data)
        except (*UNDECODABLE, ValueError) as exc:
            self.rejected += 1
            log.warning("venue: rejecting malformed order: %s", exc)
            return
        self.orders += 1
        node = msg.headers.get("node", "?") if msg.headers else "?"
        self.by_node[node] = self.by_node.get(node, 0) + 1
        price = order.price if order.price is not None else REFERENCE_PRICE
        fill = Fill(order.id, order.symbol, order.side, order.qty, float(price))
        await msg.respond(_ENCODER.encode(fill))


def encode_order(order: Order) -> bytes:
    return _ENCODER.encode(order)
