"""The page never shows what it cannot vouch for as live or as pending.

Two ways it did, in a real browser against the real console (Playwright routes stand in
for the failures, which the shared fleet cannot be made to have):

- a `problem` event (the console cannot rebuild the fleet view: the control plane is out
  of reach, a record breaks the build) counted as a beat, and the beats that followed come
  from the console's own clock, not the fleet: the badge stayed LIVE over the last good
  snapshot. It is STALE now until a new snapshot arrives.
- a kill whose POST got no answer at all (the console down or restarting) threw in the
  page: the result stayed "waiting for confirmations…" with amber rows for good. It is
  NO ANSWER in red now, pointing to the terminal's kill.
"""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Browser, Route, expect

from knightwatch.console.local import ConsoleProc

from .conftest import login

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_problem_turns_the_page_stale_whatever_beats_follow(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "carol")
    snapshot = await (await page.request.get(console.url + "/api/snapshot")).text()
    problem = json.dumps({"error": "control plane: no servers available for connection"})
    stream = (
        "retry: 600000\n\n"
        f"event: snapshot\ndata: {snapshot}\n\n"
        f"event: problem\ndata: {problem}\n\n"
        'event: beat\ndata: {"at_ns": 1}\n\n'
    )

    async def feed(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/event-stream", body=stream)

    await page.route("**/api/events", feed)
    await page.reload()
    await expect(page.locator("#problems")).to_contain_text("no servers available")
    # read at once, not waited for: three beats' time later it was STALE anyway
    assert await page.locator("#stream").text_content() == "STALE"
    assert "stale" in (await page.get_attribute("body", "class") or "")
    await page.context.close()


async def test_a_kill_that_gets_no_answer_is_shown_not_confirmed_never_waiting(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "alice")
    await expect(page.locator("#nodes tbody tr")).to_have_count(3)

    async def gone(route: Route) -> None:
        await route.abort("connectionrefused")

    await page.route("**/api/kill", gone)
    await page.select_option("#kill-scope", "strategy")
    await page.fill("#kill-key", "page-no-answer")
    await page.fill("#kill-reason", "runaway")
    await page.click("#kill-button")
    await page.fill("#kill-confirm", "page-no-answer")
    await page.click("#kill-now")
    title = page.locator("#kill-result-title")
    await expect(title).to_contain_text("NO ANSWER")
    await expect(title).to_contain_text("NOT confirmed")
    assert "waiting" not in (await title.text_content() or "")
    await expect(page.locator("#kill-missing")).to_contain_text("knightwatch kill")
    for text in await page.locator("#kill-rows tbody tr td:nth-child(2)").all_inner_texts():
        assert text == "NO ANSWER", text
    assert await page.get_attribute("body", "data-last-kill") == "no-answer"
    await page.context.close()
