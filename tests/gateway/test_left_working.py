"""A restart without the venue's mass status never arms over orders left working.

With `venue.mass_status = false` the venue tells a new gateway process nothing of
the orders an earlier one left working: they were counted nowhere (the Guard's
exposure and open orders started low, so a client could add on top of them, and
no kill reached them). The gateway now marks its state directory before its first
order goes out and unmarks it only when it stops with none live; a start without
mass status that finds the mark fails reconciliation naming the file.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from knightwatch.clock import SystemClock
from knightwatch.gateway.config import ClientSession
from knightwatch.gateway.gateway import LEFT_WORKING, Gateway
from knightwatch.guard import LockedGuard

from .conftest import LIMITS, Rig, eventually
from .test_gateway import rest

BUY = "1"


def without_mass_status(rig_factory: Callable[..., Rig], *, mass_status: bool = False) -> Rig:
    """A rig whose venue session is configured without mass status (or with it:
    `mass_status`) and whose venue keeps the orders of a lost session."""
    keep = (ClientSession("OMS1", cancel_on_disconnect=False),)
    return rig_factory(
        venue={"cancel_on_disconnect": False},
        venue_session={"mass_status": mass_status},
        config={"store": "file", "clients": keep},
    )


def restart(first: Rig) -> tuple[Gateway, LockedGuard]:
    """A second gateway process on the first's state directory, started without mass
    status."""
    guard = LockedGuard(LIMITS, node="gw", clock=SystemClock(), recorder=first.recorder)
    config = msgspec.structs.replace(
        first.config, venue=msgspec.structs.replace(first.config.venue, mass_status=False)
    )
    second = Gateway(
        config,
        guard,
        first.root / "gateway",
        log_messages=False,
        on_reconciled=lambda: guard.arm("test"),
    )
    second.start()
    return second, guard


@pytest.mark.parametrize("mass_status_before", [False, True])
def test_a_restart_without_mass_status_over_an_order_left_working_does_not_arm(
    rig_factory: Callable[..., Rig], mass_status_before: bool
) -> None:
    """W1 (300 L000) rests at the venue when the gateway stops; before, the next
    process without mass status armed at its logon with W1 counted nowhere (open orders
    0), so a client could add 300 more on top of it. Now start-up fails naming the
    file, and a process that dies with W1 out (the file is written before it goes) is
    caught the same way; so is a first process that had mass status on."""
    first = without_mass_status(rig_factory, mass_status=mass_status_before).start()
    first.ready()
    mark = first.root / "gateway" / LEFT_WORKING
    assert not mark.exists()  # nothing sent yet
    rest(first, "W1", qty=300)
    assert mark.exists()  # a crash from here on leaves it
    first.clients["OMS1"].stop()
    first.gateway.stop()
    w1 = first.venue.find("W1")
    assert w1 is not None and w1.leaves == 300  # still working at the venue
    assert "OMS1:W1" in mark.read_text()
    second, guard = restart(first)
    try:
        eventually(lambda: second.reconcile_error, what="reconciliation refused")
        assert second.reconcile_error.startswith(f"{mark}: orders an earlier gateway process")
        assert "venue.mass_status = false" in second.reconcile_error
        assert not second.reconciled.is_set() and not guard.armed
    finally:
        second.stop()
    assert mark.exists()  # a refused start keeps it for the next


def test_the_mark_goes_when_the_gateway_stops_with_nothing_live(
    rig_factory: Callable[..., Rig],
) -> None:
    """An order that ends (here: filled) leaves nothing working: the stop removes the
    file and the next start without mass status arms. An operator who deleted the file
    (having cancelled what worked) gets the same."""
    first = without_mass_status(rig_factory).start()
    first.ready()
    first.oms.new_order("F1", "L000", BUY, 100, 101.0)
    first.oms.wait_report("F1", "F")
    mark = first.root / "gateway" / LEFT_WORKING
    assert mark.exists()
    eventually(lambda: not first.gateway.book.live(), what="F1 finished")
    first.clients["OMS1"].stop()
    first.gateway.stop()
    assert not mark.exists()
    second, guard = restart(first)
    try:
        eventually(lambda: guard.armed, what="armed")
        assert second.reconcile_error == ""
    finally:
        second.stop()
