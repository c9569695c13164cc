"""What an order holds after the venue changes its leaves (a restatement, a replace it took):
the customer's part of a child stays the customer's as it was checked, and leaves the Guard
had freed while a replace was pending are not worked again uncounted."""

from __future__ import annotations

from collections.abc import Callable

from knightwatch.decision import RejectReason as R
from knightwatch.state import Scope

from .conftest import Rig


def _two_children(r: Rig) -> None:
    # c1 is all the customer's (100 of the parent's 100), c2 all the firm's (beyond it)
    r.guard.register_parent("P", 100, account="C")
    assert r.send(qty=100, parent_id="P", id="c1").accepted
    assert r.send(qty=50, parent_id="P", id="c2").accepted
    assert r.guard.working_qty("IBM") == (50, 0)
    assert r.guard.customer_exposure("C")[0] == 10_000.0


def test_a_restated_childs_customer_part_stays_the_customers(rig: Callable[..., Rig]) -> None:
    r = rig(max_parent_qty_multiple=1.5, max_customer_gross_exposure=10_000.0)
    g = r.guard
    _two_children(r)
    g.on_restate("c1", 90)  # the venue cut c1 by 10
    # before, c1 was split afresh against the parent, whose committed quantity counts c2's
    # 50 of the firm's: 40 of c1 became the firm's (90 working, past every firm check) and
    # the customer's exposure read 5,000
    assert g.working_qty("IBM") == (50, 0)
    assert g.customer_exposure("C")[0] == 9_000.0
    g.register_parent("P2", 100, account="C")
    d = r.send(qty=50, parent_id="P2", id="d1")  # 9,000 + 5,000 > the customer's 10,000
    assert not d.accepted and d.reason is R.CUSTOMER_GROSS_EXPOSURE, d


def test_a_replaced_childs_customer_part_stays_the_customers(rig: Callable[..., Rig]) -> None:
    r = rig(max_parent_qty_multiple=1.5, max_position_qty=60)
    g = r.guard
    _two_children(r)
    assert g.check_replace("c1", r.order(qty=100, price=100.5, parent_id="P", id="c1r")).accepted
    g.on_replace_ack("c1r")
    assert g.working_qty("IBM") == (50, 0)  # before: (100, 0), past max_position_qty 60
    assert g.customer_exposure("C")[0] == 10_000.0
    assert g.trading_state(Scope.NODE, "n1").name == "ACTIVE"


def test_leaves_cut_while_a_replace_is_pending_stay_held_until_the_venue_answers(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_position_qty=120)
    g = r.guard
    assert r.send(qty=100, id="a").accepted
    assert g.check_replace("a", r.order(qty=120, id="a2")).accepted  # 20 more, checked
    g.on_restate("a", 50)  # the venue cut it while the replace was pending
    assert g.working_qty("IBM") == (120, 0)  # the replace may still work all 120
    d = r.send(qty=50, id="b")  # before: accepted in the room the cut freed
    assert not d.accepted and d.reason is R.MAX_POSITION, d
    g.on_replace_ack("a2")  # the venue works the replace's 120 in full
    assert g.remaining("a2") == 120
    assert g.working_qty("IBM") == (120, 0)
    assert g.trading_state(Scope.NODE, "n1").name == "ACTIVE"


def test_leaves_cut_while_a_replace_is_pending_are_freed_by_its_reject(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_position_qty=120)
    g = r.guard
    assert r.send(qty=100, id="a").accepted
    assert g.check_replace("a", r.order(qty=120, id="a2")).accepted
    g.on_restate("a", 50)
    g.on_replace_reject("a2")  # the order stays as the venue cut it
    assert g.working_qty("IBM") == (50, 0)
    assert g.remaining("a") == 50
    assert r.send(qty=70, id="b").accepted
