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
from dataclasses import dataclass

import httpx
import pytest
from playwright.async_api import Browser, expect

from knightwatch.console.local import PASSWORD, ConsoleProc, running_console, running_fleet

from .test_control_plane_down import _stop_nats

STALE_WITHIN_S = 1.0
"""From the nats-server's port refusing connections to the page showing STALE: the lost
connection is heard at once (it took the failed read's 2 s timeout); generous for a loaded
2-core machine, still short of the read's timeout."""


@dataclass
class Lone:
    console: ConsoleProc
    cookies: dict[str, str]


@pytest.fixture(scope="module")
def lone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lone]:
    with (
        running_fleet(tmp_path_factory.mktemp("lone"), 1) as fleet,
        running_console(fleet) as console,
        httpx.Client(base_url=console.url, follow_redirects=False, timeout=30) as http,
    ):
        answer = http.post("/login", data={"name": "alice", "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        yield Lone(console, dict(http.cookies.items()))


@pytest.mark.asyncio(loop_scope="session")
async def test_the_page_is_stale_as_soon_as_the_control_plane_is_gone(
    browser: Browser, lone: Lone
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        await context.add_cookies(
            [{"name": n, "value": v, "url": lone.console.url} for n, v in lone.cookies.items()]
        )
        page = await context.new_page()
        await page.goto(lone.console.url + "/")
        await expect(page.locator("#stream")).to_have_text("LIVE")
        # every change of the badge, timed by the page's own clock
        await page.evaluate(
            """() => {
              window.badgeSeen = [];
              const badge = document.getElementById("stream");
              new MutationObserver(() => window.badgeSeen.push([badge.textContent, Date.now()]))
                .observe(badge, {childList: true, characterData: true, subtree: true});
            }"""
        )
        _stop_nats(lone.console.fleet)
        gone = await page.evaluate("Date.now()")
        await expect(page.locator("#stream")).to_have_text("STALE")
        seen: list[tuple[str, float]] = await page.evaluate("window.badgeSeen")
        stale_at = next(at for text, at in seen if text == "STALE")
        took = (stale_at - gone) / 1000
        assert took < STALE_WITHIN_S, f"LIVE for {took:.2f} s after the control plane was gone"
        problems = await page.locator("#problems").inner_text()
        assert "control plane" in problems, problems
    finally:
        await context.close()
