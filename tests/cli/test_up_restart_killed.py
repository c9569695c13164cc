"""A local fleet restarted while its kill is in force comes up halted: the stored kill stands.

`up`, a fleet kill, `up` stopped, `up` again on the same state dir: the server keeps the
kill switch's bucket, so every node, new processes with their order flow on, must hold the
kill from its first order (every order blocked `halted`, none accepted) and `status` must
still show the kill; restarting the fleet is never a way to resume it. Nor a way to add a
node: one the restarted fleet would enrol is refused while the kill is in force, and the
fleet does not start. Real processes, a real nats-server and the nodes' own metrics
throughout.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from knightwatch.control.plane.connect import control_plane, recorded_url
from knightwatch.control.plane.wire import NodeMetrics
from knightwatch.decision import RejectReason
from knightwatch.state import TradingState
from knightwatch.trust.identity import load_signer

from .test_fleet_up_running import _stop, _until_up
from .test_resume_revision import WAIT, as_, invoke
from .test_status_stored_resume import entry_cells
from .test_up_named_fleet import _started, _up
from .test_up_named_fleet import fleets as fleets

pytestmark = pytest.mark.timeout(300)
BLOCKED_AT_LEAST = 20
"""Orders each restarted node must have tried (and had blocked) before the test judges it:
at 20 orders/s, a second of its flow past arming."""


async def restarted_metrics(state: Path, nodes: set[str]) -> dict[str, list[NodeMetrics]]:
    """Every metrics report of `nodes` until each has had `BLOCKED_AT_LEAST` orders blocked
    as halted (60 s): the counters are the new processes' own, from their start."""
    carol = load_signer(state / "trust" / "keys" / "carol.key", "carol")
    seen: dict[str, list[NodeMetrics]] = {n: [] for n in nodes}

    async def on_metrics(m: NodeMetrics) -> None:
        if m.node_id in seen:
            seen[m.node_id].append(m)

    def done() -> bool:
        return all(
            reports and reports[-1].blocks.get(RejectReason.HALTED, 0) >= BLOCKED_AT_LEAST
            for reports in seen.values()
        )

    async with control_plane(recorded_url(state), state, "t", signer=carol) as plane:
        await plane.subscribe_metrics(on_metrics)
        deadline = time.monotonic() + 60
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    assert done(), seen
    return seen


def _killed_and_stopped(fleets: list[subprocess.Popen[str]], state: Path, *options: str) -> None:
    """A local fleet started on `state`, killed fleet-wide (confirmed, stored), then stopped."""
    _started(fleets, state, *options)
    code, out = invoke("kill", "--reason", "stop everything", *WAIT, *as_(state, "alice"))
    assert code == 0, out
    assert _stop(fleets.pop()) == 0


def test_a_fleet_restarted_under_its_kill_comes_up_halted_and_never_trades(
    tmp_path: Path, fleets: list[subprocess.Popen[str]]
) -> None:
    state = tmp_path / "state"
    flow = ("--nodes", "2", "--flow", "20")
    _killed_and_stopped(fleets, state, *flow)

    out = _started(fleets, state, *flow)
    assert "2 nodes admitted" in out, out
    for node, reports in asyncio.run(restarted_metrics(state, {"n1", "n2"})).items():
        assert all(m.accepted == 0 for m in reports), (node, reports)  # not one order out
        # the fleet kill, as this node holds it (its own node scope is not what was killed)
        assert TradingState(reports[-1].fleet_state) is TradingState.HALTED, (node, reports[-1])
    code, out = invoke("status", *as_(state, "carol"))
    assert code == 0, out
    scope, _, held, actor, reason, *_ = entry_cells(out)
    assert (scope, held, reason) == ("fleet", "HALTED", "stop everything"), out
    assert "alice" in actor, out
    assert _stop(fleets.pop()) == 0


def test_a_fleet_restarted_under_its_kill_enrols_no_new_node(
    tmp_path: Path, fleets: list[subprocess.Popen[str]]
) -> None:
    state = tmp_path / "state"
    _killed_and_stopped(fleets, state, "--flow", "20")

    more = _up(state, "--nodes", "2", "--flow", "20")
    fleets.append(more)
    with pytest.raises(AssertionError) as ended:  # it ends instead of coming up
        _until_up(more)
    said = str(ended.value)
    assert more.wait(timeout=60) == 2, said
    assert "enrolment of node n2 (never judged): refused while the fleet kill" in said, said
    assert "nodes not admitted" in said and "n2" in said, said
    assert not (state / "nats.url").exists()  # its server stopped: nothing runs
