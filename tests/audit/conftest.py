"""Fixtures for the flight-recorder tests: real recorders on real files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from knightwatch.audit import FlightRecorder
from knightwatch.clock import SimClock

from .helpers import record_one

WriteFile = Callable[..., list[bytes]]


@pytest.fixture
def clock() -> SimClock:
    return SimClock(1_343_828_400_000_000_000)  # 2012-08-01 13:40 UTC


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def write_file(audit_path: Path, clock: SimClock) -> WriteFile:
    """Write a clean sealed file of n decision steps (plus fills); return its lines.

    Written by an in-memory recorder, which seals every `batch` records exactly
    (a file recorder seals when its background thread has hashed a batch), so
    tests can name lines; the bytes are what a file recorder writes.
    """

    def make(n: int = 20, batch: int = 8) -> list[bytes]:
        rec = FlightRecorder(None, clock=clock, batch_size=batch)
        for i in range(n):
            clock.advance(1_000)
            rec.ready()
            record_one(rec, i)
        rec.close()
        audit_path.write_bytes(b"".join(line + b"\n" for line in rec.lines))
        return audit_path.read_bytes().splitlines(keepends=True)

    return make
