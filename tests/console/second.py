"""A second console in the test process, on the shared fleet, and a clock the test moves.

Served through the real app over ASGI with its own record, so a test can change what the
shared console's process cannot be asked to (its recorder, its session table's clock).
Its kills wait for confirmations as long as the shared console's (`KILL_TIMEOUT_S`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx

from knightwatch.console.app import Console, ConsoleSettings, build_app
from knightwatch.console.local import PASSWORD, ConsoleProc
from knightwatch.console.serve import open_console
from knightwatch.console.users import SEAL_SUFFIX, UserStore
from knightwatch.incident.ramp import RampPlan
from knightwatch.trust.identity import load_signer
from knightwatch.trust.store import TrustStore, load_anchor

from .conftest import KILL_TIMEOUT_S


async def login(http: httpx.AsyncClient, name: str) -> str:
    """Log `name` in; the page's CSRF token."""
    answer = await http.post("/login", data={"name": name, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    page = (await http.get("/")).text
    return page.split('data-csrf="', 1)[1].split('"', 1)[0]


async def post(http: httpx.AsyncClient, csrf: str, path: str, body: object) -> httpx.Response:
    """A JSON request of a logged-in page."""
    return await http.post(
        path,
        content=json.dumps(body),
        headers={"Content-Type": "application/json", "X-CSRF-Token": csrf},
    )


@contextlib.asynccontextmanager
async def signed_in(
    second: Console, *names: str
) -> AsyncIterator[list[tuple[httpx.AsyncClient, str]]]:
    """One browser per name on the second console, each logged in: (client, CSRF token)."""
    transport = httpx.ASGITransport(app=build_app(second))
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for name in names:
            http = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")
            )
            out.append((http, await login(http, name)))
        yield out


def users_copy(console: ConsoleProc, tmp_path: Path) -> tuple[Path, Callable[[Console], None]]:
    """A copy of the fleet's users file (with its seal) that a test may break, and the
    `second_console` preparation that makes the second console read it (the shared
    console's file stays whole)."""
    users = console.fleet.state / "console-users.toml"
    copy = tmp_path / "users" / users.name
    copy.parent.mkdir()
    for path in (users, users.with_name(users.name + SEAL_SUFFIX)):
        shutil.copy2(path, copy.parent / path.name)

    def reading(second: Console) -> None:
        second.users = UserStore(copy)

    return copy, reading


def short_ramp(second: Console) -> None:
    """A `second_console` preparation: a ramp of two one-second stages (10%, then full), so
    an approved resume's ramp ends "done" within the test and leaves the shared fleet's
    nodes at full limits (a tripped ramp holds them at its stage's)."""
    second.settings.plan = RampPlan.instant([0.1, 1.0], 1.0)


class Hands:
    """A clock in seconds, moved by the test, never by waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def second_console(
    console: ConsoleProc, tmp_path: Path, prepare: Callable[[Console], None] | None = None
) -> AsyncIterator[Console]:
    """Open and start the second console (`prepare` changes it first); stop it after."""
    fleet = console.fleet
    settings = ConsoleSettings(
        urls=[fleet.url],
        users=fleet.state / "console-users.toml",
        audit=tmp_path / "audit.jsonl",
        recorders=tmp_path,
        kill_timeout_s=KILL_TIMEOUT_S,
    )
    trust = TrustStore(load_anchor(fleet.state / "trust" / "anchor.toml"))
    second = await open_console(
        settings, load_signer(fleet.key("console")), trust, UserStore(settings.users)
    )
    if prepare is not None:
        prepare(second)
    await second.start()
    try:
        yield second
    finally:
        await second.stop()
        await second.plane.close()
