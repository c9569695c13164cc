"""A page left open idles out: what the page fetches by itself does not keep its session.

The fleet page polls `/api/alerts/acks` every 5 s on its own; that poll restarted the
session's idle clock, so an unattended page kept its session (and the unlocked key in it)
until the absolute limit, 12 hours, though the live stream was careful not to. A second
console runs in this process on the shared fleet (`tests/console/second.py`: the real
app over ASGI) with a session table on a clock the test moves.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from knightwatch.console.app import Console, build_app
from knightwatch.console.local import PASSWORD, ConsoleProc
from knightwatch.console.sessions import Sessions

from .second import Hands, second_console

IDLE_S = 60.0


@pytest_asyncio.fixture
async def local(console: ConsoleProc, tmp_path: Path) -> AsyncIterator[tuple[Console, Hands]]:
    hands = Hands()

    def moved_by_the_test(second: Console) -> None:
        second.sessions = Sessions(idle_s=IDLE_S, absolute_s=3600.0, clock=hands)

    async with second_console(console, tmp_path, moved_by_the_test) as second:
        yield second, hands


@contextlib.asynccontextmanager
async def _logged_in(console: Console) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(console))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        answer = await http.post("/login", data={"name": "carol", "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        yield http


async def test_the_pages_own_poll_does_not_keep_an_unattended_session(
    local: tuple[Console, Hands],
) -> None:
    console, hands = local
    async with _logged_in(console) as http:
        hands.now += IDLE_S * 0.8
        assert (await http.get("/api/alerts/acks")).status_code == 200  # the page's timer
        hands.now += IDLE_S * 0.3  # idle since the login for 1.1 idle periods
        assert (await http.get("/api/snapshot")).status_code == 401


async def test_a_persons_own_request_keeps_the_session(local: tuple[Console, Hands]) -> None:
    console, hands = local
    async with _logged_in(console) as http:
        hands.now += IDLE_S * 0.8
        assert (await http.get("/api/whoami")).status_code == 200
        hands.now += IDLE_S * 0.3
        assert (await http.get("/api/snapshot")).status_code == 200


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/kill", {"X-CSRF-Token": "not-the-token"}),
        ("/api/kill", {"Sec-Fetch-Site": "cross-site"}),
        ("/api/resume/approve", {"Origin": "http://evil.example"}),
        ("/logout", {"X-CSRF-Token": "not-the-token"}),
    ],
)
async def test_a_refused_request_does_not_keep_the_session(
    local: tuple[Console, Hands], path: str, headers: dict[str, str]
) -> None:
    """A request refused for its CSRF token or its origin (a forged form another site's
    page posts every few minutes) restarted the idle clock before it was refused, so an
    unattended session, and the key unlocked in it, never idled out."""
    console, hands = local
    async with _logged_in(console) as http:
        hands.now += IDLE_S * 0.8
        answer = await http.post(
            path, content=b"{}", headers={"Content-Type": "application/json", **headers}
        )
        assert answer.status_code == 403, answer.text
        hands.now += IDLE_S * 0.3  # idle since the login for 1.1 idle periods
        assert (await http.get("/api/snapshot")).status_code == 401
