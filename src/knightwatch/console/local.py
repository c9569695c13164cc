"""A local fleet and its console as real processes, for the console's tests and bench.

`knightwatch up` (nats-server with authorization, admission, supervisor, venue
and admitted node processes) and `knightwatch console serve` each run in their
own process group and are stopped by pid, so a failing test or bench never
leaves a fleet behind. The users file is written with the parameters given
(cheap ones for tests: the hash strings carry them, so the console verifies
with what was stored).
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import argon2

from knightwatch.console.users import UserStore
from knightwatch.control.plane.server import free_port
from knightwatch.release.keys import load_signing_key

PASSWORD = "correct horse battery"
PEOPLE = ("alice", "bob", "carol")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "knightwatch", *args]


@dataclass
class Fleet:
    state: Path
    url: str
    log: Path

    def key(self, name: str) -> Path:
        return self.state / "trust" / "keys" / f"{name}.key"

    def cli_env(self, name: str) -> dict[str, str]:
        return {
            **os.environ,
            "KNIGHTWATCH_KEY": str(self.key(name)),
            "KNIGHTWATCH_NATS_URL": self.url,
            "KNIGHTWATCH_ANCHOR": str(self.state / "trust" / "anchor.toml"),
            "COLUMNS": "200",
        }


@contextlib.contextmanager
def running_fleet(state: Path, nodes: int = 3, *extra: str) -> Iterator[Fleet]:
    state.mkdir(parents=True, exist_ok=True)
    log = state / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _cli("up", "--nodes", str(nodes), "--flow", "5", "--state-dir", str(state), *extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        deadline = time.monotonic() + 90
        while b"fleet up" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"knightwatch up did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        url = (state / "nats.url").read_text().strip()
        yield Fleet(state, url, log)
    finally:
        _stop(proc)


def write_users(fleet: Fleet, profile: argon2.Parameters = argon2.profiles.CHEAPEST) -> Path:
    path = fleet.state / "console-users.toml"
    store = UserStore(path, profile=profile)
    for name in PEOPLE:
        if store.get(name) is None:
            store.add(name, PASSWORD, load_signing_key(fleet.key(name)))
    return path


@dataclass
class ConsoleProc:
    url: str
    fleet: Fleet
    log: Path
    audit: Path


@contextlib.contextmanager
def running_console(fleet: Fleet, *extra: str) -> Iterator[ConsoleProc]:
    write_users(fleet)
    port = free_port()
    log = fleet.state / f"console-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _cli(
                "console", "serve", "--state-dir", str(fleet.state), "--nats-url", fleet.url,
                "--key", str(fleet.key("console")), "--port", str(port), "--heartbeat", "0.25",
                *extra,
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    tls = "--tls-cert" in extra
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    # the readiness probe only asks whether it answers: the caller checks the certificate
    probe = ssl.create_default_context() if tls else None
    if probe is not None:
        probe.check_hostname, probe.verify_mode = False, ssl.CERT_NONE
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/login", timeout=1, context=probe) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"console did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield ConsoleProc(url, fleet, log, fleet.state / "console" / "audit.jsonl")
    finally:
        _stop(proc)
