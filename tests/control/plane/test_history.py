"""The store's history decides whether a stored resume lifts the halt it names."""

from __future__ import annotations

import re

import msgspec
import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.plane.history import (
    MALFORMED_KEY,
    UNVERIFIED_ACTOR,
    ResumeProofs,
    held_halted,
    unproven_resume,
    unverified_id,
)
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import STATE_HISTORY
from knightwatch.control.plane.wire import StateEntry
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import Refused, TrustReason

from ...identities import BOB, switch, trust
from ..fleet_fixtures import plane_on


class CountingPlane(MemoryControlPlane):
    """The memory backend, counting how often the history is read."""

    reads = 0

    async def previous_state(
        self, scope: Scope, key: str, revision: int
    ) -> tuple[StateEntry | None, int] | None:
        self.reads += 1
        return await super().previous_state(scope, key, revision)


async def test_a_resume_stored_over_its_halt_is_proven_and_a_halt_needs_no_proof() -> None:
    plane = await plane_on(MemoryFabric())
    ks = switch(plane, SystemClock())
    kill = await ks.kill(Scope.FLEET, "", "stop", timeout_s=0.05, targets=[])
    assert kill.revision is not None
    assert await unproven_resume(plane, kill.entry, kill.revision) is None
    resumed = await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    assert resumed.revision is not None
    assert resumed.entry.supersedes == kill.entry.command_id
    assert await unproven_resume(plane, resumed.entry, resumed.revision) is None


async def test_the_same_signed_resume_stored_again_over_a_newer_kill_is_refused() -> None:
    plane = await plane_on(MemoryFabric())
    ks = switch(plane, SystemClock())
    await ks.kill(Scope.FLEET, "", "first", timeout_s=0.05, targets=[])
    r1 = await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    await ks.kill(Scope.FLEET, "", "second", timeout_s=0.05, targets=[])
    revision = await plane.put_state(r1.entry)  # a plain put, past the kill switch
    refused = await unproven_resume(plane, r1.entry, revision)
    assert refused is not None and refused.reason is TrustReason.REPLAYED
    assert "stored again over a later write" in refused.detail


async def test_a_resume_naming_another_halt_than_the_one_before_it_is_refused() -> None:
    """Decided on the right revision but naming a different halt: it lifts nothing."""
    plane = await plane_on(MemoryFabric())
    ks = switch(plane, SystemClock())
    kill = await ks.kill(Scope.FLEET, "", "stop", timeout_s=0.05, targets=[])
    assert kill.revision is not None
    request = await ks.request_resume(Scope.FLEET, "", "fixed")
    other = msgspec.structs.replace(request, supersedes="somebody-elses-kill")
    revision = await plane.put_state(other, expected_revision=kill.revision)
    refused = await unproven_resume(plane, other, revision)
    assert refused is not None and "holds " + kill.entry.command_id[:24] in refused.detail


async def test_a_resume_as_a_slots_first_write_or_beyond_its_history_is_refused() -> None:
    clock = SystemClock()
    plane = await plane_on(MemoryFabric())
    ks = switch(plane, clock)
    await ks.kill(Scope.FLEET, "", "stop", timeout_s=0.05, targets=[])
    r1 = await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    empty = await plane_on(MemoryFabric())
    first = await empty.put_state(r1.entry)
    refused = await unproven_resume(empty, r1.entry, first)
    assert refused is not None and "keeps no earlier write" in refused.detail
    for i in range(STATE_HISTORY + 1):
        await ks.kill(Scope.FLEET, "", f"again {i}", timeout_s=0.05, targets=[])
    late = await plane.put_state(r1.entry)
    assert await unproven_resume(plane, r1.entry, late) is not None


