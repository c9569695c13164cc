"""A flag change a node reads from the store at its start is judged when the server wrote it.

Its signer chooses its issue time; the server chooses when the change record behind
the proof (`change.<flag>.<revision>`, holding that very proof) was stored. Before,
a node that started judged the change at its own signed date alone: a change signed
with an operator's key after its revocation, dated back before it and stored by
anyone who may write `kw_flags`, applied on every node that started afterwards (a
running node, hearing it live, refused it). A change away from the safe default
whose change record is not stored (or is another change's) is refused until it is;
the stop direction is never looked up. Real nats-server (authorization on), a node
in-process.
"""

from __future__ import annotations

import asyncio
from datetime import date

import msgspec
import pytest

from knightwatch.clock import NS_PER_S, SystemClock
from knightwatch.control.node.flags import (
    ENCODER,
    NodeFlags,
    applied_key,
    change_key,
    state_key,
)
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.site import Site
from knightwatch.flags.activation import ActivationRequest
from knightwatch.flags.definition import FlagDefinition, Lifecycle
from knightwatch.flags.rollout import RolloutPlan, Stage, plan_digest
from knightwatch.flags.state import FlagChange, FlagState
from knightwatch.release.dsse import Envelope, encode_envelope, new_envelope
from knightwatch.trust.approval import Approval, ApprovalKind, sign_approval
from knightwatch.trust.command import TrustReason
from knightwatch.trust.flagproof import FLAG_PAYLOAD_TYPE, FlagDecision, FlagProof, FlagSealer

from ..helpers import eventually
from .test_nested_records import close, joined

QUOTE = "risk.quote_wide"
"""A trading flag, safe default off (its meaning unknown to the node: fail closed)."""
STOP = "risk.stop_all"


def now() -> int:
    return SystemClock().time_ns()


def proof(site: Site, flag: str, value: bool, revision: int, issued_ns: int) -> str:
    """alice's signed change of `flag` to `value` on n1 (safe default off), dated
    `issued_ns`; moving it away from the safe default carries bob's approval."""
    away = value is not False
    decision = FlagDecision(
        flag_id=flag,
        value=value,
        nodes=("n1",),
        revision=revision,
        actor="alice",
        requester="alice",
        reason="test",
        issued_ns=issued_ns,
        description=f"{flag}: what it does when on",
        safe_default=False,
        trading_behaviour=True,
        approval_kind="flag" if away else "",
    )
    envelope = site.signer("alice").sign(
        new_envelope(FLAG_PAYLOAD_TYPE, msgspec.json.encode(decision))
    )
    approval = None
    if away:
        asked = Approval(
            ApprovalKind.FLAG, flag, value, None, "alice", "test", issued_ns - 1,
            issued_ns + 600 * NS_PER_S,
        )  # fmt: skip
        approval = sign_approval(asked, site.signer("bob"))
    return msgspec.json.encode(FlagProof(envelope, approval)).decode()


async def store(
    plane: NatsControlPlane, flag: str, revision: int, value: bool, signed: str, *, record: int
) -> None:
    """The state at `revision` with n1's value and proof, then (`record` > 0) the change
    record `change.<flag>.<record>` holding the proof, as the flag store writes them."""
    state = FlagState(flag, revision, {"n1": value}, {}, {"n1": signed})
    await plane.put_record(Bucket.FLAGS, state_key(flag), ENCODER.encode(state))
    if record:
        await store_change(plane, flag, record, value, signed)


async def store_change(
    plane: NatsControlPlane, flag: str, revision: int, value: bool, signed: str
) -> None:
    change = FlagChange(flag, value, ("n1",), "alice", None, "test", "cli", now(), {})
    recorded = msgspec.structs.replace(change, revision=revision, proof=signed)
    await plane.put_record(Bucket.FLAGS, change_key(flag, revision), ENCODER.encode(recorded))


async def revoke_alice(site: Site) -> int:
    """alice's key is revoked from now on (a new roster version the server serves)."""
    await asyncio.sleep(0.2)  # after every write before it, by the server's clock too
    revoked = now()
    await site.publish(site.kit.revoke("alice", revoked))
    return revoked


async def started_flags(site: Site) -> tuple[NodeRuntime, NodeFlags]:
    node = await joined(site)
    flags = NodeFlags(node)
    await flags.start()
    return node, flags


