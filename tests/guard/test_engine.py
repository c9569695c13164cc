"""The Guard's calls for order flow it does not emit itself (a FIX gateway, any OMS adapter):
replace with reserve/commit/rollback, terminal events apart from cancels, restatement,
trade bust and correction, lot sizes, long instrument ids, start-up reconciliation."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.clock import SimClock
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard, ledger
from knightwatch.limits import Limits, Override
from knightwatch.order import Fill, InvalidOrder, Order, Side
from knightwatch.state import Scope, TradingState

from .conftest import Rig

R = RejectReason


def working(g: Guard, symbol: str = "IBM") -> int:
    return g.working_qty(symbol)[0]


# --- replace -------------------------------------------------------------------------------


def test_replace_up_reserves_the_new_leaves_until_the_venue_answers(
    rig: Callable[..., Rig],
) -> None:
    r = rig()
    g = r.guard
    assert g.check(r.order(qty=100, id="a"))
    d = g.check_replace("a", r.order(qty=300, id="b"))
    assert d.accepted and "replaces a" in d.detail
    assert working(g) == 300  # max(old 100, new 300) held while pending
    g.on_replace_ack("b", remaining=300)
    assert working(g) == 300 and g.remaining("b") == 300 and g.remaining("a") is None


def test_replace_down_holds_the_old_leaves_then_commits_the_new(rig: Callable[..., Rig]) -> None:
    r = rig()
    g = r.guard
    g.check(r.order(qty=400, id="a"))
    assert g.check_replace("a", r.order(qty=100, id="b"))
    assert working(g) == 400
    g.on_replace_ack("b")
    assert working(g) == 100


def test_a_replace_the_venue_refuses_rolls_back(rig: Callable[..., Rig]) -> None:
    r = rig()
    g = r.guard
    g.check(r.order(qty=100, id="a"))
    g.check_replace("a", r.order(qty=500, id="b"))
    g.on_fill(Fill("a", "IBM", Side.BUY, 40, 100.0))  # fills keep coming on the original
    assert working(g) == 460
    g.on_replace_reject("b")
    assert working(g) == 60 and g.remaining("a") == 60
    assert g.check_replace("a", r.order(qty=200, id="c")).accepted  # replaceable again


def test_fills_while_pending_count_against_the_new_quantity(rig: Callable[..., Rig]) -> None:
    r = rig()
    g = r.guard
    g.check(r.order(qty=100, id="a"))
    g.check_replace("a", r.order(qty=300, id="b"))
    g.on_fill(Fill("a", "IBM", Side.BUY, 100, 100.0))
    g.on_replace_ack("b")  # the venue's leaves: 300 - 100 filled
    assert g.remaining("b") == 200 and working(g) == 200 and g.position("IBM") == 100


def test_a_replace_ack_with_more_leaves_than_checked_halts_the_node(
    rig: Callable[..., Rig],
) -> None:
    """The venue's LeavesQty on the ack is the truth, but more than the replace's quantity
    less what filled grew the order past every check: halted, as a restatement would be."""
    r = rig()
    g = r.guard
    assert g.check(r.order(qty=100, id="a"))
    assert g.check_replace("a", r.order(qty=200, id="b")).accepted
    g.on_fill(Fill("a", "IBM", Side.BUY, 50, 100.0))
    g.on_replace_ack("b", remaining=150)  # 200 - 50 filled: as checked
    assert g.trading_state(Scope.NODE, "n1") is TradingState.ACTIVE
    assert g.check_replace("b", r.order(qty=300, id="c")).accepted
    g.on_replace_ack("c", remaining=5_000)
    assert g.remaining("c") == 5_000 and working(g) == 5_000  # counted as the venue says
    halt = g.halts()[(Scope.NODE, "n1")]
    assert halt.code is R.FILL_MISMATCH and "beyond the 300 the Guard checked" in halt.reason
    assert not r.send(qty=1).accepted


def test_a_replace_ack_to_less_than_filled_ends_the_order_without_a_halt(
    rig: Callable[..., Rig],
) -> None:
    r = rig()
    g = r.guard
    assert g.check(r.order(qty=100, id="a"))
    assert g.check_replace("a", r.order(qty=50, id="b")).accepted
    g.on_fill(Fill("a", "IBM", Side.BUY, 80, 100.0))  # the venue done for the rest
    g.on_replace_ack("b", remaining=0)
    assert g.remaining("b") is None and working(g) == 0 and g.halts() == {}


def test_replace_increase_is_checked_as_a_new_risk(rig: Callable[..., Rig]) -> None:
    r = rig(max_order_qty=500, max_position_qty=1_000, price_collar_pct=0.05)
    g = r.guard
    g.check(r.order(qty=400, id="a"))
    too_big = g.check_replace("a", r.order(qty=600, id="b"))
    assert too_big.reason is R.MAX_ORDER_QTY
    far = g.check_replace("a", r.order(qty=400, price=120.0, id="c"))
    assert far.reason is R.PRICE_COLLAR
    g.check(r.order(qty=500, id="d"))
    over = g.check_replace("a", r.order(qty=500, id="e"))  # +100 on 900 working > 1,000? no
    assert over.accepted
    g.on_replace_ack("e")
    beyond = g.check_replace("d", r.order(qty=501, id="f"))
    assert beyond.reason is R.MAX_ORDER_QTY
    assert working(g) == 1_000


def test_replace_counts_only_the_increase_against_position_and_parent(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_position_qty=1_000, max_parent_qty_multiple=1.0)
    g = r.guard
    g.register_parent("P", 600)
    g.check(r.order(qty=500, id="a", parent_id="P"))
    assert g.check_replace("a", r.order(qty=600, id="b", parent_id="P")).accepted
    assert g.parent_committed("P") == 600
    g.on_replace_reject("b")
    assert g.parent_committed("P") == 500
    over = g.check_replace("a", r.order(qty=700, id="c", parent_id="P"))
    assert over.reason is R.PARENT_QTY_EXCEEDED


def test_replace_reserves_by_capacity_within_the_parent_then_principal(
    rig: Callable[..., Rig],
) -> None:
    """A replace's increase is split as a new child's quantity is: within the parent's
    uncommitted quantity it is the customer's, beyond it the firm's own."""
    r = rig(max_position_qty=150, max_parent_qty_multiple=2.0)
    g = r.guard
    g.register_parent("P", 600, account="acme")
    assert g.check(r.order(qty=500, id="a", parent_id="P"))
    assert working(g) == 0  # all of it the customer's
    assert g.customer_exposure("acme")[0] == pytest.approx(50_000.0)
    # +200: 100 left in the parent (the customer's), 100 beyond it (the firm's)
    assert g.check_replace("a", r.order(qty=700, id="b", parent_id="P")).accepted
    assert working(g) == 100
    assert g.customer_exposure("acme")[0] == pytest.approx(60_000.0)
    assert g.parent_committed("P") == 700
    g.on_replace_reject("b")  # back exactly to what it was
    assert working(g) == 0 and g.parent_committed("P") == 500
    assert g.customer_exposure("acme")[0] == pytest.approx(50_000.0)
    # +300 beyond the parent's 100 left: 200 the firm's, over max_position_qty 150
    over = g.check_replace("a", r.order(qty=800, id="c", parent_id="P"))
    assert over.reason is R.MAX_POSITION and "principal" in over.detail
    assert working(g) == 0 and g.parent_committed("P") == 500
    assert g.check_replace("a", r.order(qty=700, id="d", parent_id="P")).accepted
    g.on_replace_ack("d")
    assert working(g) == 100 and g.remaining("d") == 700
    assert g.customer_exposure("acme")[0] == pytest.approx(60_000.0)
    # fills take the customer's part first, up to the parent's quantity
    g.on_fill(Fill("d", "IBM", Side.BUY, 600, 100.0))
    assert g.customer_position("acme", "IBM") == 600 and g.position("IBM") == 0
    assert working(g) == 100
    g.on_fill(Fill("d", "IBM", Side.BUY, 100, 100.0))
    assert g.customer_position("acme", "IBM") == 600 and g.position("IBM") == 100


def test_replace_increase_within_the_parent_meets_the_customer_limits(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_position_qty=10, max_customer_gross_exposure=55_000.0)
    g = r.guard
    g.register_parent("P", 1_000, account="acme")
    assert g.check(r.order(qty=500, id="a", parent_id="P"))
    over = g.check_replace("a", r.order(qty=600, id="b", parent_id="P"))
    assert over.reason is R.CUSTOMER_GROSS_EXPOSURE and "acme" in over.detail
    assert g.check_replace("a", r.order(qty=550, id="c", parent_id="P")).accepted
    assert working(g) == 0  # the customer's: the firm's max_position_qty 10 is not touched


def test_a_bust_is_taken_back_in_the_capacity_it_was_booked(rig: Callable[..., Rig]) -> None:
    r = rig(max_parent_qty_multiple=2.0)
    g = r.guard
    g.register_parent("P", 100, account="acme")
    g.check(r.order(qty=150, id="a", parent_id="P"))
    f1 = Fill("a", "IBM", Side.BUY, 100, 100.0)
    f2 = Fill("a", "IBM", Side.BUY, 50, 100.0)
    g.on_fill(f1)
    g.on_fill(f2)  # beyond the parent: the firm's; the order is complete now
    assert g.remaining("a") is None
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (100, 50)
    g.on_bust(f2, parent_id="P")  # the latest first: the firm's part
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (100, 0)
    f3 = Fill("a", "IBM", Side.BUY, 40, 100.0)
    g.on_correct(f1, f3, parent_id="P")
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (40, 0)
    g.on_bust(f3, parent_id="P")
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (0, 0)
    g.on_bust(Fill("a", "IBM", Side.BUY, 10, 100.0))  # no parent named: the firm's
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (0, -10)


def test_a_correction_overfilling_a_working_order_halts_the_node(
    rig: Callable[..., Rig],
) -> None:
    r = rig()
    g = r.guard
    assert g.check(r.order(qty=100, id="a"))
    f = Fill("a", "IBM", Side.BUY, 10, 100.0)
    g.on_fill(f)
    g.on_correct(f, Fill("a", "IBM", Side.BUY, 60, 100.0))  # within the order: applied
    assert g.position("IBM") == 60 and g.halts() == {}
    g.on_correct(Fill("a", "IBM", Side.BUY, 60, 100.0), Fill("a", "IBM", Side.BUY, 150, 100.0))
    assert g.position("IBM") == 150  # the venue's truth, applied
    (halt,) = g.halts().values()
    assert halt.code is R.FILL_MISMATCH and "filled 150 of 100" in halt.reason


def test_an_adopted_child_counts_against_its_parent_by_capacity(rig: Callable[..., Rig]) -> None:
    r = rig(max_parent_qty_multiple=1.0)
    g = r.guard
    g.register_parent("P", 300, account="acme")
    g.adopt(Order("a", "rlp", "IBM", Side.BUY, 200, 100.0, "P"), remaining=150)
    assert g.parent_committed("P") == 200 and working(g) == 0
    assert g.customer_exposure("acme")[0] == pytest.approx(15_000.0)
    assert r.send(qty=101, parent_id="P").reason is R.PARENT_QTY_EXCEEDED
    assert r.send(qty=100, parent_id="P").accepted


def test_replace_states_duplicates_and_what_cannot_change(rig: Callable[..., Rig]) -> None:
    r = rig()
    g = r.guard
    g.check(r.order(qty=100, id="a"))
    assert g.check_replace("nope", r.order(id="x")).reason is R.INVALID_ORDER
    assert g.check_replace("a", r.order(id="a")).reason is R.DUPLICATE_ORDER_ID
    assert g.check_replace("a", r.order(side=Side.SELL, id="y")).reason is R.INVALID_ORDER
    assert g.check_replace("a", r.order(qty=200, id="b")).accepted
    assert "already pending" in g.check_replace("a", r.order(id="c")).detail
    g.on_replace_ack("b")
    g.halt(Scope.FLEET, "fleet", "drill", "ops", state=TradingState.REDUCING)
    assert g.check_replace("b", r.order(qty=300, id="d")).reason is R.REDUCING_ONLY
    assert g.check_replace("b", r.order(qty=50, price=99.0, id="e")).reason is R.REDUCING_ONLY
    assert g.check_replace("b", r.order(qty=50, id="f")).accepted  # smaller, same price
    g.on_replace_ack("f")
    g.halt(Scope.FLEET, "fleet", "kill", "ops")
    # HALTED refuses what raises leaves or moves the price; a smaller order at the same
    # price only lowers what is working, the stop direction, as a cancel is
    assert g.check_replace("f", r.order(qty=60, id="g")).reason is R.HALTED
    assert g.check_replace("f", r.order(qty=10, price=99.0, id="h")).reason is R.HALTED
    assert g.check_replace("f", r.order(qty=10, id="i")).accepted
    g.on_replace_ack("i")
    assert g.remaining("i") == 10 and working(g) == 10
    # of the accepted replaces, those that only lowered what was working ("f", "i") are
    # counted apart: the supervisor reads a halted node's other acceptances as a lie
    assert g.lowered == 2 and g.accepted >= 4


@pytest.mark.parametrize("why", ["disarmed", "lease", "rate", "cancel_ratio", "capacity"])
def test_a_replace_that_only_lowers_passes_whatever_else_refuses_new_risk(
    rig: Callable[..., Rig], why: str
) -> None:
    """Cutting a working order is the stop direction, as a cancel is. Before, a disarmed
    Guard, an expired lease, a full rate window, the cancel-to-fill ratio or a full id
    capacity refused it: an adapter could not shrink an order during a kill. Raising
    leaves or moving the price is still refused as before, and the new id is tracked."""
    limits: dict[str, dict[str, object]] = {
        "disarmed": {},
        "lease": {"lease_timeout_s": 10.0},
        "rate": {"max_orders_per_s_node": 2},
        "cancel_ratio": {"max_cancel_to_fill_ratio": 1.0, "cancel_ratio_min_cancels": 1},
        "capacity": {"max_tracked_order_ids": 3},
    }
    r = rig(**limits[why])
    g = r.guard
    g.renew_lease()
    assert g.check(r.order(qty=400, id="a"))
    if why == "disarmed":
        g.disarm("ops")
        code = R.NOT_ARMED
    elif why == "lease":
        r.clock.advance(11 * 10**9)
        code = R.LEASE_EXPIRED
    elif why == "rate":
        assert g.check(r.order(qty=1, id="filler"))  # 2 in this second: the window is full
        code = R.RATE_NODE
    elif why == "cancel_ratio":
        assert g.check(r.order(qty=1, id="c1")) and g.check(r.order(qty=1, id="c2"))
        g.on_cancel("c1")
        g.on_cancel("c2")  # two cancels and no fill: over 1 per fill
        code = R.CANCEL_FILL_RATIO
    else:
        assert g.check(r.order(qty=1, id="c2")) and g.check(r.order(qty=1, id="c3"))
        code = R.ORDER_ID_CAPACITY
    assert g.check_replace("a", r.order(qty=500, id="up")).reason is code
    assert g.check_replace("a", r.order(qty=100, price=99.0, id="moved")).reason is code
    d = g.check_replace("a", r.order(qty=100, id="down"))
    assert d.accepted, d
    g.on_replace_ack("down")
    assert g.remaining("down") == 100 and g.remaining("a") is None and g.lowered == 1
    assert g.check_replace("down", r.order(qty=50, id="down")).reason is R.DUPLICATE_ORDER_ID


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["new", "replace", "ack", "reject", "fill", "cancel", "expire"]),
            st.integers(0, 7),
            st.integers(1, 400),
        ),
        max_size=60,
    )
)
def test_working_quantity_is_working_orders_plus_reservations(
    ops: list[tuple[str, int, int]],
) -> None:
    """Whatever the venue answers, the book holds exactly what works plus what is reserved."""
    r = Rig()
    g = r.guard
    orders: list[str] = []
    pending: list[str] = []
    for op, i, qty in ops:
        if op == "new":
            oid = f"o{len(orders)}"
            if g.check(Order(oid, "rlp", "IBM", Side.BUY, qty, 100.0)):
                orders.append(oid)
        elif op == "replace" and orders:
            new = f"r{len(orders)}-{len(pending)}-{i}"
            if g.check_replace(
                orders[i % len(orders)], Order(new, "rlp", "IBM", Side.BUY, qty, 100.0)
            ):
                pending.append(new)
                orders.append(new)
        elif op in ("ack", "reject") and pending:
            new = pending.pop(i % len(pending))
            (g.on_replace_ack if op == "ack" else g.on_replace_reject)(new)
        elif op == "fill" and orders:
            g.on_fill(Fill(orders[i % len(orders)], "IBM", Side.BUY, qty, 100.0))
        elif op == "cancel" and orders:
            g.on_cancel(orders[i % len(orders)])
        elif op == "expire" and orders:
            g.on_expire(orders[i % len(orders)])
        led = g._ledger
        held = sum(w.remaining for w in led.working.values())
        reserved = sum(p.reserved for p in led.pending.values())
        assert working(g) == held + reserved >= 0


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["new", "replace", "ack", "reject", "fill", "cancel", "restate", "bust"]
            ),
            st.integers(0, 7),
            st.integers(1, 400),
        ),
        max_size=60,
    )
)
def test_replace_reservations_keep_the_capacity_split(ops: list[tuple[str, int, int]]) -> None:
    """Children of one parent, replaced, filled, restated, busted: the customer's working
    quantity is exactly the customer parts of orders and reservations, the firm's the
    rest; the customer's position is what was booked as the customer's, never more than
    the parent's quantity with what the customer has working; and the two positions add
    up to every fill standing."""
    r = Rig(max_parent_qty_multiple=3.0)
    g = r.guard
    g.register_parent("P", 300, account="acme")
    orders: list[str] = []
    pending: list[str] = []
    fills: list[Fill] = []
    for op, i, qty in ops:
        if op == "new":
            oid = f"o{len(orders)}"
            if g.check(Order(oid, "rlp", "IBM", Side.BUY, qty, 100.0, "P")):
                orders.append(oid)
        elif op == "replace" and orders:
            new = f"r{len(orders)}-{len(pending)}-{i}"
            order = Order(new, "rlp", "IBM", Side.BUY, qty, 100.0, "P")
            if g.check_replace(orders[i % len(orders)], order):
                pending.append(new)
                orders.append(new)
        elif op in ("ack", "reject") and pending:
            new = pending.pop(i % len(pending))
            (g.on_replace_ack if op == "ack" else g.on_replace_reject)(new)
        elif op == "fill" and orders:
            fill = Fill(orders[i % len(orders)], "IBM", Side.BUY, qty, 100.0)
            g.on_fill(fill)
            fills.append(fill)
        elif op == "cancel" and orders:
            g.on_cancel(orders[i % len(orders)])
        elif op == "restate" and orders:
            oid = orders[i % len(orders)]
            left = g.remaining(oid)
            if left is not None:
                g.on_restate(oid, min(left, qty))
        elif op == "bust" and fills:
            g.on_bust(fills.pop(i % len(fills)), parent_id="P")
        led = g._ledger
        book = led.books["IBM"]
        line = led.accounts["acme"].lines.get("IBM")
        c_working = 0 if line is None else line.wbuy
        parent = led.parents["P"]
        works = list(led.working.values())
        pends = list(led.pending.values())
        assert c_working == sum(w.cust for w in works) + sum(p.cust for p in pends)
        assert book.wbuy == sum(w.remaining - w.cust for w in works) + sum(
            p.reserved - p.cust for p in pends
        )
        c_pos = 0 if line is None else line.pos
        assert c_pos == parent.cust_filled <= min(parent.filled, parent.qty)
        assert c_pos + c_working <= parent.qty
        assert g.position("IBM") + (0 if line is None else line.pos) == sum(f.qty for f in fills)


# --- terminal events, restatement, busts ------------------------------------------------


def test_venue_rejects_and_expiries_do_not_count_as_cancels(rig: Callable[..., Rig]) -> None:
    r = rig(max_cancel_to_fill_ratio=1.0, cancel_ratio_min_cancels=2)
    g = r.guard
    for i in range(6):
        g.check(r.order(id=f"x{i}"))
        (g.on_reject if i % 2 else g.on_expire)(f"x{i}")
    assert working(g) == 0
    assert r.send().accepted  # six orders ended, none cancelled: no ratio breach
    for i in range(3):
        g.check(r.order(id=f"c{i}"))
        g.on_cancel(f"c{i}")
    assert r.send().reason is R.CANCEL_FILL_RATIO


def test_restatement_follows_the_venue(rig: Callable[..., Rig]) -> None:
    r = rig()
    g = r.guard
    g.check(r.order(qty=300, id="a"))
    g.on_restate("a", 120)
    assert working(g) == 120 and g.remaining("a") == 120
    g.on_restate("a", 0)
    assert working(g) == 0 and g.remaining("a") is None


def test_a_restatement_that_grows_an_order_past_its_check_halts_the_node(
    rig: Callable[..., Rig],
) -> None:
    """The venue may shrink an order, or give back what a bust reopened; an order it
    grows beyond the quantity the Guard checked (a pending replace's, if larger) is risk
    no check saw: followed as the venue's truth, and the node halts with fill_mismatch."""
    r = rig()
    g = r.guard
    g.check(r.order(qty=300, id="a"))
    fill = Fill("a", "IBM", Side.BUY, 100, 100.0)
    g.on_fill(fill)
    g.on_bust(fill, parent_id=None)  # the venue reopens it: 300 may work again
    g.on_restate("a", 300)
    assert g.check_replace("a", r.order(qty=500, id="a2"))
    g.on_restate("a", 500)  # the replace in flight was checked at 500
    assert r.send().accepted
    assert g.trading_state(Scope.NODE, "n1") is TradingState.ACTIVE

    g.on_replace_reject("a2")  # back to the 300 checked: 500 is now beyond it
    g.on_restate("a", 500)
    assert g.remaining("a") == 500  # the venue's truth, still counted
    assert g.trading_state(Scope.NODE, "n1") is TradingState.HALTED
    refused = r.send()
    assert not refused.accepted and refused.reason is R.FILL_MISMATCH
    (halt,) = g.halts().values()
    assert "beyond the 300 the Guard checked" in halt.reason


def test_bust_and_correct_move_the_position(rig: Callable[..., Rig]) -> None:
    r = rig()
    g = r.guard
    g.check(r.order(qty=300, id="a"))
    f1 = Fill("a", "IBM", Side.BUY, 100, 100.0)
    f2 = Fill("a", "IBM", Side.BUY, 100, 101.0)
    g.on_fill(f1)
    g.on_fill(f2)
    g.on_bust(f1)
    assert g.position("IBM") == 100
    g.on_correct(f2, Fill("a", "IBM", Side.BUY, 60, 101.0))
    assert g.position("IBM") == 60
    with pytest.raises(ValueError, match="keeps the order"):
        g.on_correct(f2, Fill("b", "IBM", Side.BUY, 60, 101.0))
    assert not g.halts()


@pytest.mark.parametrize(
    "bust",
    [
        Fill("a", "IBM", Side.BUY, 500, 100.0),  # more than the working order filled
        Fill("a", "IBM", Side.SELL, 10, 100.0),  # the other side
        Fill("a", "AAPL", Side.BUY, 10, 100.0),  # another symbol
    ],
)
def test_a_bust_the_working_order_cannot_have_halts_the_node(
    rig: Callable[..., Rig], bust: Fill
) -> None:
    """A working order's fills are known: a bust that disagrees with them is applied as the
    venue's truth, as a mismatched fill is, and halts the node until a person reconciles."""
    r = rig()
    g = r.guard
    assert g.check(r.order(qty=300, id="a")).accepted
    g.on_fill(Fill("a", "IBM", Side.BUY, 10, 100.0))
    g.on_bust(bust)
    halt = g.halts()[(Scope.NODE, "n1")]
    assert halt.code is R.FILL_MISMATCH and "which filled 10 buy IBM" in halt.reason
    assert g.remaining("a") == 290 and g.check(r.order()).reason is R.FILL_MISMATCH


# --- quantities and instruments ------------------------------------------------------------


def test_lot_sizes_make_decimal_quantities_exact_and_value_them_right() -> None:
    limits = Limits.off(max_order_notional=50_000.0, symbol={"BTC-USD": Override(lot_size=0.0001)})
    g = Guard(limits)
    g.arm("t")
    g.on_price("BTC-USD", 60_000.0)
    assert g.lots("BTC-USD", "0.5") == 5_000
    assert g.lots("BTC-USD", Decimal("0.0001")) == 1
    assert g.quantity("BTC-USD", 5_000) == Decimal("0.5")
    assert g.lots("IBM", 100) == 100 and g.quantity("IBM", 100) == Decimal(100)
    with pytest.raises(InvalidOrder, match=r"lot_size 0\.0001"):
        g.lots("BTC-USD", "0.00005")
    with pytest.raises(InvalidOrder, match="decimal number"):
        g.lots("BTC-USD", "half")
    ok = g.check(Order("o1", "s", "BTC-USD", Side.BUY, g.lots("BTC-USD", "0.5"), 60_000.0))
    assert ok.accepted  # 0.5 BTC at 60,000 = 30,000 notional
    big = g.check(Order("o2", "s", "BTC-USD", Side.BUY, g.lots("BTC-USD", "1"), 60_000.0))
    assert big.reason is R.MAX_ORDER_NOTIONAL and "60,000.00" in big.detail
    g.on_fill(Fill("o1", "BTC-USD", Side.BUY, 5_000, 60_000.0))
    g.on_price("BTC-USD", 61_000.0)
    assert g.pnl() == pytest.approx(500.0)  # 0.5 BTC up 1,000
    assert g.exposure()[0] == pytest.approx(30_500.0)


@pytest.mark.parametrize(
    ("qty", "rule"),
    [
        ("1.00000000000000000000000000001", "multiple of lot_size 1"),  # 28 digits rounded it
        ("0.25000000000000000000000000001", "multiple of lot_size 0.25"),
        ("1e999999999", "at most 1e+15 lots"),  # before: decimal.Overflow, a traceback
        ("1e999999", "at most 1e+15 lots"),  # before: a million-digit int, 40 s to build
        ("9" * 5000, "at most 1e+15 lots"),  # before: int() refused it with a ValueError
        ("²", "decimal number"),  # a Unicode digit: before, int() raised a ValueError
        ("١٢", "decimal number"),  # Arabic-Indic 12: before, read as 12
        ("1_000", "decimal number"),  # before, read as 1000
        (" 5", "decimal number"),
        (True, "decimal number"),  # before, one lot
        # no str, int or Decimal: the compiled build raised its own TypeError first
        (None, "decimal number"),
        ([5], "decimal number"),
        (1.5, "multiple of lot_size 1"),
    ],
)
def test_a_quantity_that_is_no_plain_whole_number_of_lots_is_refused_naming_it(
    qty: object, rule: str
) -> None:
    """`lots` reads a FIX OrderQty: anything but an exact plain decimal multiple of the lot
    is `InvalidOrder` naming the rule, never a rounded quantity or another exception."""
    symbol = "BTC" if "0.25" in rule else "IBM"
    g = Guard(Limits.off(symbol={"BTC": Override(lot_size=0.25)}))
    with pytest.raises(InvalidOrder, match=rf"^qty: must be .*{re.escape(rule)}"):
        g.lots(symbol, qty)  # type: ignore[arg-type]
    assert g.lots("BTC", "0.2500000000000000000000000000000000000") == 1
    assert g.lots("IBM", "1000000000000000") == 10**15


@settings(max_examples=300, deadline=None)
@given(
    lot=st.floats(min_value=1e-12, max_value=1e9, allow_nan=False, allow_infinity=False),
    n=st.integers(min_value=1, max_value=10**15),
)
def test_quantity_and_lots_round_trip_exactly_for_any_lot_size(lot: float, n: int) -> None:
    """The quantity the gateway reports for n lots is exactly n lots, whatever the lot's
    digits (before, 999,999,999,999,999 lots of 0.30000000000000004 were rounded to 28
    digits: a quantity that was no multiple of the lot, and no longer n lots)."""
    g = Guard(Limits.off(symbol={"Z": Override(lot_size=lot)}))
    q = g.quantity("Z", n)
    with localcontext() as exact:
        exact.prec = 80
        assert q == n * Decimal(repr(lot))
    assert g.lots("Z", format(q, "f")) == n


def test_orders_for_made_up_symbols_keep_no_state() -> None:
    """A runaway's made-up symbols and strategies: converted and refused, nothing kept."""
    limits = Limits.off(require_reference_price=True, symbol={"BTC-USD": Override(lot_size=0.1)})
    g = Guard(limits)
    g.arm("t")
    for i in range(1_000):
        assert g.lots(f"S{i}", "3") == 3 and g.quantity(f"S{i}", 3) == Decimal(3)
        d = g.check(Order(f"o{i}", f"st{i}", f"S{i}", Side.BUY, 3, 10.0))
        assert d.reason is R.NO_REFERENCE_PRICE
    assert g.lots("BTC-USD", "0.3") == 3
    assert (g._lanes, g._ledger.books, g._strategy_windows, g._symbol_windows) == ({}, {}, {}, {})
    assert set(g._lot_sizes) == {"BTC-USD"}


def test_idle_symbols_rate_timestamps_are_forgotten_and_no_decision_changes() -> None:
    """The lease renewal (a node's heartbeat) empties windows a minute idle, a few per tick;
    a twin Guard that never renews decides every order the same."""
    limits = Limits.off(max_orders_per_min_symbol=5, require_reference_price=False)
    clocks = SimClock(10**15), SimClock(10**15)
    ticked, twin = (Guard(limits, clock=c) for c in clocks)
    n = 0

    def send(symbol: str) -> RejectReason:
        nonlocal n
        n += 1
        o = Order(f"o{n}", "s", symbol, Side.BUY, 1, 10.0)
        d = ticked.check(o)
        assert twin.check(o) == d
        return d.reason

    for g in (ticked, twin):
        g.arm("t")
    for i in range(100):
        assert [send(f"S{i}") for _ in range(5)] == [RejectReason.OK] * 5
    assert send("S0") is RejectReason.RATE_SYMBOL
    for c in clocks:
        c.advance(61 * 10**9)
    assert [send("HOT") for _ in range(5)] == [RejectReason.OK] * 5
    for _ in range(2):  # 101 symbols at 64 a tick
        ticked.renew_lease()
    held = {sym: len(ws[0].events) for sym, ws in ticked._symbol_windows.items()}
    assert held.pop("HOT") == 5 and set(held.values()) == {0}
    assert send("HOT") is RejectReason.RATE_SYMBOL  # its minute still counts
    assert [send("S0") for _ in range(5)] == [RejectReason.OK] * 5
    assert send("S0") is RejectReason.RATE_SYMBOL


def test_a_lane_without_an_accepted_order_is_built_once_and_follows_what_is_kept_since() -> None:
    """A halted fleet's refusals in a lane that never accepted an order reuse one lane (the
    stop direction is not slowed by rebuilding it); a book or a rate window kept since
    it was built replaces it, so nothing is checked against a stale copy."""
    g = Guard(Limits.off(max_orders_per_s_strategy=3), clock=SimClock(10**15))
    g.arm("t")
    g.halt(Scope.FLEET, "fleet", "drill", "t")
    n = iter(range(1_000))

    def send(strategy: str, symbol: str) -> RejectReason:
        return g.check(Order(f"o{next(n)}", strategy, symbol, Side.BUY, 1, None)).reason

    assert send("s", "IBM") is RejectReason.HALTED
    built = g._provisional["s", "IBM"][0]
    assert {send("s", "IBM") for _ in range(50)} == {RejectReason.HALTED}
    assert g._provisional["s", "IBM"][0] is built and g._lanes == {}
    g.resume(Scope.FLEET, "fleet", "drill over", "t")
    assert send("s", "IBM") is RejectReason.NO_REFERENCE_PRICE
    for symbol in ("IBM", "AAPL"):
        g.on_price(symbol, 10.0)
    assert send("s", "IBM") is RejectReason.OK  # the book the price went to, not the old one
    g.halt(Scope.SYMBOL, "IBM", "drill", "t")
    assert send("s2", "IBM") is RejectReason.HALTED  # (s2, IBM) built before s2 has windows
    g.resume(Scope.SYMBOL, "IBM", "drill over", "t")
    assert [send("s2", "AAPL") for _ in range(2)] == [RejectReason.OK] * 2
    # s2's rate window is kept now: its first order in IBM counts against it
    assert [send("s2", "IBM") for _ in range(2)] == [RejectReason.OK, RejectReason.RATE_STRATEGY]


def test_lot_size_is_a_symbol_override_only() -> None:
    from knightwatch.limits import LimitsError

    with pytest.raises(LimitsError, match="only a symbol override may set lot_size"):
        Limits.from_mapping({"strategy": {"s": {"lot_size": 0.1}}})


def test_instrument_ids_up_to_64_characters(rig: Callable[..., Rig]) -> None:
    r = rig(require_reference_price=False)
    occ = "AAPL  260116C00150000"
    assert r.send(symbol=occ).accepted
    assert r.send(symbol="X" * 64).accepted
    with pytest.raises(InvalidOrder, match="at most 64"):
        r.order(symbol="X" * 65)


# --- reconciliation and the embedding surface --------------------------------------------


def test_adopted_orders_and_restored_positions_count_before_any_check(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_position_qty=1_000)
    g = r.guard
    g.restore_position("IBM", 600, 99.0)
    g.adopt(Order("old", "recon", "IBM", Side.BUY, 500, 100.0), remaining=300)
    assert g.position("IBM") == 600 and working(g) == 300
    assert r.send(qty=200).reason is R.MAX_POSITION  # 600 + 300 + 200 > 1,000
    assert r.send(qty=100).accepted
    assert r.send(id="old").reason is R.DUPLICATE_ORDER_ID
    g.flush_records()
    kinds = [line for line in g.recorder.lines if b'"kind":"adopt"' in line]
    assert len(kinds) == 1


def test_adopting_an_order_already_working_is_refused_and_changes_nothing(
    rig: Callable[..., Rig],
) -> None:
    """A second adopt (a reconciliation run twice, or of an order accepted here) would
    orphan the first: its quantity counted as working for good, no cancel freeing it."""
    r = rig()
    g = r.guard
    assert r.send(qty=100, id="a").accepted
    g.adopt(Order("old", "recon", "IBM", Side.BUY, 200, 100.0))
    for oid in ("a", "old"):
        with pytest.raises(ValueError, match=f"adopt: order '{oid}' is already working"):
            g.adopt(Order(oid, "recon", "IBM", Side.BUY, 300, 100.0))
    assert working(g) == 300
    g.on_cancel("a")
    g.on_cancel("old")
    assert working(g) == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda g: g.on_reject(["a"]), "on_reject: order_id must be a string"),
        (lambda g: g.on_expire(None), "on_expire: order_id must be a string"),
        (lambda g: g.on_restate({"a": 1}, 0), "on_restate: order_id must be a string"),
        (lambda g: g.on_replace_ack(["b"]), "on_replace_ack: new_id must be a string"),
        (lambda g: g.on_replace_reject(7), "on_replace_reject: new_id must be a string"),
    ],
)
def test_venue_events_naming_no_order_id_say_which_argument(
    rig: Callable[..., Rig], call: Callable[[Guard], None], message: str
) -> None:
    r = rig()
    assert r.send(qty=100, id="a").accepted
    with pytest.raises(ValueError, match=message):
        call(r.guard)
    assert r.guard.remaining("a") == 100 and working(r.guard) == 100


