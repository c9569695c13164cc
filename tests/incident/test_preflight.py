"""The preflight: a healthy killed fleet passes, and each item fails on its own, naming the fix."""

from __future__ import annotations

import asyncio
import re

import msgspec
import pytest

from knightwatch.clock import NS_PER_S, SystemClock
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.node.flags import change_key, state_key
from knightwatch.control.plane.protocol import Bucket, ControlPlane
from knightwatch.control.plane.wire import (
    ENCODER,
    TARGET_KEY,
    NodeStarts,
    NodeStatus,
    StateEntry,
    Verdict,
    starts_key,
)
from knightwatch.flags.activation import ActivationRequest
from knightwatch.flags.state import FlagChange, FlagState
from knightwatch.incident.preflight import (
    CHECKS,
    Checklist,
    PreflightConfig,
    PreflightConfigError,
    halt_crash_loops,
    run_preflight,
)
from knightwatch.release.dsse import encode_envelope
from knightwatch.state import Scope, TradingState
from knightwatch.trust.approval import Approval, ApprovalKind, sign_approval
from knightwatch.trust.flagproof import FlagSealer

from ..identities import BOB, signer, switch, trust
from ..integration.fleet_release import REGISTRY, RLP
from .fixtures import Fleet, fleet

CFG = PreflightConfig(listen_s=0.2)
HOUR = 3600 * NS_PER_S


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


def guard_halt(command_id: str, at_ns: int, code: str = "loss_limit") -> StateEntry:
    """A halt of n1 as its Guard signs it (it verifies): what the `cause` item asks for."""
    return StateEntry(
        Scope.NODE, "n1", TradingState.HALTED, "loss", f"guard:{code}", command_id, at_ns,
        expires_ns=at_ns + HOUR,
    ).signed(signer("n1").key)  # fmt: skip


async def cause_asked_for(plane: ControlPlane, f: Fleet, code: str = "loss_limit") -> str:
    """n1's preflight fails on `cause` alone, asking for `code`, and passes once it is
    acknowledged; the failing item's detail, for what it says it stood under."""
    checklist = await run_preflight(
        plane, Scope.NODE, "n1", clock=f.clock, config=CFG, trust=trust()
    )
    assert item(checklist, "halted")[0], checklist.summary()
    assert only_failure(checklist) == "cause", checklist.summary()
    detail = item(checklist, "cause")[1]
    assert f"the Guard halted on {code}" in detail and f"--ack {code}" in detail, detail
    acked = await run_preflight(
        plane, Scope.NODE, "n1", clock=f.clock, config=CFG, acknowledged={code}, trust=trust()
    )
    assert acked.passed, acked.summary()
    return detail


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


def sealed(value: bool, at_ns: int, *, approver: str | None = None) -> str:
    """Alice's signed proof of setting RLP to `value` on n1 and n2 at `at_ns`, with
    `approver`'s signed approval if given (written around `flags set`, which refuses it
    during a kill)."""
    approval = ""
    if approver is not None:
        a = Approval(ApprovalKind.FLAG, RLP, value, None, "alice", "ok", at_ns - 1, at_ns + HOUR)
        approval = encode_envelope(sign_approval(a, signer(approver))).decode()
    change = FlagChange(RLP, value, ("n1", "n2"), "alice", None, "try it", "cli", at_ns, {})
    request = ActivationRequest(RLP, value, "alice", "try it", "cli", approval=approval)
    definition = REGISTRY.get(RLP)
    assert definition is not None
    return FlagSealer(signer("alice"), trust().roster).seal(change, 1, request, definition)


async def store(plane: ControlPlane, values: dict[str, bool], proof: str) -> None:
    state = FlagState(RLP, 1, values, {}, dict.fromkeys(values, proof))
    await plane.put_record(Bucket.FLAGS, state_key(RLP), ENCODER.encode(state))


async def flags_after(
    plane: ControlPlane, f: Fleet, scope: Scope = Scope.FLEET, key: str = ""
) -> Checklist:
    return await run_preflight(plane, scope, key, clock=f.clock, config=CFG, trust=trust())


