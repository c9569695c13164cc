"""A command's reason is bounded: a kill whose reason cannot fit one message still stops.

An entry carries its reason twice (a field and its signed envelope) in one NATS message.
Before the bound, a kill whose reason was a pasted log (hundreds of kilobytes) was neither
announced nor stored: every node kept trading while the command retried its store write
and then reported the kill as sent. A kill goes out with the reason cut; a resume, not a
stop, is refused in one line before anything is signed or sent.
"""

from __future__ import annotations

import pytest

from knightwatch.clock import SimClock
from knightwatch.control.fleet.killswitch import REASON_MAX_CHARS, KillSwitchError
from knightwatch.control.plane.wire import FLEET_KEY
from knightwatch.state import Scope, TradingState

from ...identities import BOB, switch
from ..conftest import Backend
from .test_killswitch import MS, _fleet


@pytest.mark.parametrize("state", [TradingState.HALTED, TradingState.REDUCING])
@pytest.mark.parametrize("length", [REASON_MAX_CHARS + 1, 600_000, 3_000_000])
async def test_a_kill_with_a_reason_too_long_for_one_message_still_stops(
    backend: Backend, state: TradingState, length: int
) -> None:
    clock = SimClock(5_000 * MS)
    nodes = await _fleet(backend, clock, 2)
    operator = switch(await backend.plane("alice"), clock, "alice")
    try:
        reason = "é" * length  # two bytes each in the message
        result = await operator.kill(Scope.FLEET, "", reason, timeout_s=10.0, state=state)
        assert result.ok and result.sent, result.durable_error or result.missing
        for node in nodes:
            assert node.guard.trading_state(Scope.FLEET) is state, node.node_id
        stored, revision = await operator.plane.get_state(Scope.FLEET, FLEET_KEY)
        assert stored is not None and revision == result.revision
        assert stored.command_id == result.entry.command_id and stored.state is state
        assert len(stored.reason) == REASON_MAX_CHARS
        assert stored.reason.startswith("é" * 100)
        assert stored.reason.endswith(f"(cut from {length} characters)")
    finally:
        for node in nodes:
            await node.stop()


async def test_a_resume_with_a_reason_too_long_is_refused_in_one_line(backend: Backend) -> None:
    clock = SimClock(5_000 * MS)
    nodes = await _fleet(backend, clock, 1)
    operator = switch(await backend.plane("alice"), clock, "alice")
    try:
        halt = await operator.kill(Scope.FLEET, "", "stop", timeout_s=10.0)
        assert halt.ok, halt
        _, before = await operator.plane.get_state(Scope.FLEET, FLEET_KEY)
        with pytest.raises(KillSwitchError) as refused:
            await operator.resume(
                Scope.FLEET, "", "x" * (REASON_MAX_CHARS + 1), timeout_s=10.0, approvers=(BOB,)
            )
        assert str(refused.value) == (
            f"reason: must be at most {REASON_MAX_CHARS} characters (got {REASON_MAX_CHARS + 1})"
        )
        stored, after = await operator.plane.get_state(Scope.FLEET, FLEET_KEY)
        assert after == before and stored is not None and stored.state is TradingState.HALTED
        assert nodes[0].guard.trading_state(Scope.FLEET) is TradingState.HALTED
        ok = await operator.resume(Scope.FLEET, "", "y" * REASON_MAX_CHARS, timeout_s=10.0,
                                   approvers=(BOB,))  # fmt: skip
        assert ok.ok, ok
    finally:
        for node in nodes:
            await node.stop()
