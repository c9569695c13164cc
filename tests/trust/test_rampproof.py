"""The ramp record's proof: who may sign one, and every way a record fails to verify."""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.control.plane.wire import ENCODER, RAMP_DECODER, RampRecord
from knightwatch.release.dsse import add_signature, new_envelope
from knightwatch.state import Scope
from knightwatch.trust.command import Refused, TrustReason
from knightwatch.trust.kit import Kit
from knightwatch.trust.rampproof import check_ramp, sign_ramp

from ..identities import KIT

NOW = 10**18
RECORD = RampRecord(
    Scope.FLEET, "fleet", "abc123", 1, (0.1, 0.5, 1.0), 0.5, "ramping", "alice+bob", "fixed", NOW
)


def check(record: RampRecord, kit: Kit = KIT, *, live: bool = True) -> str:
    return check_ramp(
        record.proof, record.payload(), kit.roster, at_ns=record.since_ns,
        now_ns=NOW + 10**9 if live else None,
    ).actor  # fmt: skip


def refused(record: RampRecord, kit: Kit = KIT, *, live: bool = True) -> TrustReason:
    with pytest.raises(Refused) as caught:
        check(record, kit, live=live)
    return caught.value.reason


@pytest.mark.parametrize("name", ["alice", "bob"])
def test_an_operator_or_approver_signature_verifies_and_survives_the_wire(name: str) -> None:
    signed = RECORD.signed(KIT.signer(name).key)
    assert check(signed) == name
    carried = RAMP_DECODER.decode(ENCODER.encode(signed))  # stored and read back
    assert carried == signed and check(carried) == name


@pytest.mark.parametrize("name", ["carol", "supervisor", "n1"])
def test_a_viewer_component_or_node_may_not_sign_one(name: str) -> None:
    assert refused(RECORD.signed(KIT.signer(name).key)) is TrustReason.ROLE_NOT_ALLOWED


@pytest.mark.parametrize(
    "change",
    [
        {"status": "done"},
        {"fraction": 1.0},
        {"stage": 2},
        {"ramp_id": "other"},
        {"since_ns": NOW + 1},
        {"stages": (1.0,)},
        {"key": "mm"},
    ],
)
def test_any_field_changed_after_signing_is_refused(change: dict[str, object]) -> None:
    forged = msgspec.structs.replace(RECORD.signed(KIT.signer("alice").key), **change)
    assert refused(forged) is TrustReason.PAYLOAD_MISMATCH


def test_unsigned_unknown_key_wrong_type_and_no_roster() -> None:
    assert refused(RECORD) is TrustReason.UNSIGNED
    stranger = Kit(now_ns=0, nodes=())
    assert refused(RECORD.signed(stranger.signer("alice").key)) is TrustReason.UNKNOWN_KEY
    wrong = add_signature(
        new_envelope("application/other", RECORD.payload()), KIT.signer("alice").key
    )
    assert refused(msgspec.structs.replace(RECORD, proof=wrong)) is TrustReason.MALFORMED
    with pytest.raises(Refused) as caught:
        check_ramp(sign_ramp(RECORD.payload(), KIT.signer("alice").key), RECORD.payload(), None,
                   at_ns=NOW, now_ns=NOW)  # fmt: skip
    assert caught.value.reason is TrustReason.NO_ROSTER


def test_a_bad_signature_is_refused() -> None:
    signed = RECORD.signed(KIT.signer("alice").key)
    assert signed.proof is not None
    sig = signed.proof.signatures[0]
    bad = msgspec.structs.replace(sig, sig="A" * len(sig.sig))
    proof = msgspec.structs.replace(signed.proof, signatures=(bad,))
    assert refused(msgspec.structs.replace(signed, proof=proof)) is TrustReason.SIGNATURE_INVALID


def test_a_revoked_key_signs_no_live_record_but_its_earlier_stored_ones_stand() -> None:
    kit = Kit(now_ns=0, nodes=("n1",))
    before = RECORD.signed(kit.signer("alice").key)
    kit.revoke("alice", NOW + 1)
    assert refused(before, kit) is TrustReason.KEY_NOT_VALID  # news from a revoked key
    assert check(before, kit, live=False) == "alice"  # stored before the revocation
    after = msgspec.structs.replace(RECORD, since_ns=NOW + 2).signed(kit.signer("alice").key)
    assert refused(after, kit, live=False) is TrustReason.KEY_NOT_VALID
