"""A node remembers the change a `flags set` approval carried, and a rollout stage's hold.

`flags set` refuses an approval a committed change already carried (`approval_used`),
but anyone able to write `kw_flags` need not go through it. Before, a node checked a
flag approval only for its signer, flag, value, nodes and expiry: the requester alone
could sign a second change riding the same approval within its hour (after the first
was switched off, or on another node) and every node counted it approved. Now a node
remembers which change each approval it saw carried (any node's value in any state it
read, kept in its applied record across restarts) and refuses another as `replayed`.

A rollout's holds are in the plan its approval names (signed in every stage). Before,
nodes checked the stages' order but not their spacing: one operator could sign stage
after stage in quick succession. Then the spacing was judged on the stages' signed dates,
which a signer chooses within the minute before a change is heard (and 5 s after): two
stages written a moment apart passed dated a hold apart. Now a stage heard sooner after
the plan's previous stage that added nodes than the plan holds between them (less 5 s of
clock skew) is refused; a stage a node learned at a resync is judged on its signed date.
Real nats-server (authorization on), a node (n1) in-process.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from knightwatch.clock import NS_PER_S, SystemClock
from knightwatch.control.node.flags import NodeFlags, applied_key
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.site import Site
from knightwatch.flags.rollout import RolloutPlan, Stage, plan_digest
from knightwatch.release.dsse import Envelope, encode_envelope, new_envelope
from knightwatch.trust.approval import Approval, ApprovalKind, sign_approval
from knightwatch.trust.command import TrustReason
from knightwatch.trust.flagproof import FLAG_PAYLOAD_TYPE, FlagProof

from ..helpers import eventually
from .test_flags_stored import (
    QUOTE,
    QUOTE_DEF,
    at_revision,
    now,
    put_state,
    stopped,
    store_change,
)
from .test_nested_records import close, joined


async def started(site: Site) -> tuple[NodeRuntime, NodeFlags]:
    node = await joined(site)
    flags = NodeFlags(node)
    await flags.start()
    return node, flags


def flag_approval(site: Site) -> str:
    """bob's approval of alice turning QUOTE on (fleet-wide), valid for ten minutes."""
    t = now()
    asked = Approval(ApprovalKind.FLAG, QUOTE, True, None, "alice", "t", t - 1, t + 600 * NS_PER_S)
    return encode_envelope(sign_approval(asked, site.signer("bob"))).decode()


def signed(site: Site, approval: str, **decision: object) -> str:
    """alice's signed change turning QUOTE on, carrying `approval`."""
    fields = {
        "flag_id": QUOTE, "value": True, "actor": "alice", "requester": "alice",
        "reason": "on", "issued_ns": now(), "description": QUOTE_DEF.description,
        "safe_default": False, "trading_behaviour": True, "approval_kind": "flag",
        **decision,
    }  # fmt: skip
    payload = msgspec.json.encode(fields, order="sorted")
    envelope = site.signer("alice").sign(new_envelope(FLAG_PAYLOAD_TYPE, payload))
    carried = msgspec.json.decode(approval, type=Envelope)
    return msgspec.json.encode(FlagProof(envelope, carried)).decode()


async def remembered(node: NodeRuntime, text: bytes) -> None:
    """Wait (up to 15 s) until n1's applied record of QUOTE holds `text`."""
    for _ in range(300):
        stored, _ = await node.plane.get_record(Bucket.FLAGS, applied_key(QUOTE, "n1"))
        if stored is not None and text in stored:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"n1's applied record never held {text!r}")


@pytest.mark.parametrize("first_on", ["n1", "n0"])
@pytest.mark.parametrize("restart", [False, True])
async def test_a_flag_approval_carries_one_change_on_every_node_that_saw_it(
    site: Site, first_on: str, restart: bool
) -> None:
    """bob approved one change; alice's change on `first_on` carried it and was switched
    off. Within the approval's hour alice alone signs another change riding it, turning n1
    on (n1 running throughout, or restarted in between). n1 refuses it as replayed. Before,
    n1 turned the flag on with one person."""
    node, flags = await started(site)
    try:
        approval = flag_approval(site)
        first = signed(site, approval, nodes=[first_on], revision=1)
        await put_state(site, 1, {first_on: True}, {first_on: first})
        await at_revision(flags, 1)
        off = stopped(site, (first_on,), 2)
        await put_state(site, 2, {first_on: False}, {first_on: off})
        await at_revision(flags, 2)
        if restart:
            await remembered(node, b"change:1:")
            await close(node)
            node, flags = await started(site)
            await at_revision(flags, 2)
        again = signed(site, approval, nodes=["n1"], revision=3, reason="on again")
        values = {first_on: False, "n1": True}
        await put_state(site, 3, values, {first_on: off, "n1": again})
        await eventually(lambda: flags.refused[TrustReason.REPLAYED] == 1, what="refused")
        assert "used already, by the change of revision 1" in flags.last_refusal
        held = flags.get(QUOTE)
        assert held is not None and held.value_for("n1") is None  # the safe default
    finally:
        await close(node)


