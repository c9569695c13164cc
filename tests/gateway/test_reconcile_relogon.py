"""A venue session lost while the start-up mass status is answered keeps what was applied.

Start-up loads the positions file and asks the venue's mass status at the venue
session's logon; a session lost before the last report comes logs on again and asks
again. Before, that second logon loaded the positions file again too: the position was
set back to the file's, and a fill of an adopted order applied between the two logons
was lost (the Guard's position short of the venue's, its limits loosened by as much).
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


def test_a_fill_between_two_start_up_logons_stays_in_the_position(
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
            (F.TOT_NUM_REPORTS, "2"),
            (F.LAST_RPT_REQUESTED, "N" if len(asked) == 1 else "Y"),
        ]
        venue._report(w8, "I", extra=extra)

    monkeypatch.setattr(venue, "_mass_status", answer)
    rig.start()
    eventually(lambda: rig.guard.remaining("reconciled:W8") == 300, what="W8 adopted")
    assert rig.guard.position("L000") == 500 and not rig.gateway.reconciled.is_set()
    w8.cum, w8.notional, w8.status = Decimal(100), 9_900.0, "1"
    venue._report(w8, "F", extra=[(F.LAST_QTY, "100"), (F.LAST_PX, "99")])
    eventually(lambda: rig.guard.position("L000") == 600, what="the fill applied")
    session = F.fix().Session.lookupSession(rig.gateway.venue_sid)
    session.logout("test: venue session lost during the mass status")
    eventually(lambda: not rig.gateway.venue_up, what="venue session down")
    session.logon()
    eventually(lambda: rig.gateway.reconciled.is_set(), what="reconciled at the second logon")
    assert len(asked) == 2
    assert rig.guard.position("L000") == 600  # the file's 500 and the fill
    assert rig.guard.remaining("reconciled:W8") == 200
    assert not rig.guard.halts()


def test_reports_of_a_mass_status_asked_before_the_session_was_lost_do_not_halt(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first mass status's last report reaches the gateway only after the next
    logon (resent, or late), when the gateway has asked a second mass status: here the
    venue sends it just before answering the second. Before, it was read as a status
    report of an order the gateway does not hold working at the venue, and the node
    halted `fill_mismatch` at start-up, though the second mass status adopted that
    order. Now a report of an earlier start-up mass status is recorded
    (`mass_status_superseded`) and not applied: the later one says what works."""
    rig = rig_factory()
    venue = rig.venue
    w8 = VenueOrder("W8", "V81", None, "L000", BUY, Decimal(300), 99.0, "2", "0")
    w9 = VenueOrder("W9", "V82", None, "L001", BUY, Decimal(200), 99.0, "2", "0")
    asked: list[str] = []

    def report(o: VenueOrder, req: str, last: str) -> None:
        extra = [
            (F.MASS_STATUS_REQ_ID, req),
            (F.TOT_NUM_REPORTS, "2"),
            (F.LAST_RPT_REQUESTED, last),
        ]
        venue._report(o, "I", extra=extra)

    def answer(msg: F.In, sid: Any, key: str) -> None:
        """The first: W8 only (the session is lost before W9's). The second: the first's
        W9 report, then W8 and W9."""
        asked.append(msg[F.MASS_STATUS_REQ_ID])
        w8.session = w9.session = F.own_sid(sid)
        if len(asked) > 1:
            report(w9, asked[0], "Y")
        report(w8, asked[-1], "N")
        if len(asked) > 1:
            report(w9, asked[-1], "Y")

    monkeypatch.setattr(venue, "_mass_status", answer)
    rig.start()
    eventually(lambda: rig.guard.remaining("reconciled:W8") == 300, what="W8 adopted")
    session = F.fix().Session.lookupSession(rig.gateway.venue_sid)
    session.logout("test: venue session lost during the mass status")
    eventually(lambda: not rig.gateway.venue_up, what="venue session down")
    session.logon()
    eventually(lambda: rig.gateway.reconciled.is_set(), what="reconciled at the second logon")
    assert len(asked) == 2
    assert rig.guard.remaining("reconciled:W9") == 200
    assert not rig.guard.halts()
    (note,) = [e["data"] for e in rig.events("mass_status_superseded")]
    assert note["clordid"] == "W9" and note["mass_status"] == asked[0]
