"""The NautilusTrader adapter tells the Guard of every cancel a strategy sends.

A loop cancelling orders that do not exist (its own ids made up, orders long ended) reached
the venue as fast as it ran, and nothing counted it: the Guard's cancel-to-fill ratio
counts only the cancels the venue confirmed. Each `CancelOrder` (and each of a
`BatchCancelOrders`) passing `ExecEngine.execute` is now counted when it names no order
working here (`Guard.on_cancel_request`); more than `max_unknown_cancels_per_s` in a second
halt the node, and the cancels still pass.
"""

from __future__ import annotations

from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import CancelOrder
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.identifiers import ClientOrderId

from knightwatch import RejectReason, Scope, TradingState
from knightwatch.adapters.nautilus import ENDPOINT, install

from .nt_world import AUDUSD, Scripted, open_limits, quotes, world

LIMIT = 3


def test_a_loop_cancelling_orders_that_do_not_exist_halts_the_node() -> None:
    with world() as (eng, s):

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 1:
                st.buy("10000", "0.69000")  # rests, far below the market
            elif n == 2:
                (order,) = st.cache.orders_open()
                st.cancel_order(order)  # an order held here: passes, never counted
            elif 3 <= n <= 3 + LIMIT:  # made-up ids, as fast as the strategy runs
                st._msgbus.send(
                    ENDPOINT,
                    CancelOrder(
                        trader_id=st.trader_id,
                        strategy_id=st.id,
                        instrument_id=AUDUSD.id,
                        client_order_id=ClientOrderId(f"O-NOPE-{n}"),
                        venue_order_id=None,
                        command_id=UUID4(),
                        ts_init=tick.ts_init,
                    ),
                )
            elif n == 8:
                st.buy("10000", "0.69000")  # refused: the node is halted

        s.script = script
        eng.add_data(quotes(AUDUSD, 10, 0.7, 0.0001))
        kw = install(eng, limits=open_limits(max_unknown_cancels_per_s=LIMIT))
        eng.run()
        assert kw.guard.unknown_cancels == LIMIT + 1
        halt = kw.guard.latched(RejectReason.UNKNOWN_CANCELS)[(Scope.NODE, kw.guard.node)]
        assert f"> max_unknown_cancels_per_s {LIMIT}" in halt.reason
        assert kw.guard.node_state() is TradingState.HALTED
        assert len(s.canceled) == 1  # the one real order's cancel went through
        assert s.denied == ["TradingState.HALTED"]  # the mirror of the Guard's halt refused it
