"""One person's logins in a loop do not open connections without end.

Every session holds the person's unlocked key and a connection to the control plane
of its own (a viewer's too). Nothing bounded them: a viewer logging in over and over
made the console open one more connection per login until its file descriptors, or
the server's connection limit, ran out, and other people's logins and token kills
failed. A person keeps at most `SESSIONS_PER_USER`; a login past it ends their oldest.
A second console runs in this process on the shared fleet (`tests/console/second.py`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest

from knightwatch.console.app import build_app
from knightwatch.console.local import PASSWORD, ConsoleProc
from knightwatch.console.sessions import Sessions

from .second import Hands, second_console

pytestmark = pytest.mark.asyncio(loop_scope="session")

SESSIONS_PER_USER = 20
"""`knightwatch.console.app.SESSIONS_PER_USER`, as documented."""


async def test_a_person_keeps_a_bounded_number_of_sessions_and_connections(
    console: ConsoleProc, tmp_path: Path
) -> None:
    hands = Hands()
    async with second_console(
        console, tmp_path, lambda c: setattr(c, "sessions", Sessions(clock=hands))
    ) as second:
        transport = httpx.ASGITransport(app=build_app(second))
        async with contextlib.AsyncExitStack() as stack:
            browsers = []
            for _ in range(SESSIONS_PER_USER + 5):
                hands.now += 1
                http = await stack.enter_async_context(
                    httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")
                )
                answer = await http.post("/login", data={"name": "carol", "password": PASSWORD})
                assert answer.status_code == 303, answer.text
                browsers.append(http)
            assert second.sessions.count() == SESSIONS_PER_USER
            assert len(second.links) == SESSIONS_PER_USER  # before: one connection per login
            for old in browsers[:5]:  # the oldest ended, with their connections
                assert (await old.get("/api/snapshot")).status_code == 401
            for kept in browsers[5:]:
                assert (await kept.get("/api/whoami")).json()["name"] == "carol"
