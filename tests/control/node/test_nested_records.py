"""Stored records a node cannot take: nested too deep to decode, or filed under another key.

msgspec raises RecursionError (not DecodeError) for JSON nested about a thousand deep.
One operator's write to the ramp or flags bucket (or a damaged start history) then
escaped the node's handlers: no node could start, and a live one kept what it held
instead of failing closed. Real nats-server (authorization on), a node in-process.
"""

from __future__ import annotations

from knightwatch.clock import SystemClock
from knightwatch.control.node.flags import NodeFlags, state_key
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import ENCODER, RampRecord, slot_of, starts_key
from knightwatch.control.site import Site
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.state import Scope
from knightwatch.trust.command import TrustReason

from ..fleet_fixtures import POLICY
from ..helpers import eventually

NESTED = b'{"a":' * 5_000 + b"1" + b"}" * 5_000
"""Valid JSON, nested deeper than msgspec decodes (it raises RecursionError)."""


def node_on(site: Site, plane_name: str = "n1") -> NodeRuntime:
    clock = SystemClock()
    guard = Guard(Limits(lease_timeout_s=POLICY.lease_timeout_s), node="n1", clock=clock)
    guard.arm("test")
    node = NodeRuntime(
        guard,
        site.plane(plane_name),
        clock=clock,
        policy=POLICY,
        trust=site.store(),
        signer=site.signer("n1"),
    )
    return node


async def joined(site: Site) -> NodeRuntime:
    node = node_on(site)
    await node.plane.connect()
    await node.join()
    return node


async def close(node: NodeRuntime) -> None:
    await node.stop()
    await node.plane.close()


async def test_a_nested_ramp_record_is_held_tightest_at_start_and_live(site: Site) -> None:
    alice = await site.connect("alice")
    try:
        await alice.put_record(Bucket.RAMP, slot_of(Scope.STRATEGY, "a"), NESTED)
        node = await joined(site)  # before: RecursionError out of the resync
        try:
            assert node.admitted
            assert node.ramp_fraction() == 0.1  # the tightest stage, as for any undecodable
            assert node.guard.limits.version != node.base_limits.version  # scaled
            b = slot_of(Scope.STRATEGY, "b")
            await alice.put_record(Bucket.RAMP, b, NESTED)
            # before: the live handler raised, and the node held nothing for it
            await eventually(lambda: b in node._ramps)
            assert node._ramps[b].reason == "undecodable" and node._ramps[b].holds
        finally:
            await close(node)
    finally:
        await alice.close()


async def test_a_nested_start_history_does_not_stop_the_node_from_starting(site: Site) -> None:
    own = await site.connect("n1")  # only the node writes its start history
    try:
        await own.put_record(Bucket.INCIDENT, starts_key("n1"), NESTED)
    finally:
        await own.close()
    node = await joined(site)  # before: RecursionError out of `join`
    try:
        assert node.admitted
    finally:
        await close(node)


async def test_a_nested_flag_state_is_refused_at_start_and_live(site: Site) -> None:
    alice = await site.connect("alice")
    node = await joined(site)
    try:
        await alice.put_record(Bucket.FLAGS, state_key("f.one"), NESTED)
        flags = NodeFlags(node)
        await flags.start()  # before: RecursionError out of the resync
        assert flags.refused[TrustReason.MALFORMED] == 1
        assert "'state.f.one' cannot be decoded" in flags.last_refusal
        assert flags.get("f.one") is None  # the safe default
        await alice.put_record(Bucket.FLAGS, state_key("f.two"), NESTED)
        # before: the live handler raised, and nothing was refused
        await eventually(lambda: flags.refused[TrustReason.MALFORMED] == 2)
        assert "'state.f.two' cannot be decoded" in flags.last_refusal
    finally:
        await close(node)
        await alice.close()


async def test_a_ramp_record_stored_under_another_slot_is_refused(site: Site) -> None:
    """A ramp record's signature covers its scope and key, not the bucket key it is stored
    under. bob's signed "done" of a strategy's ramp, stored over the fleet's record, is no
    record of the fleet's: refused (`payload_mismatch`), the fleet's ramp held at the
    tightest stage. Before, it replaced the fleet's record and lifted its stage; and the
    check of who may step a resume's ramp up looked at the fleet's resume, not the
    record's own, so an operator who had no part in a resume could lift its ramp so."""
    alice = await site.connect("alice")
    now = SystemClock().time_ns()
    fleet = slot_of(Scope.FLEET, "fleet")
    ramping = RampRecord(
        Scope.FLEET, "fleet", "r-fleet", 1, (0.1, 0.5, 1.0), 0.5, "ramping", "alice", "y", now
    )
    done = RampRecord(Scope.STRATEGY, "x", "r-x", 2, (0.1, 1.0), 1.0, "done", "bob", "z", now + 1)
    try:
        await alice.put_record(
            Bucket.RAMP, fleet, ENCODER.encode(ramping.signed(site.signer("alice").key))
        )
        node = await joined(site)
        try:
            assert node.ramp_fraction() == 0.5
            await alice.put_record(
                Bucket.RAMP, fleet, ENCODER.encode(done.signed(site.signer("bob").key))
            )
            await eventually(lambda: node._ramps[fleet].ramp_id != "r-fleet")
            assert node.ramp_fraction() == 0.1  # before: 1.0, the fleet's ramp lifted
            assert node._ramps[fleet].reason == "refused: payload_mismatch"
        finally:
            await close(node)
    finally:
        await alice.close()
