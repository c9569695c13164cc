"""Each of the Guard's own halts of a slot is stored in its turn, until each is resumed.

The Guard keeps one latch per source (an operator's kill, a fill mismatch, a loss stop),
and the node stores the automatic ones so status shows them and `knightwatch resume` can
lift them. It kept one automatic halt per slot: a second source's halt replaced the first
in what it meant to store, so once the one stored was resumed, the other's latch was held
by the Guard alone. The node blocked every order for good while the store read ACTIVE
(`knightwatch resume`: nothing to resume) until it restarted.
"""

from __future__ import annotations

from knightwatch.clock import SimClock
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryFabric
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Fill, Side
from knightwatch.state import Scope, TradingState

from ...identities import BOB, signer, switch, trust
from ..fleet_fixtures import POLICY, OrderIds, S, mismatch, plane_on, relay_on, settle
from ..helpers import until


async def test_a_second_automatic_halt_is_stored_once_the_first_is_resumed() -> None:
    fabric = MemoryFabric()
    clock = SimClock(1_000 * S)
    guard = Guard(
        Limits(
            lease_timeout_s=POLICY.lease_timeout_s, max_orders_per_s_symbol=None, max_loss=100.0
        ),
        node="n1",
        clock=clock,
    )
    guard.on_price("AAPL", 100.0)
    guard.arm("test")
    node = NodeRuntime(
        guard,
        await plane_on(fabric),
        clock=clock,
        policy=POLICY,
        trust=trust(),
        signer=signer("n1"),
    )
    await node.start()
    await relay_on(fabric, clock)
    ops = await plane_on(fabric)
    ks = switch(ops, clock, "alice")
    try:
        ids = OrderIds("o")
        first, second = ids.order(), ids.order()
        assert node.check(first).accepted and node.check(second).accepted
        await ks.kill(Scope.NODE, "n1", "look at it", timeout_s=0.2)
        node.on_fill(Fill(second.id, "AAPL", Side.BUY, 10, 100.0))
        node.on_price("AAPL", 50.0)  # a loss of 500 over max_loss 100: the Guard halts
        await mismatch(node, ids, first.id)  # and a fill that contradicts its order

        async def stored(source: RejectReason) -> bool:
            entry, _ = await ops.get_state(Scope.NODE, "n1")
            return (
                entry is not None and entry.state is TradingState.HALTED and entry.source is source
            )

        clock.advance(S)
        await ks.resume(Scope.NODE, "n1", "kill done", approvers=(BOB,))
        await settle()
        entry, _ = await ops.get_state(Scope.NODE, "n1")
        assert entry is not None and entry.state is TradingState.HALTED
        one = entry.source
        assert one in (RejectReason.LOSS_LIMIT, RejectReason.FILL_MISMATCH)
        other = (
            RejectReason.FILL_MISMATCH
            if one is RejectReason.LOSS_LIMIT
            else RejectReason.LOSS_LIMIT
        )
        clock.advance(S)
        await ks.resume(Scope.NODE, "n1", f"{one.value} looked at", approvers=(BOB,))
        assert node.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED
        await until(lambda: stored(other), f"the Guard's {other.value} halt stored")
        clock.advance(S)
        await ks.resume(Scope.NODE, "n1", f"{other.value} looked at", approvers=(BOB,))
        await settle()
        assert node.guard.trading_state(Scope.NODE, "n1") is TradingState.ACTIVE
    finally:
        await node.stop()
