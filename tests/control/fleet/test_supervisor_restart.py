"""A supervisor restarted while a runaway is under way must not learn it as the node's normal.

Its baselines were held in memory only: a restarted supervisor judged every node against the
floors for `warmup_s`, then learned what the nodes did meanwhile. A cancel/replace loop
(replaces accepted, nothing filled) on a node whose normal is a few filled orders a second
stays under the order-rate floor, and has no messages-per-execution baseline until one is
learned: the loop itself became the node's normal, and it ran for good. The learned baselines
in force are stored with the node's day history (`DayRecord.baselines`) and taken back at
the node's first sample, so the restarted supervisor judges it at once as before.
"""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.clock import SimClock
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import Action, Rule, Supervisor, SupervisorConfig
from knightwatch.control.fleet.supervisor_service import SupervisorService
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.wire import NodeMetrics
from knightwatch.state import Scope, TradingState

from ...identities import switch

S = 1_000_000_000
TICK = S // 5
NODES = ("n1", "n2", "n3", "n4")


class Desk:
    """Four nodes trading for themselves, sampled every 0.2 s: `rate` accepted orders a
    second, `filled` of them filled at $2,000 each."""

    def __init__(self) -> None:
        self.clock = SimClock(10 * S)
        self.sup = Supervisor(SupervisorConfig(), self.clock)
        self.acc = {n: [0.0, 0.0] for n in NODES}  # accepted orders, fills
        self.halted: set[str] = set()

    def samples(self, flow: dict[str, tuple[float, float]]) -> list[NodeMetrics]:
        """One tick's samples, the clock advanced."""
        self.clock.advance(TICK)
        out = []
        for n in NODES:
            rate, filled = (0.0, 0.0) if n in self.halted else flow.get(n, (4.0, 1.0))
            a = self.acc[n]
            a[0] += rate * TICK / S
            a[1] += rate * filled * TICK / S
            orders, fills = int(a[0]), int(a[1])
            state = int(TradingState.HALTED) if n in self.halted else 0
            m = NodeMetrics(
                n, 0, orders, orders, 0, fills, 0.0, 0.0, True, 0,
                notional=fills * 2_000.0, node_state=state, instance=f"{n}-1",
            )  # fmt: skip
            out.append(m)
        return out

    def run(self, seconds: float, flow: dict[str, tuple[float, float]]) -> list[Action]:
        fired: list[Action] = []
        for _ in range(round(seconds * S / TICK)):
            for m in self.samples(flow):
                out = self.sup.observe(m)
                self.halted |= {a.key for a in out if a.scope is Scope.NODE}
                fired += out
        return fired

    def restart(self, stored: dict[str, bytes]) -> list[Action]:
        """The supervisor's process starts again and reads back what its predecessor stored;
        the nodes go on."""
        self.sup = Supervisor(SupervisorConfig(), self.clock)
        return self.sup.restore(stored)


STORMS = {
    # a cancel/replace loop on one node: 18 replaces a second (4.5x its 4/s, under the 20/s
    # floor), nothing filled
    "one node": {"n1": (18.0, 0.0)},
    # the same loop on every node at once (the peers move with it): 80 a second each
    "every node": {n: (80.0, 0.0) for n in NODES},
}


@pytest.mark.parametrize("storm", sorted(STORMS))
def test_a_supervisor_restarted_during_a_cancel_replace_loop_still_halts_it(storm: str) -> None:
    flow = STORMS[storm]
    # the control: the supervisor that had learned the nodes halts the loop within seconds
    control = Desk()
    assert control.run(180, {}) == []
    fired = control.run(10, flow)
    assert {a.key for a in fired} == set(flow), fired

    desk = Desk()
    assert desk.run(180, {}) == []
    stored = desk.sup.day_records()
    assert desk.restart(stored) == []
    fired = desk.run(300, flow)
    assert fired, "a loop under way when the supervisor restarted was learned as normal"
    assert {(a.scope, a.key) for a in fired} == {(Scope.NODE, n) for n in flow}, fired
    first = min(a.at_ns for a in fired)
    assert first - desk.clock.time_ns() + 300 * S <= 5 * S  # within seconds, as before
    why = fired[0].reason
    assert "its learned baseline" in why, why


