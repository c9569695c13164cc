"""A users file that becomes unreadable while people are logged in: kills and reading go on,
the risk-adding direction and acknowledgements stop until it can be read.

The console keeps a logged-in session standing when its users file cannot be read, so that
a broken file never keeps anyone from stopping the fleet. It stood for everything: a
disable or password reset written just before the file broke (a bad chmod, a half-copied
file) was unknown to the console, and the person went on requesting resumes and marking
automatic halts as handled. Now such a session may view, kill, drain, set safe defaults
and abort rollouts; anything else is a 503 naming the users file.

A second console runs in this process on the shared fleet (`second.py`), reading its own
copy of the users file, which the test breaks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from knightwatch.console.app import Console
from knightwatch.console.local import ConsoleProc
from knightwatch.console.users import SEAL_SUFFIX, UserStore

from .second import post, second_console, signed_in
from .test_api import kill_body

KEY = "users-unreadable"


async def test_a_session_whose_users_file_breaks_keeps_the_stop_direction_only(
    console: ConsoleProc, tmp_path: Path
) -> None:
    users = console.fleet.state / "console-users.toml"
    copy = tmp_path / "users" / users.name
    copy.parent.mkdir()
    for path in (users, users.with_name(users.name + SEAL_SUFFIX)):
        shutil.copy2(path, copy.parent / path.name)

    def own_users(second: Console) -> None:
        second.users = UserStore(copy)

    async with (
        second_console(console, tmp_path, own_users) as second,
        signed_in(second, "alice") as [(http, csrf)],
    ):
        copy.chmod(0o644)  # the users file can no longer be read (it says why)
        ask = await post(
            http, csrf, "/api/resume/request", {"scope": "strategy", "key": KEY, "reason": "r"}
        )
        assert ask.status_code == 503, ask.text
        error = ask.json()["error"]
        assert error.startswith("users file: request_resume refused while alice's standing "
                                "cannot be checked ("), error  # fmt: skip
        assert "permissions 0644" in error and error.endswith("; kills still work"), error
        ack = await post(http, csrf, "/api/alerts/ack", {"slot": f"strategy.{KEY}",
                                                         "revision": 1, "note": "n"})  # fmt: skip
        assert ack.status_code == 503 and "ack_alert refused" in ack.text, ack.text
        assert (await http.get("/api/snapshot")).status_code == 200
        may = (await http.get("/api/whoami")).json()["may"]
        assert "kill" in may and "request_resume" not in may and "ack_alert" not in may, may
        kill = await post(http, csrf, "/api/kill", kill_body(KEY))
        assert kill.status_code == 200 and kill.json()["ok"], kill.text