async def test_a_resume_written_over_a_readers_halt_is_proven() -> None:
    """A resume decided on a slot no reader trusts may name the halt readers hold for it
    (`unverified_id` of that revision): stored right over that revision, it is proven."""
    plane = await plane_on(MemoryFabric())
    ks = switch(plane, SystemClock())
    forged = StateEntry(Scope.FLEET, "fleet", TradingState.ACTIVE, "thaw", "mallory", "f1", 1)
    revision = await plane.put_state(forged)
    resume = StateEntry(Scope.FLEET, "fleet", TradingState.ACTIVE, "fixed", "alice", "r1", 2,
                        supersedes=unverified_id("fleet.fleet", revision),
                        decided_on=revision)  # fmt: skip
    stored = await plane.put_state(resume, expected_revision=revision)
    assert await unproven_resume(plane, resume, stored) is None
    await ks.kill(Scope.FLEET, "", "stop", timeout_s=0.05, targets=[])
    again = await plane.put_state(resume)
    assert await unproven_resume(plane, resume, again) is not None


def test_the_halt_readers_hold_names_the_revision_and_why() -> None:
    halt = held_halted("strategy.mm", 7, "does not verify")
    assert (halt.scope, halt.key, halt.state) == (Scope.STRATEGY, "mm", TradingState.HALTED)
    assert halt.actor == UNVERIFIED_ACTOR and halt.command_id == unverified_id("strategy.mm", 7)
    assert "revision 7 does not verify" in halt.reason


@pytest.mark.parametrize("stored_key", ["strategy.a.b", "fleet.x", "strategy.=zz", "strategy"])
def test_a_malformed_stored_key_is_refused_naming_its_reason_code(stored_key: str) -> None:
    """No tool can address a kill-state key that is no canonical slot, so no reader holds
    it halted (it could never be resumed); the refusal names the reason code and the key,
    so a reader that logs it says which key and why."""
    with pytest.raises(ValueError, match=f"^{MALFORMED_KEY}: '{re.escape(stored_key)}'"):
        held_halted(stored_key, 9, "deleted")


async def test_proofs_read_the_history_once_per_stored_write() -> None:
    fabric = MemoryFabric()
    plane = CountingPlane(fabric)
    await plane.connect()
    ks = switch(plane, SystemClock())
    await ks.kill(Scope.FLEET, "", "first", timeout_s=0.05, targets=[])
    r1 = await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    assert r1.revision is not None
    proofs = ResumeProofs(plane)
    plane.reads = 0
    for _ in range(3):
        assert await proofs.check(r1.entry, r1.revision) is None
    assert plane.reads == 1
    await ks.kill(Scope.FLEET, "", "second", timeout_s=0.05, targets=[])
    replay = await plane.put_state(r1.entry)
    for _ in range(2):
        refused = await proofs.check(r1.entry, replay)
        assert refused is not None and refused.reason is TrustReason.REPLAYED
    assert plane.reads == 2


async def test_judge_gives_the_signers_of_what_is_in_force_and_refuses_the_rest() -> None:
    """One answer for every reader (kill switch, console, status): signatures, then history."""
    plane = await plane_on(MemoryFabric())
    ks = switch(plane, SystemClock())
    proofs = ResumeProofs(plane)
    roster, now = trust().roster, SystemClock().time_ns()
    await ks.kill(Scope.FLEET, "", "first", timeout_s=0.05, targets=[])
    r1 = await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    assert r1.revision is not None
    checked = await proofs.judge(r1.entry, r1.revision, roster, now)
    assert checked.approvers == ("bob",)
    forged = msgspec.structs.replace(r1.entry, reason="something else")  # not what was signed
    with pytest.raises(Refused) as bad:
        await proofs.judge(forged, r1.revision, roster, now)
    assert bad.value.reason is TrustReason.PAYLOAD_MISMATCH
    await ks.kill(Scope.FLEET, "", "second", timeout_s=0.05, targets=[])
    revision = await plane.put_state(r1.entry)  # the old resume, stored again over the kill
    with pytest.raises(Refused) as replayed:
        await proofs.judge(r1.entry, revision, roster, now)
    assert replayed.value.reason is TrustReason.REPLAYED
    with pytest.raises(Refused):
        await proofs.judge(r1.entry, r1.revision, None, now)  # no roster: nothing verifies
