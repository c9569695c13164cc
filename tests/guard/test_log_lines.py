"""The Guard's log lines (BLOCK_ORDER, HALT) are one line each, whatever text an order or a
halt carries: a newline in an order id, a strategy or a symbol, or in a halt's key or
actor, forged a second log line ("WARNING HALT node=..."), and an escape sequence reached
the operator's terminal. Such text is shown quoted, as the detail already is."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from knightwatch.order import Order, Side
from knightwatch.state import Scope

from .conftest import Rig

FORGED = "\nWARNING HALT node=n1 scope=fleet forged"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [rec.getMessage() for rec in caplog.records if rec.name == "knightwatch.guard"]


@pytest.mark.parametrize("field", ["id", "strategy", "symbol", "parent_id"])
@pytest.mark.parametrize("text", ["x" + FORGED, "x\x1b[2J"])
def test_a_refused_orders_log_line_shows_its_text_quoted_on_one_line(
    rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture, field: str, text: str
) -> None:
    r = rig(max_order_qty=10)
    kw = {"id": "o1", "strategy": "rlp", "symbol": "IBM", "parent_id": "p1", field: text}
    order = Order(kw["id"], kw["strategy"], kw["symbol"], Side.BUY, 11, 100.0, kw["parent_id"])
    with caplog.at_level(logging.WARNING, logger="knightwatch.guard"):
        assert not r.guard.check(order).accepted
    (line,) = lines(caplog)
    assert line.startswith("BLOCK_ORDER ")
    assert "\n" not in line and "\x1b" not in line
    assert repr(text) in line


def test_a_halts_log_line_shows_its_key_and_actor_quoted_on_one_line(
    rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    r = rig()
    with caplog.at_level(logging.WARNING, logger="knightwatch.guard"):
        r.guard.halt(Scope.STRATEGY, "rlp" + FORGED, "drill", "ops\x1b[2J")
    (line,) = lines(caplog)
    assert line.startswith("HALT ") and "\n" not in line and "\x1b" not in line
    assert repr("rlp" + FORGED) in line
