"""Orders and fills: the immutable facts the Guard reasons about.

They are msgspec structs because they sit on the hot path: construction and
attribute access cost a fraction of a dataclass. Validation happens once, at
construction, so a bad order never exists as a value; the Guard still checks
defensively because objects can be built around `__init__` (msgspec.convert
with no validation, `__new__`, pickles from elsewhere).
"""

from __future__ import annotations

import math
from enum import StrEnum

import msgspec

from knightwatch.errors import KnightwatchError, quoted

MAX_ID_LEN = 64
MAX_SYMBOL_LEN = 64
"""Instrument ids longer than a ticker fit: OCC option symbols (21), venue SecurityIDs."""
MAX_QTY = 10**15
"""Above any real order; keeps qty x price finite so no sum the Guard keeps can become inf."""
MIN_PRICE = 1e-12
MAX_PRICE = 1e12
"""Prices outside [MIN_PRICE, MAX_PRICE] are refused: subnormals and near-overflow values
make notional, P&L and exposure inf or NaN, which would switch checks off silently."""


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class InvalidOrder(KnightwatchError, ValueError):
    """An order or fill that cannot exist; the message names the field and the rule."""

    def __init__(self, field: str, rule: str, value: object) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule} (got {quoted(value)})")


def order_problem(
    id: object, strategy: object, symbol: object, side: object, qty: object, price: object
) -> tuple[str, str, object] | None:
    """Return (field, rule, value) for the first thing wrong, or None.

    Shared by construction and by the Guard's defensive check, so both apply
    exactly one definition of a valid order.
    """
    for field, value, limit in (
        ("id", id, MAX_ID_LEN),
        ("strategy", strategy, MAX_ID_LEN),
        ("symbol", symbol, MAX_SYMBOL_LEN),
    ):
        if type(value) is not str or not value:
            return field, "must be a non-empty string", value
        if len(value) > limit:
            return field, f"must be at most {limit} characters", value
    if "/" in strategy:  # type: ignore[operator]
        return (
            "strategy",
            "must not contain '/' (it joins strategy and symbol in halt keys)",
            strategy,
        )
    if type(side) is not Side:
        return "side", "must be Side.BUY or Side.SELL", side
    if type(qty) is not int:
        return "qty", "must be an integer number of units (not bool or float)", qty
    if qty <= 0:
        return "qty", "must be > 0", qty
    if qty > MAX_QTY:
        return "qty", f"must be at most {MAX_QTY:.0e}", qty
    if price is not None:
        return price_problem(price)
    return None


def price_problem(price: object) -> tuple[str, str, object] | None:
    """(field, rule, value) if `price` is not a usable price, else None (orders, fills, marks)."""
    if type(price) not in (float, int):
        return "price", "must be a number (not bool)", price
    if not math.isfinite(price):  # type: ignore[arg-type]
        return "price", "must be finite", price
    if price <= 0:  # type: ignore[operator]
        return "price", "must be > 0", price
    if not MIN_PRICE <= price <= MAX_PRICE:  # type: ignore[operator]
        return "price", f"must be between {MIN_PRICE:g} and {MAX_PRICE:g}", price
    return None


def fill_problem(fill: object) -> tuple[str, str, object] | None:
    """(field, rule, value) for a fill the Guard cannot apply (one built around validation)."""
    if type(fill) is not Fill:
        return "fill", "must be a Fill", type(fill).__name__
    f: Fill = fill
    problem = order_problem(f.order_id, "fill", f.symbol, f.side, f.qty, f.price)
    if problem is None and f.price is None:
        problem = ("price", "must be a number", None)
    if problem is not None and problem[0] == "id":
        return "order_id", problem[1], problem[2]
    return problem


class Order(msgspec.Struct, frozen=True):
    """A new order leaving the process. `price=None` is a market order.

    `parent_id` ties a child order to the parent the router is working, which is
    what lets the Guard cap children no matter what the router's loop does.
    """

    id: str
    strategy: str
    symbol: str
    side: Side
    qty: int
    price: float | None = None
    parent_id: str | None = None

    def __post_init__(self) -> None:
        if type(self.side) is not Side and self.side in ("buy", "sell"):
            msgspec.structs.force_setattr(self, "side", Side(self.side))
        problem = order_problem(
            self.id, self.strategy, self.symbol, self.side, self.qty, self.price
        )
        if problem is None and self.parent_id is not None:
            pid = self.parent_id
            if type(pid) is not str or not pid or len(pid) > MAX_ID_LEN:
                problem = ("parent_id", f"must be None or 1..{MAX_ID_LEN} characters", pid)
        if problem is not None:
            raise InvalidOrder(*problem)


class Fill(msgspec.Struct, frozen=True):
    """An execution report for an order the Guard has seen (or, if not, must learn of)."""

    order_id: str
    symbol: str
    side: Side
    qty: int
    price: float

    def __post_init__(self) -> None:
        if type(self.side) is not Side and self.side in ("buy", "sell"):
            msgspec.structs.force_setattr(self, "side", Side(self.side))
        problem = fill_problem(self)
        if problem is not None:
            raise InvalidOrder(*problem)
