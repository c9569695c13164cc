"""The resume ramp: stages reach every Guard before the resume; anything in the scope trips it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from knightwatch.cli.incident import incident_config
from knightwatch.clock import SystemClock
from knightwatch.control.fleet.killswitch import CommandResult, KillSwitchError
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.protocol import Bucket, ControlPlaneUnavailable
from knightwatch.control.plane.wire import (
    ENCODER,
    RAMP_DECODER,
    NodeMetrics,
    RampRecord,
    StateEntry,
    decode_entry,
    slot_of,
)
from knightwatch.decision import RejectReason
from knightwatch.errors import KnightwatchError
from knightwatch.incident.ramp import (
    RampController,
    RampError,
    RampOutcome,
    RampPlan,
    RampWatch,
    Stage,
)
from knightwatch.state import Scope, TradingState

from ..identities import ALICE, BOB, ERIN, signer
from .fixtures import fleet

FAST = RampPlan.instant((0.1, 0.5, 1.0), 0.3)


async def test_ramp_completes_through_every_stage_and_ends_at_full_limits() -> None:
    f = await fleet("n1", "n2")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    seen: list[tuple[int, float, str]] = []
    ctl = RampController(
        await f.plane(),
        ks,
        f.clock,
        FAST,
        on_stage=lambda r: seen.append((r.stage, r.fraction, r.status)),
    )
    outcome = await ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    assert outcome.completed and not outcome.trip_reason
    assert seen == [(0, 0.1, "ramping"), (1, 0.5, "ramping"), (2, 1.0, "ramping"), (2, 1.0, "done")]
    for node in f.nodes:
        assert node.guard.limits.version == "desk"
        assert node.guard.limits.max_orders_per_s_node == 100
        assert f.order(node)
    await f.stop()


async def test_an_approved_request_made_long_before_still_ramps_through_every_stage() -> None:
    """The stages run from the moment the resume is applied, not from the request."""
    f = await fleet("n1")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    request = await ks.request_resume(Scope.FLEET, "fleet", "fixed")
    await asyncio.sleep(0.7)  # the approver takes a while: longer than two stages' hold
    seen: list[tuple[int, float, str]] = []
    ctl = RampController(
        await f.plane(),
        ks,
        f.clock,
        FAST,
        on_stage=lambda r: seen.append((r.stage, r.fraction, r.status)),
    )
    outcome = await ctl.apply(request.cosigned(BOB.key))
    assert outcome.completed
    assert seen == [(0, 0.1, "ramping"), (1, 0.5, "ramping"), (2, 1.0, "ramping"), (2, 1.0, "done")]
    assert outcome.ended_ns - outcome.started_ns >= 0.9e9, "every stage held its full time"
    await f.stop()


async def test_stage_one_limits_are_in_force_before_the_resume_reaches_any_node() -> None:
    f = await fleet("n1")
    node = f.nodes[0]
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    versions_at_resume: list[str] = []

    async def on_state(e: StateEntry) -> None:
        if e.state is TradingState.ACTIVE:
            versions_at_resume.append(node.guard.limits.version)

    await (await f.plane()).subscribe_states(on_state)
    ctl = RampController(await f.plane(), ks, f.clock, RampPlan.instant((0.1, 1.0), 1.0))
    task = asyncio.create_task(ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)))
    deadline = time.monotonic() + 15  # the resume reaches the node when a loaded loop gets to it
    while not versions_at_resume and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert set(versions_at_resume) == {"desk@10%"}  # stored and announced: both at 10%
    # 10 orders/s at stage one: the 11th in the same second is blocked by the Guard
    accepted = [f.order(node) for _ in range(11)]
    assert accepted.count(True) == 10
    assert node.guard.blocked.get(RejectReason.RATE_NODE) == 1
    outcome = await task
    assert outcome.completed and node.guard.limits.max_orders_per_s_node == 100
    await f.stop()


async def test_a_halt_in_the_scope_trips_the_ramp_back_to_halted_at_once() -> None:
    f = await fleet("n1", "n2")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    ctl = RampController(await f.plane(), ks, f.clock, RampPlan.instant((0.1, 1.0), 5.0))
    task = asyncio.create_task(ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)))
    while not f.order(f.nodes[1]):
        await asyncio.sleep(0.01)
    supervisor = await f.killswitch("supervisor")
    await supervisor.kill(Scope.NODE, "n1", "supervisor_order_rate: 900/s", timeout_s=0.5)
    # tripped, not completed at the stage's end (5 s): that is what `at once` means here
    outcome = await asyncio.wait_for(task, 15.0)
    assert not outcome.completed and outcome.stage == 0
    assert outcome.trip_reason.startswith("supervisor alert node 'n1'")
    assert outcome.trip is not None and outcome.trip.ok
    assert not f.order(f.nodes[1])  # the whole scope is halted again
    stored, _ = await (await f.plane()).get_record(Bucket.RAMP, slot_of(Scope.FLEET, "fleet"))
    assert stored is not None
    record = RAMP_DECODER.decode(stored)
    assert record.status == "tripped" and record.trip_reason == outcome.trip_reason
    await f.stop()


async def test_a_guard_automatic_halt_trips_it_naming_the_guard() -> None:
    watch = RampWatch(Scope.FLEET, "fleet", FAST, start_ns=100, nodes=["n1"])
    older = StateEntry(Scope.NODE, "n1", TradingState.HALTED, "x", "guard:loss_limit", "c0", 50)
    assert watch.on_state(older) == ""  # before the ramp started
    halt = StateEntry(Scope.NODE, "n1", TradingState.HALTED, "loss", "guard:loss_limit", "c1", 200)
    assert watch.on_state(halt).startswith("Guard automatic halt node 'n1'")


def _metrics(at_s: float, orders: int, blocks: dict[str, int]) -> NodeMetrics:
    rejected = sum(blocks.values())
    at = int(at_s * 1e9)
    return NodeMetrics("n1", at, orders, orders - rejected, rejected, 0, 0.0, 0.0, True, 0, blocks)


def test_a_block_rate_spike_trips_but_halted_blocks_and_trimmed_flow_do_not() -> None:
    watch = RampWatch(Scope.FLEET, "fleet", RampPlan(), 0, ["n1"])
    assert watch.on_metrics(_metrics(0.0, 0, {})) == ""
    assert watch.on_metrics(_metrics(0.5, 500, {"halted": 500})) == ""
    # a normal 40/s flow trimmed by stage-one limits: 20 blocks in 0.5 s is 40/s, no trip
    assert watch.on_metrics(_metrics(1.0, 520, {"halted": 500, "rate_strategy": 20})) == ""
    # a runaway: 200 blocks in 0.5 s (400/s), nearly all its orders
    why = watch.on_metrics(_metrics(1.5, 730, {"halted": 500, "rate_strategy": 220}))
    assert why.startswith("block-rate spike on node n1: 200 of 210 orders")
    assert "rate_strategy" in why


def test_plan_validation_names_the_stage() -> None:
    with pytest.raises(RampError, match=r"stages\[0\].fraction: must be in \(0, 1\]"):
        RampPlan(stages=(Stage(0.0, 1.0), Stage(1.0, 1.0)))
    with pytest.raises(RampError, match=r"the last stage must be 1\.0"):
        RampPlan(stages=(Stage(0.1, 1.0),))
    with pytest.raises(RampError, match=r"stages\[1\]\.fraction: must not be below the stage"):
        RampPlan(stages=(Stage(0.5, 1.0), Stage(0.1, 1.0), Stage(1.0, 1.0)))
    # what a resume may carry: finite holds within a day, at most 16 stages
    for hold in (float("inf"), float("nan"), 90_000.0):
        with pytest.raises(RampError, match=r"stages\[0\]\.hold_s: must be within 0\.\.86400"):
            RampPlan(stages=(Stage(0.1, hold), Stage(1.0, 1.0)))
    with pytest.raises(RampError, match="at most 16 stages"):
        RampPlan(stages=(*(Stage(0.5, 1.0) for _ in range(16)), Stage(1.0, 0.0)))


@pytest.mark.parametrize(
    ("stages", "rule"),
    [
        (
            (Stage(0.1, 0.0), Stage(1.0, 60.0)),
            r"stages\[0\]\.hold_s: must be >= 0\.1 s below full limits \(got 0\.0\)",
        ),
        ((Stage(0.1, 300.0), Stage(1.0, 0.0)), r"stages\[1\]\.hold_s: must be >= 0\.1 s"),
        ((Stage(0.1, -0.0), Stage(1.0, 1.0)), r"stages\[0\]\.hold_s: must be >= 0\.1 s"),
        ((Stage(0.1, 1e-300), Stage(1.0, 1.0)), r"stages\[0\]\.hold_s: must be >= 0\.1 s"),
        (
            (Stage(0.5, 1.0), Stage(0.5, 1.0), Stage(1.0, 1.0)),
            r"stages\[1\]\.fraction: must be above",
        ),
        ((Stage(1.0, 1.0), Stage(1.0, 1.0)), r"stages\[1\]\.fraction: must be above"),
    ],
)
def test_a_plan_that_skips_a_stage_or_never_steps_up_is_refused(
    tmp_path: Path, stages: tuple[Stage, ...], rule: str
) -> None:
    """A stage held 0 s is no stage (10% for 0 s resumes at full limits at once), a last
    stage held 0 s never arms the trip at full limits, and a repeated fraction is no step:
    each is refused by name, in code and in a `--config` file."""
    with pytest.raises(RampError, match=rule):
        RampPlan(stages=stages)
    config = tmp_path / "incident.toml"
    rows = ", ".join(f"{{fraction = {st.fraction}, hold_s = {st.hold_s}}}" for st in stages)
    config.write_text(f"[ramp]\nstages = [{rows}]\n")
    with pytest.raises(RampError, match=rf"--config {re.escape(str(config))}: .*{rule}"):
        incident_config(config)


async def test_no_resume_when_a_node_does_not_apply_stage_one() -> None:
    f = await fleet("n1")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    ctl = RampController(
        await f.plane(), ks, f.clock, RampPlan.instant((0.1, 1.0), 0.1, apply_timeout_s=0.3)
    )
    with pytest.raises(RampError, match="stage 1 limits not applied by ghost; resume not issued"):
        await ctl.resume(Scope.FLEET, "", "fixed", nodes=["n1", "ghost"], approvers=(BOB,))
    entry, _ = await (await f.plane()).get_state(Scope.FLEET, "fleet")
    assert entry is not None and entry.state is TradingState.HALTED
    await f.stop()


async def test_a_ramp_runs_while_another_scope_s_ramp_holds_the_nodes_tighter() -> None:
    """A node trades at the tightest ramp in force: while strategy a's ramp holds it at
    10%, strategy b's stages (50%, then 100%) are in force on it too. Before, b's ramp
    wanted every node to show exactly its own fraction, so it was refused ("stage 1 limits
    not applied") and its strategy stayed halted."""
    f = await fleet("n1", "n2")
    ks = await f.killswitch()
    for strategy in ("a", "b"):
        await ks.kill(Scope.STRATEGY, strategy, "runaway", timeout_s=0.5)
    plane = await f.plane()
    slow = RampController(plane, ks, f.clock, RampPlan.instant((0.1, 1.0), 60.0))
    holding = asyncio.create_task(slow.resume(Scope.STRATEGY, "a", "fixed", approvers=(BOB,)))
    try:
        for _ in range(200):
            if all(n.guard.limits.version == "desk@10%" for n in f.nodes):
                break
            await asyncio.sleep(0.02)
        assert [n.guard.limits.version for n in f.nodes] == ["desk@10%", "desk@10%"]
        fast = RampController(
            plane, ks, f.clock, RampPlan.instant((0.5, 1.0), 0.1, apply_timeout_s=1.0)
        )
        outcome = await fast.resume(Scope.STRATEGY, "b", "fixed", approvers=(BOB,))
        assert outcome.completed and not outcome.trip_reason, outcome
        entry, _ = await plane.get_state(Scope.STRATEGY, "b")
        assert entry is not None and entry.state is TradingState.ACTIVE
        assert [n.guard.limits.version for n in f.nodes] == ["desk@10%", "desk@10%"]  # a's
    finally:
        holding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holding
    await f.stop()


async def test_a_resume_that_cannot_be_issued_leaves_no_ramp_holding_as_ramping() -> None:
    f = await fleet("n1")
    ks = await f.killswitch()
    plane = await f.plane()
    ctl = RampController(plane, ks, f.clock, FAST)
    slot = slot_of(Scope.FLEET, "fleet")
    with pytest.raises(KillSwitchError, match="not halted"):
        await ctl.resume(Scope.FLEET, "", "nothing to resume", approvers=(BOB,))
    assert (await plane.get_record(Bucket.RAMP, slot))[0] is None, "no stage stored"
    # a request decided on a revision the slot no longer holds is stale: no stage stored
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    stale = (await ks.request_resume(Scope.FLEET, "fleet", "fixed")).cosigned(BOB.key)
    await ks.kill(Scope.FLEET, "", "runaway again", timeout_s=0.5)
    with pytest.raises(KillSwitchError, match="is stale"):
        await ctl.apply(stale)
    assert (await plane.get_record(Bucket.RAMP, slot))[0] is None, "no stage stored"
    # one person alone: refused where it is applied; the stage-one record says why
    alone = await ks.request_resume(Scope.FLEET, "fleet", "fixed")
    with pytest.raises(KillSwitchError, match="refused"):
        await ctl.apply(alone)
    stored, _ = await plane.get_record(Bucket.RAMP, slot)
    assert stored is not None
    record = RAMP_DECODER.decode(stored)
    assert record.status == "tripped" and record.trip_reason.startswith("resume not issued")
    entry, _ = await plane.get_state(Scope.FLEET, "fleet")
    assert entry is not None and entry.state is TradingState.HALTED
    await f.stop()


async def _held(node: NodeRuntime, version: str, within_s: float = 2.0) -> None:
    for _ in range(int(within_s * 100)):
        if node.guard.limits.version == version:
            return
        await asyncio.sleep(0.01)
    assert node.guard.limits.version == version


async def test_nodes_take_only_ramp_records_they_can_verify(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A ramp record scales every node's limits, so each node verifies it first: one it
    cannot verify is held as the tightest stage (a forged "done" cannot lift a ramp
    early), and a signed record older than the one held cannot loosen it (a replay)."""
    f = await fleet("n1")
    node = f.nodes[0]
    plane = await f.plane()
    slot = slot_of(Scope.FLEET, "fleet")
    now = f.clock.time_ns()
    old = RampRecord(Scope.FLEET, "fleet", "r-old", 1, (0.1, 1.0), 1.0, "done", "alice", "x", now)
    ramping = RampRecord(
        Scope.FLEET, "fleet", "r-new", 1, (0.1, 0.5, 1.0), 0.5, "ramping", "alice", "y", now + 1
    )

    async def put(record: RampRecord) -> None:
        await plane.put_record(Bucket.RAMP, slot, ENCODER.encode(record))

    await put(ramping.signed(ALICE.key))
    await _held(node, "desk@50%")
    # a forged "done" (unsigned, then signed by a node's key, then altered after signing)
    done = msgspec.structs.replace(ramping, status="done", fraction=1.0)
    for forged, reason in (
        (done, "unsigned"),
        (done.signed(signer("n1").key), "role_not_allowed"),
        (msgspec.structs.replace(ramping.signed(BOB.key), status="done"), "payload_mismatch"),
    ):
        await put(ramping.signed(ALICE.key))
        await _held(node, "desk@50%")
        caplog.clear()
        await put(forged)
        await _held(node, "desk@10%")
        assert f"RAMP_REFUSED node=n1 key={slot} ramp=r-new status=done reason={reason}" in (
            caplog.text
        )
        assert node.ramp_fraction() == 0.1
    # the genuine stage is taken again; a replayed older "done" is not
    await put(ramping.signed(ALICE.key))
    await _held(node, "desk@50%")
    caplog.clear()
    await put(old.signed(ALICE.key))
    await asyncio.sleep(0.05)
    assert node.guard.limits.version == "desk@50%"
    assert "RAMP_STALE node=n1" in caplog.text and "older than ramp r-new" in caplog.text
    # the ramp's own "done", signed, lifts it; a node started now judges the stored record
    await put(done.signed(BOB.key))
    await _held(node, "desk")
    await put(ramping.signed(ALICE.key))
    late = await f.add("n2")
    assert late.guard.limits.version == "desk@50%"
    await put(msgspec.structs.replace(ramping, fraction=1.0))  # unsigned, read at a start
    assert (await f.add("n3")).guard.limits.version == "desk@10%"
    # an unsigned "done" where no ramp is held counts as no record (all a deletion is):
    # a store from a version that did not sign records holds no finished ramp
    await put(done)
    assert (await f.add("n4")).guard.limits.version == "desk"
    assert node.guard.limits.version == "desk@10%"  # n1 held the signed ramp: tight
    await f.stop()


async def test_only_the_resumes_own_people_may_step_its_ramp_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While a ramped resume is in force, a record stepping its ramp up counts only if
    the resume's requester or approver signed it: erin, an operator who had no part in
    it, cannot end alice and bob's ramp early. Nor can bob: the stages alice and bob
    signed with the resume hold by the node's clock, whatever the records say."""
    f = await fleet("n1")
    node = f.nodes[0]
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    plane = await f.plane()
    ctl = RampController(plane, ks, f.clock, RampPlan.instant((0.1, 1.0), 60.0))
    task = asyncio.create_task(ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)))
    try:
        while not f.order(node):  # resumed, at stage one
            await asyncio.sleep(0.01)
        assert node.guard.limits.version == "desk@10%"
        slot = slot_of(Scope.FLEET, "fleet")
        raw, _ = await plane.get_record(Bucket.RAMP, slot)
        assert raw is not None
        stage = RAMP_DECODER.decode(raw)
        done = msgspec.structs.replace(
            stage, status="done", fraction=1.0, since_ns=stage.since_ns + 1
        )
        caplog.clear()
        await plane.put_record(Bucket.RAMP, slot, ENCODER.encode(done.signed(ERIN.key)))
        await asyncio.sleep(0.05)
        assert node.guard.limits.version == "desk@10%"
        assert "RAMP_REFUSED node=n1" in caplog.text and "reason=actor_mismatch" in caplog.text
        assert "signed by erin, not by alice (approved by bob)" in caplog.text
        caplog.clear()
        await plane.put_record(Bucket.RAMP, slot, ENCODER.encode(done.signed(BOB.key)))
        await asyncio.sleep(0.2)  # a few heartbeats: the signed stage (60 s at 10%) holds
        assert "RAMP_REFUSED" not in caplog.text, "bob's record is taken"
        assert node.guard.limits.version == "desk@10%", "but cannot shorten the signed ramp"
        assert node.ramp_fraction() == 0.1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await f.stop()


