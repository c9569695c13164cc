"""`_Fleet.stop` ends every node process whatever fails before it: a supervisor service
whose stop raises, or a stop cancelled midway (a second Ctrl-C or SIGTERM while the drill
stops). It stopped the service first and the node processes after, with nothing between
them: a failure there left the nodes, the runaway among them, running with no one to
stop them, while the CLI said "the processes it started were stopped".

Real node-shaped processes (a Python that sleeps); the failing service is a subclass of
the real one, its own stop run first.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import Supervisor, SupervisorConfig
from knightwatch.control.fleet.supervisor_service import SupervisorService
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.sim.drill.drill import _Fleet, local_kit
from knightwatch.sim.drill.processes import NodeProcesses

SLEEPER = "import time\nprint('ready', flush=True)\ntime.sleep(120)\n"


class BrokenStop(SupervisorService):
    """A service whose stop fails after doing its own work."""

    async def stop(self) -> None:
        await super().stop()
        raise RuntimeError("supervisor stop failed")


class StuckStop(SupervisorService):
    """A service whose stop waits for ever (an action that never ends): cancelled."""

    entered: asyncio.Event

    async def stop(self) -> None:
        await super().stop()
        self.entered.set()
        await asyncio.Event().wait()


def _fleet(
    tmp_path: Path, service: type[SupervisorService]
) -> tuple[_Fleet, list[subprocess.Popen[bytes]]]:
    kit = local_kit(tmp_path, ["n1", "n2", "n3"])
    plane = NatsControlPlane(["nats://127.0.0.1:1"], signer=kit.signer("supervisor"))
    config = SupervisorConfig()
    fleet = _Fleet(plane, tmp_path, Pager(), config, None, kit)
    clock = SystemClock()
    fleet.service = service(
        plane,
        Supervisor(config, clock),
        KillSwitch(plane, clock, kit.signer("supervisor"), kit.store()),
        Pager(),
    )
    fleet.procs = NodeProcesses([], tmp_path)
    held = []
    for node_id in ("n1", "n2", "n3"):
        proc = subprocess.Popen([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        fleet.procs.procs[node_id] = proc
        held.append(proc)
    return fleet, held


def _reap(held: list[subprocess.Popen[bytes]]) -> list[str]:
    """The ids of processes still running (then killed, so the test leaves none)."""
    alive = [str(p.pid) for p in held if p.poll() is None]
    for p in held:
        if p.poll() is None:
            p.kill()
        p.wait()
        if p.stdout is not None:
            p.stdout.close()
    return alive


def test_node_processes_stop_when_the_service_stop_raises(tmp_path: Path) -> None:
    fleet, held = _fleet(tmp_path, BrokenStop)
    try:
        with pytest.raises(RuntimeError, match="supervisor stop failed"):
            asyncio.run(fleet.stop())
    finally:
        alive = _reap(held)
    assert not alive, f"node processes left running after a failed service stop: {alive}"


def test_node_processes_stop_when_the_stop_is_cancelled(tmp_path: Path) -> None:
    fleet, held = _fleet(tmp_path, StuckStop)

    async def stop_then_cancel() -> None:
        assert isinstance(fleet.service, StuckStop)
        fleet.service.entered = asyncio.Event()
        task = asyncio.create_task(fleet.stop())
        await asyncio.wait_for(fleet.service.entered.wait(), 15.0)
        task.cancel()  # a second Ctrl-C / SIGTERM while the drill stops
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 15.0)

    try:
        asyncio.run(stop_then_cancel())
    finally:
        alive = _reap(held)
    assert not alive, f"node processes left running after a cancelled stop: {alive}"
