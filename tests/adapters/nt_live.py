"""Live NautilusTrader nodes for the adapter tests: a TradingNode's engines with a scripted
`LiveExecutionClient`, run in a child process.

A live kernel sets up NautilusTrader's process-wide logging, which the backtests of the test
session bypass, so each live test runs its node in a child Python (`run_live`); the child
builds its node with `live_node`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from nautilus_trader.common.providers import InstrumentProvider
from nautilus_trader.config import LoggingConfig, TradingNodeConfig
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.enums import AccountType, OmsType
from nautilus_trader.model.identifiers import ClientId
from nautilus_trader.trading.strategy import Strategy

from .nt_world import AUDUSD, SIM


def live_node(loop: asyncio.AbstractEventLoop, client_type: type[Any]) -> tuple[Any, Any, Strategy]:
    """A TradingNode on `loop` (engines not started) with AUD/USD in its cache, a
    `client_type` execution client for SIM registered, and one strategy added."""
    node = TradingNode(TradingNodeConfig(logging=LoggingConfig(log_level="ERROR")), loop=loop)
    k = node.kernel
    k.cache.add_instrument(AUDUSD)
    client = client_type(
        loop,
        ClientId("SIM"),
        SIM,
        OmsType.NETTING,
        AccountType.MARGIN,
        USD,
        InstrumentProvider(),
        k.msgbus,
        k.cache,
        k.clock,
    )
    k.exec_engine.register_client(client)
    st = Strategy()
    node.trader.add_strategy(st)
    return node, client, st


def run_live(child: str, *args: str) -> dict[str, str]:
    """Run `child` (a script) in a child Python from the repository's root, which must exit
    0: each line it printed, by its first word."""
    done = subprocess.run(
        [sys.executable, "-c", child, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.split(" ", 1)[0]: line for line in done.stdout.splitlines() if line}
