"""A key revoked on the roster is out of the console at its next request.

The console judged a person's roles by name (`held_roles`), and the roster keeps a
revoked key with its roles, so a session opened before `knightwatch identity revoke`
(and a token of that person) kept killing, requesting and approving with a key nothing
on the fleet trusts any more, until logout or expiry. These enrol a person of their own
on the shared fleet (a roster version signed by its admins), log them in and give them a
token, revoke them (the next version), and hold the console to refusing both at once,
naming the revocation, while the fleet's other people go on as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import argon2
import httpx

from knightwatch.clock import SystemClock
from knightwatch.console.local import PASSWORD, ConsoleProc
from knightwatch.console.users import UserStore
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.rosters import publish_roster
from knightwatch.release.dsse import Envelope, encode_envelope
from knightwatch.release.keys import SigningKey
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role

from .test_api import Person, kill_body

NOW = SystemClock().time_ns
NAME = "dora"


def _until(check: Callable[[], bool], what: str, seen: list[str] | None = None) -> None:
    """Wait for `check` (the fleet and the console follow a roster version on their own)."""
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"still not {what} (last answer: {seen})"
        time.sleep(0.1)


def _publish(console: ConsoleProc, kit: Kit, envelope: Envelope) -> None:
    """Store a roster version as an admin does, and keep the fleet's roster files in step."""
    version = kit.roster.version
    trust = console.fleet.state / "trust"
    (trust / "roster" / f"v{version}.json").write_bytes(encode_envelope(envelope))

    async def store() -> None:
        plane = NatsControlPlane(
            [console.fleet.url], name="admin1-test", signer=kit.signer("admin1")
        )
        await plane.connect()
        try:
            await publish_roster(plane, envelope)
        finally:
            await plane.close()

    asyncio.run(store())


def test_a_revoked_key_is_refused_at_its_next_request(console: ConsoleProc) -> None:
    kit = Kit.read(console.fleet.state / "trust")
    alice = Person(console, "alice")

    seen: list[str] = []

    def follows(version: int) -> Callable[[], bool]:
        def check() -> bool:  # a snapshot may be a 503 while the server reloads its users
            answer = alice.http.get("/api/snapshot")
            seen[:] = [f"{answer.status_code} {answer.text[:300]}"]
            return answer.status_code == 200 and answer.json()["roster_version"] == version

        return check

    _until(follows(kit.roster.version), "the console's roster version", seen)
    key = SigningKey.generate()
    _publish(console, kit, kit.add(NAME, [Role.OPERATOR], key))
    _until(follows(kit.roster.version), f"following the version enrolling {NAME}", seen)
    store = UserStore(console.fleet.state / "console-users.toml", profile=argon2.profiles.CHEAPEST)
    store.add(NAME, PASSWORD, key)
    secret, _ = store.issue_token(NAME, PASSWORD, ["operator"], 600, now_ns=NOW())

    people: list[Person] = []

    def logged_in() -> bool:  # the fleet's NATS server lets the newcomer in on its own time
        try:
            people.append(Person(console, NAME))
        except AssertionError:  # 503: the server does not know the new key yet
            return False
        return True

    _until(logged_in, f"{NAME} logged in")
    dora = people[0]
    bearer = {"Authorization": f"Bearer {secret}"}
    assert dora.post("/api/kill", kill_body("revoked-before")).json()["ok"]
    assert httpx.get(console.url + "/api/whoami", headers=bearer).status_code == 200

    _publish(console, kit, kit.revoke(NAME, NOW()))
    _until(follows(kit.roster.version), f"following the version revoking {NAME}", seen)

    by_session = dora.post("/api/kill", kill_body("revoked-after"))
    assert by_session.status_code == 401, by_session.text
    assert "revoked" in by_session.json()["error"], by_session.text
    by_token = httpx.post(
        console.url + "/api/kill", json=kill_body("revoked-after"), headers=bearer, timeout=20
    )
    assert by_token.status_code == 401, by_token.text
    assert "revoked" in by_token.json()["error"], by_token.text
    ask = dora.post("/api/resume/request", {"scope": "strategy", "key": "revoked-before",
                                            "reason": "mine"})  # fmt: skip
    assert ask.status_code == 401, ask.text
    assert dora.http.get("/api/whoami").status_code == 401  # the session is over
    halts = {(h["scope"], h["key"]) for h in alice.http.get("/api/snapshot").json()["halts"]}
    assert ("strategy", "revoked-before") in halts
    assert ("strategy", "revoked-after") not in halts  # nothing was sent for the revoked key
    assert alice.post("/api/kill", kill_body("revoked-others")).json()["ok"]  # others go on
    dora.http.close()
    alice.http.close()
