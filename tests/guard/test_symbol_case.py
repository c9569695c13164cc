"""A symbol in any case is one security: its table in the limits file holds it however the
order spells it. The Guard already halted and restricted a symbol in any case, but looked its
override up by exact spelling: `[symbol.ibm] max_order_qty = 5` left orders in `IBM` at the
fleet's 50,000, and a lower-case table's lot size left `BTC` counted in whole units."""

from __future__ import annotations

import pytest

from knightwatch.decision import RejectReason as R
from knightwatch.guard import Guard
from knightwatch.limits import Limits, Override

from .conftest import Rig


@pytest.mark.parametrize(("table", "ordered"), [("ibm", "IBM"), ("IBM", "ibm"), ("Ibm", "iBM")])
def test_a_symbols_override_holds_however_the_order_spells_it(table: str, ordered: str) -> None:
    r = Rig(max_order_qty=50_000, symbol={table: Override(max_order_qty=5)})
    r.guard.on_price(ordered, 100.0)
    assert r.send(qty=5, symbol=ordered).accepted
    refused = r.send(qty=6, symbol=ordered)
    assert not refused.accepted and R(refused.reason) is R.MAX_ORDER_QTY, refused


def test_another_symbol_keeps_the_fleets_limit() -> None:
    r = Rig(max_order_qty=50_000, symbol={"ibm": Override(max_order_qty=5)})
    r.guard.on_price("IBMX", 100.0)
    assert r.send(qty=50_000, symbol="IBMX").accepted


@pytest.mark.parametrize("ordered", ["BTC", "btc", "Btc"])
def test_a_symbols_lot_size_holds_however_it_is_spelled(ordered: str) -> None:
    g = Guard(Limits.off(symbol={"btc": Override(lot_size=0.001)}))
    assert g.lots(ordered, "0.002") == 2
    assert g.quantity(ordered, 3) == g.quantity("btc", 3)
    assert Limits.off(symbol={"btc": Override(lot_size=0.001)}).lot(ordered) == 0.001
