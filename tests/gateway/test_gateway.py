"""Order handling through the gateway, over real QuickFIX sessions."""

from __future__ import annotations

from knightwatch.gateway import fields as F

from .conftest import Rig


def test_accepted_order_reaches_the_venue_and_fills(rig: Rig) -> None:
    oms = rig.oms
    assert oms.new_order("A1", "L000", "1", 100, 101.0)
    fill = oms.wait_report("A1", "F")
    assert fill.get(F.ORD_STATUS) == "2"
    assert rig.venue.stats.orders == 1
    assert rig.guard.position("L000") == 100
