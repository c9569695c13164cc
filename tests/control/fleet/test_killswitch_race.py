"""Kills racing on one slot, and a switch whose memory of the slot has gone stale.

The stricter kill stays in force in the store and on every node whatever order the
commands reach them in, and a later resume lifts it everywhere. A switch's remembered
write is only a guess to compare-and-swap against: it never decides alone that a
stricter kill is stored (a resume may have lifted it since, through another switch).
"""

from __future__ import annotations

import asyncio

from knightwatch.clock import SimClock
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.wire import FLEET_KEY
from knightwatch.state import Scope, TradingState

from ...identities import BOB, switch
from ..conftest import Backend
from ..fleet_fixtures import make_node
from .test_killswitch import MS, _fleet


async def test_a_drain_after_a_resume_by_another_switch_is_stored(backend: Backend) -> None:
    """The supervisor's switch halted the fleet (and remembers that write); alice and bob
    resumed it through another switch; the supervisor then drains the fleet. Before, the
    switch took its remembered halt for the slot's entry, judged a stricter kill stored and
    wrote nothing: the store kept the resume while the drain reported a (stale) revision,
    so a node started or restarted afterwards traded freely."""
    clock = SimClock(5_000 * MS)
    nodes = await _fleet(backend, clock, 1)
    supervisor = switch(await backend.plane("supervisor"), clock, "supervisor")
    operator = switch(await backend.plane("alice"), clock, "alice")
    late: NodeRuntime | None = None
    try:
        halt = await supervisor.kill(Scope.FLEET, "", "runaway", timeout_s=10.0)
        assert halt.ok, halt
        clock.advance(MS)
        resumed = await operator.resume(Scope.FLEET, "", "fixed", timeout_s=10.0, approvers=(BOB,))
        assert resumed.ok, resumed
        clock.advance(MS)
        drain = await supervisor.kill(
            Scope.FLEET, "", "drain", timeout_s=10.0, state=TradingState.REDUCING
        )
        stored, revision = await operator.plane.get_state(Scope.FLEET, FLEET_KEY)
        assert stored is not None and stored.state is TradingState.REDUCING, stored
        assert stored.command_id == drain.entry.command_id
        assert drain.ok and drain.revision == revision, drain
        late = make_node("n9", await backend.plane("n9"), clock)
        await late.start()  # reads the store of record
        assert late.guard.trading_state(Scope.FLEET) is TradingState.REDUCING
    finally:
        for node in [*nodes, *([late] if late is not None else [])]:
            await node.stop()


async def _race(
    backend: Backend, first: TradingState, clocks: tuple[int, int], together: bool
) -> None:
    base = 5_000_000 * MS
    clock = SimClock(base)
    nodes = await _fleet(backend, clock, 2)
    by_state = {
        first: switch(await backend.plane("alice"), SimClock(base + clocks[0]), "alice"),
        TradingState(3 - first): switch(
            await backend.plane("supervisor"), SimClock(base + clocks[1]), "supervisor"
        ),
    }
    late: NodeRuntime | None = None

    async def kill(state: TradingState) -> None:
        result = await by_state[state].kill(
            Scope.FLEET, "", state.name, timeout_s=10.0, state=state
        )
        assert result.ok, result

    try:
        if together:
            await asyncio.gather(kill(first), kill(TradingState(3 - first)))
        else:
            await kill(first)
            await kill(TradingState(3 - first))
        stored, _ = await by_state[first].plane.get_state(Scope.FLEET, FLEET_KEY)
        assert stored is not None and stored.state is TradingState.HALTED, stored
        late = make_node("n9", await backend.plane("n9"), clock)
        await late.start()
        everyone = [*nodes, late]
        for node in everyone:
            assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED, node.node_id
        operator = switch(await backend.plane("bob"), clock, "alice")
        resumed = await operator.resume(Scope.FLEET, "", "fixed", timeout_s=10.0, approvers=(BOB,))
        assert resumed.ok, resumed
        for node in everyone:
            assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE, node.node_id
    finally:
        for node in [*nodes, *([late] if late is not None else [])]:
            await node.stop()


async def test_a_halt_dated_before_a_stored_drain_is_stored_over_it(backend: Backend) -> None:
    """The drain (dated later) reaches the store first; the halt, dated earlier by a clock
    behind, arrives after it: the halt is stored over the drain, held by every node, and
    the resume lifts it everywhere."""
    await _race(backend, TradingState.REDUCING, (1_000 * MS, 0), together=False)


async def test_a_drain_dated_before_a_stored_halt_changes_nothing(backend: Backend) -> None:
    await _race(backend, TradingState.HALTED, (1_000 * MS, 0), together=False)


async def test_a_halt_and_a_drain_issued_together_leave_the_halt(backend: Backend) -> None:
    for clocks in ((0, 1_000 * MS), (1_000 * MS, 0), (0, 0)):
        await _race(backend, TradingState.HALTED, clocks, together=True)
