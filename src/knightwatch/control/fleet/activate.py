"""A flag change through the gate, against the live fleet, confirmed node by node.

The CLI's `flags set` and the console's "safe default" button are two doors
to one sequence: judge the request against the fleet as it stands (membership
and the admission service's verdicts, a kill in force freezing risk-adding
changes), commit it with compare-and-set, then wait for each targeted node to
confirm the new revision. Turning a flag to its safe default is the stop
direction: one person, never an approval. The change is signed by `signer`
(with the approval it was decided on), since every node verifies it before
applying it.
"""

from __future__ import annotations

import asyncio

from knightwatch.clock import Clock
from knightwatch.control.fleet.flagstore import AppliedWaiter, PlaneFlagStore, fleet_snapshot
from knightwatch.control.fleet.freeze import describe, kill_in_force
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.flags.activation import (
    ActivationGate,
    ActivationPolicy,
    ActivationRequest,
    ActivationResult,
)
from knightwatch.flags.registry import FlagRegistry
from knightwatch.trust.flagproof import FlagSealer
from knightwatch.trust.identity import Signer
from knightwatch.trust.store import TrustStore


async def activate(
    plane: ControlPlane,
    trust: TrustStore,
    registry: FlagRegistry,
    policy: ActivationPolicy,
    request: ActivationRequest,
    clock: Clock,
    timeout_s: float,
    *,
    signer: Signer,
) -> tuple[ActivationResult, dict[str, float], list[str]]:
    """The gate's verdict and, if it was applied, each node's confirmation latency (ms)
    and the nodes that did not confirm within `timeout_s`."""
    view = await fleet_snapshot(plane, clock)
    kill = await kill_in_force(plane, trust)
    frozen = describe(kill) if kill is not None else None
    store = PlaneFlagStore(plane, clock)
    sealer = FlagSealer(signer, trust.roster)
    gate = ActivationGate(registry, view, store, clock, policy, frozen_by=frozen, sealer=sealer)
    waiter = AppliedWaiter(plane, clock)
    await waiter.start()
    t0 = clock.monotonic_ns()
    result = await asyncio.to_thread(gate.apply, request)
    if not result.accepted or result.state is None or result.change is None:
        return result, {}, []
    latencies, missing = await waiter.wait(
        request.flag_id, result.state.revision, result.change.nodes, t0, timeout_s
    )
    return result, latencies, missing