async def test_a_change_signed_after_a_revocation_and_dated_back_is_refused_at_start(
    site: Site,
) -> None:
    """alice's key is revoked; with it, someone signs a change turning the trading flag
    on, dated before the revocation, and bob (who may write the flags) stores it with its
    change record. Judged at the server's write time, after the revocation, it is
    refused and the node evaluates the safe default. Before, it applied."""
    await asyncio.sleep(0.2)
    dated = now()  # while alice's key was valid
    await revoke_alice(site)
    bob = await site.connect("bob")
    try:
        await store(bob, QUOTE, 1, True, proof(site, QUOTE, True, 1, dated), record=1)
    finally:
        await bob.close()
    node, flags = await started_flags(site)
    try:
        assert flags.refused[TrustReason.KEY_NOT_VALID] == 1, flags.last_refusal
        assert "of alice is revoked" in flags.last_refusal
        assert flags.get(QUOTE) is None  # the safe default
    finally:
        await close(node)


async def test_a_change_stored_before_the_revocation_still_applies_at_start(site: Site) -> None:
    """The same change, stored (with its record) while alice's key was valid, applies on
    a node that starts after the revocation: judged when the server wrote it."""
    alice = await site.connect("alice")
    try:
        await store(alice, QUOTE, 1, True, proof(site, QUOTE, True, 1, now()), record=1)
    finally:
        await alice.close()
    await revoke_alice(site)
    node, flags = await started_flags(site)
    try:
        assert sum(flags.refused.values()) == 0, flags.last_refusal
        state = flags.get(QUOTE)
        assert state is not None and state.value_for("n1") is True
    finally:
        await close(node)


async def test_a_change_whose_record_is_missing_waits_for_it_the_stop_direction_never(
    site: Site,
) -> None:
    """A stored change away from the safe default without its change record is refused
    (its write time is unknown; the safe default meanwhile) and applies once the record
    is stored; a change to the safe default without one applies at once."""
    alice = await site.connect("alice")
    try:
        on = proof(site, QUOTE, True, 1, now())
        await store(alice, QUOTE, 1, True, on, record=0)
        await store(alice, STOP, 1, False, proof(site, STOP, False, 1, now()), record=0)
        node, flags = await started_flags(site)
        try:
            assert flags.refused[TrustReason.MALFORMED] == 1, flags.last_refusal
            assert sum(flags.refused.values()) == 1, flags.last_refusal
            assert f"the change record 'change.{QUOTE}.1' behind the proof is not stored" in (
                flags.last_refusal
            )
            assert flags.get(QUOTE) is None  # the safe default
            stopped = flags.get(STOP)  # applied: the node evaluates its own safe default
            assert stopped is not None and stopped.revision == 1
            assert stopped.value_for("n1") is None
            await store_change(alice, QUOTE, 1, True, on)  # the writer's second write
            await eventually(lambda: (s := flags.get(QUOTE)) is not None and s.revision == 1)
            assert flags.get(QUOTE).value_for("n1") is True  # type: ignore[union-attr]
        finally:
            await close(node)
    finally:
        await alice.close()


async def test_an_older_change_record_does_not_vouch_for_a_new_proof(site: Site) -> None:
    """alice turns the flag to its safe default (revision 1, recorded). After her
    revocation someone signs, with her key, a change turning it on that claims revision
    1 and is dated before the revocation, and stores it as revision 2. The record of
    revision 1 was written before the revocation but holds another proof: refused. (A
    write time looked up by revision alone would have let it apply.)"""
    alice = await site.connect("alice")
    try:
        off = proof(site, QUOTE, False, 1, now())
        await store(alice, QUOTE, 1, False, off, record=1)
    finally:
        await alice.close()
    await asyncio.sleep(0.2)
    dated = now()
    await revoke_alice(site)
    bob = await site.connect("bob")
    try:
        await store(bob, QUOTE, 2, True, proof(site, QUOTE, True, 1, dated), record=0)
    finally:
        await bob.close()
    node, flags = await started_flags(site)
    try:
        assert flags.refused[TrustReason.MALFORMED] == 1, flags.last_refusal
        assert f"'change.{QUOTE}.1' behind the proof is another change's" in flags.last_refusal
        assert flags.get(QUOTE) is None
    finally:
        await close(node)


# --- a rollout's approval, used again ------------------------------------------------

