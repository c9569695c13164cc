"""The page turns STALE as soon as the console loses the control plane, whatever its beat.

The console's beats come from the console, not the fleet: after the control plane went
away they went on (every 0.25 s on a local console) until the next fleet read failed,
which is when its request timed out, about 2 s later. For those 2 s the page showed LIVE
over a view that no longer changed (a kill stored meanwhile by the CLI's fallback could
not show). Now the lost connection is told to the streams at once, and a read that spans
the loss is not shown as the fleet now.

Its own fleet (one node) and console (`--heartbeat 0.25`, as every local console), because
it stops the fleet's nats-server for good.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from knightwatch.console.local import PASSWORD, ConsoleProc, Fleet, running_console, running_fleet

from .test_control_plane_down import _stop_nats

STALE_WITHIN_S = 1.0
"""From the nats-server's port refusing connections to the page showing STALE: the lost
connection is heard at once (it took the failed read's 2 s timeout); generous for a loaded
2-core machine, still short of the read's timeout."""


@dataclass
class LoggedIn:
    fleet: Fleet
    console: ConsoleProc
    cookies: dict[str, str]


@contextmanager
def logged_in(root: Path) -> Iterator[LoggedIn]:
    """Its own fleet (one node) and console, alice logged in: these tests stop or freeze
    the fleet's nats-server."""
    with (
        running_fleet(root, 1) as fleet,
        running_console(fleet) as console,
        httpx.Client(base_url=console.url, follow_redirects=False, timeout=30) as http,
    ):
        answer = http.post("/login", data={"name": "alice", "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        yield LoggedIn(fleet, console, dict(http.cookies.items()))


async def watched_page(browser: Browser, who: LoggedIn) -> tuple[BrowserContext, Page]:
    """A LIVE page whose every change of the badge is kept, timed by the page's own clock."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.add_cookies(
        [{"name": n, "value": v, "url": who.console.url} for n, v in who.cookies.items()]
    )
    page = await context.new_page()
    await page.goto(who.console.url + "/")
    await expect(page.locator("#stream")).to_have_text("LIVE")
    await page.evaluate(
        """() => {
          window.badgeSeen = [];
          const badge = document.getElementById("stream");
          new MutationObserver(() => window.badgeSeen.push([badge.textContent, Date.now()]))
            .observe(badge, {childList: true, characterData: true, subtree: true});
        }"""
    )
    return context, page


async def stale_after(page: Page, since_ms: float) -> float:
    """Seconds from `since_ms` (the page's clock) to the badge turning STALE; the page must
    also name the control plane among its problems."""
    await expect(page.locator("#stream")).to_have_text("STALE")
    seen: list[tuple[str, float]] = await page.evaluate("window.badgeSeen")
    stale_at = next(at for text, at in seen if text == "STALE")
    problems = await page.locator("#problems").inner_text()
    assert "control plane" in problems, problems
    return (stale_at - since_ms) / 1000


@pytest.fixture(scope="module")
def lone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoggedIn]:
    with logged_in(tmp_path_factory.mktemp("lone")) as who:
        yield who


@pytest.mark.asyncio(loop_scope="session")
async def test_the_page_is_stale_as_soon_as_the_control_plane_is_gone(
    browser: Browser, lone: LoggedIn
) -> None:
    context, page = await watched_page(browser, lone)
    try:
        _stop_nats(lone.console.fleet)
        took = await stale_after(page, await page.evaluate("Date.now()"))
        assert took < STALE_WITHIN_S, f"LIVE for {took:.2f} s after the control plane was gone"
    finally:
        await context.close()
