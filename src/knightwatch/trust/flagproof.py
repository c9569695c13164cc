"""Signed flag changes and the check a node runs before it evaluates one.

A flag state in the store is only bytes anyone with operator credentials for
the bucket can write, so the activation gate's checks in the writer's process
prove nothing to a node. Every committed change therefore carries a proof: a
DSSE envelope, signed by the operator who made it, that binds the flag, value,
nodes, the revision it produces, who asked, why and when, and the flag's
meaning as the writer's registry states it; plus, for a trading-behaviour flag
moved away from its safe default, the second person's signed approval as
`check_approval` validates it. A node applies a revision only if the proof of
the latest change to its own value verifies against its roster.

The node does not take the writer's word for the meaning: it hashes the signed
meaning and compares it with the definition hash its own admitted release holds
for the id. Where it cannot (no verdict yet, the id unknown to its release, a
different meaning) the flag counts as trading behaviour and the change as one
away from the safe default (fail closed); a one-person change it cannot place
is still honoured as the stop direction by dropping the node's value, so it
evaluates its own safe default, never a value the writer claims is safe. The
stop direction needs one operator's signature, never an approval.

A change read from the store (not live) is judged, as a stored resume is, at the
instant the store's server wrote it (`stored_ns`, which no client sets) as well
as at its own signed time: the operator's and the approver's keys valid then,
the market-hours rule met then. A change signed with a key after its revocation
and dated back before it is refused by a node that starts afterwards as a running
node refused it live.

A change away from the safe default judged at such an instant (heard live, or the
store's write time) is dated no more than 5 s after it (`SKEW_NS`) and no more than
`CHANGE_LAG_NS` before it: a flag approval is judged at the change's own signed date
and a node's kill freeze asks whether it was issued before the kill, so dated back,
one operator's fresh change would ride an approval that expired hours ago, or pass
as issued before a kill now in force; dated ahead, running nodes took what a node
starting later refused. The stop direction is never held to its date.

A rollout's stages ride the approval checked at its start (`approved_ns`, which the
actor signs): a stage dated before that start, or more than `ROLLOUT_SPAN_NS` after
it, carries no approval. Unbounded, one operator could date `approved_ns` into the hour
of any old rollout approval (stored with its rollout, so readable) and turn the flag
on alone, long after the rollout it approved ended.

A rollout approval is of one rollout, and each stage says which: the signed change names
the rollout (`rollout_id`), its nodes in their order (`rollout_nodes`), the plan the
approval's digest names (`rollout_plan`) and the stage (`rollout_stage`), and a node
counts the approval only for exactly the nodes that stage adds (the plan's size of the
stage over the rollout's nodes, less every earlier stage's). Before, the approval bound no
nodes at all: one operator with write rights on the flags bucket could sign a change
riding a rollout's stored approval that turned the flag on across the whole fleet at once,
after the rollout was aborted. What a node remembers of each rollout it saw (its nodes, the
stages it took, whether it ended) is the node's (`knightwatch.control.node.flags`):
`RolloutStage` is what this check hands it, with the stage's signed issue time and the
hold the approved plan puts between it and the plan's previous stage that adds nodes (the
node refuses a stage signed sooner: before, one operator could sign the stages in quick
succession). A `flags set` approval is of one change: `ApprovalUse` names the change that
carried it, so a node that saw it used refuses it riding another.

A change names the fleet it was made in (`FlagDecision.fleet`, the writer's `Roster.fleet`):
the same operators hold keys in staging and production, and a change that needs no second
person (not trading behaviour, or no approval asked at that hour) signed in one and copied
into the other's flags bucket turned the flag on there. One away from the safe default
counts only where the roster names its fleet (`wrong_fleet`; one naming no fleet, made
before the fleet was named, included); the stop direction never is refused for its fleet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import NamedTuple

import msgspec

from knightwatch.clock import NS_PER_S
from knightwatch.flags.activation import ActivationRequest
from knightwatch.flags.definition import FlagDefinition, definition_hash
from knightwatch.flags.rollout import RolloutPlan, plan_digest, stage_slices
from knightwatch.flags.state import FlagChange
from knightwatch.inputs import UNDECODABLE
from knightwatch.release.dsse import Envelope, new_envelope
from knightwatch.release.errors import ReleaseInputError
from knightwatch.trust.approval import ApprovalKind, check_approval, decode_approval_file
from knightwatch.trust.command import SKEW_NS, Checked, Refused, TrustReason, signers_of
from knightwatch.trust.identity import Signer
from knightwatch.trust.roster import Role, Roster, TrustError, fleet_encoded, fleet_mismatch

FLAG_PAYLOAD_TYPE = "application/vnd.knightwatch.flag-change+json"
CHANGE_LAG_NS = 60 * 1_000_000_000
"""How long before it is heard live or written to the store a change away from the safe
default may be dated: its writer signs it just before committing it (a compare-and-set),
and clocks may be off by `SKEW_NS`."""
ROLLOUT_SPAN_NS = 24 * 3600 * 1_000_000_000
"""How long after a rollout's start (`approved_ns`, when its approval was checked) its
stages may still be issued on that approval; a change dated before the start, or later
than this after it, carries no rollout approval."""
ROLLOUT_START_NS = 300 * 1_000_000_000
"""How long after a rollout's start (`approved_ns`) its first stage (the first that adds
nodes: the driver issues it as it starts) may be issued. `approved_ns` is the actor's
word, checked against the approval's hour: with only `ROLLOUT_SPAN_NS` to bound it, one
operator started a new rollout of their own on an approval unused in its hour up to a
day after that hour ended, dating the start back into it."""


class FlagDecision(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the operator's signature over a flag change covers."""

    flag_id: str
    value: bool
    nodes: tuple[str, ...]
    revision: int
    """The flag state revision this change produces."""
    actor: str
    """Who signed and committed it (an operator)."""
    requester: str
    """Who the change is for: the actor, or a rollout's starter whose driver runs it."""
    reason: str
    issued_ns: int
    description: str
    safe_default: bool
    trading_behaviour: bool
    approval_kind: str = ""
    """"" (no approval), "flag" or "rollout"."""
    approval_digest: str = ""
    """A rollout approval's plan digest."""
    approved_ns: int = 0
    """A rollout approval: when it was checked (the rollout's start); a flag approval is
    checked at `issued_ns`."""
    approval_nodes: tuple[str, ...] | None = None
    """The nodes a flag approval names (None: the fleet); they must cover `nodes`."""
    rollout_id: str = ""
    """A rollout approval: the rollout this change is a stage of."""
    rollout_nodes: tuple[str, ...] = ()
    """A rollout approval: the rollout's nodes in the order its stages take them."""
    rollout_stage: int = 0
    """A rollout approval: the index of the plan's stage this change makes."""
    rollout_plan: str = ""
    """A rollout approval: the plan (JSON) whose digest the approval names."""
    fleet: str = ""
    """The fleet it was made in (`Roster.fleet` of the writer's roster): a change away
    from the safe default counts only where the roster names that fleet. "" is not
    written: one naming no fleet is the bytes an earlier release signed (`fleet_encoded`)."""


