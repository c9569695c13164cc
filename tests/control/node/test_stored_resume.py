"""A resume a node adopts from the store is judged at the store's own write time.

Its signers choose its issue time; the server chooses when it was stored. An operator
with write access to the kill state could otherwise date a one-person resume into
closed market hours, or store one held back past its expiry, and every node starting
afterwards would adopt it. Real nats-server (authorization on), a node in-process.
"""

from __future__ import annotations

import uuid

from knightwatch.clock import NS_PER_S, SystemClock
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.protocol import ABSENT
from knightwatch.control.plane.wire import FLEET_KEY, StateEntry
from knightwatch.control.site import Site
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import TrustReason

from ..fleet_fixtures import POLICY

HOUR_NS = 3600 * NS_PER_S


async def store_halt_then(site: Site, issued_ns: int, expires_ns: int, *signers: str) -> StateEntry:
    """alice halts the fleet in the store, then stores a resume of it signed by `signers`
    and dated as given, compare-and-set right over the halt (its history is intact)."""
    alice = await site.connect("alice")
    try:
        now = SystemClock().time_ns()
        halt = StateEntry(
            Scope.FLEET, FLEET_KEY, TradingState.HALTED, "incident", "alice", uuid.uuid4().hex,
            now - 13 * HOUR_NS, now + HOUR_NS,
        ).signed(site.signer("alice").key)  # fmt: skip
        revision = await alice.put_state(halt, expected_revision=ABSENT)
        resume = StateEntry(
            Scope.FLEET, FLEET_KEY, TradingState.ACTIVE, "fixed", "alice", uuid.uuid4().hex,
            issued_ns, expires_ns, supersedes=halt.command_id, decided_on=revision,
        ).signed(*(site.signer(n).key for n in signers))  # fmt: skip
        await alice.put_state(resume, expected_revision=revision)
        return resume
    finally:
        await alice.close()


async def started_node(site: Site) -> NodeRuntime:
    clock = SystemClock()
    guard = Guard(Limits(lease_timeout_s=POLICY.lease_timeout_s), node="n1", clock=clock)
    guard.arm("test")
    node = NodeRuntime(
        guard,
        await site.connect("n1"),
        clock=clock,
        policy=POLICY,
        trust=site.store(),
        signer=site.signer("n1"),
    )
    await node.join()
    return node


async def close(node: NodeRuntime) -> None:
    await node.stop()
    await node.plane.close()


async def test_a_one_person_resume_dated_into_closed_hours_is_refused_at_start(
    market_site: Site,
) -> None:
    """Market open now (a second person needed), the resume dated 12 h back into closed
    hours and signed by alice alone: judged at its stored time, it lacks its approver."""
    now = SystemClock().time_ns()
    await store_halt_then(market_site, now - 12 * HOUR_NS, now + 10 * HOUR_NS, "alice")
    node = await started_node(market_site)
    try:
        assert node.guard.trading_state(Scope.FLEET, FLEET_KEY) is TradingState.HALTED
        assert node.refused[TrustReason.APPROVAL_MISSING] == 1, node.last_refusal
    finally:
        await close(node)


async def test_a_resume_stored_after_its_expiry_is_refused_at_start(site: Site) -> None:
    now = SystemClock().time_ns()
    await store_halt_then(site, now - 2 * NS_PER_S, now - NS_PER_S, "alice", "bob")
    node = await started_node(site)
    try:
        assert node.guard.trading_state(Scope.FLEET, FLEET_KEY) is TradingState.HALTED
        assert node.refused[TrustReason.EXPIRED] == 1, node.last_refusal
    finally:
        await close(node)


async def test_a_two_person_resume_is_adopted_after_its_approver_was_revoked(
    site: Site,
) -> None:
    """bob approved while his key was valid; revoked since, the resume still stands."""
    now = SystemClock().time_ns()
    await store_halt_then(site, now, now + HOUR_NS, "alice", "bob")
    await site.publish(site.kit.revoke("bob", SystemClock().time_ns()))
    node = await started_node(site)
    try:
        assert node.trust.roster is not None
        bob = [m for m in node.trust.roster.members if m.name == "bob"]
        assert bob and all(m.revoked_ns for m in bob)  # the node judges by the new roster
        assert node.guard.trading_state(Scope.FLEET, FLEET_KEY) is TradingState.ACTIVE
        assert sum(node.refused.values()) == 0, node.last_refusal
    finally:
        await close(node)
