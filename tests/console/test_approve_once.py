"""Two approvals of one resume request, sent at once or while its ramp runs: one applies.

The approver's page (or two of their browsers, or a script and a page) can send the same
approval twice. Each ran its own preflight and ramp: the first issued the resume, the
second found the halt changed and closed the request as STALE and wrote its ramp record as
"tripped: resume not issued" over the running one, while the strategy traded again. The
page then showed a resume that was applied as one that never happened. Now the console
approves one request at a time, to its ramp's end: the other is a 409 naming the request,
nothing recorded as stale, the ramp left running. Against the real console process.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from knightwatch.console.local import PASSWORD, ConsoleProc

from .test_api import Person, alice, kill_body, shown  # noqa: F401  (alice: the fixture)


async def _approve(console: ConsoleProc, person: Person, body: str) -> httpx.Response:
    async with httpx.AsyncClient(
        base_url=console.url, cookies=person.http.cookies, timeout=60
    ) as http:
        return await http.post(
            "/api/resume/approve",
            content=body,
            headers={"Content-Type": "application/json", "X-CSRF-Token": person.csrf},
        )


async def _at_once(console: ConsoleProc, people: list[Person], body: str) -> list[httpx.Response]:
    return list(await asyncio.gather(*(_approve(console, p, body) for p in people)))


def test_two_approvals_of_one_request_apply_it_once_and_leave_its_record_true(
    console: ConsoleProc,
    alice: Person,  # noqa: F811
) -> None:
    key = "approve-once"
    assert alice.post("/api/kill", kill_body(key)).json()["ok"]
    made = alice.post("/api/resume/request", {"scope": "strategy", "key": key, "reason": "fixed"})
    assert made.status_code == 200, made.text
    request_id = made.json()["request_id"]
    first, second = Person(console, "bob"), Person(console, "bob")  # two browsers of bob's
    try:
        body = json.dumps({**shown(first, request_id), "password": PASSWORD, "reason": "ok"})
        answers = asyncio.run(_at_once(console, [first, second], body))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 409], [a.text[:300] for a in answers]
        refused = next(a for a in answers if a.status_code == 409).json()["error"]
        assert refused.startswith(f"request_id: {request_id} is being approved by bob"), refused
        # and again while its ramp runs: the same answer, nothing closed as stale
        again = asyncio.run(_approve(console, second, body))
        assert again.status_code == 409 and "being approved" in again.json()["error"], again.text
        snapshot = alice.http.get("/api/snapshot").json()
    finally:
        first.http.close()
        second.http.close()
    row = next(r for r in snapshot["requests"] if r["id"] == request_id)
    assert row["status"] != "stale", row
    ramp = next(r for r in snapshot["ramps"] if r["ramp_id"] == request_id)
    assert ramp["status"] == "ramping" and not ramp["trip_reason"], ramp
    halt = next(h for h in snapshot["halts"] if h["key"] == key)
    assert halt["state"] == "ACTIVE" and halt["approvers"] == ["bob"], halt
    # the shared fleet's later tests need no ramp running: a kill in its scope trips it
    assert alice.post("/api/kill", kill_body(key)).json()["ok"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ramps = alice.http.get("/api/snapshot").json()["ramps"]
        if next(r for r in ramps if r["ramp_id"] == request_id)["status"] != "ramping":
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the ramp of {request_id} was not tripped by a kill")
