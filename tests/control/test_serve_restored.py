"""What a restarting node takes back from its flight recorder: only its own, and drained.

A node reads its recorder back at every start and replays it into its Guard (halts, flag
changes, used order ids). Before, a file another node wrote (a copied state dir, a wrong
`--recorder`) was replayed unchecked: that node's halts became this node's. And a halt
restored from the node's own file (the store had lost it) was latched in the Guard but
never drained: the orders the process held at its venue from before the crash kept
working under a kill. Real nats-server, real recorders on disk.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from knightwatch.audit import FlightRecorder
from knightwatch.clock import SystemClock
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.connect import FleetError
from knightwatch.control.plane.wire import StateEntry
from knightwatch.control.serve import serve_node
from knightwatch.control.site import Site
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.state import FLEET_KEY, Scope, TradingState

WAIT_S = 10.0


async def _serve(
    site: Site,
    root: Path,
    recorder: Path,
    *,
    kill_fleet: bool = False,
) -> tuple[list[StateEntry], list[StateEntry], list[TradingState]]:
    """Run n1 on `site` with `recorder` and a `prepare` that installs a drain (reporting
    ORD-7 still working); with `kill_fleet`, alice kills the fleet once n1 trades. The
    entries drained by the time the node armed (its trader started), all those drained
    while it ran, and the fleet's state in n1's Guard as the trader saw it."""
    (root / "state").mkdir(exist_ok=True)
    drained: list[StateEntry] = []
    armed: list[StateEntry] = []
    seen: list[TradingState] = []

    async def drain(entry: StateEntry) -> list[str]:
        drained.append(entry)
        return ["ORD-7"]

    async def prepare(runtime: NodeRuntime, stop: asyncio.Event) -> None:
        runtime.drain = drain

    async def trader(runtime: NodeRuntime, stop: asyncio.Event) -> None:
        armed.extend(drained)
        if kill_fleet:
            operator = site.killswitch(await site.connect("alice"), "alice")
            try:
                await operator.kill(Scope.FLEET, FLEET_KEY, "before the crash", timeout_s=WAIT_S)
            finally:
                await operator.plane.close()
        await asyncio.sleep(0.5)  # a drain started late would be seen here
        seen.append(runtime.guard.trading_state(Scope.FLEET, FLEET_KEY))
        signal.raise_signal(signal.SIGTERM)
        await stop.wait()

    await serve_node(
        "n1",
        [site.url],
        root / "state",
        signer=site.signer("n1"),
        anchor=site.kit.anchor,
        limits_path=None,
        policy=LeasePolicy(),
        trader=trader,
        recorder_path=recorder,
        prepare=prepare,
    )
    return armed, drained, seen


async def test_a_fleet_kill_restored_from_the_recorder_is_drained_before_arming(
    site: Site, tmp_path: Path
) -> None:
    """alice kills the fleet; n1 records it and stops. The server's disk is wiped (a new
    server, same roster): n1 comes back halted from its own record, and its drain cancels
    what the venue holds before the node arms. A node cannot store a fleet halt again
    (LOST_HALT_UNSTORABLE), so no echo from the store ever drained it."""
    recorder = tmp_path / "n1.jsonl"
    _, drained, _ = await _serve(site, tmp_path, recorder, kill_fleet=True)
    kill = [e for e in drained if e.scope is Scope.FLEET]
    assert len(kill) == 1  # drained when heard, while running
    wiped = Site(tmp_path / "wiped", kit=site.kit)
    await wiped.astart()
    try:
        armed, drained, seen = await _serve(wiped, tmp_path, recorder)
    finally:
        wiped.stop()
    assert seen == [TradingState.HALTED]  # restored from the record
    assert [(e.scope, e.key, e.command_id) for e in drained] == [
        (Scope.FLEET, FLEET_KEY, kill[0].command_id)
    ]
    assert armed == drained  # before the node armed
    assert drained[0].state is TradingState.HALTED
    assert "restored from this node's flight recorder" in drained[0].reason


async def test_a_drain_restored_from_the_recorder_is_drained_without_a_store(
    site: Site, tmp_path: Path
) -> None:
    """A recorder whose Guard latched strategy s1 REDUCING (no command: an older record);
    the store has nothing: n1 comes back with s1 reducing, and drains it before arming."""
    recorder = tmp_path / "n1.jsonl"
    rec = FlightRecorder(recorder, clock=SystemClock())
    guard = Guard(Limits.off(), node="n1", clock=SystemClock(), recorder=rec)
    guard.halt(Scope.STRATEGY, "s1", "drain s1", "alice", state=TradingState.REDUCING)
    rec.close()
    armed, drained, _ = await _serve(site, tmp_path, recorder)
    assert armed == drained
    assert [(e.scope, e.key, e.state) for e in drained] == [
        (Scope.STRATEGY, "s1", TradingState.REDUCING)
    ]


async def test_a_recorder_another_node_wrote_stops_the_start(site: Site, tmp_path: Path) -> None:
    """n2's file given to n1 (a copied state dir): refused, one line naming the file and
    both nodes; before, n2's halt of strategy s1 became n1's, and n2's order ids too."""
    recorder = tmp_path / "n2.jsonl"
    rec = FlightRecorder(recorder, clock=SystemClock())
    guard = Guard(Limits.off(), node="n2", clock=SystemClock(), recorder=rec)
    guard.halt(Scope.STRATEGY, "s1", "n2's own trouble", "alice")
    rec.close()
    with pytest.raises(FleetError) as err:
        await _serve(site, tmp_path, recorder)
    message = str(err.value)
    assert message.startswith(f"--recorder: {recorder}: line 1: written by node 'n2', ")
    assert "this node 'n1'" in message
    assert "\n" not in message


async def test_a_recorder_with_another_nodes_lines_after_its_own_stops_the_start(
    site: Site, tmp_path: Path
) -> None:
    """n1's own file with a record of n2 appended (one file written by two nodes): refused
    at that line, not only when the first line is another node's."""
    recorder = tmp_path / "n1.jsonl"
    await _serve(site, tmp_path, recorder)
    lines = recorder.read_bytes().rstrip(b"\0").splitlines(keepends=True)
    seq = len(lines)
    bad = (
        f'{{"seq":{seq},"ts":1,"kind":"halt","node":"n2","release_id":null,'
        '"flag_snapshot_id":null,"limits_version":"","data":{"scope":"strategy",'
        '"key":"s1","state":"HALTED","code":"halted","reason":"x","actor":"alice"}}\n'
    )
    recorder.write_bytes(b"".join(lines) + bad.encode())
    with pytest.raises(FleetError) as err:
        await _serve(site, tmp_path, recorder)
    message = str(err.value)
    assert message.startswith(f"--recorder: {recorder}: line {seq + 1}: written by node 'n2'")


async def test_a_kill_the_store_still_holds_is_drained_once_at_a_restart(
    site: Site, tmp_path: Path
) -> None:
    """The counter-case: the store kept alice's fleet kill. The runtime drains it as the
    stored kill it applies (`DrainOnceReady`); its latch is not drained a second time."""
    recorder = tmp_path / "n1.jsonl"
    _, drained, _ = await _serve(site, tmp_path, recorder, kill_fleet=True)
    kill_id = next(e.command_id for e in drained if e.scope is Scope.FLEET)
    _, drained, seen = await _serve(site, tmp_path, recorder)
    assert seen == [TradingState.HALTED]
    assert [e.command_id for e in drained] == [kill_id]