class FlagProof(msgspec.Struct, frozen=True):
    """Stored with each node's value in the flag state (JSON, opaque to the flags layer)."""

    change: Envelope
    approval: Envelope | None = None


_ENCODER = msgspec.json.Encoder(order="sorted")
_DECISION = msgspec.json.Decoder(FlagDecision)
_PROOF = msgspec.json.Decoder(FlagProof)


class FlagSealer:
    """The activation gate's `ChangeSealer`: signs each change as `signer`, under the
    roster's approval policy (a process that writes flags always holds a roster)."""

    def __init__(self, signer: Signer, roster: Roster | None) -> None:
        self.signer = signer
        self.roster = roster

    def second_person(self, wall_ns: int) -> bool:
        if self.roster is None:
            return True  # nothing verified: ask for the most
        policy = self.roster.approvals
        return policy.second_person(policy.flag, wall_ns)

    def seal(
        self,
        change: FlagChange,
        revision: int,
        request: ActivationRequest,
        definition: FlagDefinition,
    ) -> str:
        rollout = bool(request.approval) and request.approval_kind == ApprovalKind.ROLLOUT
        decision = FlagDecision(
            flag_id=change.flag_id,
            value=change.value,
            nodes=change.nodes,
            revision=revision,
            actor=self.signer.name,
            requester=request.actor,
            reason=change.reason,
            issued_ns=change.at_ns,
            description=definition.description,
            safe_default=definition.safe_default,
            trading_behaviour=definition.trading_behaviour,
            approval_kind=request.approval_kind if request.approval else "",
            approval_digest=request.approval_digest if request.approval else "",
            approved_ns=request.approved_ns if request.approval else 0,
            approval_nodes=request.approval_nodes if request.approval else None,
            rollout_id=request.rollout_id if rollout else "",
            rollout_nodes=request.rollout_nodes if rollout else (),
            rollout_stage=request.rollout_stage if rollout else 0,
            rollout_plan=request.rollout_plan if rollout else "",
            fleet=self.roster.fleet if self.roster is not None else "",
        )
        envelope = self.signer.sign(new_envelope(FLAG_PAYLOAD_TYPE, fleet_encoded(decision)))
        approval = (
            decode_approval_file(request.approval.encode(), "approval")
            if request.approval
            else None
        )
        return msgspec.json.encode(FlagProof(envelope, approval)).decode()


