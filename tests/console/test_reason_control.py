"""A resume's reason, an approval's reason and an acknowledgement's note with a control
character are refused, as the CLI refuses them (`cli.options.reason_value`).

They are signed into the command (or written to the console's record), stored, shown in
every `status` and written to every node's log: a newline there forges a line of its own,
an escape sequence rewrites an operator's terminal. The CLI refused them; the console took
them as given. A stop's reason is different (sent cleaned, never refused: nothing may hold
a stop back), and stays so. Against the real console process, as the page sends them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from knightwatch.console.local import PASSWORD, ConsoleProc

from .test_api import Person, alice, kill_body, shown  # noqa: F401  (the fixture)

KEY = "reason-control"
BAD = [
    "fixed\nINFO kill lifted by nobody",
    "fixed\r\x1b[2K\x1b[1A done",
    "fixed \x1b]0;owned\x07",
    "nul \x00 inside",
    "tab\there",
    "line\u2028separator",
    "next\x85line",
]


@pytest.fixture
def bob(console: ConsoleProc) -> Iterator[Person]:
    person = Person(console, "bob")
    yield person
    person.http.close()


def _refused(answer_json: dict[str, object], field: str) -> None:
    error = str(answer_json["error"])
    assert error.startswith(f"{field}: control characters in "), error
    assert "\n" not in error and "\x1b" not in error and "\r" not in error, error


@pytest.mark.parametrize("text", BAD)
def test_a_control_character_in_a_note_or_a_resume_reason_is_refused(
    alice: Person,  # noqa: F811
    text: str,
) -> None:
    ack = alice.post("/api/alerts/ack", {"slot": "strategy.x", "revision": 1, "note": text})
    assert ack.status_code == 422, ack.text
    _refused(ack.json(), "note")
    ask = alice.post("/api/resume/request", {"scope": "strategy", "key": KEY, "reason": text})
    assert ask.status_code == 422, ask.text
    _refused(ask.json(), "reason")


def test_a_control_character_in_an_approval_reason_is_refused(
    alice: Person,  # noqa: F811
    bob: Person,
) -> None:
    kill = alice.post("/api/kill", kill_body(KEY))
    assert kill.status_code == 200, kill.text
    ask = alice.post("/api/resume/request", {"scope": "strategy", "key": KEY, "reason": "ok"})
    assert ask.status_code == 200, ask.text
    request_id = ask.json()["request_id"]
    for text in BAD:
        body = {**shown(bob, request_id), "password": PASSWORD, "reason": text}
        answer = bob.post("/api/resume/approve", body)
        assert answer.status_code == 422, (text, answer.text)
        _refused(answer.json(), "reason")
    # a trailing newline (a pasted line) is only trimmed, as before: not refused
    ok = alice.post("/api/resume/request", {"scope": "strategy", "key": KEY, "reason": "fixed\n"})
    assert ok.status_code != 422, ok.text