async def test_a_flag_turned_on_during_the_kill_fails_flags_even_approved() -> None:
    """Nodes refuse it while the kill holds, but one started after the resume would
    apply it: the resume waits until it is put back. The signed facts are named, not
    the unsigned change log's (which says nothing here)."""
    f, plane = await killed()
    await store(plane, {"n1": True, "n2": True}, sealed(True, f.clock.time_ns(), approver="bob"))
    checklist = await flags_after(plane, f)
    assert only_failure(checklist) == "flags"
    detail = item(checklist, "flags")[1]
    assert f"{RLP} -> on by alice, approved by bob, issued during the kill on n1, n2" in detail
    # back to the safe default after the kill (one operator, the stop direction) passes;
    # the change log's record of it has no approver, as `flags set` writes it
    off_at = f.clock.time_ns()
    await store(plane, {"n1": False, "n2": False}, sealed(False, off_at))
    off = FlagChange(RLP, False, ("n1", "n2"), "alice", None, "stop", "cli", off_at, {})
    await plane.put_record(Bucket.FLAGS, change_key(RLP, 2), ENCODER.encode(off))
    assert (await flags_after(plane, f)).passed
    await f.stop()


async def test_a_flag_turned_on_before_the_kill_passes_flags() -> None:
    f, plane = await killed()
    before = sealed(True, f.clock.time_ns() - 60 * NS_PER_S, approver="bob")
    await store(plane, {"n1": True, "n2": True}, before)
    assert (await flags_after(plane, f)).passed
    await f.stop()


@pytest.mark.parametrize(
    ("proof", "reason"),
    [("", "unsigned"), ("{", "malformed"), (None, "payload_mismatch")],
    ids=["unsigned", "garbage", "another-value"],
)
async def test_a_flag_value_that_does_not_verify_fails_flags(
    proof: str | None, reason: str
) -> None:
    """Whatever the change log says: a value nodes cannot verify is not known-good."""
    f, plane = await killed()
    before = f.clock.time_ns() - 60 * NS_PER_S
    if proof is None:  # the proof of setting it off, under a value of on
        proof = sealed(False, before)
    await store(plane, {"n2": True}, proof)
    approved = FlagChange(RLP, True, ("n2",), "bob", "carol", "x", "cli", before, {})
    await plane.put_record(Bucket.FLAGS, change_key(RLP, 1), ENCODER.encode(approved))
    checklist = await flags_after(plane, f)
    assert only_failure(checklist) == "flags"
    detail = item(checklist, "flags")[1]
    assert f"{RLP}=True does not verify ({reason}:" in detail and detail.endswith(
        "on n2: set the flag to its safe default before resuming"
    ), detail
    await f.stop()


async def test_without_a_roster_a_stored_flag_value_fails_flags() -> None:
    f, plane = await killed()
    assert (await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)).passed
    await store(plane, {"n1": True}, sealed(True, f.clock.time_ns() - 60 * NS_PER_S))
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "flags"
    assert "does not verify (no_roster:" in item(checklist, "flags")[1]
    await f.stop()


async def test_a_node_kill_judges_that_node_s_flag_values_alone() -> None:
    f, plane = await killed()
    await (await f.killswitch()).kill(Scope.NODE, "n1", "bad box", timeout_s=0.5)
    await store(plane, {"n2": True}, sealed(True, f.clock.time_ns(), approver="bob"))
    only_n1 = await flags_after(plane, f, Scope.NODE, "n1")
    assert item(only_n1, "flags")[0], item(only_n1, "flags")
    assert not item(await flags_after(plane, f), "flags")[0]
    await f.stop()


async def test_a_disarmed_guard_fails_guard() -> None:
    f, plane = await killed()
    f.nodes[1].guard.disarm("test")
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "guard"
    assert item(checklist, "guard")[1] == "n2: Guard not armed"
    await f.stop()


async def test_a_node_id_claimed_by_a_second_process_fails_guard() -> None:
    """A second process heartbeating as n2 (one that came back from a partition after n2
    restarted) trades on its own Guard and limits once resumed: twice n2's exposure. n2
    saw it and said so in its membership record, and the preflight passed all the same."""
    f = await fleet("n1", "n2")
    plane = await f.plane()
    await (await f.killswitch()).kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    other = msgspec.structs.replace(
        f.nodes[1].status(), host="rogue", pid=4242, instance="other-process"
    )
    await plane.heartbeat(other)
    while not {m.node_id: m for m in await plane.members()}["n2"].duplicate:
        await asyncio.sleep(0.02)  # n2 writes what it heard at its next heartbeat
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "guard"
    detail = item(checklist, "guard")[1]
    assert "n2: another process claims this node id (rogue:4242)" in detail, detail
    await f.stop()


