"""The target release's two-person rule, where the target is applied: the admission service
on a real nats-server with authorization on.

Who asked is whoever signed the request (an operator, fresh, never replayed); a
second person with the approver role must have approved exactly that release
for that requester. Only a return to the known-good release while its kill is
in force is one person's (the stop direction).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from knightwatch.clock import NS_PER_S, SimClock, SystemClock
from knightwatch.control.fleet.admission import (
    CHALLENGE_MALFORMED,
    CHALLENGE_PENDING_NODE,
    CHALLENGE_PENDING_TOTAL,
    AdmissionService,
    request_target,
)
from knightwatch.control.fleet.freeze import record_known_good
from knightwatch.control.node.attestor import Attestor, directory_measure
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import (
    ENCODER,
    KNOWN_GOOD_KEY,
    SUBJECT_ATTEST,
    SUBJECT_CHALLENGE,
    SUBJECT_TARGET,
    TARGET_DECODER,
    TARGET_KEY,
    TARGET_REPLY_DECODER,
    VERDICT_DECODER,
    KnownGood,
    TargetRecord,
    TargetReply,
    TargetRequest,
)
from knightwatch.control.site import Site
from knightwatch.release.attestation import attest, sign_attestation
from knightwatch.release.dsse import Envelope, encode_envelope
from knightwatch.release.reasons import AdmissionReason
from knightwatch.state import Scope
from knightwatch.trust.target import TargetCommand, approve_target, sign_target, target_command

from ...identities import BOB, KIT, set_target, signer, switch, trust
from ...integration.fleet_release import NEW_ROUTER, REGISTRY, Signers, deploy

HOUR_NS = 3600 * 1_000_000_000


class Stage:
    """An admission service and alice's connection on an authorized server, two releases."""

    def __init__(
        self, alice: NatsControlPlane, r1: Envelope, r2: Envelope, service: AdmissionService
    ) -> None:
        self.service = service
        self.alice = alice
        self.r1 = r1
        self.r2 = r2
        self.clock = SystemClock()

    async def target(self) -> TargetRecord | None:
        value, _ = await self.alice.get_record(Bucket.RELEASE, TARGET_KEY)
        return TARGET_DECODER.decode(value) if value is not None else None

    async def send(self, request: TargetRequest) -> TargetReply:
        reply = await self.alice.request(SUBJECT_TARGET, ENCODER.encode(request), timeout_s=2.0)
        return TARGET_REPLY_DECODER.decode(reply)


@pytest.fixture
async def stage(nats_server: Site, tmp_path: Path) -> AsyncIterator[Stage]:
    signers = Signers()
    service = AdmissionService(
        await nats_server.connect("admission"),
        signers.trust,
        REGISTRY.admission_schema(),
        clock=SystemClock(),
        roster=trust(),
    )
    await service.start()
    tree = deploy(tmp_path / "tree", NEW_ROUTER)
    r1 = signers.release("r1", tree, REGISTRY.schema())
    r2 = signers.release("r2", tree, REGISTRY.schema())
    alice = await nats_server.connect("alice")
    try:
        yield Stage(alice, r1, r2, service)
    finally:
        await alice.close()
        await service.plane.close()


def refused(reply: TargetReply, reason: AdmissionReason, text: str) -> None:
    assert not reply.accepted, reply
    (finding,) = reply.findings
    assert finding.reason is reason, finding
    assert text in finding.detail, finding.detail


