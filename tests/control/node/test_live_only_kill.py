"""A kill a node heard on the fast path alone is lifted only by a resume that names it.

A kill announced but not (yet) stored (its store write failed, or is still on its way to
be re-dated past the slot) is held by every node that heard it, even when its issuer's
clock dated it before the resume the store holds. Heard live, that resume is refused as
stale; read from the store at the node's next resync (any reconnect), it lifted the kill
because it ordered after it by its signers' clocks, though it never named it. A resume
that lifts a halt the store held before it (a node away through kills and resumes) still
lifts it.
"""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.clock import SimClock
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.control.plane.wire import StateEntry
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import TrustReason

from ...identities import sign
from ..fleet_fixtures import S, make_node, plane_on
from ..helpers import entry


def resume(
    scope: Scope, key: str, command_id: str, issued_ns: int, lifts: str, on: int
) -> StateEntry:
    """alice's resume, approved by bob, of `lifts`, decided on revision `on`."""
    unsigned = entry(scope, key, TradingState.ACTIVE, command_id, issued_ns, supersedes=lifts)
    return sign(msgspec.structs.replace(unsigned, decided_on=on, proof=None))


async def reconnect(fabric: MemoryFabric, node: NodeRuntime) -> None:
    """A connection blip: the node drops its lease and resyncs from the store."""
    await fabric.set_reachable(False)
    await fabric.set_reachable(True)
    await node.heartbeat_once()
    assert node.admitted


async def kill_and_resume(ops: ControlPlane, scope: Scope, key: str) -> int:
    """alice's kill of the slot and its resume (issued at 300), stored one over the other."""
    revision = await ops.put_state(entry(scope, key, command_id="k1", issued_ns=100))
    return await ops.put_state(
        resume(scope, key, "r1", 300, "k1", revision), expected_revision=revision
    )


@pytest.mark.parametrize(("scope", "key"), [(Scope.FLEET, "fleet"), (Scope.STRATEGY, "mm")])
async def test_a_kill_heard_live_only_stays_through_a_resync_whatever_its_date(
    scope: Scope, key: str
) -> None:
    fabric = MemoryFabric()
    node = make_node("n1", await plane_on(fabric), SimClock(1_000 * S))
    await node.start()
    ops = await plane_on(fabric)
    try:
        await kill_and_resume(ops, scope, key)
        assert node.guard.trading_state(scope, key) is TradingState.ACTIVE
        # the supervisor kills again; its clock lags the operators' (dated before r1),
        # and the kill reaches the nodes on the fast path only
        await ops.announce_state(
            entry(scope, key, command_id="k2", issued_ns=200, actor="supervisor")
        )
        assert node.guard.trading_state(scope, key) is TradingState.HALTED
        assert node.confirmed[-1].command_id == "k2"
        await reconnect(fabric, node)
        assert node.guard.trading_state(scope, key) is TradingState.HALTED, "k2 was lifted"
        assert node.refused[TrustReason.STALE] == 1
        assert "k2" in node.last_refusal
    finally:
        await node.stop()


async def test_a_resume_lifts_a_halt_the_store_held_before_it_after_a_long_absence() -> None:
    """n1 holds k1 and is away while the store goes k1, r1, k3, r3: r3 names k3, not k1,
    but the store held k1 before it, so n1 trades again after its resync."""
    fabric = MemoryFabric()
    node = make_node("n1", await plane_on(fabric), SimClock(1_000 * S))
    await node.start()
    ops = await plane_on(fabric)
    try:
        revision = await ops.put_state(entry(command_id="k1", issued_ns=100))
        assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        await fabric.set_reachable(False)
        fabric.reachable = True  # the store moves on, the node's connection stays down
        away = await plane_on(fabric)
        revision = await away.put_state(
            resume(Scope.FLEET, "fleet", "r1", 200, "k1", revision), expected_revision=revision
        )
        revision = await away.put_state(
            entry(command_id="k3", issued_ns=300), expected_revision=revision
        )
        await away.put_state(
            resume(Scope.FLEET, "fleet", "r3", 400, "k3", revision), expected_revision=revision
        )
        fabric.reachable = False
        await reconnect(fabric, node)
        assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE, node.last_refusal
        assert not node.refused
    finally:
        await node.stop()


