"""A flag change through the gate, against the live fleet, confirmed node by node.

The CLI's `flags set` and the console's "safe default" button are two doors
to one sequence: judge the request against the fleet as it stands (membership
and the admission service's verdicts, a kill in force freezing risk-adding
changes), commit it with compare-and-set, then wait for each targeted node to
confirm the new revision. Turning a flag to its safe default is the stop
direction: one person, never an approval. The change is signed by `signer`
(with the approval it was decided on), since every node verifies it before
applying it.

A second person's approval is of one change: one that a committed change of the
flag already carried is refused (`approval_used`). Otherwise, within the
approval's hour, the requester alone could switch the flag back on after
someone stopped it, with the approval of the first switch-on.

Once the state is stored the change is in force, whatever happens to the control
plane next: a plane lost before the confirmations were read is `ChangeInForce`
naming the revision and the nodes not read (never "not confirmed", nor a bare
"unreachable" that reads as if nothing changed); a write sent and not answered
is `ChangeUncertain` (see `flagstore`).
"""

from __future__ import annotations

import asyncio

from knightwatch.clock import Clock
from knightwatch.control.fleet.flagstore import (
    AppliedWaiter,
    ChangeInForce,
    PlaneFlagStore,
    fleet_snapshot,
    in_force,
)
from knightwatch.control.fleet.freeze import describe, kill_in_force
from knightwatch.control.node.flags import carried_by, changes_of
from knightwatch.control.plane.protocol import Bucket, ControlPlane
from knightwatch.flags.activation import (
    ActivationCode,
    ActivationGate,
    ActivationPolicy,
    ActivationRequest,
    ActivationResult,
)
from knightwatch.flags.registry import FlagRegistry
from knightwatch.release.errors import ReleaseInputError
from knightwatch.trust.approval import decode_approval_file
from knightwatch.trust.flagproof import FlagSealer
from knightwatch.trust.identity import Signer
from knightwatch.trust.roster import TrustError
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
    used = await _approval_used(plane, registry, request)
    if used:
        return ActivationResult(False, ActivationCode.APPROVAL_USED, used), {}, []
    view = await fleet_snapshot(plane, clock)
    kill = await kill_in_force(plane, trust)
    frozen = describe(kill) if kill is not None else None
    store = PlaneFlagStore(plane, clock)
    sealer = FlagSealer(signer, trust.roster)
    gate = ActivationGate(registry, view, store, clock, policy, frozen_by=frozen, sealer=sealer)
    waiter = AppliedWaiter(plane, clock)
    await waiter.start()
    try:  # the waiter is this change's: it stops listening with it
        t0 = clock.monotonic_ns()
        result = await asyncio.to_thread(gate.apply, request)
        if not result.accepted or result.state is None or result.change is None:
            return result, {}, []
        revision = result.state.revision
        latencies, missing = await waiter.wait(
            request.flag_id, revision, result.change.nodes, t0, timeout_s
        )
    finally:
        await waiter.close()
    unread = [n for n in missing if n in waiter.unread]
    if unread:
        why = waiter.unread[unread[0]]
        lost = f"confirmations not read from {', '.join(unread)} ({why})"
        if latencies:
            lost += f"; confirmed by {', '.join(sorted(latencies))}"
        if len(unread) < len(missing):
            lost += f"; not confirmed by {', '.join(n for n in missing if n not in unread)}"
        raise ChangeInForce(in_force(request.flag_id, revision, lost), result.state)
    return result, latencies, missing


async def _approval_used(
    plane: ControlPlane, registry: FlagRegistry, request: ActivationRequest
) -> str:
    """Why the request's approval approves nothing now ("" if it is unused): a committed
    change of the flag (`change.<id>.<rev>`, its proof) already carried it."""
    flag = registry.get(request.flag_id)
    if not request.approval or flag is None or request.value == flag.safe_default:
        return ""
    try:  # the CLI decoded it already; one that does not decode is refused by every node
        payload = decode_approval_file(request.approval.encode(), "approval").payload_bytes()
    except (ReleaseInputError, TrustError):
        return ""
    change = carried_by(payload, changes_of(flag.id, await plane.records(Bucket.FLAGS)))
    if change is None:
        return ""
    return (
        f"{flag.id}: this approval was used already, by revision {change.revision} "
        f"({'on' if change.value else 'off'} by {change.actor}, approver "
        f"{change.approver or '-'}); an approval is of one change: ask for a new one"
    )
