"""A rollout's abort from the console names the nodes that confirmed the switch-off, and
those that did not.

`knightwatch rollout abort` waits for the exposed nodes to confirm the flag back at its
safe default and names any that did not ("those nodes may still be on the new path"). The
console's abort answered "rollout X: aborted" whatever the nodes did, so an operator who
stopped a rollout from the page read a node still on the new path as switched off. Now
its answer lists `confirmed` and `missing` (node: why), is `ok` only when every exposed
node confirmed, and its line says which did not.

Its own fleet (`knightwatch up`, one node) and console: the rollout record stays in the
store, and the shared fleet's tests expect no rollout there. The rollout is stored as a
driver stores it (the bucket is operator-writable), exposing the live node n1 and n9, a
node that is not running, so it can never confirm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import msgspec
import pytest
from playwright.async_api import Browser, Dialog, expect

from knightwatch.console.local import PASSWORD, ConsoleProc, Fleet
from knightwatch.control.plane.protocol import Bucket
from knightwatch.flags.rollout import RolloutPlan, RolloutState, RolloutStatus, Stage

from .conftest import KILL_TIMEOUT_S, login, own_console, put_as

FLAG = "trading.smars.rlp_enabled"
ROLLOUT = RolloutState(
    rollout_id=f"{FLAG}-1",
    flag_id=FLAG,
    target_value=True,
    nodes=("n1", "n9"),
    plan=RolloutPlan(stages=(Stage("canary", hold_s=600, nodes=2),), halt_on_abort=False),
    started_by="alice",
    approver=None,
    status=RolloutStatus.PROGRESSING,
    stage_index=0,
    stage_started_ns=time.time_ns(),
    exposed=("n1", "n9"),
    switched_on=("n1", "n9"),
)


@pytest.fixture(scope="module")
def rolling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleProc]:
    # n1 must confirm within the abort's wait, which n9 never ends early
    with own_console(tmp_path_factory, "abort", "--kill-timeout", str(KILL_TIMEOUT_S)) as console:
        yield console


async def progressing(fleet: Fleet) -> None:
    """The rollout stored as in progress (again: each test aborts it)."""
    await put_as(fleet, "alice", Bucket.ROLLOUTS, FLAG, msgspec.json.encode(ROLLOUT))


def test_the_abort_names_the_nodes_that_confirmed_the_switch_off_and_those_that_did_not(
    rolling: ConsoleProc,
) -> None:
    asyncio.run(progressing(rolling.fleet))
    with httpx.Client(base_url=rolling.url, follow_redirects=False, timeout=60) as http:
        answer = http.post("/login", data={"name": "alice", "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        page = http.get("/").text
        csrf = page.split('data-csrf="', 1)[1].split('"', 1)[0]
        abort = http.post(
            "/api/rollouts/abort",
            json={"flag": FLAG, "reason": "canary misbehaves"},
            headers={"X-CSRF-Token": csrf},
        )
        assert abort.status_code == 200, abort.text
        body = abort.json()
        assert body["status"] == "aborted" and body["ok"] is False, body
        assert body["exposed"] == ["n1", "n9"] and body["confirmed"] == ["n1"], body
        assert list(body["missing"]) == ["n9"], body
        assert body["missing"]["n9"].startswith("no confirmation within"), body
        line = body["detail"]
        assert line.startswith(f"rollout {FLAG}-1: aborted; flag state revision "), line
        assert "not confirmed by n9 (no confirmation within" in line, line
        assert line.endswith("those nodes may still be on the new path"), line


@pytest.mark.asyncio(loop_scope="session")  # the shared browser's loop
async def test_the_page_shows_an_abort_some_node_did_not_confirm_in_red(
    browser: Browser, rolling: ConsoleProc
) -> None:
    await progressing(rolling.fleet)
    page = await login(browser, rolling, "alice")

    async def answer(dialog: Dialog) -> None:
        await dialog.accept("canary misbehaves")

    page.on("dialog", answer)
    row = page.locator("#rollouts tbody tr", has_text="progressing")
    await row.get_by_role("button", name="abort").click()
    message = page.locator("#action-message")
    await expect(message).to_contain_text(f"rollout {FLAG}-1: aborted")
    await expect(message).to_contain_text("not confirmed by n9 (no confirmation within")
    await expect(message).to_have_class("error")
    await page.context.close()
