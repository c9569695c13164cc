"""A Guard halt hidden under a stored resume that lifts nothing still needs its cause.

A resume stored over a Guard halt that does not verify (forged, unsigned) or that was
stored again over a newer halt (replayed) lifts nothing: every node holds the slot halted
as `trust:unverified`. The `cause` item read that stand-in and the resume it stands for
and said "operator or supervisor halt: nothing to acknowledge", so a slot the Guard had
halted on a loss limit was resumed by two people with the loss never reconciled, while
the same halt left as stored needed `--ack loss_limit`. The halt under such a resume (the
slot's write before it) is asked for as if it were the stored one.
"""

from __future__ import annotations

import pytest

from knightwatch.control.plane.wire import StateEntry
from knightwatch.incident.preflight import PreflightConfig, run_preflight
from knightwatch.state import Scope, TradingState

from ..identities import sign, trust
from .fixtures import fleet
from .test_preflight import admitted, cause_asked_for, guard_halt

CFG = PreflightConfig(listen_s=0.2)
HOUR_NS = 3_600 * 1_000_000_000


@pytest.mark.parametrize("how", ["forged", "replayed"])
async def test_a_guard_halt_under_a_resume_that_lifts_nothing_still_needs_its_cause(
    how: str,
) -> None:
    f = await fleet("n1", release="r1")
    plane = await f.plane()
    await admitted(plane, f)
    now = f.clock.time_ns()
    first = await plane.put_state(guard_halt("g1", now))
    resume = StateEntry(
        Scope.NODE, "n1", TradingState.ACTIVE, "reconciled", "alice", "r1", now + 1,
        expires_ns=now + HOUR_NS, supersedes="g1", decided_on=first,
    )  # fmt: skip
    if how == "forged":
        await plane.put_state(resume)  # unsigned: lifts nothing
    else:
        await plane.put_state(sign(resume))  # a real resume, then a new loss-limit halt
        await plane.put_state(guard_halt("g2", now + 2))
        await plane.put_state(sign(resume))  # stored again over it
    detail = await cause_asked_for(plane, f)
    assert "which does not verify and lifts nothing" in detail, detail
    await f.stop()


async def test_an_operator_halt_under_a_forged_resume_needs_nothing_acknowledged() -> None:
    f = await fleet("n1", release="r1")
    plane = await f.plane()
    await admitted(plane, f)
    now = f.clock.time_ns()
    halt = StateEntry(
        Scope.NODE, "n1", TradingState.HALTED, "look", "alice", "h1", now,
        expires_ns=now + HOUR_NS,
    )  # fmt: skip
    first = await plane.put_state(sign(halt))
    forged = StateEntry(
        Scope.NODE, "n1", TradingState.ACTIVE, "x", "alice", "r1", now + 1,
        expires_ns=now + HOUR_NS, supersedes="h1", decided_on=first,
    )  # fmt: skip
    await plane.put_state(forged)
    checklist = await run_preflight(
        plane, Scope.NODE, "n1", clock=f.clock, config=CFG, trust=trust()
    )
    assert checklist.passed, checklist.summary()
    await f.stop()
