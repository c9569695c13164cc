"""`AppliedWaiter`: a node counts as having applied a flag change only by its own record.

The fast-path confirmation subject is open to every node and its payload names any
node, so a real server with authorization on is the only honest place to test that
one node cannot answer for another.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.activate import activate
from knightwatch.control.node.flags import (
    ENCODER,
    SUBJECT_APPLIED,
    FlagApplied,
    NodeFlags,
    applied_key,
    decode_state,
    record_applied,
    state_key,
)
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import NodeStatus, Verdict
from knightwatch.control.site import Site
from knightwatch.flags.activation import ActivationPolicy, ActivationRequest, SecondApprover
from knightwatch.flags.definition import FlagDefinition, Lifecycle
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.state import FlagState, StateUnavailable
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.state import TradingState
from knightwatch.trust.command import TrustReason
from knightwatch.trust.roster import ApprovalPolicy

from ..helpers import eventually

FLAG = "trading.smars.rlp_enabled"
REGISTRY = FlagRegistry.from_definitions(
    [
        FlagDefinition(
            FLAG, "route to RLP", False, True, Lifecycle.ACTIVE, date(2012, 1, 1),
            owner="desk", expires=date(2030, 1, 1),
        )
    ],
    "reg",
)  # fmt: skip


async def test_one_node_cannot_confirm_a_flag_change_for_another(tmp_path: Path) -> None:
    """n2 is a member that never applies anything; n1 sends n2's confirmation for every
    revision on the fast path. `flags set` names n2 as not confirmed; once n2 itself
    records the revision, it is confirmed."""
    site = Site(tmp_path / "site", ("n1", "n2"))
    await site.astart()
    clock = SystemClock()
    planes = [await site.connect(name) for name in ("n1", "n2", "alice")]
    n1, n2, alice = planes
    try:
        now = clock.time_ns()
        status = NodeStatus("n2", "h", 1, now, now, now + 10**10, True, True, TradingState.ACTIVE)
        await n2.put_member(status)

        async def answer_for_n2() -> None:
            for _ in range(30):
                for revision in range(1, 4):
                    claim = FlagApplied(FLAG, "n2", revision, clock.time_ns())
                    await n1.publish(SUBJECT_APPLIED, ENCODER.encode(claim))
                await asyncio.sleep(0.05)

        spoof = asyncio.create_task(answer_for_n2())
        off = ActivationRequest(FLAG, False, "alice", "emergency off", "t", nodes=("n2",))
        result, latencies, missing = await activate(
            alice, site.store(), REGISTRY, ActivationPolicy(), off, clock, 1.0,
            signer=site.signer("alice"),
        )  # fmt: skip
        await spoof
        assert result.accepted and result.state is not None
        assert latencies == {} and missing == ["n2"]

        # n2 applies it itself: its own record (only its identity may write it) confirms it
        revision = result.state.revision

        async def n2_applies() -> None:
            await asyncio.sleep(0.2)
            await record_applied(n2, FlagApplied(FLAG, "n2", revision + 1, clock.time_ns()))

        applying = asyncio.create_task(n2_applies())
        again = ActivationRequest(FLAG, False, "alice", "again", "t", nodes=("n2",))
        result, latencies, missing = await activate(
            alice, site.store(), REGISTRY, ActivationPolicy(), again, clock, 10.0,
            signer=site.signer("alice"),
        )  # fmt: skip
        await applying
        assert result.accepted and result.state is not None
        assert result.state.revision == revision + 1
        assert missing == [] and list(latencies) == ["n2"]
    finally:
        for plane in planes:
            await plane.close()
        site.stop()


async def test_undecodable_records_do_not_stop_a_change_to_the_safe_default(
    tmp_path: Path,
) -> None:
    """n2 stores garbage as its own confirmation and the admission service's stored
    verdict of n1 is garbage: the emergency direction still goes through, to both
    nodes (n1 counted as not admitted), instead of failing on a decode error."""
    site = Site(tmp_path / "site", ("n1", "n2"))
    await site.astart()
    clock = SystemClock()
    planes = [await site.connect(name) for name in ("n1", "n2", "admission", "alice")]
    n1, n2, admission, alice = planes
    try:
        now = clock.time_ns()
        for plane, node in ((n1, "n1"), (n2, "n2")):
            status = NodeStatus(
                node, "h", 1, now, now, now + 10**10, True, True, TradingState.ACTIVE
            )
            await plane.put_member(status)
        first = ActivationRequest(FLAG, False, "alice", "off", "t", nodes=("n2",))
        result, _, _ = await activate(
            alice, site.store(), REGISTRY, ActivationPolicy(), first, clock, 0.1,
            signer=site.signer("alice"),
        )  # fmt: skip
        assert result.accepted
        await n2.put_record(Bucket.FLAGS, applied_key(FLAG, "n2"), b"\x00not json")
        await admission.put_record(Bucket.ADMISSION, "n1", b"{broken")

        off = ActivationRequest(FLAG, False, "alice", "emergency off", "t")
        result, _, missing = await activate(
            alice, site.store(), REGISTRY, ActivationPolicy(), off, clock, 0.1,
            signer=site.signer("alice"),
        )  # fmt: skip
        assert result.accepted, result.detail
        assert result.state is not None and result.state.revision == 2
        assert result.change is not None and result.change.nodes == ("n1", "n2")
        assert result.state.node_values == {"n1": False, "n2": False}
        assert missing == ["n1", "n2"]
    finally:
        for plane in planes:
            await plane.close()
        site.stop()


NEVER = ActivationPolicy(second_approver=SecondApprover.NEVER)
UNREADABLE = {
    "garbage": b"\x00not json",
    "other_flag": ENCODER.encode(FlagState("trading.other.flag", 7, {"n1": True})),
}


async def admitted_member(site: Site, node: NatsControlPlane, admission: NatsControlPlane) -> None:
    """n1 in membership with a stored admitted verdict, so a change may turn the flag on."""
    now = SystemClock().time_ns()
    status = NodeStatus("n1", "h", 1, now, now, now + 10**10, True, True, TradingState.ACTIVE)
    await node.put_member(status)
    verdict = Verdict("n1", True, "admitted", "r1", "d", (), now, REGISTRY.schema())
    await admission.put_record(Bucket.ADMISSION, "n1", ENCODER.encode(verdict))


@pytest.fixture
async def flag_node(
    tmp_path: Path,
) -> AsyncIterator[tuple[Site, NatsControlPlane, NodeFlags]]:
    """n1 with its flags started on an admitted site (no second approver), and alice's plane."""
    site = Site(tmp_path / "site", ("n1",), approvals=ApprovalPolicy(flag=SecondApprover.NEVER))
    await site.astart()
    clock = SystemClock()
    planes = [await site.connect(name) for name in ("n1", "admission", "alice")]
    n1, admission, alice = planes
    guard = Guard(Limits(lease_timeout_s=0.75), node="n1", clock=clock)
    runtime = NodeRuntime(guard, n1, clock=clock, trust=site.store(), signer=site.signer("n1"))
    flags = NodeFlags(runtime)
    try:
        await admitted_member(site, n1, admission)
        await flags.start()
        yield site, alice, flags
    finally:
        for plane in planes:
            await plane.close()
        site.stop()


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
async def test_an_unreadable_state_record_does_not_stop_a_change_to_the_safe_default(
    tmp_path: Path, kind: str
) -> None:
    """The flag's own state record turns to garbage (or to another flag's state) while
    n1 holds it on: turning it on again stays an error naming the record, and turning
    it off replaces the record with a fresh state above every revision it reached,
    instead of failing on the decode error."""
    site = Site(tmp_path / "site", ("n1",), approvals=ApprovalPolicy(flag=SecondApprover.NEVER))
    await site.astart()
    clock = SystemClock()
    planes = [await site.connect(name) for name in ("n1", "admission", "alice")]
    n1, admission, alice = planes
    try:
        await admitted_member(site, n1, admission)
        on = ActivationRequest(FLAG, True, "alice", "launch", "t", nodes=("n1",))
        result, _, _ = await activate(
            alice, site.store(), REGISTRY, NEVER, on, clock, 0.1, signer=site.signer("alice")
        )
        assert result.accepted, result.detail
        await alice.put_record(Bucket.FLAGS, state_key(FLAG), UNREADABLE[kind])
        _, unreadable_at = await alice.get_record(Bucket.FLAGS, state_key(FLAG))

        with pytest.raises(StateUnavailable, match=r"'state\.trading\.smars\.rlp_enabled'"):
            await activate(
                alice, site.store(), REGISTRY, NEVER, on, clock, 0.1, signer=site.signer("alice")
            )

        off = ActivationRequest(FLAG, False, "alice", "emergency off", "t")
        result, _, missing = await activate(
            alice, site.store(), REGISTRY, NEVER, off, clock, 0.1, signer=site.signer("alice")
        )
        assert result.accepted, result.detail
        assert "replaced an unreadable stored state" in result.detail
        assert result.state is not None and result.state.node_values == {"n1": False}
        assert result.state.revision == unreadable_at + 1
        stored, _ = await alice.get_record(Bucket.FLAGS, state_key(FLAG))
        assert stored is not None and decode_state(FLAG, stored) == result.state
        assert missing == ["n1"]  # nothing runs n1's flags here
    finally:
        for plane in planes:
            await plane.close()
        site.stop()


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
async def test_a_node_evaluates_the_safe_default_when_its_state_record_turns_unreadable(
    tmp_path: Path, kind: str
) -> None:
    """n1 applied the flag on; its state record then turns unreadable. n1 refuses it
    (`malformed`, one line naming the record) and evaluates the safe default, not the
    value it held; the fresh state of the change back to the safe default reaches it and
    it confirms that."""
    site = Site(tmp_path / "site", ("n1",), approvals=ApprovalPolicy(flag=SecondApprover.NEVER))
    await site.astart()
    clock = SystemClock()
    planes = [await site.connect(name) for name in ("n1", "admission", "alice")]
    n1, admission, alice = planes
    guard = Guard(Limits(lease_timeout_s=0.75), node="n1", clock=clock)
    runtime = NodeRuntime(guard, n1, clock=clock, trust=site.store(), signer=site.signer("n1"))
    flags = NodeFlags(runtime)
    try:
        await admitted_member(site, n1, admission)
        await flags.start()
        on = ActivationRequest(FLAG, True, "alice", "launch", "t", nodes=("n1",))
        result, _, missing = await activate(
            alice, site.store(), REGISTRY, NEVER, on, clock, 10.0, signer=site.signer("alice")
        )
        assert result.accepted and missing == [], result.detail
        held = flags.get(FLAG)
        assert held is not None and held.value_for("n1") is True

        await alice.put_record(Bucket.FLAGS, state_key(FLAG), UNREADABLE[kind])
        await eventually(lambda: flags.refused[TrustReason.MALFORMED] == 1)
        assert flags.get(FLAG) is None  # the safe default, not the value it held
        assert "'state.trading.smars.rlp_enabled'" in flags.last_refusal

        off = ActivationRequest(FLAG, False, "alice", "emergency off", "t")
        result, _, missing = await activate(
            alice, site.store(), REGISTRY, NEVER, off, clock, 10.0, signer=site.signer("alice")
        )
        assert result.accepted and missing == [], result.detail
        assert result.state is not None
        now = flags.get(FLAG)
        assert now is not None and now.revision == result.state.revision
        assert now.value_for("n1") is not True
    finally:
        for plane in planes:
            await plane.close()
        site.stop()


