"""`halt_crash_loops` when a crash-looping node's halt cannot be stored.

It named every crash-looping node as halted without reading the kill's result: with the
store out of reach the halt was never sent, yet `resume` printed "n2 halted and paged",
and the node rejoined to trade after its next restart. Now only a stored halt counts,
and the page says the halt must be made by hand.
"""

from __future__ import annotations

import logging

import pytest

from knightwatch.control.fleet.pager import Pager
from knightwatch.incident.preflight import Checklist, halt_crash_loops
from knightwatch.state import Scope

from .fixtures import fleet


async def test_a_halt_that_was_not_stored_is_not_reported_as_halted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = await fleet("n1", "n2")
    ks = await f.killswitch()
    await ks.start()
    checklist = Checklist(Scope.FLEET, "fleet", (), ("n1",), crash_looping=("n2",))
    f.fabric.reachable = False
    try:
        with caplog.at_level(logging.CRITICAL):
            halted = await halt_crash_loops(checklist, ks, Pager(), f.clock)
    finally:
        f.fabric.reachable = True
    assert halted == []
    pages = [r.getMessage() for r in caplog.records if "rule=crash_loop" in r.getMessage()]
    assert len(pages) == 1 and "NOT sent" in pages[0] and "halt it by hand" in pages[0], pages
    await f.stop()
