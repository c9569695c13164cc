"""The exit model: what the positions left at the stop are really worth.

Knight's loss was realised by selling the whole basket to one buyer after the
close (press reports cited in docs/replay.md), not by marking it to the prices its
own buying had pushed up. Marking to those prices shows a *profit* (the
average fill of a metaorder sits below its peak), which is the pitfall this
module exists to avoid: every loss figure in the replay is after an exit.

Two exits, both after the book has fully relaxed to its permanent impact:
``block`` sells to one buyer at a discount of ``discount_y * sigma *
sqrt(|Q| / adv)`` (the *history* calibration, discount_y = 3.2), at most the whole
price for a long (a block buyer pays at worst nothing: uncapped, a thin market's
discount of 3.6 sold longs at a negative price and the loss exceeded the cash spent);
``metaorder`` walks the relaxed book back with a second metaorder of the same size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from knightwatch.sim.scenario import Exit
from knightwatch.sim.venue import Market, impact_unit


def exit_value(market: Market, positions: Sequence[int], exit: Exit) -> float:
    """Cash the positions bring in when unwound (negative to buy back shorts); no side effects."""
    total = 0.0
    for i, q in enumerate(positions):
        if q == 0:
            continue
        book = market.books[i]
        if exit.kind == "block":
            delta = exit.discount_y * impact_unit(market.symbols[i], q)
            if q > 0:
                delta = min(delta, 1.0)  # sold for nothing at worst, never paid to take them
            total += q * book.settled_mid() * (1.0 - math.copysign(delta, q))
        else:
            notional = book.quote(q < 0, abs(q), book.permanent_net())
            total += notional if q > 0 else -notional
    return total


def marked_value(market: Market, positions: Sequence[int]) -> float:
    """The pitfall valuation: positions at the current, impacted quotes, never sold."""
    return sum(q * market.books[i].mid() for i, q in enumerate(positions) if q)
