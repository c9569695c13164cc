"""A second person's signed approval: it counts only for exactly what it names, signed by
someone else with the approver role, before it expires."""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.release.dsse import add_signature
from knightwatch.trust.approval import (
    Approval,
    ApprovalKind,
    check_approval,
    sign_approval,
)
from knightwatch.trust.roster import TrustError

from ..identities import KIT

NOW = 1_000
APPROVAL = Approval(ApprovalKind.FLAG, "ops.x", True, ("n1",), "alice", "ok", NOW, NOW + 100)


def check(envelope: object, **change: object) -> str:
    wanted: dict[str, object] = {
        "kind": ApprovalKind.FLAG,
        "flag_id": "ops.x",
        "value": True,
        "nodes": ("n1",),
        "requester": "alice",
        "now_ns": NOW + 1,
    } | change
    return check_approval(envelope, KIT.roster, **wanted)  # type: ignore[arg-type]


def test_bobs_approval_of_alices_change_counts() -> None:
    assert check(sign_approval(APPROVAL, KIT.signer("bob"))) == "bob"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"flag_id": "ops.y"}, "not this change"),
        ({"value": False}, "not this change"),
        ({"nodes": None}, "not this change"),
        ({"kind": ApprovalKind.ROLLOUT}, "not this change"),
        ({"requester": "bob"}, "not this change"),
        ({"now_ns": NOW + 101}, "expired"),
        ({"now_ns": NOW - 1}, "expired"),
    ],
)
def test_an_approval_counts_only_for_what_it_names(change: dict[str, object], message: str) -> None:
    with pytest.raises(TrustError, match=message):
        check(sign_approval(APPROVAL, KIT.signer("bob")), **change)


@pytest.mark.parametrize("signer", ["alice", "carol", "admin1", "n1"])
def test_the_requester_a_viewer_an_admin_or_a_node_is_no_second_person(signer: str) -> None:
    with pytest.raises(TrustError, match="needs a person with the approver role"):
        check(sign_approval(APPROVAL, KIT.signer(signer)))


def test_an_edited_approval_does_not_verify() -> None:
    signed = sign_approval(APPROVAL, KIT.signer("bob"))
    wider = msgspec.structs.replace(APPROVAL, nodes=None)
    forged = msgspec.structs.replace(
        signed, payload=sign_approval(wider, KIT.signer("bob")).payload
    )
    with pytest.raises(TrustError, match="does not verify"):
        check(forged, nodes=None)


def test_a_key_not_on_the_roster_counts_for_nothing() -> None:
    from knightwatch.release.keys import SigningKey

    stranger = add_signature(sign_approval(APPROVAL, KIT.signer("alice")), SigningKey.generate())
    with pytest.raises(TrustError, match="signed by alice"):
        check(stranger)
