"""The console's view says at once that the control plane is gone, and never shows a read
that spans the loss as the fleet now.

The streams' beats come from the console: after the connection went they kept a page LIVE
until the next read failed (its request's 2 s timeout). And a read begun before the loss
and answered across it was told as a fresh snapshot, turning a STALE page LIVE again.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from knightwatch.clock import SystemClock
from knightwatch.console import view
from knightwatch.console.view import Snapshot, Watch
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric

from ..identities import trust


async def test_a_lost_connection_is_told_at_once_and_a_return_reads_again() -> None:
    fabric = MemoryFabric()
    p = MemoryControlPlane(fabric)
    await p.connect()
    watch = Watch(p, trust(), SystemClock(), every_s=3600.0)  # no timed read helps here
    told: list[tuple[str, bytes]] = []
    watch.listen(lambda event, data: told.append((event, data)))
    await watch.start()
    try:
        told.clear()
        await fabric.set_reachable(False)
        # told by the loss itself, before any read was tried
        assert [e for e, _ in told] == ["problem"], told
        assert "connection lost" in msgspec.json.decode(told[0][1])["error"], told
        assert watch.error
        await fabric.set_reachable(True)
        deadline = asyncio.get_running_loop().time() + 15.0  # read again at once, not in 1 h
        while told[-1][0] != "snapshot" and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert told[-1][0] == "snapshot" and watch.error == "", told[-1:]
    finally:
        await watch.stop()


async def test_a_read_that_spans_a_lost_connection_is_no_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fabric = MemoryFabric()
    p = MemoryControlPlane(fabric)
    await p.connect()
    watch = Watch(p, trust(), SystemClock(), every_s=3600.0)
    told: list[tuple[str, bytes]] = []
    watch.listen(lambda event, data: told.append((event, data)))
    await watch.start()
    real_build = view.build

    spans = [1]

    async def spanning(*args: object) -> Snapshot:
        snap = await real_build(*args)  # type: ignore[arg-type]
        if spans.pop() if spans else 0:  # once: the return makes the loop read again
            await fabric.set_reachable(False)  # gone after the read was answered...
            await fabric.set_reachable(True)  # ...and back before it is told
        return snap

    monkeypatch.setattr(view, "build", spanning)
    try:
        told.clear()
        await watch.refresh()
        events = [e for e, _ in told]
        # the loss, then the read across it: both problems, no snapshot between or after
        assert events == ["problem", "problem"], told
        assert watch.error, told
    finally:
        await watch.stop()
