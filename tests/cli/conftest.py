"""CLI fixtures: a local fleet run by `knightwatch up` as a real process, and the flight-recorder
fixtures of tests/audit (for `audit`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from knightwatch.cli.app import app

from ..audit.conftest import audit_path, clock, write_file

__all__ = ["audit_path", "clock", "command_params", "fleet_up", "write_file"]


def command_params() -> Iterator[tuple[list[str], object]]:
    """(command path, parameter) for every parameter of every `knightwatch` command: what the
    tests that hold a rule over all options walk."""

    def walk(command: object, prefix: list[str]) -> Iterator[tuple[list[str], object]]:
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*prefix, name])
            return
        for param in getattr(command, "params", []):
            yield prefix, param

    yield from walk(typer.main.get_command(app), [])


@pytest.fixture
def fleet_up(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "knightwatch", "up", "--nodes", "2", "--flow", "5",
         "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # bounded by the test timeout; `up` prints once ready
            lines.append(line)
            if line.startswith("fleet up"):
                break
        assert (state / "nats.url").exists(), "".join(lines)
        # read on while the test runs: a full pipe would stall `up`'s event loop on a log line
        reader = threading.Thread(target=lines.extend, args=(proc.stdout,), daemon=True)
        reader.start()
        yield state
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            out = "".join(lines)
            logs = "".join(
                f"--- {log.name}:\n{log.read_text(errors='replace')[-2000:]}\n"
                for log in sorted((state / "logs").glob("*.log"))
            )
            raise AssertionError(
                f"`up` still ran 30 s after SIGTERM; it printed:\n{out}{logs}"
            ) from None
        assert proc.returncode == 0, "".join(lines)
    assert not (state / "nats.url").exists()  # embedded server stopped and unregistered
