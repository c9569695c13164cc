"""The kill switch's confirmation accounting, on both backends (NATS: a real server).

A kill is `ok` only when every node it had to stop says it stopped: a confirmation that
echoes the command id but reports another scope or a state milder than the kill is no
proof, and a membership that cannot be read leaves the nodes never heard from unawaited,
which is no proof either.
"""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.killswitch import KillSwitch, confirmation_problem
from knightwatch.control.plane.protocol import ControlPlane, ControlPlaneUnavailable
from knightwatch.control.plane.wire import Confirmation, NodeStatus, StateEntry
from knightwatch.state import Scope, TradingState

from ...identities import signer, switch, trust
from ..conftest import Backend
from ..fleet_fixtures import make_node
from ..helpers import entry

_LIES = {
    "active": lambda e: {"state": TradingState.ACTIVE},
    "milder": lambda e: {"state": TradingState.REDUCING},
    "other key": lambda e: {"key": "s2"},
    "other scope": lambda e: {"scope": Scope.SYMBOL},
}


@pytest.mark.parametrize("lie", sorted(_LIES))
async def test_a_confirmation_that_is_not_of_the_kill_is_not_counted(
    backend: Backend, lie: str
) -> None:
    """n2 echoes the kill's command id but says it is ACTIVE (or REDUCING for a halt, or
    names another scope or key): it was counted as confirmed and the kill reported `ok`
    while n2 may be trading. It is named as not confirmed; n1, which did stop, is counted."""
    clock = SystemClock()
    n1 = make_node("n1", await backend.plane("n1"), clock)
    await n1.start()
    rogue = await backend.plane("n2")

    async def answer(e: StateEntry) -> None:
        fields = {"scope": e.scope, "key": e.key, "state": e.state, **_LIES[lie](e)}
        await rogue.confirm(Confirmation(e.command_id, "n2", applied_ns=clock.time_ns(), **fields))

    await rogue.subscribe_states(answer)
    operator = switch(await backend.plane("alice"), clock, "alice")
    try:
        # n1 must confirm within it: over NATS on a loaded machine, up to seconds
        result = await operator.kill(
            Scope.STRATEGY, "s1", "stop", timeout_s=3.0, targets=["n1", "n2"]
        )
    finally:
        await n1.stop()
    assert "n1" in result.latencies_ms
    assert result.missing == ["n2"] and not result.ok, result


def test_what_a_confirmation_must_match() -> None:
    halt = entry(state=TradingState.HALTED, command_id="k")
    drain = entry(state=TradingState.REDUCING, command_id="d")
    resume = entry(state=TradingState.ACTIVE, command_id="r", supersedes="k")

    def c(e: StateEntry, state: TradingState, **kw: object) -> Confirmation:
        base = Confirmation(e.command_id, "n1", e.scope, e.key, state, 1)
        return msgspec.structs.replace(base, **kw)

    assert confirmation_problem(halt, c(halt, TradingState.HALTED)) == ""
    assert confirmation_problem(drain, c(drain, TradingState.HALTED)) == ""  # stricter holds
    assert confirmation_problem(resume, c(resume, TradingState.ACTIVE)) == ""
    assert confirmation_problem(resume, c(resume, TradingState.HALTED)) == ""  # safe side
    assert "reports ACTIVE for a HALTED command" in confirmation_problem(
        halt, c(halt, TradingState.ACTIVE)
    )
    assert "reports REDUCING for a HALTED command" in confirmation_problem(
        halt, c(halt, TradingState.REDUCING)
    )
    assert "names node 'n1'" in confirmation_problem(
        halt, c(halt, TradingState.HALTED, scope=Scope.NODE, key="n1")
    )


class _MembersDown:
    """A plane whose membership store cannot be read (its bucket unavailable, a permission
    gone), everything else working: the kill state, announcements, confirmations."""

    def __init__(self, plane: ControlPlane, down: list[bool]) -> None:
        self._plane = plane
        self._down = down

    def __getattr__(self, name: str) -> object:
        return getattr(self._plane, name)

    async def members(self) -> list[NodeStatus]:
        if self._down[0]:
            raise ControlPlaneUnavailable("membership bucket unavailable")
        return await self._plane.members()


@pytest.mark.parametrize("scope", [Scope.FLEET, Scope.STRATEGY, Scope.SYMBOL])
async def test_a_kill_whose_membership_cannot_be_read_is_not_ok(
    backend: Backend, scope: Scope
) -> None:
    """A fresh switch (a CLI's, the console's) has heard no heartbeat yet, and the membership
    store does not answer: it targeted nobody, waited for nobody, and reported `ok` ("no
    node was targeted") while n1 and n2 were never awaited. It is not `ok` and says why."""
    clock = SystemClock()
    nodes = [make_node(n, await backend.plane(n), clock) for n in ("n1", "n2")]
    for node in nodes:
        await node.start()
    down = [True]
    plane = _MembersDown(await backend.plane("alice"), down)
    operator = KillSwitch(plane, clock, signer("alice"), trust())  # type: ignore[arg-type]
    try:
        result = await operator.kill(scope, "" if scope is Scope.FLEET else "s1", "stop",
                                     timeout_s=0.3)  # fmt: skip
        assert result.revision is not None, result.durable_error
        assert not result.ok, result
        assert "membership bucket unavailable" in result.members_error
        # readable again by the end of the wait: the members it names are judged then
        down[0] = False  # both must confirm within the wait: seconds, loaded, over NATS
        again = await operator.kill(scope, "" if scope is Scope.FLEET else "s1", "stop",
                                    timeout_s=3.0)  # fmt: skip
        assert again.members_error == "" and again.ok, again
    finally:
        for node in nodes:
            await node.stop()
