"""The gateway's book: live orders indexed apart, what it remembers bounded by the
Guard's duplicate scope (and never a live order forgotten), nothing walked by the
garbage collector."""

from __future__ import annotations

import gc
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED, Decision, RejectReason
from knightwatch.gateway.book import LIVE_STATUS, GatewayBook, GwOrder, Request
from knightwatch.order import Fill, Side

CPYTHON = sys.implementation.name == "cpython"
S = 1_000_000_000
WINDOW = 10 * S
STATUSES = sorted(LIVE_STATUS | {"2", "4", "8", "C", "3"})


def _order(i: int, comp: str = "C1", status: str = "A") -> GwOrder:
    return GwOrder(comp, f"c{i}", f"{comp}:c{i}", "s", "IBM", Side.BUY, "1", 100, 100.0,
                   status=status)  # fmt: skip


def _route(book: GatewayBook, i: int, comp: str = "C1") -> GwOrder:
    """What the gateway does for an accepted order and its first fill."""
    go = _order(i, comp)
    assert book.claim(go.clordid, comp)
    book.add(go)
    book.decide(go.guard_id, ACCEPTED, go)
    book.saw_exec(f"e{i}", go)
    book.keep_fill(f"e{i}", Fill(go.guard_id, "IBM", Side.BUY, 10, 100.0))
    return go


def _knows(book: GatewayBook, go: GwOrder, i: int) -> tuple[bool, ...]:
    return (
        go.clordid in book.orders,
        go.clordid in book.owner,
        go.guard_id in book.decided,
        f"e{i}" in book.exec_seen,
        f"e{i}" in book.fills,
    )


def test_orders_and_exec_ids_are_not_walked_and_stay_usable() -> None:
    book = GatewayBook()
    for i in range(100):
        book.add(_order(i))
        book.saw_exec(f"e{i}", None)
    go = book.orders["c7"]
    book.set_status(go, "1")
    go.cum, go.leaves, go.cancel_note = 40, 60, "killed"  # plain values
    book.rename(go, "c7-r", "g7-r")
    assert book.orders["c7-r"] is go and "c7" not in book.orders and go.live
    assert book.working["c7-r"] is go and "c7" not in book.working
    assert [o.clordid for o in book.live()][:3] == ["c0", "c1", "c2"]
    assert all(gc.is_tracked(o) is not CPYTHON for o in book.orders.values())
    assert gc.is_tracked(book.exec_seen) is not CPYTHON and "e99" in book.exec_seen


def test_kill_and_disconnect_see_only_live_orders() -> None:
    book = GatewayBook()
    orders = [_order(i, comp="C1" if i % 2 else "C2") for i in range(10)]
    for go in orders:
        book.add(go)
    for go in orders[:6]:
        book.set_status(go, "2" if go.clordid != "c0" else "4")  # filled, one cancelled
    assert {o.clordid for o in book.live()} == {"c6", "c7", "c8", "c9"}
    assert {o.clordid for o in book.of("C1")} == {"c7", "c9"}
    book.set_status(orders[0], "1")  # a late partial fill on a cancelled order: live again
    assert "c0" in {o.clordid for o in book.of("C2")}
    assert orders[0].done_ns == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "status", "rename"]),
            st.integers(0, 7),
            st.sampled_from(STATUSES),
        ),
        max_size=60,
    )
)
def test_the_live_index_is_exactly_the_live_orders(ops: list[tuple[str, int, str]]) -> None:
    clock = SimClock(1_000 * S)
    book = GatewayBook(WINDOW, clock.monotonic_ns)
    made: list[GwOrder] = []
    for op, i, status in ops:
        clock.advance(S)
        if op == "add" or not made:
            go = _order(len(made), status=status)
            made.append(go)
            book.add(go)
            continue
        go = made[i % len(made)]
        if op == "status":
            book.set_status(go, status)
        elif go.clordid in book.orders:
            book.rename(go, go.clordid + "r", go.guard_id + "r")
    assert book.working == {k: o for k, o in book.orders.items() if o.live}
    assert all(o.live for o in book.live())
    for o in made:  # a live order is never forgotten
        if o.live:
            assert book.orders.get(o.clordid) is o


def test_a_finished_order_is_forgotten_between_one_and_two_windows_after_it_finished() -> None:
    clock = SimClock(1_000 * S)
    book = GatewayBook(WINDOW, clock.monotonic_ns)
    go = _route(book, 1)
    clock.advance(3 * WINDOW)  # live all along: nothing goes
    book.forget(100)
    assert _knows(book, go, 1) == (True,) * 5
    book.set_status(go, "2")
    finished = clock.monotonic_ns()
    clock.advance_to(finished + WINDOW - 1)
    book.forget(100)
    assert _knows(book, go, 1) == (True,) * 5, "forgotten before a window had passed"
    clock.advance_to(finished + 2 * WINDOW)
    book.forget(100)
    assert _knows(book, go, 1) == (False,) * 5, "remembered two windows after it finished"


