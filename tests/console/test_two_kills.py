"""Two kills in flight from one page: each answer is shown as its own, the newest on top.

An operator kills one strategy, and before its answer is back (a node slow to confirm, a
loaded console) kills a second. The page had one result panel: the first kill's late answer
overwrote the second's title and rows with its own outcome, and marked the second finished,
so the second's own confirmations no longer showed. At 3 a.m. the panel is what is read, and
it no longer said what happened to the newest kill. Now every kill has a panel of its own;
the newest holds the ids and sits on top, and an earlier one's late answer is drawn into its
own panel, titled "earlier kill", never into the newest's.

The first kill's answer is held back in the browser (Playwright's route: the real console
answers it, the page gets that answer only when the test lets it), so the order is certain
on any machine, not left to timing.

The flag and rollout stops' "sent cleaned" line (test_kill_reason tests the API) is tested
here on the page too: the operator must see that what went out is not what was typed.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import Browser, Dialog, Page, Route, expect

from knightwatch.console.local import ConsoleProc

from .conftest import login

pytestmark = pytest.mark.asyncio(loop_scope="session")

LATENCY = re.compile(r"^\d+\.\d ms$")
"""A node's row once the kill's answer gave its measured latency."""


async def _kill(page: Page, key: str) -> None:
    await page.select_option("#kill-scope", "strategy")
    await page.fill("#kill-key", key)
    await page.fill("#kill-reason", "runaway")
    await page.click("#kill-button")
    await page.fill("#kill-confirm", key)
    await page.click("#kill-now")


async def test_an_earlier_kills_late_answer_never_hides_the_newest(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "alice")
    await expect(page.locator("#nodes tbody tr")).to_have_count(3)
    release = asyncio.Event()
    held: list[str] = []

    async def hold_first(route: Route) -> None:
        if held:
            await route.continue_()
            return
        held.append(route.request.url)
        answer = await route.fetch(timeout=30_000)  # the real console answers it now
        await release.wait()
        await route.fulfill(response=answer)

    await page.route("**/api/kill", hold_first)
    await _kill(page, "two-kills-first")
    title = page.locator("#kill-result-title")
    await expect(title).to_contain_text("two-kills-first: waiting")
    await _kill(page, "two-kills-second")
    await expect(title).to_contain_text("HALTED strategy two-kills-second: every live node")
    assert await page.get_attribute("body", "data-last-kill") == "confirmed"
    release.set()
    # the first kill's answer is drawn (somewhere) once the page has it ...
    answered = page.locator("h3", has_text="HALTED strategy two-kills-first: every live node")
    await expect(answered).to_have_count(1)
    # ... and the newest kill's panel is still its own, on top, with its own rows
    await expect(title).to_contain_text("HALTED strategy two-kills-second: every live node")
    await expect(page.locator(".kill-one.earlier h3")).to_contain_text(
        "earlier kill #1: HALTED strategy two-kills-first: every live node confirmed"
    )
    first = page.locator(".kill-one").first
    await expect(first.locator("h3")).to_contain_text("two-kills-second")
    cells = page.locator("#kill-rows tbody tr td:nth-child(2)")
    await expect(cells).to_have_count(3)
    await expect(cells).to_have_text([LATENCY] * 3)
    earlier_cells = page.locator(".kill-one.earlier tbody tr td:nth-child(2)")
    await expect(earlier_cells).to_have_count(3)
    assert await page.get_attribute("body", "data-last-kill") == "confirmed"
    assert len(held) == 1, held
    await page.context.close()


async def test_a_flag_to_its_safe_default_says_the_reason_was_sent_cleaned(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "alice")
    await expect(page.locator("#nodes tbody tr")).to_have_count(3)
    pasted = "rlp misbehaving, pasted alert:\n" + "y" * 900

    async def answer(dialog: Dialog) -> None:
        await dialog.accept(pasted)

    # the flags table lists the flags the store holds: make sure this one is there (another
    # test may have set it already; turning it to its safe default twice is harmless)
    status = await page.evaluate(
        """async () => {
            const csrf = document.body.dataset.csrf;
            const out = await fetch("/api/flags/safe-default", {method: "POST",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                body: JSON.stringify({flag: "trading.smars.rlp_enabled", reason: "setup"})});
            return out.status;
        }"""
    )
    assert status == 200, status
    page.on("dialog", answer)
    row = page.locator("#flags tbody tr", has_text="trading.smars.rlp_enabled")
    await row.get_by_role("button", name="safe default").click()
    message = page.locator("#action-message")
    await expect(message).to_contain_text("trading.smars.rlp_enabled at its safe default")
    await expect(message).to_contain_text("sent cleaned")
    await expect(message).to_have_class("ok")
    await page.context.close()
