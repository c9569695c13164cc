"""The console as a hostile tester sees it: forged logins, stale sessions, other people's roles.

Each test is an attack on the real console process (a plain HTTP client, the
way a script or a forged page would send it) and holds the console to
refusing it: a login from another origin without Fetch Metadata, an old
session id that a login should have rotated out, a session that outlives a
`disable` because the user was enabled again before its next request, a
viewer's hands on every state-changing API, a form post (`text/plain`, no
CSRF header) at a JSON endpoint, state changed by a GET, and the headers on
an authenticated page.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from knightwatch.console.local import PASSWORD, ConsoleProc

from .test_api import Person, from_address, kill_body, users


def test_a_login_from_another_origin_without_fetch_metadata_is_refused(
    console: ConsoleProc,
) -> None:
    """A browser without Fetch Metadata still sends `Origin` on a cross-site form post:
    the login only looked at `Sec-Fetch-Site`, so a page elsewhere could log the victim's
    browser into the attacker's account (whose kills and requests are then the attacker's
    record, not the victim's), and could spend the name's and the address's login tries."""
    Person(console, "alice").http.close()  # a success clears alice's count
    answer = httpx.post(
        console.url + "/login",
        data={"name": "alice", "password": PASSWORD},
        headers={"Origin": "http://evil.example"},
    )
    assert answer.status_code == 403, answer.text
    assert "kw_session" not in answer.cookies
    same = httpx.post(
        console.url + "/login",
        data={"name": "alice", "password": PASSWORD},
        headers={"Origin": console.url},
    )
    assert same.status_code == 303, same.text  # its own page's form still logs in


def test_a_login_ends_the_session_the_browser_held_before(console: ConsoleProc) -> None:
    """A login rotates the session id: the one the browser sent with the login ends there
    (it was left open, with the person's unlocked key, until it idled out: a session id
    known to someone else, or another person's on a shared browser, went on working)."""
    alice = Person(console, "alice")
    before = alice.http.cookies["kw_session"]
    again = alice.http.post("/login", data={"name": "bob", "password": PASSWORD})
    assert again.status_code == 303, again.text
    after = alice.http.cookies["kw_session"]
    assert after != before
    old = httpx.get(console.url + "/api/whoami", cookies={"kw_session": before})
    assert old.status_code == 401, old.text
    now = httpx.get(console.url + "/api/whoami", cookies={"kw_session": after})
    assert now.status_code == 200 and now.json()["name"] == "bob"
    alice.http.close()


def test_a_disable_ends_the_sessions_even_if_enabled_again_before_their_next_request(
    console: ConsoleProc,
) -> None:
    """`console user disable` ends the user's sessions: it was judged only at a session's
    next request, so a disable followed by an enable (the admin's "cut them off, then let
    them back in with a fresh login") before that request left a stolen session working."""
    carol = Person(console, "carol")
    assert carol.http.get("/api/whoami").status_code == 200
    store = users(console)
    store.disable("carol")
    store.enable("carol")
    assert carol.http.get("/api/whoami").status_code == 401
    fresh = Person(console, "carol")  # a new login after the enable works
    assert fresh.http.get("/api/whoami").status_code == 200
    carol.http.close()
    fresh.http.close()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/kill", kill_body("hostile-viewer")),
        ("/api/kill", {"scope": "fleet", "reason": "x", "confirm": "KILL", "drain": True}),
        ("/api/resume/request", {"scope": "strategy", "key": "hostile-viewer", "reason": "x"}),
        ("/api/flags/safe-default", {"flag": "any", "reason": "x"}),
        ("/api/rollouts/abort", {"flag": "any", "reason": "x"}),
        ("/api/alerts/ack", {"slot": "strategy.s1", "revision": 1, "note": "x"}),
    ],
)
def test_a_viewer_is_refused_every_state_change_at_the_api(
    console: ConsoleProc, path: str, body: dict[str, object]
) -> None:
    """The page hides the buttons from a viewer; the API refuses them by the same policy."""
    carol = Person(console, "carol")
    answer = carol.post(path, body)
    assert answer.status_code == 403, answer.text
    assert "needs" in answer.json()["error"]
    carol.http.close()


def test_a_viewer_cannot_approve_at_the_api(console: ConsoleProc) -> None:
    """Carol holds only the viewer role: her approval is refused before any password check."""
    alice, carol = Person(console, "alice"), Person(console, "carol")
    assert alice.post("/api/kill", kill_body("hostile-approve")).json()["ok"]
    request = alice.post(
        "/api/resume/request", {"scope": "strategy", "key": "hostile-approve", "reason": "x"}
    )
    assert request.status_code == 200, request.text
    rid = request.json()["request_id"]
    row = next(r for r in carol.http.get("/api/snapshot").json()["requests"] if r["id"] == rid)
    answer = carol.post(
        "/api/resume/approve",
        {"request_id": rid, "scope": row["scope"], "key": row["key"], "digest": row["digest"],
         "password": PASSWORD, "reason": "viewer"},
    )  # fmt: skip
    assert answer.status_code == 403, answer.text
    halts = carol.http.get("/api/snapshot").json()["halts"]
    assert any(h["key"] == "hostile-approve" and h["state"] == "HALTED" for h in halts)
    alice.http.close()
    carol.http.close()