async def test_the_change_an_approval_carried_still_applies_and_survives_a_restart(
    site: Site,
) -> None:
    """The approval's own change applies, and a restarted node reading it again keeps it."""
    node, flags = await started(site)
    try:
        first = signed(site, flag_approval(site), nodes=["n1"], revision=1)
        await put_state(site, 1, {"n1": True}, {"n1": first})
        alice = await site.connect("alice")
        try:  # its change record, as `flags set` writes it (a restart judges it by it)
            await store_change(alice, QUOTE, 1, True, first)
        finally:
            await alice.close()
        await at_revision(flags, 1)
        held = flags.get(QUOTE)
        assert held is not None and held.value_for("n1") is True, flags.last_refusal
        await remembered(node, b"change:1:")
        await close(node)
        node, flags = await started(site)
        await at_revision(flags, 1)
        held = flags.get(QUOTE)
        assert held is not None and held.value_for("n1") is True, flags.last_refusal
        assert not flags.refused, flags.last_refusal
    finally:
        await close(node)


# --- a rollout's holds ----------------------------------------------------------------

ORDER = ("n0", "n1", "n2")
HELD = RolloutPlan(stages=(Stage("canary", 30, nodes=1), Stage("fleet", 0, fraction=1.0)))
"""30 s after the canary (n0) before the fleet (n1, n2)."""
SPLIT = RolloutPlan(
    stages=(
        Stage("canary", 10, nodes=1),
        Stage("soak", 20, nodes=1),
        Stage("fleet", 0, fraction=1.0),
    )
)
"""The same 30 s, as two holds: the soak stage adds no node."""


def rollout_approval(site: Site, plan: RolloutPlan, started_ns: int) -> str:
    asked = Approval(
        ApprovalKind.ROLLOUT, QUOTE, True, None, "alice", "t", started_ns - 1,
        started_ns + 600 * NS_PER_S, plan_digest(plan),
    )  # fmt: skip
    return encode_envelope(sign_approval(asked, site.signer("bob"))).decode()


def stage(
    site: Site,
    plan: RolloutPlan,
    approval: str,
    started_ns: int,
    index: int,
    nodes: tuple[str, ...],
    revision: int,
    issued_ns: int,
) -> str:
    """alice's signed stage `index` of rollout quote-1, as the driver's sealer signs it."""
    return signed(
        site, approval, nodes=list(nodes), revision=revision, reason="stage",
        issued_ns=issued_ns, approval_kind="rollout", approval_digest=plan_digest(plan),
        approved_ns=started_ns, rollout_id="quote-1", rollout_nodes=list(ORDER),
        rollout_stage=index, rollout_plan=msgspec.json.encode(plan).decode(),
    )  # fmt: skip


class Shifted(SystemClock):
    """The host's clocks, its wall clock moved `ahead` (time passing without the wait)."""

    def __init__(self) -> None:
        self.ahead = 0

    def time_ns(self) -> int:  # type: ignore[override]
        return time.time_ns() + self.ahead


def shifted(node: NodeRuntime) -> Shifted:
    clock = Shifted()
    node.clock = clock
    return clock


