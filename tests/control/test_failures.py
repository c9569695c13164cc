"""Failure tests with real node processes and real nats-server processes on 127.0.0.1.

Evidence comes from each node's own flight recorder (every Guard decision, with
its wall-clock time), not from what the node says about itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from knightwatch.audit.read import decode_record
from knightwatch.audit.record import DecisionRecord
from knightwatch.clock import SystemClock
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.plane.server import LoopbackCluster
from knightwatch.control.plane.wire import FLEET_KEY
from knightwatch.control.site import Site
from knightwatch.sim.drill.processes import NodeProcesses, wait_admitted
from knightwatch.state import Scope, TradingState

from ..identities import ALICE, KIT, switch

pytestmark = pytest.mark.timeout(90)

POLICY = LeasePolicy(lease_timeout_s=0.6, heartbeat_s=0.1)
CLOCK = SystemClock()


def decisions(recorder: Path) -> list[DecisionRecord]:
    """The decisions in a recorder file, also while its node writes it: a live mapped file
    ends in zero bytes (the room ahead), and a line still being written is not read."""
    out = []
    data = recorder.read_bytes().rstrip(b"\0")
    complete = data[: data.rfind(b"\n") + 1]
    for line in complete.splitlines():
        record = decode_record(line)
        if isinstance(record, DecisionRecord):
            out.append(record)
    return out


def accepted_between(recorder: Path, start_ns: int, end_ns: int) -> int:
    return sum(1 for d in decisions(recorder) if d.accepted and start_ns < d.ts < end_ns)


async def recorded(what: str, check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Until a node process's recorder shows `check`: a node on a loaded machine trades,
    and writes, when it gets the CPU, not within a fixed sleep."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not within {timeout_s} s"
        await asyncio.sleep(0.05)


def tried(rec: Path) -> bool:
    """Whether the recorder `rec` holds any decision."""
    return rec.exists() and bool(decisions(rec))


def traded(rec: Path, start_ns: int) -> Callable[[], bool]:
    """Whether the recorder `rec` holds a decision accepted after `start_ns`."""
    return lambda: rec.exists() and accepted_between(rec, start_ns, time.time_ns()) > 0


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[NodeProcesses]]:
    """Every NodeProcesses a test creates is stopped, whatever happens."""
    made: list[NodeProcesses] = []
    try:
        yield made
    finally:
        for p in made:
            p.stop()


async def connected_plane(urls: list[str], replicas: int = 1) -> NatsControlPlane:
    """Connect, retrying while a fresh cluster elects its JetStream meta leader."""
    last: Exception | None = None
    for _ in range(100):
        plane = NatsControlPlane(urls, name="alice", replicas=replicas, signer=ALICE)
        try:
            await plane.connect()
            return plane
        except ControlPlaneUnavailable as exc:
            last = exc
            await plane.close()
            await asyncio.sleep(0.2)
    raise AssertionError(f"control plane never came up: {last}")


async def admitted_fleet(
    url: str,
    tmp_path: Path,
    trust_dir: Path,
    n: int,
    rec: str,
    procs: list[NodeProcesses],
    operator_planes: list[NatsControlPlane],
) -> tuple[NodeProcesses, list[str], NatsControlPlane]:
    """`n` trading node processes recording under tmp_path/rec, all admitted; an operator plane."""
    fleet = NodeProcesses(
        [url], tmp_path, flow_rate=40, policy=POLICY, recorder_dir=tmp_path / rec,
        trust_dir=trust_dir,
    )  # fmt: skip
    procs.append(fleet)
    ids = fleet.spawn_many(n)
    plane = await connected_plane([url])
    operator_planes.append(plane)
    await wait_admitted(plane, ids, CLOCK)
    return fleet, ids, plane


@pytest.fixture
async def operator_planes() -> AsyncIterator[list[NatsControlPlane]]:
    planes: list[NatsControlPlane] = []
    yield planes
    for p in planes:
        await p.close()


async def test_server_killed_nodes_block_within_lease_and_resume_after_readmission(
    tmp_path: Path,
    procs: list[NodeProcesses],
    operator_planes: list[NatsControlPlane],
) -> None:
    site = Site(tmp_path / "site", kit=KIT)
    server = site.server
    url = site.start()
    try:
        fleet, ids, plane = await admitted_fleet(
            url, tmp_path, site.trust_dir, 3, "rec", procs, operator_planes
        )
        for node_id in ids:  # every node trades before the server goes
            await recorded(f"{node_id} traded", traded(tmp_path / "rec" / f"{node_id}.jsonl", 0))
        killed_at = time.time_ns()
        server.kill()
        await asyncio.sleep(2.0)
        back_at = time.time_ns()
        server.start()
        await wait_admitted(plane, ids, CLOCK, timeout_s=30)
        for node_id in ids:  # readmitted, each trades again
            rec = tmp_path / "rec" / f"{node_id}.jsonl"
            await recorded(f"{node_id} traded after the server came back", traded(rec, back_at))
        fleet.stop()
        lease_ns = POLICY.lease_ns
        for node_id in ids:
            rec = tmp_path / "rec" / f"{node_id}.jsonl"
            assert accepted_between(rec, 0, killed_at) > 0, node_id
            assert accepted_between(rec, killed_at + lease_ns, back_at) == 0, node_id
            assert accepted_between(rec, back_at, time.time_ns()) > 0, node_id
    finally:
        server.stop()


async def test_frozen_node_does_not_trade_on_stale_state(
    tmp_path: Path,
    nats_server: Site,
    procs: list[NodeProcesses],
    operator_planes: list[NatsControlPlane],
) -> None:
    url = nats_server.url
    fleet, _, plane = await admitted_fleet(
        url, tmp_path, nats_server.trust_dir, 2, "rec", procs, operator_planes
    )
    await recorded("n1 traded", traded(tmp_path / "rec" / "n1.jsonl", 0))
    frozen = fleet.procs["n1"]
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        ks = switch(plane, CLOCK, "alice")
        killed_at = time.time_ns()
        # n2 must confirm within it: seconds, on a loaded machine; n1 never does
        result = await ks.kill(Scope.FLEET, FLEET_KEY, "while n1 is frozen", timeout_s=5.0)
        assert result.missing == ["n1"] and "n2" in result.latencies_ms
        await asyncio.sleep(POLICY.lease_timeout_s * 2)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    for _ in range(300):  # the thawed node resyncs and confirms the kill it slept through
        states = {m.node_id: m for m in await plane.members()}
        if states["n1"].last_command_id == result.entry.command_id:
            break
        await asyncio.sleep(0.05)
    assert states["n1"].node_state is TradingState.HALTED
    rec = tmp_path / "rec" / "n1.jsonl"

    def blocked_since_kill() -> bool:
        return any(not d.accepted for d in decisions(rec) if d.ts > killed_at)

    await recorded("n1 tried to trade after the kill", blocked_since_kill)
    await asyncio.sleep(0.5)
    fleet.stop()
    assert accepted_between(rec, 0, killed_at) > 0
    assert accepted_between(rec, killed_at, time.time_ns()) == 0
    blocked = [d.reason for d in decisions(rec) if d.ts > killed_at]
    assert blocked and set(blocked) <= {"lease_expired", "halted"}


async def test_kill_restart_everything_still_halted(
    tmp_path: Path, procs: list[NodeProcesses], operator_planes: list[NatsControlPlane]
) -> None:
    site = Site(tmp_path / "site", kit=KIT)
    server = site.server
    url = site.start()
    try:
        fleet, ids, plane = await admitted_fleet(
            url, tmp_path, site.trust_dir, 2, "rec", procs, operator_planes
        )
        result = await switch(plane, CLOCK, "alice").kill(
            Scope.FLEET, FLEET_KEY, "persist me", timeout_s=10.0
        )
        assert result.ok
        await plane.close()  # before the server goes: no reconnect loop to a dead port
        fleet.stop()
        server.stop()
        restarted_at = time.time_ns()
        url = server.start()  # same store, new port
        fleet2, _, plane = await admitted_fleet(
            url, tmp_path, site.trust_dir, 2, "rec2", procs, operator_planes
        )

        async def all_halted() -> bool:
            members = {m.node_id: m for m in await plane.members()}
            return all(members[n].node_state is TradingState.HALTED for n in ids)

        deadline = asyncio.get_running_loop().time() + 15.0
        while not await all_halted():
            assert asyncio.get_running_loop().time() < deadline, "a restarted node not HALTED"
            await asyncio.sleep(0.05)
        for node_id in ids:  # it did try to trade
            rec = tmp_path / "rec2" / f"{node_id}.jsonl"
            await recorded(f"{node_id} decided", partial(tried, rec))
        await asyncio.sleep(0.5)
        fleet2.stop()
        for node_id in ids:
            rec = tmp_path / "rec2" / f"{node_id}.jsonl"
            assert decisions(rec), node_id  # it did try to trade
            assert accepted_between(rec, restarted_at, time.time_ns()) == 0, node_id
    finally:
        server.stop()


async def test_kill_during_leader_election_reaches_every_node_within_2s(
    nats_cluster: LoopbackCluster,
    tmp_path: Path,
    procs: list[NodeProcesses],
    operator_planes: list[NatsControlPlane],
) -> None:
    urls = nats_cluster.urls
    plane = await connected_plane(urls, replicas=3)
    operator_planes.append(plane)
    KIT.write(tmp_path / "trust", private=list(KIT.signers))
    fleet = NodeProcesses(
        urls, tmp_path, policy=POLICY, extra=["--replicas", "3"], trust_dir=tmp_path / "trust"
    )
    procs.append(fleet)
    ids = fleet.spawn_many(4)
    await wait_admitted(plane, ids, CLOCK, timeout_s=30)
    js = plane._require_js()
    leader = (await js.stream_info("KV_kw_state")).cluster.leader
    victim = next(m for m in nats_cluster.members if m.name == leader)
    victim.server.kill()
    ks = switch(plane, CLOCK, "alice")
    # the promise is the 2 s below; a longer wait lets a late confirmation name its latency
    result = await ks.kill(
        Scope.FLEET, FLEET_KEY, "during election", timeout_s=10.0, targets=ids, durable_timeout_s=20
    )
    assert not result.missing, result
    assert max(result.latencies_ms.values()) < 2000, result.latencies_ms
    assert result.revision is not None, result.durable_error  # stored once a new leader is up
