"""`ResumeProofs.judge` judges a stored resume at the store's own write time, as nodes do.

The console, `status` and the kill switch read what is in force through it. A resume
a starting node refuses (a one-person resume dated into closed market hours, one
dated back before its signer's revocation) must not read as in force to them: the
node holds its slot halted. Real nats-server (authorization on) and the memory
backend with a server clock, each with a node that starts on the same store.
"""

from __future__ import annotations

import datetime
import uuid

import pytest

from knightwatch.clock import NS_PER_S, SimClock, SystemClock
from knightwatch.control.fleet.freeze import kill_in_force
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.history import ResumeProofs
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import (
    ABSENT,
    STATE_HISTORY,
    ControlPlane,
    ControlPlaneUnavailable,
)
from knightwatch.control.plane.wire import FLEET_KEY, StateEntry
from knightwatch.control.site import Site
from knightwatch.flags.activation import MarketHours
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import Checked, Refused, TrustReason
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import ApprovalPolicy, SecondApprover
from knightwatch.trust.store import TrustStore

from ..fleet_fixtures import POLICY

HOUR_NS = 3600 * NS_PER_S


async def halt_then_resume(
    plane: ControlPlane, kit: Kit, now: int, issued_ns: int, *signers: str
) -> tuple[StateEntry, int]:
    """alice halts the fleet in the store, then stores a resume of it signed by `signers`
    and dated `issued_ns`, compare-and-set right over the halt (its history is intact)."""
    halt = StateEntry(
        Scope.FLEET, FLEET_KEY, TradingState.HALTED, "incident", "alice", uuid.uuid4().hex,
        now - 13 * HOUR_NS, now + HOUR_NS,
    ).signed(kit.signer("alice").key)  # fmt: skip
    revision = await plane.put_state(halt, expected_revision=ABSENT)
    resume = StateEntry(
        Scope.FLEET, FLEET_KEY, TradingState.ACTIVE, "fixed", "alice", uuid.uuid4().hex,
        issued_ns, now + 10 * HOUR_NS, supersedes=halt.command_id, decided_on=revision,
    ).signed(*(kit.signer(n).key for n in signers))  # fmt: skip
    return resume, await plane.put_state(resume, expected_revision=revision)


async def judged(
    plane: ControlPlane, trust: TrustStore, entry: StateEntry, revision: int, now: int
) -> Checked | Refused:
    try:
        return await ResumeProofs(plane).judge(entry, revision, trust.roster, now)
    except Refused as exc:
        return exc


async def node_on(
    plane: ControlPlane, trust: TrustStore, kit: Kit, now: SimClock | None
) -> NodeRuntime:
    clock = now if now is not None else SystemClock()
    guard = Guard(Limits(lease_timeout_s=POLICY.lease_timeout_s), node="n1", clock=clock)
    guard.arm("test")
    node = NodeRuntime(
        guard, plane, clock=clock, policy=POLICY, trust=trust, signer=kit.signer("n1")
    )
    await node.join()
    return node


async def started_node(site: Site) -> NodeRuntime:
    return await node_on(await site.connect("n1"), site.store(), site.kit, None)


async def close(node: NodeRuntime) -> None:
    await node.stop()
    await node.plane.close()


async def test_a_one_person_resume_dated_into_closed_hours_is_refused_where_nodes_refuse_it(
    market_site: Site,
) -> None:
    """Market open now (a second person needed), the resume dated 12 h back into closed
    hours and signed by alice alone: the console, `status` and the kill switch see the
    slot halted, as a starting node holds it."""
    now = SystemClock().time_ns()
    alice = await market_site.connect("alice")
    try:
        resume, revision = await halt_then_resume(
            alice, market_site.kit, now, now - 12 * HOUR_NS, "alice"
        )
        verdict = await judged(alice, market_site.store(), resume, revision, now)
        assert isinstance(verdict, Refused), verdict
        assert verdict.reason is TrustReason.APPROVAL_MISSING, verdict
        ks = market_site.killswitch(alice, "alice")
        assert (await ks.current(Scope.FLEET, FLEET_KEY))[2] is False
        # the freeze too: the fleet kill is still in force, so nothing that adds risk applies
        frozen = await kill_in_force(alice, market_site.store())
        assert frozen is not None and frozen.state is TradingState.HALTED
        assert "approval_missing" in frozen.reason, frozen.reason
    finally:
        await alice.close()
    node = await started_node(market_site)
    try:
        assert node.guard.trading_state(Scope.FLEET, FLEET_KEY) is TradingState.HALTED
        assert node.refused[TrustReason.APPROVAL_MISSING] == 1, node.last_refusal
    finally:
        await close(node)


async def test_a_resume_dated_back_before_its_approvers_revocation_is_refused(site: Site) -> None:
    """bob is revoked; a resume he co-signed, dated an hour before, is stored afterwards:
    his key is not valid when it was stored, for the readers as for a starting node."""
    now = SystemClock().time_ns()
    await site.publish(site.kit.revoke("bob", now))
    alice = await site.connect("alice")
    try:
        resume, revision = await halt_then_resume(
            alice, site.kit, now, now - HOUR_NS, "alice", "bob"
        )
        verdict = await judged(alice, site.store(), resume, revision, SystemClock().time_ns())
        assert isinstance(verdict, Refused), verdict
        assert verdict.reason is TrustReason.KEY_NOT_VALID, verdict
        frozen = await kill_in_force(alice, site.store())
        assert frozen is not None and "key_not_valid" in frozen.reason, frozen
    finally:
        await alice.close()
    node = await started_node(site)
    try:
        assert node.guard.trading_state(Scope.FLEET, FLEET_KEY) is TradingState.HALTED
        assert node.refused[TrustReason.KEY_NOT_VALID] == 1, node.last_refusal
    finally:
        await close(node)


