"""The drill's final resume is checked: a scope it leaves halted fails the drill.

The drill ends by resuming every scope still halted. Its results were thrown away: a
resume that a live node never confirmed (the node's process died with its lease still
running) left the fleet halted under "drill passed". `resume_left_halted` names each
scope left not trading, and the drill fails on any. Real nats-server.
"""

from __future__ import annotations

import time
from pathlib import Path

from knightwatch.control.plane.wire import NodeStatus
from knightwatch.control.site import Site
from knightwatch.sim.drill.resume_phase import resume_left_halted
from knightwatch.state import Scope, TradingState

S = 1_000_000_000


async def test_a_resume_no_live_node_confirmed_is_named(tmp_path: Path) -> None:
    site = Site(tmp_path / "site", ("n1", "n2"))
    await site.astart()
    alice = await site.connect("alice")
    n1 = await site.connect("n1")
    try:
        ks = site.killswitch(alice, "alice")
        kill = await ks.kill(Scope.STRATEGY, "mm", "drill: strategy kill", timeout_s=0.2)
        assert kill.revision is not None, kill
        # n1's process died with its lease still running: it will confirm nothing
        now = time.time_ns()
        await n1.put_member(
            NodeStatus("n1", "h", 1, now, now, now + 600 * S, True, True, TradingState.HALTED)
        )
        left = await resume_left_halted(alice, ks, site.signer("bob"), "drill: end of drill")
        states = await alice.states()
    finally:
        await n1.close()
        await alice.close()
        site.stop()
    assert left == ["strategy 'mm': resume not confirmed by n1"], left
    # the resume is stored (nodes that hear it trade again): the line says who did not
    (entry, _) = states["strategy.mm"]
    assert entry is not None and entry.state is TradingState.ACTIVE


async def test_every_resume_confirmed_leaves_nothing_to_say(tmp_path: Path) -> None:
    site = Site(tmp_path / "site", ("n1",))
    await site.astart()
    alice = await site.connect("alice")
    try:
        ks = site.killswitch(alice, "alice")
        await ks.kill(Scope.STRATEGY, "mm", "drill: strategy kill", timeout_s=0.2)
        left = await resume_left_halted(alice, ks, site.signer("bob"), "drill: end of drill")
        again = await resume_left_halted(alice, ks, site.signer("bob"), "drill: end of drill")
    finally:
        await alice.close()
        site.stop()
    assert left == [] and again == []
