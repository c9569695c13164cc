"""The target release's two-person rule, where the target is applied: the admission service
on a real nats-server with authorization on.

Who asked is whoever signed the request (an operator, fresh, never replayed); a
second person with the approver role must have approved exactly that release
for that requester. Only a return to the known-good release while its kill is
in force is one person's (the stop direction).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from knightwatch.clock import NS_PER_S, Clock, SimClock, SystemClock
from knightwatch.control.fleet.admission import (
    CHALLENGE_MALFORMED,
    CHALLENGE_NOT_AUTHENTIC,
    CHALLENGE_PENDING_NODE,
    CHALLENGE_PENDING_TOTAL,
    CHALLENGE_REPLAYED,
    CHALLENGE_STALE,
    CHALLENGE_UNSIGNED,
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
    ChallengeReply,
    KnownGood,
    TargetRecord,
    TargetReply,
    TargetRequest,
    challenge_request,
)
from knightwatch.control.site import Site
from knightwatch.release.attestation import attest, sign_attestation
from knightwatch.release.dsse import Envelope, encode_envelope
from knightwatch.release.keys import SigningKey
from knightwatch.release.reasons import AdmissionReason
from knightwatch.state import Scope
from knightwatch.trust.target import TargetCommand, approve_target, sign_target, target_command

from ...identities import BOB, KIT, set_target, signer, switch, trust
from ...integration.fleet_release import NEW_ROUTER, REGISTRY, Signers, deploy

HOUR_NS = 3600 * 1_000_000_000


def signed_ask(
    node: str,
    clock: Clock,
    *,
    key: SigningKey | None = None,
    request_id: str | None = None,
    issued_ns: int | None = None,
) -> bytes:
    """A challenge request in `node`'s name, signed with `key` (the node's own by default)."""
    envelope = challenge_request(
        node,
        key if key is not None else signer(node).key,
        request_id=request_id if request_id is not None else secrets.token_hex(16),
        now_ns=issued_ns if issued_ns is not None else clock.time_ns(),
    )
    return encode_envelope(envelope)


def answered(reply: bytes) -> ChallengeReply:
    return msgspec.json.decode(reply, type=ChallengeReply)


class Stage:
    """An admission service and alice's connection on an authorized server, two releases."""

    def __init__(
        self,
        alice: NatsControlPlane,
        r1: Envelope,
        r2: Envelope,
        service: AdmissionService,
        r2_other: Envelope,
    ) -> None:
        self.service = service
        self.alice = alice
        self.r1 = r1
        self.r2 = r2
        self.r2_other = r2_other
        """Another manifest (other files) that its signers also called r2."""
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
    other = deploy(tmp_path / "other", NEW_ROUTER + b"\n# not the r2 that was deployed\n")
    r2_other = signers.release("r2", other, REGISTRY.schema())
    alice = await nats_server.connect("alice")
    try:
        yield Stage(alice, r1, r2, service, r2_other)
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
    # another manifest its signers also called r2 (other files) is not the release the
    # fleet froze on: the return is to that manifest, not to its label (before, it passed
    # as the one-person return, and one operator deployed new code during the kill)
    refused(
        await set_target(stage.alice, stage.r2_other, stage.clock, approver=None),
        AdmissionReason.FROZEN_BY_KILL,
        "another under the same id",
    )
    refused(
        await set_target(stage.alice, stage.r2_other, stage.clock),
        AdmissionReason.FROZEN_BY_KILL,
        "another under the same id",
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
        for _ in range(1500):  # up to 15 s: the service's watch hears it over NATS
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
    """A challenge request that is not a signed request is a refusal naming its reason
    (rather than a responder traceback and no answer); unanswered challenges are bounded
    per name and, for names not enrolled by the service, in all, while an enrolled node's
    answered challenges free their place."""
    clock = SystemClock()
    service = AdmissionService(
        await nats_server.connect("admission"),
        Signers().trust,
        REGISTRY.admission_schema(),
        clock=clock,
        roster=trust(),
        max_pending_per_node=2,
        max_pending=3,
    )
    await service.start()
    n1 = await nats_server.connect("n1")
    n2 = await nats_server.connect("n2")
    try:

        async def challenge(request: bytes) -> ChallengeReply:
            return answered(await n2.request(SUBJECT_CHALLENGE, request, timeout_s=2.0))

        for bad in (b"\xff\xfe n2", b"n2\nADMISSION node=n3 verdict=admitted", b"", b"{}"):
            reply = await challenge(bad)
            assert (reply.nonce, reply.reason) == ("", CHALLENGE_MALFORMED), reply
            assert "\n" not in reply.detail
        assert service.challenges_refused == {CHALLENGE_MALFORMED: 4}

        # n2 answers each challenge it asks for: it is never held back by the bound
        tree = deploy(tmp_path / "tree", NEW_ROUTER)
        measure = directory_measure(tree / "app", tree / "config.toml", REGISTRY.schema())
        attestor = Attestor("n2", signer("n2").key, measure, clock=clock)
        for _ in range(3):
            verdict = await attestor.attest(n2, 2.0)
            assert [f.reason for f in verdict.findings] == [AdmissionReason.NOT_TARGET_RELEASE]
        assert CHALLENGE_PENDING_NODE not in service.challenges_refused

        # asked by n2 and never answered: two are kept, the third withdraws the first
        assert (await challenge(signed_ask("n2", clock))).nonce
        assert (await challenge(signed_ask("n2", clock))).nonce
        assert (await challenge(signed_ask("n2", clock))).nonce
        assert service.challenges_refused[CHALLENGE_PENDING_NODE] == 1
        # nodes on the roster but not enrolled by the service (as while a kill is in
        # force): refused once three are unanswered in all; an enrolled node is not
        del service.roster["n3"], service.roster["n4"]
        assert (await challenge(signed_ask("n3", clock))).nonce
        reply = await challenge(signed_ask("n4", clock))
        assert (reply.nonce, reply.reason) == ("", CHALLENGE_PENDING_TOTAL)
        assert (await challenge(signed_ask("n5", clock))).nonce
    finally:
        await n1.close()
        await n2.close()
        await service.plane.close()


async def test_an_unsigned_or_old_format_challenge_request_is_refused_with_its_reason(
    nats_server: Site,
) -> None:
    """A challenge request was the bare node name: any node could ask in any name. Now a
    bare name (a node older than signed requests), an envelope without a signature, one
    issued too far from the service's clock, one signed by a key the roster does not hold
    for a node or for another node are each refused with their reason code in a one-line
    reply, and nothing is created."""
    clock = SystemClock()
    service = AdmissionService(
        await nats_server.connect("admission"),
        Signers().trust,
        REGISTRY.admission_schema(),
        clock=clock,
        roster=trust(),
    )
    await service.start()
    n2 = await nats_server.connect("n2")
    try:

        async def reason(request: bytes) -> tuple[str, str]:
            reply = answered(await n2.request(SUBJECT_CHALLENGE, request, timeout_s=2.0))
            assert reply.nonce == "" and "\n" not in reply.detail, reply
            return reply.reason, reply.detail

        unsigned = msgspec.structs.replace(
            challenge_request("n1", signer("n1").key, request_id="r1", now_ns=clock.time_ns()),
            signatures=(),
        )
        now = clock.time_ns()
        cases = [
            (b"n1", CHALLENGE_UNSIGNED, "bare node name"),
            (encode_envelope(unsigned), CHALLENGE_UNSIGNED, "no signature"),
            (signed_ask("n1", clock, issued_ns=now - 60 * NS_PER_S), CHALLENGE_STALE, "before"),
            (signed_ask("n1", clock, issued_ns=now + 60 * NS_PER_S), CHALLENGE_STALE, "ahead"),
            (signed_ask("n1", clock, key=signer("n2").key), CHALLENGE_NOT_AUTHENTIC, "not by"),
            (signed_ask("n1", clock, key=signer("alice").key), CHALLENGE_NOT_AUTHENTIC, "alice"),
            (
                signed_ask("n1", clock, key=SigningKey.generate()),
                CHALLENGE_NOT_AUTHENTIC,
                "unknown_key",
            ),
            (signed_ask("n1", clock, request_id="a b"), CHALLENGE_MALFORMED, "request_id"),
        ]
        for request, code, text in cases:
            got, detail = await reason(request)
            assert got == code and text in detail, (code, text, got, detail)
        assert not service._issued and not service._pending
    finally:
        await n2.close()
        await service.plane.close()


async def test_a_flood_of_challenges_in_a_nodes_name_does_not_keep_it_out(
    stage: Stage, nats_server: Site, tmp_path: Path
) -> None:
    """Nothing in a challenge request said who sent it, and any node could name any node:
    n2 asking in n1's name 16 times between n1's challenge and its answer withdrew n1's
    challenge every time, so n1 was kept out while the flood lasted. Now a request is
    signed by the node named: n2's flood (bare names, requests signed with its own key
    in n1's name, replays of n1's own request) is refused, withdraws nothing, and n1's
    answer admits it."""
    assert (await set_target(stage.alice, stage.r1, stage.clock)).accepted
    n1 = await nats_server.connect("n1")
    n2 = await nats_server.connect("n2")
    tree = tmp_path / "tree"
    measure = directory_measure(tree / "app", tree / "config.toml", REGISTRY.schema())
    try:
        mine = signed_ask("n1", stage.clock)
        nonce = answered(await n1.request(SUBJECT_CHALLENGE, mine, timeout_s=2.0)).nonce
        assert nonce
        flood = [b"n1", signed_ask("n1", stage.clock, key=signer("n2").key), mine] * 20
        replies = [answered(await n2.request(SUBJECT_CHALLENGE, r, timeout_s=2.0)) for r in flood]
        assert not any(reply.nonce for reply in replies)
        assert stage.service.challenges_refused == {
            CHALLENGE_UNSIGNED: 20,
            CHALLENGE_NOT_AUTHENTIC: 20,
            CHALLENGE_REPLAYED: 20,
        }
        answer = sign_attestation(
            attest("n1", nonce, measure(), clock=stage.clock), signer("n1").key
        )
        reply = await n1.request(SUBJECT_ATTEST, encode_envelope(answer), timeout_s=2.0)
        verdict = VERDICT_DECODER.decode(reply)
        assert verdict.admitted, verdict
    finally:
        await n1.close()
        await n2.close()


async def test_a_replayed_challenge_request_is_refused_and_withdraws_nothing(
    stage: Stage, nats_server: Site, tmp_path: Path
) -> None:
    """A signed request captured and sent again within its validity is refused as a
    replay: it gets no nonce and does not withdraw the node's newer challenge (a node's
    own 17th unanswered request still withdraws its oldest)."""
    assert (await set_target(stage.alice, stage.r1, stage.clock)).accepted
    n1 = await nats_server.connect("n1")
    n2 = await nats_server.connect("n2")
    tree = tmp_path / "tree"
    measure = directory_measure(tree / "app", tree / "config.toml", REGISTRY.schema())
    try:
        old = signed_ask("n1", stage.clock)
        first = answered(await n1.request(SUBJECT_CHALLENGE, old, timeout_s=2.0)).nonce
        pending = [
            answered(
                await n1.request(SUBJECT_CHALLENGE, signed_ask("n1", stage.clock), timeout_s=2.0)
            ).nonce
            for _ in range(15)
        ]
        assert first and all(pending)
        for _ in range(16):
            reply = answered(await n2.request(SUBJECT_CHALLENGE, old, timeout_s=2.0))
            assert (reply.nonce, reply.reason) == ("", CHALLENGE_REPLAYED), reply
        assert stage.service.challenges_refused == {CHALLENGE_REPLAYED: 16}
        for nonce in (first, pending[-1]):  # neither the oldest nor the newest withdrawn
            answer = sign_attestation(
                attest("n1", nonce, measure(), clock=stage.clock), signer("n1").key
            )
            reply = await n1.request(SUBJECT_ATTEST, encode_envelope(answer), timeout_s=2.0)
            verdict = VERDICT_DECODER.decode(reply)
            assert verdict.admitted, verdict
    finally:
        await n1.close()
        await n2.close()


async def test_a_node_with_a_revoked_key_cannot_get_a_challenge(tmp_path: Path) -> None:
    """The roster revokes n1's key: a request signed with it (whoever holds it now) is
    refused, naming the revocation, and nothing is created; the node logs the refusal as
    its verdict. n2, still enrolled, gets its challenge."""
    site = Site(tmp_path / "site")
    site.start()
    clock = SystemClock()
    service = AdmissionService(
        await site.connect("admission"),
        Signers().trust,
        REGISTRY.admission_schema(),
        clock=clock,
        roster=site.store(),
    )
    n2 = await site.connect("n2")
    tree = deploy(tmp_path / "tree", NEW_ROUTER)
    measure = directory_measure(tree / "app", tree / "config.toml", REGISTRY.schema())
    key = site.signer("n1").key
    try:
        await service.start()
        assert answered(
            await n2.request(SUBJECT_CHALLENGE, signed_ask("n1", clock, key=key), timeout_s=2.0)
        ).nonce
        await site.publish(site.kit.revoke("n1", clock.time_ns()))
        for _ in range(1500):  # up to 15 s: the roster reaches the service over NATS
            if service.trust_store.version == site.kit.roster.version:
                break
            await asyncio.sleep(0.01)
        assert service.trust_store.version == site.kit.roster.version
        issued = dict(service._issued)
        reply = answered(
            await n2.request(SUBJECT_CHALLENGE, signed_ask("n1", clock, key=key), timeout_s=2.0)
        )
        assert (reply.nonce, reply.reason) == ("", CHALLENGE_NOT_AUTHENTIC), reply
        assert "revoked" in reply.detail
        verdict = await Attestor("n1", key, measure, clock=clock).attest(n2, 2.0)
        assert not verdict.admitted and not verdict.attributable
        assert CHALLENGE_NOT_AUTHENTIC in verdict.detail and "revoked" in verdict.detail
        assert service._issued == issued
        verdict = await Attestor("n2", site.signer("n2").key, measure, clock=clock).attest(n2, 2.0)
        assert [f.reason for f in verdict.findings] == [AdmissionReason.NOT_TARGET_RELEASE]
    finally:
        await n2.close()
        await service.plane.close()
        site.stop()


async def test_a_reply_the_node_cannot_read_is_a_refusal_not_a_traceback(
    nats_server: Site, tmp_path: Path
) -> None:
    """An admission service of another version (a bare nonce for a challenge, then a
    reply that is not a verdict) made the node's attestation raise a decode error out of
    its attesting. Now the node gets a refused verdict saying which reply it could not
    read, and logs it like any refusal."""
    service = await nats_server.connect("admission")
    n1 = await nats_server.connect("n1")
    tree = deploy(tmp_path / "tree", NEW_ROUTER)
    measure = directory_measure(tree / "app", tree / "config.toml", REGISTRY.schema())
    attestor = Attestor("n1", signer("n1").key, measure, clock=SystemClock())
    challenges: list[bytes] = [b"0123456789abcdef", ENCODER.encode(ChallengeReply("abc123"))]

    async def challenge(payload: bytes) -> bytes:
        return challenges.pop(0)

    async def verdict(payload: bytes) -> bytes:
        return b"not a verdict"

    try:
        await service.serve(SUBJECT_CHALLENGE, challenge)
        await service.serve(SUBJECT_ATTEST, verdict)
        for unreadable in ("challenge_reply_unreadable", "verdict_unreadable"):
            got = await attestor.attest(n1, 2.0)
            assert not got.admitted and not got.attributable, got
            assert unreadable in got.detail and "\n" not in got.detail, got.detail
    finally:
        await n1.close()
        await service.close()


async def test_a_flood_of_challenges_costs_each_request_constant_work(
    nats_server: Site, tmp_path: Path
) -> None:
    """The service answers one request at a time, and every challenge request rebuilt all
    the unanswered challenges (up to 4096, and 16 for each enrolled node): a flood of
    requests held it for all of them on every request, while n1's own requests waited
    behind. Now expiry looks only at the oldest: one look a request, and each expired
    challenge once, when it is forgotten; requests not signed by the node named cost a
    refusal and nothing more; n1 is admitted during the flood and after its challenges
    expire."""
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

        async def flood(requests: list[bytes]) -> list[str]:
            replies = [await n2.request(SUBJECT_CHALLENGE, r, timeout_s=2.0) for r in requests]
            return [answered(reply).nonce for reply in replies]

        ghosts = [f"ghost{i}".encode() for i in range(300)]
        forged = [signed_ask(f"ghost{i}", clock, key=signer("n2").key) for i in range(300)]
        own = [signed_ask(f"n{i}", clock) for i in range(3, 9) for _ in range(20)]
        start = service.examined
        nonces = await flood(ghosts + forged + own)
        assert service.examined - start <= len(own)  # the oldest, once a request served
        assert sum(1 for nonce in nonces if nonce) == 6 * 20
        assert service.challenges_refused == {
            CHALLENGE_UNSIGNED: 300,
            CHALLENGE_NOT_AUTHENTIC: 300,
            CHALLENGE_PENDING_NODE: 6 * (20 - 16),
        }
        verdict = await attestor.attest(n1, 2.0)
        assert verdict.admitted, verdict
        # 16 requests in n1's name between its challenge and its answer withdraw nothing
        # (none is signed by n1)
        mine = answered(
            await n1.request(SUBJECT_CHALLENGE, signed_ask("n1", clock), timeout_s=2.0)
        ).nonce
        in_its_name = [signed_ask("n1", clock, key=signer("n2").key) for _ in range(16)]
        assert not any(await flood(in_its_name))
        answer = sign_attestation(attest("n1", mine, measure(), clock=clock), signer("n1").key)
        reply = await n1.request(SUBJECT_ATTEST, encode_envelope(answer), timeout_s=2.0)
        assert VERDICT_DECODER.decode(reply).admitted

        # every one of them expires: the next request forgets them, each looked at once
        clock.advance(31 * NS_PER_S)
        start = service.examined
        again = await flood([signed_ask(f"n{i}", clock) for i in range(3, 9) for _ in range(16)])
        assert all(again)  # their places are free again
        assert service.examined - start <= 6 * 16 + 6 * 16 + 16
        verdict = await attestor.attest(n1, 2.0)
        assert verdict.admitted, verdict
        # an expired challenge admits nobody, even signed by the node named
        stale = nonces[-1]  # issued to n8 before the clock moved
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
