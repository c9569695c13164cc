"""A console kill of a node that is no member (a typo for the runaway) reads as reaching no one.

The answer was the kill switch's: the node not confirmed, "lease unknown", after the
console's whole kill timeout, as for a frozen node. Now it comes at once with `ok` false
and an `error` line saying the kill reached no node, naming the live ones, and that the
kill is stored (the node is halted if it joins); the node's row says it is no member.
"""

from __future__ import annotations

import json
import time

import httpx

from knightwatch.console.local import PASSWORD, ConsoleProc

from .conftest import KILL_TIMEOUT_S


def test_a_node_kill_naming_no_member_says_it_reached_no_node(console: ConsoleProc) -> None:
    with httpx.Client(base_url=console.url, follow_redirects=False, timeout=20) as http:
        login = http.post("/login", data={"name": "alice", "password": PASSWORD})
        assert login.status_code == 303, login.text
        csrf = http.get("/").text.split('data-csrf="', 1)[1].split('"', 1)[0]
        body = {"scope": "node", "key": "n9typo", "reason": "runaway", "confirm": "n9typo"}
        began = time.monotonic()
        answer = http.post(
            "/api/kill",
            content=json.dumps(body),
            headers={"Content-Type": "application/json", "X-CSRF-Token": csrf},
        )
        took = time.monotonic() - began
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["ok"] is False and out["stored_revision"] is not None, out
    error = out["error"]
    assert error.startswith("kill reached no node: n9typo is not a member of this fleet"), out
    assert "(live: n1, " in error and "n9typo is halted if it joins" in error, out
    assert out["missing"] == [{"node": "n9typo", "lease": "none: not a member of this fleet"}]
    assert took < KILL_TIMEOUT_S, f"the console waited {took:.1f} s for a node that is no member"