class Skewed(SystemClock):
    def time_ns(self) -> int:
        return super().time_ns() + 2_000_000_000


async def test_a_skewed_clock_fails_clocks() -> None:
    f, plane = await killed()
    f.nodes[1].clock = Skewed()
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "clocks"
    # the offset is read at arrival, so a heartbeat's transit (under a millisecond
    # here, more on a loaded machine) comes off the node's +2 s
    said = re.search(r"n2: clock off by \+(\d+) ms \(bound 250 ms\)", item(checklist, "clocks")[1])
    assert said is not None, item(checklist, "clocks")[1]
    assert 1_900 <= int(said.group(1)) <= 2_000
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


async def test_a_crash_looping_node_between_restarts_fails_and_stays_halted() -> None:
    """A crash-looping node is between two restarts (its lease run out) as often as not: it
    was listed as fenced and never judged, the preflight passed, and after the resume it
    came back and traded. Its record is what the node leaves when it dies (no `left`)."""
    f = await fleet("n1", "n2")
    plane = await f.plane()
    await (await f.killswitch()).kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    now = f.clock.time_ns()
    await plane.put_member(
        NodeStatus("n3", "h", 1, now - 5 * NS_PER_S, now - 3 * NS_PER_S, now - NS_PER_S,
                   True, True, TradingState.ACTIVE)
    )  # fmt: skip
    starts = NodeStarts("n3", tuple(now - i * 10_000_000_000 for i in range(5)))
    await plane.put_record(Bucket.INCIDENT, starts_key("n3"), ENCODER.encode(starts))
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "crash_loop"
    assert "n3 restarted 5 times in 10 min" in item(checklist, "crash_loop")[1]
    assert checklist.crash_looping == ("n3",) and "n3" not in checklist.trading_nodes
    assert await halt_crash_loops(checklist, await f.killswitch(), Pager(), f.clock) == ["n3"]
    entry, _ = await plane.get_state(Scope.NODE, "n3")
    assert entry is not None and entry.state is TradingState.HALTED  # when it comes back
    again = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert again.passed, again.summary()
    await f.stop()


async def test_an_unreadable_start_record_fails_crash_loop_instead_of_passing_it() -> None:
    """A trading node's start record that does not decode cannot show the node is not
    crash-looping: the item fails naming the record (it passed, as if there were none)."""
    f, plane = await killed()
    await plane.put_record(Bucket.INCIDENT, starts_key("n2"), b"{not json")
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "crash_loop"
    detail = item(checklist, "crash_loop")[1]
    assert "starts.n2: undecodable" in detail and "cannot tell" in detail, detail
    await f.stop()


@pytest.mark.parametrize("record", ["verdict", "target"])
async def test_an_unreadable_release_record_fails_release_naming_it(record: str) -> None:
    """An admission verdict or target release that does not decode cannot be checked: the
    `release` item fails naming it, instead of the preflight dying on a decode error."""
    if record == "verdict":
        f, plane = await killed()
        await plane.put_record(Bucket.ADMISSION, "n2", b"\xff garbage")
    else:  # written under a fleet without an admission service (it reads the target too)
        f = await fleet("n1", "n2")
        plane = await f.plane()
        await (await f.killswitch()).kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
        await plane.put_record(Bucket.RELEASE, TARGET_KEY, b"[1, 2]")
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    ok, detail = item(checklist, "release")
    assert not ok and not checklist.passed
    needle = "n2: admission verdict undecodable" if record == "verdict" else "target release"
    assert needle in detail and "cannot check the release" in detail, detail
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


