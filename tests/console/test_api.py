"""The console's API against the real fleet: credentials, refusals, the record, the headers.

The browser tests show the pages; these hold the API to the same rules with a
plain HTTP client: what the page refuses, the API refuses (same policy table),
tokens act as their owner and never beyond their scope, a service token never
approves, a disabled user is out at once, bad bodies get one line naming the
field, logins are throttled, and every request, refused ones included, is in
a file `knightwatch audit verify` accepts.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import httpx
import msgspec
import pytest

from knightwatch.clock import SystemClock
from knightwatch.console.local import PASSWORD, ConsoleProc
from knightwatch.console.sessions import LoginThrottle
from knightwatch.console.users import UserStore
from knightwatch.control.fleet.approvals import Request as ApprovalRecord
from knightwatch.control.fleet.approvals import Requests
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.node.trustfeed import identify
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import Bucket
from knightwatch.state import Scope
from knightwatch.trust.identity import load_signer
from knightwatch.trust.store import TrustStore, load_anchor

from .conftest import audit_verify

NOW = SystemClock().time_ns


class Person:
    """A logged-in session: the cookie jar and the page's CSRF token."""

    def __init__(self, console: ConsoleProc, name: str) -> None:
        self.http = httpx.Client(base_url=console.url, follow_redirects=False, timeout=20)
        answer = self.http.post("/login", data={"name": name, "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        page = self.http.get("/").text
        self.csrf = page.split('data-csrf="', 1)[1].split('"', 1)[0]

    def post(self, path: str, body: object, **headers: str) -> httpx.Response:
        return self.http.post(
            path,
            content=json.dumps(body),
            headers={"Content-Type": "application/json", "X-CSRF-Token": self.csrf, **headers},
        )


@pytest.fixture
def alice(console: ConsoleProc) -> Iterator[Person]:
    person = Person(console, "alice")
    yield person
    person.http.close()


def from_address(console: ConsoleProc, source: str) -> httpx.Client:
    """A client whose requests come from the loopback address `source`.

    Failures under names that never log in stay in their address's count until forgotten
    (a success takes back only its own name's share), and every other test logs in fresh
    from 127.0.0.1: a test that guesses on purpose does it from an address of its own."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=console.url, transport=transport, timeout=20)


def users(console: ConsoleProc) -> UserStore:
    return UserStore(console.fleet.state / "console-users.toml")


def kill_body(key: str, **extra: object) -> dict[str, object]:
    return {"scope": "strategy", "key": key, "reason": "api test", "confirm": key, **extra}


def shown(person: Person, request_id: str) -> dict[str, object]:
    """The request as the page shows it (the snapshot's row): what an approval names."""
    rows = person.http.get("/api/snapshot").json()["requests"]
    row = next(r for r in rows if r["id"] == request_id)
    return {"request_id": request_id, "scope": row["scope"], "key": row["key"],
            "digest": row["digest"]}  # fmt: skip


def test_every_answer_carries_the_security_headers(console: ConsoleProc) -> None:
    for path in ("/login", "/api/snapshot", "/static/console.js"):
        answer = httpx.get(console.url + path)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(console.url + "/api/snapshot").status_code == 401


def test_the_session_cookie_is_httponly_and_samesite_strict(console: ConsoleProc) -> None:
    answer = httpx.post(console.url + "/login", data={"name": "alice", "password": PASSWORD})
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_bad_bodies_get_one_line_naming_the_field(alice: Person) -> None:
    answer = alice.post("/api/kill", {"scope": "galaxy", "reason": "x", "confirm": "KILL"})
    assert answer.status_code == 422 and "scope" in answer.json()["error"]
    answer = alice.post("/api/kill", {"scope": "fleet", "reason": "  ", "confirm": "KILL"})
    assert answer.status_code == 422 and answer.json()["error"].startswith("reason:")
    answer = alice.post("/api/kill", kill_body("s1", confirm="KILL"))
    assert answer.status_code == 422 and "confirm" in answer.json()["error"]
    answer = alice.post("/api/kill", {"scope": "strategy", "key": "", "reason": "x", "confirm": ""})
    assert answer.status_code == 422 and answer.json()["error"].startswith("key:")
    answer = alice.http.post(
        "/api/kill", content=b"{not json", headers={"X-CSRF-Token": alice.csrf}
    )
    assert answer.status_code == 400


def test_a_strategy_kill_is_confirmed_by_every_node(alice: Person) -> None:
    answer = alice.post("/api/kill", kill_body("api-s1"))
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["ok"] and result["state"] == "HALTED"
    assert sorted(result["latencies_ms"]) == sorted(result["targets"]) and result["targets"]
    snapshot = alice.http.get("/api/snapshot").json()
    halts = {(h["scope"], h["key"]): h for h in snapshot["halts"]}
    assert halts["strategy", "api-s1"]["verified"]
    assert halts["strategy", "api-s1"]["actor"] == "alice"


def test_a_flood_of_snapshot_requests_leaves_the_control_plane_serving(alice: Person) -> None:
    """Each fleet read used to leave a server-side consumer per bucket for five minutes:
    a flood of snapshot requests filled the stream's consumer limit and the next kill, resume
    request or node resync failed. Concurrent requests now share one read, and a read
    deletes its consumers as it ends."""

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=str(alice.http.base_url), cookies=alice.http.cookies, timeout=60
        ) as http:
            return await asyncio.gather(*(http.get("/api/snapshot") for _ in range(300)))

    for _ in range(2):
        answers = asyncio.run(flood())
        assert [a.status_code for a in answers] == [200] * 300, answers[-1].text
    answer = alice.post("/api/kill", kill_body("api-flood"))
    assert answer.status_code == 200 and answer.json()["ok"], answer.text


def test_a_drain_sets_reducing(alice: Person) -> None:
    answer = alice.post("/api/kill", kill_body("api-d1", drain=True))
    assert answer.status_code == 200 and answer.json()["state"] == "REDUCING"


def test_an_operator_token_kills_as_its_owner_without_a_session(console: ConsoleProc) -> None:
    secret, token = users(console).issue_token("alice", PASSWORD, ["operator"], 600, now_ns=NOW())
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    answer = httpx.post(
        console.url + "/api/kill",
        content=json.dumps(kill_body("api-t1")),
        headers=headers,
        timeout=60,  # httpx's default 5 s is less than a kill may wait for confirmations
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"]
    who = httpx.get(console.url + "/api/whoami", headers=headers).json()
    assert who["name"] == "alice" and who["via"] == "token" and "approve" not in who["may"]
    assert who["roles"] == ["operator"]
    users(console).revoke_token("alice", token.id, NOW())
    answer = httpx.get(console.url + "/api/snapshot", headers=headers)
    assert answer.status_code == 401


def test_a_viewer_token_reads_and_cannot_kill(console: ConsoleProc) -> None:
    secret, _ = users(console).issue_token("alice", None, ["viewer"], 600, now_ns=NOW())
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(console.url + "/api/snapshot", headers=headers).status_code == 200
    who = httpx.get(console.url + "/api/whoami", headers=headers).json()
    assert who["roles"] == ["viewer"] and who["may"] == ["view"]  # what the policy judges by
    answer = httpx.post(
        console.url + "/api/kill", content=json.dumps(kill_body("api-t2")), headers=headers
    )
    assert answer.status_code == 403


def test_a_service_token_never_approves(console: ConsoleProc, alice: Person) -> None:
    assert alice.post("/api/kill", kill_body("api-svc")).status_code == 200
    made = alice.post(
        "/api/resume/request", {"scope": "strategy", "key": "api-svc", "reason": "fixed"}
    )
    assert made.status_code == 200, made.text
    with pytest.raises(ValueError, match="never approve"):  # refused when issued
        users(console).issue_token("bob", PASSWORD, ["approver"], 600, service=True, now_ns=NOW())
    secret, _ = users(console).issue_token(
        "bob", PASSWORD, ["operator"], 600, service=True, now_ns=NOW()
    )
    body = {**shown(alice, made.json()["request_id"]), "password": PASSWORD, "reason": "svc"}
    answer = httpx.post(
        console.url + "/api/resume/approve",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert answer.status_code == 403 and "approver" in answer.json()["error"]


def test_one_who_may_not_approve_learns_nothing_of_which_requests_exist(
    console: ConsoleProc, alice: Person
) -> None:
    """The request was read before the role was judged: a viewer got 404 for a missing id
    and 403 for one there, and so could tell which ids exist. Both are 403 now."""
    assert alice.post("/api/kill", kill_body("api-probe")).json()["ok"]
    made = alice.post("/api/resume/request", {"scope": "strategy", "key": "api-probe",
                                              "reason": "fixed"})  # fmt: skip
    assert made.status_code == 200, made.text
    secret, _ = users(console).issue_token("bob", None, ["viewer"], 600, now_ns=NOW())
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    answers = []
    for request_id in (made.json()["request_id"], "nope"):
        body = {"request_id": request_id, "scope": "strategy", "key": "api-probe",
                "digest": "0" * 32, "password": PASSWORD, "reason": "x"}  # fmt: skip
        answer = httpx.post(
            console.url + "/api/resume/approve", content=json.dumps(body), headers=headers
        )
        answers.append((answer.status_code, answer.json()["error"]))
    assert answers[0] == answers[1], answers
    assert answers[0][0] == 403 and "no such request" not in answers[0][1]


def test_an_unknown_request_is_404_and_nothing_is_applied(console: ConsoleProc) -> None:
    bob = Person(console, "bob")
    answer = bob.post(
        "/api/resume/approve",
        {"request_id": "nope", "scope": "fleet", "key": "", "digest": "0" * 32,
         "password": PASSWORD, "reason": "x"},
    )  # fmt: skip
    assert answer.status_code == 404 and "no such request" in answer.json()["error"]


def test_a_disabled_user_is_out_at_once(console: ConsoleProc) -> None:
    carol = Person(console, "carol")
    assert carol.http.get("/api/snapshot").status_code == 200
    store = users(console)
    store.disable("carol")
    try:
        assert carol.http.get("/api/snapshot").status_code == 401
        again = httpx.post(console.url + "/login", data={"name": "carol", "password": PASSWORD})
        assert again.status_code == 401
    finally:
        store.enable("carol")
    Person(console, "carol").http.close()  # enabled again; her refused try was hers to clear


def test_logins_are_throttled_after_repeated_failures(console: ConsoleProc) -> None:
    """Two free failures, then a wait that doubles with each one. Tries are sent until one
    is refused unverified (429): on a loaded machine a verification can outlast the first
    short waits, so the refusal may come a try later, but it comes (no throttle: never)."""
    statuses: list[int] = []
    with from_address(console, "127.0.0.40") as mallory:
        for _ in range(8):  # the waits 0.5, 1, 2, 4, 8 s outgrow any verification
            answer = mallory.post("/login", data={"name": "mallory", "password": "guess one"})
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                break
    assert statuses[:2] == [401, 401] and set(statuses[:-1]) == {401}, statuses
    assert statuses[-1] == 429 and int(answer.headers["retry-after"]) >= 1, statuses


def test_others_failing_under_a_name_never_lock_out_a_browser_that_logged_in_before(
    console: ConsoleProc,
) -> None:
    """Anyone can fail under alice's name, and every local user shares 127.0.0.1: the
    browser she logged in with before (its device cookie) is counted on its own."""
    known = Person(console, "alice")  # this browser now holds alice's device cookie
    known.http.cookies.delete("kw_session")
    for _ in range(5):
        httpx.post(console.url + "/login", data={"name": "alice", "password": "not her password"})
    stranger = httpx.post(console.url + "/login", data={"name": "alice", "password": PASSWORD})
    assert stranger.status_code == 429 and int(stranger.headers["retry-after"]) >= 1
    again = known.http.post("/login", data={"name": "alice", "password": PASSWORD})
    assert again.status_code == 303, again.text
    known.http.close()
    time.sleep(2.1)  # the name's own backoff (2 s after five failures) runs out
    Person(console, "alice").http.close()  # a success from a new browser clears the name


def test_a_body_is_refused_by_its_length_before_it_is_read(console: ConsoleProc) -> None:
    """A stranger's 300 MB body is neither read nor parsed: a login by its declared
    length (413), an approval because nobody is logged in (401)."""
    host, port = console.url.removeprefix("http://").split(":")
    for path, expect in (("/login", b" 413 "), ("/api/resume/approve", b" 401 ")):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: 300000000\r\n\r\n{{".encode()
            )
            assert expect in s.recv(4096).split(b"\r\n", 1)[0]


def test_a_request_for_another_host_name_is_refused(console: ConsoleProc) -> None:
    """DNS rebinding: a page whose own name now points at 127.0.0.1 is not served."""
    assert httpx.get(console.url + "/login", headers={"Host": "evil.example"}).status_code == 400
    assert httpx.get(console.url + "/login", headers={"Host": "localhost"}).status_code == 200


@pytest.mark.parametrize("host", ["[::1]", "[::1]:8765", "localhost:8765", "127.0.0.1:8765"])
def test_every_loopback_name_a_browser_sends_is_served(console: ConsoleProc, host: str) -> None:
    """A browser on http://[::1]:PORT/ sends `Host: [::1]:PORT` (bracketed): the allowed
    name was "::1", so a console bound to ::1 answered every request with 400."""
    assert httpx.get(console.url + "/login", headers={"Host": host}).status_code == 200


def test_keys_with_control_characters_and_unknown_alert_slots_are_refused(alice: Person) -> None:
    answer = alice.post("/api/kill", kill_body("x\ny INJECT HALT node=n9"))
    assert answer.status_code == 422 and "control characters" in answer.json()["error"]
    for slot, revision in (("<script>", 1), ("strategy.api-s1", -5), ("strategy.api-s1", 2**70)):
        answer = alice.post("/api/alerts/ack", {"slot": slot, "revision": revision, "note": "n"})
        assert answer.status_code == 422, (slot, revision, answer.text)


def test_the_logout_form_works_without_the_pages_script(console: ConsoleProc) -> None:
    """The form's hidden field carries the CSRF token; without it, or with another, 403."""
    person = Person(console, "alice")
    assert person.http.post("/logout", data={"csrf": "not-the-token"}).status_code == 403
    assert person.http.get("/api/snapshot").status_code == 200  # still logged in
    assert person.http.post("/logout", data={"csrf": person.csrf}).status_code == 303
    assert person.http.get("/api/snapshot").status_code == 401
    person.http.close()


def test_a_cross_site_login_is_refused(console: ConsoleProc) -> None:
    answer = httpx.post(
        console.url + "/login",
        data={"name": "alice", "password": PASSWORD},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert answer.status_code == 403


def test_an_origin_from_elsewhere_is_refused_without_fetch_metadata(alice: Person) -> None:
    answer = alice.post("/api/kill", kill_body("api-o1"), Origin="http://evil.example")
    assert answer.status_code == 403 and "Origin" in answer.json()["error"]


def test_why_for_an_unknown_order_names_where_it_looked(alice: Person) -> None:
    answer = alice.http.get("/api/why/no-such-order")
    assert answer.status_code == 404 and "no flight recorder" in answer.json()["error"]


def supervisor_kill(console: ConsoleProc, node: str) -> None:
    """An automatic halt of node `node`, signed by the supervisor's own identity. A node no
    process runs as: nothing is halted, and a node's halt is no open alert to a preflight
    (a strategy's held every later resume in the session's fleet)."""

    async def kill() -> None:
        fleet = console.fleet
        store = TrustStore(load_anchor(fleet.state / "trust" / "anchor.toml"))
        signer = load_signer(fleet.key("supervisor"), "unnamed")
        plane = NatsControlPlane([fleet.url], name="supervisor-test", signer=signer)
        await plane.connect()
        try:
            ks = KillSwitch(plane, SystemClock(), await identify(plane, signer, store), store)
            await ks.start()
            await ks.kill(Scope.NODE, node, "supervisor_test: api ack", timeout_s=0.5)
        finally:
            await plane.close()

    asyncio.run(kill())


def halt_row(person: Person, scope: str, key: str) -> dict[str, object]:
    halts = person.http.get("/api/snapshot").json()["halts"]
    row: dict[str, object] = next(h for h in halts if h["scope"] == scope and h["key"] == key)
    return row


def test_alert_acknowledgements_are_recorded_and_listed(
    console: ConsoleProc, alice: Person
) -> None:
    supervisor_kill(console, "api-ack-ghost")
    alert = halt_row(alice, "node", "api-ack-ghost")
    assert alert["source"] == "supervisor"
    slot, revision = alert["slot"], alert["revision"]
    answer = alice.post(
        "/api/alerts/ack", {"slot": slot, "revision": revision, "note": "looking into it"}
    )
    assert answer.status_code == 200, answer.text
    acks = alice.http.get("/api/alerts/acks").json()
    assert {"slot": slot, "revision": revision, "by": "alice"}.items() <= next(
        a for a in acks if a["slot"] == slot
    ).items()


def test_only_an_alert_shown_now_can_be_acknowledged(console: ConsoleProc, alice: Person) -> None:
    """An ack of a revision not yet written marked the automatic halt that later landed
    there as handled (the next revision is easy to guess): the alerts panel never showed it
    red. An operator's own kill is no alert either."""
    assert alice.post("/api/kill", kill_body("api-ack-op")).json()["ok"]
    own = halt_row(alice, "strategy", "api-ack-op")
    ahead = {"slot": "strategy.api-ack-ahead", "revision": int(str(own["revision"])) + 1}
    for slot, revision in ((own["slot"], own["revision"]), (ahead["slot"], ahead["revision"])):
        answer = alice.post("/api/alerts/ack", {"slot": slot, "revision": revision, "note": "n"})
        assert answer.status_code == 404, answer.text
        assert "no automatic halt" in answer.json()["error"]
    acks = alice.http.get("/api/alerts/acks").json()
    assert not [a for a in acks if a["slot"] in (own["slot"], ahead["slot"])], acks


def test_every_request_is_on_the_verifiable_record(console: ConsoleProc, alice: Person) -> None:
    httpx.get(console.url + "/api/snapshot")  # a 401
    found = alice.http.get("/api/audit", params={"action": "login"}).json()
    assert found["intact"]
    results = {r["result"] for r in found["records"]}
    assert "ok" in results and "refused" in results  # failed logins are recorded too
    refused = alice.http.get("/api/audit", params={"actor": "-"}).json()["records"]
    assert any(r["status"] == 401 for r in refused)
    export = alice.http.get("/api/audit/export", params={"action": "kill"})
    lines = export.text.strip().splitlines()
    assert json.loads(lines[-1])["intact"] and json.loads(lines[-1])["chain_head"]
    assert any(json.loads(line).get("data", {}).get("key") == "api-s1" for line in lines[:-1])
    audit_verify(console.audit)


def test_safe_default_is_one_click_and_confirmed_by_the_nodes(alice: Person) -> None:
    answer = alice.post(
        "/api/flags/safe-default", {"flag": "trading.smars.rlp_enabled", "reason": "stop it"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["revision"] >= 1 and not body["missing"]
    assert sorted(body["latencies_ms"]) == ["n1", "n2", "n3"]
    flags = {f["flag"]: f for f in alice.http.get("/api/snapshot").json()["flags"]}
    row = flags["trading.smars.rlp_enabled"]
    assert set(row["values"].values()) <= {False}
    unknown = alice.post("/api/flags/safe-default", {"flag": "no.such.flag", "reason": "x"})
    assert unknown.status_code == 404


def test_why_explains_an_order_from_a_nodes_flight_recorder(console: ConsoleProc) -> None:
    recorder = console.fleet.state / "audit" / "n1.jsonl"
    order_id = ""
    deadline = time.monotonic() + 20
    while not order_id and time.monotonic() < deadline:
        for line in recorder.read_bytes().split(b"\n"):
            if line.startswith(b"{") and b'"order_id"' in line:
                order_id = json.loads(line)["order_id"]
                break
        time.sleep(0.2)
    assert order_id, "the node recorded no order"
    carol = Person(console, "carol")
    answer = carol.http.get(f"/api/why/{order_id}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["file"] == "n1.jsonl"
    assert body["explanation"]["chain"]["problems"] == []


def test_a_broken_users_file_stops_logins_not_a_live_sessions_kill(
    console: ConsoleProc, alice: Person
) -> None:
    path = console.fleet.state / "console-users.toml"
    saved = path.read_bytes()
    try:
        path.write_bytes(b"[users.alice]\nhash = 12\n")
        answer = alice.post("/api/kill", kill_body("api-broken"))
        assert answer.status_code == 200 and answer.json()["ok"]
        login = httpx.post(console.url + "/login", data={"name": "bob", "password": PASSWORD})
        assert login.status_code == 503 and "console-users.toml" in login.text
    finally:
        path.write_bytes(saved)
    Person(console, "bob")  # the repaired file is read again


def test_an_approval_applies_the_request_that_was_shown_not_one_swapped_in(
    console: ConsoleProc, alice: Person
) -> None:
    """Operators can write the approvals bucket: alice replaces her request X (a resume of
    A, as bob is shown it) by a resume of B signed by herself, under the same id. Bob's
    approval names what he was shown; it is refused (409, naming the field) and B stays
    halted."""
    for key in ("api-swap-a", "api-swap-b"):
        assert alice.post("/api/kill", kill_body(key)).json()["ok"]
    made = alice.post(
        "/api/resume/request", {"scope": "strategy", "key": "api-swap-a", "reason": "A fixed"}
    )
    assert made.status_code == 200, made.text
    request_id = made.json()["request_id"]
    bob = Person(console, "bob")
    seen = shown(bob, request_id)

    original: list[str] = []  # X's command id, read before the first swap

    async def swap(same_command_id: bool) -> None:
        fleet = console.fleet
        store = TrustStore(load_anchor(fleet.state / "trust" / "anchor.toml"))
        signer = load_signer(fleet.key("alice"), "unnamed")
        plane = NatsControlPlane([fleet.url], name="alice-cli", signer=signer)
        await plane.connect()
        try:
            me = await identify(plane, signer, store)
            ks = KillSwitch(plane, SystemClock(), me, store)
            await ks.start()
            if not original:
                original.append((await Requests(ks).get(request_id))[0].entry.command_id)
            entry = await ks.request_resume(Scope.STRATEGY, "api-swap-b", "swapped")
            if same_command_id:  # she signs any command id she likes
                entry = msgspec.structs.replace(entry, command_id=original[0], proof=None).signed(
                    me.key
                )
            record = msgspec.json.encode(ApprovalRecord(request_id, entry))
            await plane.put_record(Bucket.APPROVALS, request_id, record)
        finally:
            await plane.close()

    for same_command_id, field in ((False, "request"), (True, "key")):
        asyncio.run(swap(same_command_id))
        answer = bob.post(
            "/api/resume/approve", {**seen, "password": PASSWORD, "reason": "approving A"}
        )
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"].startswith(field), answer.text
    halts = {(h["scope"], h["key"]): h for h in alice.http.get("/api/snapshot").json()["halts"]}
    assert halts["strategy", "api-swap-b"]["state"] == "HALTED"
    assert halts["strategy", "api-swap-a"]["state"] == "HALTED"
    bob.http.close()


def test_credentials_that_are_not_ascii_are_refused_not_a_server_error(
    console: ConsoleProc, alice: Person
) -> None:
    """A device cookie, a CSRF header and the logout form's CSRF field holding non-ASCII
    text made the constant-time comparison raise: a 500, audited as ok."""
    login = httpx.post(
        console.url + "/login",
        data={"name": "bob", "password": "not the password"},
        headers=[(b"cookie", b"kw_device=x.\xe9")],
    )
    assert login.status_code == 401, login.text
    kill = alice.http.post(
        "/api/kill",
        content=json.dumps(kill_body("api-non-ascii")),
        headers=[(b"content-type", b"application/json"), (b"x-csrf-token", b"\xe9")],
    )
    assert kill.status_code == 403 and "CSRF" in kill.json()["error"]
    out = alice.http.post("/logout", data={"csrf": "\u00e9"})
    assert out.status_code == 403
    assert alice.post("/api/kill", kill_body("api-non-ascii")).json()["ok"]  # still in


def test_a_password_change_ends_the_users_sessions(console: ConsoleProc) -> None:
    """`console user passwd` (another process: the users file) ends every session opened
    with the old password; before, one kept killing and requesting resumes for up to 12 h."""
    alice, bob = Person(console, "alice"), Person(console, "bob")
    store = users(console)
    store.passwd("alice", PASSWORD, PASSWORD + "-changed")
    try:
        answer = alice.post("/api/kill", kill_body("api-passwd"))
        assert answer.status_code == 401, answer.text
        assert bob.post("/api/kill", kill_body("api-passwd")).json()["ok"]  # only hers end
    finally:
        store.passwd("alice", PASSWORD + "-changed", PASSWORD)
    assert alice.post("/api/kill", kill_body("api-passwd")).status_code == 401  # still ended
    assert Person(console, "alice").post("/api/kill", kill_body("api-passwd")).json()["ok"]


async def _burst(
    console: ConsoleProc, logins: list[tuple[str, str]], sources: list[str] | None = None
) -> list[int]:
    """Every login of `logins` sent at once (each from its own connection; from the loopback
    address of `sources` at the same index when given): the statuses, in order."""

    async def one(name: str, password: str, source: str) -> int:
        transport = httpx.AsyncHTTPTransport(local_address=source)
        async with httpx.AsyncClient(base_url=console.url, transport=transport, timeout=60) as h:
            answer = await h.post("/login", data={"name": name, "password": password})
            return answer.status_code

    where = sources or ["127.0.0.1"] * len(logins)
    return list(
        await asyncio.gather(*(one(n, p, s) for (n, p), s in zip(logins, where, strict=True)))
    )


def _locked_out_until_the_wait_ends(
    console: ConsoleProc, started: float, source: str = "127.0.0.1"
) -> None:
    """alice's right password from `source` is refused (429) until the wait it names ends,
    then let in.

    The wait (`LoginThrottle().base_s` after the third failure) runs from when the burst's
    attempts began (`started`): on a loaded machine their verification can outlast it, and
    then the right password is let in at once, as it must be."""
    with from_address(console, source) as http:
        right = http.post("/login", data={"name": "alice", "password": PASSWORD})
        if right.status_code == 303:
            took = time.monotonic() - started
            assert took > LoginThrottle().base_s, f"let in {took:.2f} s after the burst began"
            return
        assert right.status_code == 429, right.text
        time.sleep(int(right.headers["retry-after"]) + 0.1)
        again = http.post("/login", data={"name": "alice", "password": PASSWORD})
        assert again.status_code == 303, again.text  # clears her name and her share here


def test_a_concurrent_burst_of_guesses_at_one_name_gets_the_throttles_few_tries(
    console: ConsoleProc,
) -> None:
    """The count was checked before the slow verification and raised after it, so a burst
    sent at once was verified whole inside one window. Each attempt now takes its place
    before it is verified: from 20 addresses at once, alice's name gets the `free` tries
    and one more (2 + 1) verified, the rest are 429 unverified."""
    Person(console, "alice").http.close()  # a success clears the name's count
    sources = [f"127.0.0.{i}" for i in range(2, 22)]  # loopback: each its own address
    started = time.monotonic()
    statuses = asyncio.run(
        _burst(console, [("alice", f"guess number {i:02}") for i in range(20)], sources)
    )
    assert statuses.count(401) <= 3 and statuses.count(401) + statuses.count(429) == 20, statuses
    _locked_out_until_the_wait_ends(console, started)


def test_a_concurrent_spray_of_names_from_one_address_gets_the_throttles_few_tries(
    console: ConsoleProc,
) -> None:
    """The same for an address spraying made-up names (each verified against the dummy
    hash at full cost): its count holds under concurrency too, and locks it out."""
    started = time.monotonic()
    spray = [(f"spray-{i}", "a guess!") for i in range(20)]
    statuses = asyncio.run(_burst(console, spray, ["127.0.0.41"] * len(spray)))
    assert statuses.count(401) <= 3 and statuses.count(401) + statuses.count(429) == 20, statuses
    _locked_out_until_the_wait_ends(console, started, "127.0.0.41")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/resume/approve", {"request_id": 7}),
        ("/api/resume/approve", b"{not json"),
        ("/api/resume/request", {"scope": "galaxy"}),
        ("/api/resume/request", b"{not json"),
        ("/api/kill", {"scope": "galaxy"}),
        ("/api/kill", b"{not json"),
        ("/api/flags/safe-default", {"flag": 1}),
        ("/api/rollouts/abort", {"flag": 1}),
        ("/api/alerts/ack", {"slot": []}),
    ],
)
@pytest.mark.parametrize(
    "site", [{"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}]
)
def test_a_cross_site_request_is_refused_before_its_body_is_parsed(
    alice: Person, path: str, body: object, site: dict[str, str]
) -> None:
    """A cross-site approval with a malformed body was a 422 (the body's validation ran
    before the origin check): every unsafe request with a session is judged cross-site
    first, whatever its body."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = alice.http.post(
        path,
        content=content,
        headers={"Content-Type": "application/json", "X-CSRF-Token": alice.csrf, **site},
    )
    assert answer.status_code == 403, answer.text
    assert "cross-" in answer.json()["error"]


def test_an_approval_names_a_well_formed_request_id(alice: Person) -> None:
    """A request id is checked (422 naming `request_id`) before the bucket is read."""
    base = {"scope": "fleet", "key": "", "digest": "0" * 32, "password": PASSWORD, "reason": "x"}
    for request_id in ("", "../../etc", "a b", "x" * 65, "id\nHALT"):
        answer = alice.post("/api/resume/approve", {**base, "request_id": request_id})
        assert answer.status_code == 422, (request_id, answer.text)
        assert answer.json()["error"].startswith("request_id:"), answer.text
    answer = alice.post("/api/resume/approve", base)  # no request_id at all
    assert answer.status_code == 422 and "request_id" in answer.json()["error"], answer.text


def test_a_token_never_approves_its_owners_own_request(console: ConsoleProc, alice: Person) -> None:
    """The requester never counts as the second person, by session or by token: alice's
    approver token is refused (403) on her own request, and the halt stays."""
    assert alice.post("/api/kill", kill_body("api-self")).json()["ok"]
    made = alice.post("/api/resume/request", {"scope": "strategy", "key": "api-self",
                                              "reason": "fixed"})  # fmt: skip
    assert made.status_code == 200, made.text
    secret, _ = users(console).issue_token(
        "alice", PASSWORD, ["operator", "approver"], 600, now_ns=NOW()
    )
    body = {**shown(alice, made.json()["request_id"]), "password": PASSWORD, "reason": "mine"}
    answer = httpx.post(
        console.url + "/api/resume/approve",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 403, answer.text
    assert "requester never counts" in answer.json()["error"]
    halts = {(h["scope"], h["key"]): h for h in alice.http.get("/api/snapshot").json()["halts"]}
    assert halts["strategy", "api-self"]["state"] == "HALTED"


def test_a_pair_whose_symbol_holds_a_slash_can_be_killed(alice: Person) -> None:
    """A symbol may hold a '/' (ccxt's BTC/USDT) and a strategy never does, so the first '/'
    joins them, as `knightwatch kill --strategy mm --symbol BTC/USDT` does: the console
    refused 'STRATEGY/BTC/USDT' (422), so that pair could not be stopped from it."""
    answer = alice.post("/api/kill", {**kill_body("api-pair/BTC/USDT"), "scope": "strategy_symbol"})
    assert answer.status_code == 200 and answer.json()["ok"], answer.text
    halts = {(h["scope"], h["key"]) for h in alice.http.get("/api/snapshot").json()["halts"]}
    assert ("strategy_symbol", "api-pair/BTC/USDT") in halts
    # and its resume can be asked for (the halts panel's button sends the same key)
    pair = {"scope": "strategy_symbol", "key": "api-pair/BTC/USDT", "reason": "fixed"}
    asked = alice.post("/api/resume/request", pair)
    assert asked.status_code == 200 and asked.json()["request_id"], asked.text


@pytest.mark.parametrize(
    ("scope", "key"),
    [
        ("strategy", "api-odd/BTC"),  # no strategy has a '/': it halted nothing, "confirmed"
        ("strategy_symbol", "api-odd/"),  # no symbol
        ("strategy_symbol", "/BTC"),  # no strategy
        ("strategy_symbol", "api-odd /BTC"),  # a blank inside the pair
        ("strategy_symbol", "api-odd/ BTC"),
        # no node holds an id outside the roster's name rule: these read "HALTED node n1"
        # in the halts table (fullwidth n, fullwidth 1, Armenian vo) while n1 traded on
        ("node", "\uff4e1"),
        ("node", "n\uff11"),
        ("node", "\u05781"),
        ("node", "n1.api"),
    ],
)
def test_a_key_that_names_nothing_a_node_matches_is_refused_not_confirmed(
    alice: Person, scope: str, key: str
) -> None:
    """These were stored and confirmed by every node ("HALTED ... every live node
    confirmed") while stopping nothing: the person was told the strategy was stopped."""
    answer = alice.post("/api/kill", {**kill_body(key), "scope": scope})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith("key:"), answer.text
    halts = {(h["scope"], h["key"]) for h in alice.http.get("/api/snapshot").json()["halts"]}
    assert (scope, key) not in halts


def test_a_fleet_body_naming_another_key_is_refused_not_widened(alice: Person) -> None:
    """`{"scope": "fleet", "key": "s1"}` was a request to resume (or kill) the whole fleet:
    a key the fleet scope does not take is a mistake to name, not a fleet-wide action."""
    asked = alice.post("/api/resume/request", {"scope": "fleet", "key": "api-s1", "reason": "x"})
    assert asked.status_code == 422, asked.text
    assert asked.json()["error"].startswith("key: the fleet scope takes no key"), asked.text
    killed = alice.post("/api/kill", {**kill_body("api-s1"), "scope": "fleet", "confirm": "KILL"})
    assert killed.status_code == 422 and killed.json()["error"].startswith("key:"), killed.text


@pytest.mark.parametrize("name", ["limit", "since_ns", "until_ns"])
def test_audit_numbers_that_are_not_ascii_digits_are_refused_not_a_server_error(
    alice: Person, name: str
) -> None:
    """'²' passed `str.isdigit` and failed `int()`: a traceback and a 500."""
    for path in ("/api/audit", "/api/audit/export"):
        answer = alice.http.get(path, params={name: "²"})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"].startswith(f"{name}:"), answer.text


@pytest.mark.parametrize("name", ["limit", "since_ns", "until_ns"])
def test_audit_numbers_too_long_for_int_are_refused_not_a_server_error(
    alice: Person, name: str
) -> None:
    """5,000 digits passed the digit check and made `int()` raise (its 4,300-digit limit):
    a traceback and a 500."""
    for path in ("/api/audit", "/api/audit/export"):
        answer = alice.http.get(path, params={name: "9" * 5000})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"].startswith(f"{name}:"), answer.text
    assert alice.http.get("/api/audit", params={name: "9" * 19}).status_code == 200


def test_a_request_id_the_bucket_cannot_hold_is_refused_not_an_outage(alice: Person) -> None:
    """ "." and ".." were sent to the approvals bucket, whose refusal was answered as a 503
    (the control plane "did not answer") and recorded as an error: they are 422s."""
    base = {"scope": "fleet", "key": "", "digest": "0" * 32, "password": PASSWORD, "reason": "x"}
    for request_id in (".", "..", ".abc", "abc."):
        answer = alice.post("/api/resume/approve", {**base, "request_id": request_id})
        assert answer.status_code == 422, (request_id, answer.text)
        assert answer.json()["error"].startswith("request_id:"), answer.text
    answer = alice.post("/api/resume/approve", {**base, "request_id": "a.b"})
    assert answer.status_code == 404, answer.text  # well formed, and no such request


def test_a_form_with_too_many_fields_is_refused_not_a_server_error(console: ConsoleProc) -> None:
    """`parse_qs(max_num_fields=8)` raised ValueError out of the login and logout handlers."""
    fields = {f"f{i}": "x" for i in range(9)}
    answer = httpx.post(console.url + "/login", data={"name": "alice", **fields})
    assert answer.status_code == 400 and "form fields" in answer.text, answer.text
    person = Person(console, "alice")
    answer = person.http.post("/logout", data={"csrf": person.csrf, **fields})
    assert answer.status_code == 400 and "form fields" in answer.text, answer.text
    assert person.http.get("/api/snapshot").status_code == 200  # not logged out by it
    person.http.close()