async def test_a_target_change_needs_a_second_persons_approval_of_exactly_that_release(
    stage: Stage,
) -> None:
    now = stage.clock.time_ns()
    alice = KIT.signer("alice")
    # no approval: refused, nothing stored
    reply = await set_target(stage.alice, stage.r1, stage.clock, approver=None)
    refused(reply, AdmissionReason.TARGET_NOT_APPROVED, "needs a second person")
    assert await stage.target() is None
    # alice approving her own change: refused (the requester never counts)
    reply = await set_target(stage.alice, stage.r1, stage.clock, approver="alice")
    refused(reply, AdmissionReason.TARGET_NOT_APPROVED, "other than alice")
    # carol (a viewer) approving: refused
    reply = await set_target(stage.alice, stage.r1, stage.clock, approver="carol")
    refused(reply, AdmissionReason.TARGET_NOT_APPROVED, "approver role")
    # bob approving r2 does not approve r1
    other = approve_target(stage.r2, BOB, "alice", "r2 only", now)
    reply = await request_target(stage.alice, stage.r1, alice, "x", now_ns=now, approval=other)
    refused(reply, AdmissionReason.TARGET_NOT_APPROVED, "approves target release r2")
    # bob approving r1 for bob does not approve alice's request
    for_bob = approve_target(stage.r1, BOB, "bob", "for bob", now)
    reply = await request_target(stage.alice, stage.r1, alice, "x", now_ns=now, approval=for_bob)
    refused(reply, AdmissionReason.TARGET_NOT_APPROVED, "by bob, not this change")
    # bob's approval, expired
    old = approve_target(stage.r1, BOB, "alice", "yesterday", now - 2 * HOUR_NS)
    reply = await request_target(stage.alice, stage.r1, alice, "x", now_ns=now, approval=old)
    refused(reply, AdmissionReason.TARGET_NOT_APPROVED, "expired")
    # bob's approval with its payload widened after signing (now "for anyone's r2")
    forged = msgspec.structs.replace(
        approve_target(stage.r1, BOB, "alice", "ok", now),
        payload=approve_target(stage.r2, BOB, "alice", "ok", now).payload,
    )
    reply = await request_target(stage.alice, stage.r2, alice, "x", now_ns=now, approval=forged)
    refused(reply, AdmissionReason.TARGET_NOT_APPROVED, "does not verify")
    assert await stage.target() is None
    # approved by bob: accepted, and the record says who asked and who approved
    reply = await set_target(stage.alice, stage.r1, stage.clock)
    assert reply.accepted, reply
    record = await stage.target()
    assert record is not None and (record.release_id, record.actor, record.approver) == (
        "r1",
        "alice",
        "bob",
    )


async def test_who_asked_is_whoever_signed_fresh_and_not_replayed(stage: Stage) -> None:
    now = stage.clock.time_ns()
    approval = approve_target(stage.r1, BOB, "alice", "ok", now)

    def request(command: TargetCommand, signer: str = "alice") -> TargetRequest:
        return TargetRequest(stage.r1, sign_target(command, KIT.signer(signer)), approval)

    good = target_command(
        stage.r1, KIT.signer("alice"), "deploy", command_id="c1", now_ns=now, decided_on=0
    )
    command = msgspec.json.decode(good.payload_bytes(), type=TargetCommand)
    cases = [
        (request(command, "bob"), "actor 'alice' did not sign"),
        (
            request(msgspec.structs.replace(command, actor="carol"), "carol"),
            "requested by an operator",
        ),
        (
            request(
                msgspec.structs.replace(
                    command, issued_ns=now - 120 * 10**9, expires_ns=now - 60 * 10**9
                )
            ),
            "expired",
        ),
        (request(msgspec.structs.replace(command, release_id="r2")), "not the release sent"),
        (request(msgspec.structs.replace(command, decided_on=7)), "stale"),
        (TargetRequest(stage.r1, msgspec.structs.replace(good, signatures=()), approval), "no "),
    ]
    for bad, text in cases:
        refused(await stage.send(bad), AdmissionReason.TARGET_REQUEST_REFUSED, text)
    assert await stage.target() is None
    applied = TargetRequest(stage.r1, good, approval)
    assert (await stage.send(applied)).accepted
    # the same signed request again: refused as a replay, the target unchanged
    refused(await stage.send(applied), AdmissionReason.TARGET_REQUEST_REFUSED, "replayed")
    record = await stage.target()
    assert record is not None and record.command_id == "c1"


