"""A kill a node holds before its host installs a drain is drained once the drain is there.

`prepare` (a gateway reconciling its venue) installs `runtime.drain`, but a kill restored
from the store at start is applied by `runtime.start()`, and one heard while the node waits
to be admitted or early in `prepare` arrives before it too: before, no drain ran for either
and the kill was confirmed with nothing drained (`still_working` empty) while the orders the
process held kept working at the venue. The Guard's halt is applied at once either way.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.wire import Confirmation, StateEntry
from knightwatch.control.serve import serve_node
from knightwatch.control.site import Site
from knightwatch.state import Scope, TradingState

WAIT_S = 10.0


async def _serve_with_drain(
    site: Site, root: Path, *, kill_in_prepare: bool, resume_in_prepare: str = ""
) -> tuple[list[str], list[Confirmation], list[TradingState]]:
    """Run n1 with a `prepare` that installs a drain reporting one order still working;
    with `kill_in_prepare`, alice kills strategy s1 from inside `prepare`, before the drain
    is installed; with `resume_in_prepare` (a kill's command id), alice and bob resume
    it there, before the drain is installed. The drained command ids, n1's confirmations,
    and the Guard's state of strategy s1 seen in `prepare` before the drain was installed."""
    (root / "state").mkdir(exist_ok=True)
    drained: list[str] = []
    done = asyncio.Event()
    seen: list[TradingState] = []
    confirmations: list[Confirmation] = []
    watcher = await site.connect("alice")

    async def on_confirm(c: Confirmation) -> None:
        if c.node_id == "n1":
            confirmations.append(c)

    await watcher.subscribe_confirmations(on_confirm)

    async def drain(entry: StateEntry) -> list[str]:
        drained.append(entry.command_id)
        done.set()
        return ["ORD-7"]

    async def prepare(runtime: NodeRuntime, stop: asyncio.Event) -> None:
        if kill_in_prepare:
            operator = site.killswitch(await site.connect("alice"), "alice")
            try:
                await operator.kill(Scope.STRATEGY, "s1", "heard during start", timeout_s=0.2)
            finally:
                await operator.plane.close()
            for _ in range(500):
                if runtime.held(Scope.STRATEGY, "s1") is not None:
                    break
                await asyncio.sleep(0.01)
        seen.append(runtime.guard.trading_state(Scope.STRATEGY, "s1"))  # in force already
        if resume_in_prepare:
            operator = site.killswitch(await site.connect("alice"), "alice")
            try:
                await operator.resume(
                    Scope.STRATEGY, "s1", "fixed", approvers=(site.signer("bob"),)
                )
            finally:
                await operator.plane.close()
            for _ in range(500):
                held = runtime.held(Scope.STRATEGY, "s1")
                if held is not None and held.command_id != resume_in_prepare:
                    break
                await asyncio.sleep(0.01)
            done.set()  # nothing is to be drained: the trader need not wait
        runtime.drain = drain

    async def trader(runtime: NodeRuntime, stop: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(done.wait(), WAIT_S)
            for _ in range(200):  # the confirmation follows the drain's answer
                if any(c.still_working for c in confirmations):
                    break
                await asyncio.sleep(0.02)
        except TimeoutError:
            pass
        signal.raise_signal(signal.SIGTERM)
        await stop.wait()

    try:
        await serve_node(
            "n1",
            [site.url],
            root / "state",
            signer=site.signer("n1"),
            anchor=site.kit.anchor,
            limits_path=None,
            policy=LeasePolicy(),
            trader=trader,
            recorder_path=root / "n1.jsonl",
            prepare=prepare,
        )
    finally:
        await watcher.close()
    return drained, confirmations, seen


async def _killed_before_start(site: Site) -> str:
    """alice kills strategy s1 before the node starts (stored: restored at its start)."""
    operator = site.killswitch(await site.connect("alice"), "alice")
    try:
        result = await operator.kill(Scope.STRATEGY, "s1", "before the restart", timeout_s=0.2)
    finally:
        await operator.plane.close()
    return result.entry.command_id


async def test_a_kill_restored_from_the_store_at_start_is_drained(
    site: Site, tmp_path: Path
) -> None:
    kill_id = await _killed_before_start(site)
    drained, confirmations, seen = await _serve_with_drain(site, tmp_path, kill_in_prepare=False)
    assert seen == [TradingState.HALTED]  # the Guard blocked before any drain
    assert drained == [kill_id]
    mine = [c for c in confirmations if c.command_id == kill_id]
    assert mine and mine[0].still_working == ["ORD-7"], mine  # not "nothing left" first


async def test_a_kill_heard_during_start_before_the_drain_is_drained(
    site: Site, tmp_path: Path
) -> None:
    drained, confirmations, seen = await _serve_with_drain(site, tmp_path, kill_in_prepare=True)
    assert seen == [TradingState.HALTED]
    assert len(drained) == 1
    mine = [c for c in confirmations if c.command_id == drained[0]]
    assert mine and mine[0].still_working == ["ORD-7"], mine


async def test_a_kill_resumed_before_the_drain_is_installed_is_not_drained(
    site: Site, tmp_path: Path
) -> None:
    """Resumed while the node prepared: its scope's orders are not cancelled after all."""
    kill_id = await _killed_before_start(site)
    drained, _, seen = await _serve_with_drain(
        site, tmp_path, kill_in_prepare=False, resume_in_prepare=kill_id
    )
    assert seen == [TradingState.HALTED]
    assert drained == []
