"""Builders shared by the flight-recorder tests."""

from __future__ import annotations

from knightwatch.audit import AuditContext, FlightRecorder
from knightwatch.decision import ACCEPTED, Decision, RejectReason
from knightwatch.order import Order, Side

CTX = AuditContext(node="n1", release_id="rel-7", flag_snapshot_id="snap-3", limits_version="v2")
RULES = ("trading_state", "armed", "validity", "max_order_qty")
BLOCK = Decision(False, RejectReason.MAX_ORDER_QTY, "qty 50000 > max_order_qty 10000 for smars")


def order(i: int, qty: int = 100, parent: str | None = "p1") -> Order:
    return Order(f"o{i}", "smars", "AAPL", Side.BUY, qty, 101.25, parent)


def record_one(rec: FlightRecorder, i: int) -> None:
    """Decision i (every 5th blocked), and a fill for every 7th."""
    rec.record_decision(order(i), BLOCK if i % 5 == 4 else ACCEPTED, CTX, RULES)
    if i % 7 == 0:
        rec.record_event("fill", CTX, order_id=f"o{i}", qty=100, price=101.0)
