"""Running the fleet as processes: connect to (or embed) the server, serve a node, spawn many.

Used by the CLI (`knightwatch node`, `supervisor`, `up`, `drill`), the kill
benchmark and the failure tests, so all of them start things the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import nats
from nats.aio.client import Client

from knightwatch.audit.recorder import FlightRecorder
from knightwatch.audit.sink import FileSink
from knightwatch.clock import Clock, SystemClock
from knightwatch.control.attestor import Attestor
from knightwatch.control.exposition import MetricsServer, serve_node_metrics
from knightwatch.control.flagplane import NodeFlags
from knightwatch.control.flow import OrderFlow
from knightwatch.control.lease import LeasePolicy
from knightwatch.control.natsplane import NatsControlPlane
from knightwatch.control.node import NodeRuntime
from knightwatch.control.protocol import ControlPlaneUnavailable
from knightwatch.control.server import EmbeddedNatsServer
from knightwatch.control.shipping import ShippingSink
from knightwatch.errors import KnightwatchError
from knightwatch.guard import Guard
from knightwatch.limits import Limits

log = logging.getLogger(__name__)

URL_FILE = "nats.url"


class FleetError(KnightwatchError, RuntimeError):
    """A fleet operation that cannot proceed; the message names what to fix."""


def recorded_url(state_dir: Path) -> list[str]:
    """The server URL(s) `knightwatch up` (or an embedding node) wrote into the state dir."""
    path = state_dir / URL_FILE
    if not path.exists():
        return []
    return [u for u in path.read_text().split() if u]


@contextlib.asynccontextmanager
async def control_plane(
    urls: list[str],
    state_dir: Path,
    name: str,
    *,
    replicas: int = 1,
    embed: bool = False,
) -> AsyncIterator[NatsControlPlane]:
    """A connected plane: to `urls`, else to the state dir's server, else (if `embed`) a new one.

    An embedded server is stopped, and its URL file removed, on exit.
    """
    server: EmbeddedNatsServer | None = None
    targets = urls or recorded_url(state_dir)
    plane: NatsControlPlane | None = None
    if targets:
        plane = NatsControlPlane(targets, name=name, replicas=replicas)
        try:
            await plane.connect()
        except ControlPlaneUnavailable:
            if urls or not embed:
                raise
            plane = None
    if plane is None:
        if not embed:
            raise FleetError(
                f"no control plane: pass --nats-url, or start one with `knightwatch up` "
                f"(looked for {state_dir / URL_FILE})"
            )
        server = EmbeddedNatsServer(state_dir / "nats")
        url = server.start()
        (state_dir / URL_FILE).write_text(url + "\n")
        plane = NatsControlPlane(url, name=name, replicas=replicas)
        await plane.connect()
    try:
        yield plane
    finally:
        await plane.close()
        if server is not None:
            with contextlib.suppress(FileNotFoundError):
                (state_dir / URL_FILE).unlink()
            server.stop()


def load_limits(path: Path | None, policy: LeasePolicy) -> Limits:
    """The limits file, with the lease timeout set to the node's (a conflicting one is an error)."""
    limits = Limits.from_toml(path) if path is not None else Limits()
    if limits.lease_timeout_s is None:
        return msgspec.structs.replace(limits, lease_timeout_s=policy.lease_timeout_s)
    if abs(limits.lease_timeout_s - policy.lease_timeout_s) > 1e-9:
        raise FleetError(
            f"lease_timeout_s: the limits file sets {limits.lease_timeout_s:g} but the node runs "
            f"with --lease-timeout {policy.lease_timeout_s:g}; make them agree"
        )
    return limits