async def test_the_ramp_signed_with_the_resume_holds_on_every_node_by_its_own_clock() -> None:
    """A resume carries its stages, signed by the requester and the approver. Each node
    holds them from when it applies the resume, with no ramp record at all (a resume
    applied without the controller still ramps); a node that joins later holds them
    from when it joins (at the latest, the request's expiry), never shorter; a kill of
    the slot ends the ramp; and a resume whose signed stages were changed is refused."""
    f = await fleet("n1")
    node = f.nodes[0]
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    stages = ((0.25, 1.5), (1.0, 30.0))
    request = await ks.request_resume(Scope.FLEET, "fleet", "fixed", ramp=stages)
    assert request.ramp == stages
    forged = msgspec.structs.replace(request, ramp=((1.0, 0.0),)).cosigned(BOB.key)
    with pytest.raises(KillSwitchError, match="payload_mismatch"):
        await ks.apply_resume(forged, timeout_s=0.5)
    result = await ks.apply_resume(request.cosigned(BOB.key), timeout_s=0.5)
    assert result.ok, result
    assert node.guard.limits.version == "desk@25%", "scaled before the latch lifted"
    assert node.guard.limits.max_orders_per_s_node == 25
    assert f.order(node)
    late = await f.add("n2")
    assert late.guard.limits.version == "desk@25%"
    await _held(node, "desk", within_s=6.0)  # 1.5 s on: its own clock reached the last stage
    await _held(late, "desk", within_s=6.0)
    # a ramp in force ends with a kill of its slot
    await ks.kill(Scope.FLEET, "", "again", timeout_s=0.5)
    again = await ks.request_resume(Scope.FLEET, "fleet", "fixed again", ramp=stages)
    await ks.apply_resume(again.cosigned(BOB.key), timeout_s=0.5)
    assert node.ramp_fraction() == 0.25
    await ks.kill(Scope.FLEET, "", "third", timeout_s=0.5)
    assert node.ramp_fraction() == 1.0 and not f.order(node)
    await _held(node, "desk")  # the ended ramp's limits are lifted after the confirmation
    # a node that starts after the request expired counts the ramp from that expiry: one
    # whose stages ran out since then starts at full limits, not at stage one again
    short = await ks.request_resume(
        Scope.FLEET, "fleet", "fixed", ttl_s=2.0, ramp=((0.25, 1.0), (1.0, 0.0))
    )
    assert (await ks.apply_resume(short.cosigned(BOB.key), timeout_s=0.5)).ok
    assert node.ramp_fraction() == 0.25
    await asyncio.sleep(3.5)  # expired 2 s in, its 1 s stage over by 3 s
    fresh = await f.add("n3")
    assert f.order(fresh) and fresh.ramp_fraction() == 1.0
    assert fresh.guard.limits.version == "desk"
    await f.stop()


