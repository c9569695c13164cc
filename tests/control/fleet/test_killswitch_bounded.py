"""A kill switch keeps nothing of a command once the command is over, however it ended.

The switch keeps, per command, what a confirmation must match, the arrivals, the
still-working reports and the waiter; and per slot the last entry it stored (its
compare-and-swap shortcut). A console or a supervisor runs for months: before, a resume
whose store write failed (the control plane did not answer, or the write was refused) or
whose caller gave up kept its command's entries for good, and every slot ever written
(each symbol, each strategy, each mistyped node id) stayed remembered.
"""

from __future__ import annotations

import asyncio

import pytest

from knightwatch.clock import SimClock
from knightwatch.control.fleet import killswitch
from knightwatch.control.fleet.killswitch import KillSwitch, KillSwitchError
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.site import Site
from knightwatch.state import Scope

from ...identities import BOB, switch
from ..conftest import Backend
from .test_killswitch import MS, _fleet


def _held(ks: KillSwitch) -> dict[str, int]:
    """How many entries each per-command map of `ks` holds."""
    return {
        "arrivals": len(ks._arrivals),
        "sent": len(ks._sent),
        "working": len(ks._working),
        "waiting": len(ks._waiting),
    }


NONE_HELD = {"arrivals": 0, "sent": 0, "working": 0, "waiting": 0}


async def test_commands_collected_timed_out_or_refused_leave_nothing_behind(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kills confirmed, kills timed out, node kills naming no member, resumes applied and
    resumes refused as stale, many times over: the per-command maps end empty after each,
    and the slots remembered stay within `STORED_MAX` (before: one per slot ever written)."""
    monkeypatch.setattr(killswitch, "STORED_MAX", 3, raising=False)
    clock = SimClock(5_000 * MS)
    nodes = await _fleet(backend, clock, 1)
    operator = switch(await backend.plane("alice"), clock, "alice")
    try:
        for i in range(4):
            clock.advance(MS)
            halt = await operator.kill(Scope.FLEET, "", f"stop {i}", timeout_s=10.0)
            assert halt.ok, halt
            assert _held(operator) == NONE_HELD
            timed_out = await operator.kill(
                Scope.FLEET, "", f"again {i}", timeout_s=0.1, targets=["n1", "n9"]
            )
            assert timed_out.missing == ["n9"], timed_out
            assert _held(operator) == NONE_HELD
            typo = await operator.kill(Scope.NODE, f"nx{i}", f"typo {i}", timeout_s=10.0)
            assert typo.missed_its_node, typo
            assert _held(operator) == NONE_HELD
            await operator.kill(Scope.SYMBOL, f"S{i}", f"symbol {i}", timeout_s=0.1)
            clock.advance(MS)
            stale = (await operator.request_resume(Scope.FLEET, "", "fixed")).cosigned(BOB.key)
            clock.advance(MS)
            await operator.kill(Scope.FLEET, "", f"newer {i}", timeout_s=10.0)
            with pytest.raises(KillSwitchError, match="is stale"):
                await operator.apply_resume(stale, timeout_s=10.0)
            assert _held(operator) == NONE_HELD
            clock.advance(MS)
            resumed = await operator.resume(
                Scope.FLEET, "", "fixed", timeout_s=10.0, approvers=(BOB,)
            )
            assert resumed.ok, resumed
            assert _held(operator) == NONE_HELD
            assert len(operator._stored) <= 3, list(operator._stored)
    finally:
        for node in nodes:
            await node.stop()


async def test_a_resume_whose_store_write_fails_or_is_abandoned_leaves_nothing_behind(
    site: Site,
) -> None:
    """The resume is applied through a connection that may read the kill state but not
    write it (carol views), so its store write never succeeds. Before, each attempt that
    failed, and each the caller gave up on while it waited, kept its command's entries in
    the switch for as long as the process ran."""
    alice = await site.connect("alice")
    carol = await site.connect("carol")
    operator = site.killswitch(alice, "alice")
    console = site.killswitch(carol, "carol")
    try:
        halt = await operator.kill(Scope.FLEET, "", "runaway", timeout_s=0.2)
        assert halt.revision is not None, halt
        request = await operator.request_resume(Scope.FLEET, "", "fixed")
        resume = request.cosigned(site.signer("bob").key)
        for _ in range(2):
            with pytest.raises(ControlPlaneUnavailable):
                await console.apply_resume(resume, timeout_s=0.2)
            assert _held(console) == NONE_HELD
        # the person closes the console's request while the write is pending
        applying = asyncio.create_task(console.apply_resume(resume, timeout_s=0.2))
        deadline = asyncio.get_running_loop().time() + 15.0
        while resume.command_id not in console._sent:
            assert asyncio.get_running_loop().time() < deadline, "the write never started"
            await asyncio.sleep(0.005)
        applying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await applying
        assert _held(console) == NONE_HELD
    finally:
        await carol.close()
        await alice.close()
