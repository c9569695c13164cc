"""A Guard halt buried under several writes that lift nothing still needs its cause.

Every node holds a slot whose stored write does not verify (a forged resume, one
replayed over a newer halt, an unsigned halt, a deleted entry) as `trust:unverified`,
and what it held before that junk is the last write that verifies. The `cause` item
looked back one write only: a loss-limit halt under two such writes (a forged resume
stored twice, a replayed resume stored again, an unsigned halt over it and a forged
resume on top) read as "operator or supervisor halt: nothing to acknowledge", and two
people resumed the slot with its loss never reconciled. The walk goes back over every
write that lifts nothing, to the first that verifies (bounded by the writes the store
keeps), and every Guard halt on the way is asked for.
"""

from __future__ import annotations

import pytest

from knightwatch.control.plane.memory import MemoryControlPlane
from knightwatch.control.plane.wire import StateEntry
from knightwatch.incident.preflight import PreflightConfig, run_preflight
from knightwatch.state import Scope, TradingState

from ..identities import sign, trust
from .fixtures import fleet
from .test_preflight import admitted, cause_asked_for, guard_halt, item, only_failure

CFG = PreflightConfig(listen_s=0.2)
HOUR_NS = 3_600 * 1_000_000_000


def _resume(now: int, lifts: str, decided_on: int, n: int = 1) -> StateEntry:
    return StateEntry(
        Scope.NODE, "n1", TradingState.ACTIVE, "reconciled", "alice", f"r{n}", now + n,
        expires_ns=now + HOUR_NS, supersedes=lifts, decided_on=decided_on,
    )  # fmt: skip


async def _bury(plane: MemoryControlPlane, how: str, now: int) -> None:
    """A verified loss-limit halt, then two or more writes that lift nothing over it."""
    first = await plane.put_state(guard_halt("g1", now))
    if how == "forged twice":
        await plane.put_state(_resume(now, "g1", first))  # unsigned
        await plane.put_state(_resume(now, "g1", first, 2))
    elif how == "replayed twice":
        lifted = await plane.put_state(sign(_resume(now, "g1", first)))  # a real resume
        await plane.put_state(guard_halt("g2", now + 5))  # the loss limit trips again
        resume = sign(_resume(now, "g1", first))
        await plane.put_state(resume)  # stored again over it: lifts nothing
        await plane.put_state(resume)  # and again
        assert lifted
    elif how == "unsigned halt, forged resume":
        halt = StateEntry(
            Scope.NODE, "n1", TradingState.HALTED, "look", "mallory", "h1", now + 1,
            expires_ns=now + HOUR_NS,
        )  # fmt: skip
        rev = await plane.put_state(halt)
        await plane.put_state(_resume(now, "h1", rev, 2))
    else:  # forged resumes, each decided on the one before
        rev = await plane.put_state(_resume(now, "g1", first))
        await plane.put_state(_resume(now, "g1", rev, 2))
        await plane.put_state(_resume(now, "g1", rev, 3))


@pytest.mark.parametrize(
    "how", ["forged twice", "replayed twice", "unsigned halt, forged resume", "forged thrice"]
)
async def test_a_guard_halt_under_writes_that_lift_nothing_still_needs_its_cause(
    how: str,
) -> None:
    f = await fleet("n1", release="r1")
    plane = await f.plane()
    await admitted(plane, f)
    await _bury(plane, how, f.clock.time_ns())
    await cause_asked_for(plane, f)
    await f.stop()


async def test_every_guard_halt_on_the_way_is_asked_for() -> None:
    """An unsigned entry claiming one Guard code over a signed Guard halt on another:
    acknowledging the claim alone does not resume the slot the loss limit halted."""
    f = await fleet("n1", release="r1")
    plane = await f.plane()
    await admitted(plane, f)
    now = f.clock.time_ns()
    await plane.put_state(guard_halt("g1", now))
    claim = StateEntry(
        Scope.NODE, "n1", TradingState.HALTED, "spray", "guard:throttle", "g2", now + 1,
        expires_ns=now + HOUR_NS,
    )  # fmt: skip
    await plane.put_state(claim)  # unsigned: lifts nothing, claims a cause
    checklist = await run_preflight(
        plane, Scope.NODE, "n1", clock=f.clock, config=CFG, acknowledged={"throttle"},
        trust=trust(),
    )  # fmt: skip
    assert only_failure(checklist) == "cause", checklist.summary()
    detail = item(checklist, "cause")[1]
    assert "--ack loss_limit" in detail and "--ack throttle" not in detail, detail
    both = await run_preflight(
        plane, Scope.NODE, "n1", clock=f.clock, config=CFG,
        acknowledged={"throttle", "loss_limit"}, trust=trust(),
    )  # fmt: skip
    assert both.passed, both.summary()
    await f.stop()


async def test_a_guard_halt_a_verified_resume_lifted_is_not_asked_for_again() -> None:
    """The walk stops at the first write that verifies: a halt a real resume lifted is
    not dug up from under later junk."""
    f = await fleet("n1", release="r1")
    plane = await f.plane()
    await admitted(plane, f)
    now = f.clock.time_ns()
    first = await plane.put_state(guard_halt("g1", now))
    lifted = await plane.put_state(sign(_resume(now, "g1", first)))
    halt = StateEntry(
        Scope.NODE, "n1", TradingState.HALTED, "look", "mallory", "h1", now + 3,
        expires_ns=now + HOUR_NS,
    )  # fmt: skip
    rev = await plane.put_state(halt)  # unsigned
    await plane.put_state(_resume(now, "h1", rev, 4))  # forged
    checklist = await run_preflight(
        plane, Scope.NODE, "n1", clock=f.clock, config=CFG, trust=trust()
    )
    assert checklist.passed, checklist.summary()
    assert lifted
    await f.stop()