@pytest.mark.parametrize(
    ("ramp", "rule"),
    [
        (((0.5, 1.0), (0.4, 1.0), (1.0, 0.0)), r"ramp\[1\]\.fraction: must not be below"),
        (((0.5, 1.0),), "the last stage must be 1.0"),
        (((0.0, 1.0), (1.0, 0.0)), r"ramp\[0\]\.fraction: must be in \(0, 1\]"),
        (((0.5, -1.0), (1.0, 0.0)), r"ramp\[0\]\.hold_s"),
        (((0.5, float("inf")), (1.0, 0.0)), r"ramp\[0\]\.hold_s"),
        ((*((0.5, 1.0) for _ in range(16)), (1.0, 0.0)), "at most 16 stages"),
    ],
)
async def test_a_resume_request_with_a_bad_ramp_is_refused_by_name(
    ramp: tuple[tuple[float, float], ...], rule: str
) -> None:
    f = await fleet("n1")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    with pytest.raises(KillSwitchError, match=rule):
        await ks.request_resume(Scope.FLEET, "fleet", "fixed", ramp=ramp)
    await f.stop()


class _JumpingClock(SystemClock):
    """The host clocks, with a wall clock stepped an hour forward (an NTP step) after
    `readings_before_step` more readings, once `step` is called."""

    def __init__(self) -> None:
        self.readings_before_step: int | None = None
        self.jump_ns = 0

    def step(self, readings_before_step: int) -> None:
        self.readings_before_step = readings_before_step

    def time_ns(self) -> int:  # type: ignore[override]
        if self.readings_before_step is not None:
            if self.readings_before_step == 0:
                self.jump_ns = 3600 * 10**9
                self.readings_before_step = None
            else:
                self.readings_before_step -= 1
        return time.time_ns() + self.jump_ns


