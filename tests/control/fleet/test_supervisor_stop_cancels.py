"""A stop's own cancels are no cancel storm.

An operator's kill or drain of a strategy (or a symbol) leaves the nodes ACTIVE: each
cancels what it had working in that scope, a burst of thousands of cancels in a second
or two. Counted in the node's cancel rate (`supervisor_baseline_cancel_rate`), that burst
halted the whole node, every other strategy on it with it: the stop direction triggering
a wider halt. The service now hears every signed stop (`SupervisorService._on_state`) and
the nodes it covers have their cancel rate left unjudged for `stop_cancels_s` after it.
"""

from __future__ import annotations

import asyncio
import uuid

from knightwatch.clock import SimClock, SystemClock
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import (
    Action,
    BaselineProfile,
    Rule,
    Supervisor,
    SupervisorConfig,
)
from knightwatch.control.fleet.supervisor_service import SupervisorService
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.wire import NodeMetrics, StateEntry
from knightwatch.control.site import Site
from knightwatch.state import Scope, TradingState

from ...identities import switch

S = 1_000_000_000
TICK = S // 5
Rates = dict[str, tuple[float, float, float]]
QUOTE = (30.0, 27.0, 3.0)
"""A quoting node's accepted orders, fills and cancels a second."""


class Flow:
    """Nodes quoting through a supervisor: `send` hands each sample to `feed`."""

    def __init__(self, clock: SimClock, nodes: int = 3) -> None:
        self.clock = clock
        self.nodes = [f"n{i}" for i in range(1, nodes + 1)]
        self.acc = {n: [0.0, 0.0, 0.0] for n in self.nodes}

    def samples(self, rates: Rates | None = None) -> list[NodeMetrics]:
        """One tick: the clock moves on and each node's counters grow at its rates."""
        self.clock.advance(TICK)
        out = []
        for n in self.nodes:
            a = self.acc[n]
            for i, r in enumerate((rates or {}).get(n, QUOTE)):
                a[i] += r * TICK / S
            accepted, fills, cancels = (int(v) for v in a)
            # fmt: off
            out.append(NodeMetrics(
                n, 0, accepted, accepted, 0, fills, 0.0, 0.0, True, 0,
                notional=fills * 2_000.0, cancels=cancels, instance=f"{n}-1",
            ))
            # fmt: on
        return out

    def run(
        self,
        sup: Supervisor,
        seconds: float,
        rates: Rates | None = None,
    ) -> list[Action]:
        out: list[Action] = []
        for _ in range(round(seconds * S / TICK)):
            for m in self.samples(rates):
                out += sup.observe(m)
        return out


KILL_BURST = {"n1": (30.0, 27.0, 1_250.0)}
"""n1 cancels the 1,500 orders a strategy had working there over 1.2 s (its other strategies
quoting on as before)."""


def _rules(actions: list[Action]) -> set[tuple[Rule, str]]:
    return {(a.rule, a.key) for a in actions}


def test_a_strategy_kills_cancels_are_not_a_storm_that_halts_the_node() -> None:
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(), clock)
    flow = Flow(clock)
    assert flow.run(sup, 120) == []
    # without word of a stop the burst is a storm (what a runaway pulling every quote does)
    blind_clock = SimClock(10 * S)
    blind = Supervisor(SupervisorConfig(), blind_clock)
    twin = Flow(blind_clock)
    assert twin.run(blind, 120) == []
    assert (Rule.BASELINE_CANCEL_RATE, "n1") in _rules(twin.run(blind, 1.2, KILL_BURST))
    # an operator's strategy kill, heard as issued: its cancels halt nothing
    assert sup.stopping(Scope.STRATEGY, "mm", TradingState.HALTED, clock.time_ns())
    assert flow.run(sup, 1.2, KILL_BURST) == []
    assert flow.run(sup, 30) == []
    # nor was the burst learned: a storm after the stop's span is halted against 3/s
    fired = flow.run(sup, 2, {"n1": (30.0, 27.0, 100.0)})
    assert _rules(fired) == {(Rule.BASELINE_CANCEL_RATE, "n1")}, fired
    assert "learned baseline 3.0 cancels/s" in fired[0].reason, fired[0].reason


