"""The audit page in a real browser: an answer that is not a search is never shown as one.

The page showed whatever `/api/audit` answered as a search result: a refusal (a
422 for a time the API cannot take, a 401 for a session that ended) has no
`intact` field, so the page said `CHAIN BROKEN: undefined` in red, a tampered
record to anyone reading it, and its script then failed on the missing rows.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from knightwatch.console.local import ConsoleProc

from .conftest import login

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_refused_search_is_shown_as_refused_not_as_a_broken_chain(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "carol")
    await page.goto(console.url + "/audit")
    chain = page.locator("#audit-chain")
    await expect(chain).to_contain_text("chain intact")
    # before the epoch: the page sends a negative time, which the API refuses (422)
    await page.fill("#q-since", "1969-12-31T23:59")
    await page.click("#audit-search")
    await expect(chain).to_contain_text("refused (422): since_ns:")
    await expect(chain).not_to_contain_text("CHAIN BROKEN")
    await expect(page.locator("#audit-rows tbody tr")).to_have_count(0)
    # and a search the API can answer is shown again
    await page.fill("#q-since", "")
    await page.click("#audit-search")
    await expect(chain).to_contain_text("chain intact")
    await expect(page.locator("#audit-rows tbody tr")).not_to_have_count(0)
    await page.context.close()
