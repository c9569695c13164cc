"""Shared builders for the flag tests, as fixtures (importlib mode: no helper imports)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

import pytest

from knightwatch.clock import NS_PER_S, SimClock
from knightwatch.flags.definition import FlagDefinition, Lifecycle
from knightwatch.flags.fleet import FleetMember, StaticFleetView
from knightwatch.flags.registry import FlagRegistry

RLP = "trading.smars.rlp_enabled"
PEG = "trading.smars.power_peg"
DARK = "ops.dashboard.dark_mode"


def _flag(flag_id: str, description: str, lifecycle: Lifecycle, trading: bool) -> FlagDefinition:
    return FlagDefinition(
        id=flag_id,
        description=description,
        safe_default=False,
        trading_behaviour=trading,
        lifecycle=lifecycle,
        created=date(2012, 7, 1),
        owner="smars-team",
        expires=date(2099, 1, 1),
    )


@pytest.fixture
def flag_registry() -> FlagRegistry:
    """RLP (active, trading), Power Peg (retired), dark mode (active, not trading)."""
    return FlagRegistry.from_definitions(
        [
            _flag(RLP, "RLP routing", Lifecycle.ACTIVE, True),
            _flag(PEG, "Power Peg", Lifecycle.RETIRED, True),
            _flag(DARK, "dark theme", Lifecycle.ACTIVE, False),
        ],
        "test-registry",
    )


MakeFleet = Callable[..., StaticFleetView]


@pytest.fixture
def make_fleet(flag_registry: FlagRegistry) -> MakeFleet:
    """n admitted nodes on release r2 knowing every live flag; overrides put a node on r1."""

    def build(n: int = 8, **overrides: dict[str, str]) -> StaticFleetView:
        schema = flag_registry.schema()
        return StaticFleetView(
            FleetMember(
                f"n{i}",
                True,
                "r1" if f"n{i}" in overrides else "r2",
                overrides.get(f"n{i}", schema),
            )
            for i in range(1, n + 1)
        )

    return build


def wall_ns(hour_utc: int, minute: int, day: int = 1) -> int:
    moment = datetime(2012, 8, day, hour_utc, minute, tzinfo=UTC)
    return int(moment.timestamp()) * NS_PER_S


@pytest.fixture
def pre_market_clock() -> SimClock:
    """2012-08-01 08:00 in New York (12:00 UTC), a Wednesday before the open."""
    return SimClock(wall_ns(12, 0))


@pytest.fixture
def open_market_clock() -> SimClock:
    """2012-08-01 09:30 in New York (13:30 UTC): Knight's flag flip."""
    return SimClock(wall_ns(13, 30))
