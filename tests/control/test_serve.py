from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from knightwatch.audit import FlightRecorder
from knightwatch.clock import SimClock, SystemClock
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.connect import FleetError
from knightwatch.control.serve import default_recorder_path, serve_node
from knightwatch.control.site import Site
from knightwatch.decision import Decision, RejectReason
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Order, Side

HOUR_NS = 3600 * 1_000_000_000


def test_default_flight_recorder_lives_under_the_state_dir(tmp_path: Path) -> None:
    assert default_recorder_path(tmp_path, "n7") == tmp_path / "audit" / "n7.jsonl"


def _order(oid: str) -> Order:
    return Order(oid, "s1", "AAPL", Side.BUY, 10, 100.0, None)


async def _run_node(site: Site, root: Path, ids: list[str], limits: str = "") -> list[Decision]:
    """Start `knightwatch node`'s service on `root`'s recorder, send `ids` once it is armed,
    stop it with SIGTERM (as an operator or a crash-restart supervisor does); the verdicts."""
    limits_path = None
    if limits:
        limits_path = root / "limits.toml"
        limits_path.write_text(limits)
    (root / "state").mkdir(exist_ok=True)  # as `knightwatch node` makes it
    verdicts: list[Decision] = []

    async def trader(runtime: NodeRuntime, stop: asyncio.Event) -> None:
        runtime.on_price("AAPL", 100.0)
        verdicts.extend(runtime.check(_order(oid)) for oid in ids)
        signal.raise_signal(signal.SIGTERM)
        await stop.wait()

    await serve_node(
        "n1",
        [site.url],
        root / "state",
        signer=site.signer("n1"),
        anchor=site.kit.anchor,
        limits_path=limits_path,
        policy=LeasePolicy(),
        trader=trader,
        recorder_path=root / "n1.jsonl",
    )
    assert len(verdicts) == len(ids)  # the node armed and traded
    return verdicts


async def test_a_restarted_node_still_refuses_the_ids_it_accepted_before(
    site: Site, tmp_path: Path
) -> None:
    """A router that resends its journal after a restart (the Knight-style failure): the
    node, restarted mid-day on the same recorder, refuses every id it accepted before."""
    first = await _run_node(site, tmp_path, ["A-1", "A-2"])
    assert [d.accepted for d in first] == [True, True]
    again = await _run_node(site, tmp_path, ["A-1", "A-2", "A-3"])
    assert [d.reason for d in again[:2]] == [RejectReason.DUPLICATE_ORDER_ID] * 2
    assert again[2].accepted  # a new id passes
    third = await _run_node(site, tmp_path, ["A-3", "A-4"])  # and across a second restart
    assert third[0].reason is RejectReason.DUPLICATE_ORDER_ID and third[1].accepted


async def test_an_id_accepted_longer_ago_than_the_window_passes_after_a_restart(
    site: Site, tmp_path: Path
) -> None:
    """The previous process accepted B-old two hours ago and B-new just now; with a one-hour
    window only B-new is still taken."""
    now = SystemClock().time_ns()
    clock = SimClock(now - 2 * HOUR_NS)
    rec = FlightRecorder(tmp_path / "n1.jsonl", clock=clock)
    guard = Guard(Limits.off(), node="n1", clock=clock, recorder=rec)
    guard.arm("test")
    guard.on_price("AAPL", 100.0)
    assert guard.check(_order("B-old")).accepted
    clock.advance_to(now)
    assert guard.check(_order("B-new")).accepted
    rec.close()
    verdicts = await _run_node(
        site, tmp_path, ["B-old", "B-new"], "[fleet]\nduplicate_id_window_s = 3600\n"
    )
    assert verdicts[0].accepted
    assert verdicts[1].reason is RejectReason.DUPLICATE_ORDER_ID


async def test_a_recorder_whose_accepted_decision_cannot_be_read_stops_the_start(
    site: Site, tmp_path: Path
) -> None:
    """An accepted decision whose order id the node cannot read: refused to start, with one
    line naming the file and the line, not started blind to the ids it used."""
    await _run_node(site, tmp_path, ["D-1"])
    path = tmp_path / "n1.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    seq = len(lines)  # every line counts in seq, seals too
    bad = f'{{"seq":{seq},"ts":1,"kind":"decision","order_id":7,"accepted":true}}\n'
    path.write_bytes(b"".join(lines) + bad.encode())
    with pytest.raises(FleetError) as err:
        await _run_node(site, tmp_path, ["D-1"])
    message = str(err.value)
    assert message.startswith(f"--recorder: {path}: line {seq + 1}: an accepted decision")
    assert "\n" not in message
