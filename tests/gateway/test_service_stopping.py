"""A kill heard while the gateway node stops: its sessions are closed, its orders are not.

`GatewayHost.close` stops the FIX sessions before the node runtime stops, so a kill can
still arrive and be confirmed in between. Nothing can be cancelled then; the orders the
gateway's book held working are still working at the venue as far as anyone knows, and
the confirmation must name them (before, it said nothing was left working).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from knightwatch.control.site import Site
from knightwatch.state import Scope

from .conftest import WAIT_S
from .test_service import start_node


async def test_a_kill_after_the_sessions_closed_names_the_orders_left_working(
    nats_server: Site, tmp_path: Path
) -> None:
    async with start_node(nats_server, tmp_path) as n:
        await asyncio.to_thread(n.rest, "S1")
        await asyncio.to_thread(n.rest, "S2", symbol="M000")
        n.venue.cancel_on_disconnect = False  # a venue that keeps orders of a lost session
        await n.host.close()  # the node is stopping: FIX sessions closed, runtime still up
        assert len(n.venue.working()) == 2
        result = await n.switch.kill(Scope.SYMBOL, "L000", "while stopping", timeout_s=WAIT_S)
        assert result.latencies_ms.keys() == {"gw"}  # confirmed: the Guard blocks
        assert result.still_working == {"gw": ["OMS1:S1"]} and not result.ok
        assert n.host.drains[-1][0] == result.entry.command_id
        whole = await n.switch.kill(Scope.FLEET, "fleet", "while stopping", timeout_s=WAIT_S)
        assert sorted(whole.still_working["gw"]) == ["OMS1:S1", "OMS1:S2"]
