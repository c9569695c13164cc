"""A submit a live execution client fails on, on a real TradingNode.

A live ExecutionEngine queues each command and hands it to its client from a task of its
own; a `LiveExecutionClient` sends it from yet another task (`_submit_order`), whose
exception NautilusTrader only logs. The Guard's release of an order the client raised on
(`_not_sent`) ran only when the exception came back through its own call, which on a live
node it never does: the order, never sent, stayed counted working for the rest of the day
(every later order checked against a position that could not happen).

The node runs in a child process: a live kernel sets up NautilusTrader's process-wide
logging, which the backtests of this test session bypass."""

from __future__ import annotations

import textwrap

from .nt_live import run_live

_CHILD = textwrap.dedent(
    """
    import asyncio
    from nautilus_trader.common.providers import InstrumentProvider
    from nautilus_trader.config import LoggingConfig, TradingNodeConfig
    from nautilus_trader.live.execution_client import LiveExecutionClient
    from nautilus_trader.live.node import TradingNode
    from nautilus_trader.model.currencies import USD
    from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
    from nautilus_trader.model.identifiers import AccountId, ClientId
    from nautilus_trader.model.objects import Price, Quantity
    from nautilus_trader.test_kit.stubs.events import TestEventStubs
    from nautilus_trader.trading.strategy import Strategy
    from knightwatch.adapters.nautilus import install
    from tests.adapters.nt_world import AUDUSD, SIM, open_limits

    SYM = AUDUSD.id.value
    ACC = AccountId("SIM-001")

    class Failing(LiveExecutionClient):
        # 10,000: the client raises before anything is sent (its session is gone);
        # 20,000: it marks the order submitted, then raises (the request may be at the venue);
        # 30,000: the venue rejects it before any acknowledgement
        async def _submit_order(self, command):
            q = int(command.order.quantity.as_double())
            if q == 20_000:
                self.generate_order_submitted(
                    command.strategy_id, command.instrument_id, command.order.client_order_id,
                    self._clock.timestamp_ns(),
                )
                await asyncio.sleep(0)
            if q == 30_000:
                self.generate_order_rejected(
                    command.strategy_id, command.instrument_id, command.order.client_order_id,
                    "insufficient margin", self._clock.timestamp_ns(),
                )
                return
            raise ConnectionError("venue session closed")
        async def _submit_order_list(self, command):
            raise ConnectionError("venue session closed")
        async def _cancel_order(self, command): pass
        async def _cancel_all_orders(self, command): pass

    async def main():
        loop = asyncio.get_running_loop()
        node = TradingNode(TradingNodeConfig(logging=LoggingConfig(log_level="ERROR")), loop=loop)
        k = node.kernel
        k.cache.add_instrument(AUDUSD)
        client = Failing(loop, ClientId("SIM"), SIM, OmsType.NETTING, AccountType.MARGIN, USD,
                         InstrumentProvider(), k.msgbus, k.cache, k.clock)
        client._set_account_id(ACC)
        k.exec_engine.register_client(client)
        st = Strategy()
        node.trader.add_strategy(st)
        kw = install(node, limits=open_limits())
        k.risk_engine.start()
        k.exec_engine.start()
        try:
            kw.guard.on_price(SYM, 0.7)
            px = Price.from_str("0.69000")
            f = st.order_factory
            orders = [f.limit(AUDUSD.id, OrderSide.BUY, Quantity.from_int(q), px)
                      for q in (10_000, 20_000, 30_000)]
            seen = []
            for order in orders:
                st.submit_order(order)
                await asyncio.sleep(0.2)
                seen.append(kw.guard.working_qty(SYM)[0])
            pair = [f.limit(AUDUSD.id, OrderSide.BUY, Quantity.from_int(q), px)
                    for q in (5_000, 7_000)]
            st.submit_order_list(f.create_list(pair))
            await asyncio.sleep(0.2)
            seen.append(kw.guard.working_qty(SYM)[0])
            statuses = [o.status.name for o in orders + pair]
            print("RESULT", seen, statuses, sorted(s.value for s, _ in kw.guard.halts()))
        finally:
            k.risk_engine.stop()
            k.exec_engine.stop()
            await asyncio.sleep(0.05)

    asyncio.run(main())
    """
)


def test_a_submit_the_live_client_fails_on_releases_what_was_never_sent() -> None:
    """Four submits on a live node whose client fails them from its own task: 10,000 raised
    before anything was sent, released and denied (was: counted working forever); 20,000
    raised after the client marked it submitted, so it may be at the venue and stays counted
    (in doubt); 30,000 the venue rejected before any acknowledgement, released; a list of
    5,000 and 7,000 raised before anything was sent, both released and denied."""
    assert run_live(_CHILD)["RESULT"] == (
        "RESULT [0, 20000, 20000, 20000] ['DENIED', 'SUBMITTED', 'REJECTED', 'DENIED', 'DENIED'] []"
    )
