"""A kill from the console while the control plane is down: answered at once, never "done".

Its own fleet (`knightwatch up`, two node processes) and console, because it
stops the fleet's nats-server for good: the session's shared fleet stays up
for the other tests. People log in while the server is up (their session
holds their own connection, as in an incident that starts with everything
working); then the server is stopped and each door is timed: the API with a
session, the API with a bearer token (no connection yet), the page in a real
browser, and the CLI. Each must answer within about 2 s (it took 15 s),
name the control plane it could not reach and point to the runbook's
fallback, and none may show the kill as done.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, expect

from knightwatch.clock import SystemClock
from knightwatch.console.audit import Query, search
from knightwatch.console.local import PASSWORD, ConsoleProc, Fleet, running_console, running_fleet
from knightwatch.console.users import UserStore

from .conftest import KILL_TIMEOUT_S, audit_verify

ANSWER_S = 2.5
"""How long an operator may wait for "not sent" with the control plane down (it was 15 s)."""
LOAD_MARGIN_S = 1.5
"""Added to `ANSWER_S` where the test measures: the request's own trip through the test's
HTTP client (or the browser) on a loaded 2-core CI machine. Still well under the console's
kill wait (`KILL_TIMEOUT_S`), so an answer that came only when the wait ran out fails."""
UP_KILL_S = 5.0
"""A kill with the control plane up answers as soon as both nodes confirm; the bound only
tells a working session's connection from one that waited out a reconnect."""
RUNBOOK = "docs/runbook.md"


@dataclass
class Down:
    fleet: Fleet
    console: ConsoleProc
    http: httpx.Client
    """alice's session, logged in while the control plane was up."""
    csrf: str
    token: str
    """A bearer token of alice's (operator): its connection is opened per request."""
    urls: list[str]

    def kill(self, key: str, *, token: bool = False) -> tuple[float, httpx.Response]:
        """alice's strategy kill through the API (her session, or with `token` her bearer
        token and no cookie), and how long its answer took."""
        body = json.dumps({"scope": "strategy", "key": key, "reason": "down", "confirm": key})
        started = time.monotonic()
        if token:
            answer = httpx.post(
                self.console.url + "/api/kill",
                content=body,
                headers={"Content-Type": "application/json",
                         "Authorization": f"Bearer {self.token}"},
                timeout=60,
            )  # fmt: skip
        else:
            answer = self.http.post(
                "/api/kill",
                content=body,
                headers={"Content-Type": "application/json", "X-CSRF-Token": self.csrf},
            )
        return time.monotonic() - started, answer


def _stop_nats(fleet: Fleet) -> None:
    """Stop the fleet's nats-server (SIGTERM, as an operator or a crash of its host would end
    it) and wait until its port refuses connections."""
    ports = sorted((fleet.state / "nats").glob("nats-server_*.ports"))
    assert ports, f"no nats-server ports file under {fleet.state / 'nats'}"
    pid = int(ports[-1].stem.split("_", 1)[1])
    os.kill(pid, signal.SIGTERM)
    where = urlsplit(fleet.url)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection((where.hostname, where.port), timeout=0.2).close()
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError(f"nats-server {pid} still accepts connections at {fleet.url}")


@pytest.fixture(scope="module")
def down(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Down]:
    with (
        running_fleet(tmp_path_factory.mktemp("down"), 2) as fleet,
        running_console(fleet, "--kill-timeout", str(KILL_TIMEOUT_S)) as console,
    ):
        http = httpx.Client(base_url=console.url, follow_redirects=False, timeout=60)
        try:
            answer = http.post("/login", data={"name": "alice", "password": PASSWORD})
            assert answer.status_code == 303, answer.text
            csrf = http.get("/").text.split('data-csrf="', 1)[1].split('"', 1)[0]
            users = UserStore(fleet.state / "console-users.toml")
            token, _ = users.issue_token(
                "alice", PASSWORD, ["operator"], 600, now_ns=SystemClock().time_ns()
            )
            state = Down(fleet, console, http, csrf, token, fleet.url.split(","))
            took, answer = state.kill("while-up")  # the session's connection works
            assert answer.status_code == 200 and answer.json()["ok"], answer.text
            assert took < UP_KILL_S, f"a kill with the control plane up took {took:.2f} s"
            _stop_nats(fleet)
            yield state
        finally:
            http.close()


