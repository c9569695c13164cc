"""SmarsRouter hard bounds hold whatever the algorithm, the fills and the rejects do."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.order import Side
from knightwatch.sim.powerpeg import PowerPeg
from knightwatch.sim.release import BEHAVIOURS, Release
from knightwatch.sim.router import ParentOrder, RoutedParent, RouterBounds, SmarsRouter


def parent(qty: int, algo: str, child_qty: int = 100) -> RoutedParent:
    po = ParentOrder("P1", "X", Side.BUY, qty, 0, "n1", "f")
    return RoutedParent(po, 0, BEHAVIOURS[algo], child_qty, 1_000_000)


@settings(max_examples=200, deadline=None)
@given(
    lots=st.integers(1, 50),
    child_qty=st.integers(1, 500),
    max_children=st.integers(1, 100),
    multiple=st.floats(0.1, 5.0),
    algo=st.sampled_from(sorted(BEHAVIOURS)),
    steps=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(-1000, 10_000), st.integers(0, 50)),
        max_size=40,
    ),
)
def test_router_never_exceeds_its_hard_bounds(
    lots: int,
    child_qty: int,
    max_children: int,
    multiple: float,
    algo: str,
    steps: list[tuple[int, int, int]],
) -> None:
    qty = lots * child_qty
    bounds = RouterBounds(max_children_per_parent=max_children, max_qty_multiple=multiple)
    router = SmarsRouter("n1", bounds)
    p = parent(qty, algo, child_qty)
    router.accept(p)
    for t, (due, fill, reject) in enumerate(steps):
        n = router.release(p, due, t)
        for _ in range(min(n, reject)):  # the Guard refuses some of what left the router
            router.on_reject(p)
        router.on_fill(p, fill)  # arbitrary, even nonsensical, execution reports
        assert p.children <= max_children
        assert p.sent_qty <= int(qty * multiple)
        assert p.sent_qty == p.children * child_qty


def test_power_peg_never_stops_on_fills_without_bounds() -> None:
    router = SmarsRouter("n8", None)
    p = parent(100, "power_peg")
    for t in range(100):
        assert router.release(p, 10, t) == 10
        router.on_fill(p, 1000)
    assert p.children == 1000 and not p.done


def test_fill_to_parent_stops_when_the_parent_is_filled() -> None:
    router = SmarsRouter("n1", None)
    p = parent(500, "smars")
    assert router.release(p, 10, 0) == 5
    router.on_fill(p, 500)
    assert router.release(p, 10, 1) == 0
    assert p.done == "filled"


def test_bounds_stop_power_peg_and_say_which_rule() -> None:
    router = SmarsRouter("n8", RouterBounds(max_children_per_parent=3))
    p = parent(1000, "power_peg")
    assert router.release(p, 10, 5) == 3
    assert p.done == "router_bound"
    assert router.bound_hits == [(5, "P1", "max_children_per_parent")]


def test_the_same_flag_means_different_code_in_two_releases() -> None:
    new = Release("rlp", {"reused": "rlp"})
    old = Release("legacy", {"reused": "power_peg"})
    assert isinstance(old.behaviour("reused"), PowerPeg)
    assert new.behaviour("reused").name == "rlp"
    assert old.behaviour(None).name == "smars"


def test_an_rlp_parent_rests_and_keeps_its_child_clock() -> None:
    router = SmarsRouter("n1", None)
    p = parent(500, "rlp")
    assert router.release(p, 10, 0) == 0
    assert not p.done and p.next_k == 10, "resting is not filled: the parent stays working"


def test_a_refused_child_is_not_counted_and_the_parent_completes_later() -> None:
    """A child the Guard refuses (a rate limit at the open) never left: the bounds and the
    algorithm do not count it, and the parent is completed once children get out again."""
    router = SmarsRouter("n1", RouterBounds(max_children_per_parent=3, max_qty_multiple=1.0))
    p = parent(300, "smars")
    for t in range(5):  # refused five times over: nothing left, nothing used up
        assert router.release(p, 1, t) == 1
        router.on_reject(p)
    assert (p.children, p.sent_qty, p.refused, p.done) == (0, 0, 5, "")
    for t in range(5, 8):
        assert router.release(p, 1, t) == 1
        router.on_fill(p, 100)
    assert router.release(p, 1, 9) == 0
    assert p.done == "filled" and p.filled == 300 and not router.bound_hits
