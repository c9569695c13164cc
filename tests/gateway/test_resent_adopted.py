"""A client's resent cancel of a ClOrdID under which start-up adopted two working orders.

The first copy went to the venue once per order (`Gateway._adopted_under`), one under
the client's ClOrdID and one under the gateway's own; a resend is sent to neither
again, and every copy is answered: in flight, by the venue's answers to the first
(both, under the client's ClOrdID); answered, by each order's state. Real QuickFIX
sessions (`conftest.Rig`), the venue of `test_gateway.twins_at_start_up`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from knightwatch.gateway import fields as F

from .conftest import Rig, eventually
from .test_gateway import BUY, twins_at_start_up
from .test_resent import resent_cancel, seen_in


def test_a_cancel_of_two_adopted_orders_resent_in_flight_and_after_is_always_answered(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig, _held, cancels = twins_at_start_up(rig_factory, monkeypatch)
    with rig.venue.lock:  # both cancels in flight
        rig.oms.cancel("C1", "W8", "L000", BUY, 300)
        eventually(lambda: len(rig.gateway.book.requests) == 2, what="cancels in flight")
        rig.oms.send(resent_cancel("C1", "W8"))
        seen_in(rig, "C1", 2)
    eventually(lambda: len(rig.oms.reports("C1")) == 2, what="both answers")
    rig.oms.send(resent_cancel("C1", "W8"))  # answered: each order's state
    eventually(lambda: len(rig.oms.reports("C1")) == 4, what="the states")
    time.sleep(0.2)
    got = sorted(
        (r.mtype, r.get(F.EXEC_TYPE), r.get(F.ORD_STATUS), r.get(F.ORDER_ID))
        for r in rig.oms.reports("C1")
    )
    assert got == [
        (F.EXECUTION_REPORT, "4", "4", "V81"),
        (F.EXECUTION_REPORT, "4", "4", "V82"),
        (F.EXECUTION_REPORT, "I", "4", "V81"),
        (F.EXECUTION_REPORT, "I", "4", "V82"),
    ]
    assert sorted(cancels) == [("W8", "V81"), ("W8", "V82")]
    assert rig.guard.working_qty("L000") == (0, 0)
