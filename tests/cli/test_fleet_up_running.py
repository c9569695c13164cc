"""A second `knightwatch up` on a state dir whose fleet runs is refused at once, in one line
naming the state dir, and writes nothing; a state dir whose fleet is gone still starts. Real
processes throughout.

Before, the second `up` joined the running fleet's server, rewrote its identities and its
release under it (the running admission service refused the new one as
`signature_untrusted`, and the node's release directory was gone), and ended in a
`_GatheringFuture exception was never retrieved` traceback."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_up_signals import processes_naming

ENV = {**os.environ, "COLUMNS": "300"}


def _up(state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "knightwatch", "up", "--nodes", "1", "--flow", "0",
         "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )  # fmt: skip


def _until_up(proc: subprocess.Popen[str]) -> str:
    """Read `up`'s output until its fleet is up; the output so far. The rest is read on in
    a thread while the test runs: a full pipe would stall `up` on a log line."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # bounded by the test's own timeouts: `up` prints once ready
        lines.append(line)
        if line.startswith("fleet up"):
            drain = threading.Thread(target=lines.extend, args=(proc.stdout,), daemon=True)
            drain.start()
            return "".join(lines)
    raise AssertionError("".join(lines))


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture
def fleets() -> Iterator[list[subprocess.Popen[str]]]:
    """Every `up` a test starts, stopped (SIGTERM stops its fleet) at the end."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            _stop(proc)


def _files(state: Path) -> dict[str, tuple[str, int]]:
    """Every file the running fleet does not write as it runs: (sha256, mtime)."""
    seen = {}
    for path in sorted(state.rglob("*")):
        rel = path.relative_to(state).as_posix()
        if not path.is_file() or rel.startswith(("logs/", "audit/", "nats/jetstream/")):
            continue
        if rel in ("nats/nats-server.log", "n1.armed-limits.json"):
            continue
        seen[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return seen


def _second_up(state: Path, *options: str) -> tuple[int, str]:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "knightwatch", "up", "--nodes", "1", "--flow", "0",
             "--state-dir", str(state), *options],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:  # it started a second fleet: stopped by timeout
        raise AssertionError(f"the second up ran on: {exc.output}") from None
    return done.returncode, (done.stdout + done.stderr).strip()


def test_a_second_up_on_a_running_fleet_is_refused_at_once_and_writes_nothing(
    tmp_path: Path, fleets: list[subprocess.Popen[str]]
) -> None:
    state = tmp_path / "state"
    first = _up(state)
    fleets.append(first)
    _until_up(first)
    before = _files(state)
    assert "trust/keys/alice.key" in before and "release/release.dsse.json" in before
    url = (state / "nats.url").read_text().strip()
    # on the recorded server, and on the running fleet's server named by --nats-url
    for options in ((), ("--nats-url", url)):
        started = time.monotonic()
        code, out = _second_up(state, *options)
        assert code == 2, out
        assert time.monotonic() - started < 20, out  # at once: no release built, no fleet
        assert len(out.splitlines()) == 1 and "Traceback" not in out, out
        assert out.startswith(f"error: --state-dir {state}: a fleet is running there"), out
        assert "signature_untrusted" not in out, out
        assert _files(state) == before  # not one file written, nor rewritten alike
    assert first.poll() is None  # the running fleet runs on
    assert _stop(first) == 0


def test_a_fleet_whose_up_died_is_refused_while_its_server_lives_and_starts_once_gone(
    tmp_path: Path, fleets: list[subprocess.Popen[str]]
) -> None:
    """`up` killed outright (SIGKILL) leaves its server and node running: a new `up` there
    would join them, so it is refused naming the server's pid. Once they are gone too (a
    crash of the whole fleet), the stale URL, ports and lock files do not hold a new one
    back."""
    state = tmp_path / "state"
    first = _up(state)
    fleets.append(first)
    _until_up(first)
    first.kill()
    first.wait()
    assert _orphans(state), "the server and node outlived `up`"
    try:
        before = _files(state)
        code, out = _second_up(state)
        assert code == 2, out
        assert len(out.splitlines()) == 1 and "Traceback" not in out, out
        assert out.startswith(f"error: --state-dir {state}: a fleet is running there"), out
        assert "nats-server pid" in out, out
        assert _files(state) == before
    finally:
        for pid in _orphans(state):  # processes this test started (through `up`), by id
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _orphans(state):
        assert time.monotonic() < deadline, processes_naming(str(state))
        time.sleep(0.05)
    assert (state / "nats.url").exists() and (state / "fleet.lock").exists()  # stale
    again = _up(state)
    fleets.append(again)
    assert "fleet up" in _until_up(again)
    assert _stop(again) == 0


def _orphans(state: Path) -> list[int]:
    """The ids of the live processes naming `state` (this test's fleet's)."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and int(entry.name) != os.getpid() and _names(entry, state)
    ]


def _names(entry: Path, state: Path) -> bool:
    try:
        cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return str(state) in cmd