class RolloutStage(NamedTuple):
    """A verified stage of a rollout: what a node remembers of the rollout it rides."""

    approval: str
    """sha256 of the approval's payload: the approval, whichever envelope carries it."""
    binding: str
    """sha256 of what makes it one rollout (flag, value, requester, start, id, nodes, plan)."""
    approved_ns: int
    stage: int
    prior: int
    """The latest earlier stage of the plan that adds nodes (-1: none), which must have
    been made before this one."""
    nodes: tuple[str, ...]
    value: bool
    revision: int
    issued_ns: int
    """The stage's signed issue time (the next stage's hold counts from it)."""
    hold_ns: int
    """How long the approved plan holds between `prior`'s issue and this stage's: the
    holds of every stage from `prior` up to this one (0 with no `prior`)."""


class ApprovalUse(NamedTuple):
    """A verified change a `flags set` approval carried: an approval is of one change, so
    a node that saw it used refuses it riding another (`knightwatch.control.node.flags`)."""

    approval: str
    """sha256 of the approval's payload, whichever envelope carries it."""
    change: str
    """Which change used it: its revision and the sha256 of its signed payload."""
    issued_ns: int
    value: bool


_PLAN = msgspec.json.Decoder(RolloutPlan)


def _rollout_stage(decision: FlagDecision, approval: Envelope) -> RolloutStage:
    """The stage `decision` claims, if it is one the approved plan makes; `Refused` naming
    the field otherwise."""

    def refuse(detail: str) -> Refused:
        return Refused(
            TrustReason.APPROVAL_INVALID,
            f"{detail}; a rollout approval carries only its rollout's own stages",
        )

    if not decision.rollout_id or not decision.approved_ns:
        raise refuse("rollout_id and approved_ns: a rollout stage names its rollout and start")
    order = decision.rollout_nodes
    if not order or len(set(order)) != len(order):
        raise refuse(f"rollout_nodes {order!r}: the rollout's nodes, each once")
    try:
        plan = _PLAN.decode(decision.rollout_plan)
        digest = plan_digest(plan)
    except (*UNDECODABLE, ValueError) as exc:
        raise refuse(f"rollout_plan: {exc}") from None
    if digest != decision.approval_digest:
        raise refuse(f"rollout_plan: its digest is {digest[:12]}, not the approved plan's")
    slices = stage_slices(plan, len(order))
    if not 0 <= decision.rollout_stage < len(slices):
        raise refuse(f"rollout_stage {decision.rollout_stage}: the plan has {len(slices)} stages")
    start, end = slices[decision.rollout_stage]
    if decision.nodes != order[start:end]:
        raise refuse(
            f"nodes {','.join(decision.nodes)}: stage {decision.rollout_stage} of rollout "
            f"{decision.rollout_id} adds {','.join(order[start:end]) or 'no node'}"
        )
    prior = max(
        (i for i, s in enumerate(slices[: decision.rollout_stage]) if s[0] < s[1]), default=-1
    )
    bound = (
        decision.flag_id,
        decision.value,
        decision.requester,
        decision.approved_ns,
        decision.rollout_id,
        order,
        digest,
    )
    holds = plan.stages[prior : decision.rollout_stage] if prior >= 0 else ()
    return RolloutStage(
        approval=hashlib.sha256(approval.payload_bytes()).hexdigest(),
        binding=hashlib.sha256(_ENCODER.encode(bound)).hexdigest(),
        approved_ns=decision.approved_ns,
        stage=decision.rollout_stage,
        prior=prior,
        nodes=decision.nodes,
        value=decision.value,
        revision=decision.revision,
        issued_ns=decision.issued_ns,
        hold_ns=sum(int(s.hold_s * NS_PER_S) for s in holds),
    )


