"""A console whose record cannot be written refuses to lift a kill, and still kills.

A second console runs in this process on the shared fleet (`tests/console/second.py`:
its own audit, served through the real app over ASGI) with its recorder writing to a
`MemorySink` that is full from its first line: the recorder's own stand-in for
a full disk. Resume requests and approvals answer 503 naming the audit; a kill
goes through and every node confirms it.
"""

from __future__ import annotations

from pathlib import Path

from knightwatch.audit.sink import MemorySink
from knightwatch.console.app import Console
from knightwatch.console.audit import ConsoleAudit
from knightwatch.console.local import PASSWORD, ConsoleProc

from .second import post, second_console, signed_in
from .test_api import Person, kill_body, shown


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

    async with (
        second_console(console, tmp_path, full_disk) as second,
        signed_in(second, "alice", "bob") as [(a, a_csrf), (b, b_csrf)],
    ):
        assert not second.audit.healthy
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
