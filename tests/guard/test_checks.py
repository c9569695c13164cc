"""One rule at a time, at its boundary: exactly at the limit passes, one unit over is blocked."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from knightwatch.audit import FlightRecorder, MemorySink
from knightwatch.decision import RejectReason as R
from knightwatch.guard import Guard, RecorderUnavailable
from knightwatch.order import Fill, Side
from knightwatch.state import Scope, TradingState, pair_key

from .conftest import Rig

Mk = Callable[..., Rig]
MS = 1_000_000
S = 1_000_000_000


def reason(d: Any) -> R:
    assert not d.accepted, d
    return R(d.reason)


# 1. trading state ------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "key"),
    [
        (Scope.FLEET, "fleet"),
        (Scope.NODE, "n1"),
        (Scope.STRATEGY, "rlp"),
        (Scope.SYMBOL, "IBM"),
        (Scope.STRATEGY_SYMBOL, "rlp/IBM"),
    ],
)
def test_halt_blocks_its_scope_until_resumed(rig: Mk, scope: Scope, key: str) -> None:
    r = rig()
    r.guard.halt(scope, key, "drill", actor="alice")
    d = r.send()
    assert reason(d) is R.HALTED and "drill" in d.detail and "alice" in d.detail
    r.clock.advance(3600 * S)
    assert reason(r.send()) is R.HALTED  # sticky: time does not clear it
    assert r.guard.resume(scope, key, "all clear", actor="bob")
    assert r.send().accepted


def test_halt_of_other_scopes_does_not_block(rig: Mk) -> None:
    r = rig()
    r.guard.halt(Scope.NODE, "n2", "other node", actor="a")
    r.guard.halt(Scope.SYMBOL, "AAPL", "other symbol", actor="a")
    r.guard.halt(Scope.STRATEGY, "mm", "other strategy", actor="a")
    assert r.send().accepted


def test_reducing_allows_only_orders_that_shrink_the_position(rig: Mk) -> None:
    r = rig()
    d = r.guard.check(r.order(qty=300, id="b1"))
    assert d.accepted
    r.guard.on_fill(Fill("b1", "IBM", Side.BUY, 300, 100.0))
    r.guard.halt(Scope.SYMBOL, "IBM", "wind down", actor="ops", state=TradingState.REDUCING)
    assert reason(r.send(side=Side.BUY, qty=1)) is R.REDUCING_ONLY
    assert r.send(side=Side.SELL, qty=200).accepted  # working sell 200, position 300
    assert r.send(side=Side.SELL, qty=100).accepted  # exactly flat if both fill
    assert reason(r.send(side=Side.SELL, qty=1)) is R.REDUCING_ONLY  # would flip short


def test_reducing_judges_each_part_of_a_child_where_it_would_be_booked(rig: Mk) -> None:
    """A drain judges a customer's child by the customer's line and the firm's part by the
    firm's book: a customer's sell opening a customer short does not pass because the
    firm is long, and a customer closing its short is not blocked because the firm is flat."""
    r = rig(max_parent_qty_multiple=2.0)
    g = r.guard
    assert r.send(qty=300, id="firm").accepted
    g.on_fill(Fill("firm", "IBM", Side.BUY, 300, 100.0))  # the firm: long 300
    g.register_parent("S", 200, account="acme")
    assert r.send(side=Side.SELL, qty=200, parent_id="S", id="s1").accepted
    g.on_fill(Fill("s1", "IBM", Side.SELL, 200, 100.0))  # the customer: short 200
    g.register_parent("T", 100, account="acme")
    g.register_parent("B", 300, account="acme")
    g.halt(Scope.SYMBOL, "IBM", "wind down", actor="ops", state=TradingState.REDUCING)
    kept = (g.customer_position("acme", "IBM"), g.position("IBM"))
    # the customer's sell adds to the customer's short, whatever the firm holds
    assert reason(r.send(side=Side.SELL, qty=50, parent_id="T")) is R.REDUCING_ONLY
    # the firm's sell (no parent) shrinks the firm's long
    assert r.send(side=Side.SELL, qty=100).accepted
    # the customer's buy shrinks the customer's short, though the firm is long
    assert r.send(side=Side.BUY, qty=150, parent_id="B").accepted
    # beyond the parent the rest is the firm's: a buy adds to the firm's long
    assert reason(r.send(side=Side.BUY, qty=200, parent_id="B")) is R.REDUCING_ONLY
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == kept
    assert g.parent_committed("T") == 0 and g.parent_committed("B") == 150


def test_a_strategy_with_a_slash_never_shares_a_halt_key_with_another_pair(rig: Mk) -> None:
    """The strategy/symbol halt key joins the two with '/', which a symbol may hold: a
    strategy holding one is refused (once per lane), so a halt of mm in BTC/USDT
    stops no other pair and no order of another pair escapes it."""
    r = rig()
    g = r.guard
    g.on_price("BTC/USDT", 100.0)
    g.on_price("USDT", 100.0)
    g.halt(Scope.STRATEGY_SYMBOL, pair_key("mm", "BTC/USDT"), "runaway", actor="ops")
    assert reason(r.send(strategy="mm", symbol="BTC/USDT")) is R.HALTED
    odd = r.order(strategy="mm", symbol="USDT")
    msgspec.structs.force_setattr(odd, "strategy", "mm/BTC")  # built around validation
    for _ in range(2):
        d = g.check(odd)
        assert reason(d) is R.INVALID_ORDER and "strategy: must not contain '/'" in d.detail
    assert r.send(strategy="mm", symbol="USDT").accepted
    assert r.send(strategy="mx", symbol="BTC/USDT").accepted


def test_cancels_pass_in_every_state(rig: Mk) -> None:
    r = rig()
    assert r.send(id="w1").accepted
    r.guard.halt(Scope.FLEET, "", "kill", actor="ops")
    r.guard.disarm()
    r.guard.on_cancel("w1")  # halted and unarmed: the cancel still frees the quantity
    assert r.guard.working_qty("IBM") == (0, 0)


# 2. armed and lease -----------------------------------------------------------


def test_new_guard_blocks_until_armed(rig: Mk) -> None:
    r = rig()
    r.guard.disarm()
    assert reason(r.send()) is R.NOT_ARMED
    r.guard.arm()
    assert r.send().accepted


def test_lease_blocks_when_never_renewed_and_after_expiry(rig: Mk) -> None:
    r = rig(lease_timeout_s=0.5)
    assert reason(r.send()) is R.LEASE_EXPIRED
    r.guard.renew_lease()
    r.clock.advance(500 * MS - 1)
    assert r.send().accepted
    r.clock.advance(1)
    assert reason(r.send()) is R.LEASE_EXPIRED


def test_expire_lease_blocks_at_once_and_renewal_restores(rig: Mk) -> None:
    r = rig(lease_timeout_s=10.0)
    r.guard.renew_lease()
    assert r.send().accepted
    r.guard.expire_lease("control plane disconnected")
    d = r.send()
    assert reason(d) is R.LEASE_EXPIRED and "control plane disconnected" in d.detail
    r.guard.renew_lease()
    assert r.send().accepted
    with pytest.raises(ValueError, match="no lease"):
        rig().guard.expire_lease("x")


# 3. validity, duplicates, symbol lists ------------------------------------------


def test_objects_that_bypassed_validation_are_blocked(rig: Mk) -> None:
    r = rig()
    o = r.order()
    msgspec.structs.force_setattr(o, "qty", -5)
    d = r.guard.check(o)
    assert reason(d) is R.INVALID_ORDER and "qty" in d.detail
    o2 = r.order()
    msgspec.structs.force_setattr(o2, "price", float("nan"))
    assert reason(r.guard.check(o2)) is R.INVALID_ORDER


@pytest.mark.parametrize("thing", [None, 42, "order", {"id": "x"}, object()])
def test_check_never_raises(rig: Mk, thing: object) -> None:
    r = rig()
    assert reason(r.guard.check(thing)) is R.INVALID_ORDER  # type: ignore[arg-type]


def test_duplicate_client_order_id(rig: Mk) -> None:
    r = rig()
    assert r.send(id="dup").accepted
    assert reason(r.send(id="dup")) is R.DUPLICATE_ORDER_ID


def test_symbol_allow_list_and_restricted_list(rig: Mk) -> None:
    r = rig(allowed_symbols=["IBM", "AAPL"], restricted_symbols=["AAPL"])
    r.guard.on_price("AAPL", 10.0)
    r.guard.on_price("MSFT", 10.0)
    assert r.send().accepted
    assert reason(r.send(symbol="MSFT", price=10.0)) is R.SYMBOL_NOT_ALLOWED
    assert reason(r.send(symbol="AAPL", price=10.0)) is R.SYMBOL_RESTRICTED


@pytest.mark.parametrize("symbol", ["ibm", "Ibm", "IBM ", " IBM", "IBM\t", "IBM\x00"])
def test_the_restricted_symbol_spelt_otherwise_does_not_get_out(rig: Mk, symbol: str) -> None:
    """Another case is the same security to a venue that does not care for case; padding or
    a control character names nothing the limits can hold (they refuse such names)."""
    r = rig(restricted_symbols=["IBM"], require_reference_price=False)
    d = r.send(symbol=symbol)
    assert not d.accepted
    if symbol.isalpha():
        assert reason(d) is R.SYMBOL_RESTRICTED
    else:
        assert reason(d) is R.INVALID_ORDER and d.detail.startswith("symbol: must not")
    assert r.send(symbol="IBMX").accepted  # another symbol, not a spelling of it


@pytest.mark.parametrize("strategy", ["rlp ", " rlp", "rlp\n"])
def test_a_padded_strategy_does_not_escape_its_halt(rig: Mk, strategy: str) -> None:
    r = rig()
    r.guard.halt(Scope.STRATEGY, "rlp", "kill", "op")
    d = r.send(strategy=strategy)
    assert reason(d) is R.INVALID_ORDER and d.detail.startswith("strategy: must not")


# 4. size and notional ------------------------------------------------------------


def test_max_order_qty_boundary(rig: Mk) -> None:
    r = rig(max_order_qty=10_000)
    assert r.send(qty=10_000).accepted
    d = r.send(qty=10_001)
    assert reason(d) is R.MAX_ORDER_QTY
    assert d.detail == "qty 10001 > max_order_qty 10000 for strategy rlp"


def test_max_order_notional_boundary_market_orders_use_reference(rig: Mk) -> None:
    r = rig(max_order_notional=50_000.0)
    assert r.send(qty=500, price=None).accepted  # 500 x 100.0 reference
    assert reason(r.send(qty=501, price=None)) is R.MAX_ORDER_NOTIONAL
    assert r.send(qty=500, price=100.0).accepted
    assert reason(r.send(qty=500, price=100.02)) is R.MAX_ORDER_NOTIONAL


def test_no_reference_price_blocks_unless_configured(rig: Mk) -> None:
    r = rig()
    assert reason(r.send(symbol="NEW", price=5.0)) is R.NO_REFERENCE_PRICE
    loose = rig(require_reference_price=False)
    assert loose.send(symbol="NEW", price=5.0).accepted
    assert reason(loose.send(symbol="NEW", price=None)) is R.NO_REFERENCE_PRICE


# 5. collar and stale reference ---------------------------------------------------


def test_price_collar_percent_boundary(rig: Mk) -> None:
    r = rig(price_collar_pct=0.05)
    assert r.send(price=105.0).accepted
    assert r.send(price=95.0, side=Side.SELL).accepted
    assert reason(r.send(price=105.01)) is R.PRICE_COLLAR
    assert reason(r.send(price=94.99, side=Side.SELL)) is R.PRICE_COLLAR


def test_price_collar_ticks_boundary(rig: Mk) -> None:
    r = rig(price_collar_ticks=10, tick_size=0.01)
    assert r.send(price=100.10).accepted
    assert reason(r.send(price=100.11)) is R.PRICE_COLLAR


def test_a_collar_refusal_quotes_prices_as_people_write_them(rig: Mk) -> None:
    """Per-unit prices are products of floats (60,000 x a 0.00001 step is
    0.6000000000000001): the refusal quoted that noise, and the docs promise `reference
    0.6`. Each figure is quoted to 15 significant digits, which round-trips every price
    a person writes."""
    for limits in ({"price_collar_pct": 0.05}, {"price_collar_ticks": 10, "tick_size": 0.00001}):
        r = rig(**limits)
        r.guard.on_price("BTC", 60_000 * 0.00001)
        refused = r.send(symbol="BTC", price=0.7 * 1.0000000000000002)
        assert reason(refused) is R.PRICE_COLLAR
        assert "price 0.7 " in refused.detail and "reference 0.6 " in refused.detail, refused.detail


def test_stale_reference_price_boundary(rig: Mk) -> None:
    r = rig(max_price_age_s=2.0)
    r.clock.advance(2 * S)
    assert r.send().accepted
    r.clock.advance(1)
    assert reason(r.send()) is R.STALE_REFERENCE_PRICE
    r.guard.on_price("IBM", 100.0)
    assert r.send().accepted


# 6. message rates ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "code", "kw"),
    [
        ("max_orders_per_s_node", R.RATE_NODE, lambda i: {"strategy": f"s{i}", "symbol": "IBM"}),
        ("max_orders_per_s_strategy", R.RATE_STRATEGY, lambda i: {}),
        ("max_orders_per_s_symbol", R.RATE_SYMBOL, lambda i: {"strategy": f"s{i}"}),
    ],
)
def test_rate_per_second_boundary_and_recovery(
    rig: Mk, key: str, code: R, kw: Callable[[int], dict[str, Any]]
) -> None:
    r = rig(**{key: 5})
    for i in range(5):
        assert r.send(**kw(i)).accepted
        r.clock.advance(100 * MS)
    assert reason(r.send(**kw(5))) is code
    r.clock.advance(S - 500 * MS)  # the first order is now exactly 1 s old: out of the window
    assert r.send(**kw(6)).accepted


def test_rate_per_minute(rig: Mk) -> None:
    r = rig(max_orders_per_min_node=3)
    for _ in range(3):
        assert r.send().accepted
        r.clock.advance(10 * S)
    assert reason(r.send()) is R.RATE_NODE
    r.clock.advance(30 * S)
    assert r.send().accepted


# 7. repeated-execution throttle -----------------------------------------------------


def test_execution_throttle_halts_strategy_symbol(rig: Mk) -> None:
    r = rig(max_executions_per_window=3, execution_window_s=1.0)
    for i in range(4):
        o = r.order(id=f"x{i}", qty=10)
        assert r.guard.check(o).accepted
        r.guard.on_fill(Fill(o.id, "IBM", Side.BUY, 10, 100.0))
        if i < 3:
            assert r.guard.trading_state(Scope.STRATEGY_SYMBOL, "rlp/IBM") is TradingState.ACTIVE
    assert r.guard.trading_state(Scope.STRATEGY_SYMBOL, "rlp/IBM") is TradingState.HALTED
    assert reason(r.send()) is R.EXECUTION_THROTTLE
    assert r.send(strategy="other").accepted  # only that strategy in that symbol
    r.guard.resume(Scope.STRATEGY_SYMBOL, "rlp/IBM", "checked", actor="ops")
    assert r.send().accepted


def test_throttle_counts_the_firms_executions_not_a_customers_within_its_parent(rig: Mk) -> None:
    r = rig(max_executions_per_window=3, execution_window_s=1.0)
    r.guard.register_parent("P", 100)
    for i in range(10):  # ten customer executions of one parent: bounded by it, not a loop
        o = r.order(id=f"c{i}", qty=10, parent_id="P")
        assert r.guard.check(o).accepted
        r.guard.on_fill(Fill(o.id, "IBM", Side.BUY, 10, 100.0))
    assert r.guard.trading_state(Scope.STRATEGY_SYMBOL, "rlp/IBM") is TradingState.ACTIVE
    for i in range(4):  # the parent is filled: these overfill it, as Power Peg did
        o = r.order(id=f"x{i}", qty=10, parent_id="P")
        assert r.guard.check(o).accepted
        r.guard.on_fill(Fill(o.id, "IBM", Side.BUY, 10, 100.0))
    assert r.guard.trading_state(Scope.STRATEGY_SYMBOL, "rlp/IBM") is TradingState.HALTED


def test_executions_spread_over_the_window_do_not_halt(rig: Mk) -> None:
    r = rig(max_executions_per_window=3, execution_window_s=1.0)
    for i in range(10):
        o = r.order(id=f"x{i}", qty=10)
        assert r.guard.check(o).accepted
        r.guard.on_fill(Fill(o.id, "IBM", Side.BUY, 10, 100.0))
        r.clock.advance(334 * MS)
    assert r.guard.trading_state(Scope.STRATEGY_SYMBOL, "rlp/IBM") is TradingState.ACTIVE


# 8. parent reconciliation -------------------------------------------------------------


def test_children_cannot_exceed_parent_quantity(rig: Mk) -> None:
    r = rig(max_parent_qty_multiple=1.0)
    r.guard.register_parent("P", 1_000)
    for _ in range(10):
        assert r.send(qty=100, parent_id="P").accepted
    d = r.send(qty=1, parent_id="P")
    assert reason(d) is R.PARENT_QTY_EXCEEDED and "1001" in d.detail


def test_filled_children_still_count_against_the_parent(rig: Mk) -> None:
    """Power Peg's defect: it never saw fills. The Guard counts them whatever the router does."""
    r = rig(max_parent_qty_multiple=1.0)
    r.guard.register_parent("P", 200)
    for i in range(2):
        o = r.order(qty=100, parent_id="P", id=f"c{i}")
        assert r.guard.check(o).accepted
        r.guard.on_fill(Fill(o.id, "IBM", Side.BUY, 100, 100.0))
    assert reason(r.send(qty=100, parent_id="P")) is R.PARENT_QTY_EXCEEDED


