"""The Guard's clock on a live TradingNode: the host's monotonic clock, not NautilusTrader's.

NautilusTrader's live clock is wall time. Read as the Guard's monotonic clock (held so it
never runs backwards), a wall clock set back (an NTP step, a VM resumed) held every window
for as long as the step: a fleet lease did not expire, a reference price did not age, a
rate window did not move. A backtest keeps NautilusTrader's simulated clock
(`test_nautilus.py::test_the_guard_runs_on_nautilus_time`).

The node is built in a child process: a live kernel sets up NautilusTrader's process-wide
logging, which the backtests of this test session bypass."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_CHILD = textwrap.dedent(
    """
    import time
    from nautilus_trader.config import LoggingConfig, TradingNodeConfig
    from nautilus_trader.live.node import TradingNode
    from knightwatch import Limits
    from knightwatch.adapters.nautilus import install

    node = TradingNode(TradingNodeConfig(logging=LoggingConfig(log_level="ERROR")))
    try:
        kw = install(node, limits=Limits(version="live-clock"))
        before = time.monotonic_ns()
        reading = kw.guard.clock.monotonic_ns()
        after = time.monotonic_ns()
        print(node.kernel.environment.name, before <= reading <= after)
    finally:
        node.dispose()
    """
)


def test_a_live_nodes_guard_runs_on_the_hosts_monotonic_clock() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["LIVE", "True"]
