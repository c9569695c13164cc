"""A kill's cancel the venue never answers, or loses with the session, is sent again.

The kill's drain ends within `kill_drain_timeout_s` (1.5 s by default), the
venue's answer is given up on at `answer_timeout_s` (30 s): before, nothing sent
the cancel again after that, and the order worked on at the venue after a kill.
Real QuickFIX sessions (`conftest.Rig`); the simulated venue is made to swallow
cancels, as a broken venue would. No drain runs here: what is sent again, the
gateway sends by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from knightwatch.gateway import fields as F
from knightwatch.state import Scope

from .conftest import Rig, eventually
from .test_gateway import rest


class Swallow:
    """The venue takes cancels (one each, or mass) and answers none until `answer` is set,
    or, with `first`, none of the first `first` and the others once `go` is set."""

    def __init__(self, rig: Rig, monkeypatch: pytest.MonkeyPatch, first: int | None = None) -> None:
        self.seen: list[str] = []
        self.answer = False
        self.go = threading.Event()
        venue = rig.venue
        real_cancel, real_mass = venue._cancel, venue._mass_cancel

        def cancel(msg: F.In, sid: Any, key: str) -> None:
            self.seen.append(msg[F.CL_ORD_ID])
            if first is not None and len(self.seen) > first:
                self.answer = self.go.wait(5)
            if self.answer:
                real_cancel(msg, sid, key)

        def mass(msg: F.In, sid: Any, key: str) -> None:
            self.seen.append(msg[F.CL_ORD_ID])
            if self.answer:
                real_mass(msg, sid, key)

        monkeypatch.setattr(venue, "_cancel", cancel)
        monkeypatch.setattr(venue, "_mass_cancel", mass)


def kill(rig: Rig, scope: Scope, key: str) -> list[str]:
    """What a node runtime does: latch the halt, then cancel the scope at the venue."""
    rig.guard.halt(scope, key, "runaway", "ops")
    return rig.gateway.cancel_scope(scope, key, "runaway")


def resends(rig: Rig) -> int:
    """The fresh cancels the gateway has sent (each recorded just after it went)."""
    return len(rig.events("kill_cancel_resent"))


def all_read(rig: Rig, swallow: Swallow) -> None:
    """Wait until the venue has read every cancel the gateway sent (the kill's and each
    fresh one), so that a later count at the venue measures only what is sent later."""
    eventually(lambda: len(swallow.seen) == 1 + resends(rig), what="the venue read every cancel")


def quiet_for(pred_count: Callable[[], int], seconds: float) -> int:
    """The count after `seconds`, asserting it never moved meanwhile."""
    before = pred_count()
    time.sleep(seconds)
    after = pred_count()
    assert after == before, f"{after - before} more sent after it should have stopped"
    return after


@pytest.mark.parametrize(("scope", "key"), [(Scope.STRATEGY, "OMS1"), (Scope.FLEET, "fleet")])
def test_a_kill_cancel_the_venue_never_answers_is_sent_again_until_it_is_answered(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch, scope: Scope, key: str
) -> None:
    """A kill (one cancel per order, or the venue's mass cancel) the venue takes and never
    answers. At each `answer_timeout_s` the gateway sends the order a fresh cancel of its
    own, recorded `kill_cancel_resent` each time, one per timeout (never a flood), until
    the venue answers one: the order is cancelled, and nothing more is sent."""
    rig = rig_factory(gateway={"answer_timeout_s": 0.5}).start().ready()
    rest(rig, "K1")
    swallow = Swallow(rig, monkeypatch)
    assert kill(rig, scope, key) == ["OMS1:K1"]
    eventually(lambda: len(swallow.seen) >= 3, what="the kill's cancel sent again, twice")
    resent = [e["data"] for e in rig.events("kill_cancel_resent")]
    # recorded just after it was sent: the venue may not have read the last one yet
    eventually(lambda: len(swallow.seen) > len(resent), what="the recorded resends at the venue")
    assert {r["why"] for r in resent} == {"answer_timeout"}
    assert all(r["order_id"] == "OMS1:K1" for r in resent)
    assert [r["clordid"] for r in resent] == swallow.seen[1 : len(resent) + 1]
    assert [r["previous"] for r in resent] == swallow.seen[: len(resent)]
    # bounded: one fresh cancel per order per timeout (0.5 s here, swept every 0.125 s),
    # counted where it is sent (the venue may read late ones bunched on a loaded machine)
    start, t0 = resends(rig), time.monotonic()
    time.sleep(1.0)
    assert resends(rig) - start <= (time.monotonic() - t0) / 0.5 + 1
    swallow.answer = True
    eventually(lambda: not rig.gateway.book.live(), what="K1 cancelled at last")
    assert rig.venue.working() == [] and rig.guard.working_qty("L000") == (0, 0)
    all_read(rig, swallow)  # one sent before the answer came may still be on its way
    quiet_for(lambda: len(swallow.seen), 1.2)


def test_a_resume_of_the_kill_ends_the_resends(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway cancels again only while the kill is in force: once the Guard no longer
    holds the kill's scope halted, an unanswered cancel is not sent again."""
    rig = rig_factory(gateway={"answer_timeout_s": 0.5}).start().ready()
    rest(rig, "K1")
    swallow = Swallow(rig, monkeypatch)
    kill(rig, Scope.STRATEGY, "OMS1")
    eventually(lambda: rig.events("kill_cancel_resent"), what="the kill's cancel sent again")
    rig.guard.resume(Scope.STRATEGY, "OMS1", "all clear", "ops")
    time.sleep(0.6)  # a cancel sent just before the resume still times out
    all_read(rig, swallow)
    quiet_for(lambda: len(swallow.seen), 1.5)
    assert [o.clordid for o in rig.gateway.book.live()] == ["K1"]


def test_a_kill_cancel_in_flight_when_the_venue_session_drops_is_sent_again_at_the_logon(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill's cancel reaches the venue, which never answers it, and the venue session
    drops (the answer lost with it, or the cancel forgotten by a sequence reset). Before,
    nothing was sent at the logon: the cancel counted in flight for `answer_timeout_s`
    (30 s), and after it nothing sent another. At the logon the order gets a fresh
    cancel (`kill_cancel_resent`, why venue_logon), which the venue answers."""
    rig = rig_factory(venue={"cancel_on_disconnect": False}).start().ready()
    rest(rig, "A")
    swallow = Swallow(rig, monkeypatch)
    kill(rig, Scope.STRATEGY, "OMS1")
    eventually(lambda: swallow.seen, what="the kill's cancel reached the venue")
    session = F.fix().Session.lookupSession(rig.gateway.venue_sid)
    session.logout("test: venue session down")
    eventually(lambda: not rig.gateway.venue_up, what="venue session down")
    swallow.answer = True  # the venue answers what it gets from now on
    session.logon()
    eventually(lambda: rig.gateway.venue_up, what="venue session back")
    eventually(lambda: not rig.gateway.book.live(), what="A cancelled after the logon")
    assert rig.venue.working() == [] and rig.guard.working_qty("L000") == (0, 0)
    (resent,) = [e["data"] for e in rig.events("kill_cancel_resent")]
    assert (resent["why"], resent["previous"]) == ("venue_logon", swallow.seen[0])
    assert rig.gateway.book.requests == {}


def test_a_kill_cancel_in_flight_when_the_venue_resets_its_numbers_is_sent_again(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The venue session skips its numbers ahead (a SequenceReset that is no gap fill)
    while a kill's cancel awaits its answer: that answer may be among what is never
    resent. Before, the cancel counted in flight until `answer_timeout_s` and nothing
    sent another. A fresh cancel goes out at once (`kill_cancel_resent`, why
    venue_sequence_reset)."""
    rest(rig, "A")
    swallow = Swallow(rig, monkeypatch, first=1)
    kill(rig, Scope.STRATEGY, "OMS1")
    eventually(lambda: swallow.seen, what="the kill's cancel reached the venue")
    vsid = F.fix().SessionID(rig.begin, rig.venue_comp, rig.gw_comp)
    session = F.fix().Session.lookupSession(vsid)
    msg = F.fix().Message()
    msg.getHeader().setField(F.MSG_TYPE, F.SEQUENCE_RESET)
    ahead = session.getExpectedSenderNum() + 5  # what lies between is skipped
    msg.setField(F.NEW_SEQ_NO, str(ahead))
    assert F.send(msg, vsid)
    session.setNextSenderMsgSeqNum(ahead)  # the venue's next message carries it
    swallow.go.set()  # (not before: an answer sent under the old numbers is refused)
    eventually(lambda: not rig.gateway.book.live(), what="A cancelled after the reset")
    (resent,) = [e["data"] for e in rig.events("kill_cancel_resent")]
    assert (resent["why"], resent["previous"]) == ("venue_sequence_reset", swallow.seen[0])
    assert rig.venue.working() == [] and rig.guard.working_qty("L000") == (0, 0)