@pytest.mark.parametrize("starts", [16, 17, 1000])
async def test_a_crash_loop_bound_no_stored_history_can_exceed_is_refused(starts: int) -> None:
    """A node keeps its last 16 starts, so "more than 16 starts" can never be read from
    the store: such a bound passed a node restarting every few seconds, every time. It
    is refused by name; the highest one allowed still catches a node at its 16 kept."""
    with pytest.raises(PreflightConfigError, match=r"crash_loop_starts: must be in 1\.\.15 "):
        PreflightConfig(crash_loop_starts=starts)
    f, plane = await killed()
    now = f.clock.time_ns()
    kept = NodeStarts("n2", tuple(now - i * NS_PER_S for i in range(16)))  # all a node keeps
    await plane.put_record(Bucket.INCIDENT, starts_key("n2"), ENCODER.encode(kept))
    cfg = PreflightConfig(listen_s=0.2, crash_loop_starts=15)
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=cfg)
    assert "n2 restarted 16 times" in item(checklist, "crash_loop")[1], checklist.summary()
    await f.stop()


@pytest.mark.parametrize("bad", [{"listen_s": "x"}, {"crash_loop_starts": "three"}])
def test_config_rejects_bad_types(bad: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(bad, PreflightConfig)


class HourAhead(SystemClock):
    """An issuer's wall clock an hour ahead of everyone else's."""

    def time_ns(self) -> int:
        return super().time_ns() + HOUR


async def test_a_flag_turned_on_during_a_kill_dated_ahead_fails_flags() -> None:
    """erin's clock runs an hour ahead when she kills the fleet. A flag turned on (approved)
    during her kill was issued before the kill's own date, yet during the kill: nodes
    refuse it, and the preflight names it. Before, it placed the kill at its claimed date
    and passed `flags` without looking; a change made before the kill still passes."""
    f = await fleet("n1", "n2", release="r1")
    f.fabric.clock = f.clock  # the store stamps each write with its own time
    plane = await f.plane()
    await admitted(plane, f)
    before = sealed(True, f.clock.time_ns() - 60 * NS_PER_S, approver="bob")
    kill = await switch(await f.plane(), HourAhead(), "erin").kill(
        Scope.FLEET, "", "runaway", timeout_s=0.5
    )
    assert kill.ok and kill.entry.issued_ns > f.clock.time_ns() + HOUR // 2
    await store(plane, {"n1": True, "n2": True}, before)
    assert (await flags_after(plane, f)).passed
    await store(plane, {"n1": True, "n2": True}, sealed(True, f.clock.time_ns(), approver="bob"))
    checklist = await flags_after(plane, f)
    assert only_failure(checklist) == "flags"
    detail = item(checklist, "flags")[1]
    assert f"{RLP} -> on by alice, approved by bob, issued during the kill on n1, n2" in detail
    await f.stop()


@pytest.mark.parametrize("code", ["venue_quarantine", "", "Loss_Limit"])
async def test_a_guard_halt_on_a_code_this_version_does_not_know_needs_it_acknowledged(
    code: str,
) -> None:
    """A Guard halt's actor names its code; `entry.source` reads a code this version does
    not know (a newer node's, during a rolling upgrade) as the operator latch, and the
    preflight took that for an operator halt: `cause` passed with nothing acknowledged."""
    f = await fleet("n1", release="r1")
    plane = await f.plane()
    await admitted(plane, f)
    halt = StateEntry(
        Scope.NODE, "n1", TradingState.HALTED, "new", f"guard:{code}", "c1", f.clock.time_ns()
    )
    await plane.put_state(halt)
    checklist = await run_preflight(plane, Scope.NODE, "n1", clock=f.clock, config=CFG)
    assert only_failure(checklist) == "cause"
    detail = item(checklist, "cause")[1]
    assert f"the Guard halted on {code!r}, a code this version does not know" in detail, detail
    assert f"acknowledge it with --ack {code} after" in detail, detail
    acked = await run_preflight(
        plane, Scope.NODE, "n1", clock=f.clock, config=CFG, acknowledged={code}
    )
    assert acked.passed, acked.summary()
    await f.stop()


async def test_a_restored_operator_halt_under_the_guard_s_actor_needs_no_acknowledgement() -> None:
    f = await fleet("n1", release="r1")
    plane = await f.plane()
    await admitted(plane, f)
    halt = StateEntry(
        Scope.NODE, "n1", TradingState.HALTED, "kept", "guard:halted", "c1", f.clock.time_ns()
    )
    await plane.put_state(halt)
    checklist = await run_preflight(plane, Scope.NODE, "n1", clock=f.clock, config=CFG)
    assert checklist.passed, checklist.summary()
    await f.stop()
