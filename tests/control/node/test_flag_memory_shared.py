"""A node that never saw an approval used learns it from the other nodes' applied records.

Each node remembers which rollout (or `flags set` change) an approval carried, in its own
applied record. Before, a node read only its own: a node that was down while a rollout's
canary ran and was aborted (or one that joined the fleet since) held no memory of it, and
within the approval's day one operator could sign a "new rollout" riding the stored
approval with that node in its first stage, or a second change riding a used `flags set`
approval, and the node turned the flag on alone. Now a node starting reads every node's
applied record of the flag (only each node may write its own) and refuses such a change
as `replayed`. Real nats-server (authorization on), nodes in-process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.node.flags import NodeFlags, applied_key
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.site import Site
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.trust.command import TrustReason

from ..fleet_fixtures import POLICY
from ..helpers import eventually
from .test_flag_approval_memory import flag_approval, signed
from .test_flags_stored import QUOTE, at_revision, put_state, rollout_approval, staged, stopped
from .test_nested_records import close


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Site]:
    """A site with nodes n0 and n1 on a real nats-server (authorization on)."""
    s = Site(tmp_path, ["n0", "n1"])
    await s.astart()
    try:
        yield s
    finally:
        s.stop()


async def started(site: Site, name: str) -> tuple[NodeRuntime, NodeFlags]:
    clock = SystemClock()
    guard = Guard(Limits(lease_timeout_s=POLICY.lease_timeout_s), node=name, clock=clock)
    guard.arm("test")
    node = NodeRuntime(
        guard,
        site.plane(name),
        clock=clock,
        policy=POLICY,
        trust=site.store(),
        signer=site.signer(name),
    )
    await node.plane.connect()
    await node.join()
    flags = NodeFlags(node)
    await flags.start()
    return node, flags


async def recorded(node: NodeRuntime, text: bytes) -> None:
    """Wait (up to 15 s) until the node's applied record of QUOTE holds `text`."""
    for _ in range(300):
        stored, _ = await node.plane.get_record(Bucket.FLAGS, applied_key(QUOTE, node.node_id))
        if stored is not None and text in stored:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{node.node_id}'s applied record never held {text!r}")


@pytest.mark.parametrize("form", ["rollout", "flags_set"])
async def test_a_node_down_while_an_approval_was_used_refuses_it_riding_another_change(
    pair: Site, form: str
) -> None:
    """n0 ran through the use of bob's approval (rollout quote-1's canary on n0, or a
    `flags set` change on n0) and its switch-off; n1 was down. n1 starts; alice alone then
    signs a change riding the same approval that turns n1 on (a rollout quote-2 with n1 as
    its canary, or a second flag change). n1 refuses it. Before, it turned the flag on."""
    n0, flags0 = await started(pair, "n0")
    n1: NodeRuntime | None = None
    try:
        if form == "rollout":
            started_ns = SystemClock().time_ns()
            approval = rollout_approval(pair, started_ns)
            first = staged(pair, approval, started_ns, ("n0",), 0, 1)
            ended = b"no longer held its stage 0"
        else:
            approval = flag_approval(pair)
            first = signed(pair, approval, nodes=["n0"], revision=1)
            ended = b"change:1:"
        await put_state(pair, 1, {"n0": True}, {"n0": first})
        await at_revision(flags0, 1)
        off = stopped(pair, ("n0",), 2)
        await put_state(pair, 2, {"n0": False}, {"n0": off})
        await at_revision(flags0, 2)
        await recorded(n0, ended)
        n1, flags1 = await started(pair, "n1")
        await at_revision(flags1, 2)
        if form == "rollout":
            again = staged(
                pair, approval, started_ns, ("n1",), 0, 3, rollout_id="quote-2",
                order=("n1", "n0", "n2"),
            )  # fmt: skip
        else:
            again = signed(pair, approval, nodes=["n1"], revision=3, reason="on again")
        await put_state(pair, 3, {"n0": False, "n1": True}, {"n0": off, "n1": again})
        await eventually(lambda: flags1.refused[TrustReason.REPLAYED] == 1, what="refused")
        held = flags1.get(QUOTE)
        assert held is not None and held.value_for("n1") is None  # the safe default
    finally:
        if n1 is not None:
            await close(n1)
        await close(n0)