def test_cancelled_child_frees_parent_quantity(rig: Mk) -> None:
    r = rig(max_parent_qty_multiple=1.0)
    r.guard.register_parent("P", 100)
    assert r.send(qty=100, parent_id="P", id="c1").accepted
    assert reason(r.send(qty=100, parent_id="P")) is R.PARENT_QTY_EXCEEDED
    r.guard.on_cancel("c1")
    assert r.send(qty=100, parent_id="P").accepted


def test_max_child_orders_boundary(rig: Mk) -> None:
    r = rig(max_child_orders_per_parent=3)
    r.guard.register_parent("P", 10_000)
    for _ in range(3):
        assert r.send(qty=1, parent_id="P").accepted
    assert reason(r.send(qty=1, parent_id="P")) is R.MAX_CHILD_ORDERS


def test_unknown_parent_is_blocked(rig: Mk) -> None:
    r = rig()
    assert reason(r.send(parent_id="ghost")) is R.UNKNOWN_PARENT
    assert rig(require_registered_parent=False).send(parent_id="ghost").accepted


def test_register_parent_rejects_bad_input(rig: Mk) -> None:
    r = rig()
    r.guard.register_parent("P", 10)
    with pytest.raises(ValueError, match="already registered"):
        r.guard.register_parent("P", 10)
    with pytest.raises(ValueError, match="positive integer"):
        r.guard.register_parent("Q", 0)


