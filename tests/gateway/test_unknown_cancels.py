"""A client spraying cancels for orders that do not exist halts the node.

The gateway forwards a cancel naming an order it does not hold to the venue (the venue
decides: "unknown order"). Before, such cancels were counted nowhere: the cancel-to-fill
ratio counts only the cancels the venue confirmed, so a strategy stuck in a cancel loop
flooded the venue and nothing noticed. Now the gateway tells the Guard of every cancel
it forwards (`Guard.on_cancel_request`); past `max_unknown_cancels_per_s` the node halts,
new orders are refused naming the count and the limit, and cancels still go out. Real
QuickFIX sessions.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from knightwatch.gateway import fields as F
from knightwatch.state import Scope, TradingState

from .conftest import LIMITS, Rig, eventually
from .test_gateway import BUY, below, rest

LIMIT = 2
SPRAY = 40
"""Far more than the limit: every one of them arriving over a second apart in pairs would
take the loopback sessions over 20 s, so the halt does not hang on the machine's speed."""


def test_a_spray_of_unknown_cancels_halts_the_node_and_cancels_still_go_out(
    rig_factory: Callable[..., Rig],
) -> None:
    limits = msgspec.structs.replace(LIMITS, max_unknown_cancels_per_s=LIMIT)
    rig = rig_factory(limits=limits).start().ready()
    rest(rig, "R1")  # a working order: its own cancel is a known one
    for i in range(SPRAY):
        rig.oms.cancel(f"X{i}", f"NOPE{i}", "L000", BUY, 100)

    def venue_answers() -> list[object]:
        return [
            r
            for r in rig.oms.received
            if r.mtype == F.CANCEL_REJECT and (r.get(F.CL_ORD_ID) or "").startswith("X")
        ]

    # every one went to the venue and came back "unknown order": none refused here
    eventually(lambda: len(venue_answers()) == SPRAY, what="every unknown cancel answered")
    assert rig.guard.trading_state(Scope.NODE, "gw") is TradingState.HALTED
    assert rig.guard.unknown_cancels == SPRAY
    rig.oms.new_order("N1", "L000", BUY, 100, below(rig, "L000"))
    refused = rig.oms.wait_report("N1", "8")
    text = refused.get(F.TEXT) or ""
    assert f"max_unknown_cancels_per_s {LIMIT}" in text, text
    assert f"{LIMIT + 1} cancel requests for orders this Guard does not hold" in text, text
    assert rig.venue.find("N1") is None
    # the stop direction is never refused: the working order is cancelled at the venue
    rig.oms.cancel("R1x", "R1", "L000", BUY, 100)
    rig.oms.wait_report("R1x", "4")
    assert rig.venue.working() == [] and rig.guard.unknown_cancels == SPRAY
    (halt,) = [e for e in rig.events("halt") if e["data"]["code"] == "unknown_cancels"]
    assert (
        halt["data"]["scope"] == "node" and "max_unknown_cancels_per_s 2" in halt["data"]["reason"]
    )


def test_cancels_of_working_orders_are_not_counted(rig_factory: Callable[..., Rig]) -> None:
    """Cancel requests for orders the Guard holds, however fast, never halt the node."""
    limits = msgspec.structs.replace(LIMITS, max_unknown_cancels_per_s=LIMIT)
    rig = rig_factory(limits=limits).start().ready()
    ids = [f"W{i}" for i in range(2 * LIMIT + 2)]
    for oid in ids:
        rest(rig, oid)
    for oid in ids:
        rig.oms.cancel(f"{oid}x", oid, "L000", BUY, 100)
    for oid in ids:
        rig.oms.wait_report(f"{oid}x", "4")
    assert rig.guard.unknown_cancels == 0
    assert rig.guard.trading_state(Scope.NODE, "gw") is TradingState.ACTIVE
