"""The console in a real browser against a real fleet: the red button and the two-person resume.

One fleet (`knightwatch up`, three node processes) and one console per session;
the tests run in file order and build on each other the way an incident does:
log in, kill, see every node confirm, request a resume, be refused
self-approval, have a second person approve, see the nodes trade again; then
a request made stale by a second kill, a dead stream, and the audit trail of
all of it, verified by `knightwatch audit verify`.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.async_api import Browser, Page, expect

from knightwatch.console.local import PASSWORD, ConsoleProc, Fleet

from .conftest import audit_verify, halts_seen, login

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def csrf_of(page: Page) -> str:
    token = await page.get_attribute("body", "data-csrf")
    assert token
    return token


async def api_post(
    page: Page, path: str, body: dict[str, object], **headers: str
) -> tuple[int, dict[str, object]]:
    """A POST from the page's own session (cookie, CSRF token), as the page's script sends it."""
    response = await page.request.post(
        page.url.split("/", 3)[0] + "//" + page.url.split("/", 3)[2] + path,
        data=json.dumps(body),
        headers={
            "Content-Type": "application/json",
            "X-CSRF-Token": await csrf_of(page),
            **headers,
        },
    )
    return response.status, await response.json()


async def shown(page: Page, request_id: object) -> dict[str, object]:
    """The request as the page is shown it (the snapshot's row): what an approval names."""
    response = await page.request.get(
        page.url.split("/", 3)[0] + "//" + page.url.split("/", 3)[2] + "/api/snapshot"
    )
    row = next(r for r in (await response.json())["requests"] if r["id"] == request_id)
    return {"request_id": request_id, "scope": row["scope"], "key": row["key"],
            "digest": row["digest"]}  # fmt: skip


STATES = "#nodes tbody tr td:nth-child(6)"


async def node_states(page: Page) -> list[str]:
    return await page.locator(STATES).all_inner_texts()


async def test_login_shows_every_node_live(
    browser: Browser, console: ConsoleProc, fleet: Fleet
) -> None:
    page = await login(browser, console, "alice")
    await expect(page.locator("#stream")).to_have_text("LIVE")
    try:
        await expect(page.locator(STATES)).to_have_text(["ACTIVE"] * 3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nnode HALT lines:\n{halts_seen(fleet)}") from None
    await expect(page.locator("#kill-button")).to_be_visible()
    await page.context.close()


async def test_a_wrong_password_is_refused_and_recorded(
    browser: Browser, console: ConsoleProc
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(console.url + "/login")
    await page.fill("#name", "alice")
    await page.fill("#password", "not the password")
    await page.click("#login")
    await expect(page.locator("#login-error")).to_have_text("wrong name or password")
    response = await page.request.get(console.url + "/api/snapshot")
    assert response.status == 401
    await context.close()


async def test_a_viewer_sees_no_kill_button_and_the_api_refuses_their_kill(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "carol")
    await expect(page.locator("#nodes tbody tr")).to_have_count(3)
    await expect(page.locator("#kill-button")).to_have_count(0)
    status, body = await api_post(
        page, "/api/kill", {"scope": "fleet", "reason": "x", "confirm": "KILL"}
    )
    assert status == 403
    assert "kill needs" in str(body["error"])
    assert await node_states(page) == ["ACTIVE"] * 3
    await page.context.close()


async def test_a_cross_site_post_is_refused_even_with_a_valid_session(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "alice")
    status, body = await api_post(
        page, "/api/kill", {"scope": "fleet", "reason": "forged", "confirm": "KILL"},
        **{"Sec-Fetch-Site": "cross-site"},
    )  # fmt: skip
    assert status == 403 and "cross-site" in str(body["error"])
    response = await page.request.post(
        console.url + "/api/kill",
        data=json.dumps({"scope": "fleet", "reason": "no token", "confirm": "KILL"}),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 403  # a valid cookie without the session's CSRF token
    assert await node_states(page) == ["ACTIVE"] * 3
    await page.context.close()


async def test_kill_the_fleet_and_see_every_node_confirm(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "alice")
    await expect(page.locator("#nodes tbody tr")).to_have_count(3)
    await page.fill("#kill-reason", "runaway order flow")
    await page.click("#kill-button")
    await expect(page.locator("#kill-dialog")).to_be_visible()
    await expect(page.locator("#kill-now")).to_be_disabled()
    await page.fill("#kill-confirm", "kill")  # not an exact match
    await expect(page.locator("#kill-now")).to_be_disabled()
    await page.fill("#kill-confirm", "KILL")
    await page.click("#kill-now")
    await expect(page.locator("#kill-result-title")).to_contain_text("every live node confirmed")
    rows = page.locator("#kill-rows tbody tr")
    await expect(rows).to_have_count(3)
    for text in await page.locator("#kill-rows tbody tr td:nth-child(2)").all_inner_texts():
        assert text.endswith(" ms"), text
    await expect(page.locator(STATES)).to_have_text(["HALTED"] * 3)
    halt = page.locator("#halts tbody tr").first
    await expect(halt).to_contain_text("operator")
    await expect(halt).to_contain_text("alice")
    await page.context.close()


async def test_the_requester_cannot_approve_their_own_resume(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "alice")
    await page.locator("#halts tbody tr").first.get_by_role("button", name="request resume").click()
    await page.fill("#resume-reason", "cause found and fixed")
    await page.click("#resume-go")
    await expect(page.locator("#action-message")).to_contain_text("resume requested")
    await expect(page.locator("#preflight-verdict")).to_have_text("preflight passed")
    row = page.locator("#requests tbody tr").first
    await expect(row).to_contain_text("PENDING")
    await expect(row).to_contain_text("other than alice")
    await expect(row).to_contain_text("then 100%")  # the ramp signed with the request
    await expect(row.get_by_role("button", name="approve")).to_have_count(0)
    request_id = await row.get_attribute("data-request")
    status, body = await api_post(
        page, "/api/resume/approve",
        {**await shown(page, request_id), "password": PASSWORD, "reason": "mine"},
    )  # fmt: skip
    assert status == 403 and "requester never counts" in str(body["error"])
    assert await node_states(page) == ["HALTED"] * 3
    await page.context.close()


async def test_a_second_person_approves_and_the_nodes_trade_again(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "bob")
    row = page.locator("#requests tbody tr").first
    await expect(row).to_contain_text("PENDING")
    await row.get_by_role("button", name="approve").click()
    await page.fill("#approve-reason", "checked the preflight")
    await page.fill("#approve-password", "wrong password!")
    await page.click("#approve-go")
    await expect(page.locator("#action-message")).to_contain_text("re-authentication failed")
    assert await node_states(page) == ["HALTED"] * 3
    await row.get_by_role("button", name="approve").click()
    await page.fill("#approve-reason", "checked the preflight")
    await page.fill("#approve-password", PASSWORD)
    await page.click("#approve-go")
    await expect(page.locator("#action-message")).to_contain_text("ramping back")
    await expect(page.locator(STATES)).to_have_text(["ACTIVE"] * 3)
    halt = page.locator("#halts tbody tr").first
    await expect(halt).to_contain_text("approved by bob")
    await expect(page.locator("#ramps tbody tr").first).to_contain_text("alice+bob (signed by bob)")
    await page.context.close()


async def test_a_stale_request_cannot_be_applied(browser: Browser, console: ConsoleProc) -> None:
    alice = await login(browser, console, "alice")
    status, _ = await api_post(
        alice, "/api/kill", {"scope": "node", "key": "n2", "reason": "one", "confirm": "n2"}
    )
    assert status == 200
    status, body = await api_post(
        alice, "/api/resume/request", {"scope": "node", "key": "n2", "reason": "fixed"}
    )
    assert status == 200, body
    request_id = str(body["request_id"])
    status, _ = await api_post(
        alice, "/api/kill", {"scope": "node", "key": "n2", "reason": "again", "confirm": "n2"}
    )
    assert status == 200
    row = alice.locator(f'#requests tbody tr[data-request="{request_id}"]')
    await expect(row).to_contain_text("STALE")
    bob = await login(browser, console, "bob")
    await expect(bob.locator(f'#requests tbody tr[data-request="{request_id}"]')).to_contain_text(
        "STALE"
    )
    status, body = await api_post(
        bob,
        "/api/resume/approve",
        {**await shown(bob, request_id), "password": PASSWORD, "reason": "late"},
    )
    assert status == 409 and "stale" in str(body["error"])
    n2 = bob.locator("#nodes tbody tr", has_text="n2").locator("td:nth-child(6)")
    await expect(n2).to_have_text("HALTED")
    await alice.context.close()
    await bob.context.close()


async def test_a_dead_stream_turns_the_screen_stale_and_the_kill_stays(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "alice")
    await expect(page.locator("#stream")).to_have_text("LIVE")
    await page.evaluate("window.knightwatchStream.close()")
    # three missed beats (0.75 s) and the page's next check: the default wait covers a busy
    # browser's timers
    await expect(page.locator("#stream")).to_have_text("STALE")
    assert "stale" in (await page.get_attribute("body", "class") or "")
    await expect(page.locator("#kill-button")).to_be_enabled()
    await page.context.close()


async def test_audit_search_finds_the_kill_and_audit_verify_accepts_the_file(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "carol")
    await page.goto(console.url + "/audit")
    await page.fill("#q-action", "kill")
    await page.fill("#q-actor", "alice")
    await page.click("#audit-search")
    rows = page.locator("#audit-rows tbody tr")
    await expect(rows).not_to_have_count(0)
    # by cell, not by row text: a timestamp's milliseconds can read "200" or "403"
    killed = rows.filter(has=page.locator("td:nth-child(6)", has_text=_cell("200")))
    killed = killed.filter(has=page.locator("td:nth-child(3)", has_text=_cell("alice")))
    killed = killed.filter(has=page.locator("td:nth-child(5)", has_text="fleet"))
    await expect(killed).not_to_have_count(0)  # alice's fleet kill, done (200)
    await expect(page.locator("#audit-chain")).to_contain_text("chain intact")
    await page.fill("#q-action", "")
    await page.fill("#q-actor", "carol")
    await page.click("#audit-search")
    refused = rows.filter(has=page.locator("td:nth-child(6)", has_text=_cell("403")))
    refused = refused.filter(has=page.locator("td:nth-child(3)", has_text=_cell("carol")))
    await expect(refused.first).to_contain_text("kill")  # carol's refused kill is on record
    await page.context.close()
    audit_verify(console.audit)


def _cell(text: str) -> re.Pattern[str]:
    """A table cell holding exactly `text`."""
    return re.compile(rf"^\s*{re.escape(text)}\s*$")
