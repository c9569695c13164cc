"""A kill the console refused is shown refused, node by node, never as waiting.

After the console restarted (sessions live in its memory) or the session ended, a page
still open sends its kill and gets a 401. The title said "refused (401)", but every node's
row stayed amber "waiting" for good, and a live confirmation of someone else's kill of that
scope turned them green: a refused kill read as one under way. Now each row is red NOT
CONFIRMED with the status, and no later event repaints it.

The real console refuses here (the session is ended with the page's own logout, as a restart
would end it); the page's stream is closed first, so its `ended` event does not take the page
to the login form before the kill is sent.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from knightwatch.console.local import ConsoleProc

from .conftest import login

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_refused_kill_shows_no_node_waiting(browser: Browser, console: ConsoleProc) -> None:
    page = await login(browser, console, "alice")
    await expect(page.locator("#nodes tbody tr")).to_have_count(3)
    status = await page.evaluate(
        """async () => {
            window.knightwatchStream.close();
            const csrf = document.body.dataset.csrf;
            const out = await fetch("/logout", {method: "POST", headers: {"X-CSRF-Token": csrf},
                                                redirect: "manual"});
            return out.type;
        }"""
    )
    assert status == "opaqueredirect", status  # the 303 of a logout: the session is gone
    await page.select_option("#kill-scope", "strategy")
    await page.fill("#kill-key", "page-refused")
    await page.fill("#kill-reason", "runaway")
    await page.click("#kill-button")
    await page.fill("#kill-confirm", "page-refused")
    await page.click("#kill-now")
    title = page.locator("#kill-result-title")
    await expect(title).to_contain_text("refused (401)")
    cells = page.locator("#kill-rows tbody tr td:nth-child(2)")
    await expect(cells).to_have_count(3)
    await expect(cells).to_have_text(["NOT CONFIRMED (refused 401)"] * 3)
    assert await page.get_attribute("body", "data-last-kill") == "refused"
    await page.context.close()
