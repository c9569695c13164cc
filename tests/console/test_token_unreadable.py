"""A token used while the users file cannot be read is told so, never "not logged in".

A token is checked against the users file (its digest, its seal, its wrapped key), so
while the file cannot be read (a bad chmod, a half-copied file) no token can be used. The
answer said otherwise: a 401 "not logged in (or the token is unknown, expired or
revoked)", so the script sending a kill with a good token was told its token was gone,
and whoever read it went looking for a revocation instead of the file. Now it is a 503
naming the users file and why it cannot be read, and what still stops the fleet.

A second console runs in this process on the shared fleet (`second.py`), reading its own
copy of the users file, which the test breaks.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx

from knightwatch.console.app import Console, build_app
from knightwatch.console.audit import Query, search
from knightwatch.console.local import PASSWORD, ConsoleProc
from knightwatch.console.users import SEAL_SUFFIX, UserStore

from .second import second_console
from .test_api import kill_body

KEY = "token-unreadable"


async def test_a_token_used_while_the_users_file_cannot_be_read_is_told_why(
    console: ConsoleProc, tmp_path: Path
) -> None:
    users = console.fleet.state / "console-users.toml"
    copy = tmp_path / "users" / users.name
    copy.parent.mkdir()
    for path in (users, users.with_name(users.name + SEAL_SUFFIX)):
        shutil.copy2(path, copy.parent / path.name)
    secret, _ = UserStore(copy).issue_token(
        "alice", PASSWORD, ["operator"], 600, now_ns=time.time_ns()
    )

    def own_users(second: Console) -> None:
        second.users = UserStore(copy)

    async with (
        second_console(console, tmp_path, own_users) as second,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=build_app(second)),
            base_url="http://127.0.0.1",
            headers={"Authorization": f"Bearer {secret}"},
        ) as http,
    ):
        assert (await http.get("/api/whoami")).json()["name"] == "alice"
        copy.chmod(0o644)  # the users file can no longer be read (it says why)
        for answer in (
            await http.post("/api/kill", json=kill_body(KEY)),
            await http.get("/api/snapshot"),
            await http.get("/api/events"),
        ):
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error.startswith("users file: tokens are refused while it cannot be read ("), (
                error
            )
            assert "permissions 0644" in error and "not logged in" not in error, error
            assert error.endswith("a logged-in session's kill and the CLI's still work"), error
        copy.chmod(0o600)  # readable again: the token works again
        assert (await http.get("/api/whoami")).status_code == 200
        await second.audit.settled()  # the refusals are on the record, as said
        found = search(tmp_path / "audit.jsonl", Query(actor="-", limit=100))
        refused = [r.data for r in found.records if "tokens are refused" in r.data["detail"]]
        assert [(r["status"], r["result"]) for r in refused] == [(503, "error")] * 3, refused