class FlagVerdict(msgspec.Struct, frozen=True):
    """A verified change: who made it, who approved it, the revision it produced."""

    checked: Checked
    revision: int
    issued_ns: int
    own_safe_default: bool = False
    """A change to the safe default of a flag whose meaning this node's release does not
    confirm: the node evaluates its own safe default (no value), never the claimed one."""
    away: bool = False
    """The change moves the flag away from its safe default: the direction a kill freezes."""
    rollout: RolloutStage | None = None
    """The rollout stage whose approval carried it (the node checks it against what it
    remembers of that rollout)."""
    used: ApprovalUse | None = None
    """The `flags set` approval that carried it (the node checks no other change used it)."""


def check_flag_proof(
    proof: str,
    roster: Roster | None,
    *,
    flag_id: str,
    node: str,
    value: bool,
    schema: Mapping[str, str],
    now_ns: int,
    live: bool,
    stored_ns: int | None = None,
) -> FlagVerdict:
    """Verify that `proof` makes `node` evaluate `flag_id` as `value`; `Refused` otherwise.

    `schema`: the flag schema of the node's admitted release (id -> definition
    hash), the only source of the flag's meaning the node trusts. `live`: the
    state arrived as news, so a market-hours rule is also judged at `now_ns`, and
    the operator's and the approver's keys must be valid then too (a backdated
    issue time dodges neither). `stored_ns` (not live): when the store's server wrote
    the change; it is judged then as live news is judged now. Judged at either, a
    change away from the safe default is dated from `CHANGE_LAG_NS` before it to 5 s
    after it (the stop direction at any date).
    """
    if roster is None:
        raise Refused(TrustReason.NO_ROSTER, "no verified roster yet: nothing can be trusted")
    if not proof:
        raise Refused(TrustReason.UNSIGNED, "the change carries no signed proof")
    try:
        bundle = _PROOF.decode(proof)
        payload = bundle.change.payload_bytes()
        decision = _DECISION.decode(payload)
    except (*UNDECODABLE, ReleaseInputError) as exc:
        raise Refused(TrustReason.MALFORMED, f"proof: {exc}") from None
    if bundle.change.payload_type != FLAG_PAYLOAD_TYPE:
        raise Refused(TrustReason.MALFORMED, f"payloadType {bundle.change.payload_type!r}")
    if decision.flag_id != flag_id or node not in decision.nodes or decision.value != value:
        raise Refused(
            TrustReason.PAYLOAD_MISMATCH,
            f"the proof sets {decision.flag_id}={decision.value} on "
            f"{','.join(decision.nodes)}, not {flag_id}={value} on {node}",
        )
    # live news counts only by keys valid now too, as a live kill-switch command does: a
    # revoked operator's change dated back before the revocation turns nothing on; a
    # stored one, by keys valid when the server wrote it (its date is its signer's)
    judged_ns = now_ns if live else stored_ns
    if (
        judged_ns is not None
        and decision.issued_ns > judged_ns + SKEW_NS
        and value != decision.safe_default
    ):
        # the same rule live and stored, so a node that starts later holds what the
        # running ones hold; the stop direction is never refused for its clock
        raise Refused(
            TrustReason.FROM_FUTURE,
            f"issued_ns {decision.issued_ns} is more than 5 s after "
            f"{'this clock' if live else 'the store wrote it'} ({judged_ns})",
        )
    members = signers_of(bundle.change, payload, roster, decision.issued_ns, judged_ns)
    signer = next((m for m in members if m.name == decision.actor), None)
    if signer is None:
        signed = ", ".join(sorted({m.name for m in members}))
        raise Refused(
            TrustReason.ACTOR_MISMATCH,
            f"actor {decision.actor!r} did not sign (signed by {signed})",
        )
    if Role.OPERATOR not in signer.roles:
        raise Refused(
            TrustReason.ROLE_NOT_ALLOWED,
            f"{decision.actor} holds {', '.join(signer.roles)}; a flag change needs an operator",
        )
    meaning = definition_hash(
        flag_id, decision.description, decision.safe_default, decision.trading_behaviour
    )
    known = schema.get(flag_id) == meaning
    checked = FlagVerdict(Checked(decision.actor), decision.revision, decision.issued_ns)
    if value == decision.safe_default:
        # the stop direction: one operator. Unless the node's release confirms the
        # meaning, the claimed safe default is not believed: the node goes to its own.
        return checked if known else msgspec.structs.replace(checked, own_safe_default=True)
    checked = msgspec.structs.replace(checked, away=True)
    # the same operators hold keys in staging and production: a change signed in one,
    # copied into the other's bucket, turned the flag on there (the stop direction above
    # is never refused for its fleet)
    wrong_fleet = fleet_mismatch("flag change", decision.fleet, roster)
    if wrong_fleet is not None:
        raise Refused(TrustReason.WRONG_FLEET, wrong_fleet)
    if judged_ns is not None and judged_ns - decision.issued_ns > CHANGE_LAG_NS:
        raise Refused(
            TrustReason.STALE,
            f"issued_ns {decision.issued_ns}: a change away from the safe default is dated "
            f"at most {CHANGE_LAG_NS // 1_000_000_000} s before it was "
            f"{'heard' if live else 'written'} ({judged_ns}); dated back, it would ride an "
            "expired approval or pass as made before a kill (issue it again)",
        )
    if known and not decision.trading_behaviour:
        return checked
    approvers, stage = _approvers(bundle.approval, decision, roster, known, judged_ns)
    used = None
    if bundle.approval is not None and approvers and stage is None:
        used = ApprovalUse(
            approval=hashlib.sha256(bundle.approval.payload_bytes()).hexdigest(),
            change=f"{decision.revision}:{hashlib.sha256(payload).hexdigest()}",
            issued_ns=decision.issued_ns,
            value=decision.value,
        )
    return msgspec.structs.replace(
        checked, checked=Checked(decision.actor, approvers), rollout=stage, used=used
    )


