"""An amend a live execution client fails on, on a real TradingNode.

A `LiveExecutionClient` sends an amend from a task of its own (`_modify_order`), whose
exception NautilusTrader only logs: it never comes back through the Guard's call. The
amend's larger reservation was kept until the order ended: an amend that never left
counted exposure that was not at the venue, and the desk was held to limits it had not used.

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
    from knightwatch.adapters.nautilus import install
    from tests.adapters.nt_live import live_node
    from tests.adapters.nt_world import AUDUSD, open_limits

    SYM = AUDUSD.id.value

    class Flaky(LiveExecutionClient):
        # 30,000: the client raises before anything is sent (its session is gone);
        # 40,000: it raises after the request went out (no answer: it may be at the venue)
        async def _submit_order(self, command): pass
        async def _modify_order(self, command):
            q = int(command.quantity.as_double())
            if q == 30_000:
                raise ConnectionError("venue session closed")
            await asyncio.sleep(0)
            raise TimeoutError("no answer from the venue")
        async def _cancel_order(self, command): pass
        async def _cancel_all_orders(self, command): pass

    async def main():
        node, _, st = live_node(asyncio.get_running_loop(), Flaky)
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
            st.modify_order(order, quantity=Quantity.from_int(30_000))  # never sent
            await asyncio.sleep(0.2)
            seen = [(kw.guard.working_qty(SYM)[0], order.status.name)]
            st.modify_order(order, quantity=Quantity.from_int(40_000))  # sent, unanswered
            await asyncio.sleep(0.2)
            seen.append((kw.guard.working_qty(SYM)[0], order.status.name))
            refused = [e.reason.split(" ", 1)[0] for e in order.events
                       if type(e).__name__ == "OrderModifyRejected"]
            print("RESULT", seen, refused, sorted(s.value for s, _ in kw.guard.halts()))
        finally:
            k.risk_engine.stop()
            k.exec_engine.stop()
            await asyncio.sleep(0.05)

    asyncio.run(main())
    """
)


def test_an_amend_the_live_client_fails_on_before_sending_gives_its_reservation_back() -> None:
    """A working 10,000 buy is amended to 30,000; the client's `_modify_order` raises before
    anything was sent (its session is gone): the Guard's 30,000 reservation is given back to
    10,000 and the strategy gets `OrderModifyRejected` (`venue_unavailable`), the order
    ACCEPTED again (was: 30,000 counted until the order ended, the order stuck
    PENDING_UPDATE). An amend to 40,000 that the client raised on after it went out (a
    timeout) may be at the venue: it stays reserved (the safe side)."""
    assert run_live(_CHILD)["RESULT"] == (
        "RESULT [(10000, 'ACCEPTED'), (40000, 'PENDING_UPDATE')] "
        "['knightwatch:venue_unavailable'] []"
    )
