"""A rollout approval carries the rollout's stages, not every change its requester dates into it.

A stage of a rollout is judged at `approved_ns` (the rollout's start, when its approval
was checked), which the change's actor signs. Rollout approvals are stored with their
rollout (readable by every operator), so unbounded, one operator could sign a fresh
change with `approval_kind="rollout"`, a requester and plan digest copied from an old
approval and `approved_ns` dated into its hour, and every node would count it approved:
the flag on across the fleet by one person, months after that rollout ended.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.clock import NS_PER_S
from knightwatch.flags.activation import ActivationRequest
from knightwatch.flags.rollout import RolloutPlan, Stage, plan_digest
from knightwatch.flags.state import FlagChange
from knightwatch.release.dsse import encode_envelope
from knightwatch.trust.approval import Approval, ApprovalKind, sign_approval
from knightwatch.trust.command import SKEW_NS, Refused, TrustReason
from knightwatch.trust.flagproof import (
    ROLLOUT_SPAN_NS,
    ROLLOUT_START_NS,
    FlagSealer,
    check_flag_proof,
)

from .test_flagproof import FLAG, KIT, NOW, RLP, SCHEMA

HOUR = 3600 * NS_PER_S
ROLLOUT = RolloutPlan(stages=(Stage("canary", 0, nodes=1), Stage("fleet", 0, fraction=1.0)))
PLAN = plan_digest(ROLLOUT)


def stage(*, issued_ns: int, approved_ns: int, actor: str = "alice", index: int = 0) -> str:
    """`actor`'s signed stage `index` (0: the canary, n1; 1: the fleet, n2) of alice's
    rollout approved by bob at NOW (its hour from NOW)."""
    a = Approval(ApprovalKind.ROLLOUT, RLP, True, None, "alice", "ok", NOW, NOW + HOUR, PLAN)
    approval = encode_envelope(sign_approval(a, KIT.signer("bob"))).decode()
    nodes = (("n1",), ("n2",))[index]
    change = FlagChange(RLP, True, nodes, actor, "bob", "stage", "rollout", issued_ns, {})
    request = ActivationRequest(
        RLP,
        True,
        "alice",
        "stage",
        "rollout",
        approver="bob",
        approval=approval,
        approval_kind="rollout",
        approval_digest=PLAN,
        approved_ns=approved_ns,
        rollout_id="rlp-1",
        rollout_nodes=("n1", "n2"),
        rollout_stage=index,
        rollout_plan=msgspec.json.encode(ROLLOUT).decode(),
    )
    return FlagSealer(KIT.signer(actor), KIT.roster).seal(change, 7, request, FLAG)


def judge(proof: str, at_ns: int, live: bool, node: str = "n1") -> tuple[str, ...]:
    verdict = check_flag_proof(
        proof,
        KIT.roster,
        flag_id=RLP,
        node=node,
        value=True,
        schema=SCHEMA,
        now_ns=at_ns,
        live=live,
        stored_ns=None if live else at_ns,
    )
    return verdict.checked.approvers


@pytest.mark.parametrize("live", [True, False])
@pytest.mark.parametrize("actor", ["alice", "dave"])
def test_an_old_rollout_approval_dated_into_its_hour_turns_nothing_on(
    live: bool, actor: str
) -> None:
    """30 days after bob approved alice's rollout, alice (or any operator, dave) signs a
    stage dated now with approved_ns inside the old hour: before, bob counted as approver."""
    later = NOW + 30 * 24 * HOUR
    proof = stage(issued_ns=later, approved_ns=NOW + 1, actor=actor)
    with pytest.raises(Refused) as exc:
        judge(proof, later, live)
    assert exc.value.reason is TrustReason.APPROVAL_INVALID
    assert "a rollout's stage is issued from its start" in exc.value.detail


@pytest.mark.parametrize("live", [True, False])
def test_a_stage_dated_before_the_rollout_started_carries_no_approval(live: bool) -> None:
    """approved_ns after the change was issued: the approval was not checked before it."""
    proof = stage(issued_ns=NOW + 10 * NS_PER_S, approved_ns=NOW + 10 * NS_PER_S + SKEW_NS + 1)
    with pytest.raises(Refused) as exc:
        judge(proof, NOW + 10 * NS_PER_S, live)
    assert exc.value.reason is TrustReason.APPROVAL_INVALID


@settings(max_examples=40, deadline=None)
@given(
    start=st.integers(0, HOUR),
    after=st.integers(-SKEW_NS, ROLLOUT_SPAN_NS),
    live=st.booleans(),
)
def test_every_stage_of_a_rollout_within_its_span_is_approved(
    start: int, after: int, live: bool
) -> None:
    """A rollout started inside the approval's hour promotes for up to a day after its start
    (holds, evidence waits), stage by stage, as before; its first stage goes out as it
    starts."""
    issued = max(NOW, NOW + start + after)
    proof = stage(issued_ns=issued, approved_ns=NOW + start, index=1)
    assert judge(proof, issued, live, node="n2") == ("bob",)
    first = max(NOW, NOW + start + min(after, ROLLOUT_START_NS))
    assert judge(stage(issued_ns=first, approved_ns=NOW + start), first, live) == ("bob",)


@settings(max_examples=40, deadline=None)
@given(
    late=st.integers(1, ROLLOUT_SPAN_NS - ROLLOUT_START_NS),
    start=st.integers(0, HOUR),
    live=st.booleans(),
)
def test_a_first_stage_issued_after_its_start_window_carries_no_approval(
    late: int, start: int, live: bool
) -> None:
    """A rollout's first stage is issued as it starts. Bounded only by the day-long span,
    one operator started a rollout of their own on an approval unused in its hour up to a
    day after that hour ended, dating the start (`approved_ns`) back into it."""
    issued = NOW + start + ROLLOUT_START_NS + late
    proof = stage(issued_ns=issued, approved_ns=NOW + start)
    with pytest.raises(Refused) as exc:
        judge(proof, issued, live)
    assert exc.value.reason is TrustReason.APPROVAL_INVALID
    assert "first stage is issued within 300 s of its start" in exc.value.detail


@settings(max_examples=40, deadline=None)
@given(
    beyond=st.integers(1, 365 * 24 * HOUR),
    start=st.integers(0, HOUR),
    live=st.booleans(),
)
def test_no_stage_beyond_the_span_is_approved(beyond: int, start: int, live: bool) -> None:
    issued = NOW + start + ROLLOUT_SPAN_NS + beyond
    proof = stage(issued_ns=issued, approved_ns=NOW + start)
    with pytest.raises(Refused) as exc:
        judge(proof, issued, live)
    assert exc.value.reason is TrustReason.APPROVAL_INVALID
