"""A gateway node's own events are written under the Guard's lock.

A gateway calls its `LockedGuard` from the FIX engine's threads, and the flight recorder
has one writer at a time: the Guard's caller, under that lock. The node runtime wrote its
own events (a refused command, a flag state's refusal, `duplicate_node`) from the event
loop straight to the recorder, without the lock (`LockedGuard` hands its recorder out
bare): an event written while an engine thread wrote a decision broke the line or the
batch, and `knightwatch audit verify` reported the gateway's own lines as edited. Real
nats-server, real recorder on disk, a real engine thread.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path

from knightwatch.audit import verify_file
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.serve import serve_node
from knightwatch.control.site import Site
from knightwatch.guard.locked import LockedGuard
from knightwatch.order import Order, Side


async def test_events_the_runtime_records_while_an_engine_thread_trades_keep_the_chain(
    site: Site, tmp_path: Path
) -> None:
    (tmp_path / "state").mkdir()
    recorder = tmp_path / "n1.jsonl"
    checked = 0
    noted = 0

    async def trader(runtime: NodeRuntime, stop: asyncio.Event) -> None:
        nonlocal noted
        guard = runtime.guard
        guard.on_price("AAPL", 100.0)
        done = threading.Event()

        def engine() -> None:  # a FIX session thread: the Guard under its lock
            nonlocal checked
            while not done.is_set():
                guard.check(Order(f"o{checked}", "s1", "AAPL", Side.BUY, 1, 100.0, None))
                checked += 1

        thread = threading.Thread(target=engine)
        thread.start()
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 2.0
            while loop.time() < end:
                for _ in range(50):
                    runtime.record_event("operator_note", text="x" * 64, n=noted)
                    noted += 1
                await asyncio.sleep(0)
        finally:
            done.set()
            await asyncio.to_thread(thread.join)
        signal.raise_signal(signal.SIGTERM)
        await stop.wait()

    await serve_node(
        "n1",
        [site.url],
        tmp_path / "state",
        signer=site.signer("n1"),
        anchor=site.kit.anchor,
        limits_path=None,
        policy=LeasePolicy(),
        trader=trader,
        recorder_path=recorder,
        guard_class=LockedGuard,
    )
    assert checked > 1000 and noted > 1000
    report = verify_file(recorder)
    assert report.intact, report.problems[:3]
