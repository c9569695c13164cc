"""A fill the venue resends (PossDupFlag) after a re-logon during start-up is booked once.

The venue session drops while the start-up mass status is answered; the venue fills an
adopted order while the session is down and resends that report at the next logon
(PossDupFlag=Y, a session-level resend under its first MsgSeqNum). The gateway never saw
it: it was sent during this process's life, after the positions file was loaded. Before,
every resent report before reconciliation was taken for one from before this start and
skipped: the fill was lost (the Guard's position short of the venue's, the order counted
working at its old quantity, its limits loosened by as much) with no halt. A report the
venue resends from before this process's first logon is still not booked again
(`test_gateway.py::test_a_fill_the_venue_resends_at_a_restart_is_not_booked_again_and_does_not_halt`).
Real QuickFIX sessions (`conftest.Rig`).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from knightwatch.gateway import fields as F
from knightwatch.gateway.venue import VenueOrder

from .conftest import Rig, eventually
from .test_gateway import BUY


def test_a_fill_resent_after_a_relogon_during_the_mass_status_is_booked_once(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    positions = tmp_path / "positions.toml"
    positions.write_text("[positions]\nL000 = 500\n")
    rig = rig_factory(config={"positions_file": str(positions), "assume_flat": False})
    venue = rig.venue
    w8 = VenueOrder("W8", "V81", None, "L000", BUY, Decimal(300), 99.0, "2", "0")
    asked: list[str] = []

    def answer(msg: F.In, sid: Any, key: str) -> None:
        """W8 working; the first time without the last report (the session is lost)."""
        asked.append(msg[F.MASS_STATUS_REQ_ID])
        w8.session = F.own_sid(sid)
        extra = [
            (F.MASS_STATUS_REQ_ID, asked[-1]),
            (F.TOT_NUM_REPORTS, "1"),
            (F.LAST_RPT_REQUESTED, "N" if len(asked) == 1 else "Y"),
        ]
        venue._report(w8, "I", extra=extra)

    monkeypatch.setattr(venue, "_mass_status", answer)
    rig.start()
    eventually(lambda: rig.guard.remaining("reconciled:W8") == 300, what="W8 adopted")
    session = F.fix().Session.lookupSession(rig.gateway.venue_sid)
    session.logout("test: venue session lost during the mass status")
    eventually(lambda: not rig.gateway.venue_up, what="venue session down")
    eventually(lambda: not venue.logged_on(rig.gw_comp), what="venue side down")
    # filled while the session is down: the venue keeps the report and resends it
    w8.cum, w8.notional, w8.status = Decimal(100), 9_900.0, "1"
    venue._report(w8, "F", extra=[(F.LAST_QTY, "100"), (F.LAST_PX, "99")], exec_id="FILL-1")
    session.logon()
    eventually(lambda: rig.gateway.reconciled.is_set(), what="reconciled at the second logon")
    assert len(asked) == 2
    # before, the resent fill was skipped (`venue_report_replayed`): 500 and 300
    assert rig.guard.position("L000") == 600
    assert rig.guard.remaining("reconciled:W8") == 200
    assert not rig.guard.halts()
    assert not rig.events("venue_report_replayed")
