"""A node's applied record stays within its bucket's value bound whatever the fleet's size.

The record carries the node's memory of each approval used on the flag within a day (the
replay defence every node reads). Before, each remembered rollout stage listed the nodes
it added: a rollout over a couple of hundred nodes (ids of 15 characters), or a fifth
rollout (a 17th approved change) of one flag in a day, made the record larger than the
bucket takes (4 KiB). The write was refused, logged as "control plane did not answer":
the node's confirmation of that flag was stored no more for the day (`flags set` saw it
unconfirmed, the switch-off's too) and its memory was lost to every other node. Now a
stage's nodes are read from its proof in the state, and the bound holds a day's use.
Real nats-server (authorization on), a node (n1) in-process.
"""

from __future__ import annotations

import asyncio

from knightwatch.control.node.flags import APPLIED_DECODER, FlagApplied, applied_key
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.site import Site

from .test_flag_approval_memory import flag_approval, signed, started
from .test_flags_stored import QUOTE, at_revision, now, put_state, rollout_approval, staged, stopped
from .test_nested_records import close


async def stored_at(node: NodeRuntime, revision: int) -> tuple[FlagApplied, int]:
    """n1's durable applied record of QUOTE once it confirms `revision` (up to 15 s), and
    its size."""
    value = None
    for _ in range(300):
        value, _ = await node.plane.get_record(Bucket.FLAGS, applied_key(QUOTE, "n1"))
        if value is not None and APPLIED_DECODER.decode(value).revision >= revision:
            return APPLIED_DECODER.decode(value), len(value)
        await asyncio.sleep(0.05)
    held = None if value is None else APPLIED_DECODER.decode(value).revision
    raise AssertionError(f"n1's durable record never confirmed revision {revision} (at {held})")


async def test_a_rollout_over_hundreds_of_nodes_is_confirmed_and_remembered(site: Site) -> None:
    """A canary on n0, then the fleet stage: n1 and 250 more nodes. n1 confirms it durably,
    then the switch-off of n1, and its record says the rollout ended."""
    node, flags = await started(site)
    try:
        order = ("n0", "n1", *(f"node-{i:04d}-ldn4x" for i in range(250)))
        started_ns = now()
        approval = rollout_approval(site, started_ns)
        canary = staged(site, approval, started_ns, ("n0",), 0, 1, order=order)
        await put_state(site, 1, {"n0": True}, {"n0": canary})
        await at_revision(flags, 1)
        fleet = staged(site, approval, started_ns, order[1:], 1, 2, order=order)
        await put_state(site, 2, {"n0": True, "n1": True}, {"n0": canary, "n1": fleet})
        await at_revision(flags, 2)
        held = flags.get(QUOTE)
        assert held is not None and held.value_for("n1") is True, flags.last_refusal
        applied, _ = await stored_at(node, 2)
        assert sorted(applied.rollouts[0].stages) == [0, 1]
        off = stopped(site, ("n1",), 3)
        await put_state(site, 3, {"n0": True, "n1": False}, {"n0": canary, "n1": off})
        applied, size = await stored_at(node, 3)
        assert "no longer held its stage 1" in applied.rollouts[0].ended
        assert size < 2048, size
    finally:
        await close(node)


async def test_a_days_approved_changes_of_a_flag_are_all_confirmed_and_remembered(
    site: Site,
) -> None:
    """Twenty changes turning n1 on, each on its own approval: every one is confirmed
    durably and n1's record remembers every approval's change."""
    node, flags = await started(site)
    try:
        for revision in range(1, 21):
            approval = flag_approval(site)
            change = signed(site, approval, nodes=["n1"], revision=revision)
            await put_state(site, revision, {"n1": True}, {"n1": change})
            await at_revision(flags, revision)
        applied, _ = await stored_at(node, 20)
        assert len(applied.rollouts) == 20
    finally:
        await close(node)
