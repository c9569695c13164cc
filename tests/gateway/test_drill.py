"""`knightwatch drill --fix` end to end: real processes (NATS, venue, gateway) and a FIX OMS."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from knightwatch.gateway.drill import CHILD_QTY, PARENT_QTY, run_fix_drill


async def test_the_fix_drill_contains_the_runaway_and_kills_at_the_venue(tmp_path: Path) -> None:
    console = Console(width=160, record=True)
    report = await run_fix_drill(tmp_path, console, orders=60)
    assert report.passed, console.export_text()
    normal, runaway = report.phases
    assert normal.refused.get("max_order_qty", 0) >= 2 and normal.routed > 0 and normal.filled > 0
    assert runaway.refused == {"parent_qty_exceeded": report.runaway_children - 10}
    assert report.runaway_escaped * CHILD_QTY == PARENT_QTY
    kill = report.kill
    assert kill.working_before >= 20 and kill.client_cancels == kill.working_before
    assert kill.still_working == [] and kill.refused_after == "halted"
    assert report.venue_orders >= runaway.routed + kill.working_before
    # `knightwatch gateway --metrics-port` serves the gateway's own counters beside the node's
    refused = sum(normal.refused.values()) + sum(runaway.refused.values())
    assert report.scraped_refused == refused
    assert "PASSED" in console.export_text()