def test_refusals_decided_outside_the_checks_are_recorded_and_counted(
    rig: Callable[..., Rig],
) -> None:
    from knightwatch.decision import Decision

    r = rig()
    g = r.guard
    g.refuse(r.order(), Decision(False, R.VENUE_UNAVAILABLE, "venue down"))
    assert g.counters()[1] == {R.VENUE_UNAVAILABLE: 1}
    g.flush_records()
    assert any(b'"reason":"venue_unavailable"' in line for line in g.recorder.lines)
    with pytest.raises(ValueError, match="must be a refusal"):
        g.refuse(r.order(), Decision(True, R.OK))
    g.flag_mismatch("leaves disagree")
    assert g.trading_state(Scope.NODE, "n1") is TradingState.HALTED


def test_external_fills_move_the_position_without_halting(rig: Callable[..., Rig]) -> None:
    r = rig()
    g = r.guard
    g.on_external_fill(Fill("dropcopy:x1", "IBM", Side.SELL, 300, 100.0))
    assert g.position("IBM") == -300 and g.halts() == {}
    g.on_fill(Fill("nobody", "IBM", Side.BUY, 100, 100.0))  # an unknown fill still halts
    assert g.trading_state(Scope.NODE, "n1") is TradingState.HALTED


def test_a_lot_size_cannot_change_under_held_quantities() -> None:
    limits = Limits.off(symbol={"BTC": Override(lot_size=0.001)})
    g = Guard(limits)
    with pytest.raises(ValueError, match=r"symbol\.BTC\.lot_size must stay 0\.001"):
        g.set_limits(Limits.off(symbol={"BTC": Override(lot_size=0.01)}))
    g.set_limits(Limits.off(version="v2", symbol={"BTC": Override(lot_size=0.001)}))
    assert g.lots("BTC", "1") == 1_000


