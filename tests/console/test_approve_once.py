"""Two approvals of one resume request, sent at once or while its ramp runs: one applies.

The approver's page (or two of their browsers, or a script and a page) can send the same
approval twice. Each ran its own preflight and ramp: the first issued the resume, the
second found the halt changed and closed the request as STALE and wrote its ramp record as
"tripped: resume not issued" over the running one, while the strategy traded again. The
page then showed a resume that was applied as one that never happened. Now the console
approves one request at a time, to its ramp's end: the other is a 409 naming the request,
nothing recorded as stale, the ramp left running.

A second console runs in this process on the shared fleet (`second.py`: the real app over
ASGI) with a ramp of two one-second stages, so the ramp ends "done" and the shared fleet's
later tests find its nodes at full limits (a ramp tripped instead holds every node at its
stage's 10% limits, and the fleet's own flow then trips the supervisor's reject rule).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from knightwatch.console.local import PASSWORD, ConsoleProc

from .second import post, second_console, short_ramp, signed_in
from .test_api import kill_body

KEY = "approve-once"


async def test_two_approvals_of_one_request_apply_it_once_and_leave_its_record_true(
    console: ConsoleProc, tmp_path: Path
) -> None:
    async with (
        second_console(console, tmp_path, short_ramp) as second,
        signed_in(second, "alice", "bob", "bob") as [(a, a_csrf), (b1, c1), (b2, c2)],
    ):
        kill = await post(a, a_csrf, "/api/kill", kill_body(KEY))
        assert kill.status_code == 200 and kill.json()["ok"], kill.text
        ask = await post(
            a, a_csrf, "/api/resume/request", {"scope": "strategy", "key": KEY, "reason": "ok"}
        )
        assert ask.status_code == 200, ask.text
        request_id = ask.json()["request_id"]
        rows = (await b1.get("/api/snapshot")).json()["requests"]
        row = next(r for r in rows if r["id"] == request_id)
        body = {"request_id": request_id, "scope": row["scope"], "key": row["key"],
                "digest": row["digest"], "password": PASSWORD, "reason": "ok"}  # fmt: skip
        answers: list[httpx.Response] = list(
            await asyncio.gather(
                post(b1, c1, "/api/resume/approve", body),
                post(b2, c2, "/api/resume/approve", body),
            )
        )
        statuses = sorted(x.status_code for x in answers)
        assert statuses == [200, 409], [x.text[:300] for x in answers]
        refused = next(x for x in answers if x.status_code == 409).json()["error"]
        assert refused.startswith(f"request_id: {request_id} is being approved by bob"), refused
        # and again while its ramp runs: the same answer, nothing closed as stale
        again = await post(b2, c2, "/api/resume/approve", body)
        assert again.status_code == 409 and "being approved" in again.json()["error"], again.text
        snapshot = (await a.get("/api/snapshot")).json()
        row = next(r for r in snapshot["requests"] if r["id"] == request_id)
        assert row["status"] != "stale", row
        ramp = next(r for r in snapshot["ramps"] if r["ramp_id"] == request_id)
        assert ramp["status"] == "ramping" and not ramp["trip_reason"], ramp
        halt = next(h for h in snapshot["halts"] if h["key"] == KEY)
        assert halt["state"] == "ACTIVE" and halt["approvers"] == ["bob"], halt
        tasks = [t for t in second.tasks if t.get_name() == f"approve-{request_id}"]
        assert len(tasks) == 1, [t.get_name() for t in second.tasks]
        await asyncio.wait(tasks, timeout=60)
        assert all(t.done() for t in tasks), "the ramp did not end"
        ramps = (await a.get("/api/snapshot")).json()["ramps"]
        done = next(r for r in ramps if r["ramp_id"] == request_id)
        assert done["status"] == "done", done  # the shared fleet is at full limits again
