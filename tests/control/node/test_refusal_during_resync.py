"""A release refusal heard while a node re-reads the store keeps it out of its lease.

A node that lost admission (a disconnect) resyncs at its next heartbeat and then renews.
The fleet's target release (or an attestation refusal, a fence) may arrive while that
resync waits for the server: the refusal drops admission, which the node no longer held,
so it changed nothing, and the heartbeat renewed the lease when the resync ended (it had
judged the release before it). The node traded on a release it could not show until its
next heartbeat.
"""

from __future__ import annotations

from knightwatch.clock import SimClock
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import Bucket, Record
from knightwatch.control.plane.wire import TARGET_KEY, StateEntry
from knightwatch.decision import RejectReason

from ..fleet_fixtures import OrderIds, S, make_node


class _TargetArrivesWhileReading(MemoryControlPlane):
    """A node's plane that, while the node reads the kill state, hands it the fleet's new
    target release: on NATS the read waits for the server, and any message may be handled
    meanwhile."""

    def __init__(self, fabric: MemoryFabric) -> None:
        super().__init__(fabric)
        self.node: NodeRuntime | None = None
        self.armed = False

    async def states(self) -> dict[str, tuple[StateEntry | None, int]]:
        if self.armed and self.node is not None:
            self.armed = False
            await self.node._on_release(Record(Bucket.RELEASE, TARGET_KEY, b"{}", 1))
        return await super().states()


async def test_a_target_release_heard_during_the_resync_is_not_renewed_over() -> None:
    fabric = MemoryFabric()
    plane = _TargetArrivesWhileReading(fabric)
    await plane.connect()
    node = make_node("n1", plane, SimClock(1_000 * S))
    plane.node = node
    await node.join()
    try:
        ids = OrderIds("o")
        assert node.admitted and node.check(ids.order()).accepted
        await fabric.set_reachable(False)
        await fabric.set_reachable(True)
        assert not node.admitted
        plane.armed = True
        await node.heartbeat_once()
        assert not plane.armed, "the resync did not read the store"
        assert not node.release_admitted
        assert not node.admitted, "renewed over a release refusal heard during the resync"
        assert node.check(ids.order()).reason is RejectReason.LEASE_EXPIRED
        assert not node.status().admitted
    finally:
        await node.stop()