async def test_a_wall_clock_step_mid_ramp_does_not_skip_its_stages() -> None:
    """The controller times its stages by the monotonic clock: a wall clock stepped an
    hour forward right after the resume must not store "done" at once (the trip disarmed
    and stage two never stored). Before, it did: the stages were timed by wall time."""
    f = await fleet("n1")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    clock = _JumpingClock()
    seen: list[tuple[int, float, str]] = []

    def stepped(_: object) -> None:
        clock.step(1)  # the ramp's start is read as it was, every later reading jumped

    ctl = RampController(
        await f.plane(),
        ks,
        clock,
        FAST,
        on_stage=lambda r: seen.append((r.stage, r.fraction, r.status)),
        on_resumed=stepped,
    )
    began = time.monotonic()
    outcome = await ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    assert outcome.completed
    assert seen == [(0, 0.1, "ramping"), (1, 0.5, "ramping"), (2, 1.0, "ramping"), (2, 1.0, "done")]
    assert time.monotonic() - began >= 0.9, "every stage held its full time"
    await f.stop()


async def test_a_runaway_on_a_node_that_joins_mid_ramp_trips_the_fleet_ramp() -> None:
    """A fleet ramp covers every node, also one that starts while it runs (a crashed
    node restarted under a new id, a node added to the desk): its block-rate spike trips
    the ramp. Before, only the nodes live when the ramp began were watched."""
    f = await fleet("n1")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    ctl = RampController(await f.plane(), ks, f.clock, RampPlan.instant((0.1, 1.0), 4.0))
    resumed = asyncio.Event()
    ctl.on_resumed = lambda _: resumed.set()
    task = asyncio.create_task(ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)))
    await resumed.wait()
    late = await f.add("n2")
    heard = asyncio.Event()

    async def on_metrics(m: NodeMetrics) -> None:
        if m.node_id == "n2":
            heard.set()

    await (await f.plane()).subscribe_metrics(on_metrics)
    await heard.wait()
    while not task.done():  # n2 runs away: far beyond its stage-one limits
        for _ in range(50):
            f.order(late)
        await asyncio.sleep(0.01)
    outcome = task.result()
    assert not outcome.completed
    assert outcome.trip_reason.startswith("block-rate spike on node n2"), outcome.trip_reason
    await f.stop()