def test_children_filling_out_of_order_are_booked_as_they_were_checked(
    rig: Callable[..., Rig],
) -> None:
    """Each child's fills are booked by the split its working quantity was checked with:
    a child held as the firm's fills as the firm's, whichever child fills first. Booked
    by the parent's fill count instead, the firm's child filling first was the
    customer's, the firm's book looked empty, and a further principal order took the
    firm's position to twice max_position_qty once the customer's child filled."""
    r = rig(max_position_qty=100, max_parent_qty_multiple=2.0)
    g = r.guard
    g.register_parent("P", 100, account="acme")
    assert g.check(r.order(qty=100, id="a", parent_id="P"))  # the customer's
    assert g.check(r.order(qty=100, id="b", parent_id="P"))  # beyond the parent: the firm's
    assert working(g) == 100
    g.on_fill(Fill("b", "IBM", Side.BUY, 100, 100.0))  # the firm's child fills first
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (0, 100)
    over = r.send(qty=100, id="c")
    assert over.reason is R.MAX_POSITION  # the firm holds max_position_qty already
    g.on_fill(Fill("a", "IBM", Side.BUY, 60, 100.0))
    g.on_fill(Fill("a", "IBM", Side.BUY, 40, 100.0))
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (100, 100)
    assert g.customer_exposure("acme")[0] == pytest.approx(10_000.0)
    # a bust or a correction is taken back in the capacity its execution was booked in
    g.on_bust(Fill("a", "IBM", Side.BUY, 40, 100.0), parent_id="P")
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (60, 100)
    g.on_correct(
        Fill("b", "IBM", Side.BUY, 100, 100.0),
        Fill("b", "IBM", Side.BUY, 120, 100.0),
        parent_id="P",
    )
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (60, 120)
    assert g.halts() == {}


