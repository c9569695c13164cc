"""Cancel requests for orders the Guard does not hold (`Guard.on_cancel_request`).

A gateway forwards every client cancel to the venue, whether or not the order is one the
Guard holds ("the venue decides: unknown order"). Before, such a request was counted
nowhere: the cancel-to-fill ratio counts only cancels the venue confirmed, so a loop
cancelling order ids that do not exist flooded the venue and nothing noticed. Now each is
counted, and more than `max_unknown_cancels_per_s` in any second halt the node; the
cancels themselves are never refused.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.clock import NS_PER_S
from knightwatch.decision import RejectReason as R
from knightwatch.limits import Limits, LimitsError
from knightwatch.state import Scope, TradingState

from .conftest import Rig

LIMIT = 5


def halted(r: Rig) -> bool:
    return r.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["new", "cancel_known", "cancel_unknown"]), st.integers(0, 9)),
        max_size=80,
    )
)
def test_only_requests_for_orders_not_held_are_counted(ops: list[tuple[str, int]]) -> None:
    """Whatever mix of orders and cancel requests, in one instant: `unknown_cancels` is
    the requests naming no working order, and the node halts (new orders refused) exactly
    when more than the limit of them came (requests for held orders never count)."""
    r = Rig(max_unknown_cancels_per_s=LIMIT)
    g = r.guard
    held: list[str] = []
    unknown = 0
    for op, i in ops:
        if op == "new":
            o = r.order(qty=1)
            d = g.check(o)
            assert d.accepted == (unknown <= LIMIT), d
            if d.accepted:
                held.append(o.id)
        elif op == "cancel_known" and held:
            g.on_cancel_request(held[i % len(held)])
        elif op == "cancel_unknown":
            g.on_cancel_request(f"never-{i}")
            unknown += 1
    assert g.unknown_cancels == unknown
    assert halted(r) == (unknown > LIMIT)


def test_a_storm_of_unknown_cancels_halts_the_node_and_cancels_still_pass(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_unknown_cancels_per_s=LIMIT)
    g = r.guard
    assert g.check(r.order(qty=100, id="live")).accepted
    for i in range(LIMIT):
        g.on_cancel_request(f"gone-{i}")
    assert not halted(r) and g.unknown_cancels == LIMIT
    g.on_cancel_request("gone-x")  # the sixth within one second
    assert halted(r)
    d = r.send()
    assert not d.accepted and d.reason is R.UNKNOWN_CANCELS
    assert (
        "6 cancel requests for orders this Guard does not hold in the last 1s "
        "> max_unknown_cancels_per_s 5"
    ) in d.detail, d.detail
    # the stop direction goes on: more requests are taken (never raise) and a real cancel
    # of a held order frees it
    for i in range(50):
        g.on_cancel_request(f"more-{i}")
    g.on_cancel_request("live")
    g.on_cancel("live")
    assert g.remaining("live") is None and g.unknown_cancels == LIMIT + 51
    halt = g.latched(R.UNKNOWN_CANCELS)[(Scope.NODE, "n1")]
    assert halt.actor == "guard:unknown_cancels"


def test_the_window_rolls(rig: Callable[..., Rig]) -> None:
    """The limit is per any second: the limit each second, for a minute, never halts; the
    same requests bunched into under a second do."""
    r = rig(max_unknown_cancels_per_s=LIMIT)
    g = r.guard
    for _ in range(60):
        for i in range(LIMIT):
            g.on_cancel_request(f"gone-{i}")
        r.clock.advance(NS_PER_S)
    assert not halted(r) and g.unknown_cancels == 60 * LIMIT
    for i in range(LIMIT):
        g.on_cancel_request(f"gone-{i}")
        r.clock.advance(NS_PER_S // (2 * LIMIT))
    g.on_cancel_request("one-more")  # six within the last half second
    assert halted(r)


def test_known_orders_and_pending_replaces_are_not_counted(rig: Callable[..., Rig]) -> None:
    """A cancel of a working order, or of a replace still in flight (its new id), names an
    order the Guard holds; one of an order already cancelled, filled or never sent, or no
    string id at all, does not."""
    r = rig(max_unknown_cancels_per_s=LIMIT)
    g = r.guard
    assert g.check(r.order(qty=100, id="a")).accepted
    assert g.check_replace("a", r.order(qty=50, id="a2")).accepted
    for _ in range(3 * LIMIT):
        g.on_cancel_request("a")
        g.on_cancel_request("a2")
    assert g.unknown_cancels == 0 and not halted(r)
    g.on_replace_ack("a2")
    g.on_cancel("a2")
    for oid in ("a", "a2", "never", "", None, 7):
        g.on_cancel_request(oid)
    assert g.unknown_cancels == 6 and halted(r)


def test_switched_off_counts_but_never_halts(rig: Callable[..., Rig]) -> None:
    r = rig()  # Limits.off: max_unknown_cancels_per_s None
    assert r.limits.max_unknown_cancels_per_s is None
    for i in range(1000):
        r.guard.on_cancel_request(f"gone-{i}")
    assert r.guard.unknown_cancels == 1000 and not halted(r)
    assert r.send().accepted


def test_set_limits_keeps_the_requests_already_counted(rig: Callable[..., Rig]) -> None:
    """A tighter limit applies to the last second at once, as the order-rate windows do."""
    r = rig(max_unknown_cancels_per_s=100)
    for i in range(10):
        r.guard.on_cancel_request(f"gone-{i}")
    r.guard.set_limits(Limits.off(max_unknown_cancels_per_s=LIMIT, version="tight"))
    assert not halted(r)
    r.guard.on_cancel_request("one-more")
    assert halted(r)


def test_the_default_is_on() -> None:
    assert Limits().max_unknown_cancels_per_s == 100


def test_a_bad_limit_is_one_line_naming_the_field() -> None:
    for bad, rule in ((0, "must be >= 1"), (-3, "must be >= 1"), (2.5, "must be an integer")):
        try:
            Limits.from_mapping({"fleet": {"max_unknown_cancels_per_s": bad}})
        except LimitsError as e:
            want = f"limits: fleet.max_unknown_cancels_per_s: {rule} (got {bad})"
            assert e.problems == [want] and "\n" not in want, e.problems
        else:
            raise AssertionError(f"{bad!r} accepted")


def test_a_halt_listener_that_fails_never_fails_the_cancel(rig: Callable[..., Rig]) -> None:
    """The halt is latched before it is told: a listener that raises (a node runtime
    that cannot publish) is logged, and the cancel request that tripped it goes on."""
    r = rig(max_unknown_cancels_per_s=LIMIT)

    def broken(*_: object) -> None:
        raise RuntimeError("control plane gone")

    r.guard.listen_for_halts(broken)
    for i in range(LIMIT + 3):
        r.guard.on_cancel_request(f"gone-{i}")  # raises nothing
    assert halted(r) and not r.send().accepted
