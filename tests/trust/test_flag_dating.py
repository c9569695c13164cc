"""A flag change away from the safe default dated back before it was written or heard.

The decision's `issued_ns` is its signer's choice. A flag approval is judged at that
instant and a node's kill freeze asks whether the change was issued before the kill,
so one operator with write access to the flags bucket could sign a fresh decision
dated inside an old, long-expired approval's hour (turning a trading flag on alone)
or dated before a kill now in force. A change judged at a known instant (heard live,
or the store's write time) must be dated within `CHANGE_LAG_NS` before it; the stop
direction is never held to this.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.clock import NS_PER_S
from knightwatch.flags.activation import ActivationRequest, SecondApprover
from knightwatch.flags.state import FlagChange
from knightwatch.release.dsse import encode_envelope
from knightwatch.trust.approval import Approval, ApprovalKind, sign_approval
from knightwatch.trust.command import Refused, TrustReason
from knightwatch.trust.flagproof import CHANGE_LAG_NS, FlagSealer, FlagVerdict, check_flag_proof
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import ApprovalPolicy, Role

from .test_flagproof import FLAG, LAX, NOW, RLP, SCHEMA

HOUR = 3600 * NS_PER_S
STRICT = Kit(
    now_ns=0,
    people={"alice": (Role.OPERATOR,), "bob": (Role.APPROVER,)},
    approvals=ApprovalPolicy(flag=SecondApprover.ALWAYS),
)


def sealed(value: bool, *, kit: Kit, approved: bool, issued_ns: int = NOW) -> str:
    """alice's signed change dated `issued_ns`, with bob's approval of the hour from NOW."""
    approval = ""
    if approved:
        a = Approval(ApprovalKind.FLAG, RLP, value, None, "alice", "ok", NOW - 1, NOW + HOUR)
        approval = encode_envelope(sign_approval(a, kit.signer("bob"))).decode()
    change = FlagChange(RLP, value, ("n1",), "alice", None, "why", "test", issued_ns, {})
    request = ActivationRequest(RLP, value, "alice", "why", "test", approval=approval)
    return FlagSealer(kit.signer("alice"), kit.roster).seal(change, 7, request, FLAG)


def judge(
    proof: str, value: bool, kit: Kit, *, at_ns: int, live: bool, stored: bool = True
) -> FlagVerdict:
    return check_flag_proof(
        proof,
        kit.roster,
        flag_id=RLP,
        node="n1",
        value=value,
        schema=SCHEMA,
        now_ns=at_ns,
        live=live,
        stored_ns=at_ns if stored and not live else None,
    )


@pytest.mark.parametrize("live", [True, False])
def test_an_expired_approval_does_not_carry_a_change_dated_back_into_its_hour(live: bool) -> None:
    """Two hours after bob's approval expired, alice alone signs a new decision dated
    inside its hour and writes it: before, every node took it as approved by bob."""
    proof = sealed(True, kit=STRICT, approved=True)
    with pytest.raises(Refused) as exc:
        judge(proof, True, STRICT, at_ns=NOW + 2 * HOUR, live=live)
    assert exc.value.reason is TrustReason.STALE
    assert "issued_ns" in exc.value.detail and "dated back" in exc.value.detail


@pytest.mark.parametrize("live", [True, False])
def test_a_change_needing_no_approval_cannot_be_dated_back_either(live: bool) -> None:
    """No approval needed (the roster's policy): dated back, it would dodge a kill's
    freeze, which asks whether the change was issued before the kill latched."""
    proof = sealed(True, kit=LAX, approved=False)
    assert judge(proof, True, LAX, at_ns=NOW + NS_PER_S, live=live).away
    with pytest.raises(Refused) as exc:
        judge(proof, True, LAX, at_ns=NOW + HOUR, live=live)
    assert exc.value.reason is TrustReason.STALE


@pytest.mark.parametrize("live", [True, False])
def test_the_stop_direction_is_never_held_to_its_date(live: bool) -> None:
    proof = sealed(False, kit=STRICT, approved=False)
    verdict = judge(proof, False, STRICT, at_ns=NOW + 30 * 24 * HOUR, live=live)
    assert not verdict.away


def test_a_change_judged_at_its_own_date_alone_is_unchanged() -> None:
    """No instant to judge it at (the replay, preflight, a store without write times):
    as before, its own date alone."""
    proof = sealed(True, kit=STRICT, approved=True)
    verdict = judge(proof, True, STRICT, at_ns=NOW + 2 * HOUR, live=False, stored=False)
    assert verdict.checked.approvers == ("bob",)


@settings(max_examples=60, deadline=None)
@given(
    lag=st.one_of(
        st.integers(-5 * NS_PER_S, 2 * CHANGE_LAG_NS),
        st.sampled_from([0, CHANGE_LAG_NS - 1, CHANGE_LAG_NS, CHANGE_LAG_NS + 1]),
    ),
    live=st.booleans(),
)
def test_an_away_change_stands_exactly_while_it_is_dated_within_the_lag(
    lag: int, live: bool
) -> None:
    proof = sealed(True, kit=LAX, approved=False)
    if lag <= CHANGE_LAG_NS:
        assert judge(proof, True, LAX, at_ns=NOW + lag, live=live).away
    else:
        with pytest.raises(Refused) as exc:
            judge(proof, True, LAX, at_ns=NOW + lag, live=live)
        assert exc.value.reason is TrustReason.STALE


def test_a_change_dated_ahead_is_refused_live_as_a_restarting_node_refuses_it() -> None:
    """Dated more than 5 s after the store wrote it, a node starting later refuses the
    change (`stored_ns`); heard live it was taken, dated an hour ahead of the node's clock,
    so the fleet's nodes held different values by when they had started."""
    proof = sealed(True, kit=LAX, approved=False, issued_ns=NOW + HOUR)
    for live in (True, False):
        with pytest.raises(Refused) as exc:
            judge(proof, True, LAX, at_ns=NOW, live=live)
        assert exc.value.reason is TrustReason.FROM_FUTURE, live
    assert judge(proof, True, LAX, at_ns=NOW + HOUR - 5 * NS_PER_S, live=True).away


@pytest.mark.parametrize("live", [True, False])
def test_a_safe_default_change_from_a_clock_running_ahead_still_applies(live: bool) -> None:
    """The stop direction is never refused for its clock, live or stored."""
    proof = sealed(False, kit=STRICT, approved=False, issued_ns=NOW + HOUR)
    assert not judge(proof, False, STRICT, at_ns=NOW, live=live).away
