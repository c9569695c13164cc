"""A checkpoint waits for the disk off the node's event loop.

Every `checkpoint_s` (5 s) a node seals its flight recorder, fsyncs it and the
checkpoint file, and signs the head. The fsyncs ran on the event loop: on a slow or busy
disk (an fsync of a few hundred ms is common under writeback pressure) the loop stood
still, and with it the node's kills, confirmations and lease renewals. Now the seal stays
with the recorder's writer and the waits for the disk run on a thread.

The disk is made slow by a recorder whose `sync_written` (the fsync of what is written)
takes 0.4 s; the loop's longest stall while checkpoints run is measured with a 10 ms tick.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

from knightwatch.audit import AuditContext, FlightRecorder
from knightwatch.clock import SystemClock
from knightwatch.control.node.checkpoints import Checkpointer
from knightwatch.release.keys import SigningKey

CTX = AuditContext(node="n1")
SLOW_DISK_S = 0.4


class SlowDisk:
    """A real recorder on a disk that takes `SLOW_DISK_S` to confirm each fsync (a wrapper:
    the compiled build's recorder takes no subclass)."""

    def __init__(self, recorder: FlightRecorder) -> None:
        self.recorder = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self.recorder, name)

    def sync_written(self) -> bool:
        time.sleep(SLOW_DISK_S)
        return self.recorder.sync_written()


async def test_a_slow_fsync_never_stalls_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "n1.jsonl"
    clock = SystemClock()
    rec = FlightRecorder(path, clock=clock)
    cp = Checkpointer(cast(FlightRecorder, SlowDisk(rec)), path, "n1", SigningKey.generate(), clock)
    signer = asyncio.create_task(cp.run(interval_s=0.05))
    worst = 0.0
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.5
        n = 0
        while loop.time() < end:
            rec.record_event("note", CTX, n=n)  # something new to sign each round
            n += 1
            before = loop.time()
            await asyncio.sleep(0.01)
            worst = max(worst, loop.time() - before)
    finally:
        signer.cancel()
        await asyncio.gather(signer, return_exceptions=True)
    assert cp.latest is not None  # checkpoints were signed meanwhile
    assert worst < SLOW_DISK_S / 2, f"the loop stood still {worst:.3f} s"
    await cp.close()
    rec.close()
