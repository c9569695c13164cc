"""Limits a node may not quietly loosen, and file problems that name the file and table.

`loosened` is what refuses a node restarted with looser limits while a kill is in
force (`control.fleet.freeze`): every key that lets more through must be in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from knightwatch.limits import Limits, LimitsError, Override, loosened


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        (
            {"price_collar_ticks": 10, "tick_size": 0.01},
            {"price_collar_ticks": 10, "tick_size": 1.0},
            "tick_size 0.01 -> 1.0",
        ),
        (
            {"duplicate_id_window_s": 86_400.0},
            {"duplicate_id_window_s": 60.0},
            "duplicate_id_window_s 86400.0 -> 60.0",
        ),
        ({"lease_timeout_s": 2.0}, {"lease_timeout_s": 30.0}, "lease_timeout_s 2.0 -> 30.0"),
        ({"lease_timeout_s": 2.0}, {"lease_timeout_s": None}, "lease_timeout_s 2.0 -> None"),
        ({}, {"symbol": {"IBM": Override(lot_size=1000.0)}}, "symbol.IBM.lot_size 1.0 -> 1000.0"),
        (
            {"symbol": {"IBM": Override(tick_size=0.01)}},
            {"symbol": {"IBM": Override(tick_size=5.0)}},
            "symbol.IBM.tick_size 0.01 -> 5.0",
        ),
        ({"symbol": {"IBM": Override(tick_size=0.01)}}, {}, "symbol.IBM.tick_size 0.01 -> 0.05"),
    ],
)
def test_loosened_names_keys_that_widen_what_passes(
    old: dict[str, Any], new: dict[str, Any], needle: str
) -> None:
    base: dict[str, Any] = {"tick_size": 0.05}
    a, b = Limits(**{**base, **old}), Limits(**{**base, **new})
    assert needle in loosened(a, b)
    assert loosened(b, a) == []  # the other way tightens


def test_the_same_limits_are_not_loosened() -> None:
    lim = Limits(
        tick_size=0.01,
        lease_timeout_s=2.0,
        symbol={"IBM": Override(lot_size=0.5, tick_size=0.05)},
        strategy={"mm": Override(max_order_qty=10)},
    )
    assert loosened(lim, lim) == []


def test_an_id_capacity_problem_names_the_file_and_its_table(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(
        "version = 'v1'\n[fleet]\nmax_orders_per_s_node = 1000\nmax_tracked_order_ids = 10\n"
    )
    with pytest.raises(LimitsError) as exc:
        Limits.from_toml(path)
    assert exc.value.problems == [
        f"{path}: fleet.max_tracked_order_ids: must be >= 14430000, the orders "
        "max_orders_per_s_node and max_orders_per_min_node allow within "
        "duplicate_id_window_s 86400s (got 10); raise it or shorten the window, or a node "
        "at its rate limits is blocked for capacity"
    ]


def test_a_symbol_tick_collar_without_the_fleet_rule_is_refused_not_ignored(
    tmp_path: Path,
) -> None:
    path = tmp_path / "limits.toml"
    path.write_text("version = 'v1'\n[symbol.GME]\nprice_collar_ticks = 5\n")
    with pytest.raises(LimitsError) as exc:
        Limits.from_toml(path)
    assert exc.value.problems == [
        f"{path}: symbol.GME.price_collar_ticks: has no effect while fleet.price_collar_ticks "
        "is off; set fleet.price_collar_ticks to switch the rule on (an override only "
        "changes its number)"
    ]
    path.write_text(
        "version = 'v1'\n[fleet]\nprice_collar_ticks = 50\n[symbol.GME]\nprice_collar_ticks = 5\n"
    )
    assert Limits.from_toml(path).symbol["GME"].price_collar_ticks == 5


@pytest.mark.parametrize(
    ("section", "key", "fleet_key"),
    [
        ("strategy", "max_order_qty", "max_order_qty"),
        ("symbol", "max_order_notional", "max_order_notional"),
        ("strategy", "max_orders_per_s", "max_orders_per_s_strategy"),
        ("symbol", "max_orders_per_min", "max_orders_per_min_symbol"),
        ("symbol", "max_position_qty", "max_position_qty"),
        ("strategy", "max_price_age_s", "max_price_age_s"),
        ("symbol", "price_collar_pct", "price_collar_pct"),
        ("strategy", "max_executions_per_window", "max_executions_per_window"),
        ("symbol", "max_child_orders_per_parent", "max_child_orders_per_parent"),
    ],
)
def test_every_override_of_a_rule_the_fleet_switches_off_is_named(
    section: str, key: str, fleet_key: str
) -> None:
    value: Any = 5 if "qty" in key or "per_" in key or "orders" in key else 0.5
    data = {"version": "v1", "fleet": {fleet_key: None}, section: {"X": {key: value}}}
    with pytest.raises(LimitsError) as exc:
        Limits.from_mapping(data, source="f.toml")
    assert exc.value.problems == [
        f"f.toml: {section}.X.{key}: has no effect while fleet.{fleet_key} is off; set "
        f"fleet.{fleet_key} to switch the rule on (an override only changes its number)"
    ]
    on = {"version": "v1", section: {"X": {key: value}}}  # the fleet rule on: accepted
    assert getattr(getattr(Limits.from_mapping(on), section)["X"], key) == value
