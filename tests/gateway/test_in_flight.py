"""Requests in flight at the venue: status while they wait, no answer at all, a restart.

Real QuickFIX sessions (`conftest.Rig`); the simulated venue is made to hold or drop
what it is sent, as a slow or broken venue would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from knightwatch.clock import SystemClock
from knightwatch.decision import RejectReason
from knightwatch.gateway import fields as F
from knightwatch.gateway import gateway as gateway_module
from knightwatch.gateway.config import ClientSession
from knightwatch.gateway.gateway import LEFT_WORKING, Gateway
from knightwatch.guard import LockedGuard
from knightwatch.state import Scope

from .conftest import LIMITS, Rig, eventually
from .test_gateway import BUY, below, hold_replaces, rest, silent_venue, venue_says


def status_of(rig: Rig, clordid: str) -> Any:
    """Send an OrderStatusRequest for `clordid`; its answer (ExecType I)."""
    rig.oms.send(
        F.message(F.STATUS_REQUEST, [(F.CL_ORD_ID, clordid), (F.SYMBOL, "L000"), (F.SIDE, BUY)])
    )
    return rig.oms.wait_for(
        lambda r: r.get(F.EXEC_TYPE) == "I" and r.get(F.CL_ORD_ID) == clordid, what="status"
    )


def test_a_status_request_for_a_replace_in_flight_answers_pending_replace(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OMS asks the status of its order under the ClOrdID of the replace it sent, which
    the venue has not answered yet. Before, the gateway answered "unknown order" (39=8)
    for an order working at the venue. The answer is the order's status, pending replace
    (39=E), its working quantities, OrigClOrdID the id the order answers to."""
    rest(rig, "P1", qty=100)
    held = hold_replaces(rig, monkeypatch)
    rig.oms.replace("P2", "P1", "L000", BUY, 300, below(rig, "L000"))
    eventually(lambda: held, what="replace reached the venue")
    got = status_of(rig, "P2")
    assert got.get(F.TEXT) != "unknown order"
    assert (got.get(F.ORD_STATUS), got.get(F.ORIG_CL_ORD_ID)) == ("E", "P1")
    assert (got.get(F.LEAVES_QTY), got.get(F.CUM_QTY)) == ("100", "0")
    assert got.get(F.ORDER_ID) == rig.venue.find("P1").order_id


def quick(rig_factory: Callable[..., Rig]) -> Rig:
    """A rig whose gateway gives the venue half a second to answer what it sends."""
    return rig_factory(gateway={"answer_timeout_s": 0.5}).start().ready()


def told(rig: Rig, clordid: str) -> Any:
    """The status report the gateway sent `clordid`'s client about an unanswered request."""
    return rig.oms.wait_for(
        lambda r: (
            r.get(F.EXEC_TYPE) == "I"
            and r.get(F.CL_ORD_ID) == clordid
            and (r.get(F.TEXT) or "").startswith("knightwatch:fill_mismatch no answer")
        ),
        what=f"the client told {clordid} is unanswered",
    )


