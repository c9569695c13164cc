"""The login throttle over HTTP against the real app: a success forgives only its own name.

A success cleared its whole address's count, so anyone with an account of their own (here
carol, a viewer) logged in between guesses and sprayed passwords over every other name from
one address, each time with fresh free tries: never slowed by the address. And one name
hammered from a shared address (a proxy, a floor's NAT) made everyone there wait as long as
that name. A second console runs in this process on the shared fleet (`second.py`), its
throttle on a clock the test moves, so no test waits for a backoff.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest_asyncio

from knightwatch.console.app import Console, build_app
from knightwatch.console.local import PASSWORD, ConsoleProc
from knightwatch.console.sessions import LoginThrottle

from .second import Hands, login, post, second_console


@pytest_asyncio.fixture
async def local(console: ConsoleProc, tmp_path: Path) -> AsyncIterator[tuple[Console, Hands]]:
    hands = Hands()

    def moved_by_the_test(second: Console) -> None:
        second.throttle = LoginThrottle(clock=hands)

    async with second_console(console, tmp_path, moved_by_the_test) as second:
        yield second, hands


async def _try(transport: httpx.ASGITransport, name: str, password: str) -> int:
    """One login from a fresh browser (no device cookie) at the transport's one address."""
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        answer = await http.post("/login", data={"name": name, "password": password})
        return answer.status_code


async def test_an_insider_logging_in_between_guesses_is_still_slowed_by_the_address(
    local: tuple[Console, Hands],
) -> None:
    second, _ = local
    transport = httpx.ASGITransport(app=build_app(second))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as alice:
        csrf = await login(alice, "alice")  # logged in before the spray began
        guesses: list[int] = []
        for target in ("alice", "bob", "dave", "erin", "frank", "grace"):
            guesses.append(await _try(transport, target, "a guess!"))
            await _try(transport, "carol", PASSWORD)  # the insider's own login
        # before: six 401s, every one verified (carol's success cleared the address)
        assert guesses.count(401) == second.throttle.free + 1 and 429 in guesses, guesses
        kill = await post(
            alice, csrf, "/api/kill",
            {"scope": "strategy", "key": "co8-spray", "reason": "x", "confirm": "co8-spray"},
        )  # fmt: skip
        assert kill.status_code == 200 and kill.json()["ok"], kill.text  # never behind it


async def test_one_name_hammered_costs_others_at_its_address_only_the_first_wait(
    local: tuple[Console, Hands],
) -> None:
    second, hands = local
    transport = httpx.ASGITransport(app=build_app(second))
    t = second.throttle
    for _ in range(8):  # someone fails under alice's name from the floor's one address
        hands.now += max(t.wait_s("alice", "127.0.0.1"), 0.0)
        assert await _try(transport, "alice", "not her password") == 401
    assert t.wait_s("alice", "127.0.0.1") == 16.0  # her name is slowed, as it must be
    hands.now += t.delay_after(t.free + 1)
    assert await _try(transport, "bob", PASSWORD) == 303  # before: 429, 15.5 s to go
    hands.now += t.forget_s
    assert await _try(transport, "carol", PASSWORD) == 303
    assert t.wait_s("dave", "127.0.0.1") == 0.0  # forgotten with time, not by bob's success
