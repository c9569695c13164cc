"""A ramp record counts only in the fleet it was written for.

The same people hold keys on the staging and the production roster. A ramp record
named no fleet: one written by a staging ramp (signed by alice, an approver on both
rosters), stored again in production's ramp bucket, verified there as alice's, and
production's nodes took it as the slot's ramp. A ramp record is now signed naming
the fleet of the roster its writer holds (`Roster.fleet`), and a node refuses one made
for another fleet (`wrong_fleet`; it holds the tightest stage, as for any record it
cannot verify). An unnamed fleet's records are signed byte for byte as before.
"""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import ABSENT, Bucket
from knightwatch.control.plane.wire import RAMP_DECODER, RampRecord, slot_of
from knightwatch.incident.ramp import RampController, RampPlan, ramp_signer
from knightwatch.release.dsse import add_signature, new_envelope
from knightwatch.state import Scope
from knightwatch.trust.command import Refused, TrustReason
from knightwatch.trust.kit import Kit
from knightwatch.trust.rampproof import RAMP_PAYLOAD_TYPE, check_ramp

NOW = 10_000_000_000


def fleets() -> tuple[Kit, Kit, Kit]:
    """Staging, production and an unnamed fleet, every person holding one key in all."""
    staging = Kit(now_ns=1_000, fleet="staging")
    shared = {name: signer.key for name, signer in staging.signers.items()}
    production = Kit(now_ns=2_000, fleet="production", node_keys=shared)
    unnamed = Kit(now_ns=3_000, node_keys=shared)
    return staging, production, unnamed


def _record() -> RampRecord:
    return RampRecord(
        Scope.STRATEGY, "alpha", "r" * 12, 0, (0.1, 0.5, 1.0), 0.1, "ramping",
        "alice+bob", "fixed", NOW,
    )  # fmt: skip


async def _written_by_a_ramp(kit: Kit) -> RampRecord:
    """The record as a ramp in `kit`'s fleet stores it (the controller's own write)."""
    plane = MemoryControlPlane(MemoryFabric())
    await plane.connect()
    ks = KillSwitch(plane, SystemClock(), kit.signer("alice"), kit.store())
    controller = RampController(plane, ks, SystemClock(), RampPlan())
    record = _record()
    await controller._put(record, ABSENT)
    value, _ = await plane.get_record(Bucket.RAMP, slot_of(record.scope, record.key))
    await plane.close()
    assert value is not None
    return RAMP_DECODER.decode(value)


async def test_a_staging_ramp_record_is_refused_in_production() -> None:
    staging, production, _ = fleets()
    stored = await _written_by_a_ramp(staging)
    assert ramp_signer(stored, staging.roster) == "alice"
    refused = ramp_signer(stored, production.roster)
    assert isinstance(refused, Refused), refused
    assert refused.reason is TrustReason.WRONG_FLEET
    assert refused.detail == (
        "ramp record fleet: it was made for fleet 'staging'; this is fleet 'production' "
        "(it counts only in the fleet it names: ask for one made here)"
    )


async def test_a_named_fleets_ramp_record_is_taken_there_only() -> None:
    staging, production, unnamed = fleets()
    stored = await _written_by_a_ramp(production)
    assert ramp_signer(stored, production.roster) == "alice"
    for roster, said in (
        (staging.roster, "it was made for fleet 'production'; this is fleet 'staging'"),
        (unnamed.roster, "it was made for fleet 'production'; this roster names no fleet"),
    ):
        refused = ramp_signer(stored, roster)
        assert isinstance(refused, Refused), refused
        assert refused.reason is TrustReason.WRONG_FLEET
        assert said in refused.detail


async def test_an_unnamed_fleets_ramp_record_is_signed_as_before() -> None:
    staging, _, unnamed = fleets()
    stored = await _written_by_a_ramp(unnamed)
    assert stored.proof is not None
    assert stored.proof.payload_bytes() == stored.payload()  # byte for byte as before
    assert ramp_signer(stored, unnamed.roster) == "alice"
    refused = ramp_signer(stored, staging.roster)  # a named fleet refuses one naming none
    assert isinstance(refused, Refused), refused
    assert refused.reason is TrustReason.WRONG_FLEET
    assert "it names no fleet; this is fleet 'staging'" in refused.detail


@pytest.mark.parametrize(
    "signed",
    [
        # the fleet named, but another field changed under it
        lambda p: p.replace(b'"fraction":0.1', b'"fraction":1.0').replace(b"}", b',"fleet":"x"}'),
        # a fleet that is no name, or a second copy of a field
        lambda p: p[:-1] + b',"fleet":""}',
        lambda p: p[:-1] + b',"fleet":7}',
        lambda p: p[:-1] + b',"fleet":"staging","fleet":"staging"}',
        lambda p: p[:-1] + b',"fleet":"staging"} ',
        b"[1]".__add__,
    ],
)
def test_a_record_whose_signed_bytes_are_not_it_with_a_fleet_is_refused(signed: object) -> None:
    staging, _, _ = fleets()
    record = _record()
    payload = record.payload()
    body = signed(payload)  # type: ignore[operator]
    proof = add_signature(new_envelope(RAMP_PAYLOAD_TYPE, body), staging.signer("alice").key)
    with pytest.raises(Refused) as raised:
        check_ramp(proof, payload, staging.roster, at_ns=NOW, now_ns=None)
    assert raised.value.reason in (TrustReason.PAYLOAD_MISMATCH, TrustReason.MALFORMED)
    assert msgspec.structs.replace(record, proof=proof).payload() == payload