async def test_a_trip_while_the_control_plane_is_gone_still_pages_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The ramp trips just as the control plane goes: its kill cannot go out and its
    record cannot be stored, but the page (the webhook needs no control plane) must still
    go, and `approve` must hear the outcome ("its kill was NOT sent: kill the scope again
    now"). Before, the failed store of the tripped record raised past both."""
    f = await fleet("n1")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    ctl = RampController(
        await f.plane(), ks, f.clock, RampPlan.instant((0.1, 1.0), 5.0), pager=Pager()
    )
    resumed = asyncio.Event()
    ctl.on_resumed = lambda _: resumed.set()
    task = asyncio.create_task(ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)))
    await resumed.wait()

    async def plane_goes(e: StateEntry) -> None:
        if e.actor == "supervisor" and e.state is TradingState.HALTED:
            await f.fabric.set_reachable(False)

    await (await f.plane()).subscribe_states(plane_goes)
    with contextlib.suppress(KnightwatchError):
        await (await f.killswitch("supervisor")).kill(Scope.NODE, "n1", "rate", timeout_s=0.2)
    outcome = await asyncio.wait_for(task, 5.0)
    assert not outcome.completed
    assert outcome.trip_reason.startswith("supervisor alert node 'n1'"), outcome.trip_reason
    assert outcome.trip is None or not outcome.trip.ok
    assert any("PAGE rule=ramp_trip" in r.getMessage() for r in caplog.records)
    await f.fabric.set_reachable(True)
    await f.stop()


