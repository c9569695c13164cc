from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from knightwatch.clock import SimClock
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Order, Side

T0 = 1_000_000_000_000


class Rig:
    def __init__(self, **limits: Any) -> None:
        self.clock = SimClock(T0)
        self.limits = Limits.off(**limits)  # each test sees exactly the rules it turns on
        self.guard = Guard(self.limits, node="n1", clock=self.clock)
        self.guard.arm("test")
        self.guard.on_price("IBM", 100.0)
        self.n = 0

    def order(
        self,
        qty: int = 100,
        price: float | None = 100.0,
        side: Side = Side.BUY,
        symbol: str = "IBM",
        strategy: str = "rlp",
        parent_id: str | None = None,
        id: str | None = None,
    ) -> Order:
        self.n += 1
        return Order(id or f"o{self.n}", strategy, symbol, side, qty, price, parent_id)

    def send(self, **kw: Any) -> Any:
        return self.guard.check(self.order(**kw))


@pytest.fixture
def rig() -> Callable[..., Rig]:
    return Rig
