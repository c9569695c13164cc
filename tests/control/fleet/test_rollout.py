"""A rollout's stages carry its approval only while the approver's key is valid.

The driver stores the approval with the state and re-checks it before every
step. The approver's key is judged at the step, not at the instant the approval
was checked when the rollout started: revoked since, it no longer counts (the
nodes refuse those stages too), so the rollout is aborted, never promoted.
"""

from __future__ import annotations

import msgspec

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.fleet.rollout import RolloutDriver
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.site import Site
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.rollout import (
    HealthGate,
    Rollout,
    RolloutPlan,
    RolloutState,
    RolloutStatus,
    Stage,
    plan_digest,
)
from knightwatch.release.dsse import encode_envelope
from knightwatch.trust.approval import Approval, ApprovalKind, sign_approval
from knightwatch.trust.kit import Kit

FLAG = "trading.smars.rlp_enabled"
PLAN = RolloutPlan(
    stages=(Stage("canary", hold_s=60, nodes=1), Stage("fleet", hold_s=60, fraction=1.0)),
    gates=(HealthGate("reject_ratio", max=1.0),),
    failure_limit=10**6,
)


async def test_a_stage_entered_after_the_approvers_key_was_revoked_is_not_promoted(
    nats_server: Site,
) -> None:
    """Bob approved the rollout; his key is revoked while the canary holds. Before, the
    driver judged his key at the approval's check instant (`approved_at_ns`), where it was
    still valid, and went on promoting stages every node now refuses."""
    clock = SystemClock()
    kit = Kit(now_ns=1_000)
    store = kit.store()
    plane = await nats_server.connect("alice")
    try:
        driver = RolloutDriver(
            plane,
            FlagRegistry.from_definitions((), "none"),
            clock,
            KillSwitch(plane, clock, kit.signer("alice"), store),
        )
        now = clock.time_ns()
        approval = Approval(
            ApprovalKind.ROLLOUT, FLAG, True, None, "alice", "canary", now, now + 3600 * 10**9,
            digest=plan_digest(PLAN),
        )  # fmt: skip
        rollout, _ = Rollout.start(
            f"{FLAG}-1", FLAG, True, ["n1", "n2"], PLAN, clock, "alice", approver="bob"
        )
        state = msgspec.structs.replace(
            rollout.state,
            exposed=(),
            approval=encode_envelope(sign_approval(approval, kit.signer("bob"))).decode(),
            approved_at_ns=now,
        )
        assert driver.unapproved(state) == ""  # bob's key valid now: the plan may run

        store.accept(kit.revoke("bob", clock.time_ns()))
        why = driver.unapproved(state)
        assert "bob's key" in why and "revoked" in why, why

        _, revision = await plane.get_record(Bucket.ROLLOUTS, FLAG)
        await plane.put_record(Bucket.ROLLOUTS, FLAG, msgspec.json.encode(state), revision)
        final = await driver.step(FLAG)
        assert final.status is RolloutStatus.ABORTED, final
        assert final.abort_reason.startswith("rollout_unapproved") and "revoked" in (
            final.abort_reason
        )
        value, _ = await plane.get_record(Bucket.ROLLOUTS, FLAG)
        assert value is not None
        assert msgspec.json.decode(value, type=RolloutState).status is RolloutStatus.ABORTED
    finally:
        await plane.close()
