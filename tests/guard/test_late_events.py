"""Venue event orders the Guard meets late: a fill after its child's cancel was confirmed, a
bust reported under the id an order had before a replace. Each must leave the parent check
and the replace check counting what the venue executed (a limit is otherwise widened)."""

from __future__ import annotations

from collections.abc import Callable

from knightwatch.decision import RejectReason as R
from knightwatch.order import Fill, Order, Side
from knightwatch.state import Scope

from .conftest import Rig


def _fill(order_id: str, qty: int, side: Side = Side.BUY) -> Fill:
    return Fill(order_id, "IBM", side, qty, 100.0)


def _resumed(r: Rig) -> None:
    r.guard.resume(Scope.NODE, "n1", "reconciled", "ops")
    assert r.guard.trading_state(Scope.NODE, "n1").name == "ACTIVE"


def test_a_fill_after_a_partly_filled_childs_cancel_counts_in_its_parent(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_parent_qty_multiple=1.0)
    g = r.guard
    g.register_parent("P", 100, account="A")
    assert r.send(qty=100, parent_id="P", id="c1").accepted
    g.on_fill(_fill("c1", 40))
    g.on_cancel("c1")
    g.on_fill(_fill("c1", 60))  # the venue filled the rest before the cancel: it halts
    assert g.trading_state(Scope.NODE, "n1").name == "HALTED"
    assert g.parent_committed("P") == 100
    _resumed(r)
    d = r.send(qty=60, parent_id="P", id="c2")  # the children executed 100 of 100 already
    assert not d.accepted and d.reason is R.PARENT_QTY_EXCEEDED, d


def test_a_fill_after_an_unfilled_childs_cancel_counts_in_its_parent(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_parent_qty_multiple=1.0)
    g = r.guard
    g.register_parent("P", 100, account="A")
    kinds = ("cancel", "reject", "expire")
    for kind in kinds:
        assert r.send(qty=10, parent_id="P", id=f"c-{kind}").accepted
    g.on_cancel("c-cancel")
    g.on_reject("c-reject")
    g.on_expire("c-expire")
    for kind in kinds:
        g.on_fill(_fill(f"c-{kind}", 10))  # each halts
    assert g.parent_committed("P") == 30
    _resumed(r)
    assert r.send(qty=70, parent_id="P", id="c2").accepted
    d = r.send(qty=1, parent_id="P", id="c3")
    assert not d.accepted and d.reason is R.PARENT_QTY_EXCEEDED, d


def test_a_bust_under_the_id_before_a_replace_is_taken_off_the_order(
    rig: Callable[..., Rig],
) -> None:
    r = rig()
    g = r.guard
    assert r.send(qty=100, id="o1").accepted
    g.on_fill(_fill("o1", 30))
    assert g.check_replace("o1", Order("o2", "rlp", "IBM", Side.BUY, 100, 101.0)).accepted
    g.on_replace_ack("o2", 70)
    g.on_bust(_fill("o1", 30))  # the venue reports the bust under the fill's own id
    assert g.filled("o2") == 0
    assert g.position("IBM") == 0
    assert g.trading_state(Scope.NODE, "n1").name == "ACTIVE"
    g.on_restate("o2", 100)  # the venue reopens what the bust gave back: within the 100 checked
    assert g.trading_state(Scope.NODE, "n1").name == "ACTIVE"
    assert g.working_qty("IBM") == (100, 0)


def test_a_replace_after_such_a_bust_reserves_what_the_venue_will_work(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_position_qty=120)
    g = r.guard
    assert r.send(qty=100, id="o1").accepted
    g.on_fill(_fill("o1", 30))
    assert g.check_replace("o1", Order("o2", "rlp", "IBM", Side.BUY, 100, 101.0)).accepted
    g.on_replace_ack("o2", 70)
    g.on_bust(_fill("o1", 30))  # not reopened: 70 working, nothing filled, of 100
    assert r.send(qty=21, id="b1").accepted  # worst long 91
    # to 100 again at another price: the venue then works 100, so 30 more: worst long 121
    d = g.check_replace("o2", Order("o3", "rlp", "IBM", Side.BUY, 100, 102.0))
    assert not d.accepted and d.reason is R.MAX_POSITION, d