ORDER = ("n0", "n1", "n2")
"""The rollout's nodes in order: stage 0 adds n0, stage 1 adds n1 and n2 (the node, n1)."""
PLAN = RolloutPlan(stages=(Stage("canary", 0, nodes=1), Stage("fleet", 0, fraction=1.0)))
QUOTE_DEF = FlagDefinition(
    id=QUOTE,
    description=f"{QUOTE}: what it does when on",
    safe_default=False,
    trading_behaviour=True,
    lifecycle=Lifecycle.ACTIVE,
    created=date(2026, 1, 1),
    owner="risk",
    expires=date(2027, 1, 1),
)


def rollout_approval(site: Site, started: int) -> str:
    """bob's approval of alice's rollout of QUOTE with PLAN (stored with the rollout)."""
    asked = Approval(
        ApprovalKind.ROLLOUT, QUOTE, True, None, "alice", "t", started - 1,
        started + 600 * NS_PER_S, plan_digest(PLAN),
    )  # fmt: skip
    return encode_envelope(sign_approval(asked, site.signer("bob"))).decode()


def signed_change(site: Site, approval: str, decision: dict[str, object]) -> str:
    """alice's signature over `decision` (QUOTE on), carrying the rollout's approval."""
    decision = {
        "flag_id": QUOTE, "value": True, "actor": "alice", "requester": "alice",
        "issued_ns": now(), "description": QUOTE_DEF.description, "safe_default": False,
        "trading_behaviour": True, "approval_kind": "rollout",
        "approval_digest": plan_digest(PLAN), **decision,
    }  # fmt: skip
    payload = msgspec.json.encode(decision, order="sorted")
    envelope = site.signer("alice").sign(new_envelope(FLAG_PAYLOAD_TYPE, payload))
    carried = msgspec.json.decode(approval, type=Envelope)
    return msgspec.json.encode(FlagProof(envelope, carried)).decode()


def staged(
    site: Site,
    approval: str,
    started: int,
    nodes: tuple[str, ...],
    index: int,
    revision: int,
    *,
    rollout_id: str = "quote-1",
    order: tuple[str, ...] = ORDER,
) -> str:
    """alice's signed stage `index` of rollout `rollout_id` setting `nodes` on, as the
    rollout driver's sealer signs it."""
    return signed_change(
        site,
        approval,
        {
            "nodes": list(nodes), "revision": revision, "reason": "stage",
            "approved_ns": started, "rollout_id": rollout_id, "rollout_nodes": list(order),
            "rollout_stage": index, "rollout_plan": msgspec.json.encode(PLAN).decode(),
        },
    )  # fmt: skip


def unbound(site: Site, approval: str, started: int, nodes: tuple[str, ...], revision: int) -> str:
    """What one operator could sign before: the stored approval, no rollout named."""
    return signed_change(
        site,
        approval,
        {"nodes": list(nodes), "revision": revision, "reason": "on", "approved_ns": started},
    )


def stopped(site: Site, nodes: tuple[str, ...], revision: int) -> str:
    """alice's one-person change of QUOTE back to its safe default on `nodes`."""
    change = FlagChange(QUOTE, False, nodes, "alice", None, "stop", "cli", now(), {})
    request = ActivationRequest(QUOTE, False, "alice", "stop", "cli")
    return FlagSealer(site.signer("alice"), None).seal(change, revision, request, QUOTE_DEF)


async def put_state(
    site: Site, revision: int, values: dict[str, bool], proofs: dict[str, str]
) -> None:
    bob = await site.connect("bob")
    try:
        state = FlagState(QUOTE, revision, values, {}, proofs)
        await bob.put_record(Bucket.FLAGS, state_key(QUOTE), ENCODER.encode(state))
    finally:
        await bob.close()


async def at_revision(flags: NodeFlags, revision: int) -> None:
    await eventually(lambda: (s := flags.get(QUOTE)) is not None and s.revision == revision)


async def canary_then_abort(site: Site, flags: NodeFlags) -> tuple[str, int, str]:
    """The rollout's canary (n0) switched on, then aborted (n0 back off): the approval,
    the rollout's start and the canary's proof."""
    started = now()
    approval = rollout_approval(site, started)
    canary = staged(site, approval, started, ("n0",), 0, 1)
    await put_state(site, 1, {"n0": True}, {"n0": canary})
    await at_revision(flags, 1)
    await put_state(site, 2, {"n0": False}, {"n0": stopped(site, ("n0",), 2)})
    await at_revision(flags, 2)
    return approval, started, canary


