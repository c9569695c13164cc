"""A cancel of the gateway's own that the venue refuses is sent again while it must be.

A venue refuses a cancel it cannot act on yet: the order's acknowledgement still in
flight ("unknown order"), a pending state, a throttle. The gateway's own cancels are the
ones nobody else will send again once refused: a cancel-on-disconnect's (its client is
gone) and a kill's once its drain has ended (`kill_drain_timeout_s`, 1.5 s). Before, such
a refusal was recorded (`own_cancel_rejected`) and nothing more: the order worked on at
the venue with its owner gone, or through the kill. Now a fresh cancel follows, after a
wait that doubles with each refusal, until the venue cancels or ends the order. Real
QuickFIX sessions; the venue is made to refuse the first cancels in each of the ways a
venue refuses one (OrderCancelReject, ExecutionReport 150=8, BusinessMessageReject).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from knightwatch.gateway import fields as F
from knightwatch.state import Scope

from .conftest import Rig, eventually
from .test_gateway import refuse_cancel_by_report, rest
from .test_kill_cancel_resent import Swallow, kill


def refuse_first(rig: Rig, monkeypatch: pytest.MonkeyPatch, how: str, n: int) -> list[str]:
    """The venue refuses the first `n` cancels (`how`: cxl_reject, report, business),
    then cancels as ever; returns the ClOrdIDs of the cancels it read."""
    venue = rig.venue
    real = venue._cancel
    seen: list[str] = []

    def cancel(msg: F.In, sid: Any, key: str) -> None:
        seen.append(msg[F.CL_ORD_ID])
        if len(seen) > n:
            real(msg, sid, key)
        elif how == "cxl_reject":
            o = venue.orders.get((key, msg[F.ORIG_CL_ORD_ID]))
            venue._cancel_reject(sid, msg[F.CL_ORD_ID], msg[F.ORIG_CL_ORD_ID], o, "1",
                                 F.CXL_PENDING)  # fmt: skip
        elif how == "report":
            refuse_cancel_by_report(f"REFUSED-{len(seen)}")(msg, sid, key)
        else:
            reject = F.message(
                F.BUSINESS_REJECT,
                [(F.REF_SEQ_NUM, msg[F.MSG_SEQ_NUM]), (F.REF_MSG_TYPE, F.CANCEL),
                 (F.BUSINESS_REJECT_REF_ID, msg[F.CL_ORD_ID]),
                 (F.BUSINESS_REJECT_REASON, "0"), (F.TEXT, "throttled")],
            )  # fmt: skip
            F.send(reject, sid)

    monkeypatch.setattr(venue, "_cancel", cancel)
    return seen


HOWS = ("cxl_reject", "report", "business")


@pytest.mark.parametrize("how", HOWS)
def test_a_disconnect_cancel_the_venue_refuses_is_sent_again_until_it_cancels(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    rest(rig, "D1")
    seen = refuse_first(rig, monkeypatch, how, 2)
    rig.oms.stop()  # the client is gone: cancel-on-disconnect, nobody else to cancel D1
    eventually(lambda: not rig.gateway.book.live(), what="D1 cancelled at the venue at last")
    assert rig.venue.working() == [] and rig.guard.working_qty("L000") == (0, 0)
    assert len(seen) == 3 and len(set(seen)) == 3  # two refused, each followed by a fresh one
    refused = [e["data"] for e in rig.events("own_cancel_rejected")]
    assert [r["clordid"] for r in refused] == seen[:2]
    assert all(r["order_id"] == "OMS1:D1" and r["resend_in_s"] for r in refused)
    assert refused[1]["resend_in_s"] == 2 * refused[0]["resend_in_s"]  # backs off
    resent = [e["data"] for e in rig.events("kill_cancel_resent")]
    assert [(r["why"], r["previous"]) for r in resent] == [("cancel_refused", c) for c in seen[:2]]


def test_a_kill_cancel_the_venue_refuses_after_the_drain_is_sent_again_while_the_kill_holds(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No drain runs here (as after `kill_drain_timeout_s`): what is sent again, the
    gateway sends by itself."""
    rest(rig, "K1")
    seen = refuse_first(rig, monkeypatch, "cxl_reject", 1)
    kill(rig, Scope.STRATEGY, "OMS1")
    eventually(lambda: not rig.gateway.book.live(), what="K1 cancelled at the venue at last")
    assert rig.venue.working() == [] and len(seen) == 2


