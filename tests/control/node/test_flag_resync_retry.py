"""A flag resync that fails after a reconnect is tried again, not left failed.

A node's flag state fails closed (every flag at its safe default, `state_unavailable`)
from a disconnect until it has read the flags bucket again. Before, that read was made
once, when the connection came back: if it failed (a timeout while a busy server served
the bucket to a reconnecting fleet), nothing read it again until the next disconnect,
and the node evaluated every flag at its safe default for as long as the connection
held (hours), while the rest of the fleet ran the flags' values. Now it is read again,
with a bounded back-off, until it succeeds or the connection drops.
"""

from __future__ import annotations

import pytest

from knightwatch.clock import SimClock
from knightwatch.control.node.flags import NodeFlags
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import Bucket, ControlPlaneUnavailable
from knightwatch.flags.state import StateUnavailable

from ..fleet_fixtures import S, make_node
from ..helpers import eventually


class _FlagsReadFails(MemoryControlPlane):
    """A node's plane whose next `failures` reads of the flags bucket time out."""

    def __init__(self, fabric: MemoryFabric) -> None:
        super().__init__(fabric)
        self.failures = 0
        self.reads = 0

    async def records(self, bucket: Bucket) -> dict[str, tuple[bytes, int]]:
        if bucket is Bucket.FLAGS:
            self.reads += 1
            if self.failures > 0:
                self.failures -= 1
                raise ControlPlaneUnavailable("records(flags): timed out")
        return await super().records(bucket)


@pytest.mark.parametrize("failures", [1, 3])
async def test_a_failed_flag_resync_is_tried_again_while_connected(failures: int) -> None:
    fabric = MemoryFabric()
    plane = _FlagsReadFails(fabric)
    await plane.connect()
    node = make_node("n1", plane, SimClock(1_000 * S))
    await node.join()
    flags = NodeFlags(node)
    await flags.start()
    try:
        assert flags.get("risk.quote_wide") is None  # in sync: no state, the safe default
        plane.failures = failures
        await fabric.set_reachable(False)
        await fabric.set_reachable(True)
        with pytest.raises(StateUnavailable):
            flags.get("risk.quote_wide")  # not read again yet: fails closed
        await eventually(lambda: plane.reads > failures + 1, timeout_s=10.0, what="a new read")

        def synced() -> bool:
            try:
                flags.get("risk.quote_wide")
            except StateUnavailable:
                return False
            return True

        await eventually(synced, timeout_s=10.0, what="the flag state read again")
        assert plane.failures == 0
    finally:
        await node.stop()
