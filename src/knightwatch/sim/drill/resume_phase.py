"""The drill's resume phase: evidence, preflight, a ramp that completes, a ramp that trips.

After the drill's fleet kill an operator would snapshot the evidence, check the
preflight and request the resume; a second person approves it and it ramps
back. The drill does exactly that against the live processes, then does it
once more with a runaway re-injected during stage one, to show the trip: how
long until the scope was HALTED again and how many of the runaway's orders got
out at stage-one limits before it was.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
from nats.aio.client import Client
from rich.console import Console
from rich.markup import escape

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.freeze import record_known_good
from knightwatch.control.fleet.killswitch import CommandResult, KillSwitch, KillSwitchError
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import Bucket, ControlPlane
from knightwatch.control.plane.wire import ENCODER, FLEET_KEY, NodeMetrics, slot_of
from knightwatch.incident.preflight import Checklist, PreflightConfig, run_preflight
from knightwatch.incident.ramp import RampController, RampOutcome, RampPlan, ramp_records
from knightwatch.incident.snapshot import take_snapshot, verify_snapshot
from knightwatch.sim.drill.flow import SUBJECT_RUNAWAY
from knightwatch.state import Scope, TradingState
from knightwatch.trust.identity import Signer

DRILL_RAMP = RampPlan.instant((0.1, 0.5, 1.0), 2.0)
"""Seconds, not minutes: the drill shows the mechanism, the runbook gives production stages.
Two seconds a stage leave a loaded machine's trip detection (0.6 s seen on 2 busy cores)
well inside stage one, where the drill's runaway must be caught."""


class ResumeReport(msgspec.Struct, frozen=True):
    snapshot: str
    snapshot_files: int
    snapshot_verified: bool
    preflight: list[tuple[str, bool, str]]
    preflight_passed: bool
    ramp_completed: bool
    ramp_stages: list[float]
    trip_node: str
    trip_reason: str
    trip_stage: int
    trip_ms: float
    trip_orders_escaped: int
    trip_orders_attempted: int
    trip_confirmed: bool

    @property
    def passed(self) -> bool:
        return (
            self.snapshot_verified
            and self.preflight_passed
            and self.ramp_completed
            and bool(self.trip_reason)
            and self.trip_stage == 0
            and self.trip_confirmed
        )


async def run_resume_phase(
    plane: NatsControlPlane,
    ks: KillSwitch,
    approver: Signer,
    nc: Client,
    kill: CommandResult,
    latest: dict[str, NodeMetrics],
    trip_node: str,
    state_dir: Path,
    console: Console,
    *,
    metrics_s: float,
    plan: RampPlan = DRILL_RAMP,
) -> ResumeReport:
    """Runs on a fleet the drill just killed (`kill`) as the operator `ks` signs for, with
    `approver` co-signing each resume; leaves it halted by the ramp that tripped, for the
    drill's end to resume (`resume_left_halted`)."""
    clock = SystemClock()
    await record_known_good(plane, kill.entry, clock.time_ns())
    data = await take_snapshot(
        plane, clock, ks.signer.key, actor=ks.actor,
        reason="drill: evidence after the fleet kill", listen_s=0.5,
    )  # fmt: skip
    snapshot = state_dir / "snapshot.tar"
    snapshot.write_bytes(data)
    check = verify_snapshot(data, source=str(snapshot))
    console.print(
        escape(f"evidence snapshot {snapshot}: {check.files} files, signature and hashes ")
        + ("verified" if check.ok else f"[red]NOT verified[/red]: {escape(str(check.problems))}"),
        highlight=False,
    )

    checklist = await run_preflight(
        plane,
        Scope.FLEET,
        FLEET_KEY,
        clock=clock,
        config=PreflightConfig(listen_s=1.0),
        trust=ks.trust,
    )
    _print_checklist(checklist, console)
    stages: list[float] = []
    ctl = RampController(plane, ks, clock, plan, on_stage=lambda r: stages.append(r.fraction))
    completed = False
    if checklist.passed:
        first = await ctl.resume(
            Scope.FLEET, FLEET_KEY, "drill: preflight passed", approvers=(approver,)
        )
        completed = first.completed
        console.print(
            f"ramp {escape(first.ramp_id)}: "
            + " -> ".join(f"{f:.0%}" for f in dict.fromkeys(stages))
            + (" complete" if completed else f" [red]tripped[/red]: {escape(first.trip_reason)}"),
            highlight=False,
        )

    # the second incident: kill, ramp again, and a runaway wakes up during stage one
    await ks.kill(Scope.FLEET, FLEET_KEY, "drill: second kill", timeout_s=2.0)
    base = latest.get(trip_node)
    t0 = clock.monotonic_ns()
    trip: RampOutcome | None = None

    async def inject_when_ramping() -> None:
        while not any(r.status == "ramping" and r.stage == 0 for r in await ramp_records(plane)):
            await asyncio.sleep(0.01)
        entry, _ = await plane.get_state(Scope.FLEET, FLEET_KEY)
        while entry is None or entry.state is not TradingState.ACTIVE:
            await asyncio.sleep(0.01)
            entry, _ = await plane.get_state(Scope.FLEET, FLEET_KEY)
        nonlocal t0
        t0 = clock.monotonic_ns()
        await nc.publish(f"{SUBJECT_RUNAWAY}.{trip_node}", b"go")

    injector = asyncio.create_task(inject_when_ramping())
    try:  # a resume that raises must not leave the runaway armed to fire later
        ctl2 = RampController(plane, ks, clock, plan)
        trip = await ctl2.resume(
            Scope.FLEET, FLEET_KEY, "drill: resume after the second kill", approvers=(approver,)
        )
    finally:
        injector.cancel()
    t_trip = clock.monotonic_ns()
    await asyncio.sleep(3 * metrics_s)
    after = latest.get(trip_node)
    escaped = after.accepted - base.accepted if after and base else 0
    attempted = after.orders - base.orders if after and base else 0
    if trip.completed:
        console.print("[red]ramp did not trip on the runaway[/red]")
    else:
        console.print(
            f"[bold]ramp tripped[/bold] {(t_trip - t0) / 1e6:.0f} ms after {escape(trip_node)} "
            f"ran away at stage {trip.stage + 1} ({trip.fraction:.0%} limits): "
            f"{escape(trip.trip_reason)}; {attempted} orders attempted, {escaped} accepted "
            "before the trip",
            highlight=False,
        )
    return ResumeReport(
        snapshot=str(snapshot),
        snapshot_files=check.files,
        snapshot_verified=check.ok,
        preflight=[(i.name, i.ok, i.detail) for i in checklist.items],
        preflight_passed=checklist.passed,
        ramp_completed=completed,
        ramp_stages=list(dict.fromkeys(stages)),
        trip_node=trip_node,
        trip_reason=trip.trip_reason,
        trip_stage=trip.stage,
        trip_ms=(t_trip - t0) / 1e6,
        trip_orders_escaped=escaped,
        trip_orders_attempted=attempted,
        trip_confirmed=trip.trip is not None and trip.trip.ok,
    )


