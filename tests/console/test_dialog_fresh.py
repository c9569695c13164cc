"""Each resume or approval dialog opens empty: nothing acknowledged for another halt rides along.

Acknowledging a Guard halt's cause is what its preflight asks of a person, one halt at a
time. The dialogs cleared their reason and password when opened, but not the "acknowledge
Guard causes" field: what was typed for one halt (a dialog cancelled, or one sent) was
still there when the next halt's dialog opened, and was sent with it unless the person
noticed it, acknowledging a cause they had not looked at (two strategies halted by the same
Guard rule share its code). The page is fed its halts and a request through its own stream
(the shared fleet keeps none); nothing is posted.
"""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Browser, Page, Route, expect

from knightwatch.console.local import ConsoleProc

from .conftest import login

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _halt(key: str, revision: int) -> dict[str, object]:
    return {"slot": f"strategy.{key}", "scope": "strategy", "key": key, "state": "HALTED",
            "source": "guard:max_position", "actor": "guard:max_position", "approvers": [],
            "reason": "position limit", "issued_ns": 1, "revision": revision,
            "verified": True, "refusal": "", "malformed": ""}  # fmt: skip


def _request(rid: str, key: str) -> dict[str, object]:
    return {"id": rid, "status": "pending", "scope": "strategy", "key": key,
            "requester": "alice", "approvers": [], "needed": "one approver", "reason": "fixed",
            "expires_ns": 0, "detail": "", "preflight": "", "ramp": "-",
            "digest": "0" * 32}  # fmt: skip


async def _fed(page: Page, console: ConsoleProc) -> None:
    snap = json.loads(await (await page.request.get(console.url + "/api/snapshot")).text())
    snap["halts"] = [_halt("dialog-a", 901), _halt("dialog-b", 902)]
    snap["requests"] = [_request("0000000000aa", "dialog-a"), _request("0000000000bb", "dialog-b")]
    stream = f"retry: 600000\n\nevent: snapshot\ndata: {json.dumps(snap)}\n\n"

    async def feed(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/event-stream", body=stream)

    await page.route("**/api/events", feed)
    await page.reload()


async def test_the_resume_dialog_opens_with_nothing_acknowledged(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "alice")
    await _fed(page, console)
    rows = page.locator("#halts tbody tr")
    await rows.filter(has_text="dialog-a").locator("button").click()
    await page.fill("#resume-ack", "max_position")
    await page.press("#resume-ack", "Escape")
    await expect(page.locator("#resume-dialog")).to_be_hidden()
    await rows.filter(has_text="dialog-b").locator("button").click()
    await expect(page.locator("#resume-text")).to_contain_text("dialog-b")
    await expect(page.locator("#resume-ack")).to_have_value("")
    await page.context.close()


async def test_the_approve_dialog_opens_with_nothing_acknowledged(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "bob")
    await _fed(page, console)
    await page.click("#requests tbody tr[data-request='0000000000aa'] button")
    await page.fill("#approve-ack", "max_position")
    await page.press("#approve-ack", "Escape")
    await expect(page.locator("#approve-dialog")).to_be_hidden()
    await page.click("#requests tbody tr[data-request='0000000000bb'] button")
    await expect(page.locator("#approve-text")).to_contain_text("dialog-b")
    await expect(page.locator("#approve-ack")).to_have_value("")
    await page.context.close()