def test_a_bust_of_a_customers_child_is_not_taken_from_the_firms_sibling(
    rig: Callable[..., Rig],
) -> None:
    """A bust took the firm's share of the parent back first, counted across all the
    parent's children: busting the customer's child left the customer holding its fill
    and the firm's book empty, so the firm's limits were looser than its position."""
    r = rig(max_parent_qty_multiple=2.0, max_position_qty=60)
    g = r.guard
    g.register_parent("P", 100, account="acme")
    assert g.check(r.order(qty=100, id="c1", parent_id="P"))  # within the parent: customer's
    assert g.check(r.order(qty=50, id="c2", parent_id="P"))  # beyond it: the firm's
    f1 = Fill("c1", "IBM", Side.BUY, 100, 100.0)
    g.on_fill(f1)
    g.on_fill(Fill("c2", "IBM", Side.BUY, 50, 100.0))
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (100, 50)
    g.on_bust(f1, parent_id="P")  # c1 finished: its parent named, as the gateway does
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (0, 50)
    assert g.customer_exposure("acme")[0] == 0.0
    assert r.send(qty=20).reason is R.MAX_POSITION  # the firm holds 50 of its 60
    assert g.halts() == {}


def test_a_correction_of_a_customers_child_keeps_the_firms_sibling(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_parent_qty_multiple=2.0)
    g = r.guard
    g.register_parent("P", 100, account="acme")
    g.check(r.order(qty=100, id="c1", parent_id="P"))
    g.check(r.order(qty=50, id="c2", parent_id="P"))
    f1 = Fill("c1", "IBM", Side.BUY, 100, 100.0)
    g.on_fill(f1)
    g.on_fill(Fill("c2", "IBM", Side.BUY, 50, 100.0))
    g.on_correct(f1, Fill("c1", "IBM", Side.BUY, 70, 100.0))  # parent not named: remembered
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (70, 50)
    g.on_bust(Fill("c2", "IBM", Side.BUY, 50, 100.0))
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (70, 0)
    g.on_bust(Fill("c1", "IBM", Side.BUY, 70, 100.0))
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (0, 0)
    assert g.halts() == {}


