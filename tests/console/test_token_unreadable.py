"""A token still stops the fleet while the users file cannot be read; it does nothing more.

A token is checked against the users file (its digest, its seal, its wrapped key). While
the file could not be read (a bad chmod, a half-copied file) every token was refused with
a 503, a kill included: a script holding a good token could not stop the fleet, while a
logged-in session could. Now a token is judged against the last copy of the file the
console read: one that copy knows may view and kill (`STOP_OR_READ`), its record says its
standing was unchecked; anything else is a 503 naming the file. A token that copy knew as
revoked stays refused; one it never saw (issued since) is a 503 naming the file, never
"unknown, expired or revoked".

A second console runs in this process on the shared fleet (`second.py`), reading its own
copy of the users file, which the test breaks.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from knightwatch.console.app import UNCHECKED, build_app
from knightwatch.console.audit import Query, search
from knightwatch.console.local import PASSWORD, ConsoleProc
from knightwatch.console.users import UserStore

from .second import second_console, users_copy
from .test_api import kill_body

KEY = "token-unreadable"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_a_token_kills_and_reads_on_the_last_good_users_file_and_nothing_more(
    console: ConsoleProc, tmp_path: Path
) -> None:
    copy, own_users = users_copy(console, tmp_path)
    store = UserStore(copy)  # the CLI's view of the same file
    secret, _ = store.issue_token("alice", PASSWORD, ["operator"], 600, now_ns=time.time_ns())
    gone, revoked = store.issue_token("alice", PASSWORD, ["operator"], 600, now_ns=time.time_ns())
    store.revoke_token("alice", revoked.id, time.time_ns())

    async with (
        second_console(console, tmp_path, own_users) as second,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=build_app(second)), base_url="http://127.0.0.1"
        ) as http,
    ):
        # the console reads the file once: its last good copy knows `secret` and `gone`
        assert (await http.get("/api/whoami", headers=bearer(secret))).status_code == 200
        later, _ = store.issue_token("alice", PASSWORD, ["operator"], 600, now_ns=time.time_ns())
        copy.chmod(0o644)  # the users file can no longer be read (it says why)

        kill = await http.post("/api/kill", json=kill_body(KEY), headers=bearer(secret))
        assert kill.status_code == 200 and kill.json()["ok"], kill.text
        assert (await http.get("/api/snapshot", headers=bearer(secret))).status_code == 200
        may = (await http.get("/api/whoami", headers=bearer(secret))).json()["may"]
        assert "kill" in may and "request_resume" not in may, may

        ask = await http.post(
            "/api/resume/request",
            json={"scope": "strategy", "key": KEY, "reason": "r"},
            headers=bearer(secret),
        )
        assert ask.status_code == 503, ask.text
        error = ask.json()["error"]
        assert error.startswith("users file: request_resume refused while alice's standing "
                                "cannot be checked ("), error  # fmt: skip
        assert "permissions 0644" in error and error.endswith("; kills still work"), error

        refused = await http.post("/api/kill", json=kill_body(KEY), headers=bearer(gone))
        assert refused.status_code == 401, refused.text  # revoked in the last good copy

        unseen = await http.post("/api/kill", json=kill_body(KEY), headers=bearer(later))
        assert unseen.status_code == 503, unseen.text  # issued since: it may be good
        error = unseen.json()["error"]
        assert error.startswith("users file: cannot be read ("), error
        assert "permissions 0644" in error and "not in the last copy" in error, error

        copy.chmod(0o600)  # readable again: every good token works in full
        assert (await http.get("/api/whoami", headers=bearer(later))).status_code == 200

        await second.audit.settled()  # the kill is on the record, standing unchecked
        kills = search(tmp_path / "audit.jsonl", Query(action="kill", limit=100)).records
        standing = [(r.data["status"], r.data["via"], r.data["detail"].startswith(UNCHECKED),
                     "permissions 0644" in r.data["unchecked"]) for r in kills]  # fmt: skip
        assert (200, "token", True, True) in standing, standing
