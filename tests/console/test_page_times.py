"""Every time the fleet page shows names its zone (UTC), not only where a header says so.

The halts, alerts and audit columns are headed "(UTC)", but a pending request's "expires"
line, a node's last confirmation and an acknowledgement's time were bare: an operator off
UTC read "expires 04:10" as local and took a request for live that had expired (or the
reverse). The times are fed through the page's own stream (as in test_kill_enter), so the
shared fleet is left as it was.
"""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Browser, Route, expect

from knightwatch.console.local import ConsoleProc

from .conftest import login

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_every_time_on_the_fleet_page_names_its_zone(
    browser: Browser, console: ConsoleProc
) -> None:
    """A pending request's "expires" and a node's last confirmation gave a bare time (only
    some columns' headers said UTC): an operator off UTC read "expires 04:10" as local."""
    page = await login(browser, console, "bob")
    await expect(page.locator("#nodes tbody tr")).to_have_count(3)
    snap = json.loads(await (await page.request.get(console.url + "/api/snapshot")).text())
    at_ns = 1_796_000_000_000_000_000  # 2026-11-30 00:53:20 UTC
    snap["requests"] = [
        {"id": "0123456789ab", "status": "pending", "scope": "strategy", "key": "zone",
         "requester": "alice", "approvers": [], "needed": "one approver", "reason": "fixed",
         "expires_ns": at_ns, "detail": "", "preflight": "", "ramp": "-", "digest": "0" * 32}
    ]  # fmt: skip
    for node in snap["nodes"]:
        node["last_command"], node["last_confirmed_ns"] = "c" * 16, at_ns
    stream = f"retry: 600000\n\nevent: snapshot\ndata: {json.dumps(snap)}\n\n"

    async def feed(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/event-stream", body=stream)

    await page.route("**/api/events", feed)
    await page.reload()
    row = page.locator("#requests tbody tr[data-request='0123456789ab']")
    await expect(row).to_contain_text("expires 2026-11-30 00:53:20.000 UTC")
    confirmed = page.locator("#nodes tbody tr td:nth-child(8)")
    await expect(confirmed).to_have_text(["cccccccc 2026-11-30 00:53:20.000 UTC"] * 3)
    await page.context.close()
