"""A real fleet, a real console and a real browser, shared by the console's tests.

`knightwatch up` (nats-server with authorization, admission, supervisor, venue
and three admitted node processes) and `knightwatch console serve` run as
their own processes, once per module, stopped by pid even when a test fails.
The users file is written with cheap argon2 parameters (the hash strings carry
them, so the console verifies with what was stored). The browser is the
distribution's chromium driven by Playwright's async API with plain fixtures;
a missing browser fails the run, it is never skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import argon2
import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright

from knightwatch.console.users import UserStore
from knightwatch.release.keys import load_signing_key

PASSWORD = "correct horse battery"
PEOPLE = ("alice", "bob", "carol")
CHROMIUM_ENV = "KW_CHROMIUM"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
def running_fleet(state: Path, nodes: int = 3) -> Iterator[Fleet]:
    state.mkdir(parents=True, exist_ok=True)
    log = state / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _cli("up", "--nodes", str(nodes), "--flow", "5", "--state-dir", str(state)),
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


def write_users(fleet: Fleet) -> Path:
    path = fleet.state / "console-users.toml"
    store = UserStore(path, profile=argon2.profiles.CHEAPEST)
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
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/login", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"console did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield ConsoleProc(url, fleet, log, fleet.state / "console" / "audit.jsonl")
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("fleet")) as f:
        yield f


@pytest.fixture(scope="module")
def console(fleet: Fleet) -> Iterator[ConsoleProc]:
    with running_console(fleet) as c:
        yield c


def chromium_path() -> str:
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            f"no browser at {path}: install the distribution's chromium "
            f"(`apt-get install chromium`, `make test` does it as root) or set {CHROMIUM_ENV}",
            pytrace=False,
        )
    return path


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield b
        finally:
            await b.close()


async def login(browser: Browser, console: ConsoleProc, name: str) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(console.url + "/login")
    await page.fill("#name", name)
    await page.fill("#password", PASSWORD)
    await page.click("#login")
    await page.wait_for_url(console.url + "/")
    return page
