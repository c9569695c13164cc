"""A node new to the roster is enrolled by the admission service once the kill state can
be read: a read that fails (the server had just reloaded its users for that very roster
version) kept it out for good, `node_unknown` until another roster version."""

from __future__ import annotations

import asyncio

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.admission import ENROL_RETRY_S, AdmissionService
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.state import Scope
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role

from ...identities import switch
from ...integration.fleet_release import REGISTRY, Signers


async def _service(fabric: MemoryFabric, kit: Kit) -> AdmissionService:
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    service = AdmissionService(
        plane, Signers().trust, REGISTRY.admission_schema(), clock=SystemClock(), roster=kit.store()
    )
    await service.start()
    return service


async def _enrolled(service: AdmissionService, node: str, within_s: float) -> bool:
    for _ in range(int(within_s / 0.05)):
        if node in service.roster:
            return True
        await asyncio.sleep(0.05)
    return node in service.roster


async def test_a_node_whose_enrolment_met_an_unreadable_kill_state_is_enrolled_after() -> None:
    fabric = MemoryFabric()
    kit = Kit(now_ns=0, nodes=["n1"])
    service = await _service(fabric, kit)
    assert "n1" in service.roster
    kit.add("n9", [Role.NODE])
    service.trust_store = kit.store()
    fabric.reachable = False  # the kill state cannot be read at the new version
    service._enrol()
    await asyncio.sleep(0.2)
    assert "n9" not in service.roster  # fail closed while it cannot be read
    fabric.reachable = True
    assert await _enrolled(service, "n9", 3 * ENROL_RETRY_S)


async def test_a_node_new_while_a_kill_is_in_force_is_not_enrolled_nor_tried_again() -> None:
    fabric = MemoryFabric()
    kit = Kit(now_ns=0, nodes=["n1"])
    service = await _service(fabric, kit)
    operator = MemoryControlPlane(fabric)
    await operator.connect()
    clock = SystemClock()
    ks = switch(operator, clock)
    await ks.start()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.1, targets=[])
    kit.add("n9", [Role.NODE])
    service.trust_store = kit.store()
    service._enrol()
    assert not await _enrolled(service, "n9", 2 * ENROL_RETRY_S)


async def test_a_node_revoked_while_its_enrolment_waited_is_not_enrolled() -> None:
    fabric = MemoryFabric()
    kit = Kit(now_ns=0, nodes=["n1"])
    service = await _service(fabric, kit)
    kit.add("n9", [Role.NODE])
    service.trust_store = kit.store()
    fabric.reachable = False
    service._enrol()
    await asyncio.sleep(0.1)
    kit.next_version([m for m in kit.roster.members if m.name != "n9"])
    service.trust_store = kit.store()  # the version after it takes n9 off
    fabric.reachable = True
    assert not await _enrolled(service, "n9", 2 * ENROL_RETRY_S)