async def _ramp_with_a_halt_after_the_resume(
    halt: Callable[[StateEntry], StateEntry],
) -> RampOutcome:
    """A fleet ramp of n1, n2; once the resume is applied, `halt(resume)` is stored."""
    f = await fleet("n1", "n2")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    plane = await f.plane()
    resumed: asyncio.Queue[StateEntry] = asyncio.Queue()
    ctl = RampController(
        plane,
        ks,
        f.clock,
        RampPlan.instant((0.1, 1.0), 1.0),
        on_resumed=lambda r: resumed.put_nowait(r.entry),
    )
    task = asyncio.create_task(ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)))
    await plane.put_state(halt(await asyncio.wait_for(resumed.get(), 5.0)))
    outcome = await asyncio.wait_for(task, 5.0)
    await f.stop()
    return outcome


async def test_a_guard_halt_dated_by_a_clock_behind_ours_trips_the_ramp() -> None:
    """A halt is dated by its issuer's clock. A node whose clock runs 150 ms behind (within
    the preflight's 250 ms) that halts itself just after the resume dated its halt before
    the ramp's start, and the ramp ignored it: it walked on to full limits and "done"."""

    def behind(resume: StateEntry) -> StateEntry:
        issued = resume.issued_ns - 150_000_000
        return StateEntry(
            Scope.NODE, "n2", TradingState.HALTED, "node n2: loss", "guard:loss_limit",
            uuid.uuid4().hex, issued, expires_ns=issued + 60 * 10**9,
        )  # fmt: skip

    outcome = await _ramp_with_a_halt_after_the_resume(behind)
    assert not outcome.completed, "a Guard halt after the resume must trip the ramp"
    assert outcome.trip_reason.startswith("Guard automatic halt node 'n2'"), outcome.trip_reason


