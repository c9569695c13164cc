"""What the control plane lists but cannot read, on the page: shown as such, never as healthy.

Its own fleet (`knightwatch up`, one node process) and console, because it leaves records
in the store no tool can remove (a kill-state key that is no slot stays listed, deleted or
not) and enrols two more node identities: the session's shared fleet stays as the other
tests expect it. The two newcomers write what a broken or hostile node could: n8 a
membership record that does not decode, n9 one naming another node (with markup in the
name). alice writes `strategy.a.b` and a deleted `strategy.x.y`, keys that are no slot.
The supervisor puts n1 in REDUCING by `supervisor_node_gross_exposure` (the real node
confirms it) and halts two strategies by its other new rules. A real browser must show
n8 and n9 as UNREADABLE with their reasons as text, n1 as REDUCING (in the fleet, the
halts and the alerts, distinct from HALTED), and the malformed keys by their keys with no
resume button, never as the slots they resemble.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from playwright.async_api import Browser, expect

from knightwatch.clock import SystemClock
from knightwatch.console.local import ConsoleProc
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.node.trustfeed import identify
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.plane.rosters import publish_roster
from knightwatch.control.plane.wire import ENCODER, NodeStatus
from knightwatch.release.dsse import encode_envelope
from knightwatch.release.keys import SigningKey
from knightwatch.state import Scope, TradingState
from knightwatch.trust.identity import load_signer
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role
from knightwatch.trust.store import TrustStore, load_anchor

from .conftest import login, own_console

pytestmark = pytest.mark.asyncio(loop_scope="session")

FORGED = "<img src=x onerror=window.__xss=1>"
GROSS = "supervisor_node_gross_exposure: node n1 gross exposure $2,100,000 over $2,000,000"
DAY = "supervisor_principal_day: principal $9,000,000 over a day (10x principal_floor)"
METRICS = "supervisor_unreadable_metrics: the counters of n1 went backwards"


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleProc]:
    with own_console(tmp_path_factory, "unreadable") as console:
        yield console


async def _connect(console: ConsoleProc, name: str, kit: Kit) -> NatsControlPlane:
    """A connection as `name`, once the fleet's NATS server knows its key."""
    deadline = time.monotonic() + 30
    while True:
        plane = NatsControlPlane([console.fleet.url], name=f"{name}-test", signer=kit.signer(name))
        try:
            await plane.connect()
            return plane
        except ControlPlaneUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _break(console: ConsoleProc) -> None:
    fleet = console.fleet
    kit = Kit.read(fleet.state / "trust")
    for name in ("n8", "n9"):
        envelope = kit.add(name, [Role.NODE], SigningKey.generate())
        (fleet.state / "trust" / "roster" / f"v{kit.roster.version}.json").write_bytes(
            encode_envelope(envelope)
        )
        admin = await _connect(console, "admin1", kit)
        try:
            await publish_roster(admin, envelope)
        finally:
            await admin.close()
    n8, n9 = await _connect(console, "n8", kit), await _connect(console, "n9", kit)
    try:
        await n8._members.put("n8", b'{"node_id": "n8", "pid": "<b>oops</b>"')  # type: ignore[union-attr]
        now = time.time_ns()
        forged = NodeStatus(FORGED, "h", 1, now, now, now + 10**12, True, True,
                            TradingState.ACTIVE)  # fmt: skip
        await n9._members.put("n9", ENCODER.encode(forged))  # type: ignore[union-attr]
    finally:
        await n8.close()
        await n9.close()
    alice = NatsControlPlane(
        [fleet.url], name="alice-test", signer=load_signer(fleet.key("alice"), "unnamed")
    )
    await alice.connect()
    try:
        kv = alice._state_kv()
        await kv.put("strategy.a.b", b'{"state": 0}')
        await kv.put("strategy.x.y", b"{}")
        await kv.delete("strategy.x.y")
    finally:
        await alice.close()
    signer = load_signer(fleet.key("supervisor"), "unnamed")
    plane = NatsControlPlane([fleet.url], name="supervisor-test", signer=signer)
    await plane.connect()
    try:
        store = TrustStore(load_anchor(fleet.state / "trust" / "anchor.toml"))
        ks = KillSwitch(plane, SystemClock(), await identify(plane, signer, store), store)
        await ks.start()
        reduced = await ks.kill(Scope.NODE, "n1", GROSS, timeout_s=10, state=TradingState.REDUCING)
        assert reduced.ok, reduced
        await ks.kill(Scope.STRATEGY, "sv-day", DAY, timeout_s=1)
        await ks.kill(Scope.STRATEGY, "sv-metrics", METRICS, timeout_s=1)
    finally:
        await plane.close()


async def test_unreadable_members_reduce_and_malformed_keys_are_shown_as_such(
    browser: Browser, broken: ConsoleProc
) -> None:
    await _break(broken)
    page = await login(browser, broken, "alice", bypass_csp=True)
    nodes = page.locator("#nodes tbody tr")
    await expect(nodes).to_have_count(3)
    n1, n8, n9 = (page.locator("#nodes tbody tr", has_text=n) for n in ("n1", "n8", "n9"))
    await expect(n1.locator("td").nth(5)).to_have_text("REDUCING")
    for row in (n8, n9):
        await expect(row.locator("td").nth(1)).to_have_text("UNREADABLE")
        await expect(row.locator("td").nth(5)).to_have_text("UNREADABLE (held HALTED)")
    await expect(n8.locator("td").nth(8)).to_contain_text("member_undecodable: ")
    await expect(n9.locator("td").nth(8)).to_contain_text("member_forged: ")
    await expect(n9.locator("td").nth(8)).to_contain_text(f"'{FORGED}'")  # literally
    await expect(page.locator("main img")).to_have_count(0)
    assert await page.evaluate("window.__xss === undefined")

    halts = page.locator("#halts tbody tr")
    reduce = halts.filter(has_text="node n1")
    await expect(reduce.locator("td").nth(1)).to_have_text("REDUCING")
    await expect(reduce.locator("td").nth(4)).to_have_text(GROSS)
    for slot in ("strategy.a.b", "strategy.x.y"):
        row = halts.filter(has_text=f"MALFORMED KEY {slot}")
        await expect(row).to_have_count(1)
        await expect(row.locator("td").nth(1)).to_contain_text(
            f"state_key_malformed: '{slot}' is no slot"
        )
        await expect(row.locator("button")).to_have_count(0)  # no resume addresses it
    await expect(halts.filter(has_text="MALFORMED KEY strategy.x.y")).to_contain_text(
        "held by no reader"
    )
    for text in ("strategy a.b", "strategy x.y"):  # never shown as the slot it resembles
        await expect(halts.locator("td:first-child", has_text=text)).to_have_count(0)

    alerts = page.locator("#alerts tbody tr")
    await expect(alerts.filter(has_text="node n1").locator("td").nth(2)).to_have_text(
        f"REDUCING: {GROSS}"
    )
    await expect(alerts.filter(has_text="sv-day").locator("td").nth(2)).to_have_text(
        f"HALTED: {DAY}"
    )
    await expect(alerts.filter(has_text="sv-metrics").locator("td").nth(2)).to_have_text(
        f"HALTED: {METRICS}"
    )
    await expect(alerts.filter(has_text="MALFORMED KEY strategy.a.b")).to_have_count(1)
    await page.context.close()
