"""Small shared helpers for the control-plane tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from knightwatch.control.plane.wire import StateEntry
from knightwatch.state import Scope, TradingState

from ..identities import sign

EXPIRES_NS = 3600 * 1_000_000_000


async def eventually(
    predicate: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition"
) -> None:
    """Wait, in bounded steps, until `predicate()` holds; fail the test if it never does.

    Over a real server, process or thread, what a test asserts arrives when it arrives:
    on a loaded 2-core CI machine that can be seconds. A successful wait returns at once,
    so the generous default costs nothing when the test passes."""
    steps = int(timeout_s / 0.005)
    for _ in range(steps):
        if predicate():
            return
        await asyncio.sleep(0.005)
    assert predicate(), f"{what}: not met within {timeout_s} s"


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 15.0) -> None:
    """`eventually` for a check that must await (a read over NATS): poll it every 0.05 s
    until it holds; fail naming `what` once `timeout_s` of loop time has passed."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not met within {timeout_s} s"
        await asyncio.sleep(0.05)


def entry(
    scope: Scope = Scope.FLEET,
    key: str = "fleet",
    state: TradingState = TradingState.HALTED,
    command_id: str = "c1",
    issued_ns: int = 1,
    actor: str = "alice",
    supersedes: str = "",
) -> StateEntry:
    """A kill-switch entry signed by its actor (a resume also by a second person); a
    resume lifts `supersedes`, the halt it was decided on."""
    return sign(
        StateEntry(
            scope=scope,
            key=key,
            state=state,
            reason="test",
            actor=actor,
            command_id=command_id,
            issued_ns=issued_ns,
            expires_ns=issued_ns + EXPIRES_NS,
            supersedes=supersedes,
        )
    )