async def test_a_return_to_the_known_good_release_during_its_kill_is_one_persons(
    stage: Stage,
) -> None:
    assert (await set_target(stage.alice, stage.r1, stage.clock)).accepted
    assert (await set_target(stage.alice, stage.r2, stage.clock)).accepted
    ks = switch(stage.alice, stage.clock)
    # r2 misbehaves: a kill, and r2 is known-good as the target it froze on; the operator
    # redeploys r1, which is refused while frozen (not known-good), approved or not
    kill = await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.2, targets=[])
    assert await record_known_good(stage.alice, kill.entry, stage.clock.time_ns()) == "r2"
    refused(
        await set_target(stage.alice, stage.r1, stage.clock),
        AdmissionReason.FROZEN_BY_KILL,
        "only r2 (known-good)",
    )
    # the known-good record is for people to read: one rewritten to name r1 (operators
    # may write it) makes r1 no more a one-person return than before
    forged = KnownGood("r1", kill.entry.command_id, stage.clock.time_ns())
    await stage.alice.put_record(Bucket.INCIDENT, KNOWN_GOOD_KEY, ENCODER.encode(forged))
    refused(
        await set_target(stage.alice, stage.r1, stage.clock, approver=None),
        AdmissionReason.FROZEN_BY_KILL,
        "only r2 (known-good)",
    )
    # back to r2 with alice's signature alone: the stop direction passes
    reply = await set_target(stage.alice, stage.r2, stage.clock, approver=None)
    assert reply.accepted, reply
    record = await stage.target()
    assert record is not None and (record.release_id, record.approver) == ("r2", "")
    # after the resume the same one-person request is an ordinary change again: refused
    await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    refused(
        await set_target(stage.alice, stage.r2, stage.clock, approver=None),
        AdmissionReason.TARGET_NOT_APPROVED,
        "needs a second person",
    )


async def test_a_stored_target_nobody_can_read_refuses_every_node_until_set_again(
    stage: Stage, nats_server: Site
) -> None:
    """A target record that does not decode raised in the service's watcher: the service
    kept judging against the target before it, so nodes were admitted on a release nobody
    had set (and a new target request failed on reading the old one). Now every node is
    refused, naming the record, until a target is set again (two people, as any)."""
    assert (await set_target(stage.alice, stage.r1, stage.clock)).accepted
    service = stage.service
    assert service.target is not None and service.target.release_id == "r1"
    writer = await nats_server.connect("admission")
    try:
        await writer.put_record(Bucket.RELEASE, TARGET_KEY, b'{"release_id": 7')
        for _ in range(200):
            if service.target is None:
                break
            await asyncio.sleep(0.01)
    finally:
        await writer.close()
    assert service.target is None
    verdict = service.judge(msgspec.json.encode(stage.r1))
    assert not verdict.admitted
    (finding,) = verdict.findings
    assert finding.reason is AdmissionReason.NOT_TARGET_RELEASE
    assert "stored target release record cannot be read" in finding.detail
    reply = await set_target(stage.alice, stage.r2, stage.clock)
    assert reply.accepted, reply
    assert service.target is not None and service.target.release_id == "r2"
    assert service.target_problem == ""


async def test_challenge_requests_are_checked_and_bounded(
    nats_server: Site, tmp_path: Path
) -> None:
    """Any node may ask for a challenge in any name: a name that is not UTF-8 or not a
    valid name is a refusal (empty reply, counted) rather than a responder traceback and
    no answer; unanswered challenges are bounded per name and, for names not enrolled,
    in all, while an enrolled node's answered challenges free their place."""
    service = AdmissionService(
        await nats_server.connect("admission"),
        Signers().trust,
        REGISTRY.admission_schema(),
        clock=SystemClock(),
        roster=trust(),
        max_pending_per_node=2,
        max_pending=3,
    )
    await service.start()
    n1 = await nats_server.connect("n1")
    n2 = await nats_server.connect("n2")
    try:

        async def challenge(name: bytes) -> bytes:
            return await n1.request(SUBJECT_CHALLENGE, name, timeout_s=2.0)

        assert await challenge(b"\xff\xfe n2") == b""
        assert await challenge(b"n2\nADMISSION node=n3 verdict=admitted") == b""
        assert await challenge(b"") == b""
        assert service.challenges_refused == {CHALLENGE_MALFORMED: 3}

        # n2 answers each challenge it asks for: it is never held back by the bound
        tree = deploy(tmp_path / "tree", NEW_ROUTER)
        measure = directory_measure(tree / "app", tree / "config.toml", REGISTRY.schema())
        attestor = Attestor("n2", signer("n2").key, measure, clock=SystemClock())
        for _ in range(3):
            verdict = await attestor.attest(n2, 2.0)
            assert [f.reason for f in verdict.findings] == [AdmissionReason.NOT_TARGET_RELEASE]
        assert CHALLENGE_PENDING_NODE not in service.challenges_refused

        # asked in n2's name and never answered: two are kept, the third withdraws the first
        assert await challenge(b"n2") and await challenge(b"n2")
        assert await challenge(b"n2")
        assert service.challenges_refused[CHALLENGE_PENDING_NODE] == 1
        # made-up names: refused once three are unanswered in all; an enrolled node is not
        assert await challenge(b"ghost1")
        assert await challenge(b"ghost2") == b""
        assert service.challenges_refused[CHALLENGE_PENDING_TOTAL] == 1
        assert await challenge(b"n3")
    finally:
        await n1.close()
        await n2.close()
        await service.plane.close()


