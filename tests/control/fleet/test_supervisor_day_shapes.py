"""Stored day histories (`supervisor_day.<node>`) written by another supervisor release.

An upgrade reads what an older release stored (no `baselines`: it predates them) and goes
on with the node's day, learning its baselines afresh. A rollback reads what a newer
release stored: a field or a baseline shape this release does not know cannot vouch for
what the node booked today, so that node (and only that node) is halted with one line
naming the key and what did not read, the supervisor starts all the same, and the node's
history is stored afresh in this release's shape at its first sample.
"""

from __future__ import annotations

import msgspec

from knightwatch.clock import SimClock
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import (
    Action,
    DayRecord,
    Rule,
    Supervisor,
    SupervisorConfig,
)
from knightwatch.control.fleet.supervisor_service import SupervisorService
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import NodeMetrics
from knightwatch.state import Scope, TradingState

from ...identities import switch

S = 1_000_000_000


def _record(clock: SimClock, node: str, **extra: object) -> dict[str, object]:
    """An agency router's day as the release that introduced the record stored it."""
    return {
        "node_id": node, "at_ns": clock.time_ns(), "instance": f"{node}-1", "raw": 60_000.0,
        "value": 60_000.0, "points": [[clock.time_ns() - 600 * S, 0.0],
                                      [clock.time_ns(), 60_000.0]],
        "own_flow": False, **extra,
    }  # fmt: skip


def test_an_older_record_without_baselines_goes_on_with_the_day() -> None:
    """Upgrade: the record predates `baselines`; it restores with no halt, the day goes on
    from $60k (the router is halted at $100k, not given a fresh day) and the record stored
    back is in this release's shape."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(), clock)
    assert sup.restore({"supervisor_day.n1": msgspec.json.encode(_record(clock, "n1"))}) == []
    own = 60_000.0
    fired = []
    for second in range(1, 400):
        clock.advance(S)
        own += 150.0
        for n in ("n1", "n2", "n3"):
            flow = own if n == "n1" else 0.0
            fired += sup.observe(
                NodeMetrics(n, 0, 20 * second, 20 * second, 0, 20 * second, 0.0, 0.0, True, 0,
                            notional=40_000.0 * second + flow, principal_notional=flow,
                            parents=100, instance=f"{n}-1")
            )  # fmt: skip
        if fired:
            break
    assert [(a.rule, a.key) for a in fired] == [(Rule.PRINCIPAL_DAY, "n1")], fired
    assert 260 <= second <= 275, second
    stored = msgspec.json.decode(sup.day_records().get("supervisor_day.n1", b"{}"), type=DayRecord)
    assert stored.node_id == "n1" and stored.value >= 100_000.0


async def test_a_newer_records_shape_halts_its_node_by_name_and_the_supervisor_starts() -> None:
    """Rollback: n1's record carries a field this release does not know, n2's a baseline
    in a shape it does not read (three numbers, not two), n3's is this release's own. The
    service starts, n1 and n2 are halted with one line each naming the key and what did not
    read, n3 is not; n1's history is stored afresh, in this shape, at its first sample."""
    clock = SimClock(10 * S)
    fabric = MemoryFabric()
    writer = MemoryControlPlane(fabric)
    await writer.connect()
    records = {
        "n1": _record(clock, "n1", baselines={}, cancels_day=[[1, 2.0]]),
        "n2": _record(clock, "n2", baselines={"order_rate": [4.0, 4.0, 1.0]}),
        "n3": _record(clock, "n3", baselines={"order_rate": [4.0, 4.0]}),
    }
    for node, rec in records.items():
        await writer.put_record(Bucket.INCIDENT, f"supervisor_day.{node}", msgspec.json.encode(rec))
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    service = SupervisorService(
        plane, Supervisor(SupervisorConfig(stale_after_s=60.0), clock),
        switch(plane, clock, "supervisor"), Pager(), confirm_timeout_s=0.01,
    )  # fmt: skip
    await service.start()
    halts = {a.key: a for a, _ in service.results}
    assert sorted(halts) == ["n1", "n2"], halts
    for node, why in (("n1", "cancels_day"), ("n2", "$.baselines")):
        a = halts[node]
        assert (a.rule, a.scope, a.state) == (Rule.PRINCIPAL_DAY, Scope.NODE, TradingState.HALTED)
        assert f"supervisor_day.{node}" in a.reason and why in a.reason, a.reason
        assert "\n" not in a.reason
        entry, _ = await writer.get_state(Scope.NODE, node)
        assert entry is not None and entry.state is TradingState.HALTED
    clock.advance(S)
    await writer.publish_metrics(
        NodeMetrics("n1", 0, 5, 5, 0, 5, 0.0, 0.0, True, 0, node_state=2, instance="n1-2")
    )
    await service.stop()
    raw, _ = await writer.get_record(Bucket.INCIDENT, "supervisor_day.n1")
    assert raw is not None
    assert msgspec.json.decode(raw, type=DayRecord).instance == "n1-2"


def test_a_halt_for_an_unreadable_record_that_did_not_take_is_issued_again() -> None:
    """The halt `restore` issues for a record it cannot read did not take effect (the kill
    was not stored, the node did not confirm): the service re-arms it and says it will retry
    at the next judgement. Before, nothing issued it again (the daily rule's own condition
    does not hold: the node booked nothing yet), so the node traded on with a day nobody
    could vouch for. Now its next sample issues it again, until the node reports it halted."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(), clock)
    first = sup.restore({"supervisor_day.n2": b"\x00garbage"})
    assert [(a.rule, a.key) for a in first] == [(Rule.PRINCIPAL_DAY, "n2")]
    sup.rearm(Rule.PRINCIPAL_DAY, "n2")  # the service: the kill did not take effect

    def sample(node: str, k: int, state: int = 0) -> list[Action]:
        clock.advance(S)
        return sup.observe(
            NodeMetrics(node, 0, 20 * k, 20 * k, 0, 20 * k, 0.0, 0.0, True, 0,
                        notional=40_000.0 * k, node_state=state, instance=f"{node}-1")
        )  # fmt: skip

    again = sample("n2", 1)
    assert [(a.rule, a.key) for a in again] == [(Rule.PRINCIPAL_DAY, "n2")], again
    assert again[0].reason == first[0].reason
    assert sample("n2", 2) == []  # issued, not reported failed: once
    sup.rearm(Rule.PRINCIPAL_DAY, "n2")  # failed again
    assert [a.key for a in sample("n2", 3)] == ["n2"]
    assert sample("n2", 4, state=int(TradingState.HALTED)) == []  # it holds: done
    sup.rearm(Rule.PRINCIPAL_DAY, "n2")  # (a later failure is not this record's)
    assert sample("n2", 5) == [] and sample("n2", 6) == []
