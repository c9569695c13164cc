"""The supervisor on a control plane: metrics in, halts and pages out.

The same `Supervisor` decides in the replay (fed by MemoryControlPlane) and in
the live fleet (fed by NATS); this service only wires it to a plane, the kill
switch and the pager, and records each action in the fleet audit stream.
"""

from __future__ import annotations

import logging

import msgspec

from knightwatch.control.killswitch import CommandResult, KillSwitch
from knightwatch.control.messages import AuditEnvelope, NodeMetrics
from knightwatch.control.pager import Pager
from knightwatch.control.protocol import ControlPlane, ControlPlaneUnavailable
from knightwatch.control.supervisor import Action, Supervisor

log = logging.getLogger(__name__)

SUPERVISOR_ID = "supervisor"


class SupervisorService:
    def __init__(
        self,
        plane: ControlPlane,
        supervisor: Supervisor,
        killswitch: KillSwitch,
        pager: Pager,
        confirm_timeout_s: float = 1.0,
    ) -> None:
        self.plane = plane
        self.supervisor = supervisor
        self.killswitch = killswitch
        self.pager = pager
        self.confirm_timeout_s = confirm_timeout_s
        self.results: list[tuple[Action, CommandResult]] = []
        self._seq = 0

    async def start(self) -> None:
        await self.killswitch.start()
        await self.plane.subscribe_metrics(self._on_metrics)

    async def _on_metrics(self, metrics: NodeMetrics) -> None:
        for action in self.supervisor.observe(metrics):
            await self.act(action)

    async def act(self, action: Action) -> None:
        """Halt first, page and record after: a slow webhook must not delay the stop."""
        result = await self.killswitch.kill(
            action.scope,
            action.key,
            action.reason,
            timeout_s=self.confirm_timeout_s,
            state=action.state,
        )
        self.results.append((action, result))
        await self.pager.page(action)
        self._seq += 1
        record = msgspec.json.encode(
            {"kind": "supervisor_action", "action": action, "command_id": result.entry.command_id,
             "confirmed": result.latencies_ms, "missing": result.missing}
        )  # fmt: skip
        try:
            await self.plane.append_audit(AuditEnvelope(SUPERVISOR_ID, self._seq, record))
        except ControlPlaneUnavailable as exc:
            log.error("supervisor action not recorded in the fleet stream: %s", exc)
