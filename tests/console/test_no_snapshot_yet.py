"""Before the console has built any snapshot, its page says so and its kill still goes.

A console whose first read of the fleet failed (the control plane went away between its
connect and that read) held no snapshot, and its stream began with `{}` as one. The page
took it for the fleet: drawing it threw, and the kill form, which draws a row per node
before it posts, threw too: the page said "waiting for confirmations…" for a kill it never
sent. The stream now begins with the problem alone (no snapshot: STALE until one), and the
page posts its kill whatever its rows could or could not draw.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from playwright.async_api import Browser, Route, expect
from starlette.types import Message

from knightwatch.console.app import build_app
from knightwatch.console.local import ConsoleProc

from .conftest import login
from .second import second_console, signed_in
from .test_stream_gap import _events

DOWN = "control plane: no servers available for connection"


@pytest.mark.asyncio(loop_scope="session")
async def test_a_stream_with_no_snapshot_built_starts_with_the_problem_not_an_empty_one(
    console: ConsoleProc, tmp_path: Path
) -> None:
    async with second_console(console, tmp_path) as second:
        async with signed_in(second, "carol") as [(http, _)]:
            cookie = f"{second.cookie}={http.cookies[second.cookie]}"
        await second.watch.stop()  # and left as a first read that failed leaves it
        second.watch.latest, second.watch.latest_json, second.watch.error = None, b"{}", DOWN
        chunks: list[bytes] = []
        gone = asyncio.Event()

        async def receive() -> Message:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": "GET", "scheme": "http", "path": "/api/events",
            "raw_path": b"/api/events", "root_path": "", "query_string": b"",
            "headers": [(b"host", b"127.0.0.1"), (b"cookie", cookie.encode())],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
        }  # fmt: skip
        served = asyncio.create_task(build_app(second)(scope, receive, send))
        try:
            async with asyncio.timeout(10):
                while not any(e == "beat" for e, _ in _events(chunks)):
                    await asyncio.sleep(0.01)
        finally:
            gone.set()
            served.cancel()
            await asyncio.gather(served, return_exceptions=True)
    events = _events(chunks)
    assert events[0][0] == "problem", events[:3]
    assert DOWN in json.loads(events[0][1])["error"]
    assert "snapshot" not in [e for e, _ in events], events


@pytest.mark.asyncio(loop_scope="session")
async def test_the_kill_is_posted_whatever_the_page_could_draw(
    browser: Browser, console: ConsoleProc
) -> None:
    page = await login(browser, console, "alice")
    await expect(page.locator("#nodes tbody tr")).to_have_count(3)
    problem = json.dumps({"error": DOWN})
    stream = f"retry: 600000\n\nevent: snapshot\ndata: {{}}\n\nevent: problem\ndata: {problem}\n\n"

    async def feed(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/event-stream", body=stream)

    await page.route("**/api/events", feed)
    await page.reload()
    await expect(page.locator("#problems")).to_contain_text("no servers available")
    await expect(page.locator("#stream")).to_have_text("STALE")
    # the session is ended, so the real console refuses the kill and the shared fleet is
    # left as it was: what is tested is that the page posted it and shows the answer
    status = await page.evaluate(
        """async () => {
            const csrf = document.body.dataset.csrf;
            const out = await fetch("/logout", {method: "POST", headers: {"X-CSRF-Token": csrf},
                                                redirect: "manual"});
            return out.type;
        }"""
    )
    assert status == "opaqueredirect", status
    kills: list[str] = []
    page.on("request", lambda r: kills.append(r.url) if r.url.endswith("/api/kill") else None)
    await page.select_option("#kill-scope", "strategy")
    await page.fill("#kill-key", "page-no-snapshot")
    await page.fill("#kill-reason", "runaway")
    await page.click("#kill-button")
    await page.fill("#kill-confirm", "page-no-snapshot")
    await page.click("#kill-now")
    title = page.locator("#kill-result-title")
    await expect(title).to_contain_text("refused (401)")
    assert len(kills) == 1, kills
    assert await page.get_attribute("body", "data-last-kill") == "refused"
    await page.context.close()
