"""Both adapters' entry points (`install` for NautilusTrader, `guard` for ccxt, sync and
async) refuse a setting of a type they could never use in one line naming it
(`AdapterError`), before anything is built. Before, `clock=5` failed with an
AttributeError deep inside the Guard, `policy=5` with one at the lease, a `key` or
`recorder` that is no path with a TypeError from pathlib, a node name the Guard refuses
with its ValueError, and `control_plane=5`, an empty URL list or `metrics_port=-1` were
taken and failed only when joining the fleet, after the wrapper was built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from knightwatch import SystemClock
from knightwatch.adapters.ccxt import guard
from knightwatch.adapters.fleet import AdapterError
from knightwatch.adapters.nautilus import install
from knightwatch.control.site import Site

from ..identities import KIT
from .nt_world import AUDUSD, engine, open_limits

FLEET = ("policy", "metrics_port", "control_plane", "key", "anchor")
"""Settings read only when joining a fleet: given with an otherwise valid fleet setup."""

CASES: list[tuple[str, Any, str]] = [
    ("clock", 5, "clock: must be a knightwatch Clock"),
    ("clock", "utc", "clock: must be a knightwatch Clock"),
    ("node", 5, "node: must be a non-empty string of at most 64 characters"),
    ("node", "  ", "node: must be a non-empty string of at most 64 characters"),
    ("node", "n" * 65, "node: must be a non-empty string of at most 64 characters"),
    ("recorder", 5, "recorder: must be a file path"),
    ("recorder", float("nan"), "recorder: must be a file path"),
    ("policy", 5, "policy: must be a LeasePolicy"),
    ("policy", {"lease_timeout_s": 5}, "policy: must be a LeasePolicy"),
    ("metrics_port", -1, "metrics_port: must be a port number from 0 to 65535"),
    ("metrics_port", 65536, "metrics_port: must be a port number from 0 to 65535"),
    ("metrics_port", "9101", "metrics_port: must be a port number from 0 to 65535"),
    ("metrics_port", float("nan"), "metrics_port: must be a port number from 0 to 65535"),
    ("metrics_port", True, "metrics_port: must be a port number from 0 to 65535"),
    ("control_plane", 5, "control_plane: must be a ControlPlane or NATS URL(s)"),
    ("control_plane", "", "control_plane: must name at least one NATS URL"),
    ("control_plane", ",", "control_plane: must name at least one NATS URL"),
    ("control_plane", [], "control_plane: must name at least one NATS URL"),
    ("control_plane", ["nats://127.0.0.1:1", 5], "control_plane: must name at least one"),
    ("key", 5, "key: must be a file path"),
    ("anchor", b"anchor.toml", "anchor: must be a file path"),
]


def _settings(tmp_path: Path, setting: str, value: Any) -> dict[str, Any]:
    given: dict[str, Any] = {"limits": open_limits(), setting: value}
    if setting in FLEET:
        site = Site(tmp_path / "site", kit=KIT)
        given = {
            "node": "crypto-1",
            "control_plane": "nats://127.0.0.1:1",
            "key": site.key_path("crypto-1"),
            "anchor": site.anchor_path,
            "clock": SystemClock(),  # a backtest joins a fleet on the host clock
        } | given
    return given


def _refused(says: str, refused: pytest.ExceptionInfo[AdapterError]) -> None:
    text = str(refused.value)
    assert text.startswith(says), text
    assert "\n" not in text


@pytest.mark.parametrize(("setting", "value", "says"), CASES)
def test_install_refuses_a_setting_it_could_never_use_by_name(
    tmp_path: Path, setting: str, value: Any, says: str
) -> None:
    e = engine(AUDUSD)
    try:
        with pytest.raises(AdapterError) as refused:
            install(e, **_settings(tmp_path, setting, value))
        _refused(says, refused)
    finally:
        e.dispose()


@pytest.mark.parametrize("make", [ccxt.binance, ccxt_async.binance], ids=["sync", "async"])
@pytest.mark.parametrize(("setting", "value", "says"), CASES)
def test_guard_refuses_a_setting_it_could_never_use_by_name(
    tmp_path: Path, make: Any, setting: str, value: Any, says: str
) -> None:
    with pytest.raises(AdapterError) as refused:
        guard(make(), **_settings(tmp_path, setting, value))
    _refused(says, refused)
