"""A cancel-on-disconnect's cancel the venue never answers, or loses, is sent again.

A client session is lost; its orders are cancelled at the venue by the gateway (the
session's `cancel_on_disconnect` policy, or ExecInst Q). Nobody is left to cancel them:
the client is gone, and no kill's drain covers them. Before, a cancel the venue took and
never answered was given up at `answer_timeout_s` (the node halted, the order worked on
at the venue, its owner away), and one in flight when the venue session dropped was
never sent again. Now the gateway sends a fresh cancel itself, as it does a kill's
(`kill_cancel_resent`), until the venue answers one. Real QuickFIX sessions; the venue is
made to swallow cancels, as in `test_kill_cancel_resent.py`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from knightwatch.gateway import fields as F

from .conftest import Rig, eventually
from .test_gateway import rest
from .test_kill_cancel_resent import Swallow, quiet_for

NOTE = "knightwatch cancel-on-disconnect"


def _lose_client(rig: Rig) -> None:
    rig.oms.stop()
    eventually(
        lambda: any(not e["data"]["up"] for e in rig.events("client_session")),
        what="client session lost",
    )


def test_a_disconnect_cancel_the_venue_never_answers_is_sent_again_until_answered(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = rig_factory(gateway={"answer_timeout_s": 0.5}).start().ready()
    rest(rig, "D1")
    swallow = Swallow(rig, monkeypatch)
    _lose_client(rig)
    eventually(lambda: len(swallow.seen) >= 3, what="the disconnect's cancel sent again, twice")
    resent = [e["data"] for e in rig.events("kill_cancel_resent")]
    assert {r["why"] for r in resent} == {"answer_timeout"}
    assert all(r["order_id"] == "OMS1:D1" for r in resent)
    assert [r["previous"] for r in resent] == swallow.seen[: len(resent)]
    swallow.answer = True
    eventually(lambda: not rig.gateway.book.live(), what="D1 cancelled at last")
    assert rig.venue.working() == [] and rig.guard.working_qty("L000") == (0, 0)
    quiet_for(lambda: len(swallow.seen), 1.2)


def test_a_disconnect_cancel_in_flight_when_the_venue_session_drops_is_sent_at_the_logon(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = rig_factory(venue={"cancel_on_disconnect": False}).start().ready()
    rest(rig, "D1")
    swallow = Swallow(rig, monkeypatch)
    _lose_client(rig)
    eventually(lambda: swallow.seen, what="the disconnect's cancel reached the venue")
    session = F.fix().Session.lookupSession(rig.gateway.venue_sid)
    session.logout("test: venue session down")
    eventually(lambda: not rig.gateway.venue_up, what="venue session down")
    swallow.answer = True
    session.logon()
    eventually(lambda: rig.gateway.venue_up, what="venue session back")
    eventually(lambda: not rig.gateway.book.live(), what="D1 cancelled after the logon")
    assert rig.venue.working() == [] and rig.guard.working_qty("L000") == (0, 0)
    (resent,) = [e["data"] for e in rig.events("kill_cancel_resent")]
    assert (resent["why"], resent["previous"]) == ("venue_logon", swallow.seen[0])
