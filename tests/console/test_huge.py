"""A huge value from the fleet is shown cut, in a real browser, never whole.

A kill's reason has no bound outside the console (the CLI's `--reason` takes a whole
log file): the page put all of it in the halts table and the approval dialog, one
row 100 kB long, pages of text above the requests an approver must read. The page
shows the first 1,000 characters and says how many more there are; the API keeps
the whole value.
"""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Browser, expect

from knightwatch.clock import SystemClock
from knightwatch.console.local import ConsoleProc
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.node.trustfeed import identify
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.state import Scope
from knightwatch.trust.identity import load_signer
from knightwatch.trust.store import TrustStore, load_anchor

from .conftest import login

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEY = "huge-reason"
REASON = "pasted log line; " * 6000  # 102,000 characters, as `knightwatch kill` sends it
SHOWN_MAX = 1000


async def cli_kill(console: ConsoleProc) -> None:
    """Alice's kill with her own key, as the CLI sends it (no console in between)."""
    fleet = console.fleet
    store = TrustStore(load_anchor(fleet.state / "trust" / "anchor.toml"))
    signer = load_signer(fleet.key("alice"), "unnamed")
    plane = NatsControlPlane([fleet.url], name="alice-cli", signer=signer)
    await plane.connect()
    try:
        ks = KillSwitch(plane, SystemClock(), await identify(plane, signer, store), store)
        await ks.start()
        await ks.kill(Scope.STRATEGY, KEY, REASON, timeout_s=2)
    finally:
        await plane.close()


async def test_a_huge_reason_is_shown_cut_with_what_was_left_out(
    browser: Browser, console: ConsoleProc
) -> None:
    await asyncio.wait_for(cli_kill(console), 30)
    page = await login(browser, console, "alice")
    row = page.locator("#halts tbody tr", has_text=f"strategy {KEY}")
    await expect(row).to_have_count(1)
    # the API gives the stored reason whole (the kill switch cuts one that cannot fit a
    # message to 4,096 characters before it is sent: still four pages past the page's bound)
    snapshot = await page.request.get(console.url + "/api/snapshot")
    halts = (await snapshot.json())["halts"]
    stored = str(next(h for h in halts if h["key"] == KEY)["reason"])
    assert stored.startswith(REASON[:SHOWN_MAX]) and len(stored) > 3 * SHOWN_MAX, len(stored)
    shown = await row.locator("td").nth(4).inner_text()
    assert shown == f"{stored[:SHOWN_MAX]}… ({len(stored) - SHOWN_MAX} more characters)"
    await row.get_by_role("button", name="request resume").click()
    text = await page.locator("#resume-text").inner_text()
    assert len(text) < SHOWN_MAX + 200 and "more characters" in text, len(text)
    await page.context.close()
