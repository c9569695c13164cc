"""A client's resent cancel (PossDupFlag or PossResend): never forwarded a second time.

A cancel that reaches the venue twice is answered twice: the second answer (a cancel
reject, too late or unknown order) went to the client under the same ClOrdID as the
first, contradicting it, and the client could conclude its cancel failed. Real QuickFIX
sessions (`conftest.Rig`); the simulated venue counts every cancel it is sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from knightwatch.clock import SimClock
from knightwatch.gateway import fields as F
from knightwatch.gateway.book import GatewayBook, GwOrder, Request, SentCancel
from knightwatch.gateway.client import Received
from knightwatch.order import Side
from knightwatch.state import Scope

from .conftest import Rig, eventually
from .test_gateway import BUY, rest


def venue_cancels(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(ClOrdID, OrigClOrdID) of every cancel the venue is sent, whatever it answers."""
    real = rig.venue._cancel
    seen: list[tuple[str, str]] = []

    def count(msg: F.In, sid: Any, key: str) -> None:
        seen.append((msg[F.CL_ORD_ID], msg[F.ORIG_CL_ORD_ID]))
        real(msg, sid, key)

    monkeypatch.setattr(rig.venue, "_cancel", count)
    return seen


def resent_cancel(clordid: str, orig: str) -> Any:
    """A client's cancel sent again by the application: PossResend(97)=Y (the engine drops
    a PossDupFlag(43) an application sets; it sets that flag itself, `engine_resends`)."""
    msg = F.message(
        F.CANCEL,
        [(F.CL_ORD_ID, clordid), (F.ORIG_CL_ORD_ID, orig), (F.SYMBOL, "L000"), (F.SIDE, BUY),
         (F.ORDER_QTY, "100"), (F.TRANSACT_TIME, F.now_utc())],
    )  # fmt: skip
    msg.getHeader().setField(F.POSS_RESEND, "Y")
    return msg


def answers(rig: Rig, clordid: str) -> list[Received]:
    """Everything the client got under `clordid`."""
    return rig.oms.reports(clordid)


def seen_in(rig: Rig, clordid: str, n: int) -> None:
    """Wait until the gateway has read `n` client messages under `clordid`."""
    eventually(
        lambda: len([e for e in rig.events("fix_in") if e["data"]["clordid"] == clordid]) >= n,
        what=f"{n} messages under {clordid} read",
    )


def test_a_cancel_resent_while_the_first_is_in_flight_reaches_the_venue_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client resends its cancel (PossDupFlag) before the venue answered the first.
    Before, the gateway renamed the resend (its ClOrdID was in flight) and sent it too:
    the venue cancelled the order for the first and refused the second (too late), and
    the client got that cancel reject under its ClOrdID after the cancel. The venue sees
    one cancel, the client one answer (the cancel), and a resend once it is answered gets
    the order's state (cancelled), never a reject."""
    rest(rig, "A")
    seen = venue_cancels(rig, monkeypatch)
    with rig.venue.lock:  # hold the venue: the first cancel is in flight
        rig.oms.cancel("Ax", "A", "L000", BUY, 100)
        eventually(lambda: "Ax" in rig.gateway.book.requests, what="cancel in flight")
        rig.oms.send(resent_cancel("Ax", "A"))
        seen_in(rig, "Ax", 2)
    done = rig.oms.wait_report("Ax", "4")
    assert done.get(F.ORIG_CL_ORD_ID) == "A"
    time.sleep(0.3)  # a second cancel, had it gone, is answered by now
    assert seen == [("Ax", "A")]
    assert not [r for r in answers(rig, "Ax") if r.mtype == F.CANCEL_REJECT]
    assert len(answers(rig, "Ax")) == 1
    rig.oms.send(resent_cancel("Ax", "A"))  # once answered: the state
    status = rig.oms.wait_report("Ax", "I")
    assert (status.get(F.ORD_STATUS), status.get(F.ORIG_CL_ORD_ID)) == ("4", "A")
    assert status.get(F.LEAVES_QTY) == "0"
    assert status.get(F.ORDER_ID) == done.get(F.ORDER_ID)
    time.sleep(0.1)
    assert seen == [("Ax", "A")]
    assert not [r for r in answers(rig, "Ax") if r.mtype == F.CANCEL_REJECT]
    notes = [e["data"] for e in rig.events("cancel_resend")]
    assert [(n["clordid"], n["in_flight"]) for n in notes] == [("Ax", True), ("Ax", False)]
    assert rig.guard.working_qty("L000") == (0, 0) and not rig.guard.halts()


def engine_resends_last(rig: Rig) -> None:
    """The client's engine resends its last message with PossDupFlag(43)=Y, as after a
    lost connection: the gateway's session is made to expect that MsgSeqNum again, and
    the client's next message (a status request) opens the gap it asks resent."""
    session = F.fix().Session.lookupSession(rig.gateway.client_sids["OMS1"])
    session.setNextTargetMsgSeqNum(session.getExpectedTargetNum() - 1)
    rig.oms.send(
        F.message(F.STATUS_REQUEST, [(F.CL_ORD_ID, "A"), (F.SYMBOL, "L000"), (F.SIDE, BUY)])
    )


