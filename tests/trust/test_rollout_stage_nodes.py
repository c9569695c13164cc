"""A rollout approval carries its rollout's own stages, on exactly the nodes each stage adds.

A rollout approval names the plan, not nodes (the rollout runs on the admitted fleet).
Before, a node checked nothing of the nodes a change riding it named: one operator
able to write the flags bucket could take a rollout's stored approval and sign a change
turning the flag on across the whole fleet at once (say after the rollout was aborted),
and every node counted it approved. Now the signed change names its rollout, the
rollout's nodes in order, the plan and the stage, and a node counts the approval only
for the nodes that stage of that plan adds.
"""

from __future__ import annotations

import itertools

import msgspec
import pytest

from knightwatch.clock import NS_PER_S
from knightwatch.flags.activation import ActivationRequest
from knightwatch.flags.rollout import RolloutPlan, Stage, plan_digest
from knightwatch.flags.state import FlagChange
from knightwatch.release.dsse import Envelope, encode_envelope, new_envelope
from knightwatch.trust.approval import Approval, ApprovalKind, sign_approval
from knightwatch.trust.command import Refused, TrustReason
from knightwatch.trust.flagproof import FLAG_PAYLOAD_TYPE, FlagProof, FlagSealer, check_flag_proof

from .test_flagproof import FLAG, KIT, NOW, RLP, SCHEMA

HOUR = 3600 * NS_PER_S
PLAN = RolloutPlan(stages=(Stage("canary", 0, nodes=1), Stage("fleet", 0, fraction=1.0)))
ORDER = ("n0", "n1", "n2", "n3")
SLICES = {0: ("n0",), 1: ("n1", "n2", "n3")}


def approval() -> str:
    a = Approval(
        ApprovalKind.ROLLOUT, RLP, True, None, "alice", "ok", NOW, NOW + HOUR, plan_digest(PLAN)
    )
    return encode_envelope(sign_approval(a, KIT.signer("bob"))).decode()


def stage(nodes: tuple[str, ...], index: int, plan: RolloutPlan = PLAN) -> str:
    """alice's signed stage `index` of rollout rlp-1 (bob's approval) setting `nodes` on."""
    change = FlagChange(RLP, True, nodes, "alice", "bob", "stage", "rollout", NOW + 10, {})
    request = ActivationRequest(
        RLP,
        True,
        "alice",
        "stage",
        "rollout",
        approver="bob",
        approval=approval(),
        approval_kind="rollout",
        approval_digest=plan_digest(PLAN),
        approved_ns=NOW + 5,
        rollout_id="rlp-1",
        rollout_nodes=ORDER,
        rollout_stage=index,
        rollout_plan=msgspec.json.encode(plan).decode(),
    )
    return FlagSealer(KIT.signer("alice"), KIT.roster).seal(change, 3, request, FLAG)


def unbound(nodes: tuple[str, ...], approved_ns: int = NOW + 5) -> str:
    """What one operator could sign before: the stored approval, no rollout named."""
    decision = {
        "flag_id": RLP,
        "value": True,
        "nodes": list(nodes),
        "revision": 3,
        "actor": "alice",
        "requester": "alice",
        "reason": "on again",
        "issued_ns": NOW + 10,
        "description": FLAG.description,
        "safe_default": False,
        "trading_behaviour": True,
        "approval_kind": "rollout",
        "approval_digest": plan_digest(PLAN),
        "approved_ns": approved_ns,
    }
    payload = msgspec.json.encode(decision, order="sorted")
    envelope = KIT.signer("alice").sign(new_envelope(FLAG_PAYLOAD_TYPE, payload))
    carried = msgspec.json.decode(approval(), type=Envelope)
    return msgspec.json.encode(FlagProof(envelope, carried)).decode()


def judge(proof: str, node: str) -> tuple[str, ...]:
    verdict = check_flag_proof(
        proof,
        KIT.roster,
        flag_id=RLP,
        node=node,
        value=True,
        schema=SCHEMA,
        now_ns=NOW + 10,
        live=True,
    )
    return verdict.checked.approvers


@pytest.mark.parametrize("approved_ns", [NOW + 5, 0])
@pytest.mark.parametrize("node", ORDER)
def test_a_change_naming_no_rollout_rides_no_rollout_approval(approved_ns: int, node: str) -> None:
    """The whole fleet at once on a rollout's approval, no rollout named (or its start left
    at 0, which was judged at the change's own date): refused on every node. Before, every
    node counted bob as its approver."""
    with pytest.raises(Refused) as exc:
        judge(unbound(ORDER, approved_ns), node)
    assert exc.value.reason is TrustReason.APPROVAL_INVALID


def test_each_stage_is_approved_on_exactly_the_nodes_it_adds() -> None:
    """Every set of the rollout's nodes, for each stage: only the stage's own slice, in the
    rollout's order, rides the approval."""
    for index, size in itertools.product(SLICES, range(1, len(ORDER) + 1)):
        for nodes in itertools.permutations(ORDER, size):
            proof = stage(nodes, index)
            if nodes == SLICES[index]:
                assert all(judge(proof, n) == ("bob",) for n in nodes)
                continue
            with pytest.raises(Refused) as exc:
                judge(proof, nodes[0])
            assert exc.value.reason is TrustReason.APPROVAL_INVALID, nodes
            assert "a rollout approval carries only its rollout's own stages" in exc.value.detail


def test_a_plan_other_than_the_approved_one_or_a_stage_past_it_rides_nothing() -> None:
    faster = RolloutPlan(stages=(Stage("all", 0, fraction=1.0),))
    for proof in (stage(ORDER, 0, faster), stage(("n0",), 2)):
        with pytest.raises(Refused) as exc:
            judge(proof, "n0")
        assert exc.value.reason is TrustReason.APPROVAL_INVALID
