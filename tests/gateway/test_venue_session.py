"""The venue session's logons and logouts as the gateway's worker sees them, late.

Session events reach the gateway on the engine's thread and are handled on its worker,
in the order they came; a logout also marks the venue down at once. A logon the worker
handles only after a later logout must not mark the session up again. Real QuickFIX
sessions (`conftest.Rig`); the worker is kept busy by a job of the test's that waits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from knightwatch.gateway import fields as F

from .conftest import Rig, eventually
from .test_gateway import BUY, below


def test_a_logon_handled_after_its_logout_leaves_the_venue_down(
    rig_factory: Callable[..., Rig],
) -> None:
    """The venue session logs on and out again while the worker is busy (a kill's drain,
    a burst of session events, the Guard's lock held by the order flow).
    Before, the worker's late logon set `venue_up` after the logout had cleared it: the
    session was down, yet an order was accepted, counted working, and never answered
    (and a kill's cancels would be taken as sent). The order is refused
    venue_unavailable, nothing is counted, and the next logon brings the session up."""
    rig = rig_factory(venue={"cancel_on_disconnect": False}).start().ready()
    gw = rig.gateway
    session = F.fix().Session.lookupSession(gw.venue_sid)
    session.logout("test: venue session down")
    eventually(lambda: not gw.venue_up, what="venue session down")
    busy = threading.Event()
    gw._work.put(lambda: busy.wait(20))  # both events below are handled late, in order
    try:
        session.logon()
        eventually(session.isLoggedOn, what="venue session logged on")
        session.logout("test: venue session down again")
        eventually(lambda: not session.isLoggedOn(), what="venue session logged out")
    finally:
        busy.set()
    downs = lambda: [e for e in rig.events("venue_session") if not e["data"]["up"]]  # noqa: E731
    eventually(lambda: len(downs()) == 2, what="both logouts handled")
    assert not gw.venue_up
    assert len(rig.events("venue_logon_stale")) == 1
    rig.oms.new_order("Z1", "L000", BUY, 100, below(rig, "L000"))
    refused = rig.oms.wait_report("Z1", "8")
    assert refused.get(F.TEXT).startswith("knightwatch:venue_unavailable ")
    assert rig.guard.working_qty("L000") == (0, 0)
    session.logon()
    eventually(lambda: gw.venue_up, what="venue session back")
    rig.oms.new_order("Z2", "L000", BUY, 100, below(rig, "L000"))
    rig.oms.wait_report("Z2", "0")
    assert rig.guard.halts() == {}
