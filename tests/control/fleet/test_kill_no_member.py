"""A kill that reaches no one is said at once, never read as a confirmed stop.

`kill --node n9` when the runaway is n7 (a typo) targeted n9 alone: the command waited its
whole timeout (up to 300 s) for a node that does not exist and then said only "not
confirmed: n9", as for a frozen node, while n7 traded on. A kill in a fleet with no
members (a control plane with no nodes: the wrong one?) was `ok` with nothing confirmed.
Now the result says no node in the kill's scope received it, names the live nodes, and a
node kill naming no member answers without waiting. The kill is still stored and
announced: a node of that id that joins later is halted.
"""

from __future__ import annotations

import asyncio

from knightwatch.clock import SystemClock
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.state import Scope, TradingState

from ...identities import BOB, switch
from ..conftest import Backend
from ..fleet_fixtures import make_node
from ..helpers import eventually, until

WAIT_S = 12.0
"""A kill's confirmation wait: what a kill naming no member used to sit through."""


async def test_a_node_kill_naming_no_member_answers_at_once_naming_the_live_nodes(
    backend: Backend,
) -> None:
    clock = SystemClock()
    nodes: list[NodeRuntime] = []
    for name in ("n1", "n2"):
        node = make_node(name, await backend.plane(name), clock)
        await node.start()
        nodes.append(node)
    operator = switch(await backend.plane("alice"), clock)
    try:

        async def both_live() -> bool:
            return await operator.live_nodes() == ["n1", "n2"]

        await until(both_live, "n1 and n2 live in the membership")
        loop = asyncio.get_running_loop()
        began = loop.time()
        result = await operator.kill(Scope.NODE, "n9", "runaway (meant n7)", timeout_s=WAIT_S)
        took = loop.time() - began
        assert took < WAIT_S / 2, f"a kill naming no member waited {took:.1f} s for it"
        assert result.missing == ["n9"] and not result.ok
        assert result.not_member("n9") and result.reached_none and result.missed_its_node
        assert result.live == ["n1", "n2"] and result.revision is not None
        # the stop is stored all the same: a node of that id that joins is halted
        late = make_node("n9", await backend.plane("n9"), clock)
        await late.start()
        nodes.append(late)
        await eventually(
            lambda: late.guard.trading_state(Scope.NODE, "n9") is TradingState.HALTED,
            what="n9 halted when it joins",
        )
        # a member's node kill is no such case
        mine = await operator.kill(Scope.NODE, "n1", "stop n1", timeout_s=WAIT_S)
        assert mine.ok and not mine.reached_none and not mine.not_member("n1")
    finally:
        for node in nodes:
            await node.stop()


async def test_a_kill_in_a_fleet_with_no_members_reached_no_one(backend: Backend) -> None:
    operator = switch(await backend.plane("alice"), SystemClock())
    for scope, key in ((Scope.FLEET, ""), (Scope.STRATEGY, "peg"), (Scope.SYMBOL, "IBM")):
        result = await operator.kill(scope, key, "no one here", timeout_s=WAIT_S)
        assert result.targets == [] and result.revision is not None, (scope, result)
        assert result.reached_none and result.live == [], (scope, result)
        assert result.missed_its_node is (scope is Scope.NODE), (scope, result)


async def test_a_resume_is_never_read_as_a_kill_that_reached_no_one(backend: Backend) -> None:
    operator = switch(await backend.plane("alice"), SystemClock())
    await operator.kill(Scope.STRATEGY, "peg", "stop", timeout_s=WAIT_S)
    resumed = await operator.resume(Scope.STRATEGY, "peg", "fixed", WAIT_S, approvers=(BOB,))
    assert resumed.revision is not None and not resumed.reached_none
