"""A node that restarts from its own flight recorder holds a kill as the command it was.

The recorder's halt record carries the id of the kill it applied, so a restarted node
knows a resume naming that kill lifts it, whatever the clocks of its signers and of the
node said, as it did before the restart, and a resume naming another command does not.
Real nats-server (authorization on), real flight recorders on disk, a node in-process.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from knightwatch.audit.recorder import FlightRecorder
from knightwatch.audit.sink import MemorySink
from knightwatch.audit.standing import StandingHalt, standing
from knightwatch.clock import NS_PER_S, Clock, SystemClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.protocol import ABSENT
from knightwatch.control.plane.wire import FLEET_KEY, StateEntry
from knightwatch.control.site import Site
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Order, Side
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import TrustReason

from ..fleet_fixtures import POLICY

AHEAD_NS = 4 * NS_PER_S
"""How far the node's clock runs ahead of its operators': within the skew a node allows
a live resume (`SKEW_NS`), so the fleet runs as it is."""


class _Ahead(SystemClock):
    """The node's wall clock, a few seconds ahead of everyone else's."""

    def time_ns(self) -> int:
        return super().time_ns() + AHEAD_NS


async def node_on(
    site: Site,
    path: Path,
    clock: Clock,
    recovered: list[StandingHalt] | tuple[StandingHalt, ...] = (),
) -> NodeRuntime:
    """n1 with its flight recorder at `path`, joined, restoring `recovered`."""
    guard = Guard(
        Limits(lease_timeout_s=POLICY.lease_timeout_s),
        node="n1",
        clock=clock,
        recorder=FlightRecorder(path, clock=clock),
    )
    guard.arm("test")
    node = NodeRuntime(
        guard,
        await site.connect("n1"),
        clock=clock,
        policy=POLICY,
        trust=site.store(),
        signer=site.signer("n1"),
        recovered=recovered,
    )
    await node.join()
    return node


async def close(node: NodeRuntime) -> None:
    await node.stop()
    node.guard.recorder.close()
    await node.plane.close()


async def switch(site: Site, name: str = "alice") -> KillSwitch:
    ks = site.killswitch(await site.connect(name), name)
    await ks.start()
    return ks


async def test_a_node_restarted_after_the_resume_of_its_kill_trades_whatever_its_clock(
    site: Site, tmp_path: Path
) -> None:
    """n1's clock runs 4 s ahead: it records alice's kill "later" than alice and bob date
    the resume of it. Restarted after the resume, it restored the kill from its record
    (the resume looked older than the halt) and stayed halted under a stored resume of
    that very kill, with no kill in the store for anyone to resume."""
    path = tmp_path / "n1.jsonl"
    node = await node_on(site, path, _Ahead())
    alice = await switch(site)
    try:
        kill = await alice.kill(Scope.FLEET, "", "incident")
        assert kill.ok and node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        await close(node)
        resumed = await alice.resume(Scope.FLEET, "", "fixed", approvers=(site.signer("bob"),))
        assert resumed.revision is not None
        halts = standing(path).halts
        assert [h.scope for h in halts] == ["fleet"]
        assert resumed.entry.issued_ns < halts[0].ts  # as the clocks said
        node = await node_on(site, path, _Ahead(), halts)
        assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
        assert node.guard.halts() == {}
    finally:
        await close(node)
        await alice.plane.close()


async def store_kill_and_resume(site: Site) -> StateEntry:
    """alice's fleet kill and its resume by alice and bob, stored one over the other."""
    plane = await site.connect("alice")
    try:
        now = SystemClock().time_ns()
        kill = StateEntry(
            Scope.FLEET, FLEET_KEY, TradingState.HALTED, "old incident", "alice",
            uuid.uuid4().hex, now - 60 * NS_PER_S, now + 3600 * NS_PER_S,
        ).signed(site.signer("alice").key)  # fmt: skip
        revision = await plane.put_state(kill, expected_revision=ABSENT)
        resume = StateEntry(
            Scope.FLEET, FLEET_KEY, TradingState.ACTIVE, "fixed", "alice", uuid.uuid4().hex,
            now - 30 * NS_PER_S, now + 3600 * NS_PER_S, supersedes=kill.command_id,
            decided_on=revision,
        ).signed(site.signer("alice").key, site.signer("bob").key)  # fmt: skip
        await plane.put_state(resume, expected_revision=revision)
        return resume
    finally:
        await plane.close()


async def test_a_restored_kill_is_lifted_by_its_own_resume_and_no_other(
    site: Site, tmp_path: Path
) -> None:
    """The store holds an older kill's resume; alice's newer fleet kill reached n1 on the
    fast path only (the store never wrote it). n1 restarts from its record: halted. The
    stored resume heard again names another kill and lifts nothing; a resume of the kill
    n1 holds lifts it, as before the restart. Before, the restored halt was no command:
    the resume of it was refused (n1 held the older resume) and n1 stayed halted."""
    old = await store_kill_and_resume(site)
    path = tmp_path / "n1.jsonl"
    node = await node_on(site, path, SystemClock())
    plane = await site.connect("alice")
    try:
        assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
        now = SystemClock().time_ns()
        kill = StateEntry(
            Scope.FLEET, FLEET_KEY, TradingState.HALTED, "runaway", "alice", uuid.uuid4().hex,
            now, now + 3600 * NS_PER_S,
        ).signed(site.signer("alice").key)  # fmt: skip
        await plane.announce_state(kill)
        for _ in range(1500):  # up to 15 s: the announcement arrives over NATS
            if node.confirmed and node.confirmed[-1].command_id == kill.command_id:
                break
            await asyncio.sleep(0.01)
        assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        await close(node)
        halts = standing(path).halts
        assert [h.scope for h in halts] == ["fleet"]
        node = await node_on(site, path, SystemClock(), halts)
        assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        await plane.announce_state(old)  # the stored resume, announced again
        await node._on_state(old)  # (and handled here, whenever it arrives)
        assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        assert node.refused[TrustReason.STALE] == 1, node.last_refusal
        now = SystemClock().time_ns()
        lift = StateEntry(
            Scope.FLEET, FLEET_KEY, TradingState.ACTIVE, "reconciled", "alice",
            uuid.uuid4().hex, now, now + 600 * NS_PER_S, supersedes=kill.command_id,
        ).signed(site.signer("alice").key, site.signer("bob").key)  # fmt: skip
        await node._on_state(lift)
        assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE, node.last_refusal
        assert sum(node.refused.values()) == 1, node.last_refusal
    finally:
        await close(node)
        await plane.close()


