"""A second person's target approval is of one change of target, where the target is applied.

Within the approval's hour the requester used to be able to make a release the
target again on its old approval after someone moved the target away (the
stored target only remembered the last request's id). Each used approval is now
a create-only record beside the target: a repeat is refused, and two requests
racing on one approval cannot both count it. On a real nats-server with
authorization on, as `test_admission`.
"""

from __future__ import annotations

import asyncio

import msgspec

from knightwatch.control.fleet.admission import (
    USED_APPROVAL_PREFIX,
    request_target,
    used_approval_key,
)
from knightwatch.control.fleet.freeze import record_known_good
from knightwatch.control.plane.protocol import Bucket
from knightwatch.release.reasons import AdmissionReason
from knightwatch.state import Scope
from knightwatch.trust.target import approve_target

from ...identities import BOB, KIT, set_target, switch
from .test_admission import Stage, refused, stage  # noqa: F401  (the fixture)


async def test_an_approval_moves_the_target_once_not_back_again(stage: Stage) -> None:  # noqa: F811
    alice = KIT.signer("alice")
    now = stage.clock.time_ns()
    to_r1 = approve_target(stage.r1, BOB, "alice", "deploy r1", now)
    reply = await request_target(stage.alice, stage.r1, alice, "r1", now_ns=now, approval=to_r1)
    assert reply.accepted, reply
    # someone moves the target to r2, approved for that change
    assert (await set_target(stage.alice, stage.r2, stage.clock)).accepted
    # alice alone, within r1's approval hour: back to r1 on the old approval -> refused
    now = stage.clock.time_ns()
    reply = await request_target(
        stage.alice, stage.r1, alice, "r1 again", now_ns=now, approval=to_r1
    )
    refused(reply, AdmissionReason.TARGET_NOT_APPROVED, "used already")
    assert "ask for a new one" in reply.findings[0].detail
    record = await stage.target()
    assert record is not None and record.release_id == "r2"
    # the same approval in a fresh envelope (re-encoded, signed twice) is the same approval
    twice = msgspec.structs.replace(to_r1, signatures=to_r1.signatures * 2)
    assert used_approval_key(twice) == used_approval_key(to_r1)
    # a new approval from bob moves it back
    assert (await set_target(stage.alice, stage.r1, stage.clock, reason="r1 again")).accepted
    used = await stage.alice.records(Bucket.RELEASE)
    assert len([k for k in used if k.startswith(USED_APPROVAL_PREFIX)]) == 3


async def test_an_approval_on_the_current_target_is_not_used_twice(stage: Stage) -> None:  # noqa: F811
    alice = KIT.signer("alice")
    now = stage.clock.time_ns()
    approval = approve_target(stage.r1, BOB, "alice", "deploy", now)
    first = await request_target(stage.alice, stage.r1, alice, "x", now_ns=now, approval=approval)
    assert first.accepted, first
    # a second request (new id, decided on the current revision) on the same approval
    again = await request_target(
        stage.alice, stage.r1, alice, "x", now_ns=stage.clock.time_ns(), approval=approval
    )
    refused(again, AdmissionReason.TARGET_NOT_APPROVED, "by target change to r1 by alice")


async def test_two_requests_racing_on_one_approval_count_it_once(stage: Stage) -> None:  # noqa: F811
    alice = KIT.signer("alice")
    now = stage.clock.time_ns()
    approval = approve_target(stage.r1, BOB, "alice", "deploy", now)
    replies = await asyncio.gather(
        *(
            request_target(stage.alice, stage.r1, alice, "x", now_ns=now, approval=approval)
            for _ in range(4)
        )
    )
    assert sum(r.accepted for r in replies) == 1, replies


async def test_an_unreadable_used_record_still_counts_as_used(stage: Stage) -> None:  # noqa: F811
    alice = KIT.signer("alice")
    now = stage.clock.time_ns()
    approval = approve_target(stage.r1, BOB, "alice", "deploy", now)
    await stage.service.plane.put_record(Bucket.RELEASE, used_approval_key(approval), b"\xff{")
    reply = await request_target(stage.alice, stage.r1, alice, "x", now_ns=now, approval=approval)
    refused(reply, AdmissionReason.TARGET_NOT_APPROVED, "by an earlier target change")
    assert await stage.target() is None


async def test_an_approval_that_does_not_count_never_gates_the_return_to_known_good(
    stage: Stage,  # noqa: F811
) -> None:
    alice = KIT.signer("alice")
    now = stage.clock.time_ns()
    to_r2 = approve_target(stage.r2, BOB, "alice", "deploy r2", now)
    assert (await set_target(stage.alice, stage.r1, stage.clock)).accepted
    reply = await request_target(stage.alice, stage.r2, alice, "r2", now_ns=now, approval=to_r2)
    assert reply.accepted, reply
    # r2 misbehaves: a kill freezes the fleet on it (r2 known-good)
    ks = switch(stage.alice, stage.clock)
    kill = await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.2, targets=[])
    assert await record_known_good(stage.alice, kill.entry, stage.clock.time_ns()) == "r2"
    # the return to r2 during its kill carries r2's old, spent approval: not counted, and
    # not refused either (the stop direction is one person's)
    now = stage.clock.time_ns()
    reply = await request_target(stage.alice, stage.r2, alice, "back", now_ns=now, approval=to_r2)
    assert reply.accepted, reply
    record = await stage.target()
    assert record is not None and (record.release_id, record.approver) == ("r2", "")
    # nor does one that expired, or approves another release: the return is still one
    # person's (before, any approval sent along that did not verify refused it)
    for stale in (
        approve_target(stage.r2, BOB, "alice", "old", now - 2 * 3600 * 10**9),
        approve_target(stage.r1, BOB, "alice", "r1", now),
    ):
        now = stage.clock.time_ns()
        reply = await request_target(
            stage.alice, stage.r2, alice, "back", now_ns=now, approval=stale
        )
        assert reply.accepted, reply
        record = await stage.target()
        assert record is not None and (record.release_id, record.approver) == ("r2", "")