class _KillArrivesWhileReading(MemoryControlPlane):
    """A node's plane that hears nothing by itself (the test hands it what arrives) and,
    while the node reads the slot's stored state, hands it `kill` first: on NATS the read
    waits for the server, and any message may be handled meanwhile."""

    def __init__(self, fabric: MemoryFabric) -> None:
        super().__init__(fabric)
        self.node: NodeRuntime | None = None
        self.kill: StateEntry | None = None

    async def subscribe_states(self, handler: object) -> None:
        return None

    async def get_state(self, scope: Scope, key: str) -> tuple[StateEntry | None, int]:
        kill, self.kill = self.kill, None
        if kill is not None and self.node is not None:
            await self.node._on_state(kill)
        return await super().get_state(scope, key)


async def test_a_kill_latched_while_a_live_resume_reads_the_store_is_not_lifted_by_it() -> None:
    """n1 never held the fleet slot when alice's resume r1 (of k1) reaches it: it reads the
    store to see r1 lifts a halt there. Meanwhile the supervisor's kill k2 arrives (dated
    before r1 by a lagging clock, on the fast path) and is latched and confirmed. r1 never
    named k2: it lifted it all the same, once the reads were done."""
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    now = clock.time_ns()
    plane = _KillArrivesWhileReading(fabric)
    await plane.connect()
    node = make_node("n1", plane, clock)
    plane.node = node
    await node.start()
    ops = await plane_on(fabric)
    try:
        revision = await ops.put_state(entry(command_id="k1", issued_ns=now - 30 * S))
        r1 = resume(Scope.FLEET, "fleet", "r1", now - 10 * S, "k1", revision)
        await ops.put_state(r1, expected_revision=revision)
        plane.kill = entry(command_id="k2", issued_ns=now - 20 * S, actor="supervisor")
        await node._on_state(r1)
        assert node.confirmed[-1].command_id == "k2"
        assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED, "k2 was lifted"
        assert node.refused[TrustReason.STALE] == 1
        assert "k2" in node.last_refusal
    finally:
        await node.stop()


async def test_a_resume_lifts_a_halt_held_since_before_the_stores_whole_kept_history() -> None:
    """n1 holds k1 and is away while the store goes through nine kills and resumes: its
    kept history (the last 16 writes) no longer reaches k1, but its oldest kept write was
    stored after n1 latched k1, so the store went on through k1. Before, n1 refused the
    last resume as stale and stayed halted while the store read ACTIVE (nothing to resume)
    until it restarted, which judged k1 over."""
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    node = make_node("n1", await plane_on(fabric), clock)
    await node.start()
    ops = await plane_on(fabric)
    try:
        now = clock.time_ns()
        revision = await ops.put_state(entry(command_id="k1", issued_ns=now))
        assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        await fabric.set_reachable(False)
        fabric.reachable = True  # the store moves on, the node's connection stays down
        away = await plane_on(fabric)
        kill = "k1"
        for i in range(1, 10):
            revision = await away.put_state(
                resume(Scope.FLEET, "fleet", f"r{i}", now + 2 * i * S, kill, revision),
                expected_revision=revision,
            )
            kill = f"k{i + 1}"
            revision = await away.put_state(
                entry(command_id=kill, issued_ns=now + (2 * i + 1) * S),
                expected_revision=revision,
            )
        await away.put_state(
            resume(Scope.FLEET, "fleet", "r10", now + 30 * S, kill, revision),
            expected_revision=revision,
        )
        assert "k1" not in {
            e.command_id
            for e, _ in await away.state_history(Scope.FLEET, "fleet", revision + 1)
            if e is not None
        }
        fabric.reachable = False
        clock.advance(40 * S)
        await reconnect(fabric, node)
        assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE, node.last_refusal
        assert not node.refused
    finally:
        await node.stop()
