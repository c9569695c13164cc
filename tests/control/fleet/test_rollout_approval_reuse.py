"""A second person approved one rollout: its approval starts no second one.

Bob's approval of alice's rollout is usable for an hour. Before, alice could start the
rollout, have it aborted (by anyone, for a reason), and start it again alone with the
same approval within the hour; and a rollout whose start is more than a day back kept
promoting on it in the driver, while every node refuses such stages.
"""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.fleet.rollout import RolloutDriver, RolloutError
from knightwatch.control.node.flags import change_key
from knightwatch.control.plane.protocol import ABSENT, Bucket, ControlPlane
from knightwatch.control.site import Site
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.rollout import (
    HealthGate,
    Rollout,
    RolloutPlan,
    RolloutStatus,
    Stage,
    plan_digest,
)
from knightwatch.flags.state import FlagChange
from knightwatch.release.dsse import Envelope, encode_envelope, new_envelope
from knightwatch.trust.approval import Approval, ApprovalKind, sign_approval
from knightwatch.trust.flagproof import FLAG_PAYLOAD_TYPE, ROLLOUT_SPAN_NS, FlagProof
from knightwatch.trust.kit import Kit

from ...trust.test_flagproof import FLAG as DEFINITION
from ...trust.test_flagproof import RLP

FLAG = RLP
PLAN = RolloutPlan(
    stages=(Stage("canary", hold_s=60, nodes=1), Stage("fleet", hold_s=60, fraction=1.0)),
    gates=(HealthGate("reject_ratio", max=1.0),),
    failure_limit=10**6,
)
HOUR = 3600 * 10**9


def approved(kit: Kit, issued_ns: int, reason: str = "canary") -> Envelope:
    approval = Approval(
        ApprovalKind.ROLLOUT, FLAG, True, None, "alice", reason, issued_ns, issued_ns + HOUR,
        digest=plan_digest(PLAN),
    )  # fmt: skip
    return sign_approval(approval, kit.signer("bob"))


def driver_of(plane: ControlPlane, kit: Kit) -> RolloutDriver:
    clock = SystemClock()
    return RolloutDriver(
        plane,
        FlagRegistry.from_definitions((DEFINITION,), "test"),
        clock,
        KillSwitch(plane, clock, kit.signer("alice"), kit.store()),
    )


async def store_aborted(plane: ControlPlane, approval: Envelope, approved_at_ns: int) -> None:
    """Rollout 1 of the flag, started with `approval` and aborted."""
    rollout, _ = Rollout.start(
        f"{FLAG}-1", FLAG, True, ["n1"], PLAN, SystemClock(), "alice", approver="bob"
    )
    rollout.abort("operator: looked wrong")
    state = msgspec.structs.replace(
        rollout.state,
        approval=encode_envelope(approval).decode(),
        approved_at_ns=approved_at_ns,
    )
    assert state.status is RolloutStatus.ABORTED
    await plane.put_record(
        Bucket.ROLLOUTS, FLAG, msgspec.json.encode(state), expected_revision=ABSENT
    )


async def test_an_aborted_rollouts_approval_does_not_start_it_again(nats_server: Site) -> None:
    kit = Kit(now_ns=1_000)
    plane = await nats_server.connect("alice")
    try:
        driver = driver_of(plane, kit)
        now = driver.clock.time_ns()
        approval = approved(kit, now)
        await store_aborted(plane, approval, now)
        with pytest.raises(RolloutError, match="approval was used already, by rollout"):
            await driver.begin(FLAG, PLAN, actor="alice", approval=approval)
        # a fresh approval of the same plan is not refused as used (it goes on to the
        # fleet, which this plane has none of)
        with pytest.raises(RolloutError) as exc:
            await driver.begin(FLAG, PLAN, actor="alice", approval=approved(kit, now, "again"))
        assert "used already" not in str(exc.value), exc.value
    finally:
        await plane.close()


async def test_an_approval_a_committed_stage_carried_starts_nothing(nats_server: Site) -> None:
    """Rollout 1 (approval A) ran a stage, then rollout 2 (approval B) replaced its record:
    A is still used, by the change its stage committed."""
    kit = Kit(now_ns=1_000)
    plane = await nats_server.connect("alice")
    try:
        driver = driver_of(plane, kit)
        now = driver.clock.time_ns()
        first, second = approved(kit, now, "first"), approved(kit, now, "second")
        proof = FlagProof(new_envelope(FLAG_PAYLOAD_TYPE, b"{}"), first)
        change = FlagChange(
            FLAG, True, ("n1",), "alice", "bob", "stage", "rollout", now, {}, 3,
            msgspec.json.encode(proof).decode(),
        )  # fmt: skip
        await plane.put_record(
            Bucket.FLAGS, change_key(FLAG, 3), msgspec.json.encode(change), ABSENT
        )
        await store_aborted(plane, second, now)
        with pytest.raises(RolloutError, match="used already, by revision 3"):
            await driver.begin(FLAG, PLAN, actor="alice", approval=first)
    finally:
        await plane.close()


async def test_a_rollout_started_more_than_its_span_ago_is_not_promoted(
    nats_server: Site,
) -> None:
    """Every node refuses a stage issued more than a day after its rollout's start; the
    driver aborts it instead of promoting stages that cannot land."""
    kit = Kit(now_ns=1_000)
    plane = await nats_server.connect("alice")
    try:
        driver = driver_of(plane, kit)
        start = driver.clock.time_ns() - ROLLOUT_SPAN_NS - HOUR
        rollout, _ = Rollout.start(
            f"{FLAG}-1", FLAG, True, ["n1"], PLAN, SystemClock(), "alice", approver="bob"
        )
        state = msgspec.structs.replace(
            rollout.state,
            approval=encode_envelope(approved(kit, start)).decode(),
            approved_at_ns=start + 1,
        )
        why = driver.unapproved(state)
        assert "ago" in why and "approved_at_ns" in why, why
        fresh = msgspec.structs.replace(state, approved_at_ns=driver.clock.time_ns())
        fresh = msgspec.structs.replace(
            fresh, approval=encode_envelope(approved(kit, fresh.approved_at_ns - 1)).decode()
        )
        assert driver.unapproved(fresh) == ""
    finally:
        await plane.close()


async def test_an_approved_plan_whose_stages_outlast_the_span_does_not_start(
    nats_server: Site,
) -> None:
    """Its later stages could never land (every node refuses them): refused at the start,
    naming the field, instead of switching the canary on and aborting a day later."""
    kit = Kit(now_ns=1_000)
    plane = await nats_server.connect("alice")
    try:
        driver = driver_of(plane, kit)
        slow = RolloutPlan(
            stages=(
                Stage("canary", hold_s=ROLLOUT_SPAN_NS / 1e9 + 1, nodes=1),
                Stage("fleet", hold_s=60, fraction=1.0),
            ),
            gates=PLAN.gates,
        )
        now = driver.clock.time_ns()
        approval = Approval(
            ApprovalKind.ROLLOUT, FLAG, True, None, "alice", "slow", now, now + HOUR,
            digest=plan_digest(slow),
        )  # fmt: skip
        with pytest.raises(RolloutError, match=r"plan\.stages hold 24\.0 h before the last"):
            await driver.begin(
                FLAG, slow, actor="alice", approval=sign_approval(approval, kit.signer("bob"))
            )
    finally:
        await plane.close()
