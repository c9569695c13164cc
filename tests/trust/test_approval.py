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
from knightwatch.trust.kit import Kit
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


HOUR_NS = 3600 * 1_000_000_000


def test_an_approval_claiming_to_last_longer_than_an_hour_is_refused() -> None:
    """Every approval is made usable for `APPROVAL_TTL_S`; one signed with a longer window
    (a year) would stay a second person's consent long after it was given."""
    forever = msgspec.structs.replace(APPROVAL, expires_ns=NOW + 365 * 24 * HOUR_NS)
    with pytest.raises(TrustError, match=r"approval expires_ns: must lie within 60 min"):
        check(sign_approval(forever, KIT.signer("bob")), now_ns=NOW + 2 * HOUR_NS)


def test_a_revoked_approver_cannot_date_an_approval_before_the_revocation() -> None:
    """The approver's key must be valid when the approval is used, not only at the issue
    time its signer chose: revoked, bob's key (stolen, or bob gone) approves nothing more."""
    kit = Kit(now_ns=0)
    revoked_at = 10 * HOUR_NS
    kit.revoke("bob", revoked_at)
    backdated = msgspec.structs.replace(
        APPROVAL, issued_ns=revoked_at - 1, expires_ns=revoked_at - 1 + HOUR_NS
    )
    envelope = sign_approval(backdated, kit.signer("bob"))
    wanted: dict[str, object] = {
        "kind": ApprovalKind.FLAG,
        "flag_id": "ops.x",
        "value": True,
        "nodes": ("n1",),
        "requester": "alice",
    }
    # used before the revocation, it counts; a minute after, it does not
    assert check_approval(envelope, kit.roster, now_ns=revoked_at - 1, **wanted) == "bob"  # type: ignore[arg-type]
    with pytest.raises(TrustError, match=r"bob's key \w+ is revoked"):
        check_approval(envelope, kit.roster, now_ns=revoked_at + 60 * 10**9, **wanted)  # type: ignore[arg-type]
