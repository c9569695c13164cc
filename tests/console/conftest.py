"""A real fleet, a real console and a real browser, shared by the console's tests.

`knightwatch up` (nats-server with authorization, admission, supervisor, venue
and three admitted node processes) and `knightwatch console serve` run as
their own processes, once per session, stopped by pid even when a test fails.
The users file is written with cheap argon2 parameters (the hash strings carry
them, so the console verifies with what was stored). The browser is the
distribution's chromium driven by Playwright's async API with plain fixtures;
a missing browser fails the run, it is never skipped.

On a loaded 2-core CI machine a kill's confirmations, a page's update and a browser's
rendering can take seconds: the shared console waits up to `KILL_TIMEOUT_S` for a kill's
confirmations (a confirmed kill answers as soon as the last node confirms, so it costs
nothing when they are quick), and `expect` waits up to `EXPECT_TIMEOUT_MS` for what a
page must come to show (it passes as soon as it does).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from knightwatch.console.local import PASSWORD, ConsoleProc, Fleet, running_console, running_fleet
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import Bucket
from knightwatch.trust.identity import load_signer

CHROMIUM_ENV = "KW_CHROMIUM"
REGISTRY = Path(__file__).parents[1] / "flags" / "fixtures" / "clean_repo" / "feature-flags.yaml"
KILL_TIMEOUT_S = 10.0
"""How long a test console's kill waits for confirmations (the product's default, 2 s, is
thin on a loaded CI machine for a kill the test expects every node to confirm); under the
20 s the tests' HTTP clients wait for an answer."""
EXPECT_TIMEOUT_MS = 15_000
"""How long `expect` waits for a page to show what it must (Playwright's default is 5 s)."""

expect.set_options(timeout=EXPECT_TIMEOUT_MS)


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("fleet"), 3, "--registry", str(REGISTRY)) as f:
        yield f


@pytest.fixture(scope="session")
def console(fleet: Fleet) -> Iterator[ConsoleProc]:
    with running_console(
        fleet, "--registry", str(REGISTRY), "--kill-timeout", str(KILL_TIMEOUT_S)
    ) as c:
        yield c


@contextlib.contextmanager
def own_console(
    tmp_path_factory: pytest.TempPathFactory, name: str, *extra: str
) -> Iterator[ConsoleProc]:
    """A fleet of its own (`knightwatch up`, one node, the test registry) and its console
    (`extra`: more `console serve` options), for a test whose records or nodes must not
    reach the shared fleet."""
    with (
        running_fleet(tmp_path_factory.mktemp(name), 1, "--registry", str(REGISTRY)) as fleet,
        running_console(fleet, "--registry", str(REGISTRY), *extra) as console,
    ):
        yield console


async def put_as(fleet: Fleet, name: str, bucket: Bucket, key: str, value: bytes) -> None:
    """`value` stored under `key` in `bucket` by `name` over a connection of their own (the
    operator-writable buckets hold whatever an operator puts there)."""
    plane = NatsControlPlane(
        [fleet.url], name=f"{name}-test", signer=load_signer(fleet.key(name), name)
    )
    await plane.connect()
    try:
        await plane.put_record(bucket, key, value)
    finally:
        await plane.close()


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


def halts_seen(fleet: Fleet) -> str:
    """The HALT lines the fleet's nodes logged (who halted what, and why): the first thing
    to read when a test finds a node not ACTIVE."""
    lines = [
        line
        for log in sorted((fleet.state / "logs").glob("*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if " HALT " in line
    ]
    return "\n".join(lines[-20:]) or "(no HALT line in the node logs)"


def audit_verify(path: Path) -> None:
    """`knightwatch audit verify` accepts the console's record, as an operator would run it."""
    verify = subprocess.run(
        [sys.executable, "-m", "knightwatch", "audit", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def login(
    browser: Browser, console: ConsoleProc, name: str, *, bypass_csp: bool = False
) -> Page:
    """A page logged in as `name` (`bypass_csp`: the browser ignores the console's CSP)."""
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, bypass_csp=bypass_csp
    )
    page = await context.new_page()
    await page.goto(console.url + "/login")
    await page.fill("#name", name)
    await page.fill("#password", PASSWORD)
    await page.click("#login")
    await page.wait_for_url(console.url + "/")
    return page