@pytest.mark.parametrize("how", HOWS)
def test_a_clients_mass_cancel_refused_is_told_to_the_client_not_sent_again(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A client's mass cancel: the client is there to cancel again, so no fresh cancel
    is scheduled; but its MassCancelReport counted the order as affected, so the refusal
    is told to it, as FIX answers each affected order: an OrderCancelReject under the
    mass cancel's ClOrdID naming the order still working. Before, the client was never
    told and took for cancelled an order working at the venue."""
    rest(rig, "M1")
    seen = refuse_first(rig, monkeypatch, how, 1)
    rig.oms.mass_cancel("MC")
    assert rig.oms.wait_for(lambda r: r.mtype == F.MASS_CANCEL_REPORT).get(F.TOTAL_AFFECTED) == "1"
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT, what="the refusal, told")
    assert (rej.get(F.CL_ORD_ID), rej.get(F.ORIG_CL_ORD_ID)) == ("MC", "M1")
    assert rej.get(F.ORD_STATUS) == "0" and rej.get(F.CXL_REJ_RESPONSE_TO) == "1"
    assert rej.get(F.ORDER_ID) == rig.venue.find("M1").order_id
    assert rej.get(F.CXL_REJ_REASON) == (F.CXL_PENDING if how == "cxl_reject" else "2")
    assert rej.get(F.TEXT).startswith("mass cancel MC: the venue refused this order's cancel")
    (refused,) = eventually(lambda: rig.events("own_cancel_rejected"), what="the refusal")
    assert refused["data"]["resend_in_s"] is None
    assert len(seen) == 1 and rig.gateway.still_working(Scope.STRATEGY, "OMS1")
    rig.oms.cancel("M1x", "M1", "L000", "1", 100)  # the client, told, cancels it itself
    rig.oms.wait_report("M1x", "4")
    assert rig.venue.working() == []
    assert [r for r in rig.oms.received if r.mtype == F.CANCEL_REJECT] == [rej]


def test_a_clients_mass_cancel_the_venue_never_answers_is_told_to_the_client(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The venue takes a cancel of a client's mass cancel and never answers it. At
    `answer_timeout_s` the node halts (`fill_mismatch`); the client, whose
    MassCancelReport counted the order as affected, gets a status report under the
    order's ClOrdID: pending cancel, its state at the venue unknown, the mass cancel
    named. Before, the client was never told and took the order for cancelled."""
    rig = rig_factory(gateway={"answer_timeout_s": 0.5}).start().ready()
    rest(rig, "M1")
    swallow = Swallow(rig, monkeypatch)
    rig.oms.mass_cancel("MC")
    assert rig.oms.wait_for(lambda r: r.mtype == F.MASS_CANCEL_REPORT).get(F.TOTAL_AFFECTED) == "1"
    told = rig.oms.wait_for(
        lambda r: r.mtype == F.EXECUTION_REPORT and r.get(F.EXEC_TYPE) == "I",
        what="the unanswered cancel, told",
    )
    assert (told.get(F.CL_ORD_ID), told.get(F.ORD_STATUS)) == ("M1", "6")
    assert "mass cancel MC: no answer from the venue" in told.get(F.TEXT)
    assert rig.events("venue_unanswered") and rig.gateway.book.live()
    assert rig.events("kill_cancel_resent") == [] and len(swallow.seen) == 1
    swallow.answer = True
    rig.oms.cancel("M1x", "M1", "L000", "1", 100)  # the client, told, cancels it itself
    rig.oms.wait_report("M1x", "4")
    assert rig.venue.working() == []
