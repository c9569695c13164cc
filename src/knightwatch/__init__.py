"""knightwatch: the trading-safety system Knight Capital needed on 2012-08-01.

The embedding surface is importable from here and needs nothing but `msgspec`::

    from knightwatch import Guard, Limits, Order, Side

    guard = Guard(Limits(max_order_qty=5_000), node="router-1")
    guard.arm("ops")
    guard.on_price("IBM", 100.0)
    ok = guard.check(Order("o1", "rlp", "IBM", Side.BUY, 100, 100.0))
    fat = guard.check(Order("o2", "rlp", "IBM", Side.BUY, 50_000, 100.0))
    print(ok.accepted, ok.reason)     # True ok
    print(fat.accepted, fat.reason)   # False max_order_qty
    print(fat.detail)                 # qty 50000 > max_order_qty 5000 for strategy rlp

The fleet (`knightwatch.control`), releases (`knightwatch.release`), flags
(`knightwatch.flags`) and the simulator (`knightwatch.sim`) come with extras;
see the README.
"""

import logging

from knightwatch.audit import FlightRecorder, FsyncPolicy
from knightwatch.clock import Clock, SimClock, SystemClock
from knightwatch.decision import ACCEPTED, Decision, RejectReason
from knightwatch.errors import KnightwatchError
from knightwatch.guard import Guard
from knightwatch.limits import Limits, LimitsError
from knightwatch.order import Fill, InvalidOrder, Order, Side
from knightwatch.state import Scope, TradingState

# A library never configures logging; operators attach handlers to "knightwatch".
logging.getLogger("knightwatch").addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "ACCEPTED",
    "Clock",
    "Decision",
    "Fill",
    "FlightRecorder",
    "FsyncPolicy",
    "Guard",
    "InvalidOrder",
    "KnightwatchError",
    "Limits",
    "LimitsError",
    "Order",
    "RejectReason",
    "Scope",
    "Side",
    "SimClock",
    "SystemClock",
    "TradingState",
    "__version__",
]
