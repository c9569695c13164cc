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

from pathlib import Path

from knightwatch.console.local import ConsoleProc
from knightwatch.console.users import UserStore

from .second import post, second_console, signed_in, users_copy
from .test_api import kill_body

KEY = "users-unreadable"


async def test_a_session_whose_users_file_breaks_keeps_the_stop_direction_only(
    console: ConsoleProc, tmp_path: Path
) -> None:
    copy, own_users = users_copy(console, tmp_path)

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
        page = (await http.get("/")).text  # the page offers what the session may do, no more
        for offered in ('data-can-kill="1"', 'data-can-request="0"', 'data-can-ack="0"'):
            assert offered in page, page[:600]
        kill = await post(http, csrf, "/api/kill", kill_body(KEY))
        assert kill.status_code == 200 and kill.json()["ok"], kill.text


async def test_a_session_disabled_before_the_users_file_broke_ends_all_the_same(
    console: ConsoleProc, tmp_path: Path
) -> None:
    """The console read alice's disable (on bob's request) before the file broke, but no
    request of hers came between: her session went on viewing the fleet and killing on the
    broken file as if she were still let in. It is judged against the last copy read."""
    copy, own_users = users_copy(console, tmp_path)

    async with (
        second_console(console, tmp_path, own_users) as second,
        signed_in(second, "alice", "bob") as [(alice, csrf), (bob, _)],
    ):
        UserStore(copy).disable("alice")  # `console user disable alice`
        assert (await bob.get("/api/snapshot")).status_code == 200  # the console reads it
        copy.chmod(0o644)  # then the users file can no longer be read
        assert (await alice.get("/api/snapshot")).status_code == 401
        kill = await post(alice, csrf, "/api/kill", kill_body(KEY))
        assert kill.status_code == 401, kill.text
        assert (await bob.get("/api/snapshot")).status_code == 200  # bob's session stands
