"""Flight-recorder shipping to the fleet stream, and lease policy validation."""

from __future__ import annotations

import pytest

from knightwatch.audit.recorder import FlightRecorder
from knightwatch.audit.sink import MemorySink
from knightwatch.clock import SimClock
from knightwatch.control.node.lease import LeaseError, LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.node.shipping import ShippingSink
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.guard import Guard
from knightwatch.limits import Limits

from ...identities import signer, trust
from ..fleet_fixtures import POLICY, OrderIds


async def test_decisions_reach_the_fleet_stream_in_order_and_survive_an_outage() -> None:
    fabric = MemoryFabric()
    clock = SimClock(1_000_000_000)
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    local = MemorySink()
    shipper = ShippingSink(local)
    guard = Guard(
        Limits(lease_timeout_s=POLICY.lease_timeout_s),
        node="n1",
        clock=clock,
        recorder=FlightRecorder(None, clock=clock, sink=shipper),
    )
    guard.on_price("AAPL", 100.0)
    guard.arm("test")
    node = NodeRuntime(
        guard,
        plane,
        clock=clock,
        policy=POLICY,
        shipper=shipper,
        trust=trust(),
        signer=signer(guard.node),
    )
    await node.start()
    ids = OrderIds("o")
    for _ in range(3):
        assert node.check(ids.order()).accepted
    await fabric.set_reachable(False)
    await node.publish_once()  # nothing lost while the stream is away
    await fabric.set_reachable(True)
    await node.publish_once()
    shipped = [env.record for _, env in await plane.audit()]
    assert shipped == local.lines
    assert sum(b'"kind":"decision"' in line for line in shipped) == 3
    assert [env.seq for _, env in await plane.audit()] == list(range(1, len(shipped) + 1))
    await node.stop()


def test_shipping_buffer_is_bounded_and_counts_drops() -> None:
    sink = ShippingSink(MemorySink(), max_buffered=3)
    sink.write(b"a\nb\n")
    sink.write(b"c\nd\ne\n")
    assert sink.dropped == 2
    assert sink.take(10) == [b"c", b"d", b"e"]
    sink.put_back([b"d", b"e"])
    assert sink.take(1) == [b"d"]


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"heartbeat_s": 0.001}, "heartbeat_s"),
        ({"lease_timeout_s": 0.2, "heartbeat_s": 0.1}, "lease_timeout_s"),
        ({"lease_timeout_s": 120.0}, "lease_timeout_s"),
    ],
)
def test_lease_policy_names_the_field(kw: dict[str, float], field: str) -> None:
    with pytest.raises(LeaseError, match=field):
        LeasePolicy(**kw)


def test_default_lease_is_well_under_a_second() -> None:
    p = LeasePolicy()
    assert p.lease_timeout_s < 1 and p.lease_timeout_s >= 3 * p.heartbeat_s
