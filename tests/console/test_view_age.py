"""The console's view is never vouched for past its age: a read that never ends is told.

The streams' beats come from the console, not the fleet: a fleet read that hung (no answer,
no error, no lost connection) left every page LIVE over the last view built, for as long as
it hung, while the connection itself answered every round trip. Now a view older than
`every_s + VIEW_AGE_S` is told as a problem (the pages turn STALE), and the next read that
finishes turns them LIVE again.
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


async def _until(told: list[tuple[str, bytes]], event: str, within_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        if told and told[-1][0] == event:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_a_read_that_never_ends_is_told_and_the_next_one_clears_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(view, "VIEW_AGE_S", 0.3)
    fabric = MemoryFabric()
    p = MemoryControlPlane(fabric)
    await p.connect()
    watch = Watch(p, trust(), SystemClock(), every_s=0.1)
    told: list[tuple[str, bytes]] = []
    watch.listen(lambda event, data: told.append((event, data)))
    await watch.start()
    real_build = view.build
    hang = asyncio.Event()

    async def hung(*args: object) -> Snapshot:
        await hang.wait()  # no answer, no error: the read goes on
        return await real_build(*args)  # type: ignore[arg-type]

    try:
        assert await _until(told, "snapshot", 5.0), told[-3:]
        monkeypatch.setattr(view, "build", hung)
        started = asyncio.get_running_loop().time()
        told.clear()
        assert await _until(told, "problem", 5.0), told[-3:]
        took = asyncio.get_running_loop().time() - started
        assert took < 0.1 + 0.3 + 0.5, took  # every_s + VIEW_AGE_S + a probe's period and more
        error = msgspec.json.decode(told[-1][1])["error"]
        assert "last read" in error and "not the fleet now" in error, error
        assert watch.error == error
        assert [e for e, _ in told] == ["problem"], told  # told once, not every probe
        monkeypatch.setattr(view, "build", real_build)
        hang.set()  # the read ends: a snapshot, and the problem is gone
        assert await _until(told, "snapshot", 5.0), told[-3:]
        assert watch.error == ""
    finally:
        hang.set()
        await watch.stop()


async def test_a_read_that_took_too_long_is_shown_but_not_as_the_fleet_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(view, "VIEW_AGE_S", 0.2)
    fabric = MemoryFabric()
    p = MemoryControlPlane(fabric)
    await p.connect()
    watch = Watch(p, trust(), SystemClock(), every_s=3600.0)  # only the reads the test asks
    told: list[tuple[str, bytes]] = []
    watch.listen(lambda event, data: told.append((event, data)))
    await watch.start()
    real_build = view.build

    async def slow(*args: object) -> Snapshot:
        snap = await real_build(*args)  # type: ignore[arg-type]
        await asyncio.sleep(0.5)  # answered, but read long ago by the time it is told
        return snap

    try:
        monkeypatch.setattr(view, "build", slow)
        told.clear()
        await watch.refresh()
        # the newer view is drawn, and the pages are told it is not the fleet now
        assert [e for e, _ in told] == ["snapshot", "problem"], told
        assert "took" in watch.error and "not the fleet now" in watch.error, watch.error
        monkeypatch.setattr(view, "build", real_build)
        told.clear()
        await watch.refresh()
        assert [e for e, _ in told] == ["snapshot"] and watch.error == "", told
    finally:
        await watch.stop()
