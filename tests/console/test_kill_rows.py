"""A kill's rows are the nodes it waited for, and none is left "waiting" once it is answered.

The page drew a row for every live node of its last snapshot under each kill, whatever the
kill's scope. A node kill of n1 is confirmed by n1 alone (no other node answers a kill that
names another node), so under "HALTED node n1: every live node confirmed" the rows of n2 and
n3 said "waiting" in amber for good: read at 3 a.m., two nodes the kill never concerned looked
unconfirmed. And a kill whose answer did not await a node the page believed live (the
membership could not be read: `targets` holds only the nodes heard from, and the kill is
not ok) left that node's row amber "waiting" forever instead of NOT CONFIRMED.

The answers are given to the page by Playwright's route (no node of the shared fleet is
halted: a node kill could not be resumed here in test time); the page is what is tested.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Route, expect

from knightwatch.console.local import ConsoleProc

from .conftest import login

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _answer(scope: str, key: str, **over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "command_id": "c0ffee" * 4, "scope": scope, "key": key, "state": "HALTED",
        "targets": [key], "latencies_ms": {key: 3.2}, "missing": [], "still_working": {},
        "stored_revision": 7, "durable_error": "", "sent": True, "unreachable": "",
        "ok": True, "reason_cleaned": "",
    }  # fmt: skip
    out.update(over)
    return out


async def _kill(page: Page, scope: str, key: str, answer: dict[str, Any]) -> None:
    async def fulfil(route: Route) -> None:
        await route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))

    await page.route("**/api/kill", fulfil)
    await page.select_option("#kill-scope", scope)
    await page.fill("#kill-key", key)
    await page.fill("#kill-reason", "rows")
    await page.click("#kill-button")
    await page.fill("#kill-confirm", key)
    await page.click("#kill-now")


async def test_a_node_kill_shows_only_its_node(browser: Browser, console: ConsoleProc) -> None:
    page = await login(browser, console, "alice")
    await expect(page.locator("#nodes tbody tr")).to_have_count(3)
    await _kill(page, "node", "n1", _answer("node", "n1"))
    await expect(page.locator("#kill-result-title")).to_contain_text(
        "HALTED node n1: every live node confirmed"
    )
    rows = page.locator("#kill-rows tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator("td").nth(1)).to_have_text("3.2 ms")
    await page.context.close()


async def test_no_row_waits_after_the_answer(browser: Browser, console: ConsoleProc) -> None:
    page = await login(browser, console, "alice")
    await expect(page.locator("#nodes tbody tr")).to_have_count(3)
    # the membership could not be read: only n1 and n2 were heard from and awaited
    answer = _answer(
        "strategy", "rows-unread", targets=["n1", "n2"], latencies_ms={"n1": 2.0, "n2": 2.5},
        ok=False,
    )  # fmt: skip
    await _kill(page, "strategy", "rows-unread", answer)
    await expect(page.locator("#kill-result-title")).to_contain_text("NOT every node confirmed")
    n3 = page.locator("#kill-rows tbody tr[data-node='n3'] td").nth(1)
    await expect(n3).to_contain_text("NOT CONFIRMED")
    await expect(page.locator("#kill-rows tbody tr", has_text="waiting")).to_have_count(0)
    await page.context.close()
