"""A rollout whose stages a `flags set` overwrote is aborted, not promoted.

Once a node a stage switched on no longer holds that stage (someone set the flag over it),
every node refuses the rollout's later stages as `replayed`. Before, the driver did not
look: it recorded each refused stage as switched on and kept promoting, reporting a
rollout in progress over a flag that was no longer its own. Now it aborts, naming the
node and what it holds.
"""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.fleet.rollout import RolloutDriver
from knightwatch.control.node.flags import state_key
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
from knightwatch.flags.state import FlagState
from knightwatch.release.dsse import encode_envelope, new_envelope
from knightwatch.trust.approval import Approval, ApprovalKind, sign_approval
from knightwatch.trust.flagproof import FLAG_PAYLOAD_TYPE, FlagDecision, FlagProof
from knightwatch.trust.kit import Kit

FLAG = "trading.smars.rlp_enabled"
PLAN = RolloutPlan(
    stages=(Stage("canary", hold_s=60, nodes=1), Stage("fleet", hold_s=60, fraction=1.0)),
    gates=(HealthGate("reject_ratio", max=1.0),),
    failure_limit=10**6,
    halt_on_abort=False,
)
ROLLOUT = f"{FLAG}-1"


def proof(value: bool, rollout_id: str) -> str:
    """The (unverified) proof of a change of n1 to `value`; a rollout stage if `rollout_id`."""
    decision = FlagDecision(
        FLAG, value, ("n1",), 3, "carol", "carol", "why", 1, "d", False, True,
        approval_kind="rollout" if rollout_id else "flag", rollout_id=rollout_id,
    )  # fmt: skip
    envelope = new_envelope(FLAG_PAYLOAD_TYPE, msgspec.json.encode(decision))
    return msgspec.json.encode(FlagProof(envelope)).decode()


HELD = FlagState(FLAG, 3, {"n1": True}, {}, {"n1": proof(True, ROLLOUT)})
"""n1 holds the canary stage of this rollout."""
OVERTAKEN = {
    "set_on": FlagState(FLAG, 4, {"n1": True}, {}, {"n1": proof(True, "")}),
    "set_off": FlagState(FLAG, 4, {"n1": False}, {}, {"n1": proof(False, "")}),
    "cleared": FlagState(FLAG, 4, {}, {}, {}),
    "other_rollout": FlagState(FLAG, 4, {"n1": True}, {}, {"n1": proof(True, f"{FLAG}-2")}),
}


@pytest.mark.parametrize("overwritten", [*OVERTAKEN, "unreadable", "held"])
async def test_a_rollout_whose_stage_was_overwritten_is_aborted(
    nats_server: Site, overwritten: str
) -> None:
    clock = SystemClock()
    kit = Kit(now_ns=1_000)
    plane = await nats_server.connect("alice")
    try:
        driver = RolloutDriver(
            plane,
            FlagRegistry.from_definitions((), "none"),
            clock,
            KillSwitch(plane, clock, kit.signer("alice"), kit.store()),
        )
        now = clock.time_ns()
        approval = Approval(
            ApprovalKind.ROLLOUT, FLAG, True, None, "alice", "canary", now, now + 3600 * 10**9,
            digest=plan_digest(PLAN),
        )  # fmt: skip
        rollout, _ = Rollout.start(ROLLOUT, FLAG, True, ["n1", "n2"], PLAN, clock, "alice", "bob")
        rollout.switched(("n1",))
        state = msgspec.structs.replace(
            rollout.state,
            approval=encode_envelope(sign_approval(approval, kit.signer("bob"))).decode(),
            approved_at_ns=now,
        )
        assert driver.unapproved(state) == ""
        stored = (
            b'{"flag_id": 1'
            if overwritten == "unreadable"
            else msgspec.json.encode(OVERTAKEN.get(overwritten, HELD))
        )
        _, revision = await plane.get_record(Bucket.FLAGS, state_key(FLAG))
        await plane.put_record(Bucket.FLAGS, state_key(FLAG), stored, revision)
        _, revision = await plane.get_record(Bucket.ROLLOUTS, FLAG)
        await plane.put_record(Bucket.ROLLOUTS, FLAG, msgspec.json.encode(state), revision)

        final = await driver.step(FLAG)
        value, _ = await plane.get_record(Bucket.ROLLOUTS, FLAG)
        assert value is not None
        recorded = msgspec.json.decode(value, type=RolloutState)
        if overwritten == "held":  # its stage stands: judged as before (no gauges: a failure)
            assert final.status is RolloutStatus.PROGRESSING, final.abort_reason
            assert recorded.status is RolloutStatus.PROGRESSING
            return
        assert final.status is RolloutStatus.ABORTED, final
        assert recorded.status is RolloutStatus.ABORTED
        assert final.abort_reason.startswith("rollout_overtaken: "), final.abort_reason
        if overwritten == "unreadable":
            assert "cannot be decoded" in final.abort_reason, final.abort_reason
        else:
            assert "n1 holds" in final.abort_reason and ROLLOUT in final.abort_reason
    finally:
        await plane.close()
