"""An amend NautilusTrader's live RiskEngine refuses, on a real TradingNode.

A live node's RiskEngine and ExecutionEngine queue what they are given (`execute` and
`process` enqueue; a task on the node's loop handles each later), so the RiskEngine's
refusal of an amend is published long after the strategy's call returned. The venue here is
a real `LiveExecutionClient` that takes each command and has not answered yet; its events are
NautilusTrader's test stubs, processed by the live ExecutionEngine.

The node runs in a child process: a live kernel sets up NautilusTrader's process-wide
logging, which the backtests of this test session bypass."""

from __future__ import annotations

import textwrap

from .nt_live import run_live

_CHILD = textwrap.dedent(
    """
    import asyncio
    from nautilus_trader.live.execution_client import LiveExecutionClient
    from nautilus_trader.model.enums import OrderSide
    from nautilus_trader.model.identifiers import AccountId, VenueOrderId
    from nautilus_trader.model.objects import Price, Quantity
    from nautilus_trader.test_kit.stubs.events import TestEventStubs
    from knightwatch import Scope
    from knightwatch.adapters.nautilus import install
    from tests.adapters.nt_live import live_node
    from tests.adapters.nt_world import AUDUSD, open_limits

    SYM = AUDUSD.id.value

    class Pending(LiveExecutionClient):
        # a venue that takes every command and has not answered yet
        async def _submit_order(self, command): pass
        async def _modify_order(self, command): pass
        async def _cancel_order(self, command): pass
        async def _cancel_all_orders(self, command): pass

    async def main():
        node, _, st = live_node(asyncio.get_running_loop(), Pending)
        k = node.kernel
        kw = install(node, limits=open_limits())
        k.risk_engine.start()
        k.exec_engine.start()
        try:
            kw.guard.on_price(SYM, 0.7)
            order = st.order_factory.limit(
                AUDUSD.id, OrderSide.BUY, Quantity.from_int(10_000), Price.from_str("0.69000")
            )
            st.submit_order(order)
            await asyncio.sleep(0.1)
            acc = AccountId("SIM-001")
            k.exec_engine.process(TestEventStubs.order_submitted(order, account_id=acc))
            venue_id = VenueOrderId("V-1")
            k.exec_engine.process(
                TestEventStubs.order_accepted(order, account_id=acc, venue_order_id=venue_id)
            )
            await asyncio.sleep(0.1)
            st.modify_order(order, quantity=Quantity.from_int(30_000))  # at the venue, unanswered
            await asyncio.sleep(0.1)
            seen = [kw.guard.working_qty(SYM)[0]]
            kw.guard.halt(Scope.SYMBOL, SYM, "desk stop", "test")
            st.modify_order(order, quantity=Quantity.from_int(40_000))  # NautilusTrader refuses
            await asyncio.sleep(0.1)
            seen.append(kw.guard.working_qty(SYM)[0])
            refused = [type(e).__name__ for e in order.events].count("OrderModifyRejected")
            # the venue takes the first amend
            k.exec_engine.process(
                TestEventStubs.order_updated(order, quantity=Quantity.from_int(30_000))
            )
            await asyncio.sleep(0.1)
            seen.append(kw.guard.working_qty(SYM)[0])
            print("RESULT", refused, seen, sorted(s.value for s, _ in kw.guard.halts()))
        finally:
            k.risk_engine.stop()
            k.exec_engine.stop()
            await asyncio.sleep(0.05)

    asyncio.run(main())
    """
)


def test_a_later_amend_the_live_risk_engine_refuses_leaves_the_one_at_the_venue_reserved() -> None:
    """A 10,000 buy is amended to 30,000 (the Guard reserves 30,000 until the venue answers);
    the symbol is halted and the strategy amends again, which the live RiskEngine refuses
    (`TradingState is HALTED`) from its queue. The adapter took that refusal for an answer
    from the venue only while the RiskEngine's call was on the stack, which a live
    RiskEngine's never is: it rolled the first amend back to 10,000 while 30,000 was on its
    way, then read the venue taking it as the order grown past its check and halted the
    whole node (`fill_mismatch`). The first amend now stays reserved and is committed."""
    assert run_live(_CHILD)["RESULT"] == "RESULT 1 [30000, 30000, 30000] ['symbol']"
