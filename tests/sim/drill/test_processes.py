"""`NodeProcesses.stop` ends every process within one deadline: SIGTERM to all, SIGKILL to
those still running when it passes. Real processes that ignore SIGTERM (a node stuck in its
shutdown): before, each was waited its own timeout in turn, so a Ctrl-C'd `up` of N such
nodes held on for N times the timeout."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from knightwatch.sim.drill.processes import NodeProcesses

STUCK = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def test_processes_that_ignore_sigterm_are_killed_at_one_deadline(tmp_path: Path) -> None:
    procs = NodeProcesses([], tmp_path)
    for i in range(4):
        proc = subprocess.Popen([sys.executable, "-c", STUCK], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        procs.procs[f"n{i}"] = proc
    held = list(procs.procs.values())
    t0 = time.monotonic()
    procs.stop(timeout_s=1.0)
    took = time.monotonic() - t0
    assert all(p.returncode == -signal.SIGKILL for p in held), [p.returncode for p in held]
    assert not procs.procs
    assert took < 3.0, f"4 stuck processes took {took:.1f} s to stop at a 1 s deadline"
