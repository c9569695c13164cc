"""Live NautilusTrader nodes for the adapter tests: a TradingNode's engines with a scripted
`LiveExecutionClient`, run in a child process.

A live kernel sets up NautilusTrader's process-wide logging, which the backtests of the test
session bypass, so each live test runs its node in a child Python (`run_live`); the child
builds its node with `live_node`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from nautilus_trader.common.providers import InstrumentProvider
from nautilus_trader.config import LoggingConfig, TradingNodeConfig
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.reports import OrderStatusReport
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide, OrderStatus
from nautilus_trader.model.identifiers import AccountId, ClientId, VenueOrderId
from nautilus_trader.model.objects import Price, Quantity
from nautilus_trader.test_kit.stubs.events import TestEventStubs
from nautilus_trader.trading.strategy import Strategy

from .nt_world import AUDUSD, SIM

ACC = AccountId("SIM-001")


def live_node(loop: asyncio.AbstractEventLoop, client_type: type[Any]) -> tuple[Any, Any, Strategy]:
    """A TradingNode on `loop` (engines not started) with AUD/USD in its cache, a
    `client_type` execution client for SIM registered, and one strategy added."""
    node = TradingNode(TradingNodeConfig(logging=LoggingConfig(log_level="ERROR")), loop=loop)
    k = node.kernel
    k.cache.add_instrument(AUDUSD)
    client = client_type(
        loop,
        ClientId("SIM"),
        SIM,
        OmsType.NETTING,
        AccountType.MARGIN,
        USD,
        InstrumentProvider(),
        k.msgbus,
        k.cache,
        k.clock,
    )
    k.exec_engine.register_client(client)
    st = Strategy()
    node.trader.add_strategy(st)
    return node, client, st


async def resting(node: Any, st: Strategy, n: int) -> list[Any]:
    """`n` 10,000 AUD/USD limit buys `st` submits, each submitted and accepted at the venue
    (NautilusTrader's test stubs: venue ids V-0, V-1, ...), as a venue that answers orders
    but nothing else would leave them."""
    engine = node.kernel.exec_engine
    orders = [
        st.order_factory.limit(
            AUDUSD.id, OrderSide.BUY, Quantity.from_int(10_000), Price.from_str("0.69000")
        )
        for _ in range(n)
    ]
    for i, order in enumerate(orders):
        st.submit_order(order)
        await asyncio.sleep(0.05)
        engine.process(TestEventStubs.order_submitted(order, account_id=ACC))
        engine.process(
            TestEventStubs.order_accepted(
                order, account_id=ACC, venue_order_id=VenueOrderId(f"V-{i}")
            )
        )
    await asyncio.sleep(0.1)
    return orders


def status_report(order: Any, status: OrderStatus, quantity: Quantity) -> OrderStatusReport:
    """The venue's report of `order`: `status`, holding `quantity`, nothing filled."""
    return OrderStatusReport(
        account_id=ACC,
        instrument_id=order.instrument_id,
        venue_order_id=order.venue_order_id,
        order_side=order.side,
        order_type=order.order_type,
        time_in_force=order.time_in_force,
        order_status=status,
        quantity=quantity,
        filled_qty=Quantity.from_int(0),
        report_id=UUID4(),
        ts_accepted=0,
        ts_last=0,
        ts_init=0,
        client_order_id=order.client_order_id,
        price=order.price,
    )


def run_live(child: str, *args: str) -> dict[str, str]:
    """Run `child` (a script) in a child Python from the repository's root, which must exit
    0: each line it printed, by its first word."""
    done = subprocess.run(
        [sys.executable, "-c", child, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.split(" ", 1)[0]: line for line in done.stdout.splitlines() if line}
