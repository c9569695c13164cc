"""Exposure of orders checked without a usable reference price.

With `require_reference_price = false` a limit order passes without a reference and
is valued at its own price (README, "require_reference_price = false"). The symbol's
provisional mark must not value a later, larger order at an earlier order's price:
one share at a cent would otherwise let any size through the exposure caps.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from knightwatch.decision import RejectReason as R
from knightwatch.order import Fill, Order, Side

from .conftest import Rig

Mk = Callable[..., Rig]
CAPS = {"max_gross_exposure": 1_000_000.0, "max_net_exposure": 1_000_000.0}


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
@pytest.mark.parametrize("first_price", [0.01, 1.0, 99.0])
def test_a_later_order_counts_at_its_own_price_not_the_first_orders(
    rig: Mk, side: Side, first_price: float
) -> None:
    r = rig(require_reference_price=False, **CAPS)
    assert r.send(symbol="NEW", qty=1, price=first_price, side=side).accepted
    d = r.send(symbol="NEW", qty=100_000, price=100.0, side=side)  # $10M against $1M caps
    assert not d.accepted
    assert d.reason in (R.MAX_GROSS_EXPOSURE, R.MAX_NET_EXPOSURE)
    assert r.send(symbol="NEW", qty=9_000, price=100.0, side=side).accepted  # $900k fits


def test_a_stale_reference_does_not_value_a_limit_order_below_its_price(rig: Mk) -> None:
    r = rig(require_reference_price=False, max_price_age_s=1.0, **CAPS)
    r.clock.advance(5 * 10**9)  # IBM's reference (100) is stale now
    d = r.send(qty=5_000, price=1_000.0)  # $5M, valued at the stale 100 it was $500k
    assert d.reason is R.MAX_GROSS_EXPOSURE
    assert r.send(qty=900, price=1_000.0).accepted


def test_a_replace_without_a_reference_counts_at_its_own_price(rig: Mk) -> None:
    r = rig(require_reference_price=False, **CAPS)
    g = r.guard
    assert r.send(symbol="NEW", qty=1, price=0.01, id="a").accepted
    d = g.check_replace("a", Order("b", "rlp", "NEW", Side.BUY, 100_000, 100.0))
    assert d.reason is R.MAX_GROSS_EXPOSURE
    assert g.check_replace("a", Order("c", "rlp", "NEW", Side.BUY, 9_000, 100.0)).accepted


def test_what_is_kept_stays_valued_at_the_symbols_mark(rig: Mk) -> None:
    r = rig(require_reference_price=False, **CAPS)
    g = r.guard
    assert r.send(symbol="NEW", qty=1, price=0.01).accepted
    assert r.send(symbol="NEW", qty=9_000, price=100.0).accepted
    gross, long_, short = g.exposure()
    assert gross == pytest.approx(9_001 * 0.01) and long_ == pytest.approx(9_001 * 0.01)
    assert short == 0.0
    g.on_price("NEW", 100.0)  # a reference arrives: every order is valued at it
    assert g.exposure()[0] == pytest.approx(9_001 * 100.0)


@pytest.mark.parametrize("price", [99.0, 101.0, 150.0])
def test_over_the_gross_cap_a_reducing_order_still_passes_at_any_price(
    rig: Mk, price: float
) -> None:
    """Valued at its own price above the provisional mark, a sell that shrinks a long adds
    nothing to gross: compared at one mark, it passes over a tightened cap."""
    r = rig(require_reference_price=False, max_gross_exposure=1_000_000.0)
    g = r.guard
    assert r.send(symbol="NEW", qty=9_000, price=100.0, id="a").accepted
    g.on_fill(Fill("a", "NEW", Side.BUY, 9_000, 100.0))
    g.set_limits(msgspec.structs.replace(g.limits, max_gross_exposure=500_000.0))
    assert r.send(symbol="NEW", qty=100, price=price, side=Side.SELL).accepted
    assert r.send(symbol="NEW", qty=100, price=price).reason is R.MAX_GROSS_EXPOSURE
