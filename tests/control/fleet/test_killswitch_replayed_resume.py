"""A drain over a stored resume that nodes do not trust keeps the halt they hold.

A resume is trusted only where the slot's history shows it stored right over the halt it
lifts (`control.plane.history`); a verified resume put back later over a newer kill (a
replay by anyone with kill-state write rights) is a halt of its slot on every node. The
kill switch judged such an entry by its signatures alone, so a drain (one signature: the
supervisor's or an operator's) was stored over it as over a lifted slot: a node started
afterwards traded reduce-only where every running node held the slot halted.
"""

from __future__ import annotations

from knightwatch.clock import SimClock
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.wire import FLEET_KEY
from knightwatch.state import Scope, TradingState

from ...identities import BOB, switch
from ..conftest import Backend
from ..fleet_fixtures import make_node
from ..helpers import eventually
from .test_killswitch import MS, _fleet


async def test_a_drain_over_a_replayed_resume_keeps_the_halt_every_node_holds(
    backend: Backend,
) -> None:
    clock = SimClock(5_000 * MS)
    nodes = await _fleet(backend, clock, 2)
    writer = await backend.plane("alice")
    operator = switch(await backend.plane("alice"), clock, "alice")
    supervisor = switch(await backend.plane("supervisor"), clock, "supervisor")
    targets = ["n1", "n2"]
    late: NodeRuntime | None = None
    try:
        halt = await operator.kill(Scope.FLEET, "", "stop", timeout_s=10.0, targets=targets)
        assert halt.ok, halt
        clock.advance(MS)
        resumed = await operator.resume(Scope.FLEET, "", "fixed", timeout_s=10.0, approvers=(BOB,))
        assert resumed.ok, resumed
        clock.advance(MS)
        again = await operator.kill(Scope.FLEET, "", "again", timeout_s=10.0, targets=targets)
        assert again.ok, again
        # the old resume put back over the new kill: it verifies, and lifts nothing
        await writer.put_state(resumed.entry)
        await eventually(
            lambda: all(n.guard.trading_state(Scope.FLEET) is TradingState.HALTED for n in nodes)
        )
        assert not (await operator.current(Scope.FLEET, FLEET_KEY))[2]
        clock.advance(MS)
        drain = await supervisor.kill(
            Scope.FLEET, "", "drain", timeout_s=10.0, state=TradingState.REDUCING,
            targets=targets,
        )  # fmt: skip
        assert drain.ok, drain
        # nothing written over it: the slot reads as the halt every node holds
        stored, _, trusted = await operator.current(Scope.FLEET, FLEET_KEY)
        assert stored is not None and stored.command_id != drain.entry.command_id, stored
        assert not trusted
        late = make_node("n3", await backend.plane("n3"), clock)
        await late.start()  # reads the store of record
        assert late.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        for node in nodes:
            assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        # a resume still lifts it, by two people
        lifted = await operator.resume(Scope.FLEET, "", "fixed", timeout_s=10.0, approvers=(BOB,))
        assert lifted.ok, lifted
        for node in [*nodes, late]:
            assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    finally:
        for node in [*nodes, *([late] if late is not None else [])]:
            await node.stop()
