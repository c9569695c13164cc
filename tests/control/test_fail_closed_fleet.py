"""No lost kill, no silent target: real node processes, a real nats-server, the real CLI.

* a stored kill entry nobody can decode halts its scope (it is not skipped), and
  `knightwatch kill` / `resume` can always write over it;
* a node restarting against a store that lost its halts comes back halted from
  its own flight recorder and stores the halt again, until an operator resumes;
* a kill targets every member of the fleet and names each that did not confirm,
  with its lease expired (stopped by itself) or still live.

Evidence is each node's own flight recorder and the CLI's exit code and output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from knightwatch.audit.chain import GENESIS, seal_batch
from knightwatch.audit.read import decode_record
from knightwatch.audit.record import DecisionRecord
from knightwatch.clock import SystemClock
from knightwatch.control.fleet.supervisor_service import AutoHaltRelay
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.plane.connect import FleetError
from knightwatch.control.plane.nats import STATE_BUCKET, NatsControlPlane, connect_as
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.plane.wire import FLEET_KEY, UNDECODABLE_ACTOR
from knightwatch.control.serve import armed_limits_path, read_armed_limits
from knightwatch.control.site import Site
from knightwatch.release.keys import load_signing_key
from knightwatch.sim.drill.processes import NodeProcesses, wait_admitted
from knightwatch.state import Scope, TradingState

from ..identities import ALICE, BOB, KIT

pytestmark = pytest.mark.timeout(120)

POLICY = LeasePolicy(lease_timeout_s=0.6, heartbeat_s=0.1)
CLOCK = SystemClock()


def accepted_between(recorder: Path, start_ns: int, end_ns: int) -> int:
    n = 0
    # a running node's file ends in allocated zero bytes (the mapped recorder's room ahead),
    # and its last line may be half written: read complete lines only
    data = recorder.read_bytes().rstrip(b"\0")
    for line in data[: data.rfind(b"\n") + 1].splitlines():
        rec = decode_record(line)
        if isinstance(rec, DecisionRecord) and rec.accepted and start_ns < rec.ts < end_ns:
            n += 1
    return n


def decided(recorder: Path) -> bool:
    """Whether the recorder holds a decision (its last line may still be half written)."""
    data = recorder.read_bytes().rstrip(b"\0")
    complete = data[: data.rfind(b"\n") + 1]
    return any(isinstance(decode_record(line), DecisionRecord) for line in complete.splitlines())


def cli(site: Site, who: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `knightwatch` command in its own process, run as `who` of the test cast."""
    return subprocess.run(
        [sys.executable, "-m", "knightwatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **site.cli_env(who), "COLUMNS": "200"},
    )


def resume(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    """A resume as the CLI does it: alice requests (preflight), bob approves (preflight, ramp)."""
    asked = cli(site, "alice", "resume", *args)
    assert asked.returncode == 0, asked.stdout + asked.stderr
    request = re.search(r"approve (\w+)", asked.stdout)
    assert request is not None, asked.stdout
    config = args[args.index("--config") : args.index("--config") + 2] if "--config" in args else ()
    # the node confirms when it gets the CPU: the default 2 s flaked on a loaded machine
    approve = (request.group(1), *config, "--timeout", "15", "--nats-url", site.url)
    return cli(site, "bob", "approve", *approve)


@pytest.fixture
def procs() -> Iterator[list[NodeProcesses]]:
    made: list[NodeProcesses] = []
    try:
        yield made
    finally:
        for p in made:
            p.stop()


@pytest.fixture
async def planes() -> AsyncIterator[list[NatsControlPlane]]:
    made: list[NatsControlPlane] = []
    yield made
    for p in made:
        await p.close()


async def operator(url: str, planes: list[NatsControlPlane]) -> NatsControlPlane:
    for _ in range(50):
        plane = NatsControlPlane([url], name="alice", signer=ALICE)
        try:
            await plane.connect()
            planes.append(plane)
            return plane
        except ControlPlaneUnavailable:
            await plane.close()
            await asyncio.sleep(0.2)
    raise AssertionError("control plane never came up")


async def node_state(plane: NatsControlPlane, node_id: str) -> TradingState:
    return {m.node_id: m for m in await plane.members()}[node_id].node_state


async def eventually_halted(plane: NatsControlPlane, node_id: str) -> None:
    """Until the node's membership says HALTED (15 s: a node process on a loaded machine)."""
    deadline = asyncio.get_running_loop().time() + 15.0
    while await node_state(plane, node_id) is not TradingState.HALTED:
        assert asyncio.get_running_loop().time() < deadline, f"{node_id} never reported HALTED"
        await asyncio.sleep(0.05)


async def eventually_trades(rec: Path, since_ns: int) -> None:
    """Until the recorder `rec` holds a decision accepted after `since_ns` (a resumed node
    ramps back in, then trades when it gets the CPU: 30 s on a loaded machine)."""
    deadline = asyncio.get_running_loop().time() + 30.0
    while accepted_between(rec, since_ns, time.time_ns()) == 0:
        assert asyncio.get_running_loop().time() < deadline, f"{rec.name}: no trade since"
        await asyncio.sleep(0.1)


def fast_ramp(tmp_path: Path) -> str:
    """A resume ramps back in stages; seconds, not minutes, for a test."""
    path = tmp_path / "incident.toml"
    path.write_text(
        "[ramp]\nstages = [{fraction = 0.1, hold_s = 0.2}, {fraction = 1.0, hold_s = 0.2}]\n"
    )
    return str(path)


async def test_an_undecodable_kill_entry_halts_and_can_be_overwritten(
    tmp_path: Path,
    nats_server: Site,
    procs: list[NodeProcesses],
    planes: list[NatsControlPlane],
) -> None:
    url, site = nats_server.url, nats_server
    fleet = NodeProcesses(
        [url], tmp_path, flow_rate=40, policy=POLICY, recorder_dir=tmp_path / "r",
        trust_dir=site.trust_dir,
    )  # fmt: skip
    procs.append(fleet)
    fleet.spawn("n1")
    plane = await operator(url, planes)
    await wait_admitted(plane, ["n1"], CLOCK)
    # The fleet's kill entry is corrupted in the store (a bad write by someone allowed to
    # write it, a bit flip, a bug).
    nc = await connect_as(ALICE, [url])
    try:
        kv = await nc.jetstream().key_value(STATE_BUCKET)
        await kv.put("fleet.fleet", b"\xff{not an entry")
    finally:
        await nc.close()
    await eventually_halted(plane, "n1")  # the running node: from the republished entry
    fleet.stop("n1")
    restarted = time.time_ns()
    fleet.spawn("n1")  # a restart reads the store of record: still halted
    await wait_admitted(plane, ["n1"], CLOCK)
    await eventually_halted(plane, "n1")
    entry, _ = await plane.get_state(Scope.FLEET, "fleet")
    assert entry is not None and entry.actor == UNDECODABLE_ACTOR
    assert "cannot be decoded" in entry.reason
    await asyncio.sleep(0.5)
    rec = tmp_path / "r" / "n1.jsonl"
    assert accepted_between(rec, restarted, time.time_ns()) == 0

    # A kill writes over the slot (it used to die on a raw decoding error), then a resume.
    kill = await asyncio.to_thread(
        cli, site, "alice", "kill", "--reason", "over garbage", "--timeout", "15", "--nats-url", url
    )
    assert kill.returncode == 0, kill.stdout + kill.stderr
    assert "stored at revision" in kill.stdout and "Traceback" not in kill.stderr
    resumed_by = await asyncio.to_thread(
        resume, site, "--reason", "clean", "--config", fast_ramp(tmp_path), "--nats-url", url
    )
    assert resumed_by.returncode == 0, resumed_by.stdout + resumed_by.stderr
    await eventually_trades(rec, time.time_ns())


async def test_a_node_restarting_on_a_lost_store_comes_back_halted_from_its_record(
    tmp_path: Path, procs: list[NodeProcesses], planes: list[NatsControlPlane]
) -> None:
    site = Site(tmp_path / "site", kit=KIT)
    server = site.server
    url = site.start()
    relays: list[NatsControlPlane] = []
    try:
        fleet = NodeProcesses(
            [url], tmp_path, flow_rate=40, policy=POLICY, recorder_dir=tmp_path / "r",
            trust_dir=site.trust_dir,
        )  # fmt: skip
        procs.append(fleet)
        fleet.spawn("n1")
        plane = await operator(url, planes)
        await wait_admitted(plane, ["n1"], CLOCK)
        kill = await asyncio.to_thread(
            cli, site, "alice", "kill", "--node", "n1", "--reason", "runaway", "--timeout", "15",
            "--nats-url", url,
        )  # fmt: skip
        assert kill.returncode == 0, kill.stdout + kill.stderr
        fleet.stop("n1")
        await plane.close()
        # The single server's store is lost: every kill entry is gone.
        server.stop()
        shutil.rmtree(tmp_path / "site" / "nats" / "jetstream")
        url = site.start()  # same port, empty store (buckets and roster provisioned again)
        plane = await operator(url, planes)
        assert await plane.states() == {}
        # nodes cannot write the kill state: the supervisor's relay stores their halts
        relays.append(await site.connect("supervisor"))
        await AutoHaltRelay(site.killswitch(relays[-1], "supervisor")).start()
        restarted = time.time_ns()
        fleet.spawn("n1")
        await wait_admitted(plane, ["n1"], CLOCK)
        await eventually_halted(plane, "n1")
        # ...and stored again, so the operator sees it and can lift it.
        entry = None
        deadline = asyncio.get_running_loop().time() + 15.0
        while asyncio.get_running_loop().time() < deadline:
            entry, _ = await plane.get_state(Scope.NODE, "n1")
            if entry is not None:
                break
            await asyncio.sleep(0.05)
        assert entry is not None and entry.state is TradingState.HALTED
        assert "restored from this node's flight recorder" in entry.reason
        assert "runaway" in entry.reason
        await asyncio.sleep(0.5)
        rec = tmp_path / "r" / "n1.jsonl"
        assert accepted_between(rec, restarted, time.time_ns()) == 0
        resumed_by = await asyncio.to_thread(
            resume,
            site,
            "--node",
            "n1",
            "--reason",
            "reconciled",
            "--config",
            fast_ramp(tmp_path),
            "--nats-url",
            url,
        )
        assert resumed_by.returncode == 0, resumed_by.stdout + resumed_by.stderr
        await eventually_trades(rec, time.time_ns())
    finally:
        for relay in relays:
            await relay.close()
        server.stop()


async def test_a_kill_names_every_member_that_did_not_confirm_with_its_lease(
    tmp_path: Path,
    nats_server: Site,
    procs: list[NodeProcesses],
    planes: list[NatsControlPlane],
) -> None:
    url, trust_dir = nats_server.url, nats_server.trust_dir
    short = NodeProcesses([url], tmp_path, flow_rate=20, policy=POLICY, trust_dir=trust_dir)
    # frozen's lease must outlast the CLI's start and its whole --timeout: 30 s, loaded
    long = NodeProcesses(
        [url], tmp_path, flow_rate=20, policy=LeasePolicy(30.0, 0.2), trust_dir=trust_dir
    )
    procs += [short, long]
    short.spawn("dead")
    short.spawn("ok")
    long.spawn("frozen")
    plane = await operator(url, planes)
    await wait_admitted(plane, ["dead", "ok", "frozen"], CLOCK)
    os.kill(short.procs["dead"].pid, signal.SIGKILL)  # died: its lease runs out by itself
    await asyncio.sleep(POLICY.lease_timeout_s + 1.0)  # past its lease and the grace
    frozen = long.procs["frozen"]
    os.kill(frozen.pid, signal.SIGSTOP)  # froze just before: its lease is still live
    try:
        kill = await asyncio.to_thread(
            cli, nats_server, "alice", "kill", "--reason", "stop all", "--timeout", "3",
            "--nats-url", url,
        )  # fmt: skip
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    out = kill.stdout
    assert kill.returncode == 1, out + kill.stderr
    assert "not confirmed: dead: lease expired at" in out
    assert "stopped trading by itself" in out
    assert "not confirmed: frozen: lease still LIVE until" in out
    assert "not confirmed: ok" not in out


def test_a_live_fleet_node_signs_its_recorder_and_verify_catches_a_rewrite(
    tmp_path: Path,
) -> None:
    """`knightwatch up` (real processes): the node signs checkpoints with its enrolled key;
    after it stops, `audit verify --key` vouches for every record, and a rewrite with a
    recomputed chain (which the chain alone passes) fails."""
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "knightwatch", "up", "--nodes", "1", "--flow", "5",
         "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    up = threading.Event()

    def drain() -> None:
        """Read every line `up` prints, to its end: a pipe nobody reads fills, and `up`
        stalls on a log line (it then did not stop within the wait below)."""
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("fleet up"):
                up.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    recorder = state / "audit" / "n1.jsonl"
    try:
        assert up.wait(60), "`up` never said the fleet is up"
        deadline = time.monotonic() + 30.0
        while not (recorder.exists() and decided(recorder)):
            assert time.monotonic() < deadline, "n1 recorded no decision"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(timeout=10)
    key = tmp_path / "n1.pub"  # the public half of the key `up` enrolled for n1
    key.write_bytes(load_signing_key(state / "trust" / "keys" / "n1.key").public.to_pem())

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "knightwatch", *args], capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    ok = cli("audit", "verify", str(recorder), "--key", str(key))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "final: the node closed the file there" in ok.stderr
    lines = recorder.read_bytes().splitlines()
    edited = [json.loads(line) for line in lines]
    edited[0]["node"] = "someone-else"
    # the forger re-seals every batch where it was, so each seq stays where the node signed it
    pieces: list[bytes] = []
    batch: list[bytes] = []
    prev = GENESIS.encode()
    for r in edited:
        if r["kind"] != "seal":
            batch.append(msgspec.json.encode({k: v for k, v in r.items() if k != "seq"}))
            continue
        sealed, _, prev = seal_batch(batch, r["seq"] - len(batch), prev, r["ts"])
        pieces += sealed
        batch = []
    recorder.write_bytes(b"".join(pieces))
    chain_only = cli("audit", "verify", str(recorder), "--checkpoints", os.devnull)
    assert chain_only.returncode == 0, chain_only.stdout  # the chain alone is fooled
    caught = cli("audit", "verify", str(recorder), "--key", str(key))
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert "checkpoint_mismatch" in caught.stdout


async def armed_since(plane: NatsControlPlane, node_id: str, since_ns: int) -> None:
    """Until the node's membership says a process started after `since_ns` has armed."""
    for _ in range(200):
        with contextlib.suppress(ControlPlaneUnavailable):
            member = {m.node_id: m for m in await plane.members()}.get(node_id)
            if member is not None and member.started_ns > since_ns and member.armed:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{node_id} never armed after its restart")


async def test_a_node_restarted_with_raised_limits_while_killed_is_refused(
    tmp_path: Path,
    nats_server: Site,
    procs: list[NodeProcesses],
    planes: list[NatsControlPlane],
) -> None:
    """The freeze covers limits: a node restarted during a fleet kill with a limits file
    looser than the one it last armed with exits naming the kill and each raised key, and
    never arms; the same or tighter limits arm; after the resume a raise is a normal start."""
    url, site = nats_server.url, nats_server
    plane = await operator(url, planes)

    def limits(rate: int) -> list[str]:
        path = tmp_path / f"limits-{rate}.toml"
        path.write_text(f'version = "r{rate}"\n[fleet]\nmax_orders_per_s_node = {rate}\n')
        return ["--limits", str(path)]

    def armed_rate() -> int:
        record = json.loads((tmp_path / "n1.armed-limits.json").read_text())
        return int(record["max_orders_per_s_node"])

    fleet = NodeProcesses([url], tmp_path, policy=POLICY, trust_dir=site.trust_dir)
    procs.append(fleet)
    t0 = time.time_ns()
    fleet.spawn("n1", limits(100))
    await armed_since(plane, "n1", t0)
    assert armed_rate() == 100
    ks = site.killswitch(plane, "alice")
    assert (await ks.kill(Scope.FLEET, FLEET_KEY, "runaway", timeout_s=10.0)).ok
    fleet.stop("n1")

    raised = fleet.spawn("n1", limits(1000))
    assert raised.wait(timeout=60) != 0
    log = " ".join((tmp_path / "logs" / "n1.log").read_text().split())  # unwrapped
    assert "limits looser than it last armed with (max_orders_per_s_node 100 -> 1000)" in log
    assert "refused while the fleet kill 'fleet'" in log and "runaway" in log
    assert "Traceback" not in log
    assert armed_rate() == 100  # what it armed with stays the reference

    t1 = time.time_ns()
    fleet.spawn("n1", limits(50))  # tighter passes while killed
    await armed_since(plane, "n1", t1)
    assert armed_rate() == 50
    fleet.stop("n1")

    await ks.resume(Scope.FLEET, FLEET_KEY, "fixed", timeout_s=2.0, approvers=(BOB,))
    t2 = time.time_ns()
    fleet.spawn("n1", limits(1000))  # no kill in force: a raise is a normal change
    await armed_since(plane, "n1", t2)
    assert armed_rate() == 1000


def test_an_unreadable_armed_limits_record_stops_the_node_with_its_path(tmp_path: Path) -> None:
    path = armed_limits_path(tmp_path, "n1")
    assert read_armed_limits(path) is None
    for bad in (b"{not json", b'{"max_orders_per_s_node": -5}', b"[1, 2]"):
        path.write_bytes(bad)
        with pytest.raises(FleetError, match=r"n1\.armed-limits\.json: not the limits this node"):
            read_armed_limits(path)
    path.unlink()
    path.mkdir()
    with pytest.raises(FleetError, match="cannot read"):
        read_armed_limits(path)
