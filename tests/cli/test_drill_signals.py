"""`knightwatch drill` stopped by SIGTERM stops every process it started: before, Python's
default SIGTERM ended the drill at once, and its embedded nats-server and its node processes
(trading on their simulated flow, one a runaway) ran on as orphans with nobody to stop them.
Ctrl-C stopped them; a SIGTERM (a CI job's timeout, `kill`, systemd) did not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .test_up_signals import processes_naming


def test_a_sigterm_while_the_drill_runs_stops_every_process_it_started(tmp_path: Path) -> None:
    state = tmp_path / "drill"
    proc = subprocess.Popen(
        [sys.executable, "-m", "knightwatch", "drill", "--nodes", "3", "--flow", "5",
         "--no-resume", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        # the server is up and the node processes are started (they name the state dir)
        while not any("drill-node" in p for p in processes_naming(f"--state-dir {state}")):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no drill node started in 60 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in out, out
    assert "stopped by SIGTERM: the processes it started were stopped" in out, out
    assert proc.returncode == 143, out
    left = processes_naming(str(state))
    deadline = time.monotonic() + 30  # children exit on their own signal; give them a moment
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_naming(str(state))
    assert left == [], left
