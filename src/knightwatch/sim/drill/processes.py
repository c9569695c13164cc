"""The drill's process harness: N node processes, each with the drill's synthetic flow.

Each process is `python -m knightwatch node ...`, or `drill-node --flow RATE`
(the production node service plus the drill's order flow), logging to `<state_dir>/logs/<id>.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from knightwatch.clock import Clock, to_ns
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.plane.connect import FleetError
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import ControlPlaneUnavailable


class NodeProcesses:
    """N node processes (`node`, or `drill-node` with a flow), logging to `<state_dir>/logs/`.

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
        trust_dir: Path | None = None,
    ) -> None:
        """`trust_dir`: where `Kit.write` put the anchor and each node's key (`keys/<id>.key`),
        default STATE_DIR/trust."""
        self.urls = urls
        self.trust_dir = trust_dir or state_dir / "trust"
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
            "knightwatch",
            *(("drill-node", "--flow", str(self.flow_rate)) if self.flow_rate > 0 else ("node",)),
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
            "--key",
            str(self.trust_dir / "keys" / f"{node_id}.key"),
            "--anchor",
            str(self.trust_dir / "anchor.toml"),
            *self.extra,
            *(extra or []),
        ]
        if self.recorder_dir is not None:
            cmd += ["--recorder", str(self.recorder_dir / f"{node_id}.jsonl")]
        with (logs / f"{node_id}.log").open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
        held = self.procs.get(node_id)
        # a second process for a live id (a duplicate-id drill) keeps the first one tracked,
        # so `stop` still ends both
        self.procs[
            node_id if held is None or held.poll() is not None else f"{node_id}@{proc.pid}"
        ] = proc
        return proc

    def spawn_many(self, n: int, prefix: str = "n") -> list[str]:
        ids = [f"{prefix}{i}" for i in range(1, n + 1)]
        for node_id in ids:
            self.spawn(node_id)
        return ids

    def stop(self, node_id: str | None = None, timeout_s: float = 5.0) -> None:
        """SIGTERM to each, then SIGKILL to those still running `timeout_s` after it: one
        deadline for all. Each waited its own `timeout_s` in turn, so N nodes slow to stop
        held the caller (a Ctrl-C'd `up`) for N times that."""
        targets = [node_id] if node_id else list(self.procs)
        for nid in targets:
            proc = self.procs.get(nid)
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        deadline = time.monotonic() + timeout_s
        for nid in targets:
            proc = self.procs.pop(nid, None)
            if proc is None:
                continue
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_admitted(
    plane: NatsControlPlane, node_ids: list[str], clock: Clock, timeout_s: float = 20.0
) -> None:
    """Until every node has a live, admitted membership record; FleetError naming the laggards."""
    deadline = clock.monotonic_ns() + to_ns(timeout_s)
    waiting = set(node_ids)
    while clock.monotonic_ns() < deadline:
        now = clock.time_ns()
        with contextlib.suppress(ControlPlaneUnavailable):
            ok = {s.node_id for s in await plane.members() if s.admitted and s.live(now, 0)}
            waiting = set(node_ids) - ok
            if not waiting:
                return
        await asyncio.sleep(0.1)
    # it returned as if they were admitted: what followed ran on a fleet short of them
    raise FleetError(
        f"nodes not admitted within {timeout_s:g} s: {', '.join(sorted(waiting))} "
        "(see their logs under logs/)"
    )
