"""A node whose id is also a name every JavaScript object answers to, and the kill button.

The roster's name rule lets a node be called `constructor`, `__proto__` or `toString`. The
page kept its kill's rows in a plain object keyed by node id: `rows["constructor"]` is the
object's constructor, not a row, so drawing the kill's rows raised a TypeError before the
kill was posted. The operator clicked "Kill now", the page said "waiting for
confirmations…" for good, and no kill was sent: the stop direction was gated by a node's
name.

Its own fleet (`knightwatch up`, one node process) and console: two node identities are
enrolled under those names and write live membership records, which the shared fleet's
tests would count as nodes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.async_api import Browser, expect

from knightwatch.console.local import ConsoleProc
from knightwatch.control.plane.rosters import publish_roster
from knightwatch.control.plane.wire import ENCODER, NodeStatus
from knightwatch.release.dsse import encode_envelope
from knightwatch.release.keys import SigningKey
from knightwatch.state import TradingState
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role

from .conftest import KILL_TIMEOUT_S, login, own_console
from .test_unreadable import _connect

pytestmark = pytest.mark.asyncio(loop_scope="session")

NAMES = ("constructor", "__proto__")
"""Node ids the roster's name rule allows that every plain JavaScript object already has."""


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleProc]:
    # n1 must confirm within the kill's wait, which the two names never end early
    with own_console(tmp_path_factory, "names", "--kill-timeout", str(KILL_TIMEOUT_S)) as console:
        yield console


async def _enrol(console: ConsoleProc) -> None:
    """Nodes named `NAMES` on the roster, each with a live membership record (no process
    behind it: it never confirms a kill, so the kill's rows name it NOT CONFIRMED)."""
    fleet = console.fleet
    kit = Kit.read(fleet.state / "trust")
    for name in NAMES:
        envelope = kit.add(name, [Role.NODE], SigningKey.generate())
        (fleet.state / "trust" / "roster" / f"v{kit.roster.version}.json").write_bytes(
            encode_envelope(envelope)
        )
        admin = await _connect(console, "admin1", kit)
        try:
            await publish_roster(admin, envelope)
        finally:
            await admin.close()
    for name in NAMES:
        plane = await _connect(console, name, kit)
        try:
            now = time.time_ns()
            record = NodeStatus(name, "h", 1, now, now, now + 10**12, True, True,
                                TradingState.ACTIVE)  # fmt: skip
            await plane._members.put(name, ENCODER.encode(record))  # type: ignore[union-attr]
        finally:
            await plane.close()


async def test_a_node_named_like_an_object_property_does_not_stop_the_kill_button(
    browser: Browser, named: ConsoleProc
) -> None:
    await _enrol(named)
    page = await login(browser, named, "alice")
    for name in NAMES:
        await expect(page.locator("#nodes tbody tr td:first-child", has_text=name)).to_have_count(1)
    await page.fill("#kill-reason", "drill: node names")
    await page.click("#kill-button")
    await page.fill("#kill-confirm", "KILL")
    await page.click("#kill-now")
    title = page.locator("#kill-result-title")
    await expect(title).to_contain_text("HALTED fleet fleet: NOT every node confirmed")
    for name in NAMES:
        row = page.locator(f'#kill-rows tbody tr[data-node="{name}"]')
        await expect(row.locator("td").nth(1)).to_have_text("NOT CONFIRMED (lease live)")
    await expect(page.locator("#kill-rows tbody tr[data-node='n1'] td").nth(1)).to_contain_text(
        " ms"
    )
    assert await page.evaluate("document.body.dataset.lastKill") == "unconfirmed"
    await page.context.close()
