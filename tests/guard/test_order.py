from __future__ import annotations

from typing import Any

import msgspec
import pytest

from knightwatch.order import Fill, InvalidOrder, Order, Side

GOOD: dict[str, Any] = dict(
    id="o1", strategy="rlp", symbol="IBM", side=Side.BUY, qty=100, price=10.0
)


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("qty", 0, "> 0"),
        ("qty", -5, "> 0"),
        ("qty", 1.5, "integer"),
        ("qty", True, "integer"),
        ("price", float("nan"), "finite"),
        ("price", float("inf"), "finite"),
        ("price", 0.0, "> 0"),
        ("price", -1.0, "> 0"),
        ("price", "10", "number"),
        ("side", "hold", "Side"),
        ("id", "", "non-empty"),
        ("id", "x" * 65, "at most 64"),
        ("symbol", "", "non-empty"),
        ("symbol", "S" * 65, "at most 64"),
        ("strategy", None, "non-empty"),
        ("strategy", "mm/BTC", "must not contain '/'"),
        ("parent_id", "", "None or"),
    ],
)
def test_invalid_order_names_field_and_rule(field: str, value: Any, rule: str) -> None:
    with pytest.raises(InvalidOrder) as err:
        Order(**{**GOOD, field: value})
    assert err.value.field == field
    assert rule in str(err.value)
    assert isinstance(err.value, ValueError)


def test_market_order_and_string_side_are_valid() -> None:
    o = Order(**{**GOOD, "price": None, "side": "sell"})
    assert o.price is None and o.side is Side.SELL


def test_order_is_immutable() -> None:
    o = Order(**GOOD)
    with pytest.raises(AttributeError):
        o.qty = 5  # type: ignore[misc]


def test_order_round_trips_through_msgspec() -> None:
    o = Order(**GOOD, parent_id="P1")
    assert msgspec.json.decode(msgspec.json.encode(o), type=Order) == o


@pytest.mark.parametrize(
    ("field", "value"), [("qty", 0), ("price", float("nan")), ("order_id", "")]
)
def test_invalid_fill(field: str, value: Any) -> None:
    kw: dict[str, Any] = dict(order_id="o1", symbol="IBM", side=Side.BUY, qty=10, price=10.0)
    with pytest.raises(InvalidOrder) as err:
        Fill(**{**kw, field: value})
    assert err.value.field == field