def test_a_straddling_childs_bust_is_taken_back_as_its_execution_was_booked(
    rig: Callable[..., Rig],
) -> None:
    """One child across its parent's quantity: its first executions the customer's, the
    rest the firm's. The execution busted (by quantity and price) says which."""
    r = rig(max_parent_qty_multiple=2.0)
    g = r.guard
    g.register_parent("P", 100, account="acme")
    g.check(r.order(qty=150, id="a", parent_id="P"))
    fills = [Fill("a", "IBM", Side.BUY, q, p) for q, p in ((60, 100.0), (60, 101.0), (30, 99.0))]
    for f in fills:
        g.on_fill(f)
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (100, 50)
    g.on_bust(fills[0])  # the customer's 60
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (40, 50)
    g.on_bust(fills[1])  # 40 the customer's, 20 the firm's
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (0, 30)
    assert g.halts() == {}


def test_a_bust_whose_capacity_cannot_be_told_halts_the_node(rig: Callable[..., Rig]) -> None:
    """An execution the Guard cannot place (none of the order's matches it, and the order
    filled both capacities) is taken back as the firm's first, and the node halts: a
    wrong guess understates one capacity's exposure, whichever it is."""
    r = rig(max_parent_qty_multiple=2.0)
    g = r.guard
    g.register_parent("P", 100, account="acme")
    g.check(r.order(qty=150, id="a", parent_id="P"))
    g.on_fill(Fill("a", "IBM", Side.BUY, 150, 100.0))  # 100 the customer's, 50 the firm's
    g.on_bust(Fill("a", "IBM", Side.BUY, 60, 100.0))  # no such execution
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (90, 0)
    (halt,) = g.halts().values()
    assert halt.code is R.FILL_MISMATCH and "cannot be told" in halt.reason
    assert r.send().reason is R.FILL_MISMATCH