async def test_a_flood_of_challenges_in_a_nodes_name_does_not_keep_it_out(
    stage: Stage, nats_server: Site, tmp_path: Path
) -> None:
    """Nothing in a challenge request says who sent it, and any node may name any node:
    n2 asking in n1's name 16 times (one `max_age`) filled n1's places, and n1's own
    request was refused, so n1 was never admitted. Now the oldest unanswered challenge
    for the name makes way (counted, and forgotten: it admits nobody); n1's own request
    gets a nonce and n1 is admitted."""
    assert (await set_target(stage.alice, stage.r1, stage.clock)).accepted
    n1 = await nats_server.connect("n1")
    n2 = await nats_server.connect("n2")
    try:
        flood = [await n2.request(SUBJECT_CHALLENGE, b"n1", timeout_s=2.0) for _ in range(40)]
        tree = tmp_path / "tree"
        measure = directory_measure(tree / "app", tree / "config.toml", REGISTRY.schema())
        attestor = Attestor("n1", signer("n1").key, measure, clock=SystemClock())
        verdict = await attestor.attest(n1, 2.0)
        assert verdict.admitted, verdict
        assert all(flood)
        assert stage.service.challenges_refused == {CHALLENGE_PENDING_NODE: 41 - 16}
        # a withdrawn challenge admits nobody, even signed by the node named
        withdrawn = sign_attestation(
            attest("n1", flood[0].decode(), measure(), clock=stage.clock), signer("n1").key
        )
        reply = await n1.request(SUBJECT_ATTEST, encode_envelope(withdrawn), timeout_s=2.0)
        late = VERDICT_DECODER.decode(reply)
        assert not late.admitted
        assert [f.reason for f in late.findings] == [AdmissionReason.CHALLENGE_UNKNOWN]
    finally:
        await n1.close()
        await n2.close()


async def test_an_attestation_is_signature_checked_once_and_only_against_its_challenge(
    stage: Stage, nats_server: Site, tmp_path: Path
) -> None:
    """Anyone who may attest can send any envelope in any node's name. Before, every
    signature naming the node's key was checked, each time: one envelope carrying
    hundreds held the service for as many checks, and a forged attestation repeated with
    one nonce cost checks for ever. Now an attestation carries exactly one signature
    (else it is malformed, nothing checked), a signature is checked only against a
    challenge still unanswered for that node, and the attempt spends it; n1 itself is
    admitted as before."""
    assert (await set_target(stage.alice, stage.r1, stage.clock)).accepted
    n1 = await nats_server.connect("n1")
    n2 = await nats_server.connect("n2")
    tree = tmp_path / "tree"
    measure = directory_measure(tree / "app", tree / "config.toml", REGISTRY.schema())

    async def send(envelope: Envelope) -> list[AdmissionReason]:
        reply = await n2.request(SUBJECT_ATTEST, encode_envelope(envelope), timeout_s=5.0)
        verdict = VERDICT_DECODER.decode(reply)
        assert not verdict.admitted and not verdict.attributable, verdict
        return [f.reason for f in verdict.findings]

    try:
        nonce = (await n2.request(SUBJECT_CHALLENGE, b"n1", timeout_s=2.0)).decode()
        claim = attest("n1", nonce, measure(), clock=stage.clock)
        forged = sign_attestation(claim, signer("n2").key)
        genuine = sign_attestation(claim, signer("n1").key)
        (real,) = genuine.signatures
        padded = msgspec.structs.replace(
            genuine,
            signatures=(
                real,
                *[msgspec.structs.replace(s, keyid=real.keyid) for s in forged.signatures * 300],
            ),
        )
        assert await send(padded) == [AdmissionReason.ATTESTATION_MALFORMED]
        assert await send(forged) == [AdmissionReason.ATTESTATION_SIGNATURE_INVALID]
        for _ in range(3):  # the forged attempt spent the challenge: nothing left to check
            assert await send(forged) == [AdmissionReason.CHALLENGE_UNKNOWN]
        assert await send(genuine) == [AdmissionReason.CHALLENGE_UNKNOWN]
        attestor = Attestor("n1", signer("n1").key, measure, clock=SystemClock())
        verdict = await attestor.attest(n1, 2.0)
        assert verdict.admitted, verdict
    finally:
        await n1.close()
        await n2.close()