async def test_a_two_person_resume_stays_in_force_after_its_approver_is_revoked(
    site: Site,
) -> None:
    now = SystemClock().time_ns()
    alice = await site.connect("alice")
    try:
        resume, revision = await halt_then_resume(alice, site.kit, now, now, "alice", "bob")
        await site.publish(site.kit.revoke("bob", SystemClock().time_ns()))
        verdict = await judged(alice, site.store(), resume, revision, SystemClock().time_ns())
        assert isinstance(verdict, Checked), verdict
        assert verdict.approvers == ("bob",)
        ks = site.killswitch(alice, "alice")
        assert (await ks.current(Scope.FLEET, FLEET_KEY))[2] is True
        assert await kill_in_force(alice, site.store()) is None
    finally:
        await alice.close()


# --- the memory backend, its "server" clock set ------------------------------------------

OPEN = int(datetime.datetime(2024, 3, 5, 14, tzinfo=datetime.UTC).timestamp()) * NS_PER_S
"""A Tuesday, 14:00 UTC: inside 09:00-17:00 UTC hours; 12 h earlier they were closed."""


def market_kit() -> Kit:
    hours = MarketHours(timezone="UTC", open="09:00", close="17:00", weekdays=tuple(range(7)))
    policy = ApprovalPolicy(resume=SecondApprover.MARKET_HOURS, market_hours=hours)
    return Kit(now_ns=0, nodes=("n1",), approvals=policy)


class CountingPlane(MemoryControlPlane):
    """The memory backend, counting how often a write's time is read."""

    reads = 0

    async def stored_ns(self, scope: Scope, key: str, revision: int) -> int | None:
        self.reads += 1
        return await super().stored_ns(scope, key, revision)


async def counting_plane(fabric: MemoryFabric) -> CountingPlane:
    plane = CountingPlane(fabric)
    await plane.connect()
    return plane


async def test_memory_a_one_person_resume_dated_into_closed_hours_is_refused() -> None:
    kit = market_kit()
    clock = SimClock(OPEN)
    fabric = MemoryFabric(clock=clock)
    plane = await counting_plane(fabric)
    resume, revision = await halt_then_resume(plane, kit, OPEN, OPEN - 12 * HOUR_NS, "alice")
    verdict = await judged(plane, kit.store(), resume, revision, OPEN)
    assert isinstance(verdict, Refused) and verdict.reason is TrustReason.APPROVAL_MISSING
    node = await node_on(await counting_plane(fabric), kit.store(), kit, clock)
    try:
        assert node.guard.trading_state(Scope.FLEET, FLEET_KEY) is TradingState.HALTED
        assert node.refused[TrustReason.APPROVAL_MISSING] == 1, node.last_refusal
    finally:
        await node.stop()


async def test_memory_a_two_person_resume_is_in_force_and_its_time_read_once() -> None:
    kit = market_kit()
    plane = await counting_plane(MemoryFabric(clock=SimClock(OPEN)))
    resume, revision = await halt_then_resume(plane, kit, OPEN, OPEN, "alice", "bob")
    proofs = ResumeProofs(plane)
    for _ in range(3):
        checked = await proofs.judge(resume, revision, kit.roster, OPEN)
        assert checked.approvers == ("bob",)
    assert plane.reads == 1  # a revision's write time never changes
    kill = StateEntry(
        Scope.STRATEGY, "mm", TradingState.HALTED, "stop", "alice", "k1", OPEN, OPEN + HOUR_NS
    ).signed(kit.signer("alice").key)
    kill_revision = await plane.put_state(kill)
    assert (await proofs.judge(kill, kill_revision, kit.roster, OPEN)).actor == "alice"
    assert plane.reads == 1  # a kill is never judged by its write time


async def test_memory_a_resume_whose_write_the_store_no_longer_holds_is_refused_stale() -> None:
    """A reader judging a snapshot the slot has since moved past (more than the history
    the store keeps): when the resume was stored is unknown, so it is refused, as a
    node refuses it, naming the revision."""
    kit = market_kit()
    plane = await counting_plane(MemoryFabric(clock=SimClock(OPEN)))
    resume, revision = await halt_then_resume(plane, kit, OPEN, OPEN, "alice", "bob")
    for i in range(STATE_HISTORY + 1):
        kill = StateEntry(
            Scope.FLEET, FLEET_KEY, TradingState.HALTED, f"again {i}", "alice", f"k{i}",
            OPEN, OPEN + HOUR_NS,
        ).signed(kit.signer("alice").key)  # fmt: skip
        await plane.put_state(kill)
    verdict = await judged(plane, kit.store(), resume, revision, OPEN)
    assert isinstance(verdict, Refused) and verdict.reason is TrustReason.STALE, verdict
    assert f"no longer holds revision {revision} of fleet.fleet" in verdict.detail


async def test_memory_an_unreachable_store_is_not_a_verdict() -> None:
    """The callers hold a store they cannot read as unreadable (the console names it,
    `status` exits): the read's `ControlPlaneUnavailable` is not turned into a refusal."""
    kit = market_kit()
    fabric = MemoryFabric(clock=SimClock(OPEN))
    plane = await counting_plane(fabric)
    resume, revision = await halt_then_resume(plane, kit, OPEN, OPEN, "alice", "bob")
    await fabric.set_reachable(False)
    with pytest.raises(ControlPlaneUnavailable):
        await ResumeProofs(plane).judge(resume, revision, kit.roster, OPEN)