async def test_a_confirmation_asked_for_off_the_nodes_loop_reaches_the_store(
    tmp_path: Path,
) -> None:
    """An OpenFeature evaluation runs on the application's own thread: a lost confirmation
    it asks to resend was lost again (`get_running_loop` raised there). It is handed to the
    node's loop and stored."""
    site = Site(tmp_path / "site", ("n1",), approvals=ApprovalPolicy(flag=SecondApprover.NEVER))
    await site.astart()
    clock = SystemClock()
    planes = [await site.connect(name) for name in ("n1", "admission", "alice")]
    n1, admission, alice = planes
    guard = Guard(Limits(lease_timeout_s=0.75), node="n1", clock=clock)
    runtime = NodeRuntime(guard, n1, clock=clock, trust=site.store(), signer=site.signer("n1"))
    flags = NodeFlags(runtime)
    try:
        await admitted_member(site, n1, admission)
        await flags.start()
        on = ActivationRequest(FLAG, True, "alice", "launch", "t", nodes=("n1",))
        result, _, missing = await activate(
            alice, site.store(), REGISTRY, NEVER, on, clock, 10.0, signer=site.signer("alice")
        )
        assert result.accepted and missing == [], result.detail
        assert result.state is not None
        await n1.put_record(Bucket.FLAGS, applied_key(FLAG, "n1"), b"lost")  # as if never sent
        flags._confirmed.clear()
        await asyncio.to_thread(flags.confirm_applied, FLAG, "n1", result.state.revision)

        async def stored() -> bool:
            value, _ = await alice.get_record(Bucket.FLAGS, applied_key(FLAG, "n1"))
            return value is not None and value != b"lost"

        for _ in range(300):  # up to 15 s: a write over NATS, from a thread
            if await stored():
                break
            await asyncio.sleep(0.05)
        assert await stored()
    finally:
        for plane in planes:
            await plane.close()
        site.stop()
