"""The page turns STALE soon after the control plane goes silent with its socket still open.

A hung server, a frozen VM or a dropped route closes no socket: no disconnect is heard, so
the lost-connection path (`test_stale_on_disconnect.py`) never runs. The console's beats
come from the console, not the fleet, and they kept the page LIVE over a view that no
longer changed until the next fleet read timed out (2 s) or the client's pings failed
(2-3 s). Now the console's view proves its connection with a round trip of its own every
`PROBE_EVERY_S`, and one not answered within `PROBE_TIMEOUT_S` is told to the pages at
once; when the server answers again the page is LIVE again on a fresh read.

Its own fleet (one node) and console (`--heartbeat 0.25`, as every local console): the
nats-server is frozen with SIGSTOP (its sockets stay open) and thawed with SIGCONT.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from playwright.async_api import Browser, expect

from .test_stale_on_disconnect import LoggedIn, logged_in, stale_after, watched_page

STALE_WITHIN_S = 1.5
"""From the nats-server's freeze to the page showing STALE: the probe's bound (0.25 s
between round trips, 0.5 s for one) with room for a loaded 2-core machine, still short of
the 2 s a read took to time out and of the client's pings (2-3 s)."""


def _nats_pid(who: LoggedIn) -> int:
    ports = sorted((who.fleet.state / "nats").glob("nats-server_*.ports"))
    assert ports, f"no nats-server ports file under {who.fleet.state / 'nats'}"
    return int(ports[-1].stem.split("_", 1)[1])


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoggedIn]:
    with logged_in(tmp_path_factory.mktemp("quiet")) as who:
        yield who


@pytest.mark.asyncio(loop_scope="session")
async def test_the_page_is_stale_soon_after_the_control_plane_goes_silent(
    browser: Browser, quiet: LoggedIn
) -> None:
    pid = _nats_pid(quiet)
    context, page = await watched_page(browser, quiet)
    try:
        os.kill(pid, signal.SIGSTOP)  # silent: every socket stays open, nothing answers
        took = await stale_after(page, await page.evaluate("Date.now()"))
        assert took < STALE_WITHIN_S, f"LIVE for {took:.2f} s after the control plane froze"
        # still silent: it stays STALE (the beats go on, the view is not proven)
        await page.wait_for_timeout(1000)
        assert await page.locator("#stream").inner_text() == "STALE"
        os.kill(pid, signal.SIGCONT)
        # answering again: LIVE again on a fresh read, with the problem gone
        await expect(page.locator("#stream")).to_have_text("LIVE")
        await expect(page.locator("#problems")).to_be_hidden()
    finally:
        os.kill(pid, signal.SIGCONT)
        await context.close()
