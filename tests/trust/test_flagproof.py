"""The check a node runs on a flag change before applying it, case by case (no plane)."""

from __future__ import annotations

import base64
from datetime import date

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.clock import NS_PER_S
from knightwatch.flags.activation import ActivationRequest, SecondApprover
from knightwatch.flags.definition import FlagDefinition, Lifecycle
from knightwatch.flags.state import FlagChange
from knightwatch.release.dsse import encode_envelope
from knightwatch.release.keys import SigningKey
from knightwatch.trust.approval import Approval, ApprovalKind, sign_approval
from knightwatch.trust.command import Refused, TrustReason
from knightwatch.trust.flagproof import FlagProof, FlagSealer, check_flag_proof
from knightwatch.trust.identity import Signer
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import ApprovalPolicy, Role

RLP = "trading.smars.rlp_enabled"
NOW = 1_700_000_000 * NS_PER_S
KIT = Kit(
    now_ns=0,
    people={
        "alice": (Role.OPERATOR,),
        "bob": (Role.APPROVER,),
        "dave": (Role.OPERATOR, Role.APPROVER),
        "carol": (Role.VIEWER,),
    },
    approvals=ApprovalPolicy(flag=SecondApprover.ALWAYS),
)
LAX = Kit(now_ns=0, approvals=ApprovalPolicy(flag=SecondApprover.NEVER))
FLAG = FlagDefinition(
    id=RLP,
    description="Route eligible retail orders to the NYSE RLP.",
    safe_default=False,
    trading_behaviour=True,
    lifecycle=Lifecycle.ACTIVE,
    created=date(2026, 1, 1),
    owner="smars",
    expires=date(2027, 1, 1),
)
SCHEMA = {RLP: FLAG.meaning_hash}


def approval(by: str, requester: str = "alice", value: bool = True, kit: Kit = KIT) -> str:
    a = Approval(
        ApprovalKind.FLAG, RLP, value, None, requester, "ok", NOW - 1, NOW + 3600 * NS_PER_S
    )
    return encode_envelope(sign_approval(a, kit.signer(by))).decode()


def proof(
    value: bool,
    *,
    actor: str = "alice",
    approved_by: str | None = None,
    kit: Kit = KIT,
    definition: FlagDefinition = FLAG,
    signer: Signer | None = None,
) -> str:
    change = FlagChange(RLP, value, ("n1",), actor, approved_by, "why", "test", NOW, {})
    request = ActivationRequest(
        RLP, value, actor, "why", "test", approval=approval(approved_by, actor, value, kit)
    ) if approved_by else ActivationRequest(RLP, value, actor, "why", "test")  # fmt: skip
    sealer = FlagSealer(signer or kit.signer(actor), kit.roster)
    return sealer.seal(change, 1, request, definition)


def check(p: str, value: bool, *, kit: Kit = KIT, schema: dict[str, str] | None = None) -> object:
    return check_flag_proof(
        p,
        kit.roster,
        flag_id=RLP,
        node="n1",
        value=value,
        schema=SCHEMA if schema is None else schema,
        now_ns=NOW,
        live=True,
    )


def refused(p: str, value: bool, **kw: object) -> TrustReason:
    with pytest.raises(Refused) as exc:
        check(p, value, **kw)  # type: ignore[arg-type]
    return exc.value.reason


def test_approved_change_passes_and_names_both_people() -> None:
    verdict = check(proof(True, approved_by="bob"), True)
    assert verdict.checked.actor == "alice" and verdict.checked.approvers == ("bob",)  # type: ignore[attr-defined]


def test_safe_default_needs_one_operator_and_no_approval() -> None:
    verdict = check(proof(False), False)
    assert verdict.checked.approvers == () and not verdict.own_safe_default  # type: ignore[attr-defined]


def test_unapproved_self_approved_and_unsigned_are_refused() -> None:
    assert refused(proof(True), True) is TrustReason.APPROVAL_MISSING
    assert refused(proof(True, actor="dave", approved_by="dave"), True) is TrustReason.SELF_APPROVAL
    assert refused("", True) is TrustReason.UNSIGNED
    # the approver role is needed: carol only views
    assert refused(proof(True, approved_by="carol"), True) is TrustReason.APPROVAL_INVALID


def test_policy_never_lets_one_operator_through() -> None:
    assert check(proof(True, kit=LAX), True, kit=LAX).checked.approvers == ()  # type: ignore[attr-defined]


