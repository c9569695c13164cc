"""A node's attestation is checked with the key that asked for its challenge, valid now.

The admission service checked every attestation against one key per node, the newest
valid when the last roster version arrived. Key validity moves with the clock, not with
roster versions, so: a planned rotation (the old key valid an hour more) had a node still
running on its old key get a challenge and then be refused (`attestation_signature_invalid`),
and refused again at every attestation, its lease revoked until it was restarted; once an
old key ended and the new one began with no roster version in between, only the ended key
was accepted, so the node was never admitted again; and an attestation signed with a key
that ended after its challenge was admitted. The same held for a node with no key valid at
a roster version (new ahead of its start, or between keys): never enrolled once its key
began. And a node whose measurement outlasted a challenge answered an expired one for ever.
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
from knightwatch.release.contents import ReleaseContents
from knightwatch.release.dsse import encode_envelope
from knightwatch.release.keys import SigningKey
from knightwatch.release.reasons import AdmissionReason
from knightwatch.state import Scope
from knightwatch.trust.kit import Kit, member_of

from ...identities import switch
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


async def _attest_as(world: World, node: str, key: SigningKey) -> Verdict:
    return await Attestor(node, key, world.measure, clock=world.clock).attest(world.node, TIMEOUT_S)


def _new_node_starting(world: World, name: str, begins: int) -> SigningKey:
    """A roster version that adds node `name`, its only key valid from `begins`."""
    key = SigningKey.generate()
    roles = world.kit.roster.keys_of("n1")[0].roles
    members = [*world.kit.roster.members, member_of(name, key, roles, valid_from_ns=begins)]
    world.kit.next_version(members)
    world.roster_moved()
    return key


async def test_a_new_node_whose_key_begins_later_is_admitted_once_it_has_begun(
    world: World,
) -> None:
    """A node added ahead of its start (its key valid from later) was left out of the
    enrolment at that roster version, as not valid yet, and nothing enrolled it when its
    start passed: `node_unknown` at every attestation until someone published another
    roster version."""
    begins = world.clock.time_ns() + 60 * NS_PER_S
    key = _new_node_starting(world, "n2", begins)
    assert not (await _attest_as(world, "n2", key)).admitted  # not begun yet
    world.clock.advance(60 * NS_PER_S)  # no roster version since: the clock moved
    verdict = await _attest_as(world, "n2", key)
    assert verdict.admitted, verdict.detail


async def test_a_new_node_whose_key_begins_during_a_kill_is_not_enrolled(world: World) -> None:
    """A node new to the fleet adds risk: one whose key begins while a kill is in force
    stays out (as one published during the kill), even after its start has passed."""
    begins = world.clock.time_ns() + 60 * NS_PER_S
    key = _new_node_starting(world, "n2", begins)
    ks = switch(world.node, world.clock)
    await ks.start()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.1, targets=[])
    world.clock.advance(60 * NS_PER_S)
    verdict = await _attest_as(world, "n2", key)
    assert not verdict.admitted, verdict
    assert verdict.findings[0].reason is AdmissionReason.NODE_UNKNOWN, verdict.findings
    assert "n2" not in world.service.roster


async def test_a_node_whose_measurement_outlasts_a_challenge_is_admitted(world: World) -> None:
    """The node asked for its challenge and then hashed its tree: a measurement longer than
    a challenge's life (30 s: a large install on a slow or loaded disk) answered an expired
    challenge every time, refused `challenge_unknown` ("ask for a new one") for ever. The
    measurement does not depend on the nonce: it is taken before the challenge is asked."""

    def slow() -> ReleaseContents:
        contents = world.measure()
        world.clock.advance(31 * NS_PER_S)  # hashing took longer than a challenge lives
        return contents

    key = world.kit.signer("n1").key
    verdict = await Attestor("n1", key, slow, clock=world.clock).attest(world.node, TIMEOUT_S)
    assert verdict.admitted, verdict.detail


async def test_a_node_between_keys_at_a_roster_version_is_admitted_on_its_next_key(
    world: World,
) -> None:
    """A roster version heard in the gap between a node's key that ended and its next one
    left the node with no key valid then: it was dropped, and nothing enrolled it again
    once its next key began."""
    now = world.clock.time_ns()
    later = SigningKey.generate()
    roles = world.kit.roster.keys_of("n1")[0].roles
    members = [
        msgspec.structs.replace(m, valid_until_ns=now + 10 * NS_PER_S) if m.name == "n1" else m
        for m in world.kit.roster.members
    ]
    begins = now + 60 * NS_PER_S
    world.kit.next_version([*members, member_of("n1", later, roles, valid_from_ns=begins)])
    world.clock.advance(30 * NS_PER_S)  # the old key ended, the next not begun
    world.roster_moved()  # a version heard in the gap (another node's change)
    world.clock.advance(30 * NS_PER_S)
    verdict = await world.attest(later)
    assert verdict.admitted, verdict.detail
