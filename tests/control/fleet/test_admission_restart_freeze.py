"""An admission service (re)started while a kill freezes the fleet enrols no node new to it.

A node added to the roster during a fleet or strategy kill is refused enrolment by the
running service (it adds risk; the next roster version after the resume enrols it). Before,
restarting the service (`knightwatch up` again, `admission serve` after a crash) enrolled
every node on the roster at start, that one too: one restart during the incident undid the
freeze, and the new node was admitted and traded what the kill had not stopped. A node an
earlier service judged (its verdict is stored) is not new and is enrolled at once, so the
running fleet keeps its admissions across the restart.
"""

from __future__ import annotations

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.admission import ENROL_RETRY_S, AdmissionService
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import Bucket, ControlPlaneUnavailable
from knightwatch.control.plane.wire import ENCODER, StateEntry, Verdict
from knightwatch.state import Scope
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role

from ...integration.fleet_release import REGISTRY, Signers
from .test_admission_enrol import _enrolled


async def _service(fabric: MemoryFabric, kit: Kit) -> AdmissionService:
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    service = AdmissionService(
        plane, Signers().trust, REGISTRY.admission_schema(), clock=SystemClock(), roster=kit.store()
    )
    await service.start()
    return service


async def _judged(fabric: MemoryFabric, node: str) -> None:
    """The verdict an earlier service stored for `node` (it was enrolled and attested)."""
    plane = MemoryControlPlane(fabric)
    await plane.connect()
    verdict = Verdict(node, True, "admitted", "r1", "d" * 64, (), 1)
    await plane.put_record(Bucket.ADMISSION, node, ENCODER.encode(verdict))


async def test_a_service_restarted_during_a_kill_does_not_enrol_a_node_new_since() -> None:
    fabric = MemoryFabric()
    kit = Kit(now_ns=0, nodes=["n1"])
    first = await _service(fabric, kit)
    assert "n1" in first.roster
    await _judged(fabric, "n1")
    operator = MemoryControlPlane(fabric)
    await operator.connect()
    ks = KillSwitch(operator, SystemClock(), kit.signer("alice"), kit.store())
    await ks.start()
    await ks.kill(Scope.STRATEGY, "mm", "runaway", timeout_s=0.1, targets=[])
    kit.add("n9", [Role.NODE])
    first.trust_store = kit.store()
    first._enrol()
    assert not await _enrolled(first, "n9", 0.3)  # the running service refuses it

    restarted = await _service(fabric, kit)
    assert "n1" in restarted.roster  # judged before: the running fleet keeps its admissions
    assert not await _enrolled(restarted, "n9", 0.3), (
        "a restart enrolled a node new during the kill"
    )


async def test_a_service_started_with_no_kill_in_force_enrols_every_node_at_once() -> None:
    fabric = MemoryFabric()
    kit = Kit(now_ns=0, nodes=["n1", "n2"])
    await _judged(fabric, "n1")
    service = await _service(fabric, kit)
    assert {"n1", "n2"} <= service.roster.keys()


class _StatesFailOnce(MemoryControlPlane):
    """A plane whose first read of the kill state fails (a server reloading its users)."""

    failed = False

    async def states(self) -> dict[str, tuple[StateEntry | None, int]]:
        if not self.failed:
            self.failed = True
            raise ControlPlaneUnavailable("kill state: no answer")
        return await super().states()


async def test_a_node_never_judged_waits_at_start_for_a_kill_state_that_cannot_be_read() -> None:
    fabric = MemoryFabric()
    kit = Kit(now_ns=0, nodes=["n1", "n9"])
    await _judged(fabric, "n1")
    plane = _StatesFailOnce(fabric)
    await plane.connect()
    service = AdmissionService(
        plane, Signers().trust, REGISTRY.admission_schema(), clock=SystemClock(), roster=kit.store()
    )
    await service.start()
    assert plane.failed
    assert "n1" in service.roster and "n9" not in service.roster  # fail closed meanwhile
    assert await _enrolled(service, "n9", 3 * ENROL_RETRY_S)  # no kill, once it is read
