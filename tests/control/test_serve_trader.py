"""An order flow (`trader`) that fails ends the node with one line naming why.

Before, the failure sat in its task unseen: the node stayed up, admitted and armed,
heartbeating as healthy while nothing ran its orders, until a SIGTERM, which then ended
it with the trader's traceback.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.connect import FleetError
from knightwatch.control.serve import serve_node
from knightwatch.control.site import Site


async def test_a_failing_trader_stops_the_node_with_a_named_error(
    site: Site, tmp_path: Path
) -> None:
    (tmp_path / "state").mkdir()

    async def trader(runtime: NodeRuntime, stop: asyncio.Event) -> None:
        raise RuntimeError("strategy lost its market data feed")

    with pytest.raises(FleetError) as caught:
        await asyncio.wait_for(
            serve_node(
                "n1",
                [site.url],
                tmp_path / "state",
                signer=site.signer("n1"),
                anchor=site.kit.anchor,
                limits_path=None,
                policy=LeasePolicy(),
                trader=trader,
                recorder_path=tmp_path / "n1.jsonl",
            ),
            20.0,
        )
    text = str(caught.value)
    assert "RuntimeError: strategy lost its market data feed" in text
    assert "\n" not in text
