"""The pre-trade Guard: one engine whose checks run inline, with its state delegated.

- `engine`: `Guard`, the check path (`check` -> `_evaluate`) and the control
  calls (arm, lease, halt, resume, parents, context);
- `lanes`: the limits resolved once per (strategy, symbol), read by the check path;
- `ledger`: positions, working orders, parents and exposure totals;
- `halts`: the per-source halt latches the hot path reads;
- `rates`: exact sliding-window rate limits;
- `orderids`: the bounded duplicate-id check;
- `locked`: `LockedGuard`, the same Guard under one lock for multi-threaded hosts.

Importing this package loads nothing but `msgspec` from outside the standard library.
"""

from knightwatch.guard.engine import DEFAULT_MEMORY_RECORDS, Guard
from knightwatch.guard.errors import RecorderUnavailable
from knightwatch.guard.halts import Halt
from knightwatch.guard.locked import LockedGuard

__all__ = ["DEFAULT_MEMORY_RECORDS", "Guard", "Halt", "LockedGuard", "RecorderUnavailable"]
