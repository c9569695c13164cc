"""The preflight: a healthy killed fleet passes, and each item fails on its own, naming the fix."""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.node.flags import change_key
from knightwatch.control.plane.protocol import Bucket, ControlPlane
from knightwatch.control.plane.wire import (
    ENCODER,
    NodeStarts,
    StateEntry,
    Verdict,
    starts_key,
)
from knightwatch.flags.state import FlagChange
from knightwatch.incident.preflight import (
    CHECKS,
    Checklist,
    PreflightConfig,
    halt_crash_loops,
    run_preflight,
)
from knightwatch.state import Scope, TradingState

from ..identities import BOB
from .fixtures import Fleet, fleet

CFG = PreflightConfig(listen_s=0.2)


async def admitted(plane: ControlPlane, f: Fleet, **odd: str) -> None:
    """The fleet was admitted on its target for real; `odd` rewrites a node's stored verdict
    to another release (what the preflight reads while a node has not re-attested)."""
    now = f.clock.time_ns()
    for node_id, rel in odd.items():
        verdict = Verdict(node_id, True, "admitted", rel, "d" * 64, (), now)
        await plane.put_record(Bucket.ADMISSION, node_id, ENCODER.encode(verdict))


async def killed(**odd: str) -> tuple[Fleet, ControlPlane]:
    f = await fleet("n1", "n2", release="r1")
    plane = await f.plane()
    await admitted(plane, f, **odd)
    await (await f.killswitch()).kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    return f, plane


def item(checklist: Checklist, name: str) -> tuple[bool, str]:
    found = [i for i in checklist.items if i.name == name]
    assert len(found) == 1
    return found[0].ok, found[0].detail


def only_failure(checklist: Checklist) -> str:
    failed = checklist.failures
    assert len(failed) == 1, checklist.summary()
    return failed[0].name


async def test_a_healthy_killed_fleet_passes_every_item() -> None:
    f, plane = await killed()
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert [i.name for i in checklist.items] == list(CHECKS)
    assert checklist.passed, checklist.summary()
    assert checklist.trading_nodes == ("n1", "n2")
    assert "2 node(s) admitted on r1, the known-good release" in item(checklist, "release")[1]
    await f.stop()


async def test_not_halted() -> None:
    f = await fleet("n1", release="r1")
    plane = await f.plane()
    await admitted(plane, f)
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "halted"
    assert item(checklist, "halted")[1] == "fleet 'fleet' is not halted"
    await f.stop()


async def test_a_replayed_resume_is_a_halt_the_preflight_names() -> None:
    """A two-person resume of an earlier kill, stored again over a newer one: the slot is
    halted as nodes hold it, so the preflight passes `halted` and names the refusal,
    instead of failing it with "not halted" (which left nothing to resume)."""
    f, plane = await killed()
    ks = await f.killswitch()
    r1 = await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    await ks.kill(Scope.FLEET, "", "again", timeout_s=0.5)
    await plane.put_state(r1.entry)
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    ok, detail = item(checklist, "halted")
    assert ok and "replayed" in detail, detail
    await f.stop()


async def test_a_node_on_another_release_fails_release_naming_it() -> None:
    f, plane = await killed(n2="r0")
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "release"
    assert "n2: admitted on r0, target is r1" in item(checklist, "release")[1]
    await f.stop()


async def test_an_unapproved_flag_change_after_the_kill_fails_flags() -> None:
    f, plane = await killed()
    change = FlagChange(
        "power_peg", True, ("n1",), "bob", None, "try it", "cli", f.clock.time_ns(), {}
    )
    await plane.put_record(Bucket.FLAGS, change_key("power_peg", 1), ENCODER.encode(change))
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "flags"
    assert "power_peg -> on by bob after the kill" in item(checklist, "flags")[1]
    # back to the safe default passes; so does an approved change
    safe = await run_preflight(
        plane, Scope.FLEET, "", clock=f.clock, config=CFG, safe_defaults={"power_peg": True}
    )
    assert safe.passed
    approved = msgspec.structs.replace(change, approver="carol")
    await plane.put_record(Bucket.FLAGS, change_key("power_peg", 1), ENCODER.encode(approved))
    assert (await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)).passed
    await f.stop()


async def test_a_disarmed_guard_fails_guard() -> None:
    f, plane = await killed()
    f.nodes[1].guard.disarm("test")
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "guard"
    assert item(checklist, "guard")[1] == "n2: Guard not armed"
    await f.stop()


class Skewed(SystemClock):
    def time_ns(self) -> int:
        return super().time_ns() + 2_000_000_000


async def test_a_skewed_clock_fails_clocks() -> None:
    f, plane = await killed()
    f.nodes[1].clock = Skewed()
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "clocks"
    assert "n2: clock off by +2000 ms (bound 250 ms)" in item(checklist, "clocks")[1]
    await f.stop()


async def test_an_open_supervisor_alert_in_the_scope_fails_alerts() -> None:
    f, plane = await killed()
    await (await f.killswitch("supervisor")).kill(
        Scope.STRATEGY, "mm", "reject spike", timeout_s=0.5
    )
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "alerts"
    assert "open: strategy 'mm': reject spike" in item(checklist, "alerts")[1]
    await f.stop()


async def test_a_crash_looping_node_fails_and_stays_halted() -> None:
    f, plane = await killed()
    now = f.clock.time_ns()
    starts = NodeStarts("n2", tuple(now - i * 10_000_000_000 for i in range(5)))
    await plane.put_record(Bucket.INCIDENT, starts_key("n2"), ENCODER.encode(starts))
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "crash_loop"
    assert "n2 restarted 5 times in 10 min" in item(checklist, "crash_loop")[1]
    ks = await f.killswitch()
    assert await halt_crash_loops(checklist, ks, Pager(), f.clock) == ["n2"]
    entry, _ = await plane.get_state(Scope.NODE, "n2")
    assert entry is not None and entry.state is TradingState.HALTED
    # n2 now sits out (halted on its own), so the fleet's preflight passes without it
    again = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert again.passed and again.trading_nodes == ("n1",)
    assert "staying halted: n2" in item(again, "alerts")[1]
    await f.stop()


async def test_a_guard_halt_needs_its_cause_acknowledged() -> None:
    f = await fleet("n1", release="r1")
    plane = await f.plane()
    await admitted(plane, f)
    halt = StateEntry(
        Scope.NODE, "n1", TradingState.HALTED, "loss", "guard:loss_limit", "c1", f.clock.time_ns()
    )
    await plane.put_state(halt)
    checklist = await run_preflight(plane, Scope.NODE, "n1", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "cause"
    assert "acknowledge it with --ack loss_limit" in item(checklist, "cause")[1]
    acked = await run_preflight(
        plane, Scope.NODE, "n1", clock=f.clock, config=CFG, acknowledged={"loss_limit"}
    )
    assert acked.passed, acked.summary()
    await f.stop()


@pytest.mark.parametrize("bad", [{"listen_s": "x"}, {"crash_loop_starts": "three"}])
def test_config_rejects_bad_types(bad: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(bad, PreflightConfig)