class _HourAhead(SystemClock):
    """An issuer's wall clock an hour ahead of everyone else's."""

    def time_ns(self) -> int:
        return super().time_ns() + 3600 * NS_PER_S


def in_force_since(node: NodeRuntime) -> int:
    """When the fleet kill n1 holds was in force from, as its flag freeze judges it
    (`NodeFlags._freezing_kill`): its latch, or the kill's date, if earlier."""
    halt = node.guard.halts()[(Scope.FLEET, FLEET_KEY)]
    held = node.held(Scope.FLEET, FLEET_KEY)
    assert held is not None and held.state is TradingState.HALTED
    return min(halt.ts_ns, held.issued_ns)


async def test_a_node_started_during_a_kill_dated_ahead_counts_it_from_when_it_was_stored(
    site: Site, tmp_path: Path
) -> None:
    """alice's clock runs an hour ahead. n1 starts while her fleet kill holds: it was in
    force from when the store wrote it, before n1 started, and n1 counts it from then,
    while it holds it and after alice and bob resume it. Before, n1 counted it from its
    own start (the kill's date lies after it), so a risk-adding flag change approved under
    the kill before n1 started applied on n1 and on no node that ran through the kill."""
    ahead = KillSwitch(
        await site.connect("alice"), _HourAhead(), site.signer("alice"), site.store()
    )
    await ahead.start()
    alice = await switch(site)
    node: NodeRuntime | None = None
    try:
        kill = await ahead.kill(Scope.FLEET, "", "incident", timeout_s=0.2)
        assert kill.revision is not None
        stored = await alice.plane.stored_ns(Scope.FLEET, FLEET_KEY, kill.revision)
        assert stored is not None and stored < kill.entry.issued_ns - 3000 * NS_PER_S
        started = SystemClock().time_ns()
        node = await node_on(site, tmp_path / "n1.jsonl", SystemClock())
        assert node.guard.trading_state(Scope.FLEET) is TradingState.HALTED
        assert in_force_since(node) <= stored < started
        resumed = await alice.resume(Scope.FLEET, "", "fixed", approvers=(site.signer("bob"),))
        assert resumed.ok, resumed
        assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
        [(since, until, by)] = node.thawed[(Scope.FLEET, FLEET_KEY)]
        assert since <= stored < started and until == resumed.entry.issued_ns and by == "alice"
    finally:
        if node is not None:
            await close(node)
        await ahead.plane.close()
        await alice.plane.close()


async def test_a_resume_the_recorder_cannot_record_is_not_confirmed_and_lifts_once_it_can(
    site: Site,
) -> None:
    """n1's flight recorder is full when alice and bob resume the fleet: nothing lifts,
    and n1 does not confirm the resume. Once it can record, the resume heard again lifts
    the halt. Before, n1 held the resume as applied: it confirmed it at its second
    arrival while still halted, and never lifted the halt (the store held the resume, so
    nobody could resume it again)."""
    clock = SystemClock()
    sink = MemorySink()
    guard = Guard(
        Limits(lease_timeout_s=POLICY.lease_timeout_s),
        node="n1",
        clock=clock,
        recorder=FlightRecorder(None, clock=clock, sink=sink, batch_size=1),
    )
    guard.arm("test")
    guard.on_price("AAPL", 100.0)
    node = NodeRuntime(
        guard,
        await site.connect("n1"),
        clock=clock,
        policy=POLICY,
        trust=site.store(),
        signer=site.signer("n1"),
    )
    await node.join()
    alice = await switch(site)
    try:
        assert (await alice.kill(Scope.FLEET, "", "incident")).ok
        assert guard.trading_state(Scope.FLEET) is TradingState.HALTED
        sink.capacity = len(sink.lines)  # the disk is full
        for i in range(3):
            guard.check(Order(f"o{i}", "mm", "AAPL", Side.BUY, 1, 100.0))
        assert not guard.recorder.ready()
        resumed = await alice.resume(
            Scope.FLEET, "", "fixed", timeout_s=0.5, approvers=(site.signer("bob"),)
        )
        assert resumed.revision is not None
        assert resumed.missing == ["n1"], resumed  # not confirmed: nothing lifted
        assert guard.trading_state(Scope.FLEET) is TradingState.HALTED
        sink.capacity = None  # room again
        assert guard.recorder.ready()
        await node._on_state(resumed.entry)  # heard again (an announcement, a resync)
        assert guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
        assert node.confirmed[-1].command_id == resumed.entry.command_id
    finally:
        await node.stop()
        await node.plane.close()
        await alice.plane.close()