def test_forgetting_rides_on_later_orders_a_few_facts_each() -> None:
    clock = SimClock(1_000 * S)
    book = GatewayBook(WINDOW, clock.monotonic_ns)
    first = [_route(book, i) for i in range(50)]
    for go in first:
        book.set_status(go, "2")
    clock.advance(3 * WINDOW)
    # each later order schedules its own facts and looks at FORGET_PER_CALL due ones
    # per fact it schedules: the 50 old orders' 250 facts are gone after 50 new orders
    later = [_route(book, 100 + i) for i in range(50)]
    assert not any(any(_knows(book, go, i)) for i, go in enumerate(first))
    assert all(_knows(book, go, 100 + i) == (True,) * 5 for i, go in enumerate(later))


def test_memory_is_flat_after_the_scope() -> None:
    """A day at a steady rate, every order finished a second after it was routed: the book
    holds at most two windows of orders, whatever the length of the run."""
    clock = SimClock(1_000 * S)
    book = GatewayBook(WINDOW, clock.monotonic_ns)
    per_s = 20
    peaks = []
    for second in range(10 * WINDOW // S):
        for j in range(per_s):
            go = _route(book, second * per_s + j)
            book.set_status(go, "2")
        clock.advance(S)
        if second % 10 == 9:
            peaks.append(len(book.orders))
    bound = 2 * WINDOW // S * per_s + per_s
    assert max(peaks) <= bound
    assert max(len(book.owner), len(book.decided), len(book.exec_seen), len(book.fills)) <= bound
    assert abs(peaks[-1] - peaks[-4]) <= 2 * per_s  # flat after the scope


def test_a_request_in_flight_keeps_its_clordid_claimed() -> None:
    clock = SimClock(1_000 * S)
    book = GatewayBook(WINDOW, clock.monotonic_ns)
    assert book.claim("cxl1", "C1")
    book.requests["cxl1"] = Request("F", "C1", None)
    clock.advance(5 * WINDOW)
    book.forget(100)
    assert book.owner.get("cxl1") == "C1"
    assert not book.claim("cxl1", "C2"), "another session took a ClOrdID in flight"
    del book.requests["cxl1"]  # answered
    clock.advance(2 * WINDOW)
    book.forget(100)
    assert "cxl1" not in book.owner and book.claim("cxl1", "C2")


def test_an_order_decided_twice_still_leaves() -> None:
    """Accepted, then the venue session did not take it: answered again under the same id."""
    clock = SimClock(1_000 * S)
    book = GatewayBook(WINDOW, clock.monotonic_ns)
    go = _route(book, 1)
    book.set_status(go, "8")
    book.decide(go.guard_id, Decision(False, RejectReason.VENUE_UNAVAILABLE, "down"), None)
    clock.advance(3 * WINDOW)
    book.forget(100)
    assert go.clordid not in book.orders and go.guard_id not in book.decided


def test_a_replaced_order_leaves_under_its_new_clordid() -> None:
    clock = SimClock(1_000 * S)
    book = GatewayBook(WINDOW, clock.monotonic_ns)
    go = _route(book, 1)
    assert book.claim("c1r", "C1")
    book.decide("C1:c1r", ACCEPTED, go)
    book.rename(go, "c1r", "C1:c1r")
    assert book.find("c1") is go and book.find("c1r") is go  # the old id still finds it
    assert not book.free("c1", "C1")  # and is not reused while the order is remembered
    book.set_status(go, "4")
    clock.advance(3 * WINDOW)
    book.forget(100)
    assert not book.orders and not book.working and not book.decided and not book.owner
    assert not book.renamed and book.find("c1") is None


def test_without_a_window_nothing_is_forgotten() -> None:
    clock = SimClock(1_000 * S)
    book = GatewayBook(None, clock.monotonic_ns)
    go = _route(book, 1)
    book.set_status(go, "2")
    clock.advance(1_000 * WINDOW)
    assert book.forget(100) == 0
    assert _knows(book, go, 1) == (True,) * 5


def test_an_id_names_one_order_or_one_request_and_the_gateways_own_skip_them() -> None:
    book = GatewayBook()
    go = _route(book, 1)
    assert book.claim("cxl1", "C1")
    book.requests["cxl1"] = Request("F", "C1", go)
    assert not book.free("c1", "C1") and not book.free("cxl1", "C1"), "in use: its own"
    assert not book.free("c1", "C2") and book.free("c2", "C1")
    for taken in ("KW-1", "KW-2"):  # a client may send any string
        assert book.claim(taken, "C1")
    assert book.next_id("KW-") == "KW-3"
    assert book.owner["KW-3"] != "C1" and not book.free("KW-3", "C1")