@contextlib.contextmanager
def stop_requested() -> Iterator[asyncio.Event]:
    """An event set by SIGTERM/SIGINT while the block runs, so every wait inside can end."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def wait_for_signal() -> None:
    with stop_requested() as stop:
        await stop.wait()


async def first_of(wanted: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait for `wanted` unless `stop` comes first; True if `wanted` was set."""
    waits = [asyncio.create_task(wanted.wait()), asyncio.create_task(stop.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    return wanted.is_set() and not stop.is_set()


def default_recorder_path(state_dir: Path, node_id: str) -> Path:
    """Where a node keeps its flight recorder when not told: every node has a durable one
    on its own disk, whatever happens to shipping to the fleet stream."""
    return state_dir / "audit" / f"{node_id}.jsonl"


async def serve_node(
    node_id: str,
    urls: list[str],
    state_dir: Path,
    *,
    limits_path: Path | None,
    policy: LeasePolicy,
    flow_rate: float = 0.0,
    recorder_path: Path | None = None,
    metrics_s: float = 0.5,
    replicas: int = 1,
    clock: Clock | None = None,
    attestor: Attestor | None = None,
    attest_s: float = 5.0,
    metrics_port: int | None = None,
) -> None:
    """Run one node until SIGTERM/SIGINT: Guard, lease, kill state, metrics, optional flow.

    With an attestor the node arms only once admitted on the fleet's target
    release, and keeps its flag state in sync (confirming each revision). With
    `metrics_port` (0 = any free port) it serves Prometheus metrics on 127.0.0.1.
    """
    clock = clock or SystemClock()
    limits = load_limits(limits_path, policy)
    path = recorder_path if recorder_path is not None else default_recorder_path(state_dir, node_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        inner = FileSink(path)
    except OSError as exc:
        raise FleetError(f"--recorder: cannot open {path} ({exc})") from None
    shipper = ShippingSink(inner)
    recorder = FlightRecorder(None, clock=clock, sink=shipper)
    guard = Guard(limits, node=node_id, clock=clock, recorder=recorder)
    with stop_requested() as stop:
        async with control_plane(
            urls, state_dir, f"node-{node_id}", replicas=replicas, embed=True
        ) as plane:
            runtime = NodeRuntime(
                guard,
                plane,
                clock=clock,
                policy=policy,
                metrics_s=metrics_s,
                shipper=shipper,
                attestor=attestor,
                attest_s=attest_s,
            )
            exposition: MetricsServer | None = None
            try:
                if metrics_port is not None:
                    exposition = serve_node_metrics(runtime, metrics_port)
                    print(f"node {node_id} metrics on {exposition.url}", flush=True)
                await runtime.start()
                if attestor is not None:
                    await NodeFlags(runtime).start()
                if await first_of(runtime.release_event, stop):
                    await _trade_until(stop, runtime, node_id, plane.servers, flow_rate)
            finally:
                if exposition is not None:
                    exposition.close()
                await runtime.stop()
                recorder.close()


async def _trade_until(
    stop: asyncio.Event, runtime: NodeRuntime, node_id: str, servers: list[str], flow_rate: float
) -> None:
    """Arm, run the drill order flow if asked, and keep going until a stop signal."""
    runtime.arm(f"node:{node_id}")
    flow_task: asyncio.Task[None] | None = None
    venue_nc: Client | None = None
    try:
        if flow_rate > 0:
            venue_nc = await nats.connect(servers=servers, name=f"flow-{node_id}")
            flow = OrderFlow(runtime, venue_nc, flow_rate)
            await flow.start()
            flow_task = asyncio.create_task(flow.run())
        print(f"node {node_id} admitted", flush=True)
        await stop.wait()
    finally:
        if flow_task is not None:
            flow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flow_task
        if venue_nc is not None:
            await venue_nc.close()


class NodeProcesses:
    """N `knightwatch node` processes, each logging to `<state_dir>/logs/<id>.log`.

    Always stopped (SIGTERM, then SIGKILL) by `stop()`, which callers put in a
    `finally`, so no drill or test leaves processes behind.
    """

    def __init__(
        self,
        urls: list[str],
        state_dir: Path,
        *,
        flow_rate: float = 0.0,
        policy: LeasePolicy | None = None,
        extra: list[str] | None = None,
        recorder_dir: Path | None = None,
    ) -> None:
        self.urls = urls
        self.recorder_dir = recorder_dir
        self.state_dir = state_dir
        self.flow_rate = flow_rate
        self.policy = policy or LeasePolicy()
        self.extra = extra or []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, node_id: str, extra: list[str] | None = None) -> subprocess.Popen[bytes]:
        """Start one node; `extra` are options for this node only (e.g. its release inputs)."""
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "knightwatch.cli.fleet",
            "node",
            "--id",
            node_id,
            "--nats-url",
            ",".join(self.urls),
            "--state-dir",
            str(self.state_dir),
            "--lease-timeout",
            str(self.policy.lease_timeout_s),
            "--heartbeat",
            str(self.policy.heartbeat_s),
            "--flow",
            str(self.flow_rate),
            *self.extra,
            *(extra or []),
        ]
        if self.recorder_dir is not None:
            cmd += ["--recorder", str(self.recorder_dir / f"{node_id}.jsonl")]
        with (logs / f"{node_id}.log").open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
        self.procs[node_id] = proc
        return proc

    def spawn_many(self, n: int, prefix: str = "n") -> list[str]:
        ids = [f"{prefix}{i}" for i in range(1, n + 1)]
        for node_id in ids:
            self.spawn(node_id)
        return ids

    def stop(self, node_id: str | None = None, timeout_s: float = 5.0) -> None:
        targets = [node_id] if node_id else list(self.procs)
        for nid in targets:
            proc = self.procs.get(nid)
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        for nid in targets:
            proc = self.procs.pop(nid, None)
            if proc is None:
                continue
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_admitted(
    plane: NatsControlPlane, node_ids: list[str], clock: Clock, timeout_s: float = 20.0
) -> None:
    """Until every node has a live, admitted membership record; FleetError naming the laggards."""
    deadline = clock.monotonic_ns() + int(timeout_s * 1e9)
    waiting = set(node_ids)
    while clock.monotonic_ns() < deadline:
        now = clock.time_ns()
        with contextlib.suppress(ControlPlaneUnavailable):
            ok = {s.node_id for s in await plane.members() if s.admitted and s.live(now, 0)}
            waiting = set(node_ids) - ok
            if not waiting:
                return
        await asyncio.sleep(0.1)
    raise FleetError(f"nodes not admitted within {timeout_s:g} s: {', '.join(sorted(waiting))}")
