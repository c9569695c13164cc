"""The preflight of a strategy/symbol pair sees a supervisor alert open on its strategy
or its symbol: either halt stops all of what the pair trades, so it is open on the pair
(the ramp's trip judges it so too). `_overlaps` knew only the other direction (a pair's
alert is open on its strategy), so the pair's resume passed `alerts` with one open."""

from __future__ import annotations

import pytest

from knightwatch.incident.preflight import PreflightConfig, run_preflight
from knightwatch.state import Scope, pair_key

from .fixtures import fleet

CFG = PreflightConfig(listen_s=0.2)


@pytest.mark.parametrize(
    ("alert_scope", "alert_key", "opens"),
    [
        (Scope.STRATEGY, "mm", True),
        (Scope.SYMBOL, "AAPL", True),
        (Scope.STRATEGY, "other", False),
        (Scope.SYMBOL, "MSFT", False),
    ],
)
async def test_a_supervisor_alert_on_the_pairs_strategy_or_symbol_is_open_on_the_pair(
    alert_scope: Scope, alert_key: str, opens: bool
) -> None:
    f = await fleet("n1", "n2")
    plane = await f.plane()
    pair = pair_key("mm", "AAPL")
    await (await f.killswitch()).kill(Scope.STRATEGY_SYMBOL, pair, "runaway", timeout_s=0.5)
    await (await f.killswitch("supervisor")).kill(
        alert_scope, alert_key, "reject spike", timeout_s=0.5
    )
    checklist = await run_preflight(plane, Scope.STRATEGY_SYMBOL, pair, clock=f.clock, config=CFG)
    alerts = next(i for i in checklist.items if i.name == "alerts")
    if opens:
        assert not alerts.ok and f"{alert_scope.value} '{alert_key}': reject spike" in (
            alerts.detail
        ), alerts.detail
        assert not checklist.passed
    else:
        assert alerts.ok, alerts.detail
    await f.stop()