async def test_an_undecodable_entry_stored_during_the_ramp_trips_it() -> None:
    """An entry that cannot be decoded is held as a halt by every node and dated 0: the
    ramp took it for one from before it started and ramped the rest on to full limits."""
    outcome = await _ramp_with_a_halt_after_the_resume(
        lambda _: decode_entry(slot_of(Scope.NODE, "n1"), b"\xff not json", 99)
    )
    assert not outcome.completed
    assert "cannot be decoded" in outcome.trip_reason, outcome.trip_reason


async def test_a_halt_before_the_resume_is_issued_refuses_the_resume() -> None:
    """A supervisor alert that comes while stage one is being applied (after the
    approver's preflight) went unseen: no watch yet, and dated before the one made
    later. The resume was issued and the ramp walked to full limits; now it is not issued."""
    f = await fleet("n1", "n2")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    supervisor = await f.killswitch("supervisor")
    alerts: list[asyncio.Task[CommandResult]] = []

    def on_stage(record: RampRecord) -> None:
        if record.stage == 0 and record.status == "ramping" and not alerts:
            alerts.append(
                asyncio.create_task(
                    supervisor.kill(Scope.NODE, "n1", "supervisor_order_rate", timeout_s=0.5)
                )
            )

    plane = await f.plane()
    ctl = RampController(
        plane, ks, f.clock, RampPlan.instant((0.1, 1.0), 1.0, apply_timeout_s=2.0),
        on_stage=on_stage,
    )  # fmt: skip
    with pytest.raises(RampError, match=r"supervisor alert node 'n1'.*; resume not issued"):
        await asyncio.wait_for(ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)), 5.0)
    await asyncio.gather(*alerts)
    fleet_entry, _ = await plane.get_state(Scope.FLEET, "fleet")
    assert fleet_entry is not None and fleet_entry.state is TradingState.HALTED
    stored, _ = await plane.get_record(Bucket.RAMP, slot_of(Scope.FLEET, "fleet"))
    assert stored is not None and RAMP_DECODER.decode(stored).status == "tripped"
    await f.stop()