def test_a_bust_a_finished_order_cannot_have_halts_the_node(rig: Callable[..., Rig]) -> None:
    """A finished child's fills are remembered: a bust of another side, or of more than it
    filled, disagrees with them and halts, as it does for a working order."""
    r = rig()
    g = r.guard
    g.register_parent("P", 100, account="acme")
    g.check(r.order(qty=100, id="a", parent_id="P"))
    g.on_fill(Fill("a", "IBM", Side.BUY, 100, 100.0))
    assert g.remaining("a") is None
    g.on_bust(Fill("a", "IBM", Side.SELL, 100, 100.0), parent_id="P")
    (halt,) = g.halts().values()
    assert halt.code is R.FILL_MISMATCH and "which filled 100 buy IBM" in halt.reason


# --- parent side ---------------------------------------------------------------------------


def test_a_child_on_the_wrong_side_of_its_parent_is_refused(rig: Callable[..., Rig]) -> None:
    """A router's sign bug (selling for a customer's buy order) passed every parent check
    and counted as the customer's: the parent had a quantity but no side. Registered with
    its side, a child on the other side is refused, whatever the limits (none are on)."""
    r = rig()
    g = r.guard
    g.register_parent("P", 1_000, account="acme", side=Side.BUY)
    g.register_parent("S", 1_000, account="acme", side=Side.SELL)
    wrong = r.send(qty=100, id="w1", side=Side.SELL, parent_id="P")
    assert wrong.reason is R.PARENT_SIDE_MISMATCH and not wrong.accepted
    assert wrong.detail == "order w1 is a sell but parent P is a buy"
    assert r.send(qty=100, id="w2", side=Side.BUY, parent_id="S").detail == (
        "order w2 is a buy but parent S is a sell"
    )
    assert g.parent_committed("P") == 0 and g.customer_position("acme", "IBM") == 0
    assert r.send(qty=100, id="b1", side=Side.BUY, parent_id="P").accepted
    assert r.send(qty=100, id="s1", side=Side.SELL, parent_id="S").accepted
    assert g.parent_committed("P") == 100 and g.parent_committed("S") == 100
    # a replace keeps the side, so a child that got out cannot turn round
    turned = g.check_replace("b1", r.order(qty=100, id="b2", side=Side.SELL, parent_id="P"))
    assert not turned.accepted


