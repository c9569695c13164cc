"""A gateway node's checkpoints seal its flight recorder under the Guard's lock.

A gateway calls its `LockedGuard` from the FIX engine's threads; the recorder has one
writer at a time, the Guard's caller, under that lock. The node's checkpointer sealed
and synced the recorder from the event loop without it (`Checkpointer.sign_now`): a seal
cut while an engine thread was writing a record did not match its batch, and
`knightwatch audit verify` reported the file's lines as altered (a recorder reopening it
refuses to append after such a seal). Real nats-server, real recorder on disk.
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


async def test_checkpoints_taken_while_an_engine_thread_trades_keep_the_chain_intact(
    site: Site, tmp_path: Path
) -> None:
    (tmp_path / "state").mkdir()
    recorder = tmp_path / "n1.jsonl"
    checked = 0

    async def trader(runtime: NodeRuntime, stop: asyncio.Event) -> None:
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
            await asyncio.sleep(3.0)  # about 300 checkpoints
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
        checkpoint_s=0.01,
        guard_class=LockedGuard,
    )
    assert checked > 1000
    report = verify_file(recorder)
    assert report.intact, report.problems[:3]
