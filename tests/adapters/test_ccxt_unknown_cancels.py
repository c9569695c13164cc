"""The ccxt adapter tells the Guard of every cancel it sends by venue id.

A loop cancelling order ids that do not exist (filled already, never placed) flooded the
venue with requests it answered "order not found", and nothing counted them: the Guard's
cancel-to-fill ratio counts only cancels the venue confirmed. Each is now counted
(`Guard.on_cancel_request`), and more than `max_unknown_cancels_per_s` in a second halt
the node, the cancels themselves still sent. Against the paper venues over real HTTP, as
test_ccxt.py.
"""

from __future__ import annotations

import asyncio

import ccxt
import msgspec
import pytest

from knightwatch.adapters.ccxt import GuardRefused
from knightwatch.decision import RejectReason as R

from .test_ccxt import World, run
from .test_ccxt import world as world

LIMIT = 3


async def test_cancels_of_orders_not_held_are_counted_and_a_storm_halts_the_node(
    world: World,
) -> None:
    ex, sym, venue = world.ex, world.symbol, world.venue
    ex.guard.set_limits(
        msgspec.structs.replace(ex.guard.limits, max_unknown_cancels_per_s=LIMIT, version="t")
    )
    resting = await run(ex.create_order(sym, "limit", "buy", 0.2, 59_000))
    working = await run(ex.create_order(sym, "limit", "buy", 0.2, 59_000))
    await run(ex.cancel_order(resting["id"], sym))  # an order held here: not counted
    assert ex.guard.unknown_cancels == 0
    for i in range(LIMIT + 1):  # a loop cancelling ids the venue never issued
        with pytest.raises(ccxt.OrderNotFound):  # each sent: the venue answers it
            await run(ex.cancel_order(f"no-such-order-{i}", sym))
    assert ex.guard.unknown_cancels == LIMIT + 1
    (halt,) = ex.guard.latched(R.UNKNOWN_CANCELS).values()
    assert f"> max_unknown_cancels_per_s {LIMIT}" in halt.reason, halt
    # new orders are refused; the halt's own sweep cancels the order still working (the
    # stop direction: a halted node's orders are cancelled, its cancels never counted
    # against it)
    with pytest.raises(GuardRefused) as refused:
        await run(ex.create_order(sym, "limit", "buy", 0.1, 59_000))
    assert refused.value.decision.reason is R.UNKNOWN_CANCELS
    for _ in range(500):  # up to 10 s on a loaded machine
        if venue.orders[working["id"]].status == "canceled":
            break
        await asyncio.sleep(0.02)
    assert venue.orders[working["id"]].status == "canceled"
    assert ex.guard.unknown_cancels == LIMIT + 1
