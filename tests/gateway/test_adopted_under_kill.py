"""An order the start-up mass status adopts while a kill is in force is cancelled at once.

A gateway restarted during a kill (the halt restored from the recorder or the kill
store before the sessions start, so no drain runs for it), or one that hears a kill
while the mass status is still answered, adopts the orders its last process left
working. Before, nothing cancelled them: the Guard refused new orders, but the
adopted ones worked on at the venue through the kill. Real QuickFIX sessions
(`conftest.Rig`); the venue keeps the orders of a lost session.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from knightwatch.clock import SystemClock
from knightwatch.gateway.config import ClientSession
from knightwatch.gateway.gateway import Gateway
from knightwatch.guard import LockedGuard
from knightwatch.state import Scope

from .conftest import LIMITS, Rig, eventually
from .test_gateway import rest


def left_working(rig_factory: Callable[..., Rig]) -> Rig:
    """W1 (300 L000) and W2 (200 L001) of OMS1 left working at the venue by a stopped
    gateway."""
    keep = (ClientSession("OMS1", cancel_on_disconnect=False),)
    first = rig_factory(
        venue={"cancel_on_disconnect": False}, config={"store": "file", "clients": keep}
    )
    first.start().ready()
    rest(first, "W1", qty=300)
    rest(first, "W2", qty=200, symbol="L001")
    first.clients["OMS1"].stop()
    first.gateway.stop()
    assert sorted(o.clordid for o in first.venue.working()) == ["W1", "W2"]
    return first


def restart(first: Rig, halt: Callable[[LockedGuard], None]) -> tuple[Gateway, LockedGuard]:
    """A second process on the first's state directory, its Guard halted by `halt` before
    the sessions start (as a node runtime restores a kill before `prepare`)."""
    guard = LockedGuard(LIMITS, node="gw", clock=SystemClock(), recorder=first.recorder)
    halt(guard)
    second = Gateway(
        first.config,
        guard,
        first.root / "gateway",
        log_messages=False,
        on_reconciled=lambda: guard.arm("test"),
    )
    second.start()
    return second, guard


@pytest.mark.parametrize(
    ("scope", "key", "cancelled"),
    [
        (Scope.FLEET, "fleet", ["W1", "W2"]),
        (Scope.NODE, "gw", ["W1", "W2"]),
        (Scope.STRATEGY, "OMS1", ["W1", "W2"]),  # an adopted order may be any strategy's
        (Scope.SYMBOL, "l000", ["W1"]),  # a symbol in any case, as the Guard's halt
        (Scope.STRATEGY_SYMBOL, "desk/L001", ["W2"]),
    ],
)
def test_orders_adopted_under_a_kill_in_force_are_cancelled_at_the_venue(
    rig_factory: Callable[..., Rig], scope: Scope, key: str, cancelled: list[str]
) -> None:
    first = left_working(rig_factory)
    second, guard = restart(first, lambda g: g.halt(scope, key, "runaway", "ops"))
    try:
        eventually(lambda: second.reconciled.is_set(), what="reconciled")
        kept = sorted({"W1", "W2"} - set(cancelled))
        eventually(
            lambda: sorted(o.clordid for o in first.venue.working()) == kept,
            what=f"{cancelled} cancelled at the venue",
        )
        eventually(lambda: not second.still_working(scope, key), what="drained in the book")
        assert sorted(o.clordid for o in second.book.live()) == kept
        killed = [e["data"] for e in first.events("adopted_under_kill")]
        assert sorted(e["order_id"] for e in killed) == [f"reconciled:{c}" for c in cancelled]
        assert {(e["scope"], e["key"]) for e in killed} == {(scope.value, key)}
        # each remembers the kill: a cancel of it the venue never answers is sent again
        assert all((scope, key) in second.book.orders[c].kills for c in cancelled)
        assert guard.working_qty("L000")[0] == (0 if "W1" in cancelled else 300)
    finally:
        second.stop()


def test_an_automatic_halt_does_not_cancel_what_start_up_adopts(
    rig_factory: Callable[..., Rig],
) -> None:
    """The Guard's own node halt (a fill mismatch a person must look at) refuses new
    orders but cancels nothing of a running gateway; neither does it at start-up."""
    first = left_working(rig_factory)
    second, _guard = restart(first, lambda g: g.flag_mismatch("a fill nobody sent"))
    try:
        eventually(lambda: second.reconciled.is_set(), what="reconciled")
        time.sleep(0.5)
        assert sorted(o.clordid for o in first.venue.working()) == ["W1", "W2"]
        assert not first.events("adopted_under_kill")
    finally:
        second.stop()


def test_a_node_kill_over_the_guards_own_halt_still_cancels_what_start_up_adopts(
    rig_factory: Callable[..., Rig],
) -> None:
    """The Guard's fill-mismatch halt of the node latched first, then an operator's kill of
    the same node: `halts()` names the first of two alike, so the kill was not seen and
    the adopted orders worked on through it (`Guard.latched` reads the kill's own latch)."""
    first = left_working(rig_factory)

    def both(g: LockedGuard) -> None:
        g.flag_mismatch("a fill nobody sent")
        g.halt(Scope.NODE, "gw", "runaway", "ops")

    second, guard = restart(first, both)
    try:
        assert guard.halts()[(Scope.NODE, "gw")].reason != "runaway"  # the case at hand
        eventually(lambda: second.reconciled.is_set(), what="reconciled")
        eventually(lambda: not first.venue.working(), what="both cancelled at the venue")
        killed = [e["data"] for e in first.events("adopted_under_kill")]
        assert {(e["scope"], e["key"]) for e in killed} == {("node", "gw")}
    finally:
        second.stop()