def test_a_parent_larger_than_any_order_is_refused_with_a_clear_error(rig: Mk) -> None:
    r = rig(max_parent_qty_multiple=1.5)
    with pytest.raises(ValueError, match=r"register_parent: qty must be .* at most 1e\+15"):
        r.guard.register_parent("Q", 10**400)  # would overflow the float it is capped in
    assert r.guard.parent_qty("Q") is None
    r.guard.register_parent("Q", 10**15)
    assert r.guard.parent_qty("Q") == 10**15


# 9. position and exposure, counting working orders ---------------------------------------


def test_position_counts_working_orders(rig: Mk) -> None:
    r = rig(max_position_qty=1_000)
    assert r.send(qty=600).accepted  # working, not filled
    assert r.send(qty=400).accepted  # exactly at the cap
    assert reason(r.send(qty=1)) is R.MAX_POSITION
    assert r.send(qty=1_000, side=Side.SELL).accepted  # short side has its own room
    assert reason(r.send(qty=1_001, side=Side.SELL)) is R.MAX_POSITION


def test_gross_exposure_boundary_across_symbols(rig: Mk) -> None:
    r = rig(max_gross_exposure=100_000.0)
    r.guard.on_price("AAPL", 50.0)
    assert r.send(qty=600).accepted  # 60,000
    assert r.send(symbol="AAPL", qty=800, price=50.0, side=Side.SELL).accepted  # 40,000
    assert reason(r.send(symbol="AAPL", qty=1, price=50.0, side=Side.SELL)) is R.MAX_GROSS_EXPOSURE