async def clear_ramps(plane: NatsControlPlane, signer: Signer, fleet: str = "") -> None:
    """Leave no ramp holding limits: the drill's fleet ends at full limits. `fleet`: the
    roster's name (`Roster.fleet`), which the records must carry for its nodes to take them
    (a named fleet's nodes hold a record naming no fleet at its tightest stage)."""
    for record in await ramp_records(plane):
        done = msgspec.structs.replace(record, status="done", fraction=1.0)
        done = done.signed(signer.key, fleet=fleet)
        await plane.put_record(Bucket.RAMP, slot_of(record.scope, record.key), ENCODER.encode(done))


async def resume_left_halted(
    plane: ControlPlane, ks: KillSwitch, approver: Signer, reason: str
) -> list[str]:
    """Resume every scope still halted or reducing, `approver` co-signing; one line for each
    scope the drill leaves not trading at its end ([]: every resume confirmed).

    The drill's last step. Its resumes went unchecked: one refused, not stored or not
    confirmed by a node left the fleet halted under a drill that reported itself passed,
    and a kill-state entry that does not decode was passed over without a word."""
    left: list[str] = []
    for slot, (entry, _) in sorted((await plane.states()).items()):
        if entry is None:
            left.append(f"{slot}: its kill-state entry does not decode; not resumed")
            continue
        if entry.state is TradingState.ACTIVE:
            continue
        where = f"{entry.scope.value} {entry.key!r}"
        try:
            result = await ks.resume(entry.scope, entry.key, reason, approvers=(approver,))
        except KillSwitchError as exc:
            left.append(f"{where}: resume refused: {exc}")
            continue
        if result.revision is None:
            left.append(f"{where}: resume not stored: {result.durable_error or 'no answer'}")
        elif result.members_error:
            left.append(f"{where}: resume unconfirmed, membership unread: {result.members_error}")
        elif result.missing:
            left.append(f"{where}: resume not confirmed by {', '.join(result.missing)}")
    return left


def _print_checklist(checklist: Checklist, console: Console) -> None:
    """Each item's detail quotes the store (reasons, node ids, verdicts): escaped."""
    verdict = "PASS" if checklist.passed else "[red]REFUSED[/red]"
    console.print(f"preflight: {verdict}")
    for item in checklist.items:
        mark = "ok  " if item.ok else "[red]FAIL[/red]"
        console.print(f"  {mark} {escape(f'{item.name}: {item.detail}')}", highlight=False)