def test_a_storm_going_on_past_the_stops_span_is_still_halted() -> None:
    """A runaway storming while an operator kills some strategy is judged once the stop's
    `stop_cancels_s` is over: it is halted then, by name."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(stop_cancels_s=5.0), clock)
    flow = Flow(clock)
    assert flow.run(sup, 120) == []
    assert sup.stopping(Scope.SYMBOL, "AAPL", TradingState.REDUCING, clock.time_ns())
    storm = {"n2": (30.0, 27.0, 200.0)}
    assert flow.run(sup, 5.0, storm) == []
    fired = flow.run(sup, 2.4, storm)
    assert _rules(fired) == {(Rule.BASELINE_CANCEL_RATE, "n2")}, fired


def test_a_node_kill_excuses_that_node_only_and_a_resume_or_an_old_stop_nothing() -> None:
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(), clock)
    flow = Flow(clock)
    assert flow.run(sup, 120) == []
    now = clock.time_ns()
    assert not sup.stopping(Scope.STRATEGY, "mm", TradingState.ACTIVE, now)  # a resume
    assert not sup.stopping(Scope.STRATEGY, "mm", TradingState.HALTED, now - 11 * S)  # replayed
    assert not sup.stopping(Scope.STRATEGY, "mm", TradingState.HALTED, now + 6 * S)  # future
    assert sup.stopping(Scope.NODE, "n2", TradingState.HALTED, now)
    fired = flow.run(sup, 1.2, KILL_BURST)
    assert _rules(fired) == {(Rule.BASELINE_CANCEL_RATE, "n1")}, fired


async def _service(fabric: MemoryFabric, clock: SimClock) -> SupervisorService:
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    service = SupervisorService(
        plane,
        Supervisor(SupervisorConfig(stale_after_s=60.0), clock),
        switch(plane, clock, "supervisor"),
        Pager(),
        confirm_timeout_s=0.01,
    )
    await service.start()
    return service


async def test_the_service_hears_an_operators_strategy_kill_and_halts_no_node_for_it() -> None:
    """Live wiring: alice kills strategy `mm` through her kill switch on the fleet's plane;
    n1 then cancels 1,500 orders in 1.2 s. Before, the supervisor halted n1 (every other
    strategy on it) on its cancel rate; now nothing is issued. A stop nobody signed, and a
    resume, excuse nothing: the same burst after an unsigned "kill" is halted."""
    clock = SimClock(10 * S)
    fabric = MemoryFabric()
    sender = MemoryControlPlane(fabric)
    await sender.connect()
    service = await _service(fabric, clock)
    flow = Flow(clock)

    async def run(seconds: float, rates: Rates | None = None) -> None:
        for _ in range(round(seconds * S / TICK)):
            for m in flow.samples(rates):
                await sender.publish_metrics(m)

    await run(120)
    assert service.results == []
    alice = switch(sender, clock, "alice")
    await alice.start()
    killed = await alice.kill(Scope.STRATEGY, "mm", "runaway quoter", timeout_s=0.01)
    assert killed.revision is not None
    await run(1.2, KILL_BURST)
    await run(20)
    assert service.results == []

    forged = StateEntry(
        Scope.STRATEGY, "mm2", TradingState.HALTED, "forged", "alice", uuid.uuid4().hex,
        clock.time_ns(), clock.time_ns() + 3_600 * S,
    )  # fmt: skip
    await sender.announce_state(forged)  # no proof: refused, excuses nothing
    await run(1.2, KILL_BURST)
    await service.stop()
    # (n1 runs no runtime here to confirm the halt: it is retried at each judgement)
    assert {(a.rule, a.key) for a, _ in service.results} == {(Rule.BASELINE_CANCEL_RATE, "n1")}


async def test_on_a_nats_server_the_supervisor_hears_the_kill_and_halts_no_node(
    nats_server: Site,
) -> None:
    """The same on a real server, as the supervisor's identity is allowed: alice kills
    strategy `mm`, n1 cancels 1,500 orders in 1.4 s, nothing is issued; n2 storming at the
    same pace 12 s later (no stop in between, `stop_cancels_s` 10 s) is halted by name."""
    clock = SystemClock()
    config = SupervisorConfig(profile=BaselineProfile(cancel_rate=3.0), stale_after_s=60.0)
    plane = await nats_server.connect("supervisor")
    service = SupervisorService(
        plane, Supervisor(config, clock), nats_server.killswitch(plane, "supervisor"), Pager(),
        confirm_timeout_s=0.05, concurrent=True,
    )  # fmt: skip
    await service.start()
    senders = {n: await nats_server.connect(n) for n in ("n1", "n2")}
    alice_plane = await nats_server.connect("alice")
    alice = nats_server.killswitch(alice_plane, "alice")
    await alice.start()
    acc = {n: [0.0, 0.0, 0.0] for n in senders}

    async def run(seconds: float, rates: Rates | None = None) -> None:
        for _ in range(round(seconds * 5)):
            await asyncio.sleep(0.2)
            for n, sender in senders.items():
                a = acc[n]
                for i, r in enumerate((rates or {}).get(n, QUOTE)):
                    a[i] += r * 0.2
                accepted, fills, cancels = (int(v) for v in a)
                # fmt: off
                await sender.publish_metrics(NodeMetrics(
                    n, clock.time_ns(), accepted, accepted, 0, fills, 0.0, 0.0, True, 0,
                    notional=fills * 2_000.0, cancels=cancels, instance=f"{n}-1",
                ))
                # fmt: on

    try:
        await run(1.0)
        killed = await alice.kill(Scope.STRATEGY, "mm", "runaway quoter", timeout_s=0.05)
        assert killed.revision is not None
        await run(1.4, KILL_BURST)
        await run(10.0)
        await service.drain()
        assert service.results == []
        await run(2.0, {"n2": (30.0, 27.0, 1_250.0)})
        await service.drain()
        assert {(a.rule, a.key) for a, _ in service.results} == {
            (Rule.BASELINE_CANCEL_RATE, "n2")
        }, service.results
    finally:
        await service.stop()
        for p in (plane, alice_plane, *senders.values()):
            await p.close()
