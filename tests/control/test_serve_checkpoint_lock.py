"""A gateway node writes its flight recorder from the event loop under the Guard's lock.

A gateway calls its `LockedGuard` from the FIX engine's threads; the recorder has one
writer at a time, the Guard's caller, under that lock. The node's checkpointer sealed the
recorder from the event loop without it (`Checkpointer.sign_now`), and so did the runtime
when it wrote its own events (a refused command, a flag state's refusal): a seal or a line
cut in while an engine thread wrote a record did not match its batch, and `knightwatch
audit verify` reported the node's lines as altered (a recorder reopening it refuses to
append after such a seal). Real nats-server, real recorder on disk, a real engine thread.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from knightwatch.audit import verify_file
from knightwatch.control.node.checkpoints import DEFAULT_CHECKPOINT_S
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.serve import serve_node
from knightwatch.control.site import Site
from knightwatch.guard.locked import LockedGuard
from knightwatch.order import Order, Side


async def _trade_beside(
    site: Site,
    tmp_path: Path,
    meanwhile: Callable[[NodeRuntime], Awaitable[None]],
    checkpoint_s: float = DEFAULT_CHECKPOINT_S,
) -> int:
    """Run a gateway-like node whose engine thread checks orders while `meanwhile` runs on
    its event loop; the orders checked. The recorder's chain must verify afterwards."""
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
            await meanwhile(runtime)
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
        checkpoint_s=checkpoint_s,
    )
    report = verify_file(recorder)
    assert report.intact, report.problems[:3]
    return checked


async def test_checkpoints_taken_while_an_engine_thread_trades_keep_the_chain_intact(
    site: Site, tmp_path: Path
) -> None:
    async def wait(runtime: NodeRuntime) -> None:
        await asyncio.sleep(3.0)  # about 300 checkpoints

    assert await _trade_beside(site, tmp_path, wait, checkpoint_s=0.01) > 1000


async def test_events_the_runtime_records_while_an_engine_thread_trades_keep_the_chain(
    site: Site, tmp_path: Path
) -> None:
    noted = 0

    async def note(runtime: NodeRuntime) -> None:
        nonlocal noted
        loop = asyncio.get_running_loop()
        end = loop.time() + 2.0
        while loop.time() < end:
            for _ in range(50):
                runtime.record_event("operator_note", text="x" * 64, n=noted)
                noted += 1
            await asyncio.sleep(0)

    assert await _trade_beside(site, tmp_path, note) > 1000
    assert noted > 1000