def test_a_cancel_the_engine_resends_after_it_was_answered_gets_the_orders_state(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's engine resends (PossDupFlag) a cancel the venue already answered.
    Before, the ClOrdID was free again and the cancel went to the venue a second time:
    the venue refused it (too late) and the client got an OrderCancelReject under the
    ClOrdID of its cancel after being told the order was cancelled. The resend gets a
    status report of the order (cancelled) and the venue is sent nothing."""
    rest(rig, "A")
    seen = venue_cancels(rig, monkeypatch)
    rig.oms.cancel("Ax", "A", "L000", BUY, 100)
    done = rig.oms.wait_report("Ax", "4")
    engine_resends_last(rig)
    status = rig.oms.wait_report("Ax", "I")
    assert (status.get(F.ORD_STATUS), status.get(F.ORIG_CL_ORD_ID)) == ("4", "A")
    assert status.get(F.ORDER_ID) == done.get(F.ORDER_ID)
    time.sleep(0.2)
    assert seen == [("Ax", "A")]
    assert not [r for r in answers(rig, "Ax") if r.mtype == F.CANCEL_REJECT]
    resent = [e["data"] for e in rig.events("fix_in") if e["data"]["clordid"] == "Ax"]
    assert [e["resent"] for e in resent] == [False, True]
    assert not rig.guard.halts()


def test_a_cancel_the_venue_refused_is_answered_with_the_same_reject_when_resent(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel the venue refused (unknown order), resent: the client gets the same
    OrderCancelReject again, and the venue is not sent the cancel a second time."""
    seen = venue_cancels(rig, monkeypatch)

    def rejects() -> list[Received]:
        return [r for r in answers(rig, "C9") if r.mtype == F.CANCEL_REJECT]

    rig.oms.cancel("C9", "NOPE", "L000", BUY, 100)
    eventually(lambda: rejects(), what="the venue's reject")
    rig.oms.send(resent_cancel("C9", "NOPE"))
    eventually(lambda: len(rejects()) == 2, what="the reject again")
    first, again = rejects()
    for tag in (F.ORIG_CL_ORD_ID, F.ORD_STATUS, F.CXL_REJ_RESPONSE_TO, F.CXL_REJ_REASON, F.TEXT):
        assert again.get(tag) == first.get(tag), tag
    assert first.get(F.CXL_REJ_REASON) == F.CXL_UNKNOWN_ORDER
    time.sleep(0.1)
    assert seen == [("C9", "NOPE")]
    assert rig.gateway.book.requests == {}


def test_a_resent_cancel_whose_first_was_refused_with_the_venue_down_is_forwarded(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop direction is never gated: a cancel the gateway refused because the venue
    session was down never reached the venue, so its resend, once the session is back,
    is forwarded and cancels the order; so is a resend this gateway never saw the first
    copy of (sent before a restart, say)."""
    rig = rig_factory(venue={"cancel_on_disconnect": False}).start().ready()
    rest(rig, "A")
    rest(rig, "B")
    seen = venue_cancels(rig, monkeypatch)
    session = F.fix().Session.lookupSession(rig.gateway.venue_sid)
    session.logout("test: venue session down")
    eventually(lambda: not rig.gateway.venue_up, what="venue session down")
    rig.oms.cancel("Ax", "A", "L000", BUY, 100)
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "Ax")
    assert rej.get(F.TEXT).startswith("knightwatch:venue_unavailable ")
    session.logon()
    eventually(lambda: rig.gateway.venue_up, what="venue session back")
    rig.oms.send(resent_cancel("Ax", "A"))
    assert rig.oms.wait_report("Ax", "4").get(F.ORIG_CL_ORD_ID) == "A"
    rig.oms.send(resent_cancel("Bx", "B"))  # never seen before
    assert rig.oms.wait_report("Bx", "4").get(F.ORIG_CL_ORD_ID) == "B"
    assert seen == [("Ax", "A"), ("Bx", "B")]
    assert rig.venue.working() == [] and rig.guard.working_qty("L000") == (0, 0)


def test_a_new_cancel_reusing_a_clordid_still_reaches_the_venue(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a resend of the same cancel is held back: a cancel that is not marked resent
    and reuses a ClOrdID (of the same order or another), or a resend naming another
    order than the cancel first sent under that ClOrdID, goes to the venue as before."""
    rest(rig, "A")
    rest(rig, "B")
    rest(rig, "C")
    seen = venue_cancels(rig, monkeypatch)
    rig.oms.cancel("X", "A", "L000", BUY, 100)
    rig.oms.wait_report("X", "4")
    rig.oms.cancel("X", "B", "L000", BUY, 100)  # not resent: a new cancel
    eventually(lambda: len(rig.oms.reports("X")) == 2, what="B's cancel answered")
    assert rig.oms.reports("X")[-1].get(F.ORIG_CL_ORD_ID) == "B"
    rig.oms.send(resent_cancel("X", "C"))  # resent, but X was sent for B
    eventually(lambda: len(rig.oms.reports("X")) == 3, what="C's cancel answered")
    assert rig.oms.reports("X")[-1].get(F.ORIG_CL_ORD_ID) == "C"
    rig.oms.cancel("X", "C", "L000", BUY, 100)  # not resent, same order: the venue decides
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "X")
    assert rej.get(F.CXL_REJ_REASON) == F.CXL_TOO_LATE
    assert [orig for _, orig in seen] == ["A", "B", "C", "C"]
    assert rig.venue.working() == [] and rig.guard.working_qty("L000") == (0, 0)


def test_a_resent_cancel_the_venue_session_did_not_take_is_forwarded_again(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel forwarded that the venue session did not take (the send failed) was
    answered venue_unavailable and never reached the venue: its resend goes out."""
    rest(rig, "A")
    seen = venue_cancels(rig, monkeypatch)
    real_send = F.send

    def send(msg: Any, sid: Any) -> bool:
        if F.session_key(sid) == rig.gateway.venue_key and F.msg_type(msg) == F.CANCEL:
            return False
        return real_send(msg, sid)

    with monkeypatch.context() as m:
        m.setattr(F, "send", send)
        rig.oms.cancel("Ax", "A", "L000", BUY, 100)
        rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "Ax")
        assert rej.get(F.TEXT).startswith("knightwatch:venue_unavailable ")
    rig.oms.send(resent_cancel("Ax", "A"))
    assert rig.oms.wait_report("Ax", "4").get(F.ORIG_CL_ORD_ID) == "A"
    assert seen == [("Ax", "A")] and rig.venue.working() == []


def test_a_resent_cancel_the_venue_never_answered_is_forwarded_again(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel the venue took and never answered (past `answer_timeout_s` the node halts
    and the client is told its state is unknown): nobody knows it reached the venue, so
    its resend is forwarded, and cancels the order."""
    rig = rig_factory(gateway={"answer_timeout_s": 0.5}).start().ready()
    rest(rig, "A")
    lost: list[str] = []
    with monkeypatch.context() as m:  # the venue takes the cancel and says nothing
        m.setattr(rig.venue, "_cancel", lambda msg, sid, key: lost.append(msg[F.CL_ORD_ID]))
        rig.oms.cancel("Ax", "A", "L000", BUY, 100)
        rig.oms.wait_report("Ax", "I", timeout_s=10)  # told: no answer
    assert lost == ["Ax"] and rig.events("venue_unanswered") and rig.guard.halts()
    seen = venue_cancels(rig, monkeypatch)
    rig.oms.send(resent_cancel("Ax", "A"))
    assert rig.oms.wait_report("Ax", "4").get(F.ORIG_CL_ORD_ID) == "A"
    assert seen == [("Ax", "A")] and rig.venue.working() == []
    assert rig.guard.working_qty("L000") == (0, 0)


def test_a_kill_is_not_held_back_by_a_clients_cancel_answered_before(rig: Rig) -> None:
    """The gateway's own cancels never go through the client's resend memory."""
    rest(rig, "A")
    rig.oms.cancel("Ax", "NOPE", "L000", BUY, 100)
    rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "Ax")
    assert rig.gateway.cancel_scope(Scope.NODE, "gw", "drill") == ["OMS1:A"]
    rig.oms.wait_report("A", "4")
    eventually(lambda: rig.guard.working_qty("L000") == (0, 0), what="killed")


def test_a_sent_cancel_is_remembered_for_the_duplicate_scope_and_then_forgotten() -> None:
    """The memory of a forwarded cancel is bounded as the book's other facts are: kept
    while it is in flight or its order is live, forgotten a scope after both ended."""
    s = 1_000_000_000
    clock = SimClock()
    book = GatewayBook(10 * s, clock.monotonic_ns)
    go = GwOrder("C1", "o1", "C1:o1", "s", "IBM", Side.BUY, "1", 100, 100.0, status="0")
    book.add(go)
    req = book.requests["x1"] = Request("F", "C1", go)
    book.sent_cancel("C1", "x1", SentCancel("o1", (("x1", req),)))
    assert book.cancel_in_flight(book.cancels["C1:x1"])
    clock.advance(30 * s)
    book.forget(100)
    assert "C1:x1" in book.cancels  # in flight, its order live
    del book.requests["x1"]
    book.set_status(go, "4")
    assert not book.cancel_in_flight(book.cancels["C1:x1"])
    clock.advance(5 * s)
    book.forget(100)
    assert "C1:x1" in book.cancels  # its order ended less than a scope ago
    for _ in range(3):
        clock.advance(11 * s)
        book.forget(100)
    assert "C1:x1" not in book.cancels and "o1" not in book.orders
