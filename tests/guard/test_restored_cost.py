"""A position restored at start-up without its cost (`avg_price` 0, a positions file's short
form `SYMBOL = qty`) carries no P&L until the market moves: it costs the price it is first
marked at. Before, it counted as a gain of its whole value (a short's as a loss of it), so
a desk restoring 10,000 shares lost $1M of `max_loss` before the Guard noticed a cent."""

from __future__ import annotations

import pytest

from knightwatch.clock import SimClock
from knightwatch.decision import RejectReason as R
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Fill, Side
from knightwatch.state import Scope

NODE = (Scope.NODE, "n1")


def guard() -> Guard:
    g = Guard(Limits.off(max_loss=250_000.0), node="n1", clock=SimClock(10**12))
    g.arm("test")
    return g


def loss_halted(g: Guard) -> bool:
    h = g.halts().get(NODE)
    return h is not None and h.code is R.LOSS_LIMIT


@pytest.mark.parametrize("qty", [10_000, -10_000])
@pytest.mark.parametrize("price_first", [False, True])
def test_a_position_restored_without_its_cost_starts_at_no_pnl(qty: int, price_first: bool) -> None:
    g = guard()
    if price_first:
        g.on_price("IBM", 100.0)
    g.restore_position("IBM", qty, 0.0)
    g.on_price("IBM", 100.0)
    assert g.pnl() == 0.0
    assert not loss_halted(g)  # a short restored so halted at its first price
    # the market moves 30 against it: $300,000 lost > max_loss 250,000
    g.on_price("IBM", 70.0 if qty > 0 else 130.0)
    assert g.pnl() == pytest.approx(-300_000.0)
    assert loss_halted(g)


def test_a_position_restored_without_its_cost_costs_its_first_fill_before_any_price() -> None:
    g = guard()
    g.restore_position("IBM", 10_000, 0.0)
    g.on_external_fill(Fill("x1", "IBM", Side.SELL, 4_000, 100.0))
    assert g.pnl() == 0.0  # not $400,000 realized on shares that cost nothing
    g.on_price("IBM", 70.0)
    assert g.pnl() == pytest.approx(-180_000.0)  # 6,000 left, 30 down each


def test_a_restored_cost_is_kept() -> None:
    g = guard()
    g.restore_position("IBM", 600, 99.0)
    g.on_price("IBM", 100.0)
    assert g.pnl() == pytest.approx(600.0)
