"""An approval whose resume write the store does not answer says the ramp tripped, and why.

The ramp applies the approved resume with one compare-and-set write. When the store does
not answer it (a JetStream leader election), the write may have landed, so the ramp kills
the scope again and ends tripped ("it may have landed: killed again, request a new
resume"). The console dropped that outcome: the approver read `409 the approval ended
before a resume`, with nothing saying the scope was killed again, whether that kill was
confirmed, or that a new resume must be requested.

A second console runs in this process on the shared fleet (`second.py`); its ramp's own
connection (opened for the approval) answers the resume's write with
`ControlPlaneUnavailable`, as `tests/incident/test_ramp_resume_unanswered.py` does for the
ramp alone. The write is not made: the strategy stays halted (killed again by the trip).
"""

from __future__ import annotations

from pathlib import Path

from knightwatch.console.app import Console, PersonLink
from knightwatch.console.local import PASSWORD, ConsoleProc
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.plane.wire import StateEntry
from knightwatch.state import TradingState
from knightwatch.trust.identity import Signer

from .second import post, second_console, short_ramp, signed_in
from .test_api import kill_body

KEY = "approve-unanswered"


def unanswered_resume(second: Console) -> None:
    """A ramp's connection whose store never answers a resume's write (others pass)."""
    short_ramp(second)
    real_link = second._link

    async def link(signer: Signer, tag: str) -> PersonLink:
        made = await real_link(signer, tag)
        if "-ramp-" not in tag:
            return made
        real_put = made.plane.put_state

        async def put_state(entry: StateEntry, expected_revision: int | None = None) -> int:
            if entry.state is TradingState.ACTIVE:
                raise ControlPlaneUnavailable("put: timeout (leader election)")
            return await real_put(entry, expected_revision)

        made.plane.put_state = put_state  # type: ignore[method-assign]
        return made

    second._link = link  # type: ignore[method-assign]


async def test_an_unanswered_resume_write_is_answered_with_the_trip(
    console: ConsoleProc, tmp_path: Path
) -> None:
    async with (
        second_console(console, tmp_path, unanswered_resume) as second,
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
        body = {"request_id": request_id, "scope": row["scope"], "key": row["key"],
                "digest": row["digest"], "password": PASSWORD, "reason": "ok"}  # fmt: skip
        answer = await post(b, b_csrf, "/api/resume/approve", body)
        assert answer.status_code == 409, answer.text
        out = answer.json()
        error = out["error"]
        assert "before a resume" not in error, error
        assert error.startswith(f"ramp {request_id} TRIPPED at stage 1"), error
        assert "did not answer the resume's write" in error, error
        assert "request a new resume" in error, error
        # and what the scope is now: the trip's kill, confirmed or not
        assert "HALTED again" in error or "kill the scope again now" in error, error
        assert out["ramp"] == "tripped" and out["trip"] is not None, out
        halts = (await b.get("/api/snapshot")).json()["halts"]
        held = [h for h in halts if h["scope"] == "strategy" and h["key"] == KEY]
        assert held and held[0]["state"] == "HALTED", held
