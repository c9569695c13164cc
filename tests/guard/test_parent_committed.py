"""A parent's committed quantity (filled plus working) through every way a child executes
more than it was checked for or ends where its id changed: an overfill, a correction to
more, a restatement to nothing, a replace the venue acknowledged with nothing left. Each
must keep the parent check counting what the venue executed, after the halt is resumed
(a parent limit is otherwise widened by the difference), and a property test holds the
parent's committed quantity at or above what its children executed and have working
through any sequence of order-flow events."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knightwatch.clock import SimClock
from knightwatch.decision import RejectReason as R
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Fill, Order, Side
from knightwatch.state import Scope

from .conftest import Rig


def _fill(order_id: str, qty: int) -> Fill:
    return Fill(order_id, "IBM", Side.BUY, qty, 100.0)


def _resumed(r: Rig) -> None:
    r.guard.resume(Scope.NODE, "n1", "reconciled", "ops")
    assert r.guard.trading_state(Scope.NODE, "n1").name == "ACTIVE"


def test_an_overfilled_childs_excess_counts_in_its_parent(rig: Callable[..., Rig]) -> None:
    r = rig(max_parent_qty_multiple=1.5)
    g = r.guard
    g.register_parent("P", 100, account="A")
    assert r.send(qty=100, parent_id="P", id="c1").accepted
    g.on_fill(_fill("c1", 150))  # 50 more than it had working: an overfill, it halts
    assert g.trading_state(Scope.NODE, "n1").name == "HALTED"
    assert g.parent_committed("P") == 150
    _resumed(r)
    d = r.send(qty=50, parent_id="P", id="c2")  # 150 executed of the 150 allowed already
    assert not d.accepted and d.reason is R.PARENT_QTY_EXCEEDED, d


def test_a_childs_correction_to_more_counts_in_its_parent(rig: Callable[..., Rig]) -> None:
    r = rig(max_parent_qty_multiple=1.0)
    g = r.guard
    g.register_parent("P", 100, account="A")
    assert r.send(qty=100, parent_id="P", id="c1").accepted
    g.on_fill(_fill("c1", 50))
    g.on_correct(_fill("c1", 50), _fill("c1", 60))  # it executed 60, not 50
    g.on_restate("c1", 40)  # the venue's leaves follow: 60 filled, 40 working
    assert g.trading_state(Scope.NODE, "n1").name == "ACTIVE"
    assert g.parent_committed("P") == 100
    d = r.send(qty=10, parent_id="P", id="c2")  # would total 110 of the parent's 100
    assert not d.accepted and d.reason is R.PARENT_QTY_EXCEEDED, d


def test_a_late_fill_of_a_child_restated_to_nothing_counts_in_its_parent(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_parent_qty_multiple=1.0)
    g = r.guard
    g.register_parent("P", 100, account="A")
    assert r.send(qty=100, parent_id="P", id="c1").accepted
    g.on_restate("c1", 0)  # the venue took it all away before anything filled
    g.on_fill(_fill("c1", 60))  # and then reported a fill of it: it halts
    assert g.trading_state(Scope.NODE, "n1").name == "HALTED"
    assert g.parent_committed("P") == 60
    _resumed(r)
    d = r.send(qty=50, parent_id="P", id="c2")  # the children executed 60 of 100 already
    assert not d.accepted and d.reason is R.PARENT_QTY_EXCEEDED, d


def test_a_late_fill_under_the_id_of_a_replace_that_ended_it_counts_in_its_parent(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_parent_qty_multiple=1.0)
    g = r.guard
    g.register_parent("P", 100, account="A")
    assert r.send(qty=100, parent_id="P", id="c1").accepted
    g.on_fill(_fill("c1", 40))
    assert g.check_replace("c1", r.order(qty=40, parent_id="P", id="c1r")).accepted
    g.on_replace_ack("c1r")  # 40 of 40 filled: nothing left, it ends here
    assert g.remaining("c1r") is None
    g.on_fill(_fill("c1r", 60))  # the venue filled it under the new id after all: it halts
    assert g.trading_state(Scope.NODE, "n1").name == "HALTED"
    assert g.parent_committed("P") == 100
    _resumed(r)
    d = r.send(qty=60, parent_id="P", id="c2")
    assert not d.accepted and d.reason is R.PARENT_QTY_EXCEEDED, d


# ------------------------------------------------------------------ property

_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(("new", "fill", "cancel", "restate", "replace", "correct", "resume")),
        st.integers(0, 7),  # which order
        st.integers(1, 150),  # a quantity
        st.booleans(),  # ack a replace (else the venue rejects it); a fill beyond the leaves
    ),
    max_size=40,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_EVENTS)
def test_a_parent_commits_at_least_what_its_children_executed_and_have_working(
    events: list[tuple[str, int, int, bool]],
) -> None:
    g = Guard(Limits.off(max_parent_qty_multiple=1.5), node="n1", clock=SimClock(10**12))
    g.on_price("IBM", 100.0)
    g.arm("test")
    g.register_parent("P", 200, account="A")
    executed = 0  # what the venue executed of the parent's children
    fills: dict[str, list[Fill]] = {}  # what can be corrected, by the id it was reported under
    ids: list[str] = []  # every id an accepted child or replace had
    n = 0
    led = g._ledger
    for kind, i, qty, flag in events:
        oid = ids[i % len(ids)] if ids else ""
        if kind == "new" or not ids:
            n += 1
            if g.check(Order(f"c{n}", "s", "IBM", Side.BUY, qty, 100.0, "P")).accepted:
                ids.append(f"c{n}")
        elif kind == "fill":
            rem = g.remaining(oid)
            q = qty if flag or rem is None or rem == 0 else min(qty, rem)
            f = _fill(oid, q)
            g.on_fill(f)
            executed += q
            fills.setdefault(oid, []).append(f)
        elif kind == "cancel":
            g.on_cancel(oid)
        elif kind == "restate":
            rem = g.remaining(oid)
            if rem is not None:
                g.on_restate(oid, qty % (rem + 1))
        elif kind == "correct" and fills.get(oid):
            old = fills[oid].pop()
            new = _fill(oid, max(1, old.qty + qty % 11 - 5))
            g.on_correct(old, new)
            executed += new.qty - old.qty
            fills[oid].append(new)
        elif kind == "replace" and g.remaining(oid) is not None:
            n += 1
            nid = f"c{n}"
            if g.check_replace(oid, Order(nid, "s", "IBM", Side.BUY, qty, 100.0, "P")).accepted:
                if flag:
                    g.on_replace_ack(nid)
                    ids.append(nid)  # the order's id from now on (the old one still reports)
                else:
                    g.on_replace_reject(nid)
        elif kind == "resume":
            g.resume(Scope.NODE, "n1", "reconciled", "ops")
        p = led.parents["P"]
        working = sum(w.remaining for w in led.working.values())
        reserved = sum(pp.reserved for pp in led.pending.values())
        assert p.committed >= executed + working + reserved, (kind, oid, qty, flag)
