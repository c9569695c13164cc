"""A rollout's hold is measured on when the server stored stages no node heard live.

A node measures the hold between two stages on when it heard each live. One that
started (or reconnected) after the stages were written heard neither live, and no
node's applied record it can read says it did: before, it judged the hold on the
stages' signed issue times alone, which a signer picks within a minute before to 5 s
after the change is heard. Two stages written a moment apart, dated a hold apart,
turned the flag on early there (about 70 s of slack). Now such a node measures the
hold on the server's write times of the stages' change records
(`change.<flag>.<revision>`, holding each stage's very proof; no client sets them),
mixed with when it heard a stage live where it did; where the store keeps write times
and one cannot be read (the record missing or holding another proof), the stage is
refused, never passed on its signed date. The stop direction is never looked up.
Real nats-server (authorization on), a node (n1) in-process.
"""

from __future__ import annotations

import pytest

from knightwatch.clock import NS_PER_S
from knightwatch.control.site import Site
from knightwatch.flags.rollout import RolloutPlan
from knightwatch.trust.command import TrustReason

from ..helpers import eventually
from .test_flag_approval_memory import HELD, SPLIT, rollout_approval, stage, started
from .test_flags_stored import QUOTE, at_revision, now, put_state, stopped, store_change
from .test_nested_records import close


async def store_stage(
    site: Site, revision: int, values: dict[str, bool], proofs: dict[str, str], record: str
) -> None:
    """The state at `revision`, then its change record holding `record` (as the driver's
    flag store writes them; "" writes none)."""
    await put_state(site, revision, values, proofs)
    if record:
        bob = await site.connect("bob")
        try:
            await store_change(bob, QUOTE, revision, True, record)
        finally:
            await bob.close()


@pytest.mark.parametrize("plan", [HELD, SPLIT], ids=["one_hold", "two_holds"])
@pytest.mark.parametrize("heard_fleet_live", [False, True])
async def test_stages_stored_a_moment_apart_are_refused_by_a_node_that_heard_neither_first(
    site: Site, plan: RolloutPlan, heard_fleet_live: bool
) -> None:
    """alice dates the canary 50 s back and the fleet stage 4 s ahead and stores them (with
    their change records) a moment apart: 54 s apart on paper, the plan's 30 s hold
    skipped. n1 starts after both (or after the canary alone, hearing the fleet stage
    live); nobody heard the canary live. n1 refuses the fleet stage: the server stored them
    a moment apart. Before, it judged the hold on the signed dates and turned the flag on."""
    canary_at = now() - 50 * NS_PER_S
    started_ns = canary_at - NS_PER_S
    approval = rollout_approval(site, plan, started_ns)
    canary = stage(site, plan, approval, started_ns, 0, ("n0",), 1, canary_at)
    await store_stage(site, 1, {"n0": True}, {"n0": canary}, canary)
    last = len(plan.stages) - 1
    fleet = stage(site, plan, approval, started_ns, last, ("n1", "n2"), 2, now() + 4 * NS_PER_S)
    proofs = {"n0": canary, "n1": fleet, "n2": fleet}
    if heard_fleet_live:
        node, flags = await started(site)
        await at_revision(flags, 1)
    await store_stage(site, 2, {"n0": True, "n1": True, "n2": True}, proofs, fleet)
    if not heard_fleet_live:
        node, flags = await started(site)
    try:
        await eventually(
            lambda: flags.refused[TrustReason.APPROVAL_INVALID] == 1, what=flags.last_refusal
        )
        assert "the approved plan holds 30 s between them" in flags.last_refusal
        assert "s after stage 0 was" in flags.last_refusal
        held = flags.get(QUOTE)
        assert held is None or held.value_for("n1") is None  # the safe default
    finally:
        await close(node)


@pytest.mark.parametrize("canary_record", ["missing", "another_proof"])
async def test_a_stage_whose_prior_has_no_readable_write_time_is_refused_not_passed(
    site: Site, canary_record: str
) -> None:
    """The canary's change record is missing (or holds another change's proof), so when the
    server stored the canary cannot be read; n1 starts after both stages, heard neither
    live. The fleet stage is refused (its hold cannot be checked), not judged on the
    signed dates that pass it. Before, it applied. Switching n1 back off still applies."""
    canary_at = now() - 50 * NS_PER_S
    started_ns = canary_at - NS_PER_S
    approval = rollout_approval(site, HELD, started_ns)
    canary = stage(site, HELD, approval, started_ns, 0, ("n0",), 1, canary_at)
    other = stopped(site, ("n0",), 1) if canary_record == "another_proof" else ""
    await store_stage(site, 1, {"n0": True}, {"n0": canary}, other)
    fleet = stage(site, HELD, approval, started_ns, 1, ("n1", "n2"), 2, now() + 4 * NS_PER_S)
    proofs = {"n0": canary, "n1": fleet, "n2": fleet}
    await store_stage(site, 2, {"n0": True, "n1": True, "n2": True}, proofs, fleet)
    node, flags = await started(site)
    try:
        await eventually(
            lambda: flags.refused[TrustReason.APPROVAL_INVALID] == 1, what=flags.last_refusal
        )
        assert "stage 0 of its rollout (revision 1) was neither heard live" in flags.last_refusal
        assert "hold before stage 1 cannot be checked" in flags.last_refusal
        held = flags.get(QUOTE)
        assert held is None or held.value_for("n1") is None  # the safe default
        off = stopped(site, ("n1", "n2"), 3)  # the stop direction: never looked up
        await put_state(site, 3, {"n0": True, "n1": False}, {"n0": canary, "n1": off})
        await at_revision(flags, 3)
        held = flags.get(QUOTE)
        assert held is not None and held.value_for("n1") in (None, False)  # applied: off
        assert sum(flags.refused.values()) == 1, flags.last_refusal
    finally:
        await close(node)
