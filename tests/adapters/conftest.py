"""A real nats-server per fleet test, on 127.0.0.1 with a random port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from knightwatch.control.plane.server import EmbeddedNatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    srv = EmbeddedNatsServer(tmp_path / "nats")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
