"""A report the venue resends itself (PossResend=Y, a new MsgSeqNum) during the start-up
mass status is from before this start only if nothing in it says otherwise.

W8 works at the venue when the gateway starts; the venue's mass status reports it, and
then resends (PossResend, no PossDupFlag) a fill of it or its cancel before the last
status report ends reconciliation. A report that says more of W8 than its status report
did (executed beyond the CumQty adopted, or ended) was sent after the venue answered
this process: it is applied. Before, every report resent with PossResend alone before
reconciliation was taken for one from before this start and skipped: the fill was lost
(no position, W8 counted at 300 leaves while 200 worked) with no halt. One the status
report already counts is still not applied again. Real QuickFIX sessions
(`conftest.Rig`).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from knightwatch.gateway import fields as F
from knightwatch.gateway.venue import VenueOrder

from .conftest import Rig, eventually
from .test_gateway import BUY


def _resent(w8: VenueOrder, exec_type: str, exec_id: str) -> Any:
    """The venue's report of W8 as it stands, resent by the venue itself (PossResend)."""
    fields = [
        (F.ORDER_ID, w8.order_id),
        (F.CL_ORD_ID, w8.clordid),
        (F.EXEC_ID, exec_id),
        (F.EXEC_TYPE, exec_type),
        (F.ORD_STATUS, w8.status),
        (F.SYMBOL, w8.symbol),
        (F.SIDE, w8.side),
        (F.ORDER_QTY, str(w8.qty)),
        (F.LEAVES_QTY, str(w8.leaves)),
        (F.CUM_QTY, str(w8.cum)),
        (F.AVG_PX, "99"),
        (F.TRANSACT_TIME, F.now_utc()),
    ]
    if exec_type == "F":
        fields += [(F.LAST_QTY, "100"), (F.LAST_PX, "99")]
    msg = F.message(F.EXECUTION_REPORT, fields)
    msg.getHeader().setField(F.POSS_RESEND, "Y")
    return msg


def _w8() -> VenueOrder:
    return VenueOrder("W8", "V81", None, "L000", BUY, Decimal(300), 99.0, "2", "0")


def _start(
    rig: Rig,
    monkeypatch: pytest.MonkeyPatch,
    change: Callable[[VenueOrder], str],
    w8: VenueOrder | None = None,
) -> None:
    """Start `rig` with W8 (buy 300 L000 at 99, unless given) working at the venue: the
    mass status reports it, then `change` changes it and names the ExecType of the report
    the venue resends of it (ExecID RESENT-1), then W8's status again ends the mass
    status."""
    venue = rig.venue
    w8 = _w8() if w8 is None else w8

    def answer(msg: F.In, sid: Any, key: str) -> None:
        w8.session = F.own_sid(sid)
        venue.orders[(key, "W8")] = w8
        req = msg[F.MASS_STATUS_REQ_ID]
        for last in ("N", "Y"):
            extra = [(F.MASS_STATUS_REQ_ID, req), (F.TOT_NUM_REPORTS, "1")]
            venue._report(w8, "I", extra=[*extra, (F.LAST_RPT_REQUESTED, last)])
            if last == "N":
                assert F.send(_resent(w8, change(w8), "RESENT-1"), w8.session)

    monkeypatch.setattr(venue, "_mass_status", answer)
    rig.start()
    eventually(lambda: rig.gateway.reconciled.is_set(), what="reconciliation")


def _filled(w8: VenueOrder) -> str:
    w8.cum, w8.notional, w8.status = Decimal(100), 9_900.0, "1"
    return "F"


def test_a_fill_resent_after_the_status_report_is_booked(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = rig_factory()
    _start(rig, monkeypatch, _filled)
    eventually(lambda: rig.guard.position("L000") == 100, what="the fill booked")
    # before: position 0 and 300 counted working (`venue_report_replayed`)
    assert rig.guard.remaining("reconciled:W8") == 200
    assert not rig.events("venue_report_replayed")
    assert rig.guard.halts() == {}


def test_a_cancel_resent_after_the_status_report_ends_the_order(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    def cancelled(w8: VenueOrder) -> str:
        w8.status = "4"
        return "4"

    rig = rig_factory()
    _start(rig, monkeypatch, cancelled)
    # before: still counted working, in the book and the Guard
    eventually(lambda: not rig.gateway.book.live(), what="W8 ended")
    assert rig.guard.working_qty("L000") == (0, 0)
    assert not rig.events("venue_report_replayed")


def test_a_fill_the_status_report_counts_is_not_booked_again(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The venue reports W8 with its fill (CumQty 100) and then resends that fill: from
    before its status report, counted by it (and by the positions at the start)."""
    rig = rig_factory()
    w8 = _w8()
    _filled(w8)
    _start(rig, monkeypatch, lambda _w8: "F", w8)
    replayed = eventually(lambda: rig.events("venue_report_replayed"), what="replayed")
    assert replayed[0]["data"]["exec_id"] == "RESENT-1"
    assert rig.guard.position("L000") == 0
    assert rig.guard.remaining("reconciled:W8") == 200
    assert rig.guard.halts() == {}
