"""A stop's reason never holds the stop back: a long or multi-line one goes out cleaned.

The page's reason field takes what is pasted into it, and at 3 a.m. that is a log line or
an alert's text. One past the console's bound (500 characters) was a 422, "reason: at
most 500 characters", and the kill was not sent; the operator had to shorten it and go
through the dialog again while the strategy traded on. The CLI's `kill` sends such a
reason cleaned (one line, cut to the bound) and says so; the console's API now does the
same: the kill goes out, the stored halt carries the cleaned reason, and the answer says
it was cleaned. A blank reason is still refused (say why), as the CLI refuses it. The other
stops the console offers one person (a flag to its safe default, a rollout's abort) take
their reason the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from playwright.async_api import Browser, expect

from knightwatch.console.app import REASON_MAX
from knightwatch.console.local import PASSWORD, ConsoleProc

from .conftest import KILL_TIMEOUT_S, login

WAIT_S = KILL_TIMEOUT_S + 20.0
"""The HTTP client's wait: over the console's own kill wait, on a loaded machine."""


@pytest.fixture
def alice(console: ConsoleProc) -> Iterator[tuple[httpx.Client, str]]:
    http = httpx.Client(base_url=console.url, follow_redirects=False, timeout=WAIT_S)
    try:
        answer = http.post("/login", data={"name": "alice", "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        csrf = http.get("/").text.split('data-csrf="', 1)[1].split('"', 1)[0]
        yield http, csrf
    finally:
        http.close()


def _post(alice: tuple[httpx.Client, str], path: str, body: object) -> httpx.Response:
    http, csrf = alice
    return http.post(
        path,
        content=json.dumps(body),
        headers={"Content-Type": "application/json", "X-CSRF-Token": csrf},
    )


def _kill(alice: tuple[httpx.Client, str], key: str, reason: str) -> httpx.Response:
    body = {"scope": "strategy", "key": key, "reason": reason, "confirm": key}
    return _post(alice, "/api/kill", body)


def _stored_reason(alice: tuple[httpx.Client, str], key: str) -> str:
    http, _ = alice
    halts = http.get("/api/snapshot").json()["halts"]
    row = next(h for h in halts if h["scope"] == "strategy" and h["key"] == key)
    assert row["state"] == "HALTED", row
    return str(row["reason"])


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("reason-long", "ERROR venue reject storm " + "x" * 700),
        ("reason-lines", "reject storm\n2026-12-07 INFO kill lifted\tby nobody"),
        ("reason-escape", "runaway \x1b[2J\x1b[H cleared screen"),
        ("reason-both", "line\r\n" * 200),
    ],
    ids=["too-long", "newline-tab", "terminal-escape", "long-multi-line"],
)
def test_a_kill_with_a_long_or_multi_line_reason_is_sent_cleaned(
    alice: tuple[httpx.Client, str], key: str, reason: str
) -> None:
    answer = _kill(alice, key, reason)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["ok"] is True and result["state"] == "HALTED", result
    assert "sent cleaned" in result["reason_cleaned"], result
    stored = _stored_reason(alice, key)
    # one line, cut to the bound (plus the console's own "(console, alice)")
    assert stored.isprintable(), stored
    assert stored.endswith("(console, alice)"), stored
    assert len(stored) <= REASON_MAX + len(" (console, alice)"), len(stored)


def test_a_plain_reason_goes_out_as_typed_and_a_blank_one_is_refused(
    alice: tuple[httpx.Client, str],
) -> None:
    answer = _kill(alice, "reason-plain", "  runaway quotes  ")
    assert answer.status_code == 200, answer.text
    assert answer.json()["reason_cleaned"] == "", answer.json()
    assert _stored_reason(alice, "reason-plain") == "runaway quotes (console, alice)"
    blank = _kill(alice, "reason-blank", " \t ")
    assert blank.status_code == 422, blank.text
    assert blank.json()["error"] == "reason: required (recorded with the command)"


LONG = "rlp misbehaving, pasted alert:\n" + "y" * 900


def test_a_flag_to_its_safe_default_with_a_long_reason_is_sent_cleaned(
    alice: tuple[httpx.Client, str],
) -> None:
    body = {"flag": "trading.smars.rlp_enabled", "reason": LONG}
    answer = _post(alice, "/api/flags/safe-default", body)
    assert answer.status_code == 200, answer.text
    assert "sent cleaned" in answer.json()["reason_cleaned"], answer.json()


def test_a_rollout_abort_is_never_refused_for_its_reason(
    alice: tuple[httpx.Client, str],
) -> None:
    # no rollout of this flag runs on the shared fleet: the answer is about the rollout
    # (a 409 naming it), never the reason's length
    body = {"flag": "trading.smars.rlp_enabled", "reason": LONG}
    answer = _post(alice, "/api/rollouts/abort", body)
    assert answer.status_code != 422, answer.text
    assert "reason" not in answer.json().get("error", ""), answer.text


@pytest.mark.asyncio(loop_scope="session")
async def test_the_page_kills_with_a_pasted_log_line_and_says_it_was_cleaned(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "alice")
    await expect(page.locator("#nodes tbody tr")).to_have_count(3)
    await page.select_option("#kill-scope", "strategy")
    await page.fill("#kill-key", "reason-page")
    await page.fill("#kill-reason", "venue reject storm: " + "z" * 700)
    await page.click("#kill-button")
    await page.fill("#kill-confirm", "reason-page")
    await page.click("#kill-now")
    title = page.locator("#kill-result-title")
    await expect(title).to_contain_text("every live node confirmed")
    await expect(page.locator("#kill-missing")).to_contain_text("sent cleaned")
    assert await page.get_attribute("body", "data-last-kill") == "confirmed"
    await page.context.close()
