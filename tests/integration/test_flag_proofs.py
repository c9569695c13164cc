"""Flag changes are verified where they are applied: a real nats-server, admitted NodeRuntimes.

Someone holding operator credentials for the flags bucket writes flag state
straight into it, around the activation gate: unsigned, self-approved, signed
with a key that is not theirs, or a replay of an old approved change. Every
node refuses each one, keeps evaluating what it had (the safe default at
first), does not confirm it, counts it and records the reason in its flight
recorder; a properly approved change and a one-person safe-default change
through the gate are applied and confirmed by every node.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from knightwatch.audit.standing import standing
from knightwatch.clock import SystemClock
from knightwatch.control.fleet.activate import activate
from knightwatch.control.fleet.admission import AdmissionService
from knightwatch.control.node.flags import (
    APPLIED_DECODER,
    ENCODER,
    NodeFlags,
    applied_key,
    state_key,
)
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.protocol import Bucket, ControlPlaneUnavailable
from knightwatch.control.plane.rosters import publish_roster
from knightwatch.control.site import Site
from knightwatch.flags.activation import ActivationPolicy, ActivationRequest, SecondApprover
from knightwatch.flags.state import FlagChange, FlagState
from knightwatch.release.dsse import encode_envelope
from knightwatch.release.keys import SigningKey
from knightwatch.state import Scope
from knightwatch.trust.approval import Approval, ApprovalKind, sign_approval
from knightwatch.trust.command import TrustReason
from knightwatch.trust.flagproof import FlagSealer
from knightwatch.trust.identity import Signer
from knightwatch.trust.roster import ApprovalPolicy, roster_envelope, sign_roster
from knightwatch.trust.store import TrustStore

from ..identities import ALICE, BOB, KIT, switch, trust
from .fleet_release import NEW_ROUTER, REGISTRY, RLP, deploy
from .test_fleet_governance import Fleet, eventually

NODES = ("n1", "n2")
NEVER = ActivationPolicy(second_approver=SecondApprover.NEVER)


@pytest.fixture
async def governed(nats_server: Site, tmp_path: Path) -> AsyncIterator[Fleet]:
    """The admission service on a real server; nodes are started by the test."""
    f = Fleet(nats_server, tmp_path)
    service = AdmissionService(
        await f.plane("admission"),
        f.signers.trust,
        REGISTRY.admission_schema(),
        clock=f.clock,
        roster=trust(),
    )
    await service.start()
    try:
        yield f
    finally:
        await f.close()


async def strict_roster(fleet: Fleet) -> TrustStore:
    """The next roster version asks for a second person on every trading flag change,
    whatever the hour, so the test does not depend on when it runs."""
    roster = KIT.roster
    strict = msgspec.structs.replace(
        roster,
        version=roster.version + 1,
        issued_ns=roster.issued_ns + 1,
        approvals=ApprovalPolicy(flag=SecondApprover.ALWAYS),
    )
    envelope = roster_envelope(strict)
    for admin in KIT.admin_names[: roster.admin_threshold]:
        envelope = sign_roster(envelope, KIT.signer(admin).key)
    await publish_roster(await fleet.plane("admin1"), envelope)
    await eventually(lambda: all(r.trust.version == strict.version for r in fleet.nodes.values()))
    writer = trust()
    writer.accept(envelope)
    return writer


def approval_by(who: Signer, value: bool = True) -> str:
    now = fleet_now()
    a = Approval(ApprovalKind.FLAG, RLP, value, None, "alice", "launch", now, now + 3600 * 10**9)
    return encode_envelope(sign_approval(a, who)).decode()


def fleet_now() -> int:
    return SystemClock().time_ns()


def refusals(runtime: NodeRuntime) -> list[bytes]:
    runtime.guard.recorder.flush()
    return [line for line in runtime.guard.recorder.lines if b'"kind":"flag_refused"' in line]


async def write_state(fleet: Fleet, nodes_on: bool, proof: str) -> int:
    """Alice writes the next revision straight into the bucket, around the gate."""
    plane = await fleet.plane("alice")
    stored, _ = await plane.get_record(Bucket.FLAGS, state_key(RLP))
    current = msgspec.json.decode(stored, type=FlagState) if stored else FlagState(RLP)
    state = FlagState(
        RLP,
        current.revision + 1,
        {n: nodes_on for n in NODES},
        {},
        {n: proof for n in NODES},
    )
    await plane.put_record(Bucket.FLAGS, state_key(RLP), ENCODER.encode(state))
    return state.revision


def sealed(signer: Signer, revision: int, value: bool, approval: str = "") -> str:
    change = FlagChange(RLP, value, NODES, signer.name, None, "x", "test", fleet_now(), {})
    request = ActivationRequest(RLP, value, signer.name, "x", "test", approval=approval)
    definition = REGISTRY.get(RLP)
    assert definition is not None
    return FlagSealer(signer, trust().roster).seal(change, revision, request, definition)


async def test_nodes_refuse_unverified_flag_state_and_apply_verified_changes(
    governed: Fleet, tmp_path: Path
) -> None:
    fleet, root = governed, tmp_path
    good = deploy(root / "good", NEW_ROUTER)
    assert (await fleet.target(fleet.signers.release("r2", good, REGISTRY.schema()))).accepted
    trees = {n: deploy(root / n, NEW_ROUTER) for n in NODES}
    await asyncio.gather(*(fleet.start_node(n, t) for n, t in trees.items()))
    await eventually(lambda: all(r.release_admitted for r in fleet.nodes.values()))
    flags = {n: NodeFlags(r) for n, r in fleet.nodes.items()}
    for f in flags.values():
        await f.start()
    writer = await strict_roster(fleet)
    ops = await fleet.plane("alice")

    async def refused_everywhere(revision: int, reason: TrustReason, value: bool | None) -> None:
        await eventually(lambda: all(f.refused[reason] >= 1 for f in flags.values()))
        for n, f in flags.items():
            state = f.get(RLP)
            assert (state.value_for(n) if state else None) is value, n
            assert any(reason.value.encode() in line for line in refusals(fleet.nodes[n]))
            confirmed, _ = await ops.get_record(Bucket.FLAGS, applied_key(RLP, n))
            if confirmed is not None:
                assert msgspec.json.decode(confirmed)["revision"] < revision

    # 1. an unsigned state turning the trading flag on: every node stays on the safe default
    r1 = await write_state(fleet, True, "")
    await refused_everywhere(r1, TrustReason.UNSIGNED, None)
    assert all(r.refused[TrustReason.UNSIGNED] == 1 for r in fleet.nodes.values())

    # 2. signed by alice, "approved" by alice herself (she holds the approver role)
    r2 = await write_state(fleet, True, sealed(ALICE, 2, True, approval_by(ALICE)))
    await refused_everywhere(r2, TrustReason.SELF_APPROVAL, None)

    # 3. signed with a key that is not alice's, approval by bob attached
    forger = Signer("alice", SigningKey.generate())
    r3 = await write_state(fleet, True, sealed(forger, 3, True, approval_by(BOB)))
    await refused_everywhere(r3, TrustReason.UNKNOWN_KEY, None)

    # 4. signed by alice alone, no approval (the strict roster asks for one)
    r4 = await write_state(fleet, True, sealed(ALICE, 4, True))
    await refused_everywhere(r4, TrustReason.APPROVAL_MISSING, None)

    # 5. properly approved, through the gate: applied and confirmed by every node
    request = ActivationRequest(
        RLP, True, "alice", "launch", "test", approver="bob", approval=approval_by(BOB)
    )
    result, _, missing = await activate(
        ops, writer, REGISTRY, NEVER, request, fleet.clock, 15.0, signer=ALICE
    )
    assert result.accepted, result.detail
    assert missing == []
    approved_proof = result.change.proof if result.change else ""
    assert all(f.get(RLP).value_for(n) is True for n, f in flags.items())  # type: ignore[union-attr]

    # without the approval the writer's gate refuses too (the roster's policy, not the file's)
    unapproved = ActivationRequest(RLP, True, "alice", "again", "test")
    refused, _, _ = await activate(
        ops, writer, REGISTRY, NEVER, unapproved, fleet.clock, 1.0, signer=ALICE
    )
    assert not refused.accepted and refused.code == "second_approver_required"

    # 6. the safe default by one person: applied at once, no approval
    off = ActivationRequest(RLP, False, "alice", "stop", "test")
    result, _, missing = await activate(
        ops, writer, REGISTRY, NEVER, off, fleet.clock, 15.0, signer=ALICE
    )
    assert result.accepted and missing == [], result.detail
    assert all(f.get(RLP).value_for(n) is False for n, f in flags.items())  # type: ignore[union-attr]

    # 7. a replay of the approved change's proof: refused, the flag stays off
    r7 = await write_state(fleet, True, approved_proof)
    await refused_everywhere(r7, TrustReason.REPLAYED, False)

    # 8. a node restarting finds the replay already stored. With no memory it would take
    # it (an approved change, verified at the instant it names). It remembers the newer
    # change it applied last (6) twice over: in its flight recorder, and in its applied
    # record in the plane, which only its own identity may write (an operator's write
    # is refused by the server). Either copy alone makes it refuse the replay as
    # `replayed` and hold its safe default, as the running node did.
    runtime = fleet.nodes["n1"]
    mine = applied_key(RLP, "n1")
    before, _ = await ops.get_record(Bucket.FLAGS, mine)
    assert before is not None and APPLIED_DECODER.decode(before).proof_revision == 6
    lowered = msgspec.structs.replace(APPLIED_DECODER.decode(before), proof_revision=0)
    with pytest.raises(ControlPlaneUnavailable):
        await ops.put_record(Bucket.FLAGS, mine, ENCODER.encode(lowered))
    assert (await ops.get_record(Bucket.FLAGS, mine))[0] == before
    wiped = NodeFlags(runtime)  # a new recorder file: the plane's copy only
    await wiped.start()
    assert wiped.refused[TrustReason.REPLAYED] == 1
    assert wiped.get(RLP) is None
    # the node's own identity can still lower it (a node's key, not an operator's):
    # with neither copy the replay would be taken
    await runtime.plane.put_record(Bucket.FLAGS, mine, ENCODER.encode(lowered))
    forgetful = NodeFlags(runtime)
    await forgetful.start()
    assert forgetful.get(RLP).value_for("n1") is True  # type: ignore[union-attr]
    runtime.guard.recorder.flush()
    file = tmp_path / "n1-recorder.jsonl"
    file.write_bytes(b"".join(line + b"\n" for line in runtime.guard.recorder.lines))
    remembered = standing(file).flag_revisions
    assert remembered[RLP] > 5
    await runtime.plane.put_record(Bucket.FLAGS, mine, ENCODER.encode(lowered))
    restarted = NodeFlags(runtime, applied=remembered)  # the recorder's copy only
    await restarted.start()
    assert restarted.refused[TrustReason.REPLAYED] == 1
    assert restarted.get(RLP) is None  # nothing applied: the flag's safe default


async def admitted_with_flags(
    fleet: Fleet, tmp_path: Path
) -> tuple[dict[str, Path], dict[str, NodeFlags]]:
    """NODES started on a signed target release, admitted, each with its flag view."""
    good = deploy(tmp_path / "good", NEW_ROUTER)
    assert (await fleet.target(fleet.signers.release("r2", good, REGISTRY.schema()))).accepted
    trees = {n: deploy(tmp_path / n, NEW_ROUTER) for n in NODES}
    await asyncio.gather(*(fleet.start_node(n, t) for n, t in trees.items()))
    await eventually(lambda: all(r.release_admitted for r in fleet.nodes.values()))
    flags = {n: NodeFlags(r) for n, r in fleet.nodes.items()}
    for f in flags.values():
        await f.start()
    return trees, flags


async def test_nodes_refuse_a_flag_turned_on_while_a_kill_is_in_force(
    governed: Fleet, tmp_path: Path
) -> None:
    """The freeze holds where changes apply, not only at `flags set`: someone writing a
    signed, approved change straight into the bucket after a fleet kill finds every node
    refusing it (`frozen_by_kill`), while a one-person change to the safe default applies."""
    fleet = governed
    _, flags = await admitted_with_flags(fleet, tmp_path)
    ops = await fleet.plane("alice")
    assert (await switch(ops, fleet.clock).kill(Scope.FLEET, "", "runaway", timeout_s=15.0)).ok

    r1 = await write_state(fleet, True, sealed(ALICE, 1, True, approval_by(BOB)))
    await eventually(
        lambda: all(f.refused[TrustReason.FROZEN_BY_KILL] == 1 for f in flags.values())
    )
    for n, f in flags.items():
        assert f.get(RLP) is None, n  # still the safe default
        assert any(b"frozen_by_kill" in line for line in refusals(fleet.nodes[n]))
        assert "fleet kill 'fleet'" in (f.last_refusal or "")
        confirmed, _ = await ops.get_record(Bucket.FLAGS, applied_key(RLP, n))
        assert confirmed is None or msgspec.json.decode(confirmed)["revision"] < r1

    await write_state(fleet, False, sealed(ALICE, 2, False))  # the stop direction
    await eventually(
        lambda: all((s := f.get(RLP)) is not None and s.value_for(n) is False
                    for n, f in flags.items())
    )  # fmt: skip


async def test_a_flag_turned_on_during_a_kill_stays_refused_by_a_node_started_after_the_resume(
    governed: Fleet, tmp_path: Path
) -> None:
    """A node that restarts after the resume judges the change written under the kill as
    the nodes that ran through it did (the resume's kill, from the store's history), so
    the fleet never splits; the same change issued again after the resume applies."""
    fleet = governed
    trees, flags = await admitted_with_flags(fleet, tmp_path)
    ops = await fleet.plane("alice")
    ks = switch(ops, fleet.clock)
    assert (await ks.kill(Scope.FLEET, "", "runaway", timeout_s=15.0)).ok
    await write_state(fleet, True, sealed(ALICE, 1, True, approval_by(BOB)))
    await eventually(
        lambda: all(f.refused[TrustReason.FROZEN_BY_KILL] == 1 for f in flags.values())
    )
    assert (await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,), timeout_s=15.0)).ok

    await fleet.nodes["n2"].stop()  # n2 restarts: a new runtime, recorder and flag view
    restarted = await fleet.start_node("n2", trees["n2"])
    await eventually(lambda: restarted.release_admitted)
    flags["n2"] = again = NodeFlags(restarted)
    await again.start()
    assert again.get(RLP) is None  # still the safe default, as on n1
    assert again.refused[TrustReason.FROZEN_BY_KILL] == 1
    assert "fleet kill 'fleet' (by alice, resumed since)" in again.last_refusal
    assert flags["n1"].get(RLP) is None

    # the change issued again after the resume applies on both
    await write_state(fleet, True, sealed(ALICE, 2, True, approval_by(BOB)))
    await eventually(
        lambda: all((s := f.get(RLP)) is not None and s.value_for(n) is True
                    for n, f in flags.items())
    )  # fmt: skip


async def test_a_change_made_under_an_earlier_kill_stays_refused_after_later_kills(
    governed: Fleet, tmp_path: Path
) -> None:
    """Not only the last kill of a slot: a node started after two kills and their resumes
    reads from the slot's kept history that the change was issued under the first one."""
    fleet = governed
    trees, flags = await admitted_with_flags(fleet, tmp_path)
    ks = switch(await fleet.plane("alice"), fleet.clock)
    assert (await ks.kill(Scope.FLEET, "", "runaway", timeout_s=15.0)).ok
    await write_state(fleet, True, sealed(ALICE, 1, True, approval_by(BOB)))
    await eventually(
        lambda: all(f.refused[TrustReason.FROZEN_BY_KILL] == 1 for f in flags.values())
    )
    assert (await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,), timeout_s=15.0)).ok
    assert (await ks.kill(Scope.FLEET, "", "again", timeout_s=15.0)).ok
    assert (await ks.resume(Scope.FLEET, "", "fixed again", approvers=(BOB,), timeout_s=15.0)).ok

    await fleet.nodes["n2"].stop()
    restarted = await fleet.start_node("n2", trees["n2"])
    await eventually(lambda: restarted.release_admitted)
    again = NodeFlags(restarted)
    await again.start()
    assert again.get(RLP) is None
    assert again.refused[TrustReason.FROZEN_BY_KILL] == 1
    assert "fleet kill 'fleet' (by alice, resumed since)" in again.last_refusal
    # both kills, from the history, as n1 holds them from its own latch
    for runtime in (restarted, fleet.nodes["n1"]):
        assert [i[2] for i in runtime.thawed[(Scope.FLEET, "fleet")]] == ["alice", "alice"]
