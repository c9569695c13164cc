"""The page's LIVE badge is judged on the browser's monotonic clock, never on its wall clock.

The badge was LIVE while `Date.now() - lastBeat` stayed under three beats: a wall clock
stepped back (an NTP correction, a laptop's resume, a hand-set time) made that difference
negative, and a page whose stream then froze stayed LIVE for as long as the step (a minute
here) over a view that no longer changed. It is `performance.now()` now, which only runs
forward; and no beat at all is never LIVE (the page's first quarter second said so when
its beat clock started at 0).
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from knightwatch.console.local import ConsoleProc

from .conftest import login

pytestmark = pytest.mark.asyncio(loop_scope="session")

STALE_WITHIN_MS = 3_000
"""The console's beat is 0.25 s: three missed beats and a redraw are 1 s; room for load."""


async def test_a_wall_clock_stepped_back_keeps_no_frozen_page_live(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "carol")
    try:
        await expect(page.locator("#stream")).to_have_text("LIVE")
        # the wall clock steps back a minute, then the stream freezes (nothing arrives)
        await page.evaluate(
            """() => {
              const real = Date.now.bind(Date);
              Date.now = () => real() - 60000;
              window.knightwatchStream.close();
            }"""
        )
        await expect(page.locator("#stream")).to_have_text("STALE", timeout=STALE_WITHIN_MS)
    finally:
        await page.context.close()


async def test_a_page_that_heard_no_beat_is_never_live(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "carol")
    try:
        # a stream that opens and says nothing: no beat, no snapshot
        await page.route(
            "**/api/events",
            lambda route: route.fulfill(
                status=200, content_type="text/event-stream", body="retry: 600000\n\n"
            ),
        )
        # every text the badge shows from the page's first moment
        await page.add_init_script(
            """document.addEventListener("DOMContentLoaded", () => {
              window.badgeSeen = [];
              const badge = document.getElementById("stream");
              new MutationObserver(() => window.badgeSeen.push(badge.textContent))
                .observe(badge, {childList: true, characterData: true, subtree: true});
            });"""
        )
        await page.reload()
        await page.wait_for_timeout(1500)
        seen: list[str] = await page.evaluate("window.badgeSeen")
        assert seen and "LIVE" not in seen, seen
    finally:
        await page.context.close()
