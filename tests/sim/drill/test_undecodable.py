"""What the drill reads off the wire that does not decode is named or refused, never a crash.

Before, a stored admission verdict that did not decode ended the drill's wait for the
stale nodes' refusals in a msgspec traceback, and a venue reply that was no fill killed
the order's task (an unretrieved exception) instead of leaving the order working.
Both on a real nats-server, with the drill's own code reading them.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.connect import FleetError
from knightwatch.control.plane.nats import connect_as
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.site import Site
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Order, Side
from knightwatch.sim.drill.drill import _wait_refused
from knightwatch.sim.drill.flow import OrderFlow
from knightwatch.sim.drill.venue import SUBJECT_VENUE

NEST = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize("record", [b"\xff garbage", b'{"node": "n2", "x": ' + NEST + b"}"])
async def test_an_undecodable_admission_verdict_is_named_not_a_traceback(
    nats_server: Site, record: bytes
) -> None:
    plane = await nats_server.connect("admission")
    try:
        await plane.put_record(Bucket.ADMISSION, "n2", record)
        with pytest.raises(FleetError) as caught:
            await _wait_refused(plane, ["n2", "n3"], timeout_s=0.3)
    finally:
        await plane.close()
    message = str(caught.value)
    assert "\n" not in message
    assert "for: n3, n2 (admission verdict undecodable, cannot check its release" in message


@pytest.mark.parametrize(
    "reply",
    [
        b"\xff not a fill",
        b'{"order_id": "n1-1", "symbol": "AAPL", "side": "buy", "qty": 0, "price": 100.0}',
        b'{"order_id": "n1-1", "x": ' + NEST + b"}",
    ],
)
async def test_a_venue_reply_that_is_no_fill_leaves_the_order_working(
    nats_server: Site, reply: bytes
) -> None:
    policy = LeasePolicy()
    limits = msgspec.structs.replace(Limits(), lease_timeout_s=policy.lease_timeout_s)
    runtime = NodeRuntime(
        Guard(limits, node="n1", clock=SystemClock()),
        nats_server.plane("n1"),
        clock=SystemClock(),
        policy=policy,
        trust=nats_server.store(),
        signer=nats_server.signer("n1"),
    )
    url = nats_server.server.url
    venue = await connect_as(nats_server.signer("venue"), [url], name="bad-venue")
    nc = await connect_as(nats_server.signer("n1"), [url], name="flow-n1")
    answered = asyncio.Event()

    async def answer(msg: object) -> None:
        await msg.respond(reply)  # type: ignore[attr-defined]
        answered.set()

    try:
        await venue.subscribe(SUBJECT_VENUE, queue="venue", cb=answer)
        await venue.flush()
        # a reply is awaited as long as a loaded machine needs (the drill's 1 s is for speed)
        flow = OrderFlow(runtime, nc, rate_per_s=1.0, answer_timeout_s=30.0)
        for _ in range(50):  # "no responders" while the server has not yet seen the venue
            await flow._execute(Order("n1-1", "mm", "AAPL", Side.BUY, 100, 100.0))
            if answered.is_set():
                break
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
        await venue.close()
    assert answered.is_set()
    assert flow.filled == 0 and flow.unreadable == 1