def test_net_exposure_boundary(rig: Mk) -> None:
    r = rig(max_net_exposure=50_000.0)
    r.guard.on_price("AAPL", 50.0)
    assert r.send(qty=500).accepted  # long 50,000
    assert reason(r.send(symbol="AAPL", qty=1, price=50.0)) is R.MAX_NET_EXPOSURE
    assert r.send(symbol="AAPL", qty=1_000, price=50.0, side=Side.SELL).accepted


def test_customer_fills_within_the_parent_are_not_the_firms_exposure(rig: Mk) -> None:
    """Agency flow many times the firm's own limits passes: it is the customer's."""
    r = rig(max_gross_exposure=10_000.0, max_position_qty=100)
    r.guard.register_parent("P", 5_000, account="acme")
    for i in range(50):
        o = r.order(qty=100, parent_id="P", id=f"c{i}")
        assert r.guard.check(o).accepted
        r.guard.on_fill(Fill(o.id, "IBM", Side.BUY, 100, 100.0))
    assert r.guard.position("IBM") == 0 and r.guard.exposure() == (0.0, 0.0, 0.0)
    assert r.guard.customer_position("acme", "IBM") == 5_000
    assert r.guard.customer_exposure("acme")[0] == pytest.approx(500_000.0)


def test_children_beyond_the_parent_are_principal_and_hit_the_firms_limits(rig: Mk) -> None:
    r = rig(max_gross_exposure=10_000.0)  # no parent quantity check: the overfill gets out
    r.guard.register_parent("P", 100)
    c1 = r.order(qty=100, parent_id="P", id="c1")
    assert r.guard.check(c1).accepted
    r.guard.on_fill(Fill("c1", "IBM", Side.BUY, 100, 100.0))
    assert r.send(qty=100, parent_id="P").accepted  # principal now: exactly 10,000
    d = r.send(qty=1, parent_id="P")
    assert reason(d) is R.MAX_GROSS_EXPOSURE and "principal" in d.detail
    assert r.guard.exposure()[0] == pytest.approx(10_000.0)  # the working overfill counts


