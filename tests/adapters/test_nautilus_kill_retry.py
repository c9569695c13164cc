"""A kill's cancel the venue rejects (a rate-limited burst) on a live TradingNode is tried
again with a bounded backoff until the order is gone, while the node stays HALTED.

The kill swept once per change of trading state: a cancel the venue answered with
`OrderCancelRejected` was never sent again, and the order rested at the venue, working,
through the whole kill (until an operator repeated the kill).

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
    from nautilus_trader.model.identifiers import AccountId, ClientId, VenueOrderId
    from nautilus_trader.model.objects import Price, Quantity
    from nautilus_trader.trading.strategy import Strategy
    from knightwatch import Scope
    from knightwatch.adapters import nautilus as kwnt
    from tests.adapters.nt_world import AUDUSD, SIM, open_limits

    kwnt._KILL_RETRY_FIRST_S = 0.02
    kwnt._KILL_RETRY_MAX_S = 0.05
    SYM = AUDUSD.id.value
    ACC = AccountId("SIM-001")

    class Limited(LiveExecutionClient):
        # takes orders at once; rejects the first REFUSE cancels (429), then cancels
        REFUSE = 0
        cancels = 0

        def _answer(self, order):
            type(self).cancels += 1
            now = self._clock.timestamp_ns()
            args = (order.strategy_id, order.instrument_id, order.client_order_id,
                    order.venue_order_id)
            if type(self).cancels <= self.REFUSE:
                self.generate_order_cancel_rejected(*args, "429 rate limited", now)
            else:
                self.generate_order_canceled(*args, now)

        async def _submit_order(self, command):
            o, now = command.order, self._clock.timestamp_ns()
            self.generate_order_submitted(o.strategy_id, o.instrument_id, o.client_order_id, now)
            self.generate_order_accepted(o.strategy_id, o.instrument_id, o.client_order_id,
                                         VenueOrderId("V-" + o.client_order_id.value), now)

        async def _cancel_order(self, command):
            self._answer(self._cache.order(command.client_order_id))

        async def _cancel_all_orders(self, command):
            for o in self._cache.orders_open(instrument_id=command.instrument_id):
                self._answer(o)

    async def main(refuse, resume):
        Limited.REFUSE, Limited.cancels = refuse, 0
        loop = asyncio.get_running_loop()
        node = TradingNode(TradingNodeConfig(logging=LoggingConfig(log_level="ERROR")), loop=loop)
        k = node.kernel
        k.cache.add_instrument(AUDUSD)
        client = Limited(loop, ClientId("SIM"), SIM, OmsType.NETTING, AccountType.MARGIN, USD,
                         InstrumentProvider(), k.msgbus, k.cache, k.clock)
        client._set_account_id(ACC)
        k.exec_engine.register_client(client)
        st = Strategy()
        node.trader.add_strategy(st)
        kw = kwnt.install(node, limits=open_limits())
        k.risk_engine.start()
        k.exec_engine.start()
        st.start()
        try:
            kw.guard.on_price(SYM, 0.7)
            order = st.order_factory.limit(
                AUDUSD.id, OrderSide.BUY, Quantity.from_int(10_000), Price.from_str("0.69000")
            )
            st.submit_order(order)
            await asyncio.sleep(0.2)
            assert order.is_open, order.status
            kw.guard.halt(Scope.NODE, kw.guard.node, "fleet kill", "test")
            if resume:
                await asyncio.sleep(0.3)
                kw.guard.resume(Scope.NODE, kw.guard.node, "drill over", "alice")
                await asyncio.sleep(0.2)
                seen = Limited.cancels
                await asyncio.sleep(0.5)
                print("RESULT", order.status.name, Limited.cancels - seen,
                      kw.guard.working_qty(SYM)[0])
                return
            for _ in range(200):
                if order.is_closed:
                    break
                await asyncio.sleep(0.02)
            print("RESULT", order.status.name, Limited.cancels, kw.guard.working_qty(SYM)[0])
        finally:
            st.stop()
            k.risk_engine.stop()
            k.exec_engine.stop()
            await asyncio.sleep(0.05)

    import sys
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] == "resume"))
    """
)


def _run(refuse: int, mode: str) -> str:
    return run_live(_CHILD, str(refuse), mode)["RESULT"]


def test_a_kill_cancel_the_venue_rejects_is_tried_again_until_the_order_is_gone() -> None:
    """The venue rejects the kill's cancel-all and the next three cancels (429); the fifth
    cancel goes through: the order ends CANCELED and the Guard counts nothing working."""
    assert _run(4, "kill") == "RESULT CANCELED 5 0"


def test_the_kills_cancel_retries_stop_once_the_node_resumes() -> None:
    """A venue that rejects every cancel: once the node is resumed, no more cancels are sent
    and the order is the strategy's again, still counted working."""
    assert _run(10_000, "resume") == "RESULT ACCEPTED 0 10000"
