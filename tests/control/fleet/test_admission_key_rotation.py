"""A node's attestation is checked with the key that asked for its challenge, valid now.

The admission service checked every attestation against one key per node, the newest
valid when the last roster version arrived. Key validity moves with the clock, not with
roster versions, so: a planned rotation (the old key valid an hour more) had a node still
running on its old key get a challenge and then be refused (`attestation_signature_invalid`),
and refused again at every attestation, its lease revoked until it was restarted; once an
old key ended and the new one began with no roster version in between, only the ended key
was accepted, so the node was never admitted again; and an attestation signed with a key
that ended after its challenge was admitted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from knightwatch.clock import NS_PER_S, SimClock
from knightwatch.control.fleet.admission import AdmissionService
from knightwatch.control.node.attestor import Attestor, Measure, directory_measure
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import (
    ENCODER,
    SUBJECT_ATTEST,
    SUBJECT_CHALLENGE,
    TARGET_KEY,
    VERDICT_DECODER,
    TargetRecord,
    Verdict,
    challenge_request,
)
from knightwatch.release.attestation import attest, sign_attestation
from knightwatch.release.dsse import encode_envelope
from knightwatch.release.keys import SigningKey
from knightwatch.release.reasons import AdmissionReason
from knightwatch.trust.kit import Kit, member_of

from ...integration.fleet_release import NEW_ROUTER, REGISTRY, Signers, deploy

HOUR_NS = 3600 * NS_PER_S
TIMEOUT_S = 10.0


@dataclass
class World:
    kit: Kit
    clock: SimClock
    service: AdmissionService
    node: MemoryControlPlane
    measure: Measure

    def roster_moved(self) -> None:
        """A new roster version, as the service hears it (`follow_roster`)."""
        self.service.trust_store = self.kit.store()
        self.service._enrol()

    async def attest(self, key: SigningKey) -> Verdict:
        return await Attestor("n1", key, self.measure, clock=self.clock).attest(
            self.node, TIMEOUT_S
        )


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    fabric = MemoryFabric()
    kit = Kit(now_ns=0, nodes=["n1"])
    clock = SimClock(1_000 * NS_PER_S)
    signers = Signers()
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    service = AdmissionService(
        plane, signers.trust, REGISTRY.admission_schema(), clock=clock, roster=kit.store()
    )
    await service.start()
    tree = deploy(tmp_path / "n1", NEW_ROUTER)
    release = signers.release("r1", tree, REGISTRY.schema())
    record = TargetRecord("r1", release, "alice", "deploy", clock.time_ns(), approver="bob")
    await plane.put_record(Bucket.RELEASE, TARGET_KEY, ENCODER.encode(record))
    for _ in range(300):  # the service hears the target (15 s at most)
        if service.target is not None:
            break
        await asyncio.sleep(0.05)
    assert service.target is not None
    node = MemoryControlPlane(fabric)
    await node.connect()
    measure = directory_measure(tree / "app", tree / "config.toml", REGISTRY.schema())
    try:
        yield World(kit, clock, service, node, measure)
    finally:
        await node.close()
        await plane.close()


async def test_a_node_still_on_its_old_key_during_a_rotation_is_admitted(world: World) -> None:
    old = world.kit.signer("n1").key
    assert (await world.attest(old)).admitted
    new, _ = world.kit.rotate("n1", world.clock.time_ns() + HOUR_NS)
    world.roster_moved()
    for key in (old, new.key, old):  # either key while both are valid
        verdict = await world.attest(key)
        assert verdict.admitted, verdict.detail
    world.clock.advance(HOUR_NS)  # the old key ended: only the new one is the node's
    assert not (await world.attest(old)).admitted
    verdict = await world.attest(new.key)
    assert verdict.admitted, verdict.detail


async def test_a_key_that_begins_later_admits_its_node_once_it_has_begun(world: World) -> None:
    old = world.kit.signer("n1").key
    later = SigningKey.generate()
    begins = world.clock.time_ns() + 60 * NS_PER_S
    roles = world.kit.roster.keys_of("n1")[0].roles
    members = [
        msgspec.structs.replace(m, valid_until_ns=begins) if m.name == "n1" else m
        for m in world.kit.roster.members
    ]
    world.kit.next_version([*members, member_of("n1", later, roles, valid_from_ns=begins)])
    world.roster_moved()
    assert (await world.attest(old)).admitted
    assert not (await world.attest(later)).admitted  # not begun yet
    world.clock.advance(60 * NS_PER_S)  # no roster version since: the clock moved
    verdict = await world.attest(later)
    assert verdict.admitted, verdict.detail
    assert not (await world.attest(old)).admitted


async def test_a_key_that_ended_after_its_challenge_admits_nobody(world: World) -> None:
    key = world.kit.signer("n1").key
    ends = world.clock.time_ns() + 5 * NS_PER_S
    world.kit.next_version(
        [
            msgspec.structs.replace(m, valid_until_ns=ends) if m.name == "n1" else m
            for m in world.kit.roster.members
        ]
    )
    world.roster_moved()
    asked = challenge_request("n1", key, request_id="r1", now_ns=world.clock.time_ns())
    reply = await world.node.request(SUBJECT_CHALLENGE, encode_envelope(asked), TIMEOUT_S)
    nonce = msgspec.json.decode(reply)["nonce"]
    assert nonce
    world.clock.advance(10 * NS_PER_S)  # the key ended; the challenge is still live (30 s)
    attestation = attest("n1", nonce, world.measure(), clock=world.clock)
    envelope = sign_attestation(attestation, key)
    reply = await world.node.request(SUBJECT_ATTEST, encode_envelope(envelope), TIMEOUT_S)
    verdict = VERDICT_DECODER.decode(reply)
    assert not verdict.admitted, verdict
    (finding,) = verdict.findings
    assert finding.reason is AdmissionReason.ATTESTATION_SIGNATURE_INVALID, finding
    assert "no longer valid" in finding.detail, finding.detail