def test_restored_baselines_halt_nothing_on_a_normal_flow() -> None:
    """Restarted twice, a minute and ten minutes in, the fleet doing what it always does (and
    a node a bit busier than before, 3x): nothing fires."""
    desk = Desk()
    assert desk.run(120, {}) == []
    assert desk.restart(desk.sup.day_records()) == []
    assert desk.run(60, {}) == []
    assert desk.restart(desk.sup.day_records()) == []
    assert desk.run(600, {"n2": (12.0, 1.0)}) == []


def test_baselines_are_handed_out_once_a_minute_not_at_each_sample() -> None:
    desk = Desk()
    assert desk.run(60, {}) == []
    assert set(desk.sup.day_records()) == {f"supervisor_day.{n}" for n in NODES}
    assert desk.run(30, {}) == []
    assert desk.sup.day_records() == {}
    assert desk.run(31, {}) == []
    assert set(desk.sup.day_records()) == {f"supervisor_day.{n}" for n in NODES}


def test_baselines_stored_over_an_hour_ago_are_learned_afresh() -> None:
    """The supervisor was down for two hours and the desk's normal changed meanwhile (7.5x
    the flow, every order still filled): a baseline that old is no judge of it."""
    desk = Desk()
    assert desk.run(180, {}) == []
    stored = desk.sup.day_records()
    desk.clock.advance(2 * 3_600 * S)
    assert desk.restart(stored) == []
    assert desk.run(120, {n: (30.0, 1.0) for n in NODES}) == []


@pytest.mark.parametrize(
    ("baselines", "problem"),
    [
        ({"order_rate": [1e300, 4.0]}, "baselines['order_rate'] (1e+300, 4.0) is negative"),
        ({"order_rate": [-1.0, None]}, "baselines['order_rate']"),
        ({"spin_rate": [1.0, None]}, "baselines['spin_rate'] is no baselined measure"),
    ],
)
def test_a_stored_baseline_that_cannot_be_believed_halts_its_node(
    baselines: dict[str, list[float | None]], problem: str
) -> None:
    """A baseline beyond any rate switches its rule off for good, a negative one halts at once,
    an unknown measure is no record this supervisor wrote: none vouches for the node's normal."""
    desk = Desk()
    record = {
        "node_id": "n2", "at_ns": desk.clock.time_ns(), "instance": "n2-1", "raw": 0.0,
        "value": 0.0, "points": [], "own_flow": True, "baselines": baselines,
    }  # fmt: skip
    fired = desk.restart({"supervisor_day.n2": msgspec.json.encode(record)})
    assert [(a.rule, a.scope, a.key) for a in fired] == [(Rule.PRINCIPAL_DAY, Scope.NODE, "n2")], (
        fired
    )
    assert problem in fired[0].reason, fired[0].reason


async def test_the_service_stores_the_baselines_and_a_restarted_one_takes_them_back() -> None:
    """The same through the control plane: the service stores what `day_records` hands out in
    the incident bucket, and a service started afresh reads it back before the first sample,
    then halts the loop on n1 by name within seconds."""
    desk = Desk()
    fabric = MemoryFabric()
    nodes = MemoryControlPlane(fabric)
    await nodes.connect()

    async def service() -> SupervisorService:
        plane = MemoryControlPlane(fabric)
        await plane.connect()
        desk.sup = Supervisor(SupervisorConfig(), desk.clock)
        svc = SupervisorService(
            plane, desk.sup, switch(plane, desk.clock, "supervisor"), Pager(),
            confirm_timeout_s=0.01,
        )  # fmt: skip
        await svc.start()
        return svc

    async def run(seconds: float, flow: dict[str, tuple[float, float]]) -> list[Action]:
        start = len(desk.sup.actions)
        for _ in range(round(seconds * S / TICK)):
            for m in desk.samples(flow):
                await nodes.publish_metrics(m)
        return desk.sup.actions[start:]

    first = await service()
    assert await run(180, {}) == []
    await first.stop()
    await first.plane.close()
    second = await service()
    fired = await run(10, {"n1": (18.0, 0.0)})
    await second.stop()
    assert {(a.scope, a.key) for a in fired} == {(Scope.NODE, "n1")}, fired
    assert [a for a, _ in second.results] == fired
