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
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.plane.wire import AuditEnvelope
from knightwatch.guard import Guard
from knightwatch.limits import Limits

from ...identities import signer, trust
from ..fleet_fixtures import POLICY, OrderIds


async def shipping_node() -> tuple[NodeRuntime, MemoryControlPlane, MemoryFabric, MemorySink]:
    """Node n1 started on a memory plane, its recorder's lines kept locally and shipped."""
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
    return node, plane, fabric, local


async def test_decisions_reach_the_fleet_stream_in_order_and_survive_an_outage() -> None:
    node, plane, fabric, local = await shipping_node()
    ids = OrderIds("o")
    for _ in range(3):
        assert node.check(ids.order()).accepted
    await fabric.set_reachable(False)
    await node.publish_once()  # nothing lost while the stream is away
    await fabric.set_reachable(True)
    await node.publish_once()
    envelopes = [env for _, env in await plane.audit()]
    shipped = [line for env in envelopes for line in env.lines()]
    assert shipped == local.lines
    assert sum(b'"kind":"decision"' in line for line in shipped) == 3
    assert len(envelopes) == 1  # the tick's lines in one stream write
    assert {(env.node_id, env.instance, env.seq) for env in envelopes} == {("n1", node.instance, 1)}
    await node.stop()


async def test_an_envelope_whose_acknowledgement_was_lost_is_sent_again_and_lands_once() -> None:
    node, plane, _, local = await shipping_node()
    append = plane.append_audit
    lost: list[AuditEnvelope] = []

    async def lands_but_ack_lost(envelope: AuditEnvelope) -> int:
        seq = await append(envelope)
        if not lost:
            lost.append(envelope)
            raise ControlPlaneUnavailable("acknowledgement lost")
        return seq

    plane.append_audit = lands_but_ack_lost  # type: ignore[method-assign]
    ids = OrderIds("o")
    assert node.check(ids.order()).accepted
    await node.publish_once()  # landed, but the node cannot know
    assert node.check(ids.order()).accepted  # recorded after the lost acknowledgement
    await node.publish_once()
    envelopes = [env for _, env in await plane.audit()]
    assert envelopes[0] == lost[0]  # the retry was the same envelope: the stream kept one
    assert [env.seq for env in envelopes] == [1, 2]
    assert [line for env in envelopes for line in env.lines()] == local.lines
    assert sum(b'"kind":"decision"' in line for line in local.lines) == 2
    await node.stop()


def test_shipping_buffer_is_bounded_and_counts_drops() -> None:
    sink = ShippingSink(MemorySink(), max_buffered=3)
    sink.write(b"a\nb\n")
    sink.write(b"c\nd\ne\n")
    assert sink.dropped == 2
    assert sink.take(2, 1 << 20) == [b"c", b"d"]
    assert sink.take(10, 1 << 20) == [b"e"]
    assert sink.take(10, 1 << 20) == []


def test_shipping_takes_what_fits_in_the_byte_limit_and_always_one_line() -> None:
    sink = ShippingSink()
    sink.write(b"x" * 50 + b"\n" + b"y" * 10 + b"\n" + b"z\n")
    assert sink.take(10, 40) == [b"x" * 50]  # larger than the limit alone: sent alone
    assert sink.take(10, 13) == [b"y" * 10, b"z"]  # 11 + 2 bytes with the newlines


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
