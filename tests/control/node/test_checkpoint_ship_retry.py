"""A checkpoint the control plane did not take is shipped again by the next round.

`Checkpointer.ship` promises its retry to the next round, but a round shipped only what
it had just signed: a node idle after an outage (nothing new recorded) kept its latest
checkpoint to itself, and the plane's copy, the one a rewrite of the node's disk cannot
reach, stayed an older head (or none) until something new was recorded.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from knightwatch.audit import AuditContext, FlightRecorder
from knightwatch.clock import SimClock
from knightwatch.control.node.checkpoints import Checkpointer
from knightwatch.control.node.runtime import stop_task
from knightwatch.control.plane.memory import MemoryFabric
from knightwatch.control.plane.protocol import Bucket
from knightwatch.release.dsse import Envelope

from ...identities import signer
from ..fleet_fixtures import plane_on
from ..helpers import eventually, until

CTX = AuditContext(node="n1")


async def test_a_checkpoint_not_taken_during_an_outage_is_shipped_when_the_plane_is_back(
    tmp_path: Path,
) -> None:
    fabric = MemoryFabric()
    plane = await plane_on(fabric)
    reader = await plane_on(fabric)
    path = tmp_path / "n1.jsonl"
    clock = SimClock(1_343_826_000 * 10**9)
    rec = FlightRecorder(path, clock=clock)
    cp = Checkpointer(rec, path, "n1", signer("n1").key, clock, plane)
    for i in range(3):
        rec.record_event(
            "halt", CTX, scope="node", key="n1", state="HALTED", code="halted",
            reason=f"r{i}", actor="ops",
        )  # fmt: skip
    await fabric.set_reachable(False)
    task = asyncio.create_task(cp.run(interval_s=0.02))
    try:
        await eventually(lambda: cp.latest is not None, what="the head signed")
        await asyncio.sleep(0.05)  # a round or two against the unreachable plane
        await fabric.set_reachable(True)

        async def shipped() -> bool:
            value, _ = await reader.get_record(Bucket.CHECKPOINTS, "n1")
            return value is not None and msgspec.json.decode(value, type=Envelope) == cp.latest

        await until(shipped, "the latest checkpoint in the control plane")
    finally:
        await stop_task(task)
        rec.close()
