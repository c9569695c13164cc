"""`wait_admitted` names the nodes not admitted when its time is up.

It returned at the deadline as if every node had been admitted, so what the caller did
next (a kill it then timed, a failover it then checked) ran on a fleet short of nodes and
failed far from the cause, or proved nothing. Real nats-server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.plane.connect import FleetError
from knightwatch.control.site import Site
from knightwatch.sim.drill.processes import wait_admitted


async def test_nodes_never_admitted_are_named_at_the_deadline(tmp_path: Path) -> None:
    site = Site(tmp_path)
    await site.astart()
    try:
        plane = await site.connect("carol")
        try:
            with pytest.raises(FleetError, match=r"^nodes not admitted within 0.5 s: n1, n2 "):
                await wait_admitted(plane, ["n2", "n1"], SystemClock(), timeout_s=0.5)
        finally:
            await plane.close()
    finally:
        site.stop()