def test_a_parent_registered_without_a_side_checks_none(rig: Callable[..., Rig]) -> None:
    r = rig()
    g = r.guard
    g.register_parent("P", 1_000)
    assert r.send(qty=100, side=Side.SELL, parent_id="P").accepted
    assert r.send(qty=100, side=Side.BUY, parent_id="P").accepted


def test_register_parent_rejects_a_side_that_is_not_a_side(rig: Callable[..., Rig]) -> None:
    r = rig()
    for bad in ("buy", "BUY", 1, True):
        with pytest.raises(ValueError, match=r"^register_parent: side must be Side\.BUY") as e:
            r.guard.register_parent("P", 10, side=bad)
        assert "\n" not in str(e.value)
    r.guard.register_parent("P", 10, side=Side.SELL)  # nothing half-registered before


def test_a_late_fills_bust_is_taken_back_as_the_firms_it_was_booked(
    rig: Callable[..., Rig],
) -> None:
    """A fill for a child that had finished is booked as the firm's (and halts); its bust
    took the customer's fill back instead (the parent had nothing of the firm's), leaving
    the customer's fill on the firm's book and the customer's account empty."""
    r = rig()
    g = r.guard
    g.register_parent("P", 100, account="acme")
    g.check(r.order(qty=100, id="a", parent_id="P"))
    g.on_fill(Fill("a", "IBM", Side.BUY, 100, 100.0))
    late = Fill("a", "IBM", Side.BUY, 100, 101.0)
    g.on_fill(late)  # a duplicate: the venue's truth, the firm's, halted
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (100, 100)
    g.on_bust(late, parent_id="P")
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (100, 0)
    (halt,) = g.halts().values()
    assert "complete (a duplicate or late fill)" in halt.reason


