"""Enter in the kill dialog kills; it never cancels the kill silently.

A tired operator types the confirmation word and presses Enter. The dialog's form had its
"cancel" button first, and a form's Enter clicks its first submit button: the dialog closed
as cancelled, nothing was posted and nothing said so (no result, no message), while the
operator believed the kill was on its way. Now Enter is "Kill now" once the word matches,
and does nothing before (the dialog stays open); cancel is its own button and Escape. The
approve and resume dialogs had the same order and are built the same way now.

The page's stream is closed and its session logged out first (as in test_kill_refused), so
the real console answers the kill 401 and the shared fleet is left as it was: what is tested
is that the page posted it and shows its answer.
"""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Browser, Page, Route, expect

from knightwatch.console.local import ConsoleProc

from .conftest import login

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _logged_out(page: Page) -> None:
    status = await page.evaluate(
        """async () => {
            window.knightwatchStream.close();
            const csrf = document.body.dataset.csrf;
            const out = await fetch("/logout", {method: "POST", headers: {"X-CSRF-Token": csrf},
                                                redirect: "manual"});
            return out.type;
        }"""
    )
    assert status == "opaqueredirect", status


async def test_enter_after_the_word_sends_the_kill(browser: Browser, console: ConsoleProc) -> None:
    page = await login(browser, console, "alice")
    await expect(page.locator("#nodes tbody tr")).to_have_count(3)
    await _logged_out(page)
    kills: list[str] = []
    page.on("request", lambda r: kills.append(r.url) if r.url.endswith("/api/kill") else None)
    await page.select_option("#kill-scope", "strategy")
    await page.fill("#kill-key", "page-enter")
    await page.fill("#kill-reason", "runaway")
    await page.click("#kill-button")
    await page.fill("#kill-confirm", "page-ent")  # not the word yet: Enter does nothing
    await page.press("#kill-confirm", "Enter")
    await expect(page.locator("#kill-dialog")).to_be_visible()
    assert kills == [], kills
    await page.fill("#kill-confirm", "page-enter")
    await page.press("#kill-confirm", "Enter")
    title = page.locator("#kill-result-title")
    await expect(title).to_contain_text("refused (401)")
    assert len(kills) == 1, kills
    await expect(page.locator("#kill-dialog")).to_be_hidden()
    await page.context.close()


async def test_cancel_still_cancels(browser: Browser, console: ConsoleProc) -> None:
    page = await login(browser, console, "alice")
    await expect(page.locator("#nodes tbody tr")).to_have_count(3)
    await _logged_out(page)
    kills: list[str] = []
    page.on("request", lambda r: kills.append(r.url) if r.url.endswith("/api/kill") else None)
    await page.select_option("#kill-scope", "strategy")
    await page.fill("#kill-key", "page-cancel")
    await page.fill("#kill-reason", "runaway")
    await page.click("#kill-button")
    await page.fill("#kill-confirm", "page-cancel")
    await page.click("#kill-cancel")
    await expect(page.locator("#kill-dialog")).to_be_hidden()
    await page.click("#kill-button")  # and Escape
    await page.fill("#kill-confirm", "page-cancel")
    await page.press("#kill-confirm", "Escape")
    await expect(page.locator("#kill-dialog")).to_be_hidden()
    await page.wait_for_timeout(300)
    assert kills == [], kills
    assert await page.locator("#kill-result").is_hidden()
    await page.context.close()


async def test_enter_in_the_approve_dialog_approves_once_it_is_filled_in(
    browser: Browser, console: ConsoleProc
) -> None:
    """The approve dialog had the same order: Enter after the password closed it as
    cancelled, and the approver took the resume for approved while the halt stayed. Now
    Enter approves once reason and password are there, and does nothing before."""
    page = await login(browser, console, "bob")
    await expect(page.locator("#nodes tbody tr")).to_have_count(3)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if "/api/resume/" in r.url else None)
    # a pending request of alice's, shown through the page's own stream
    snap = json.loads(await (await page.request.get(console.url + "/api/snapshot")).text())
    snap["requests"] = [
        {"id": "0123456789ab", "status": "pending", "scope": "strategy", "key": "page-enter",
         "requester": "alice", "approvers": [], "needed": "one approver", "reason": "fixed",
         "expires_ns": 0, "detail": "", "preflight": "", "ramp": "-", "digest": "0" * 32}
    ]  # fmt: skip
    stream = f"retry: 600000\n\nevent: snapshot\ndata: {json.dumps(snap)}\n\n"

    async def feed(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/event-stream", body=stream)

    await page.route("**/api/events", feed)
    await page.reload()
    await page.click("#requests tbody tr[data-request='0123456789ab'] button")
    await _logged_out(page)  # the console refuses what is posted: the fleet stays as it was
    await page.fill("#approve-reason", "checked")
    await page.press("#approve-reason", "Enter")  # no password yet: nothing is sent
    await expect(page.locator("#approve-dialog")).to_be_visible()
    await page.fill("#approve-password", "typed")
    await page.press("#approve-password", "Enter")
    await expect(page.locator("#action-message")).to_contain_text("refused (401)")
    assert len(posts) == 1, posts
    await page.context.close()
