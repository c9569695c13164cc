"""A flag change's proof counts only in the fleet it was made for.

The same operators usually hold keys on the staging and the production roster. Approvals,
target requests and resumes name their fleet, but a flag change's proof did not: a change
of a flag that needs no second person (not trading behaviour, or a policy that asks for
none at that hour), signed in staging, copied into production's flags bucket by anyone
able to write it, turned the flag on there too. The proof now names the roster's fleet
(`FlagDecision.fleet`) and a node refuses one made for another fleet (`wrong_fleet`).
A change to the safe default (the stop direction) is never refused for its fleet, and a
proof of an unnamed fleet is the very bytes an earlier release signed.
"""

from __future__ import annotations

from datetime import date

import msgspec
import pytest

from knightwatch.flags.activation import ActivationRequest
from knightwatch.flags.definition import FlagDefinition, Lifecycle
from knightwatch.flags.state import FlagChange
from knightwatch.trust.command import Refused, TrustReason
from knightwatch.trust.flagproof import FlagProof, FlagSealer, FlagVerdict, check_flag_proof
from knightwatch.trust.kit import Kit

NOW = 1_700_000_000_000_000_000
FLAG = FlagDefinition(
    id="ops.x",
    description="A non-trading switch.",
    safe_default=False,
    trading_behaviour=False,
    lifecycle=Lifecycle.ACTIVE,
    created=date(2026, 1, 1),
    owner="ops",
    expires=date(2027, 1, 1),
)
SCHEMA = {FLAG.id: FLAG.meaning_hash}
UNNAMED_PAYLOAD = (
    b'{"actor":"alice","approval_digest":"","approval_kind":"","approval_nodes":null,'
    b'"approved_ns":0,"description":"A non-trading switch.","flag_id":"ops.x",'
    b'"issued_ns":1700000000000000000,"nodes":["n1"],"reason":"why","requester":"alice",'
    b'"revision":1,"rollout_id":"","rollout_nodes":[],"rollout_plan":"","rollout_stage":0,'
    b'"safe_default":false,"trading_behaviour":false,"value":true}'
)
"""What the release before fleet-named proofs signed for this change (its sealer's output)."""


def fleets() -> tuple[Kit, Kit]:
    """Staging and production, every person holding the same key in both."""
    staging = Kit(now_ns=1_000, fleet="staging")
    shared = {name: signer.key for name, signer in staging.signers.items()}
    return staging, Kit(now_ns=2_000, fleet="production", node_keys=shared)


def proof(kit: Kit, value: bool) -> str:
    change = FlagChange(FLAG.id, value, ("n1",), "alice", None, "why", "test", NOW, {})
    request = ActivationRequest(FLAG.id, value, "alice", "why", "test")
    return FlagSealer(kit.signer("alice"), kit.roster).seal(change, 1, request, FLAG)


def check(p: str, kit: Kit, value: bool) -> FlagVerdict:
    return check_flag_proof(
        p,
        kit.roster,
        flag_id=FLAG.id,
        node="n1",
        value=value,
        schema=SCHEMA,
        now_ns=NOW,
        live=True,
    )


def test_a_change_made_in_staging_is_refused_in_production_as_wrong_fleet() -> None:
    staging, production = fleets()
    on = proof(staging, True)
    assert check(on, staging, True).away
    with pytest.raises(Refused) as exc:
        check(on, production, True)
    assert exc.value.reason is TrustReason.WRONG_FLEET
    assert "'staging'" in exc.value.detail and "'production'" in exc.value.detail
    assert check(proof(production, True), production, True).away


def test_an_unnamed_fleets_change_does_not_count_in_a_named_fleet() -> None:
    _, production = fleets()
    unnamed = Kit(now_ns=1_000, node_keys={n: s.key for n, s in production.signers.items()})
    with pytest.raises(Refused) as exc:
        check(proof(unnamed, True), production, True)
    assert exc.value.reason is TrustReason.WRONG_FLEET
    assert "it names no fleet" in exc.value.detail


def test_the_stop_direction_is_never_refused_for_its_fleet() -> None:
    staging, production = fleets()
    verdict = check(proof(staging, False), production, False)
    assert not verdict.away and verdict.checked.actor == "alice"


def test_an_unnamed_fleets_proof_is_the_bytes_an_earlier_release_signed() -> None:
    kit = Kit(now_ns=0)
    signed = msgspec.json.decode(proof(kit, True), type=FlagProof).change.payload_bytes()
    assert signed == UNNAMED_PAYLOAD
    assert check(proof(kit, True), kit, True).away
    named = msgspec.json.decode(proof(fleets()[0], True), type=FlagProof).change.payload_bytes()
    assert b'"fleet":"staging"' in named
