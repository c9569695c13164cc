"""Signed documents count only in the fleet they name.

The same people usually hold keys on the staging and the production roster (and
the same admins may anchor both). Before, nothing an approver or the admins
signed named its fleet: an approval made on staging counted in production within
its hour, a target request within its minute, and a roster version the admins
signed for staging was taken by production as its own next version (one admin
able to write `kw_roster` replaced production's roster with staging's), and a
staging kill with the two-person resume lifting it, stored again in production's
kill state, lifted production's halt of that slot. A roster now names its fleet
(`Roster.fleet`, kept by every later version), and approvals, target requests and
resumes name the fleet they are for; each is checked against the roster of the
fleet where it takes effect. A kill is never refused for its fleet.
"""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.release.dsse import Envelope, add_signature
from knightwatch.release.keys import SigningKey
from knightwatch.state import Scope, TradingState
from knightwatch.trust.approval import Approval, ApprovalKind, check_approval, sign_approval
from knightwatch.trust.command import (
    Refused,
    StateCommand,
    TrustReason,
    check_state,
    sign_command,
)
from knightwatch.trust.kit import Kit, member_of
from knightwatch.trust.roster import Role, Roster, TrustError
from knightwatch.trust.target import TargetCommand, check_target, sign_target

NOW = 10_000_000_000
HOUR = 3600 * 1_000_000_000


def fleets() -> tuple[Kit, Kit]:
    """Staging and production, every person (admins too) holding the same key in both."""
    staging = Kit(now_ns=1_000, fleet="staging")
    shared = {name: signer.key for name, signer in staging.signers.items()}
    production = Kit(now_ns=2_000, fleet="production", node_keys=shared)
    assert staging.anchor == production.anchor  # the same admins anchor both
    return staging, production


def flag_approval(fleet: str) -> Approval:
    return Approval(
        ApprovalKind.FLAG, "ops.x", True, None, "alice", "ok", NOW, NOW + HOUR, fleet=fleet
    )


def check(envelope: object, roster: Roster) -> str:
    return check_approval(
        envelope,  # type: ignore[arg-type]
        roster,
        kind=ApprovalKind.FLAG,
        flag_id="ops.x",
        value=True,
        nodes=None,
        requester="alice",
        now_ns=NOW + 1,
    )


def test_an_approval_made_on_staging_does_not_count_in_production() -> None:
    staging, production = fleets()
    signed = sign_approval(flag_approval("staging"), staging.signer("bob"))
    assert check(signed, staging.roster) == "bob"
    with pytest.raises(TrustError, match=r"approval fleet: .*'staging'.*'production'"):
        check(signed, production.roster)


def test_an_approval_naming_no_fleet_does_not_count_in_a_named_fleet() -> None:
    _, production = fleets()
    signed = sign_approval(flag_approval(""), production.signer("bob"))
    with pytest.raises(TrustError, match="approval fleet: it names no fleet"):
        check(signed, production.roster)


def test_a_fleet_that_names_itself_on_an_approval_takes_it() -> None:
    _, production = fleets()
    signed = sign_approval(flag_approval("production"), production.signer("bob"))
    assert check(signed, production.roster) == "bob"


def test_an_unnamed_fleets_approvals_are_read_as_before() -> None:
    kit = Kit(now_ns=1_000)
    signed = sign_approval(flag_approval(""), kit.signer("bob"))
    assert b"fleet" not in signed.payload_bytes()  # what an earlier release reads
    assert check(signed, kit.roster) == "bob"


def test_a_target_approval_made_on_staging_does_not_count_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from knightwatch.release.dsse import new_envelope
    from knightwatch.trust import target

    # the release itself does not matter here: only what the approval binds
    monkeypatch.setattr(target, "release_ref", lambda release: ("r1", "a" * 64))
    staging, production = fleets()
    release = new_envelope("application/octet-stream", b"-")
    signed = target.approve_target(
        release, staging.signer("bob"), "alice", "ok", NOW, fleet="staging"
    )
    wanted = {
        "kind": ApprovalKind.TARGET,
        "flag_id": "r1",
        "value": True,
        "nodes": None,
        "requester": "alice",
        "now_ns": NOW + 1,
        "digest": "a" * 64,
    }
    assert check_approval(signed, staging.roster, **wanted) == "bob"  # type: ignore[arg-type]
    with pytest.raises(TrustError, match="approval fleet"):
        check_approval(signed, production.roster, **wanted)  # type: ignore[arg-type]


