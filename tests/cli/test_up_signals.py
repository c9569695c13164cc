"""`knightwatch up` stopped while it is still starting its fleet stops every process it
started: before, a SIGTERM that came before the fleet was up killed `up` alone, and its
embedded nats-server and node processes (one trading on its simulated flow) ran on as
orphans with nobody to stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def processes_naming(text: str) -> list[str]:
    """Command lines of the live processes that name `text` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == str(os.getpid()):
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(cmd)
    return found


def test_a_stop_signal_while_the_fleet_starts_stops_every_process_it_started(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "knightwatch", "up", "--nodes", "2", "--flow", "5",
         "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        # the server is up (it registered its URL) and the nodes are being started
        while not (state / "nats.url").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.02)
        assert (state / "nats.url").exists()
        while not processes_naming(f"--state-dir {state}") and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    # (a filter on "pytest" here left nothing to check: the state dir is under pytest's
    # tmp dir, so every process naming it names "pytest" too)
    left = processes_naming(str(state))
    deadline = time.monotonic() + 30  # children exit on their own signal; give them a moment
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_naming(str(state))
    assert left == [], left
    assert not (state / "nats.url").exists()
