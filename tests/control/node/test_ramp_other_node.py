"""Ramp records filed under another node's key are none of this node's business.

A valid record under `node.<other>` can only be that node's (a record stored under
any key but its own slot's is refused), so nothing stored there can ever scale this
node's limits. Before, an unreadable value there held this node at the tightest stage,
and the other node's genuine record, written over it, was skipped without clearing it:
this node traded at a tenth of its limits until it next resynced. Real nats-server
(authorization on), a node in-process.
"""

from __future__ import annotations

from knightwatch.clock import SystemClock
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import ENCODER, RampRecord, slot_of
from knightwatch.control.site import Site
from knightwatch.state import Scope

from ..helpers import eventually
from .test_nested_records import NESTED, close, joined


def _record(scope: Scope, key: str, status: str, fraction: float) -> RampRecord:
    now = SystemClock().time_ns()
    return RampRecord(
        scope, key, f"r-{key}", 1, (0.1, 0.5, 1.0), fraction, status, "alice", "y", now
    )


async def test_another_nodes_ramp_key_never_scales_this_node(site: Site) -> None:
    alice = await site.connect("alice")
    key = site.signer("alice").key
    other = slot_of(Scope.NODE, "n2")
    genuine = ENCODER.encode(_record(Scope.NODE, "n2", "ramping", 0.5).signed(key))
    try:
        node = await joined(site)
        try:
            for i, junk in enumerate((b"\xff not json", NESTED)):
                await alice.put_record(Bucket.RAMP, other, junk)
                await alice.put_record(Bucket.RAMP, other, genuine)  # n2's own record
                # a barrier: a signed "done" where nothing is held, taken as it is
                barrier = slot_of(Scope.STRATEGY, f"b{i}")
                done = _record(Scope.STRATEGY, f"b{i}", "done", 1.0).signed(key)
                await alice.put_record(Bucket.RAMP, barrier, ENCODER.encode(done))
                await eventually(lambda: barrier in node._ramps)  # noqa: B023
                assert other not in node._ramps
                assert node.ramp_fraction() == 1.0  # before: 0.1 until the next resync
                assert node.guard.limits.version == node.base_limits.version
        finally:
            await close(node)
        await alice.put_record(Bucket.RAMP, other, b"\xff not json")
        node = await joined(site)
        try:
            assert node.ramp_fraction() == 1.0  # before: 0.1, n2's key held n1 tight
        finally:
            await close(node)
        # n1's own key still holds it at the tightest stage for what it cannot read
        await alice.put_record(Bucket.RAMP, slot_of(Scope.NODE, "n1"), b"\xff not json")
        node = await joined(site)
        try:
            assert node.ramp_fraction() == 0.1
        finally:
            await close(node)
    finally:
        await alice.close()
