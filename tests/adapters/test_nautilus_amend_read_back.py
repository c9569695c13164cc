"""Amends a venue never answers, on a real TradingNode: the order is read back from the venue.

An amend the Guard accepted reserves the larger of the order's old and new size until the
venue answers (`OrderUpdated` commits it, `OrderModifyRejected` rolls it back). A venue that
never answers (a request timed out after it went out, a dropped acknowledgement) left that
reservation held until the order ended, which a resting order may never do: exposure stayed
over-reserved, and NautilusTrader's order stayed PENDING_UPDATE at a size the venue may not
hold. The adapter now reads the order back (`generate_order_status_report`, the live
client's own call) after `amend_read_back_s`, and settles the amend by what the venue holds.

The venue is a real `LiveExecutionClient` whose reports come from the test's table; its
submit and accept events are NautilusTrader's test stubs. The node runs in a child process:
a live kernel sets up NautilusTrader's process-wide logging, which the backtests of this
test session bypass."""

from __future__ import annotations

import textwrap

from .nt_live import run_live

_CHILD = textwrap.dedent(
    """
    import asyncio
    from nautilus_trader.live.execution_client import LiveExecutionClient
    from nautilus_trader.model.enums import OrderStatus
    from nautilus_trader.model.objects import Quantity
    from nautilus_trader.test_kit.stubs.events import TestEventStubs
    from knightwatch.adapters.nautilus import install
    from tests.adapters.nt_live import live_node, resting, status_report
    from tests.adapters.nt_world import AUDUSD, open_limits

    SYM = AUDUSD.id.value
    HELD = {}  # client order id -> the quantity the venue holds (absent: it finds no order)
    READS = {}  # client order id -> how many times the venue was asked for it

    class Silent(LiveExecutionClient):
        # a venue that never answers an amend: one to 40,000 times out after it went out
        # (in doubt), any other goes out and no answer ever comes
        async def _submit_order(self, command): pass
        async def _modify_order(self, command):
            await asyncio.sleep(0)
            if int(command.quantity.as_double()) == 40_000:
                raise TimeoutError("no answer from the venue")
        async def _cancel_order(self, command): pass
        async def _cancel_all_orders(self, command): pass
        async def generate_order_status_report(self, command):
            oid = command.client_order_id
            READS[oid.value] = READS.get(oid.value, 0) + 1
            if oid.value not in HELD:
                return None
            order = self._cache.order(oid)
            return status_report(order, OrderStatus.ACCEPTED, Quantity.from_int(HELD[oid.value]))

    async def main():
        node, _, st = live_node(asyncio.get_running_loop(), Silent)
        k = node.kernel
        kw = install(node, limits=open_limits())
        kw.amend_read_back_s = 0.05
        k.risk_engine.start()
        k.exec_engine.start()
        try:
            kw.guard.on_price(SYM, 0.7)
            orders = await resting(node, st, 3)
            kept, taken, lost = orders
            HELD[kept.client_order_id.value] = 10_000  # the timed-out amend never took
            HELD[taken.client_order_id.value] = 50_000  # the venue took it, never said so
            # `lost`: the venue finds no such order (nothing can be read)
            st.modify_order(kept, quantity=Quantity.from_int(40_000))
            st.modify_order(taken, quantity=Quantity.from_int(50_000))
            st.modify_order(lost, quantity=Quantity.from_int(60_000))
            for _ in range(600):  # at most 30 s: the reads end after 1.55 s
                await asyncio.sleep(0.05)
                if READS.get(lost.client_order_id.value) == 5 and all(
                    o.status.name == "ACCEPTED" for o in (kept, taken)
                ):
                    break
            await asyncio.sleep(0.2)
            refused = [e.reason.split(" ", 1)[0] for e in kept.events
                       if type(e).__name__ == "OrderModifyRejected"]
            print(
                "RESULT",
                kw.guard.working_qty(SYM)[0],
                [(o.status.name, int(o.quantity.as_double())) for o in orders],
                refused,
                READS.get(lost.client_order_id.value),
                sorted(s.value for s, _ in kw.guard.halts()),
            )
            # the venue takes the amend it was read back without, after all
            k.exec_engine.process(
                TestEventStubs.order_updated(kept, quantity=Quantity.from_int(40_000))
            )
            for _ in range(600):
                await asyncio.sleep(0.05)
                if kw.guard.halts():
                    break
            codes = [h.code.value for h in kw.guard.halts().values()]
            print("LATE", kw.guard.working_qty(SYM)[0], codes)
        finally:
            k.risk_engine.stop()
            k.exec_engine.stop()
            await asyncio.sleep(0.05)

    asyncio.run(main())
    """
)


def test_an_unanswered_amend_is_settled_by_reading_the_order_back() -> None:
    """Three working 10,000 buys are amended and the venue answers none of the amends:

    * to 40,000, the client timing out after it went out: the venue reads back at 10,000,
      so the amend never took: the Guard's 40,000 reservation goes back to 10,000 and the
      strategy gets `OrderModifyRejected` (`venue_unavailable`), the order ACCEPTED again;
    * to 50,000: the venue reads back at 50,000: it took the amend, which is committed as
      its `OrderUpdated` would have been (the order ACCEPTED at 50,000, nothing halted);
    * to 60,000: the venue finds no such order: nothing can be read, so 60,000 stays
      reserved (the safe side) and the read is tried five times, then no more.

    Before, all three stayed reserved (150,000) and PENDING_UPDATE at 10,000 for good. A
    venue that takes the first amend after all (its late `OrderUpdated` to 40,000) grew the
    order past what the Guard then held: counted, and the node halted (`fill_mismatch`)."""
    printed = run_live(_CHILD)
    assert printed["RESULT"] == (
        "RESULT 120000 [('ACCEPTED', 10000), ('ACCEPTED', 50000), ('PENDING_UPDATE', 10000)] "
        "['knightwatch:venue_unavailable'] 5 []"
    )
    assert printed["LATE"] == "LATE 150000 ['fill_mismatch']"
