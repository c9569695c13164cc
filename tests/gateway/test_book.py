"""The gateway's book: the orders of the day and their ExecIDs are not walked by the
garbage collector (it runs inside an order's call in the gateway's process)."""

from __future__ import annotations

import gc
import sys

from knightwatch.gateway.book import GatewayBook, GwOrder
from knightwatch.order import Side

CPYTHON = sys.implementation.name == "cpython"


def _order(i: int) -> GwOrder:
    return GwOrder("C1", f"c{i}", f"g{i}", "s", "IBM", Side.BUY, "1", 100, 100.0)


def test_orders_and_exec_ids_are_not_walked_and_stay_usable() -> None:
    book = GatewayBook()
    for i in range(100):
        book.add(_order(i))
        book.exec_seen.add(f"e{i}")
    go = book.orders["c7"]
    go.status, go.cum, go.leaves, go.cancel_note = "1", 40, 60, "killed"  # plain values
    book.rename(go, "c7-r", "g7-r")
    assert book.orders["c7-r"] is go and "c7" not in book.orders and go.live
    assert [o.clordid for o in book.live()][:3] == ["c0", "c1", "c2"]
    assert all(gc.is_tracked(o) is not CPYTHON for o in book.orders.values())
    assert gc.is_tracked(book.exec_seen) is not CPYTHON and "e99" in book.exec_seen
