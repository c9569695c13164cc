"""Stored markup in the real browser: what others control is shown as text, never run.

A strategy key and a symbol, a kill reason, a resume request's reason, a
login name (the audit page's actor) and an order id all reach the page from
people or programs the viewer does not control. Each is stored here through
its real path (the kill form, the API, a failed login) carrying markup whose
handlers would set `window.__xss`, then shown in chromium with the page's CSP
bypassed: what keeps it inert is the page's own rendering (text, never HTML),
not only the policy. Another test holds the CSP itself to blocking an inline
handler that something did insert.
"""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from knightwatch.console.local import ConsoleProc

from .conftest import login

pytestmark = pytest.mark.asyncio(loop_scope="session")

STRATEGY = "<img src=x onerror=window.__xss='strategy'>"
SYMBOL = '"><svg onload=window.__xss=`symbol`>'
REASON = "<script>window.__xss='reason'</script><b>bold</b>"
RESUME = "<img src=y onerror=window.__xss='resume'>"
NAME = "<img src=z onerror=window.__xss='login'>"
ORDER = "<img src=w onerror=window.__xss='order'>"
MARKUP = "img, svg, script, b"
"""No element of these kinds is in any of the console's data tables."""


async def bare_page(browser: Browser, console: ConsoleProc, name: str) -> Page:
    """A logged-in page whose CSP the browser ignores: only the page's rendering protects it."""
    return await login(browser, console, name, bypass_csp=True)


async def nothing_ran(page: Page) -> None:
    assert await page.evaluate("window.__xss === undefined"), await page.evaluate("window.__xss")
    await expect(page.locator(f"main :is({MARKUP})")).to_have_count(0)


async def test_markup_in_a_kill_is_shown_as_text(browser: Browser, console: ConsoleProc) -> None:
    page = await bare_page(browser, console, "alice")
    await page.select_option("#kill-scope", "strategy")
    await page.fill("#kill-key", STRATEGY)
    await page.fill("#kill-reason", REASON)
    await page.click("#kill-button")
    await expect(page.locator("#kill-dialog-text")).to_have_text(
        f"KILL strategy {STRATEGY}: {REASON}"
    )
    await expect(page.locator("#kill-word")).to_have_text(STRATEGY)
    await page.fill("#kill-confirm", STRATEGY)
    await page.click("#kill-now")
    await expect(page.locator("#kill-result-title")).to_contain_text(f"strategy {STRATEGY}")
    row = page.locator("#halts tbody tr", has_text=STRATEGY)
    await expect(row).to_have_count(1)
    await expect(row.locator("td").nth(4)).to_have_text(f"{REASON} (console, alice)")
    await nothing_ran(page)
    await page.context.close()


async def test_markup_in_a_symbol_and_a_resume_request_is_shown_as_text(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await bare_page(browser, console, "alice")
    status = await page.evaluate(
        """async ([key, reason, resume]) => {
            const csrf = document.body.dataset.csrf;
            const post = (path, body) => fetch(path, {method: "POST", body: JSON.stringify(body),
                headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}});
            const kill = await post("/api/kill",
                {scope: "symbol", key, reason, confirm: key});
            const request = await post("/api/resume/request",
                {scope: "symbol", key, reason: resume});
            return [kill.status, request.status];
        }""",
        [SYMBOL, REASON, RESUME],
    )
    assert status == [200, 200], status
    await page.reload()
    halt = page.locator("#halts tbody tr", has_text=SYMBOL)
    await expect(halt).to_have_count(1)
    await expect(halt.locator("td").first).to_have_text(f"symbol {SYMBOL}")
    request = page.locator("#requests tbody tr", has_text=RESUME)
    await expect(request).to_have_count(1)
    await expect(request.locator("td").nth(2)).to_have_text(f"symbol {SYMBOL}")
    await expect(request.locator("td").nth(5)).to_have_text(RESUME)
    await nothing_ran(page)
    await page.context.close()
    bob = await bare_page(browser, console, "bob")  # the approver is shown the same request
    request = bob.locator("#requests tbody tr", has_text=RESUME)
    await request.get_by_role("button", name="approve").click()
    await expect(bob.locator("#approve-text")).to_contain_text(f"symbol {SYMBOL}: {RESUME}")
    await nothing_ran(bob)
    await bob.context.close()


async def test_markup_in_a_login_name_and_an_order_id_is_shown_as_text_on_the_audit_page(
    browser: Browser, console: ConsoleProc
) -> None:
    """Anyone who can reach the login form writes the audit record's actor."""
    failed = httpx.post(console.url + "/login", data={"name": NAME, "password": "x"})
    assert failed.status_code == 401
    page = await bare_page(browser, console, "carol")  # one failure: within the free tries
    await page.goto(console.url + "/audit")
    await page.fill("#q-action", "login")
    await page.fill("#q-actor", NAME)
    await page.click("#audit-search")
    rows = page.locator("#audit-rows tbody tr")
    await expect(rows).not_to_have_count(0)
    await expect(rows.first.locator("td").nth(2)).to_have_text(NAME)
    await page.fill("#why-id", ORDER)
    await page.click("#why-form button")
    await expect(page.locator("#why-out")).to_contain_text(ORDER)
    await nothing_ran(page)
    await page.context.close()


async def test_the_pages_policy_blocks_an_inline_handler_that_got_in(
    browser: Browser, console: ConsoleProc
) -> None:
    """The CSP (no 'unsafe-inline') is the second wall: markup inserted by anything else
    still runs no handler and no inline script."""
    page = await login(browser, console, "carol")
    await page.evaluate(
        """() => {
            const div = document.createElement("div");
            div.innerHTML = "<img src=x onerror=\\"window.__xss='inline'\\">";
            // registered after the inline handler: it runs after the inline one would have
            div.querySelector("img").addEventListener("error", () => { window.__failed = true; });
            document.body.appendChild(div);
            const s = document.createElement("script");
            s.textContent = "window.__xss = 'script'";
            document.body.appendChild(s);
        }"""
    )
    await page.wait_for_function("() => window.__failed === true")  # the handler's moment
    assert await page.evaluate("window.__xss === undefined")
    await page.context.close()