def test_forged_signature_wrong_signer_and_tampered_value_are_refused() -> None:
    mallory = Signer("alice", SigningKey.generate())  # alice's name, not her key
    assert refused(proof(True, approved_by="bob", signer=mallory), True) is TrustReason.UNKNOWN_KEY
    viewer = proof(False, actor="carol")
    assert refused(viewer, False) is TrustReason.ROLE_NOT_ALLOWED
    good = msgspec.json.decode(proof(False), type=FlagProof)
    payload = good.change.payload_bytes().replace(b'"value":false', b'"value":true')
    forged = msgspec.structs.replace(good.change, payload=base64.b64encode(payload).decode())
    tampered = msgspec.json.encode(FlagProof(forged)).decode()
    assert refused(tampered, True) is TrustReason.SIGNATURE_INVALID
    # a proof for another value or node never covers this one
    assert refused(proof(False), True) is TrustReason.PAYLOAD_MISMATCH


def test_a_meaning_the_release_does_not_confirm_fails_closed() -> None:
    # claimed harmless (not trading behaviour): the node's release says otherwise
    harmless = msgspec.structs.replace(FLAG, trading_behaviour=False)
    assert refused(proof(True, definition=harmless), True) is TrustReason.APPROVAL_MISSING
    # claimed safe default True: honoured only as "go to your own safe default"
    flipped = msgspec.structs.replace(FLAG, safe_default=True)
    verdict = check(proof(True, definition=flipped), True)
    assert verdict.own_safe_default  # type: ignore[attr-defined]
    # a release that does not know the flag: trading behaviour, approval needed
    assert refused(proof(True), True, schema={}) is TrustReason.APPROVAL_MISSING
    assert check(proof(True, approved_by="bob"), True, schema={}).checked.approvers == ("bob",)  # type: ignore[attr-defined]


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_proofs_are_refused_never_raise_otherwise(data: bytes) -> None:
    with pytest.raises(Refused):
        check(data.decode("latin-1"), True)


def test_a_revoked_operator_or_approver_cannot_backdate_a_live_change() -> None:
    """A change that arrives as news counts only by keys valid now, as a live kill-switch
    command does: dated before their revocation, alice's or bob's key (stolen, or its
    holder gone) would otherwise still turn the flag on. Read back from the store (not
    live) the same change is judged at its own time and stands, as it did then."""
    later = NOW + 60 * NS_PER_S
    for gone, expect in (("alice", TrustReason.KEY_NOT_VALID), ("bob", None)):
        kit = Kit(
            now_ns=0,
            people={"alice": (Role.OPERATOR,), "bob": (Role.APPROVER,)},
            approvals=ApprovalPolicy(flag=SecondApprover.ALWAYS),
        )
        p = proof(True, approved_by="bob", kit=kit)  # signed at NOW, both keys valid then
        kit.revoke(gone, NOW + 1)

        def judged(live: bool, kit: Kit = kit, p: str = p) -> object:
            return check_flag_proof(
                p, kit.roster, flag_id=RLP, node="n1", value=True, schema=SCHEMA,
                now_ns=later, live=live,
            )  # fmt: skip

        with pytest.raises(Refused) as exc:
            judged(live=True)
        assert exc.value.reason is (expect or TrustReason.APPROVAL_INVALID), gone
        if gone == "bob":
            assert "bob's key" in exc.value.detail and "revoked" in exc.value.detail
        assert judged(live=False).checked.approvers == ("bob",)  # type: ignore[attr-defined]


def test_a_stored_change_is_judged_when_the_store_wrote_it() -> None:
    """Read from the store at a node's start (not live), a change signed after alice's or
    bob's revocation and dated back before it was judged at its own date and turned the
    flag on; judged when the server wrote it (`stored_ns`), it is refused as a running node
    refused it live. Written before the revocation, it still stands; dated more than 5 s
    after its write, it is refused for that."""
    gone_at = NOW + 1
    written = NOW + 60 * NS_PER_S
    for gone, expect in (("alice", TrustReason.KEY_NOT_VALID), ("bob", None)):
        kit = Kit(
            now_ns=0,
            people={"alice": (Role.OPERATOR,), "bob": (Role.APPROVER,)},
            approvals=ApprovalPolicy(flag=SecondApprover.ALWAYS),
        )
        p = proof(True, approved_by="bob", kit=kit)  # dated NOW, both keys valid then
        kit.revoke(gone, gone_at)

        def stored(at_ns: int, kit: Kit = kit, p: str = p) -> object:
            return check_flag_proof(
                p, kit.roster, flag_id=RLP, node="n1", value=True, schema=SCHEMA,
                now_ns=written + 3600 * NS_PER_S, live=False, stored_ns=at_ns,
            )  # fmt: skip

        with pytest.raises(Refused) as exc:
            stored(written)
        assert exc.value.reason is (expect or TrustReason.APPROVAL_INVALID), gone
        assert "revoked" in exc.value.detail, exc.value.detail
        assert stored(NOW).checked.approvers == ("bob",)  # type: ignore[attr-defined]
        with pytest.raises(Refused) as exc:
            stored(NOW - 6 * NS_PER_S)
        assert exc.value.reason is TrustReason.FROM_FUTURE