def target_request(fleet: str) -> TargetCommand:
    return TargetCommand(
        "r1", "a" * 64, "ok", "alice", "c1", NOW, NOW + 30_000_000_000, 0, fleet=fleet
    )


def test_a_target_request_made_on_staging_is_refused_in_production() -> None:
    staging, production = fleets()
    signed = sign_target(target_request("staging"), staging.signer("alice"))
    assert check_target(signed, staging.roster, now_ns=NOW + 1).release_id == "r1"
    with pytest.raises(Refused) as refused:
        check_target(signed, production.roster, now_ns=NOW + 1)
    assert refused.value.reason is TrustReason.WRONG_FLEET
    assert "'staging'" in refused.value.detail and "'production'" in refused.value.detail


def test_a_roster_version_signed_for_staging_is_refused_by_production() -> None:
    staging, production = fleets()
    store = production.store()
    mallory = member_of("mallory", SigningKey.generate(), (Role.OPERATOR, Role.APPROVER))
    replayed = staging.next_version([*staging.roster.members, mallory], at_ns=5_000)
    with pytest.raises(TrustError, match=r"fleet: 'staging'.*fleet 'production'"):
        store.accept(replayed)
    assert store.roster is not None and store.roster.fleet == "production"
    assert "mallory" not in store.roster.names_with(Role.OPERATOR)


def test_a_version_keeps_the_fleets_name() -> None:
    _, production = fleets()
    store = production.store()
    for renamed in ("staging", ""):
        production.roster = msgspec.structs.replace(production.roster, fleet=renamed)
        envelope = production.next_version(production.roster.members)
        production.envelopes.pop()
        production.roster = store.roster  # type: ignore[assignment]
        with pytest.raises(TrustError, match="a fleet's roster keeps its name"):
            store.accept(envelope)
    assert store.version == 1


def test_an_unnamed_fleet_may_name_itself_once() -> None:
    kit = Kit(now_ns=1_000)
    store = kit.store()
    kit.roster = msgspec.structs.replace(kit.roster, fleet="production")
    store.accept(kit.next_version(kit.roster.members))
    assert store.roster is not None and store.roster.fleet == "production"


def test_a_fleet_name_follows_the_name_rule() -> None:
    with pytest.raises(TrustError, match="roster fleet: "):
        Kit(now_ns=1_000, fleet="prod uction")


def test_an_unnamed_roster_is_written_as_before() -> None:
    kit = Kit(now_ns=1_000)
    assert b"fleet" not in kit.latest.payload_bytes()


def test_a_node_refuses_a_flag_change_riding_an_approval_made_on_staging() -> None:
    from datetime import date

    from knightwatch.flags.activation import ActivationRequest
    from knightwatch.flags.definition import FlagDefinition, Lifecycle
    from knightwatch.flags.state import FlagChange
    from knightwatch.release.dsse import encode_envelope
    from knightwatch.trust.flagproof import FlagSealer, check_flag_proof

    staging, production = fleets()
    flag = FlagDefinition(
        id="trading.x",
        description="A trading behaviour.",
        safe_default=False,
        trading_behaviour=True,
        lifecycle=Lifecycle.ACTIVE,
        created=date(2026, 1, 1),
        owner="desk",
        expires=date(2027, 1, 1),
    )

    def proof(approval_fleet: Kit) -> str:
        approval = Approval(
            ApprovalKind.FLAG, flag.id, True, None, "alice", "ok", NOW, NOW + HOUR,
            fleet=approval_fleet.roster.fleet,
        )  # fmt: skip
        signed = encode_envelope(sign_approval(approval, approval_fleet.signer("bob"))).decode()
        change = FlagChange(flag.id, True, ("n1",), "alice", "bob", "why", "test", NOW, {})
        request = ActivationRequest(flag.id, True, "alice", "why", "test", approval=signed)
        sealer = FlagSealer(production.signer("alice"), production.roster)
        return sealer.seal(change, 1, request, flag)

    def judge(p: str) -> object:
        return check_flag_proof(
            p,
            production.roster,
            flag_id=flag.id,
            node="n1",
            value=True,
            schema={flag.id: flag.meaning_hash},
            now_ns=NOW + 1,
            live=True,
        )

    assert judge(proof(production)).checked.approvers == ("bob",)  # type: ignore[attr-defined]
    with pytest.raises(Refused) as refused:
        judge(proof(staging))
    assert refused.value.reason is TrustReason.APPROVAL_INVALID
    assert "made for fleet 'staging'" in refused.value.detail