def test_an_order_the_venue_never_answers_halts_stays_counted_and_the_client_is_told(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The venue takes an order and never answers it. Before, the gateway waited for ever:
    no halt, nothing recorded, the client never answered, the order pending new in the
    book for good. At `answer_timeout_s` it is recorded (`venue_unanswered`), the node
    halts `fill_mismatch` naming it, the client gets a status report saying so, and the
    order stays counted working (the venue may hold it) so a kill still cancels it."""
    rig = quick(rig_factory)
    silent_venue(rig, monkeypatch)
    rig.oms.new_order("SILENT1", "L000", BUY, 100, below(rig, "L000"))
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "SILENT1" in halt.reason
    got = told(rig, "SILENT1")
    assert (got.get(F.ORD_STATUS), got.get(F.LEAVES_QTY)) == ("A", "100")
    assert [e["data"]["clordid"] for e in rig.events("venue_unanswered")] == ["SILENT1"]
    assert rig.guard.remaining("OMS1:SILENT1") == 100  # not released: the venue may hold it
    assert [o.clordid for o in rig.gateway.book.live()] == ["SILENT1"]
    assert rig.gateway.cancel_scope(Scope.NODE, "gw", "test") == ["OMS1:SILENT1"]


def test_a_replace_and_a_cancel_the_venue_never_answers_are_let_go_and_the_client_told(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replace and a cancel the venue takes and never answers. Before, each was kept in
    flight for ever (its ClOrdID held, a kill's cancel never sent again, the client never
    answered). At `answer_timeout_s` each is no longer in flight, the node halts, the
    client is told under its ClOrdID (pending replace, pending cancel) and the order
    stays counted at the larger quantity (the venue may have taken the replace). A
    kill's cancels left unanswered are sent again (`kill_cancel_resent`)."""
    rig = quick(rig_factory)
    rest(rig, "R1", qty=100)
    rest(rig, "C1", qty=100)
    held = hold_replaces(rig, monkeypatch)
    monkeypatch.setattr(rig.venue, "_cancel", lambda msg, sid, key: held.append((msg, sid)))
    rig.oms.replace("R2", "R1", "L000", BUY, 300, below(rig, "L000"))
    rig.oms.cancel("C2", "C1", "L000", BUY, 100)
    replaced, cancelled = told(rig, "R2"), told(rig, "C2")
    assert (replaced.get(F.ORD_STATUS), replaced.get(F.ORIG_CL_ORD_ID)) == ("E", "R1")
    assert (cancelled.get(F.ORD_STATUS), cancelled.get(F.ORIG_CL_ORD_ID)) == ("6", "C1")
    assert rig.gateway.book.requests == {}
    assert rig.guard.working_qty("L000") == (400, 0)  # R1 reserved at 300, C1 still 100
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH
    assert sorted(e["data"]["clordid"] for e in rig.events("venue_unanswered")) == ["C2", "R2"]
    # a kill's cancel the venue never answers is sent again by the gateway itself while
    # the kill is in force (a strategy's kill: one cancel per order). Before, only the
    # kill's drain sent another, and it ends long before a cancel is given up on (this
    # test called `retry_cancels` itself, as no drain runs by then)
    strategy = rig.gateway.book.live()[0].strategy
    rig.guard.halt(Scope.STRATEGY, strategy, "test", "ops")  # as a node runtime does first
    assert rig.gateway.cancel_scope(Scope.STRATEGY, strategy, "test") == ["OMS1:R1", "OMS1:C1"]
    eventually(lambda: len(held) >= 6, what="the kill's cancels sent again")
    resent = [e["data"] for e in rig.events("kill_cancel_resent")]
    assert {r["order_id"] for r in resent} == {"OMS1:R1", "OMS1:C1"}
    assert {r["why"] for r in resent} == {"answer_timeout"}


def test_requests_awaiting_an_answer_are_bounded(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A venue that answers nothing while a client sends cancels as fast as it can: before,
    every one stayed in flight for ever. At most `MAX_AWAITING` are awaited; the oldest
    beyond it is let go as unanswered then (the node halts naming it)."""
    monkeypatch.setattr(gateway_module, "MAX_AWAITING", 3)
    monkeypatch.setattr(rig.venue, "_cancel", lambda msg, sid, key: None)
    for i in range(6):
        rig.oms.cancel(f"X{i}", "NOSUCH", "L000", BUY, 100)
    eventually(lambda: len(rig.events("venue_unanswered")) == 3, what="three let go")
    assert len(rig.gateway._awaiting) == 3 and sorted(rig.gateway.book.requests) == [
        "X3",
        "X4",
        "X5",
    ]
    assert [e["data"]["clordid"] for e in rig.events("venue_unanswered")] == ["X0", "X1", "X2"]


def test_an_ack_of_an_order_sent_before_a_restart_halts_never_works_uncounted(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway sends W1 and restarts before the venue acknowledges it; the venue's
    mass status is off, so the new process knows nothing of W1 (its book is memory only;
    the flight recorder is not read at start). The venue then acknowledges W1: before,
    that was recorded `unknown_report` and nothing more, an order working at the venue
    that the Guard did not count and no kill would cancel. The node halts `fill_mismatch`
    naming it; so does a status report of it in a working OrdStatus."""
    keep = (ClientSession("OMS1", cancel_on_disconnect=False),)
    first = rig_factory(
        venue={"cancel_on_disconnect": False}, config={"store": "file", "clients": keep}
    )
    first.start().ready()
    orders: list[tuple[F.In, Any]] = []
    monkeypatch.setattr(first.venue, "_new", lambda msg, sid, key: orders.append((msg, sid)))
    first.oms.new_order("W1", "L000", BUY, 100, below(first, "L000"))
    eventually(lambda: orders, what="W1 reached the venue")
    first.clients["OMS1"].stop()
    first.gateway.stop()  # a restart: same state directory, persisted sequence numbers
    # W1 left live marks the state directory, and a start without mass status over the
    # mark does not arm (tests/gateway/test_left_working.py): here the mark is lost (an
    # operator deleted it in error), and the venue's ack of W1 still halts
    (first.root / "gateway" / LEFT_WORKING).unlink()
    config = msgspec.structs.replace(
        first.config, venue=msgspec.structs.replace(first.config.venue, mass_status=False)
    )
    guard = LockedGuard(LIMITS, node="gw", clock=SystemClock(), recorder=first.recorder)
    second = Gateway(
        config, guard, first.root / "gateway", log_messages=False,
        on_reconciled=lambda: guard.arm("test"),
    )  # fmt: skip
    second.start()
    try:
        eventually(lambda: guard.armed, what="armed after reconciliation")
        ack = [(F.ORDER_ID, "V77"), (F.CL_ORD_ID, "W1"), (F.EXEC_ID, "XN1"), (F.EXEC_TYPE, "0"),
               (F.ORD_STATUS, "0"), (F.SYMBOL, "L000"), (F.SIDE, BUY), (F.ORDER_QTY, "100"),
               (F.LEAVES_QTY, "100"), (F.CUM_QTY, "0"), (F.AVG_PX, "0"),
               (F.TRANSACT_TIME, F.now_utc())]  # fmt: skip
        eventually(lambda: first.venue.logged_on(second.cfg.comp_id), what="venue logon")
        venue_says(first, ack)
        eventually(lambda: guard.halts(), what="halt")
        (halt,) = guard.halts().values()
        assert halt.code is RejectReason.FILL_MISMATCH and "W1" in halt.reason
        assert "uncounted" in halt.reason
    finally:
        second.stop()


@pytest.mark.parametrize("exec_type", ["I", "A"])
def test_a_report_that_an_order_the_gateway_does_not_hold_is_working_halts(
    rig: Rig, exec_type: str
) -> None:
    """A status or pending-new report, in a working OrdStatus, of an order the gateway does
    not hold: before, a status report was dropped and a pending one only recorded."""
    venue_says(rig, [(F.ORDER_ID, "V88"), (F.CL_ORD_ID, "GHOST"), (F.EXEC_ID, "XS1"),
                     (F.EXEC_TYPE, exec_type), (F.ORD_STATUS, "0" if exec_type == "I" else "A"),
                     (F.SYMBOL, "L000"), (F.SIDE, BUY), (F.ORDER_QTY, "100"),
                     (F.LEAVES_QTY, "100"), (F.CUM_QTY, "0"), (F.AVG_PX, "0"),
                     (F.TRANSACT_TIME, F.now_utc())])  # fmt: skip
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "GHOST" in halt.reason
    assert [e["data"]["clordid"] for e in rig.events("unknown_report")] == ["GHOST"]


def test_a_refusal_of_an_order_the_venue_already_acknowledged_halts_and_keeps_it_counted(
    rig: Rig,
) -> None:
    """The venue acknowledges A1, then sends a BusinessMessageReject naming it (a venue
    that contradicts itself, or a refusal of another message crossing the ack). Before,
    A1 left the Guard's working count and its client got a reject while it worked at the
    venue: an order working uncounted. It stays counted and the node halts."""
    rest(rig, "A1", qty=100)
    sid = next(s for s in rig.venue._logged_on.values() if F.target_of(s) == rig.gw_comp)
    refusal = [(F.REF_SEQ_NUM, "1"), (F.REF_MSG_TYPE, F.NEW_ORDER),
               (F.BUSINESS_REJECT_REF_ID, "A1"), (F.BUSINESS_REJECT_REASON, "0"),
               (F.TEXT, "throttled")]  # fmt: skip
    assert F.send(F.message(F.BUSINESS_REJECT, refusal), sid)
    eventually(lambda: rig.events("venue_business_reject"), what="refusal read")
    assert rig.guard.remaining("OMS1:A1") == 100
    assert [o.clordid for o in rig.gateway.book.live()] == ["A1"]
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "OMS1:A1" in halt.reason
    assert not [
        r for r in rig.oms.received if r.get(F.CL_ORD_ID) == "A1" and r.get(F.EXEC_TYPE) == "8"
    ]


def test_a_cancel_answered_under_the_orders_own_clordid_is_let_go_without_a_halt(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The venue ends the order in answer to a kill's cancel but reports it under the
    order's own ClOrdID, never the cancel's. Before, that cancel stayed in flight for
    ever; a watch on it must not halt the node either: the order has ended, no answer
    can change anything. It is let go (`request_let_go`)."""
    rig = quick(rig_factory)
    rest(rig, "K1", qty=100)
    venue = rig.venue

    def own_id(msg: F.In, sid: Any, key: str) -> None:
        o = venue.orders[(key, msg[F.ORIG_CL_ORD_ID])]
        o.status = "4"
        venue._report(o, "4")  # under K1, no OrigClOrdID

    monkeypatch.setattr(venue, "_cancel", own_id)
    strategy = rig.gateway.book.live()[0].strategy
    rig.gateway.cancel_scope(Scope.STRATEGY, strategy, "test")
    eventually(lambda: not rig.gateway.book.live(), what="K1 cancelled")
    eventually(lambda: rig.events("request_let_go"), what="the kill's cancel let go")
    assert rig.gateway.book.requests == {} and rig.guard.halts() == {}
    assert rig.events("venue_unanswered") == []