def test_a_child_straddling_the_parent_splits_its_working_quantity(rig: Mk) -> None:
    r = rig(max_position_qty=50)
    r.guard.register_parent("P", 100)
    assert r.send(qty=150, parent_id="P", id="c1").accepted  # 100 customer, 50 principal
    assert r.guard.working_qty("IBM") == (50, 0)
    assert reason(r.send(qty=1, parent_id="P")) is R.MAX_POSITION
    r.guard.on_fill(Fill("c1", "IBM", Side.BUY, 150, 100.0))
    assert r.guard.position("IBM") == 50
    assert r.guard.customer_position("P", "IBM") == 100  # no account given: the parent's own


def test_customer_gross_exposure_boundary_per_account(rig: Mk) -> None:
    r = rig(max_customer_gross_exposure=100_000.0)
    r.guard.on_price("AAPL", 50.0)
    r.guard.register_parent("P1", 10_000, account="acme")
    r.guard.register_parent("P2", 10_000, account="acme")
    r.guard.register_parent("Q", 10_000, account="other")
    assert r.send(qty=600, parent_id="P1").accepted  # 60,000 working
    assert r.send(symbol="AAPL", qty=800, price=50.0, side=Side.SELL, parent_id="P2").accepted
    d = r.send(qty=1, parent_id="P2")  # the account, across its parents and symbols
    assert reason(d) is R.CUSTOMER_GROSS_EXPOSURE and "customer acme" in d.detail
    assert r.send(qty=1_000, parent_id="Q").accepted  # another customer has its own limit
    assert r.guard.exposure() == (0.0, 0.0, 0.0)


