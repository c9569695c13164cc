"""Lines the shipping buffer drops are said, not only counted.

The buffer drops its oldest lines when the fleet's audit stream is away or slower than the
flight recorder; before, the count sat in `ShippingSink.dropped`, which nothing read, and
the stream's copy had gaps nobody was told of."""

from __future__ import annotations

import pytest

from knightwatch.audit.recorder import FlightRecorder
from knightwatch.audit.sink import MemorySink
from knightwatch.clock import NS_PER_S, SimClock
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.node.shipping import ShippingSink
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.guard import Guard
from knightwatch.limits import Limits

from ...identities import signer, trust
from ..fleet_fixtures import POLICY, OrderIds


async def test_lines_dropped_while_the_stream_is_away_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fabric = MemoryFabric()
    clock = SimClock(1_000_000_000)
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    local = MemorySink()
    shipper = ShippingSink(local, max_buffered=4)
    guard = Guard(
        Limits(lease_timeout_s=POLICY.lease_timeout_s),
        node="n1",
        clock=clock,
        recorder=FlightRecorder(None, clock=clock, sink=shipper),
    )
    guard.on_price("AAPL", 100.0)
    guard.arm("test")
    node = NodeRuntime(
        guard, plane, clock=clock, policy=POLICY, shipper=shipper, trust=trust(),
        signer=signer("n1"),
    )  # fmt: skip
    await node.join()
    await node.publish_once()
    assert "AUDIT_DROPPED" not in caplog.text
    await fabric.set_reachable(False)
    ids = OrderIds("o")
    for _ in range(10):
        node.check(ids.order())
    guard.flush_records()
    dropped = shipper.dropped
    assert dropped > 0
    await node.publish_once()  # the stream is away: said all the same
    assert f"AUDIT_DROPPED node=n1 lines={dropped} total={dropped}" in caplog.text
    caplog.clear()
    node.check(ids.order())
    guard.flush_records()
    more = shipper.dropped
    assert more > dropped
    await node.publish_once()  # within 10 s of the last line: counted, not said yet
    assert "AUDIT_DROPPED" not in caplog.text
    clock.advance(10 * NS_PER_S)
    await node.publish_once()
    assert f"AUDIT_DROPPED node=n1 lines={more - dropped} total={more}" in caplog.text
    caplog.clear()
    clock.advance(10 * NS_PER_S)
    await node.publish_once()  # nothing new dropped: nothing said
    assert "AUDIT_DROPPED" not in caplog.text
