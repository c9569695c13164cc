"""The two halves of a resume, shared by every door: the CLI, the console, its API.

A resume is requested by one person and applied by another, and both halves
run the same preflight first (the fleet may have moved between them). Keeping
the sequence here, below every front end, is what makes "what the console
refuses, the CLI refuses too" true: neither has its own copy to drift.

* request: preflight (crash-looping nodes are halted and paged on the way:
  a stop, one person), then, only if every item passes, a signed request
  bound to the halt's store revision, with the preflight's verdict recorded;
* approve: the approver's eligibility (a different person with the approver
  role) before anything runs, the preflight again, then the co-signed resume
  applied through a staged ramp that trips back to HALTED.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.approvals import Request, Requests
from knightwatch.control.fleet.killswitch import CommandResult, KillSwitch
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.control.plane.wire import RampRecord, StateEntry
from knightwatch.incident.preflight import (
    Checklist,
    PreflightConfig,
    halt_crash_loops,
    run_preflight,
)
from knightwatch.incident.ramp import RampController, RampOutcome, RampPlan
from knightwatch.state import Scope


async def preflight(
    plane: ControlPlane,
    ks: KillSwitch,
    scope: Scope,
    key: str,
    *,
    acknowledged: Collection[str],
    cfg: PreflightConfig,
    pager: Pager,
) -> tuple[Checklist, list[str]]:
    """The preflight as nodes see the kill state (signatures checked), and the
    crash-looping nodes it halted and paged."""
    clock = SystemClock()
    checklist = await run_preflight(
        plane, scope, key, clock=clock, config=cfg, acknowledged=acknowledged, trust=ks.trust
    )
    halted: list[str] = []
    if checklist.crash_looping:
        halted = list(await halt_crash_loops(checklist, ks, pager, clock))
    return checklist, halted


def verdict_of(checklist: Checklist) -> str:
    if checklist.passed:
        return f"passed ({len(checklist.items)} checks)"
    return "REFUSED: " + ", ".join(i.name for i in checklist.failures)


async def request_resume(
    plane: ControlPlane,
    ks: KillSwitch,
    scope: Scope,
    key: str,
    reason: str,
    *,
    acknowledged: Collection[str] = (),
    cfg: PreflightConfig,
    pager: Pager,
    plan: RampPlan | None = None,
    shown: int = 0,
) -> tuple[Checklist, list[str], Request | None]:
    """The requester's half: the checklist, the nodes it halted, the request (None if
    the preflight refused). The request carries `plan`'s stages (the default plan's
    if None): the approver ramps through those, and nodes hold them. `shown`: the halt's
    revision as its requester saw it (`RequestMoved` if another is stored by then)."""
    checklist, halted = await preflight(
        plane, ks, scope, key, acknowledged=acknowledged, cfg=cfg, pager=pager
    )
    if not checklist.passed:
        return checklist, halted, None
    stages = (plan if plan is not None else RampPlan()).signed
    request = await Requests(ks).create(
        scope, key, reason, preflight=verdict_of(checklist), ramp=stages, shown=shown
    )
    return checklist, halted, request


async def approve_resume(
    plane: ControlPlane,
    ks: KillSwitch,
    request_id: str,
    *,
    timeout_s: float,
    plan: RampPlan,
    cfg: PreflightConfig,
    pager: Pager,
    acknowledged: Collection[str] = (),
    on_preflight: Callable[[Checklist, list[str]], None] | None = None,
    on_stage: Callable[[RampRecord], None] | None = None,
    on_resumed: Callable[[CommandResult], None] | None = None,
) -> tuple[Checklist, RampOutcome | None]:
    """The approver's half. `on_preflight` hears the checklist before the ramp starts
    and `on_resumed` the resume's confirmations once it is applied (a ramp runs on
    for minutes); the outcome is None if the preflight refused.
    KillSwitchError if this signer may not approve (checked before the preflight)."""
    requests = Requests(ks)
    request, _ = await requests.eligible(request_id)
    checklist, halted = await preflight(
        plane,
        ks,
        request.entry.scope,
        request.entry.key,
        acknowledged=acknowledged,
        cfg=cfg,
        pager=pager,
    )
    if on_preflight is not None:
        on_preflight(checklist, halted)
    if not checklist.passed:
        return checklist, None
    controller = RampController(
        plane,
        ks,
        SystemClock(),
        plan.following(request.entry),  # the stages signed with the request; our trip rules
        pager=pager,
        on_stage=on_stage,
        on_resumed=on_resumed,
    )

    async def ramp(entry: StateEntry) -> RampOutcome:
        return await controller.apply(entry, timeout_s=timeout_s)

    return checklist, await requests.approve_with(request_id, ramp)
