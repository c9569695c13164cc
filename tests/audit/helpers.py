"""Builders shared by the flight-recorder tests."""

from __future__ import annotations

import ctypes
import mmap

from knightwatch.audit import AuditContext, FlightRecorder
from knightwatch.audit.log import MappedLog
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


def resident(log: MappedLog, start: int, length: int) -> list[bool]:
    """Whether each page of [start, start + length) of the log's mapping is in memory
    (mincore(2)); `start` page-aligned, within one mapped segment."""
    seg = start - start % log.segment
    pages = (length + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vec = (ctypes.c_ubyte * pages)()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    if libc.mincore(log._bases[seg] + (start - seg), length, vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore failed")
    return [bool(b & 1) for b in vec]
