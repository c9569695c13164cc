"""A Guard halt under a signed halt stored over it still needs its cause.

A node's Guard halts on its loss limit; then an operator kills that node, or the
supervisor halts it, or a resume request halts the slot again first (its stored entry
was not trusted). The slot's stored write is now that signed halt, and the `cause` item
read only it: "operator or supervisor halt: nothing to acknowledge", and two people
resumed the slot with the loss never reconciled (a node restarted in between holds the
halt on top alone). A halt stored over another lifts nothing of it: every Guard halt
back to the last resume that verifies is asked for, whoever halted on top.
"""

from __future__ import annotations

import pytest

from knightwatch.control.plane.memory import MemoryControlPlane
from knightwatch.control.plane.wire import StateEntry
from knightwatch.incident.preflight import PreflightConfig, run_preflight
from knightwatch.state import Scope, TradingState

from ..identities import sign, trust
from .fixtures import Fleet, fleet
from .test_preflight import admitted, cause_asked_for, guard_halt, item, only_failure

CFG = PreflightConfig(listen_s=0.2)
HOUR_NS = 3_600 * 1_000_000_000


async def _halt_on_top(f: Fleet, plane: MemoryControlPlane, who: str, first: int) -> None:
    """A signed halt of n1 stored over the Guard halt at revision `first`."""
    now = f.clock.time_ns()
    if who == "request re-halts":
        forged = StateEntry(
            Scope.NODE, "n1", TradingState.ACTIVE, "x", "alice", "r1", now,
            expires_ns=now + HOUR_NS, supersedes="g1", decided_on=first,
        )  # fmt: skip
        await plane.put_state(forged)  # lifts nothing: the request halts the slot again
        await (await f.killswitch()).request_resume(Scope.NODE, "n1", "reconciled")
    elif who == "forged over the kill":
        await (await f.killswitch()).kill(Scope.NODE, "n1", "look", timeout_s=0.5)
        stored, rev = await plane.get_state(Scope.NODE, "n1")
        assert stored is not None
        forged = StateEntry(
            Scope.NODE, "n1", TradingState.ACTIVE, "x", "alice", "r1", now,
            expires_ns=now + HOUR_NS, supersedes=stored.command_id, decided_on=rev,
        )  # fmt: skip
        await plane.put_state(forged)
    else:
        ks = await f.killswitch("alice" if who == "operator" else "supervisor")
        await ks.kill(Scope.NODE, "n1", f"{who}: look", timeout_s=0.5)
    stored, _ = await plane.get_state(Scope.NODE, "n1")
    assert stored is not None and not stored.actor.startswith("guard:"), stored


@pytest.mark.parametrize(
    "who", ["operator", "supervisor", "request re-halts", "forged over the kill"]
)
async def test_a_guard_halt_under_a_signed_halt_still_needs_its_cause(who: str) -> None:
    f = await fleet("n1", release="r1")
    plane = await f.plane()
    await admitted(plane, f)
    first = await plane.put_state(guard_halt("g1", f.clock.time_ns()))
    await _halt_on_top(f, plane, who, first)
    await cause_asked_for(plane, f)
    await f.stop()


async def test_every_guard_halt_under_the_halts_on_top_is_asked_for() -> None:
    """Two Guard halts, each under an operator's kill: both codes are asked for."""
    f = await fleet("n1", release="r1")
    plane = await f.plane()
    await admitted(plane, f)
    ks = await f.killswitch()
    await plane.put_state(guard_halt("g1", f.clock.time_ns()))
    await ks.kill(Scope.NODE, "n1", "look", timeout_s=0.5)
    await plane.put_state(guard_halt("g2", f.clock.time_ns() + 1, "throttle"))
    await ks.kill(Scope.NODE, "n1", "look again", timeout_s=0.5)
    checklist = await run_preflight(
        plane, Scope.NODE, "n1", clock=f.clock, config=CFG, acknowledged={"throttle"},
        trust=trust(),
    )  # fmt: skip
    assert only_failure(checklist) == "cause", checklist.summary()
    detail = item(checklist, "cause")[1]
    assert "--ack loss_limit" in detail and "--ack throttle" not in detail, detail
    assert "under the halt by alice stored at revision" in detail, detail
    await f.stop()


async def test_a_guard_halt_a_verified_resume_lifted_is_not_asked_for_again() -> None:
    """The walk stops at the last resume that verifies: a loss-limit halt lifted by a real
    two-person resume is not dug up from under an operator's later kill."""
    f = await fleet("n1", release="r1")
    plane = await f.plane()
    await admitted(plane, f)
    now = f.clock.time_ns()
    first = await plane.put_state(guard_halt("g1", now))
    resume = StateEntry(
        Scope.NODE, "n1", TradingState.ACTIVE, "reconciled", "alice", "r1", now + 1,
        expires_ns=now + HOUR_NS, supersedes="g1", decided_on=first,
    )  # fmt: skip
    await plane.put_state(sign(resume))
    await (await f.killswitch()).kill(Scope.NODE, "n1", "look", timeout_s=0.5)
    checklist = await run_preflight(
        plane, Scope.NODE, "n1", clock=f.clock, config=CFG, trust=trust()
    )
    assert checklist.passed, checklist.summary()
    assert item(checklist, "cause")[1] == "operator or supervisor halt: nothing to acknowledge"
    await f.stop()
