"""A kill stored while a resume request is being made: no request for the halt nobody saw.

The page sends the halt's revision as shown, and the console compared it with the slot
before the preflight; the request itself was then made on whatever the slot held when
the preflight ended. A kill stored in between ("runaway again, do not resume", by
another person) passed the check: the requester got a 409, yet the request stood in the
approvals bucket, pending and decided on the new kill, and an approver who approved it
lifted a halt its requester never saw. Now the request is bound to the revision shown
before it is written: decided on anything else, it is refused and nothing is stored.

Two requests race on a second console in this process (`second.py`): alice's resume
request and bob's kill, which is let in at the moment alice's check has read the slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from knightwatch.console.local import ConsoleProc
from knightwatch.control.plane.wire import StateEntry
from knightwatch.state import Scope

from .second import post, second_console, signed_in
from .test_api import kill_body

KEY = "resume-race"


async def test_a_kill_stored_during_a_resume_request_leaves_no_request_for_it(
    console: ConsoleProc, tmp_path: Path
) -> None:
    async with (
        second_console(console, tmp_path) as second,
        signed_in(second, "alice", "bob") as [(a, a_csrf), (b, b_csrf)],
    ):
        kill = await post(a, a_csrf, "/api/kill", {**kill_body(KEY), "reason": "fat finger"})
        assert kill.status_code == 200 and kill.json()["ok"], kill.text
        halts = (await a.get("/api/snapshot")).json()["halts"]
        shown = next(h for h in halts if h["key"] == KEY)["revision"]

        # alice's own connection: her check's read of the slot lets bob's kill in
        link = second.links[a.cookies["kw_session"]]
        read: Callable[[Scope, str], Awaitable[tuple[StateEntry | None, int]]]
        read = link.plane.get_state
        checked, killed = asyncio.Event(), asyncio.Event()

        async def get_state(scope: Scope, key: str) -> tuple[StateEntry | None, int]:
            out = await read(scope, key)
            if key == KEY and not checked.is_set():
                checked.set()
                await killed.wait()
            return out

        link.plane.get_state = get_state  # type: ignore[method-assign]

        async def kill_again() -> Any:
            await checked.wait()
            try:
                return await post(
                    b, b_csrf, "/api/kill", {**kill_body(KEY), "reason": "runaway again"}
                )
            finally:
                killed.set()

        asked, again = await asyncio.gather(
            post(a, a_csrf, "/api/resume/request",
                 {"scope": "strategy", "key": KEY, "reason": "fixed", "revision": shown}),
            kill_again(),
        )  # fmt: skip
        assert again.status_code == 200 and again.json()["ok"], again.text
        assert asked.status_code == 409, asked.text
        assert asked.json()["error"].startswith("revision:"), asked.text
        assert "request_id" not in asked.json(), asked.text
        snapshot = (await b.get("/api/snapshot")).json()
        pending = [r for r in snapshot["requests"] if r["key"] == KEY]
        assert pending == [], pending  # nothing an approver could lift bob's kill with
        halt = next(h for h in snapshot["halts"] if h["key"] == KEY)
        assert halt["state"] == "HALTED" and halt["revision"] > shown, halt