@pytest.mark.parametrize("form", ["next_stage", "another_rollout", "unbound"])
async def test_an_aborted_rollouts_approval_turns_the_flag_on_nowhere(
    site: Site, form: str
) -> None:
    """The canary was aborted; within the approval's day alice alone signs a change riding
    the rollout's stored approval: its next stage (n1, n2), a "new rollout" with n1 first,
    or (as before) a change naming no rollout. n1 refuses each. Before, the unbound change
    turned n1 on."""
    node, flags = await started_flags(site)
    try:
        approval, started, _ = await canary_then_abort(site, flags)
        if form == "next_stage":
            signed = staged(site, approval, started, ("n1", "n2"), 1, 3)
        elif form == "another_rollout":
            signed = staged(
                site, approval, started, ("n1",), 0, 3, rollout_id="quote-2",
                order=("n1", "n0", "n2"),
            )  # fmt: skip
        else:
            signed = unbound(site, approval, started, ("n1", "n2"), 3)
        on = ("n1", "n2") if form != "another_rollout" else ("n1",)
        values = {"n0": False, **dict.fromkeys(on, True)}
        proofs = {"n0": stopped(site, ("n0",), 2), **dict.fromkeys(on, signed)}
        await put_state(site, 3, values, proofs)
        await eventually(lambda: sum(flags.refused.values()) == 1)
        wanted = TrustReason.APPROVAL_INVALID if form == "unbound" else TrustReason.REPLAYED
        assert flags.refused[wanted] == 1, flags.last_refusal
        held = flags.get(QUOTE)
        assert held is not None and held.value_for("n1") is None  # the safe default
    finally:
        await close(node)


async def test_the_next_stage_of_a_running_rollout_applies_and_not_before_its_canary(
    site: Site,
) -> None:
    """The rollout as its driver runs it: stage 1 after the canary applies on n1. A stage 1
    stored with no canary before it is refused."""
    node, flags = await started_flags(site)
    try:
        started = now()
        approval = rollout_approval(site, started)
        skipped = staged(site, approval, started, ("n1", "n2"), 1, 1)
        await put_state(site, 1, {"n1": True, "n2": True}, {"n1": skipped, "n2": skipped})
        await eventually(lambda: flags.refused[TrustReason.REPLAYED] == 1)
        assert "comes before stage 0" in flags.last_refusal
        canary = staged(site, approval, started, ("n0",), 0, 2)
        await put_state(site, 2, {"n0": True}, {"n0": canary})
        await at_revision(flags, 2)
        fleet = staged(site, approval, started, ("n1", "n2"), 1, 3)
        proofs = {"n0": canary, "n1": fleet, "n2": fleet}
        await put_state(site, 3, {"n0": True, "n1": True, "n2": True}, proofs)
        await at_revision(flags, 3)
        held = flags.get(QUOTE)
        assert held is not None and held.value_for("n1") is True, flags.last_refusal
    finally:
        await close(node)


async def test_a_restarted_node_remembers_the_rollout_ended(site: Site) -> None:
    """After the abort n1 restarts; then the canary's own proof is stored back on n0 with
    a stage 1 for n1 and n2, as if the rollout had run on. n1 remembers (its applied
    record) that the rollout ended and refuses it."""
    node, flags = await started_flags(site)
    approval, started, canary = await canary_then_abort(site, flags)

    async def remembered() -> bool:
        stored, _ = await node.plane.get_record(Bucket.FLAGS, applied_key(QUOTE, "n1"))
        return stored is not None and b"no longer held its stage 0" in stored

    for _ in range(300):  # up to 15 s: the node's record over NATS
        if await remembered():
            break
        await asyncio.sleep(0.05)
    assert await remembered()
    await close(node)
    node, flags = await started_flags(site)
    try:
        fleet = staged(site, approval, started, ("n1", "n2"), 1, 3)
        proofs = {"n0": canary, "n1": fleet, "n2": fleet}
        await put_state(site, 3, {"n0": True, "n1": True, "n2": True}, proofs)
        await eventually(lambda: flags.refused[TrustReason.REPLAYED] == 1)
        assert "ended" in flags.last_refusal
        held = flags.get(QUOTE)
        assert held is not None and held.value_for("n1") is None
    finally:
        await close(node)
