"""Cancel requests for orders a node's Guard does not hold, seen by the supervisor.

Such a request goes to the venue ("unknown order") and no venue confirms it, so the
node's `cancels` never moved: a node whose strategy loops cancelling order ids that do
not exist, under its Guard's own `max_unknown_cancels_per_s`, moved no measure the
supervisor held. The node now reports them (`NodeMetrics.unknown_cancels`) and the
supervisor counts them in the node's cancel rate, held to its baseline and its floor.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from knightwatch.clock import SimClock
from knightwatch.control.fleet.supervisor import (
    Rule,
    Supervisor,
    SupervisorConfig,
    unreadable,
)
from knightwatch.control.plane.wire import ENCODER, METRICS_DECODER, NodeMetrics
from knightwatch.guard import Guard, LockedGuard
from knightwatch.state import Scope

from ..fleet_fixtures import OrderIds
from .test_supervisor_cancels import Quoters, S, trading_node

QUOTING = (30.0, 27.0, 3.0)
"""Accepted orders, fills and confirmed cancels a second, every node alike."""


def test_a_loop_cancelling_orders_that_do_not_exist_is_halted_by_name() -> None:
    """n1 goes on quoting as before and also sends 90 cancels a second for order ids its
    Guard does not hold (under the Guard's own 100/s). Before, no measure moved; now n1
    alone is halted on its cancel rate, by name."""
    f = Quoters(SupervisorConfig())
    assert f.run(120, QUOTING) == []
    fired = f.run(5, QUOTING, unknown={"n1": 90.0})
    assert {(a.rule, a.key, a.scope) for a in fired} == {
        (Rule.BASELINE_CANCEL_RATE, "n1", Scope.NODE)
    }, fired
    assert "node n1 cancel_rate" in fired[0].reason, fired[0].reason


def test_a_few_unknown_cancels_under_the_floor_are_not_halted() -> None:
    """Cancels racing their orders' fills: a few a second, under the 20/s floor."""
    f = Quoters(SupervisorConfig(), nodes=2)
    assert f.run(120, QUOTING) == []
    assert f.run(30, QUOTING, unknown={"n1": 10.0, "n2": 10.0}) == []


def test_a_bad_or_falling_count_is_unreadable() -> None:
    m = NodeMetrics("n1", 0, 5, 5, 0, 1, 0.0, 0.0, True, 0, instance="p1", unknown_cancels=-1)
    assert "unknown_cancels -1 < 0" in unreadable(m)
    sup = Supervisor(SupervisorConfig(), SimClock(10 * S))
    sup.observe(msgspec.structs.replace(m, unknown_cancels=7))
    fired = sup.observe(msgspec.structs.replace(m, unknown_cancels=3))
    assert any("unknown_cancels 3 < 7" in a.reason for a in fired), fired


def test_older_nodes_metrics_decode_with_no_unknown_cancels() -> None:
    doc = json.loads(ENCODER.encode(NodeMetrics("n1", 0, 5, 5, 0, 1, 0.0, 0.0, True, 0)))
    del doc["unknown_cancels"]
    assert METRICS_DECODER.decode(json.dumps(doc).encode()).unknown_cancels == 0


@pytest.mark.parametrize("kind", [Guard, LockedGuard])
def test_the_node_reports_its_guards_unknown_cancels(kind: type[Guard]) -> None:
    """What the Guard counted (a gateway's `LockedGuard` too), requests for working
    orders not among them; still counted after the node halts on them."""
    guard, node = trading_node(kind, max_unknown_cancels_per_s=3)
    o = OrderIds("c").order()
    assert guard.check(o).accepted
    guard.on_cancel_request(o.id)
    assert node.metrics().unknown_cancels == 0
    for i in range(5):
        guard.on_cancel_request(f"gone-{i}")
    m = node.metrics()
    assert m.unknown_cancels == 5 and m.node_state == 2  # HALTED: 4 in a second > 3
