"""An approved resume's ramp is the console's own task, on a connection of its own.

The ramp runs for minutes after the approval's answer: it stores each stage and watches
the nodes for a block-rate spike. It ran on the approver's session connection, so the
approver's logout (or an idle-out) closed it under the ramp: the console stopped watching
for spikes, and the ramp's record stayed "ramping" for good. A second console runs in this
process on the shared fleet (`tests/console/second.py`: the real app over ASGI) with a
ramp of two one-second stages (10%, then full); the approver logs out as soon as the
approval is answered, and the ramp still walks its stages to "done".
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from knightwatch.console.local import PASSWORD, ConsoleProc
from knightwatch.control.plane.wire import slot_of
from knightwatch.state import Scope

from .second import post, second_console, short_ramp, signed_in
from .test_api import kill_body

KEY = "console-ramp-logout"


async def test_the_approvers_logout_does_not_end_the_ramp(
    console: ConsoleProc, tmp_path: Path
) -> None:
    async with (
        second_console(console, tmp_path, short_ramp) as second,
        signed_in(second, "alice", "bob") as [(a, a_csrf), (b, b_csrf)],
    ):
        kill = await post(a, a_csrf, "/api/kill", kill_body(KEY))
        assert kill.status_code == 200 and kill.json()["ok"], kill.text
        ask = await post(
            a, a_csrf, "/api/resume/request", {"scope": "strategy", "key": KEY, "reason": "ok"}
        )
        assert ask.status_code == 200, ask.text
        request_id = ask.json()["request_id"]
        rows = (await b.get("/api/snapshot")).json()["requests"]
        row = next(r for r in rows if r["id"] == request_id)
        shown = {"request_id": request_id, "scope": row["scope"], "key": row["key"],
                 "digest": row["digest"]}  # fmt: skip
        approve = await post(
            b, b_csrf, "/api/resume/approve",
            {**shown, "password": PASSWORD, "reason": "looked at it"},
        )  # fmt: skip
        assert approve.status_code == 200, approve.text
        assert approve.json()["ramp"] == "started", approve.text
        out = await b.post("/logout", headers={"X-CSRF-Token": b_csrf})
        assert out.status_code == 303, out.text
        assert (await b.get("/api/whoami")).status_code == 401  # bob's session is over
        ramp = [t for t in second.tasks if t.get_name() == f"approve-{request_id}"]
        assert ramp, "the ramp is no task of the console's"
        await asyncio.wait(ramp, timeout=60)
        assert all(t.done() for t in ramp), "the ramp did not end"
        snapshot = (await a.get("/api/snapshot")).json()
        ramps = {r["slot"]: r for r in snapshot["ramps"]}
        slot = slot_of(Scope.STRATEGY, KEY)
        assert ramps[slot]["status"] == "done", ramps[slot]
        halts = {(h["scope"], h["key"]): h for h in snapshot["halts"]}
        assert halts["strategy", KEY]["state"] == "ACTIVE", halts["strategy", KEY]
