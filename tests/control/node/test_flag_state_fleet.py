"""A change over a fleet of a couple of hundred nodes is stored, and its nodes apply it.

A rollout stage's proof names every node of its rollout (and a `flags set` proof every
node it sets). Before, the flag state held a copy of that proof per node: at 200 nodes
with 15-character ids the record of a full-fleet stage was about 2.3 MB, larger than
NATS takes in one message (1 MB), so the flag store's write was refused and the rollout
could not complete. Now each distinct proof is stored once and the record grows linearly.
Written through the operators' flag store (`PlaneFlagStore`, the write path of `flags
set` and the rollout driver); real nats-server (authorization on), a node (n1) in-process.
"""

from __future__ import annotations

import asyncio

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.flagstore import PlaneFlagStore
from knightwatch.control.node.flags import state_key
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.site import Site
from knightwatch.flags.state import FlagChange, FlagState

from .test_flag_approval_memory import flag_approval, signed, started
from .test_flags_stored import QUOTE, at_revision, now, rollout_approval, staged
from .test_nested_records import close

ORDER = ("n0", "n1", *(f"node-{i:04d}-ldn4x" for i in range(198)))
"""200 nodes, all but the two the test site knows with 15-character ids."""


async def commit(site: Site, nodes: tuple[str, ...], proof: str, expected: int) -> int:
    """`nodes` turned on by the change `proof` signs, through the operators' flag store;
    the stored record's size."""
    bob = await site.connect("bob")  # bob may write the flags bucket
    try:
        store = PlaneFlagStore(bob, SystemClock())
        change = FlagChange(QUOTE, True, nodes, "alice", "bob", "on", "cli", now(), {}, 0, proof)
        state: FlagState = await asyncio.to_thread(store.commit, change, expected)
        assert state.revision == expected + 1
        stored, _ = await bob.get_record(Bucket.FLAGS, state_key(QUOTE))
        assert stored is not None
        return len(stored)
    finally:
        await bob.close()


@pytest.mark.parametrize("how", ["rollout", "flags_set"])
async def test_a_change_over_two_hundred_nodes_is_stored_and_applied(site: Site, how: str) -> None:
    """A rollout's canary (n0) then its fleet stage (n1 and 198 more), or one `flags set`
    over all 200: stored, and n1 applies it with the very proof that set its value."""
    node, flags = await started(site)
    try:
        if how == "rollout":
            started_ns = now()
            approval = rollout_approval(site, started_ns)
            canary = staged(site, approval, started_ns, ORDER[:1], 0, 1, order=ORDER)
            await commit(site, ORDER[:1], canary, 0)
            await at_revision(flags, 1)
            proof = staged(site, approval, started_ns, ORDER[1:], 1, 2, order=ORDER)
            size = await commit(site, ORDER[1:], proof, 1)
            await at_revision(flags, 2)
        else:
            proof = signed(site, flag_approval(site), nodes=list(ORDER), revision=1)
            size = await commit(site, ORDER, proof, 0)
            await at_revision(flags, 1)
        held = flags.get(QUOTE)
        assert held is not None and held.value_for("n1") is True, flags.last_refusal
        assert held.proof_for("n1") == proof
        if how == "rollout":
            assert held.proof_for("n0") == canary
        assert size < 64 << 10, size  # the proofs once each, some bytes a node
    finally:
        await close(node)
