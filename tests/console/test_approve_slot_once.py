"""Two resume requests of one halt, approved at once: one resume, and its ramp's record true.

Two operators who each see a strategy halted may each request its resume: two pending
requests of one slot, decided on the same revision. Approved at once (one approver each),
both ran a preflight and a ramp: both stored their stage one in the slot's one ramp record,
the first issued its resume, and the second, finding the slot changed, wrote its ramp
record "tripped: resume not issued" over the running ramp's. The strategy traded again
while the console (and `status`) showed the slot's ramp as tripped and never resumed, until
the running ramp's next stage (minutes, by the default plan). The console already approved
one request at a time; it now approves one request of a slot at a time: the other is a 409
naming the slot and the request being applied, with no preflight, ramp or record of its own.

A second console runs in this process on the shared fleet (`second.py`) with a ramp of two
one-second stages, so the ramp ends "done" and the fleet's later tests find full limits.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from knightwatch.console.local import PASSWORD, ConsoleProc

from .second import post, second_console, short_ramp, signed_in
from .test_api import kill_body

KEY = "approve-slot-once"


async def test_two_requests_of_one_halt_approved_at_once_resume_it_once_and_keep_its_ramp(
    console: ConsoleProc, tmp_path: Path
) -> None:
    async with (
        second_console(console, tmp_path, short_ramp) as second,
        signed_in(second, "alice", "bob") as [(a, a_csrf), (b, b_csrf)],
    ):
        kill = await post(a, a_csrf, "/api/kill", kill_body(KEY))
        assert kill.status_code == 200 and kill.json()["ok"], kill.text
        ids = []
        for http, csrf, why in ((a, a_csrf, "alice's"), (b, b_csrf, "bob's")):
            ask = await post(
                http, csrf, "/api/resume/request", {"scope": "strategy", "key": KEY, "reason": why}
            )
            assert ask.status_code == 200, ask.text
            ids.append(ask.json()["request_id"])
        rows = {r["id"]: r for r in (await a.get("/api/snapshot")).json()["requests"]}

        def approval(request_id: str) -> dict[str, Any]:
            row = rows[request_id]
            return {"request_id": request_id, "scope": row["scope"], "key": row["key"],
                    "digest": row["digest"], "password": PASSWORD, "reason": "ok"}  # fmt: skip

        # bob approves alice's request, alice bob's: two people, two requests, one slot
        answers: list[httpx.Response] = list(
            await asyncio.gather(
                post(b, b_csrf, "/api/resume/approve", approval(ids[0])),
                post(a, a_csrf, "/api/resume/approve", approval(ids[1])),
            )
        )
        assert sorted(x.status_code for x in answers) == [200, 409], [x.text[:300] for x in answers]
        won = next(i for i, x in zip(ids, answers, strict=True) if x.status_code == 200)
        lost = next(i for i, x in zip(ids, answers, strict=True) if x.status_code == 409)
        snapshot = (await a.get("/api/snapshot")).json()
        ramp = next(r for r in snapshot["ramps"] if r["slot"] == f"strategy.{KEY}")
        assert ramp["ramp_id"] == won and ramp["status"] == "ramping", ramp
        assert not ramp["trip_reason"], ramp
        refused = next(x for x in answers if x.status_code == 409).json()["error"]
        assert refused.startswith(f"request_id: {lost}: strategy {KEY} is being resumed by "
                                  f"request {won}"), refused  # fmt: skip
        status = {r["id"]: r["status"] for r in snapshot["requests"]}
        assert status[won] == "applied" and status[lost] == "stale", status
        halt = next(h for h in snapshot["halts"] if h["key"] == KEY)
        assert halt["state"] == "ACTIVE", halt
        tasks = [t for t in second.tasks if t.get_name().startswith("approve-")]
        assert [t.get_name() for t in tasks] == [f"approve-{won}"]
        await asyncio.wait(tasks, timeout=60)
        assert all(t.done() for t in tasks), "the ramp did not end"
        ramps = (await a.get("/api/snapshot")).json()["ramps"]
        done = next(r for r in ramps if r["slot"] == f"strategy.{KEY}")
        assert done["ramp_id"] == won and done["status"] == "done", done
