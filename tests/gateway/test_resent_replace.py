"""A client's resent replace (PossDupFlag or PossResend) the Guard accepted: answered.

A resend of a replace the gateway already forwarded is never checked or sent again
(`Gateway._replace`). Before, a resend of an accepted replace got nothing at all once
the venue had answered the first: the OMS, which resends because it has no answer,
waited for ever. Now it gets what became of the replace: the order's state under the
replace's ClOrdID (the replace took effect), or the venue's refusal again (an
OrderCancelReject, 434=2). Real QuickFIX sessions (`conftest.Rig`).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from knightwatch.gateway import fields as F
from knightwatch.gateway.client import Received

from .conftest import Rig, eventually
from .test_gateway import BUY, below, rest


def venue_replaces(rig: Rig, monkeypatch: pytest.MonkeyPatch, *, refuse: bool) -> list[str]:
    """ClOrdID of every replace the venue is sent; `refuse`: the venue refuses each
    (OrderCancelReject, broker option) instead of applying it."""
    real = rig.venue._replace
    seen: list[str] = []

    def count(msg: F.In, sid: Any, key: str) -> None:
        seen.append(msg[F.CL_ORD_ID])
        if refuse:
            o = rig.venue.orders.get((key, msg[F.ORIG_CL_ORD_ID]))
            rig.venue._cancel_reject(
                sid, msg[F.CL_ORD_ID], msg[F.ORIG_CL_ORD_ID], o, "2", F.CXL_BROKER_OPTION
            )
            return
        real(msg, sid, key)

    monkeypatch.setattr(rig.venue, "_replace", count)
    return seen


def replace_message(rig: Rig, clordid: str, orig: str, qty: int, *, resent: bool) -> Any:
    msg = F.message(
        F.REPLACE,
        [(F.CL_ORD_ID, clordid), (F.ORIG_CL_ORD_ID, orig), (F.SYMBOL, "L000"), (F.SIDE, BUY),
         (F.ORDER_QTY, str(qty)), (F.ORD_TYPE, "2"), (F.PRICE, f"{below(rig, 'L000'):.2f}"),
         (F.TRANSACT_TIME, F.now_utc())],
    )  # fmt: skip
    if resent:
        msg.getHeader().setField(F.POSS_RESEND, "Y")
    return msg


def answers(rig: Rig, clordid: str) -> list[Received]:
    return rig.oms.reports(clordid)


def test_a_replace_resent_after_it_took_effect_gets_the_orders_state(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The venue replaced the order; the resend gets a status report of it (working,
    200) under the replace's ClOrdID, and the venue is sent the replace once."""
    rest(rig, "A")
    seen = venue_replaces(rig, monkeypatch, refuse=False)
    rig.oms.send(replace_message(rig, "R1", "A", 200, resent=False))
    done = rig.oms.wait_report("R1", "5")
    rig.oms.send(replace_message(rig, "R1", "A", 200, resent=True))
    status = rig.oms.wait_report("R1", "I")
    assert (status.get(F.ORD_STATUS), status.get(F.ORIG_CL_ORD_ID)) == ("0", "A")
    assert status.get(F.ORDER_ID) == done.get(F.ORDER_ID)
    assert status.get(F.LEAVES_QTY) == "200"
    assert "resent replace already answered" in status.get(F.TEXT)
    time.sleep(0.2)
    assert seen == ["R1"]
    assert rig.guard.working_qty("L000") == (200, 0) and not rig.guard.halts()


def test_a_replace_the_venue_refused_is_refused_again_when_resent(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The venue refused the replace (OrderCancelReject); the resend is refused again
    (434=2, the order still working at 100), never told it took effect, not resent."""
    rest(rig, "A")
    seen = venue_replaces(rig, monkeypatch, refuse=True)

    def rejects() -> list[Received]:
        return [r for r in answers(rig, "R1") if r.mtype == F.CANCEL_REJECT]

    rig.oms.send(replace_message(rig, "R1", "A", 200, resent=False))
    eventually(lambda: rejects(), what="the venue's reject")
    rig.oms.send(replace_message(rig, "R1", "A", 200, resent=True))
    eventually(lambda: len(rejects()) == 2, what="the reject again")
    first, again = rejects()
    assert first.get(F.CXL_REJ_RESPONSE_TO) == again.get(F.CXL_REJ_RESPONSE_TO) == "2"
    assert (again.get(F.ORIG_CL_ORD_ID), again.get(F.ORD_STATUS)) == ("A", "0")
    assert again.get(F.TEXT).startswith("knightwatch:invalid_order the venue refused this replace")
    time.sleep(0.2)
    assert seen == ["R1"]
    assert not [r for r in answers(rig, "R1") if r.mtype == F.EXECUTION_REPORT]
    assert rig.guard.working_qty("L000") == (100, 0) and not rig.guard.halts()


def test_a_replace_resent_while_the_first_is_in_flight_is_sent_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In flight, the venue's answer to the first reaches the client under the ClOrdID;
    the resend is not sent to the venue and adds no contradicting answer."""
    rest(rig, "A")
    seen = venue_replaces(rig, monkeypatch, refuse=False)
    with rig.venue.lock:
        rig.oms.send(replace_message(rig, "R1", "A", 200, resent=False))
        eventually(lambda: "R1" in rig.gateway.book.requests, what="replace in flight")
        rig.oms.send(replace_message(rig, "R1", "A", 200, resent=True))
        eventually(
            lambda: len([e for e in rig.events("fix_in") if e["data"]["clordid"] == "R1"]) == 2,
            what="the resend read",
        )
    rig.oms.wait_report("R1", "5")
    time.sleep(0.3)
    assert seen == ["R1"]
    assert [r.get(F.EXEC_TYPE) for r in answers(rig, "R1")] == ["5"]
    assert rig.guard.working_qty("L000") == (200, 0) and not rig.guard.halts()
