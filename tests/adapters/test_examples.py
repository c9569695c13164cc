"""The adapter examples run offline, as a user would run them, and say what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_nautilus_example() -> None:
    out = run(str(EXAMPLES / "nautilus_backtest.py"))
    assert "OrderDenied max_order_qty: 1" in out
    assert "execution_throttle" in out
    assert "NautilusTrader trading state: HALTED" in out
    assert "OrderDenied nautilus: TradingState.HALTED: 448" in out


@pytest.mark.parametrize("mode", [[], ["--async"]], ids=["sync", "async"])
def test_the_ccxt_example(mode: list[str]) -> None:
    out = run(str(EXAMPLES / "ccxt_exchange.py"), *mode)
    assert "buy 5 @ 60000: REFUSED knightwatch:max_order_qty" in out
    assert "buy 0.1 @ 90000: REFUSED knightwatch:price_collar" in out
    assert "position 0.3 BTC" in out
    assert "after the halt: venue orders ['canceled', 'closed', 'closed']" in out
    assert "bad signatures: 0" in out


@pytest.mark.parametrize("mode", [[], ["--sync"]], ids=["async", "sync"])
def test_the_ccxt_fleet_example(mode: list[str]) -> None:
    out = run(str(EXAMPLES / "ccxt_fleet.py"), *mode)
    assert "open at the venue: 3" in out
    assert "kill confirmed by ['crypto-1']" in out
    assert "venue orders after the kill: ['canceled', 'canceled', 'canceled']" in out
    assert "new order while killed: REFUSED knightwatch:halted" in out
    assert "after the resume: a new order went out" in out