def test_a_lanes_first_child_counts_on_the_accounts_line_in_the_symbol(rig: Mk) -> None:
    """A strategy's first order in a symbol is checked before its lane is kept: a child
    of it still counts on the account's existing position there, not on a fresh line."""
    r = rig(max_customer_gross_exposure=100_000.0)
    r.guard.register_parent("P1", 10_000, account="acme")
    r.guard.register_parent("P2", 10_000, account="acme")
    assert r.send(qty=600, parent_id="P1", id="c1").accepted
    r.guard.on_fill(Fill("c1", "IBM", Side.BUY, 600, 100.0))  # acme is long 600: 60,000
    # another strategy's first order in IBM sells 500: at worst acme is long 600
    d = r.send(qty=500, side=Side.SELL, parent_id="P2", strategy="other", id="c2")
    assert d.accepted
    r.guard.on_fill(Fill("c2", "IBM", Side.SELL, 500, 100.0))
    assert r.guard.customer_position("acme", "IBM") == 100
    assert r.guard.customer_exposure("acme")[0] == 10_000.0
    assert reason(r.send(qty=901, parent_id="P2", strategy="other")) is R.CUSTOMER_GROSS_EXPOSURE


def test_customer_net_exposure_boundary_and_cancel_frees_it(rig: Mk) -> None:
    r = rig(max_customer_net_exposure=50_000.0)
    r.guard.register_parent("P", 10_000, account="acme")
    assert r.send(qty=500, parent_id="P", id="c1").accepted  # long 50,000
    assert reason(r.send(qty=1, parent_id="P")) is R.CUSTOMER_NET_EXPOSURE
    assert r.send(qty=500, side=Side.SELL, parent_id="P").accepted  # the short side
    r.guard.on_cancel("c1")
    assert r.send(qty=500, parent_id="P").accepted


def test_a_position_over_a_tightened_limit_can_still_be_reduced(rig: Mk) -> None:
    """After `set_limits` tightens below what is held, the long can be sold down (even in
    a REDUCING drain); buying more, or selling through to a short over it, is refused."""
    r = rig(max_position_qty=200)
    assert r.send(qty=100, id="b").accepted
    r.guard.on_fill(Fill("b", "IBM", Side.BUY, 100, 100.0))
    r.guard.set_limits(msgspec.structs.replace(r.limits, max_position_qty=50), actor="risk")
    assert reason(r.send(qty=1)) is R.MAX_POSITION
    r.guard.halt(Scope.NODE, "n1", "drain", "op", state=TradingState.REDUCING)
    assert r.send(qty=60, side=Side.SELL).accepted  # long 100 -> 40 at worst
    r.guard.resume(Scope.NODE, "n1", "drained", "op")
    assert r.send(qty=90, side=Side.SELL).accepted  # at worst short 50: at the limit
    d = r.send(qty=1, side=Side.SELL)
    assert reason(d) is R.MAX_POSITION and "would reach -51" in d.detail


def test_gross_over_the_limit_after_a_price_move_still_lets_the_position_shrink(
    rig: Mk,
) -> None:
    r = rig(max_gross_exposure=20_000.0)
    assert r.send(qty=100, id="b").accepted
    r.guard.on_fill(Fill("b", "IBM", Side.BUY, 100, 100.0))
    r.guard.on_price("IBM", 300.0)  # long 100 at 300: 30,000 > 20,000
    assert reason(r.send(qty=1, price=300.0)) is R.MAX_GROSS_EXPOSURE
    assert r.send(qty=50, side=Side.SELL, price=300.0).accepted  # gross stays 30,000
    d = r.send(qty=151, side=Side.SELL, price=300.0)  # at worst short 101: more than held
    assert reason(d) is R.MAX_GROSS_EXPOSURE


def test_a_customer_over_its_gross_limit_can_still_reduce(rig: Mk) -> None:
    r = rig(max_customer_gross_exposure=20_000.0)
    r.guard.register_parent("P", 1_000, account="acme")
    r.guard.register_parent("Q", 1_000, account="acme")
    assert r.send(qty=100, id="b", parent_id="P").accepted
    r.guard.on_fill(Fill("b", "IBM", Side.BUY, 100, 100.0))
    r.guard.on_price("IBM", 300.0)  # acme long 100 at 300: 30,000 > 20,000
    assert reason(r.send(qty=1, price=300.0, parent_id="Q")) is R.CUSTOMER_GROSS_EXPOSURE
    assert r.send(qty=50, side=Side.SELL, price=300.0, parent_id="Q").accepted
    d = r.send(qty=151, side=Side.SELL, price=300.0, parent_id="Q")
    assert reason(d) is R.CUSTOMER_GROSS_EXPOSURE


def test_a_replace_may_reduce_a_position_over_a_tightened_limit(rig: Mk) -> None:
    """A replace's increase is checked as a new order's: only on the side it moves."""
    r = rig(max_position_qty=200, max_gross_exposure=50_000.0)
    assert r.send(qty=150, id="b").accepted
    r.guard.on_fill(Fill("b", "IBM", Side.BUY, 150, 100.0))
    assert r.send(qty=10, side=Side.SELL, id="s").accepted
    r.guard.set_limits(
        msgspec.structs.replace(r.limits, max_position_qty=100, max_gross_exposure=10_000.0),
        actor="risk",
    )
    d = r.guard.check_replace("s", r.order(qty=100, side=Side.SELL, id="s2"))
    assert d.accepted, d.detail
    d = r.guard.check_replace("b2", r.order(qty=1, id="x"))  # nothing working: refused
    assert reason(d) is R.INVALID_ORDER


