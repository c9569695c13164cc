"""A Guard halt whose stored entry does not verify still needs its cause acknowledged.

The preflight judges the kill state as nodes do: an entry that does not verify
(unsigned, or signed by a key the roster does not hold) is held as a halt of its
slot by `trust:unverified`. The `cause` item read that stand-in's actor and said
"operator or supervisor halt: nothing to acknowledge", so a slot the Guard had
halted on a loss limit resumed with nothing reconciled, while the same halt stored
properly signed needed `--ack loss_limit`. What the stored entry claims can only
add a check: its claimed Guard code is asked for.
"""

from __future__ import annotations

import pytest

from knightwatch.control.plane.wire import StateEntry
from knightwatch.incident.preflight import PreflightConfig, run_preflight
from knightwatch.release.keys import SigningKey
from knightwatch.state import Scope, TradingState

from ..identities import trust
from .fixtures import fleet
from .test_preflight import admitted, item, only_failure

CFG = PreflightConfig(listen_s=0.2)


@pytest.mark.parametrize("proof", ["unsigned", "unknown key"])
async def test_an_unverified_guard_halt_still_needs_its_cause_acknowledged(proof: str) -> None:
    f = await fleet("n1", release="r1")
    plane = await f.plane()
    await admitted(plane, f)
    halt = StateEntry(
        Scope.NODE, "n1", TradingState.HALTED, "loss", "guard:loss_limit", "c1", f.clock.time_ns()
    )
    if proof == "unknown key":
        halt = halt.signed(SigningKey.generate())
    await plane.put_state(halt)
    checklist = await run_preflight(
        plane, Scope.NODE, "n1", clock=f.clock, config=CFG, trust=trust()
    )
    assert only_failure(checklist) == "cause", checklist.summary()
    detail = item(checklist, "cause")[1]
    assert "does not verify" in detail and "--ack loss_limit" in detail, detail
    acked = await run_preflight(
        plane,
        Scope.NODE,
        "n1",
        clock=f.clock,
        config=CFG,
        acknowledged={"loss_limit"},
        trust=trust(),
    )
    assert acked.passed, acked.summary()
    await f.stop()
