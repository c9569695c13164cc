"""The control-plane contract: one suite, run against the memory and the NATS backend.

The NATS backend uses the root `nats_server` fixture (a real server on 127.0.0.1,
authorization on): each plane logs in as a name of the test cast, and may do
what that name may (a node's plane: its own subjects; alice's: the kill state).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.control.site import Site
from knightwatch.trust.roster import ApprovalPolicy, SecondApprover

from .fleet_fixtures import hours_open_now_closed_12h_ago


class Backend:
    """One control-plane backend as the contract suite sees it: connections plus a server."""

    name = ""

    async def plane(self, name: str = "alice") -> ControlPlane:
        """A connected plane, logged in as `name` where the backend checks who connects."""
        raise NotImplementedError

    async def outage(self) -> None:
        """The server goes away (crash); durable state must survive."""
        raise NotImplementedError

    async def restore(self) -> None:
        raise NotImplementedError


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self) -> None:
        self.fabric = MemoryFabric(SystemClock())  # the "server's" clock stamps each write
        self.planes: list[MemoryControlPlane] = []

    async def plane(self, name: str = "alice") -> ControlPlane:
        del name  # the memory fabric has no authorization: signatures are checked by readers
        plane = MemoryControlPlane(self.fabric)
        await plane.connect()
        self.planes.append(plane)
        return plane

    async def outage(self) -> None:
        await self.fabric.set_reachable(False)

    async def restore(self) -> None:
        await self.fabric.set_reachable(True)

    async def aclose(self) -> None:
        for p in self.planes:
            await p.close()


class NatsBackend(Backend):
    name = "nats"

    def __init__(self, site: Site) -> None:
        self.site = site
        self.planes: list[NatsControlPlane] = []

    async def plane(self, name: str = "alice") -> ControlPlane:
        plane = await self.site.connect(name)
        self.planes.append(plane)
        return plane

    async def outage(self) -> None:
        self.site.server.kill()

    async def restore(self) -> None:
        self.site.server.start()
        # a restarted server and nats-py's reconnect take seconds on a loaded machine
        deadline = asyncio.get_running_loop().time() + 15.0
        for plane in self.planes:
            while plane._nc is not None and not plane.connected:  # a closed plane stays closed
                assert asyncio.get_running_loop().time() < deadline, "a plane never reconnected"
                await asyncio.sleep(0.02)

    async def aclose(self) -> None:
        for p in self.planes:
            await p.close()


@pytest.fixture(params=["memory", "nats"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        mem = MemoryBackend()
        yield mem
        await mem.aclose()
        return
    nb = NatsBackend(request.getfixturevalue("nats_server"))
    try:
        yield nb
    finally:
        await nb.aclose()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    """A site with node n1 on a real nats-server (authorization on)."""
    s = Site(tmp_path, ["n1"])
    await s.astart()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
async def market_site(tmp_path: Path) -> AsyncIterator[Site]:
    """`site` whose roster asks a second person for a resume in market hours, open now
    and closed 12 hours ago (`hours_open_now_closed_12h_ago`)."""
    policy = ApprovalPolicy(
        resume=SecondApprover.MARKET_HOURS, market_hours=hours_open_now_closed_12h_ago()
    )
    s = Site(tmp_path, ["n1"], approvals=policy)
    await s.astart()
    try:
        yield s
    finally:
        s.stop()
