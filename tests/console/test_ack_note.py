"""An acknowledgement's bad note is refused naming its own field, `note`.

The body of `/api/alerts/ack` has no `reason`; a blank or overlong note was refused as
"reason: required" / "reason: at most 500 characters", naming a field the person never
sent. Against the real console process, as the page sends it.
"""

from __future__ import annotations

import pytest

from knightwatch.console.app import REASON_MAX

from .test_api import Person, alice  # noqa: F401  (the fixture)


@pytest.mark.parametrize(
    ("note", "rule"),
    [("", "required"), ("   \t ", "required"), ("n" * (REASON_MAX + 1), "at most")],
)
def test_a_bad_note_is_refused_naming_the_note(
    alice: Person,  # noqa: F811
    note: str,
    rule: str,
) -> None:
    answer = alice.post(
        "/api/alerts/ack", {"slot": "strategy.ack-note", "revision": 1, "note": note}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith(f"note: {rule}"), answer.json()