def test_customer_fills_move_neither_pnl_nor_the_loss_stop(rig: Mk) -> None:
    r = rig(max_loss=1_000.0)
    r.guard.register_parent("P", 100)
    o = r.order(qty=200, parent_id="P", id="c1")
    assert r.guard.check(o).accepted
    r.guard.on_fill(Fill("c1", "IBM", Side.BUY, 200, 100.0))  # 100 customer, 100 principal
    r.guard.on_price("IBM", 95.0)  # the firm's 100 lose 500; the customer's are theirs
    assert r.guard.pnl() == pytest.approx(-500.0)
    assert r.guard.trading_state(Scope.NODE, "n1") is TradingState.ACTIVE
    r.guard.on_price("IBM", 89.99)
    assert r.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED


def test_principal_turnover_only(rig: Mk) -> None:
    r = rig(max_turnover_per_min=10_000.0)
    r.guard.register_parent("P", 1_000)
    assert r.send(qty=1_000, parent_id="P").accepted  # 100,000 of customer flow
    assert r.send(qty=100).accepted  # 10,000 of the firm's own
    assert reason(r.send(qty=1)) is R.MAX_TURNOVER


# 10. turnover, cancel-to-fill, loss ---------------------------------------------------------


def test_turnover_per_minute_boundary(rig: Mk) -> None:
    r = rig(max_turnover_per_min=100_000.0)
    assert r.send(qty=600).accepted
    assert r.send(qty=400).accepted
    assert reason(r.send(qty=1)) is R.MAX_TURNOVER
    r.clock.advance(60 * S)
    assert r.send(qty=1_000).accepted


def test_cancel_to_fill_ratio_halts_the_node_until_resumed(rig: Mk) -> None:
    r = rig(max_cancel_to_fill_ratio=2.0, cancel_ratio_min_cancels=3)
    o = r.order(id="f")
    assert r.guard.check(o).accepted
    r.guard.on_fill(Fill("f", "IBM", Side.BUY, 100, 100.0))
    for i in range(50):
        r.guard.on_cancel(f"stray{i}")  # cancels of orders it never saw do not count
    for i in range(2):
        assert r.send(id=f"c{i}").accepted
        r.guard.on_cancel(f"c{i}")
    assert r.send(id="c2").accepted  # 2 cancels: below the minimum sample
    r.guard.on_cancel("c2")  # 3 cancels to 1 fill > 2.0
    assert reason(r.send()) is R.CANCEL_FILL_RATIO
    assert r.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED
    assert reason(r.send()) is R.CANCEL_FILL_RATIO  # latched, not re-evaluated
    r.guard.resume(Scope.NODE, "n1", "message discipline checked", actor="ops")
    assert r.send().accepted  # counting starts afresh


def test_an_amend_storm_counts_in_the_cancel_to_fill_ratio_and_is_halted_there(rig: Mk) -> None:
    """A replace the venue takes cancels the original: amending one order over and over,
    never filling, is a cancel storm, and the replace path checks the ratio as a new
    order does (an amend-only storm sends no new order to find it)."""
    r = rig(max_cancel_to_fill_ratio=5.0, cancel_ratio_min_cancels=10)
    g = r.guard
    assert g.check(r.order(id="a0")).accepted
    g.on_fill(Fill("a0", "IBM", Side.BUY, 50, 100.0))  # one fill; 50 left working
    for i in range(1, 6):
        assert g.check_replace(f"a{i - 1}", r.order(id=f"a{i}", price=100.0 + i / 100))
        g.on_replace_ack(f"a{i}")
    g.on_replace_reject("nothing")  # not a replace it sent: counts nothing
    for i in range(6, 11):
        assert g.check_replace(f"a{i - 1}", r.order(id=f"a{i}", price=100.0 + i / 100))
        g.on_replace_ack(f"a{i}")  # the tenth: 10 cancels to 1 fill > 5
    d = g.check_replace("a10", r.order(id="a11", price=101.0))
    assert reason(d) is R.CANCEL_FILL_RATIO and "10 cancels to 1 fills" in d.detail
    assert g.trading_state(Scope.NODE, "n1") is TradingState.HALTED
    assert g.remaining("a10") == 50  # the order itself still works: cancels pass a halt


def test_loss_limit_halts_the_node(rig: Mk) -> None:
    r = rig(max_loss=1_000.0)
    o = r.order(qty=100, id="b")
    assert r.guard.check(o).accepted
    r.guard.on_fill(Fill("b", "IBM", Side.BUY, 100, 100.0))
    r.guard.on_price("IBM", 90.0)  # unrealized -1,000: at the limit
    assert r.guard.trading_state(Scope.NODE, "n1") is TradingState.ACTIVE
    r.guard.on_price("IBM", 89.99)
    assert r.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED
    assert reason(r.send(price=89.99)) is R.LOSS_LIMIT
    r.guard.on_price("IBM", 100.0)  # recovery does not un-halt: a person must resume
    assert reason(r.send()) is R.LOSS_LIMIT