@pytest.mark.parametrize("plan", [HELD, SPLIT], ids=["one_hold", "two_holds"])
@pytest.mark.parametrize("gap_s", [1, 20, 40])
async def test_a_stage_comes_no_sooner_than_the_approved_plan_holds(
    site: Site, plan: RolloutPlan, gap_s: int
) -> None:
    """n1 hears the canary, then `gap_s` later (by its clock) the fleet stage, each dated
    when it is written; the plan holds 30 s in between. Sooner than 30 s less the 5 s of
    clock skew, n1 refuses the fleet stage; later, it applies. Before, one operator
    signing both at once turned the whole fleet on."""
    node, flags = await started(site)
    try:
        clock = shifted(node)
        canary_at = now()
        started_ns = canary_at - NS_PER_S
        approval = rollout_approval(site, plan, started_ns)
        canary = stage(site, plan, approval, started_ns, 0, ("n0",), 1, canary_at)
        await put_state(site, 1, {"n0": True}, {"n0": canary})
        await at_revision(flags, 1)
        clock.ahead = gap_s * NS_PER_S
        last = len(plan.stages) - 1
        fleet = stage(site, plan, approval, started_ns, last, ("n1", "n2"), 2, clock.time_ns())
        proofs = {"n0": canary, "n1": fleet, "n2": fleet}
        await put_state(site, 2, {"n0": True, "n1": True, "n2": True}, proofs)
        if gap_s < 25:
            await eventually(lambda: flags.refused[TrustReason.APPROVAL_INVALID] == 1)
            assert "the approved plan holds 30 s between them" in flags.last_refusal
            held = flags.get(QUOTE)
            assert held is not None and held.value_for("n1") is None
        else:
            await at_revision(flags, 2)
            held = flags.get(QUOTE)
            assert held is not None and held.value_for("n1") is True, flags.last_refusal
    finally:
        await close(node)


@pytest.mark.parametrize("plan", [HELD, SPLIT], ids=["one_hold", "two_holds"])
async def test_stages_heard_a_second_apart_are_refused_however_far_apart_they_are_dated(
    site: Site, plan: RolloutPlan
) -> None:
    """alice dates the canary 50 s back and the fleet stage 4 s ahead (each within what a
    change may be dated from when it is heard) and writes them a moment apart: 54 s apart
    on paper, the plan's 30 s hold skipped. n1 refuses the fleet stage (it heard the two a
    moment apart). Before, the hold was judged on the signed dates alone and the whole
    fleet turned on with no hold."""
    node, flags = await started(site)
    try:
        canary_at = now() - 50 * NS_PER_S
        started_ns = canary_at - NS_PER_S
        approval = rollout_approval(site, plan, started_ns)
        canary = stage(site, plan, approval, started_ns, 0, ("n0",), 1, canary_at)
        await put_state(site, 1, {"n0": True}, {"n0": canary})
        await at_revision(flags, 1)
        last = len(plan.stages) - 1
        ahead = now() + 4 * NS_PER_S
        fleet = stage(site, plan, approval, started_ns, last, ("n1", "n2"), 2, ahead)
        proofs = {"n0": canary, "n1": fleet, "n2": fleet}
        await put_state(site, 2, {"n0": True, "n1": True, "n2": True}, proofs)
        await eventually(lambda: flags.refused[TrustReason.APPROVAL_INVALID] == 1)
        assert "the approved plan holds 30 s between them" in flags.last_refusal
        held = flags.get(QUOTE)
        assert held is not None and held.value_for("n1") is None
    finally:
        await close(node)


@pytest.mark.parametrize("down_for_canary", [False, True])
async def test_a_node_restarted_mid_rollout_takes_the_next_stage_after_the_hold(
    site: Site, down_for_canary: bool
) -> None:
    """n1 restarts between the canary and the fleet stage (heard the canary live before, or
    was down when it was written and reads it at its start); the fleet stage comes 40 s
    after the canary, dated so, and applies: a stage learned at a resync does not block
    the next one (its hold counts from when the server stored its change record then)."""
    node, flags = await started(site)
    try:
        canary_at = now()
        started_ns = canary_at - NS_PER_S
        approval = rollout_approval(site, HELD, started_ns)
        canary = stage(site, HELD, approval, started_ns, 0, ("n0",), 1, canary_at)
        if down_for_canary:
            await close(node)
        await put_state(site, 1, {"n0": True}, {"n0": canary})
        bob = await site.connect("bob")
        try:  # its change record, as the driver writes it (when it was stored: its hold)
            await store_change(bob, QUOTE, 1, True, canary)
        finally:
            await bob.close()
        if not down_for_canary:
            await at_revision(flags, 1)
            await remembered(node, b'"stages":{"0":')
            await close(node)
        node, flags = await started(site)
        clock = shifted(node)
        await at_revision(flags, 1)
        clock.ahead = 40 * NS_PER_S
        fleet = stage(site, HELD, approval, started_ns, 1, ("n1", "n2"), 2, clock.time_ns())
        proofs = {"n0": canary, "n1": fleet, "n2": fleet}
        await put_state(site, 2, {"n0": True, "n1": True, "n2": True}, proofs)
        await at_revision(flags, 2)
        held = flags.get(QUOTE)
        assert held is not None and held.value_for("n1") is True, flags.last_refusal
        assert not flags.refused, flags.last_refusal
    finally:
        await close(node)