def test_a_bust_of_another_side_is_not_taken_from_the_customer(rig: Callable[..., Rig]) -> None:
    """A bust naming a customer's child with the other side cannot be one of its fills: it
    is taken back as the firm's (and halts), not added to the customer's position."""
    r = rig()
    g = r.guard
    g.register_parent("P", 100, account="acme")
    g.check(r.order(qty=100, id="a", parent_id="P"))
    g.on_fill(Fill("a", "IBM", Side.BUY, 60, 100.0))
    g.on_bust(Fill("a", "IBM", Side.SELL, 60, 100.0))
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (60, 60)
    assert g.halts()


def test_finished_children_are_remembered_in_a_bounded_window(
    rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a bust needs of a finished child is kept for the last `BOOKED_WINDOW` children
    to fill (at most twice that); a bust of one forgotten is taken back by its parent's
    totals, the firm's first, and halts the node when the customer's was possible too."""
    monkeypatch.setattr(ledger, "BOOKED_WINDOW", 4)
    r = rig(max_parent_qty_multiple=2.0)
    g = r.guard
    g.register_parent("P", 100, account="acme")
    for i in range(20):  # 100 of the customer's, then 100 of the firm's
        g.check(r.order(qty=10, id=f"c{i}", parent_id="P"))
        g.on_fill(Fill(f"c{i}", "IBM", Side.BUY, 10, 100.0))
    led = g._ledger
    assert len(led.booked) + len(led.booked_old) <= 8
    g.on_bust(Fill("c19", "IBM", Side.BUY, 10, 100.0))  # remembered: the firm's
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (100, 90)
    assert g.halts() == {}
    g.on_bust(Fill("c0", "IBM", Side.BUY, 10, 100.0), parent_id="P")  # forgotten
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (100, 80)
    (halt,) = g.halts().values()
    assert halt.code is R.FILL_MISMATCH and "no longer known" in halt.reason


def test_a_match_among_a_straddling_childs_first_executions_is_not_proof(
    rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child remembers its first `EXECS_KEPT` executions only: busting a later one, of
    the firm's, that looks like a remembered one of the customer's (same quantity and
    price) must not be taken back as the customer's silently."""
    monkeypatch.setattr(ledger, "EXECS_KEPT", 2)
    r = rig(max_parent_qty_multiple=2.0)
    g = r.guard
    g.register_parent("P", 100, account="acme")
    g.check(r.order(qty=150, id="a", parent_id="P"))
    for _ in range(3):  # 50 and 50 the customer's, remembered; 50 the firm's, not
        g.on_fill(Fill("a", "IBM", Side.BUY, 50, 100.0))
    g.on_bust(Fill("a", "IBM", Side.BUY, 50, 100.0))
    assert (g.customer_position("acme", "IBM"), g.position("IBM")) == (100, 0)
    (halt,) = g.halts().values()
    assert halt.code is R.FILL_MISMATCH and "cannot be told" in halt.reason


@pytest.mark.parametrize("parent_id", [["P"], {"P": 1}, 7])
def test_a_bust_or_correction_naming_a_parent_that_is_no_string_is_refused(
    rig: Callable[..., Rig], parent_id: object
) -> None:
    """A parent id that is no string raised TypeError (unhashable) from deep in the Guard,
    or was looked up as given; it is refused with a ValueError naming it, changing nothing."""
    r = rig()
    g = r.guard
    g.check(r.order(qty=100, id="a"))
    f = Fill("a", "IBM", Side.BUY, 10, 100.0)
    g.on_fill(f)
    with pytest.raises(ValueError, match=r"on_bust: parent_id must be a string"):
        g.on_bust(f, parent_id=parent_id)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"on_correct: parent_id must be a string"):
        g.on_correct(f, Fill("a", "IBM", Side.BUY, 5, 100.0), parent_id=parent_id)  # type: ignore[arg-type]
    assert g.position("IBM") == 10 and g.filled("a") == 10 and g.halts() == {}


@pytest.mark.parametrize("bad", [None, "a", ("a", "IBM", "BUY", 10, 100.0)])
def test_a_bust_correction_or_adoption_of_no_fill_or_order_is_refused_alike_in_both_builds(
    rig: Callable[..., Rig], bad: object
) -> None:
    """Something that is no Fill (or Order) is a ValueError naming the call, changing
    nothing, in the compiled build as in the pure one (which raised its own TypeError)."""
    r = rig()
    g = r.guard
    g.check(r.order(qty=100, id="a"))
    f = Fill("a", "IBM", Side.BUY, 10, 100.0)
    g.on_fill(f)
    with pytest.raises(ValueError, match=r"^on_bust: expected a Fill"):
        g.on_bust(bad)
    with pytest.raises(ValueError, match=r"^on_correct: old and new must be Fill"):
        g.on_correct(f, bad)
    with pytest.raises(ValueError, match=r"^adopt: expected an Order"):
        g.adopt(bad)
    assert g.position("IBM") == 10 and g.filled("a") == 10 and g.halts() == {}
    assert g.working_qty("IBM") == (90, 0)