@pytest.mark.parametrize(
    ("scope", "key", "trips"),
    [
        (Scope.STRATEGY, "mm", True),
        (Scope.SYMBOL, "AAPL", True),
        (Scope.STRATEGY, "other", False),
        (Scope.SYMBOL, "MSFT", False),
        (Scope.STRATEGY_SYMBOL, "mm/MSFT", False),
    ],
)
def test_a_halt_of_a_pair_s_strategy_or_symbol_trips_the_pair_s_ramp(
    scope: Scope, key: str, trips: bool
) -> None:
    """A halt of the strategy (or the symbol) of a ramping strategy/symbol pair stops all
    the pair trades; it did not trip the pair's ramp, which ran on to "done" and left the
    pair at full limits once that strategy was resumed."""
    watch = RampWatch(Scope.STRATEGY_SYMBOL, "mm/AAPL", FAST, start_ns=100, nodes=[])
    halt = StateEntry(scope, key, TradingState.HALTED, "alert", "supervisor", "c1", 200)
    assert bool(watch.on_state(halt)) is trips


async def test_a_stage_the_store_did_not_take_leaves_the_ramp_watching(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The store misses one write just as the ramp steps to stage two. The resume is in
    force and the nodes step by the signed stages on their own clocks, so the ramp must go
    on watching: a halt afterwards still trips it back. Before, the failed write raised out
    of `apply` and nothing watched the resumed fleet."""
    f = await fleet("n1", "n2")
    ks = await f.killswitch()
    await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    plane = await f.plane()
    real_put = plane.put_record
    missed: list[int] = []

    async def misses_stage_two(
        bucket: Bucket, key: str, value: bytes, expected_revision: int | None = None
    ) -> int:
        if bucket is Bucket.RAMP and not missed and RAMP_DECODER.decode(value).stage == 1:
            missed.append(1)
            raise ControlPlaneUnavailable("control plane did not answer: one write lost")
        return await real_put(bucket, key, value, expected_revision)

    monkeypatch.setattr(plane, "put_record", misses_stage_two)
    ctl = RampController(plane, ks, f.clock, RampPlan.instant((0.1, 0.5, 1.0), 1.0))
    task = asyncio.create_task(ctl.resume(Scope.FLEET, "", "fixed", approvers=(BOB,)))
    while not missed and not task.done():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert not task.done(), task.result() if not task.exception() else task.exception()
    supervisor = await f.killswitch("supervisor")
    await supervisor.kill(Scope.NODE, "n1", "supervisor_order_rate: 900/s", timeout_s=0.5)
    outcome = await asyncio.wait_for(task, 3.0)
    assert not outcome.completed and outcome.stage == 1
    assert outcome.trip_reason.startswith("supervisor alert node 'n1'"), outcome.trip_reason
    assert outcome.trip is not None and outcome.trip.ok
    assert any("RAMP_STAGE_NOT_STORED" in r.getMessage() for r in caplog.records)
    assert not f.order(f.nodes[1])
    await f.stop()
