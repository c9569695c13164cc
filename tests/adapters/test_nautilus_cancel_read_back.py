"""An `OrderCanceled` NautilusTrader makes up itself is checked with the venue first.

A live ExecutionEngine's in-flight check gives up on an order left PENDING_CANCEL (or
PENDING_UPDATE) that the venue never answered: after its retries it resolves the order
CANCELED itself (`reconciliation=True`, no venue report). The Guard ended the order on that
event, and a kill's cancel stopped retrying (the cache showed the order closed), while the
order could still rest at the venue. The adapter now keeps such an order counted working,
reads it back from the venue, and ends it only once the venue shows it ended; while the
node is HALTED each read that finds it working sends the kill's cancel again.

The venue is a real `LiveExecutionClient` whose reports come from the test's table; the
made-up cancel is NautilusTrader's own (`LiveExecutionEngine._resolve_inflight_order`, what
its in-flight check calls after its retries). The node runs in a child process (`run_live`)."""

from __future__ import annotations

import textwrap

from .nt_live import run_live

_CHILD = textwrap.dedent(
    """
    import asyncio
    from nautilus_trader.live.execution_client import LiveExecutionClient
    from nautilus_trader.model.enums import OrderStatus
    from knightwatch import Scope
    from knightwatch.adapters import nautilus as kwnt
    from tests.adapters.nt_live import live_node, resting, status_report
    from tests.adapters.nt_world import AUDUSD, open_limits

    kwnt._KILL_RETRY_FIRST_S = 0.02
    kwnt._KILL_RETRY_MAX_S = 0.05
    SYM = AUDUSD.id.value
    SHOWN = {}  # client order id -> the status the venue reports (absent: no order found)
    CANCELS = {}  # client order id -> how many cancels of it went out

    class Silent(LiveExecutionClient):
        # a venue that never answers a cancel
        async def _submit_order(self, command): pass
        async def _modify_order(self, command): pass
        async def _cancel_order(self, command):
            oid = command.client_order_id.value
            CANCELS[oid] = CANCELS.get(oid, 0) + 1
        async def _cancel_all_orders(self, command): pass
        async def generate_order_status_report(self, command):
            oid = command.client_order_id
            if oid.value not in SHOWN:
                return None
            order = self._cache.order(oid)
            return status_report(order, SHOWN[oid.value], order.quantity)

    async def until(done):
        for _ in range(600):  # at most 30 s
            if done():
                return
            await asyncio.sleep(0.05)

    async def main():
        node, _, st = live_node(asyncio.get_running_loop(), Silent)
        k = node.kernel
        kw = kwnt.install(node, limits=open_limits())
        k.risk_engine.start()
        k.exec_engine.start()
        try:
            kw.guard.on_price(SYM, 0.7)
            orders = await resting(node, st, 3)
            ids = [o.client_order_id.value for o in orders]
            for order in orders:
                st.cancel_order(order)
            await until(lambda: all(o.status.name == "PENDING_CANCEL" for o in orders))
            kw.guard.halt(Scope.NODE, kw.guard.node, "fleet kill", "test")
            await asyncio.sleep(0.2)
            SHOWN[ids[0]] = OrderStatus.ACCEPTED  # the cancels never reached it
            SHOWN[ids[1]] = OrderStatus.CANCELED
            # the third: the venue finds no such order (nothing can be read)
            sent = dict(CANCELS)
            for order in orders:  # NautilusTrader's in-flight check gives up on them
                k.exec_engine._resolve_inflight_order(order)
            def resent(i):
                return CANCELS.get(ids[i], 0) - sent.get(ids[i], 0)

            await until(lambda: resent(0) >= 3 and resent(2) >= 3)
            print(
                "HELD",
                [o.status.name for o in orders],
                kw.guard.working_qty(SYM)[0],
                resent(0) >= 3 and resent(2) >= 3,
                resent(1),
            )
            SHOWN[ids[0]] = OrderStatus.CANCELED  # the kill's cancel went through at last
            await until(lambda: kw.guard.working_qty(SYM)[0] == 10_000)
            await asyncio.sleep(0.2)
            print("SETTLED", kw.guard.working_qty(SYM)[0], resent(0) > 2)
            # the node resumes: the third's read-back gives up (still counted working)
            kw.guard.resume(Scope.NODE, kw.guard.node, "drill over", "alice")
            SHOWN[ids[2]] = OrderStatus.ACCEPTED  # found: the venue still holds it
            await until(lambda: not any(
                t.get_name() == "knightwatch-cancel-read-back" for t in asyncio.all_tasks()
            ))
            print("RESUMED", kw.guard.working_qty(SYM)[0])
            sent = dict(CANCELS)
            kw.guard.halt(Scope.NODE, kw.guard.node, "fleet kill again", "test")
            await until(lambda: resent(2) >= 2)
            print("KILLED", kw.guard.working_qty(SYM)[0], resent(2) >= 2)
            SHOWN[ids[2]] = OrderStatus.CANCELED
            await until(lambda: kw.guard.working_qty(SYM)[0] == 0)
            print("GONE", kw.guard.working_qty(SYM)[0])
        finally:
            k.risk_engine.stop()
            k.exec_engine.stop()
            await asyncio.sleep(0.05)

    asyncio.run(main())
    """
)


def test_a_cancel_nautilus_made_up_is_read_back_before_the_order_ends() -> None:
    """Three working 10,000 buys are cancelled, the venue answers none of the cancels, the
    node is killed, and NautilusTrader's in-flight check resolves all three CANCELED:

    * the venue still holds the first: it stays counted working and the kill's cancel is
      sent again after each read, until the venue shows it CANCELED, then it ends;
    * the venue shows the second CANCELED: it ends at once, no cancel sent again;
    * the venue finds no third: nothing can be read, so it stays counted working (the safe
      side) and the kill's cancel keeps going out.

    The node then resumes: the third's read-back gives up after five reads, the order still
    counted working; the venue finds it after all. A second kill reaches it (the cache holds
    it closed, so only the Guard's own list of such orders does): its cancel goes out again
    until the venue shows it CANCELED, then it ends.

    Before, all three ended in the Guard at NautilusTrader's made-up cancel (0 working) and
    no cancel was sent again, while the first still rested at the venue."""
    printed = run_live(_CHILD)
    assert printed["HELD"] == "HELD ['CANCELED', 'CANCELED', 'CANCELED'] 20000 True 0"
    assert printed["SETTLED"] == "SETTLED 10000 True"
    assert printed["RESUMED"] == "RESUMED 10000"
    assert printed["KILLED"] == "KILLED 10000 True"
    assert printed["GONE"] == "GONE 0"
