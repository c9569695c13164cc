"""A scrape that cannot be answered is one logged line and a 500 naming why, not a traceback.

A starved node (the moment its metrics matter) failed every scrape, as it should, but
wsgiref printed a 20-line traceback to the node's stderr for each one (every 15 s with a
default Prometheus) and answered "A server error occurred" without the reason.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable

import pytest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from knightwatch.control.exposition import LoopReader, MetricsServer


class _Starved(Collector):
    """Reads through the loop, which the test keeps blocked until the scrape gives up."""

    def __init__(self, reader: LoopReader) -> None:
        self.reader = reader

    def collect(self) -> Iterable[Metric]:
        self.reader.read(lambda: 1)
        return []


class _Broken(Collector):
    """A collector the process added (a gateway's) that fails."""

    def collect(self) -> Iterable[Metric]:
        raise KeyError("session")


def _scrape_blocking(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=15) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_a_starved_scrape_is_one_line_not_a_traceback(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    server = MetricsServer(_Starved(LoopReader(timeout_s=0.1)), 0)
    try:
        got: list[tuple[int, str]] = []
        t = threading.Thread(target=lambda: got.append(_scrape_blocking(server.url)))
        with caplog.at_level(logging.ERROR, logger="knightwatch.control.exposition"):
            t.start()
            t.join(timeout=20)  # the loop stays blocked until the scrape has its answer
        assert not t.is_alive(), "the scrape never answered"
    finally:
        server.close()
    status, body = got[0]
    assert status == 500
    assert "did not answer within 0.1 s" in body
    assert "Traceback" not in capfd.readouterr().err
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("exposition")]
    assert len(lines) == 1 and "did not answer within 0.1 s" in lines[0]
    assert "\n" not in lines[0]


async def test_a_failing_added_collector_is_named_in_one_line(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    server = MetricsServer(_Broken(), 0)
    try:
        with caplog.at_level(logging.ERROR, logger="knightwatch.control.exposition"):
            status, body = await asyncio.to_thread(_scrape_blocking, server.url)
    finally:
        server.close()
    assert status == 500
    assert "KeyError" in body and "session" in body
    assert "Traceback" not in capfd.readouterr().err
    assert any("KeyError" in r.getMessage() for r in caplog.records)
