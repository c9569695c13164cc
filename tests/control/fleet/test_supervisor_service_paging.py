"""The supervisor service pages a person once per incident, with the outcome, and a page
that fails never makes a halt that took effect count as failed (it is not issued again)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

import pytest

from knightwatch.clock import SimClock
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import Rule, Supervisor, SupervisorConfig
from knightwatch.control.fleet.supervisor_service import SupervisorService
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.wire import NodeMetrics
from knightwatch.state import TradingState

from ...identities import switch
from ..fleet_fixtures import make_node

S = 1_000_000_000


async def _service(fabric: MemoryFabric, clock: SimClock, pager: Pager) -> SupervisorService:
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    service = SupervisorService(
        plane,
        Supervisor(SupervisorConfig(stale_after_s=60.0), clock),
        switch(plane, clock, "supervisor"),
        pager,
        confirm_timeout_s=0.05,
        concurrent=True,
    )
    await service.start()
    return service


def _pages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("PAGE rule=")]


async def test_a_kill_retried_at_every_sample_pages_once_saying_who_did_not_confirm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node that never confirms its halt is retried at every judgement; before, each retry
    paged again (five samples, five pages, each saying only that a halt was issued)."""
    fabric = MemoryFabric()
    clock = SimClock(10 * S)
    service = await _service(fabric, clock, Pager())
    ghost = MemoryControlPlane(fabric)  # reports, never confirms anything
    await ghost.connect()
    with caplog.at_level(logging.CRITICAL):
        for i in range(5):
            clock.advance(S)
            await ghost.publish_metrics(
                NodeMetrics("ghost", clock.time_ns(), 0, 0, 0, 0, 0.0, 0.0, False, 1 + i)
            )
            await service.drain()
    await service.stop()
    assert [(a.rule, r.ok) for a, r in service.results] == [
        (Rule.ERRORS_BEFORE_ARMING, False)
    ] * 5  # retried at every sample, as before
    pages = _pages(caplog)
    assert len(pages) == 1, pages
    assert "NOT confirmed by ghost" in pages[0]


async def test_a_halt_whose_page_fails_is_not_issued_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The webhook answers something that is not HTTP. Before, the page raised, the service
    took its confirmed halt for failed and re-armed the rule: the node was killed (and the
    webhook hit) again at its next sample, and the action was never recorded."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(b"NOT HTTP\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    fabric = MemoryFabric()
    clock = SimClock(10 * S)
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    node = make_node("n1", plane, clock)
    await node.start()
    pager = Pager(f"http://127.0.0.1:{server.getsockname()[1]}/page", timeout_s=1.0, retries=0)
    service = await _service(fabric, clock, pager)
    try:
        node.report_error("flag 'powerpeg' set on a binary that does not know it")
        node.guard.disarm("test")
        await node.publish_once()
        await service.drain()
        clock.advance(S)
        await node.publish_once()
        await service.drain()
        assert [(a.rule, r.ok) for a, r in service.results] == [(Rule.ERRORS_BEFORE_ARMING, True)]
        assert pager.failed == 1
        recorded = await service.plane.audit()
        assert recorded and b"supervisor_action" in recorded[-1][1].lines()[-1]
    finally:
        await service.stop()
        await node.stop()
        server.close()


async def test_stop_ends_while_a_node_that_never_confirms_goes_on_reporting() -> None:
    """`stop` waits for the halts in flight, but the metrics that go on arriving meanwhile
    started new ones: a node that never confirms its halt had it retried at every sample,
    so `stop` waited for ever (`knightwatch up`, stopped while its fleet was starting,
    hung on it). Now nothing starts once `stop` is called, and what was in flight ends."""
    import asyncio

    fabric = MemoryFabric()
    clock = SimClock(10 * S)
    service = await _service(fabric, clock, Pager())
    ghost = MemoryControlPlane(fabric)  # reports, never confirms anything
    await ghost.connect()
    sent = 0

    async def report() -> None:
        nonlocal sent
        while True:
            clock.advance(S)
            sent += 1
            await ghost.publish_metrics(
                NodeMetrics("ghost", clock.time_ns(), 0, 0, 0, 0, 0.0, 0.0, False, sent)
            )
            await asyncio.sleep(0.01)

    reporting = asyncio.create_task(report())
    try:
        while len(service.results) < 2:  # halted, not confirmed, retried
            await asyncio.sleep(0.01)
        await asyncio.wait_for(service.stop(), 10)
        issued = len(service.results)
        await asyncio.sleep(0.3)  # more samples: nothing more is issued
        assert len(service.results) == issued and service.inflight == 0
    finally:
        reporting.cancel()
        await asyncio.gather(reporting, return_exceptions=True)


async def test_a_new_incident_after_a_halt_that_held_unconfirmed_is_paged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The halt of n-ghost was not confirmed in time (paged, re-armed), yet it held: the node
    then reported itself HALTED, so it was never retried. Resumed, the node misbehaved again
    a day later. Before, that new incident's halt was taken for a retry of the first (its
    (rule, key) stayed marked as already paged for good) and logged only: nobody was paged."""
    fabric = MemoryFabric()
    clock = SimClock(10 * S)
    service = await _service(fabric, clock, Pager())
    ghost = MemoryControlPlane(fabric)  # reports, never confirms anything
    await ghost.connect()
    seq = 0

    async def report(errors: int, armed: bool, state: TradingState) -> None:
        nonlocal seq
        seq += 1
        clock.advance(S)
        await ghost.publish_metrics(
            NodeMetrics(
                "ghost", clock.time_ns(), 0, 0, 0, 0, 0.0, 0.0, armed, errors,
                node_state=int(state), instance="i1",
            )
        )  # fmt: skip
        await service.drain()

    try:
        with caplog.at_level(logging.CRITICAL):
            await report(1, False, TradingState.ACTIVE)  # halted, not confirmed: paged
            await report(1, False, TradingState.HALTED)  # it held: not issued again
            await report(1, True, TradingState.ACTIVE)  # resumed, fine again
            await report(1, True, TradingState.ACTIVE)
            clock.advance(86_400 * S)
            await report(2, False, TradingState.ACTIVE)  # a new incident
        assert [a.rule for a, _ in service.results] == [Rule.ERRORS_BEFORE_ARMING] * 2
        pages = _pages(caplog)
        assert len(pages) == 2, pages
    finally:
        await service.stop()
