"""A crash-looping node whose clock runs behind is still judged crash-looping.

A node records its starts by its own clock. One whose clock ran more than the
crash-loop window behind (10 min by default) dated every start of its loop "long ago";
between restarts it is fenced, and no clock check looks at a fenced node, so the
preflight passed and the node came back after the resume and traded. The record's last
write is the node's last start by the server's clock: its starts are also counted
shifted onto that clock, which can only add a crash loop, never hide one.
"""

from __future__ import annotations

from knightwatch.clock import NS_PER_S
from knightwatch.control.plane.memory import MemoryFabric
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import ENCODER, NodeStarts, NodeStatus, starts_key
from knightwatch.incident.preflight import PreflightConfig, run_preflight
from knightwatch.state import Scope, TradingState

from .fixtures import Fleet
from .test_preflight import item, only_failure

CFG = PreflightConfig(listen_s=0.2)


async def test_a_fenced_node_looping_on_a_clock_behind_fails_crash_loop() -> None:
    f = Fleet()
    f.fabric = MemoryFabric(clock=f.clock)  # the server stamps each write, as NATS does
    for node in ("n1", "n2"):
        await f.add(node)
    plane = await f.plane()
    await (await f.killswitch()).kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    behind = 20 * 60 * NS_PER_S  # n3's clock: 20 min behind, twice the window
    now = f.clock.time_ns() - behind
    await plane.put_member(
        NodeStatus("n3", "h", 1, now - 5 * NS_PER_S, now - 3 * NS_PER_S, now - NS_PER_S,
                   True, True, TradingState.ACTIVE)
    )  # fmt: skip
    starts = NodeStarts("n3", tuple(now - i * 10 * NS_PER_S for i in range(5)))
    await plane.put_record(Bucket.INCIDENT, starts_key("n3"), ENCODER.encode(starts))
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "crash_loop", checklist.summary()
    detail = item(checklist, "crash_loop")[1]
    assert "n3 restarted 5 times in 10 min" in detail, detail
    assert "n3's own runs 1200 s behind" in detail, detail
    assert checklist.crash_looping == ("n3",)
    await f.stop()


async def test_a_node_that_looped_long_ago_by_both_clocks_passes() -> None:
    """The shift is the record's own: starts long before its last write stay old."""
    f = Fleet()
    f.fabric = MemoryFabric(clock=f.clock)
    for node in ("n1", "n2"):
        await f.add(node)
    plane = await f.plane()
    await (await f.killswitch()).kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    now = f.clock.time_ns()
    await plane.put_member(
        NodeStatus("n3", "h", 1, now - 5 * NS_PER_S, now - 3 * NS_PER_S, now - NS_PER_S,
                   True, True, TradingState.ACTIVE)
    )  # fmt: skip
    # four quick restarts an hour ago, then one start now: not a loop in any 10 min
    old = tuple(now - 3_600 * NS_PER_S + i * 10 * NS_PER_S for i in range(4))
    starts = NodeStarts("n3", (*old, now))
    await plane.put_record(Bucket.INCIDENT, starts_key("n3"), ENCODER.encode(starts))
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert checklist.passed, checklist.summary()
    await f.stop()
