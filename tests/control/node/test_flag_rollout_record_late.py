"""A stage refused for a missing change record is judged again when that record arrives.

A node that did not hear a rollout's stages live times the hold between them by the
server's write times of their change records (`change.<flag>.<revision>`). Where one
is missing (not yet replicated to what the node read, or written late by its driver),
the stage is refused: fail closed, the flag stays at its safe default there. Before,
only the change record behind the node's own value was awaited: once it was stored,
the node judged the stage again, found the earlier stage's record still missing and
refused; when that record arrived (with its own write time) nothing judged the stage
again, and the node sat at the safe default while the rest of the fleet was on, for
as long as no other change of the flag came (unbounded). Now every record a refused
stage waits for is awaited, and its arrival judges the stage again.
Real nats-server (authorization on), a node (n1) in-process.
"""

from __future__ import annotations

import asyncio

import pytest

from knightwatch.clock import NS_PER_S
from knightwatch.control.site import Site
from knightwatch.flags.rollout import RolloutPlan, Stage
from knightwatch.trust.command import TrustReason

from ..helpers import eventually
from .test_flag_approval_memory import rollout_approval, stage, started
from .test_flags_stored import QUOTE, now, put_state, store_change
from .test_nested_records import close

NO_HOLD = RolloutPlan(stages=(Stage("canary", 0, nodes=1), Stage("fleet", 0, fraction=1.0)))
"""The canary (n0), then at once the fleet (n1, n2): no hold, so the stages' write
times may come in any order within the 5 s of skew."""


@pytest.mark.parametrize("order", ["own_first", "canary_first"])
async def test_a_stage_waiting_on_the_earlier_stages_record_applies_once_it_is_stored(
    site: Site, order: str
) -> None:
    """Both stages are stored with no change record; n1 starts and refuses the fleet stage
    (the canary's write time cannot be read). The two records then arrive, in either
    order: n1 turns the flag on with no other state change. Before, with the fleet
    stage's own record first, n1 stayed at the safe default."""
    started_ns = now() - 2 * NS_PER_S
    approval = rollout_approval(site, NO_HOLD, started_ns)
    canary = stage(site, NO_HOLD, approval, started_ns, 0, ("n0",), 1, started_ns + NS_PER_S)
    await put_state(site, 1, {"n0": True}, {"n0": canary})
    fleet = stage(site, NO_HOLD, approval, started_ns, 1, ("n1", "n2"), 2, now())
    proofs = {"n0": canary, "n1": fleet, "n2": fleet}
    await put_state(site, 2, {"n0": True, "n1": True, "n2": True}, proofs)
    node, flags = await started(site)
    try:
        await eventually(lambda: sum(flags.refused.values()) == 1, what="the refusal")
        assert flags.refused[TrustReason.APPROVAL_INVALID] == 1, flags.last_refusal
        assert "cannot be checked" in flags.last_refusal
        held = flags.get(QUOTE)
        assert held is None or held.value_for("n1") is None  # the safe default
        records = [(2, fleet), (1, canary)] if order == "own_first" else [(1, canary), (2, fleet)]
        bob = await site.connect("bob")
        try:
            for revision, signed in records:
                await store_change(bob, QUOTE, revision, True, signed)
                await asyncio.sleep(0.5)  # n1 judges the stage again on the first record
        finally:
            await bob.close()
        await eventually(
            lambda: (s := flags.get(QUOTE)) is not None and s.value_for("n1") is True,
            what=f"n1 on once both records are stored ({flags.last_refusal})",
        )
        assert sum(flags.refused.values()) == 1, flags.last_refusal  # counted once
    finally:
        await close(node)


async def test_a_stage_whose_earlier_record_never_comes_stays_at_the_safe_default(
    site: Site,
) -> None:
    """The canary's change record is lost (its driver's write failed after the state's):
    n1 refuses the fleet stage and stays at the safe default (fail closed) when its own
    record and the state are written again: only the canary's record could time it."""
    started_ns = now() - 2 * NS_PER_S
    approval = rollout_approval(site, NO_HOLD, started_ns)
    canary = stage(site, NO_HOLD, approval, started_ns, 0, ("n0",), 1, started_ns + NS_PER_S)
    await put_state(site, 1, {"n0": True}, {"n0": canary})
    fleet = stage(site, NO_HOLD, approval, started_ns, 1, ("n1", "n2"), 2, now())
    proofs = {"n0": canary, "n1": fleet, "n2": fleet}
    await put_state(site, 2, {"n0": True, "n1": True, "n2": True}, proofs)
    bob = await site.connect("bob")
    try:
        await store_change(bob, QUOTE, 2, True, fleet)
        node, flags = await started(site)
        try:
            await eventually(lambda: sum(flags.refused.values()) == 1, what="the refusal")
            assert "stage 0 of its rollout (revision 1)" in flags.last_refusal
            await store_change(bob, QUOTE, 2, True, fleet)  # its own record, written again
            await put_state(site, 2, {"n0": True, "n1": True, "n2": True}, proofs)  # unchanged
            held = flags.get(QUOTE)
            assert held is None or held.value_for("n1") is None
            assert sum(flags.refused.values()) == 1, flags.last_refusal
        finally:
            await close(node)
    finally:
        await bob.close()