def state_command(state: TradingState, fleet: str) -> StateCommand:
    resume = state is TradingState.ACTIVE
    return StateCommand(
        Scope.FLEET, "fleet", state, "test", "alice", "c" * 32, NOW, NOW + HOUR,
        supersedes="k" * 32 if resume else "", decided_on=2 if resume else 0, fleet=fleet,
    )  # fmt: skip


def signed_by_both(command: StateCommand, kit: Kit) -> Envelope:
    return add_signature(sign_command(command, kit.signer("alice").key), kit.signer("bob").key)


def as_stored(command: StateCommand) -> StateCommand:
    """The command as a stored entry carries it (`StateEntry.command()`: no fleet field)."""
    return msgspec.structs.replace(command, fleet="")


def test_a_resume_approved_on_staging_does_not_lift_a_halt_in_production() -> None:
    """A staging kill and the two-person resume lifting it, both stored again in
    production's kill state, would lift production's halt of that slot: the kill is a
    stop (any operator may store one; it verifies on any date) and the resume names
    that kill's command id and revision, which a writer can line up."""
    staging, production = fleets()
    resume = state_command(TradingState.ACTIVE, "staging")
    proof = signed_by_both(resume, staging)
    live = check_state(as_stored(resume), proof, staging.roster, now_ns=NOW, live=True)
    assert live.approvers == ("bob",)
    for judged in (
        {"now_ns": NOW, "live": True},
        {"now_ns": 0, "live": False, "stored_ns": NOW},
        {"now_ns": 0, "live": False},
    ):
        with pytest.raises(Refused) as refused:
            check_state(as_stored(resume), proof, production.roster, **judged)  # type: ignore[arg-type]
        assert refused.value.reason is TrustReason.WRONG_FLEET
        assert "made for fleet 'staging'" in refused.value.detail


def test_a_resume_naming_no_fleet_does_not_lift_a_halt_in_a_named_fleet() -> None:
    _, production = fleets()
    resume = state_command(TradingState.ACTIVE, "")
    with pytest.raises(Refused) as refused:
        check_state(
            resume, signed_by_both(resume, production), production.roster, now_ns=NOW, live=True
        )
    assert refused.value.reason is TrustReason.WRONG_FLEET


def test_a_resume_made_for_its_own_fleet_lifts_the_halt() -> None:
    _, production = fleets()
    resume = state_command(TradingState.ACTIVE, "production")
    proof = signed_by_both(resume, production)
    for entry in (resume, as_stored(resume)):
        checked = check_state(entry, proof, production.roster, now_ns=NOW, live=True)
        assert checked.approvers == ("bob",)
    # an entry naming another fleet than its proof is not what was signed
    other = msgspec.structs.replace(resume, fleet="staging")
    with pytest.raises(Refused) as refused:
        check_state(other, proof, production.roster, now_ns=NOW, live=True)
    assert refused.value.reason is TrustReason.PAYLOAD_MISMATCH


def test_a_kill_made_for_any_fleet_or_none_still_stops() -> None:
    staging, production = fleets()
    for fleet in ("staging", "", "production"):
        kill = state_command(TradingState.HALTED, fleet)
        proof = sign_command(kill, staging.signer("alice").key)
        for entry in (kill, as_stored(kill)):
            assert (
                check_state(entry, proof, production.roster, now_ns=0, live=False).actor == "alice"
            )


def test_a_command_naming_no_fleet_is_signed_as_before() -> None:
    resume = state_command(TradingState.ACTIVE, "")
    payload = sign_command(resume, SigningKey.generate()).payload_bytes()
    assert "fleet" not in msgspec.json.decode(payload)
    assert b'"ramp":[]' in payload  # the bytes an earlier release signed and reads
    named = sign_command(state_command(TradingState.ACTIVE, "production"), SigningKey.generate())
    assert b'"fleet":"production"' in named.payload_bytes()
