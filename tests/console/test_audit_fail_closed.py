"""A console whose record cannot be written refuses to lift a kill, and still kills.

A second console runs in this process on the shared fleet (`tests/console/second.py`:
its own audit, served through the real app over ASGI) with its recorder writing to a
`MemorySink` that is full from its first line: the recorder's own stand-in for
a full disk. Resume requests and approvals answer 503 naming the audit; a kill
goes through and every node confirms it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from pathlib import Path

import httpx

from knightwatch.audit.sink import MemorySink
from knightwatch.console.app import Console, build_app
from knightwatch.console.audit import ConsoleAudit
from knightwatch.console.local import PASSWORD, ConsoleProc

from .second import second_console
from .test_api import Person, kill_body, shown


async def _login(http: httpx.AsyncClient, name: str) -> str:
    answer = await http.post("/login", data={"name": name, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    page = (await http.get("/")).text
    return page.split('data-csrf="', 1)[1].split('"', 1)[0]


async def test_an_unwritable_record_refuses_resumes_and_never_a_kill(
    console: ConsoleProc, tmp_path: Path
) -> None:
    alice = Person(console, "alice")  # on the shared console, whose record works
    assert alice.post("/api/kill", kill_body("api-audit-full")).json()["ok"]
    made = alice.post(
        "/api/resume/request", {"scope": "strategy", "key": "api-audit-full", "reason": "ok"}
    )
    assert made.status_code == 200, made.text
    request_id = made.json()["request_id"]

    def full_disk(second: Console) -> None:
        second.audit.close()
        audit = second.settings.audit
        second.audit = ConsoleAudit(audit, second.clock, sink=MemorySink(capacity=1))

    async with second_console(console, tmp_path, full_disk) as second:
        transport = httpx.ASGITransport(app=build_app(second))
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as a,
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as b,
        ):
            a_csrf, b_csrf = await _login(a, "alice"), await _login(b, "bob")
            assert not second.audit.healthy

            def post(
                http: httpx.AsyncClient, csrf: str, path: str, body: object
            ) -> Awaitable[httpx.Response]:
                return http.post(
                    path,
                    content=json.dumps(body),
                    headers={"Content-Type": "application/json", "X-CSRF-Token": csrf},
                )

            kill = await post(a, a_csrf, "/api/kill", kill_body("api-audit-full-2"))
            assert kill.status_code == 200 and kill.json()["ok"], kill.text
            ask = await post(
                a, a_csrf, "/api/resume/request",
                {"scope": "strategy", "key": "api-audit-full-2", "reason": "fixed"},
            )  # fmt: skip
            assert ask.status_code == 503 and ask.json()["error"].startswith("audit:"), ask.text
            body = {**shown(alice, request_id), "password": PASSWORD, "reason": "fine"}
            approve = await post(b, b_csrf, "/api/resume/approve", body)
            assert approve.status_code == 503, approve.text
            assert approve.json()["error"].startswith("audit:"), approve.text
    halts = {(h["scope"], h["key"]): h for h in alice.http.get("/api/snapshot").json()["halts"]}
    assert halts["strategy", "api-audit-full"]["state"] == "HALTED"
    alice.http.close()