def test_realized_pnl_round_trip(rig: Mk) -> None:
    r = rig()
    for i, (side, px) in enumerate([(Side.BUY, 100.0), (Side.SELL, 101.0)]):
        o = r.order(id=f"t{i}", side=side, price=px)
        assert r.guard.check(o).accepted
        r.guard.on_fill(Fill(o.id, "IBM", side, 100, px))
    assert r.guard.position("IBM") == 0
    assert r.guard.pnl() == pytest.approx(100.0)


# 11. audit --------------------------------------------------------------------------------


def test_recorder_that_cannot_record_blocks_everything(rig: Mk) -> None:
    r = rig()
    # storage that is full from the first write on (a memory sink behaves like a full disk)
    dead = FlightRecorder(None, clock=r.clock, sink=MemorySink(capacity=1), batch_size=1)
    g = Guard(r.limits, node="n1", clock=r.clock, recorder=dead)
    g.set_context(release_id="r1")  # its record and seal cannot be written: 2 lines > 1
    g.on_price("IBM", 100.0)
    assert not dead.ready()
    with pytest.raises(RecorderUnavailable):
        g.arm()  # arming is refused while nothing could be recorded; checks block anyway
    before = dead.pending
    for _ in range(1_000):
        assert reason(g.check(r.order())) is R.AUDIT_UNAVAILABLE
    assert dead.pending == before  # an outage is counted, not queued order by order
    assert g.blocked[R.AUDIT_UNAVAILABLE] == 1_000


def test_block_emits_one_structured_log_line(rig: Mk, caplog: pytest.LogCaptureFixture) -> None:
    r = rig(max_order_qty=10)
    with caplog.at_level(logging.WARNING, logger="knightwatch.guard"):
        r.send(qty=11, id="big")
    lines = [rec.getMessage() for rec in caplog.records if "BLOCK_ORDER" in rec.getMessage()]
    assert len(lines) == 1
    assert "order=big" in lines[0] and "reason=max_order_qty" in lines[0]


def test_fill_that_does_not_match_its_order_halts_the_node(rig: Mk) -> None:
    r = rig()
    r.guard.on_price("AAPL", 50.0)
    assert r.send(id="o1", qty=1_000).accepted  # buy 1,000 IBM
    r.guard.on_fill(Fill("o1", "AAPL", Side.SELL, 1_000, 50.0))
    assert r.guard.working_qty("IBM") == (0, 0)  # the order's own book, not AAPL's
    assert r.guard.working_qty("AAPL") == (0, 0)
    assert r.guard.position("AAPL") == -1_000  # the venue's report is the truth
    assert r.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED
    d = r.send()
    assert reason(d) is R.FILL_MISMATCH and "was buy IBM" in d.detail


def test_order_id_capacity_has_its_own_reason(rig: Mk) -> None:
    r = rig(max_tracked_order_ids=2)
    assert r.send().accepted and r.send().accepted
    assert reason(r.send()) is R.ORDER_ID_CAPACITY


def test_halts_are_kept_per_source(rig: Mk) -> None:
    seen: list[tuple[Scope, str, str]] = []
    r = rig(max_loss=1_000.0)
    g = Guard(r.limits, node="n1", clock=r.clock)
    g.listen_for_halts(lambda scope, key, h: seen.append((scope, key, h.code)))
    g.arm()
    g.on_price("IBM", 100.0)
    assert g.check(r.order(id="b", qty=100)).accepted
    g.on_fill(Fill("b", "IBM", Side.BUY, 100, 100.0))
    g.halt(Scope.NODE, "n1", "operator kill", actor="alice")
    g.on_price("IBM", 80.0)  # loss 2,000: the Guard's own stop on the same node
    g.on_price("IBM", 79.0)
    assert seen == [(Scope.NODE, "n1", R.LOSS_LIMIT)]  # only automatic halts, once
    assert g.resume(Scope.NODE, "n1", "kill lifted", actor="cp", code=R.HALTED)
    assert g.trading_state(Scope.NODE, "n1") is TradingState.HALTED  # loss stop stands
    assert reason(g.check(r.order(price=79.0))) is R.LOSS_LIMIT
    assert g.resume(Scope.NODE, "n1", "reconciled", actor="bob")  # a person clears all
    assert g.trading_state(Scope.NODE, "n1") is TradingState.ACTIVE
    with pytest.raises(ValueError, match="already has a halt listener"):
        g.listen_for_halts(lambda scope, key, h: None)


def test_fill_for_unknown_order_still_moves_position(rig: Mk) -> None:
    r = rig()
    r.guard.on_fill(Fill("stranger", "IBM", Side.SELL, 50, 100.0))
    assert r.guard.position("IBM") == -50


def test_bad_price_is_refused_not_applied(rig: Mk) -> None:
    r = rig()
    for bad in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="on_price IBM: price must be"):
            r.guard.on_price("IBM", bad)
    assert r.send(price=100.0).accepted
