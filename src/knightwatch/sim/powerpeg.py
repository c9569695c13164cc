"""LEGACY SCENARIO FIXTURE: Power Peg, the retired algorithm that woke up on 2012-08-01.

This is not a trading algorithm anyone should run. It exists only so the
replay can reproduce the mechanism in the SEC order (paras. 13-16): Knight
stopped using Power Peg in 2003 but left it callable; in 2005 the function
that tracked cumulative executed shares, and stopped child routing once the
parent was filled, was moved to an earlier point in the code, so Power Peg
no longer saw fills. It therefore sends a child for its parent on every
update of the quote it is pegged to, for as long as it runs.

What Power Peg was *designed* to do is not in the SEC order; the fixture
models only what the order states: children in rapid sequence, without regard
to executions already received.
"""

from __future__ import annotations

from knightwatch.sim.router import RoutedParent


class PowerPeg:
    __slots__ = ("name",)
    resting = False

    def __init__(self) -> None:
        self.name = "power_peg"

    def wants(self, p: RoutedParent, due: int) -> int:
        # No fill check: p.filled is never read (the 2005 move of the cumulative-quantity function).
        return due