def _says_what_to_do(error: str, urls: list[str]) -> None:
    """The message names the control plane it could not reach and the runbook's fallback."""
    assert "NOT" in error and "sent" in error, error
    for url in urls:
        assert url in error, error
    assert RUNBOOK in error, error
    assert "venue" in error, error  # the fallback: working orders are cancelled there


def test_a_session_kill_answers_at_once_that_it_was_not_sent(down: Down) -> None:
    took, answer = down.kill("while-down")
    assert took < ANSWER_S + LOAD_MARGIN_S, f"the answer took {took:.2f} s"
    assert answer.status_code == 503, answer.text
    result = answer.json()
    assert result["ok"] is False and result["sent"] is False, result
    assert result["stored_revision"] is None and result["latencies_ms"] == {}, result
    _says_what_to_do(result["error"], down.urls)


def test_a_token_kill_answers_at_once_that_it_was_not_sent(down: Down) -> None:
    took, answer = down.kill("token-down", token=True)
    assert took < ANSWER_S + LOAD_MARGIN_S, f"the answer took {took:.2f} s"
    assert answer.status_code == 503, answer.text
    _says_what_to_do(answer.json()["error"], down.urls)


@pytest.mark.asyncio(loop_scope="session")
async def test_the_page_shows_the_kill_as_not_sent(browser: Browser, down: Down) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.add_cookies(
        [{"name": name, "value": value, "url": down.console.url}
         for name, value in down.http.cookies.items()]
    )  # fmt: skip
    page = await context.new_page()
    await page.goto(down.console.url + "/")
    await page.select_option("#kill-scope", "strategy")
    await page.fill("#kill-key", "page-down")
    await page.fill("#kill-reason", "control plane down")
    await page.click("#kill-button")
    await page.fill("#kill-confirm", "page-down")
    started = time.monotonic()
    await page.click("#kill-now")
    title = page.locator("#kill-result-title")
    await expect(title).to_contain_text("NOT SENT", timeout=(ANSWER_S + LOAD_MARGIN_S) * 1000)
    took = time.monotonic() - started
    assert took < ANSWER_S + LOAD_MARGIN_S, f"the page showed the answer after {took:.2f} s"
    await expect(title).to_have_class("error")
    assert await page.get_attribute("body", "data-last-kill") == "not-sent"
    cells = await page.locator("#kill-rows tbody tr td:nth-child(2)").all_inner_texts()
    assert all(cell == "NOT SENT" for cell in cells), cells  # no latency, no "waiting"
    _says_what_to_do(await page.locator("#kill-missing").inner_text(), down.urls)
    await context.close()


def test_the_record_never_calls_it_done(down: Down) -> None:
    """Every kill made while the control plane was down (this one, and the ones above when
    the file runs whole) is on record as an error, not sent, never `ok`."""
    _, answer = down.kill("record-down")
    assert answer.status_code == 503, answer.text
    # the console process writes its record as the answer goes out: read until it landed
    deadline = time.monotonic() + 15.0
    while True:
        found = search(down.console.audit, Query(action="kill", limit=1000))
        downs = [r.data for r in found.records if str(r.data.get("key")).endswith("-down")]
        if "record-down" in {r["key"] for r in downs} or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert "record-down" in {r["key"] for r in downs}, downs
    for record in downs:
        assert record["status"] == 503 and record["result"] == "error", record
        assert "NOT sent" in str(record["detail"]), record
    audit_verify(down.console.audit)


def test_the_cli_kill_answers_at_once_in_one_line(down: Down) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "knightwatch", "kill", "--strategy", "cli-down", "--reason", "x"],
        env=down.fleet.cli_env("alice"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    out = (done.stdout + done.stderr).strip()
    # no connect retries waited out (30 s and more); loose, as interpreter start alone can
    # take seconds on a loaded 2-core machine
    assert took < ANSWER_S + 12.0, f"the CLI answered after {took:.2f} s"
    assert done.returncode == 2, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    _says_what_to_do(out, down.urls)
