"""A resume request is made for the halt its requester was shown, not one stored since.

The page's resume dialog names the halt as it was shown ("halted by alice: fat finger"),
and the request was made for whatever the slot held when it was sent: a kill stored again
over it meanwhile (another reason, "runaway again, do not resume") was the halt the request
lifted, unseen by its requester. The page sends the halt's revision as shown; a slot that
has moved on is refused (409 naming `revision`) and no request is stored.
"""

from __future__ import annotations

from knightwatch.console.local import ConsoleProc

from .test_api import Person, kill_body

KEY = "shown-halt"


def _halt(person: Person) -> dict[str, object]:
    rows = person.http.get("/api/snapshot").json()["halts"]
    return next(h for h in rows if h["scope"] == "strategy" and h["key"] == KEY)


def _requests(person: Person) -> list[dict[str, object]]:
    rows = person.http.get("/api/snapshot").json()["requests"]
    return [r for r in rows if r["key"] == KEY and r["status"] == "pending"]


def test_a_resume_request_names_the_halt_it_was_shown(console: ConsoleProc) -> None:
    alice = Person(console, "alice")
    try:
        assert alice.post("/api/kill", {**kill_body(KEY), "reason": "fat finger"}).json()["ok"]
        shown = _halt(alice)
        # stored again over it while alice's dialog is open
        again = {**kill_body(KEY), "reason": "runaway again, do not resume"}
        assert alice.post("/api/kill", again).json()["ok"]
        now = _halt(alice)
        assert now["revision"] != shown["revision"]
        asked = alice.post(
            "/api/resume/request",
            {"scope": "strategy", "key": KEY, "reason": "fixed", "revision": shown["revision"]},
        )
        assert asked.status_code == 409, asked.text
        error = asked.json()["error"]
        assert error.startswith("revision:") and str(now["revision"]) in error, error
        assert _requests(alice) == []
        # the halt as it is now shown is requested
        asked = alice.post(
            "/api/resume/request",
            {"scope": "strategy", "key": KEY, "reason": "fixed", "revision": now["revision"]},
        )
        assert asked.status_code == 200, asked.text
        assert [r["id"] for r in _requests(alice)] == [asked.json()["request_id"]]
    finally:
        alice.http.close()