async def test_a_flood_of_challenges_costs_each_request_constant_work(
    nats_server: Site, tmp_path: Path
) -> None:
    """The service answers one request at a time, and every challenge request rebuilt all
    the unanswered challenges (up to 4096, and 16 for each enrolled node): a flood of
    requests in made-up and other nodes' names held it for all of them on every request
    (100,000 took minutes), while n1's own requests waited behind. Now expiry looks only
    at the oldest: one look a request, and each expired challenge once, when it is
    forgotten; n1 is admitted during the flood and after its challenges expire."""
    clock = SimClock(time.time_ns())
    signers = Signers()
    service = AdmissionService(
        await nats_server.connect("admission"),
        signers.trust,
        REGISTRY.admission_schema(),
        clock=clock,
        roster=trust(),
        max_pending=500,
    )
    await service.start()
    tree = deploy(tmp_path / "tree", NEW_ROUTER)
    r1 = signers.release("r1", tree, REGISTRY.schema())
    measure = directory_measure(tree / "app", tree / "config.toml", REGISTRY.schema())
    attestor = Attestor("n1", signer("n1").key, measure, clock=clock)
    alice = await nats_server.connect("alice")
    n1 = await nats_server.connect("n1")
    n2 = await nats_server.connect("n2")
    try:
        assert (await set_target(alice, r1, clock)).accepted

        async def flood(names: list[bytes]) -> list[bytes]:
            return [await n2.request(SUBJECT_CHALLENGE, name, timeout_s=2.0) for name in names]

        names = [f"ghost{i}".encode() for i in range(600)]
        names += [f"n{i}".encode() for i in range(3, 9)] * 20
        start = service.examined
        nonces = await flood(names)
        assert service.examined - start <= len(names)  # the oldest, once a request
        assert sum(1 for nonce in nonces if nonce) == 500 + 6 * 20
        assert service.challenges_refused == {
            CHALLENGE_PENDING_TOTAL: 100,
            CHALLENGE_PENDING_NODE: 6 * (20 - 16),
        }
        verdict = await attestor.attest(n1, 2.0)
        assert verdict.admitted, verdict
        # what remains: 16 requests in n1's name between its challenge and its answer
        # withdraw its challenge (nothing says who asked); it asks again and gets through
        mine = (await n1.request(SUBJECT_CHALLENGE, b"n1", timeout_s=2.0)).decode()
        assert all(await flood([b"n1"] * 16))
        answer = sign_attestation(attest("n1", mine, measure(), clock=clock), signer("n1").key)
        reply = await n1.request(SUBJECT_ATTEST, encode_envelope(answer), timeout_s=2.0)
        assert [f.reason for f in VERDICT_DECODER.decode(reply).findings] == [
            AdmissionReason.CHALLENGE_UNKNOWN
        ]
        verdict = await attestor.attest(n1, 2.0)
        assert verdict.admitted, verdict

        # every one of them expires: the next request forgets them, each looked at once
        clock.advance(31 * NS_PER_S)
        start = service.examined
        again = await flood(names[:100])
        assert all(again)  # their places are free again
        assert service.examined - start <= 500 + 6 * 16 + 16 + 100
        verdict = await attestor.attest(n1, 2.0)
        assert verdict.admitted, verdict
        # an expired challenge admits nobody, even signed by the node named
        stale = nonces[-1].decode()  # issued to n8 before the clock moved
        clock.advance(31 * NS_PER_S)
        late = sign_attestation(attest("n8", stale, measure(), clock=clock), signer("n8").key)
        reply = await n1.request(SUBJECT_ATTEST, encode_envelope(late), timeout_s=2.0)
        assert [f.reason for f in VERDICT_DECODER.decode(reply).findings] == [
            AdmissionReason.CHALLENGE_UNKNOWN
        ]
    finally:
        await alice.close()
        await n1.close()
        await n2.close()
        await service.plane.close()
