"""A supervisor running for months keeps a bounded record of what it did.

A node that reports and never confirms its halt is halted again at every sample (its
halt did not take). Before, each of those actions, and the service's result of each
kill (the command, who did not confirm, the leases), stayed in lists for as long as the
supervisor ran: one of each a second, for as long as the node stayed wedged.
"""

from __future__ import annotations

import pytest

from knightwatch.clock import SimClock
from knightwatch.control.fleet import supervisor as supervisor_module
from knightwatch.control.fleet import supervisor_service
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import Rule
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.wire import NodeMetrics

from .test_supervisor_service_paging import S, _service


async def test_a_halt_retried_at_every_sample_keeps_a_bounded_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in (supervisor_module, supervisor_service):
        monkeypatch.setattr(module, "ACTIONS_KEPT", 3, raising=False)
    fabric = MemoryFabric()
    clock = SimClock(10 * S)
    service = await _service(fabric, clock, Pager())
    ghost = MemoryControlPlane(fabric)  # reports, never confirms anything
    await ghost.connect()
    try:
        for i in range(20):
            clock.advance(S)
            await ghost.publish_metrics(
                NodeMetrics("ghost", clock.time_ns(), 0, 0, 0, 0, 0.0, 0.0, False, 1 + i)
            )
            await service.drain()
            assert 1 <= len(service.results) < 6, len(service.results)
            assert 1 <= len(service.supervisor.actions) < 6, len(service.supervisor.actions)
        # the latest are the ones kept, and the count of every action is not trimmed
        action, result = service.results[-1]
        assert action.rule is Rule.ERRORS_BEFORE_ARMING and result.missing == ["ghost"]
        assert service.supervisor.actions[-1] == action
        assert service.supervisor.acted[Rule.ERRORS_BEFORE_ARMING] == 20
        assert sum(service.supervisor.acted.values()) == 20
    finally:
        await service.stop()
        await ghost.close()
