"""Fixtures for the release tests; the scenario itself is in release_world.py."""

from __future__ import annotations

import pytest

from knightwatch.clock import SimClock

from .release_world import START_NS, World


@pytest.fixture(scope="session")
def world() -> World:
    return World()


@pytest.fixture
def clock() -> SimClock:
    return SimClock(START_NS)