def _approvers(
    approval: Envelope | None,
    decision: FlagDecision,
    roster: Roster,
    known: bool,
    judged_ns: int | None,
) -> tuple[tuple[str, ...], RolloutStage | None]:
    """The second person for a trading flag moved away from its safe default, if the
    roster's policy asks for one (at the issue time, and at `judged_ns` too: now for
    live news, the store's write time for a stored change)."""
    policy = roster.approvals
    needed = policy.second_person(policy.flag, decision.issued_ns) or (
        judged_ns is not None and policy.second_person(policy.flag, judged_ns)
    )
    meaning = "" if known else " (its meaning is not in this node's release: fail closed)"
    if approval is None:
        if not needed:
            return (), None
        raise Refused(
            TrustReason.APPROVAL_MISSING,
            f"turns a trading-behaviour flag away from its safe default{meaning}; the "
            "roster's policy requires a second person's signed approval",
        )
    try:
        kind = ApprovalKind(decision.approval_kind)
    except ValueError:
        raise Refused(TrustReason.MALFORMED, f"approval_kind {decision.approval_kind!r}") from None
    if kind is ApprovalKind.FLAG and decision.requester != decision.actor:
        raise Refused(TrustReason.ACTOR_MISMATCH, "a flag approval names the actor as requester")
    if kind is ApprovalKind.TARGET:
        raise Refused(TrustReason.APPROVAL_INVALID, "a target-release approval approves no flag")
    if kind is ApprovalKind.FLAG and decision.approval_nodes is not None:
        outside = sorted(set(decision.nodes) - set(decision.approval_nodes))
        if outside:
            raise Refused(
                TrustReason.APPROVAL_INVALID, f"the approval does not cover {', '.join(outside)}"
            )
    signed = {
        found[0].name for s in approval.signatures if (found := roster.key(s.keyid)) is not None
    }
    if signed and signed <= {decision.requester, decision.actor}:
        raise Refused(
            TrustReason.SELF_APPROVAL,
            f"approved by {', '.join(sorted(signed))} only: the requester and the actor never "
            "count as the second person",
        )
    rollout = kind is ApprovalKind.ROLLOUT
    stage = _rollout_stage(decision, approval) if rollout else None
    at_ns = decision.approved_ns if rollout else decision.issued_ns
    if rollout and not -SKEW_NS <= decision.issued_ns - decision.approved_ns <= ROLLOUT_SPAN_NS:
        # `approved_ns` is the actor's word: unbounded, one operator could date it into any
        # old rollout approval's hour (they are stored with the rollout) and sign a stage
        raise Refused(
            TrustReason.APPROVAL_INVALID,
            f"approved_ns {decision.approved_ns}: a rollout's stage is issued from its "
            f"start to {ROLLOUT_SPAN_NS // 3_600_000_000_000} h after it (issued_ns "
            f"{decision.issued_ns}); the rollout approval does not carry it (ask for a new one)",
        )
    if (
        stage is not None
        and stage.prior < 0
        and decision.issued_ns - decision.approved_ns > (ROLLOUT_START_NS)
    ):
        # the first stage is issued as the rollout starts: dated later, its start was dated
        # back into the approval's hour (an approval unused then, used a day on by one person)
        raise Refused(
            TrustReason.APPROVAL_INVALID,
            f"approved_ns {decision.approved_ns}: a rollout's first stage is issued within "
            f"{ROLLOUT_START_NS // NS_PER_S} s of its start (issued_ns {decision.issued_ns}); "
            "the rollout approval does not carry it (ask for a new one)",
        )
    try:
        approver = check_approval(
            approval,
            roster,
            kind=kind,
            flag_id=decision.flag_id,
            value=decision.value,
            nodes=None if kind is ApprovalKind.ROLLOUT else decision.approval_nodes,
            requester=decision.requester,
            now_ns=at_ns,
            digest=decision.approval_digest,
            keys_valid_ns=judged_ns,
        )
    except TrustError as exc:
        raise Refused(TrustReason.APPROVAL_INVALID, str(exc)) from None
    if approver == decision.actor:
        raise Refused(TrustReason.SELF_APPROVAL, f"{approver} approved their own change")
    return (approver,), stage