@pytest.mark.parametrize("path", ["/api/kill", "/api/resume/request", "/logout"])
def test_a_form_post_with_text_plain_and_the_session_cookie_is_refused(
    console: ConsoleProc, path: str
) -> None:
    """What a cross-site `<form enctype="text/plain">` can send: the cookie (a browser
    without SameSite), a body that parses as JSON, no custom header, no Fetch Metadata."""
    alice = Person(console, "alice")
    body = json.dumps(kill_body("hostile-form"))[:-1] + ', "x": "="}'
    answer = alice.http.post(path, content=body, headers={"Content-Type": "text/plain"})
    assert answer.status_code == 403, answer.text
    assert alice.http.get("/api/whoami").status_code == 200  # still logged in
    halts = alice.http.get("/api/snapshot").json()["halts"]
    assert not any(h["key"] == "hostile-form" for h in halts)
    alice.http.close()


@pytest.mark.parametrize(
    "path",
    ["/logout", "/api/kill", "/api/resume/request", "/api/resume/approve",
     "/api/flags/safe-default", "/api/rollouts/abort", "/api/alerts/ack"],
)  # fmt: skip
def test_a_get_never_changes_state(console: ConsoleProc, path: str) -> None:
    alice = Person(console, "alice")
    answer = alice.http.get(path, params={"scope": "fleet", "reason": "x", "confirm": "KILL"})
    assert answer.status_code == 405, answer.text
    assert alice.http.get("/api/whoami").status_code == 200  # a GET /logout did not log out
    alice.http.close()


@pytest.mark.parametrize("path", ["/", "/audit", "/api/snapshot", "/api/whoami"])
def test_an_authenticated_answer_is_never_cached_nor_framed(
    console: ConsoleProc, path: str
) -> None:
    alice = Person(console, "alice")
    answer = alice.http.get(path)
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    csp = answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    alice.http.close()


def test_logout_ends_the_session_on_the_server(console: ConsoleProc) -> None:
    """The cookie replayed after a logout (copied before it) is refused: nothing of the
    session outlives it in the browser or on the server."""
    alice = Person(console, "alice")
    sid = alice.http.cookies["kw_session"]
    assert alice.http.post("/logout", data={"csrf": alice.csrf}).status_code == 303
    replay = httpx.post(
        console.url + "/api/kill",
        content=json.dumps(kill_body("hostile-replay")),
        headers={"Content-Type": "application/json", "X-CSRF-Token": alice.csrf},
        cookies={"kw_session": sid},
    )
    assert replay.status_code == 401, replay.text
    alice.http.close()


def test_a_brute_forced_name_never_stops_a_logged_in_operators_kill(
    console: ConsoleProc,
) -> None:
    """Failing under alice's name until she is throttled does nothing to her open session:
    the stop direction is never behind the login throttle."""
    alice = Person(console, "alice")
    with from_address(console, "127.0.0.43") as guesser:  # its failures stay at its address
        for _ in range(6):
            guesser.post("/login", data={"name": "alice", "password": "a wrong guess"})
    locked = httpx.post(console.url + "/login", data={"name": "alice", "password": PASSWORD})
    assert locked.status_code == 429  # her name is slowed from any address
    answer = alice.post("/api/kill", kill_body("hostile-brute"))
    assert answer.status_code == 200 and answer.json()["ok"], answer.text
    alice.http.close()
    time.sleep(int(locked.headers["retry-after"]) + 0.1)  # the name's wait runs out
    Person(console, "alice").http.close()  # a success clears the name


def _approve(person: Person, request_id: str, password: str) -> httpx.Response:
    row = next(r for r in person.http.get("/api/snapshot").json()["requests"]
               if r["id"] == request_id)  # fmt: skip
    return person.post(
        "/api/resume/approve",
        {"request_id": request_id, "scope": row["scope"], "key": row["key"],
         "digest": row["digest"], "password": password, "reason": "step-up"},
    )  # fmt: skip


def test_step_up_guesses_spread_over_fresh_sessions_are_throttled_not_the_kill(
    console: ConsoleProc,
) -> None:
    """Someone holding bob's login (or his cookie jar) guesses his step-up password from a
    fresh session each time: counted per session, each session had its own free tries and
    the guessing was never slowed. It is counted per user now; while it is, bob still logs
    in and his kill goes through."""
    alice = Person(console, "alice")
    assert alice.post("/api/kill", kill_body("hostile-stepup")).json()["ok"]
    made = alice.post(
        "/api/resume/request", {"scope": "strategy", "key": "hostile-stepup", "reason": "x"}
    )
    assert made.status_code == 200, made.text
    rid = made.json()["request_id"]
    statuses: list[int] = []
    throttled: httpx.Response | None = None
    for i in range(10):
        guesser = Person(console, "bob")  # a fresh session for every guess
        answer = _approve(guesser, rid, f"guess number {i}")
        guesser.http.close()
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            throttled = answer
            break
        assert answer.status_code == 401, answer.text
    assert throttled is not None, statuses  # before: ten 401s, never slowed
    assert "try again in" in throttled.json()["error"]
    bob = Person(console, "bob")  # his login is not behind the step-up's count
    kill = bob.post("/api/kill", kill_body("hostile-stepup-kill"))
    assert kill.status_code == 200 and kill.json()["ok"], kill.text
    wait = int(throttled.json()["error"].rsplit("in ", 1)[1].split(" ", 1)[0])
    time.sleep(wait + 0.1)  # the wait runs out; a success clears bob's count, his share here
    right = _approve(bob, rid, PASSWORD)
    assert right.status_code == 200, right.text
    bob.http.close()
    alice.http.close()
