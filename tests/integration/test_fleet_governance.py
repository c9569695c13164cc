"""Release admission and flag governance on a live fleet: a real nats-server, NodeRuntimes.

One story, Knight's: eight servers, one missed the deploy. Here the stale node
is refused at join and never arms, a flag activation is refused naming it,
it is admitted after a correct redeploy and activation succeeds and is
confirmed by every node; a file changed after admission fences the node at
once; a rollback to a release that re-defines the flag id is refused; a
rollout whose canary turns unhealthy puts the flag back off and halts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from openfeature import api

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.admission import AdmissionService
from knightwatch.control.fleet.flagstore import AppliedWaiter, PlaneFlagStore, fleet_snapshot
from knightwatch.control.fleet.freeze import describe, kill_in_force, record_known_good
from knightwatch.control.fleet.rollout import RolloutDriver, RolloutError
from knightwatch.control.fleet.supervisor import SupervisorConfig
from knightwatch.control.node.flags import NodeFlags
from knightwatch.control.node.runtime import NodeError, NodeRuntime
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.rosters import publish_roster
from knightwatch.control.plane.wire import TargetReply
from knightwatch.control.site import Site
from knightwatch.decision import RejectReason
from knightwatch.flags.activation import ActivationCode, ActivationGate, ActivationRequest
from knightwatch.flags.provider import KnightwatchProvider
from knightwatch.flags.rollout import (
    HealthGate,
    RolloutPlan,
    RolloutState,
    RolloutStatus,
    Stage,
    plan_digest,
)
from knightwatch.order import Order, Side
from knightwatch.release.dsse import Envelope, encode_envelope
from knightwatch.release.keys import SigningKey
from knightwatch.release.reasons import AdmissionReason
from knightwatch.state import Scope, TradingState
from knightwatch.trust.approval import Approval, ApprovalKind, sign_approval
from knightwatch.trust.flagproof import FlagSealer
from knightwatch.trust.kit import member_of
from knightwatch.trust.roster import Role, roster_envelope, sign_roster

from ..identities import BOB, KIT, set_target, switch, trust
from .fleet_release import (
    NEW_ROUTER,
    OLD_ROUTER,
    REDEFINED_RLP,
    REGISTRY,
    RLP,
    Signers,
    deploy,
    node,
)

N = 4
STALE = "n4"


class Fleet:
    def __init__(self, site: Site, root: Path) -> None:
        self.site = site
        self.root = root
        self.clock = SystemClock()
        self.signers = Signers()
        self.planes: list[NatsControlPlane] = []
        self.nodes: dict[str, NodeRuntime] = {}
        self.admission: AdmissionService | None = None

    async def plane(self, name: str) -> NatsControlPlane:
        plane = await self.site.connect(name)
        self.planes.append(plane)
        return plane

    async def target(self, envelope: Envelope) -> TargetReply:
        return await set_target(await self.plane("alice"), envelope, self.clock)

    async def start_node(self, node_id: str, tree: Path) -> NodeRuntime:
        runtime = node(node_id, await self.plane(node_id), tree, self.clock)
        await runtime.start()
        self.nodes[node_id] = runtime
        return runtime

    async def close(self) -> None:
        for runtime in self.nodes.values():
            await runtime.stop()
        for plane in self.planes:
            await plane.close()


@pytest.fixture
async def fleet(nats_server: Site, tmp_path: Path) -> AsyncIterator[Fleet]:
    f = Fleet(nats_server, tmp_path)
    admin = await f.plane("admission")
    service = AdmissionService(
        admin, f.signers.trust, REGISTRY.admission_schema(), clock=f.clock, roster=trust()
    )
    await service.start()
    f.admission = service
    try:
        yield f
    finally:
        await f.close()


def order(n: int) -> Order:
    return Order(f"o{n}", "mm", "AAPL", Side.BUY, 10, 100.0)


async def eventually(predicate: object, timeout_s: float = 15.0) -> None:
    assert callable(predicate)
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    assert predicate(), f"not within {timeout_s} s"


async def activate(fleet: Fleet, value: bool) -> tuple[ActivationGate, object]:
    ops = await fleet.plane("alice")
    view = await fleet_snapshot(ops, fleet.clock)
    sealer = FlagSealer(KIT.signer("alice"), trust().roster)
    store = PlaneFlagStore(ops, fleet.clock)
    gate = ActivationGate(REGISTRY, view, store, fleet.clock, sealer=sealer)
    now = fleet.clock.time_ns()
    approval = Approval(
        ApprovalKind.FLAG, RLP, value, None, "alice", "RLP launch", now, now + 3600 * 10**9
    )
    request = ActivationRequest(
        RLP, value, "alice", "RLP launch", "test", approver="bob",
        approval=encode_envelope(sign_approval(approval, BOB)).decode(),
    )  # fmt: skip
    return gate, await asyncio.to_thread(gate.apply, request)


async def test_stale_node_refused_then_redeployed_drift_fences_rollback_refused(
    fleet: Fleet, tmp_path: Path
) -> None:
    good = deploy(tmp_path / "good", NEW_ROUTER)
    assert (await fleet.target(fleet.signers.release("r2", good, REGISTRY.schema()))).accepted
    trees = {f"n{i}": deploy(tmp_path / f"n{i}", NEW_ROUTER) for i in range(1, N)}
    trees[STALE] = deploy(tmp_path / STALE, OLD_ROUTER)  # missed the deploy
    await asyncio.gather(*(fleet.start_node(n, t) for n, t in trees.items()))
    stale = fleet.nodes[STALE]

    # refused at join: never leased, never armed; the refusal names the file. An attestation
    # a loaded machine did not answer in time is made again: wait for the verdicts themselves
    await eventually(lambda: all(fleet.nodes[n].release_admitted for n in trees if n != STALE))
    await eventually(lambda: stale.verdict is not None)
    for n in trees:
        if n != STALE:
            fleet.nodes[n].arm("ops")
    assert not stale.release_admitted and not stale.admitted
    assert stale.verdict is not None
    assert [(f.reason, f.subject) for f in stale.verdict.findings] == [
        (AdmissionReason.FILE_MISMATCH, "smars/router.py")
    ]
    with pytest.raises(NodeError, match=r"file_mismatch: smars/router\.py"):
        stale.arm("ops")
    assert stale.check(order(1)).reason is RejectReason.NOT_ARMED

    # activation refused on the skewed fleet, naming the stale node
    _, refused = await activate(fleet, True)
    assert not refused.accepted  # type: ignore[attr-defined]
    assert refused.code is ActivationCode.NODE_NOT_ADMITTED  # type: ignore[attr-defined]
    assert f"node {STALE}" in refused.detail  # type: ignore[attr-defined]

    # a correct redeploy: admitted at its next attestation, then activation goes through
    (trees[STALE] / "app" / "smars" / "router.py").write_bytes(NEW_ROUTER)
    await stale.attest_once()
    await eventually(lambda: stale.admitted)
    stale.arm("ops")
    flags = {n: NodeFlags(r) for n, r in fleet.nodes.items()}
    for f in flags.values():
        await f.start()
    watcher_plane = await fleet.plane("carol")
    waiter = AppliedWaiter(watcher_plane, fleet.clock)
    await waiter.start()
    t0 = fleet.clock.monotonic_ns()
    _, done = await activate(fleet, True)
    assert done.accepted, done.detail  # type: ignore[attr-defined]
    latencies, missing = await waiter.wait(RLP, 1, sorted(fleet.nodes), t0, timeout_s=15.0)
    assert missing == [] and set(latencies) == set(fleet.nodes)

    provider = KnightwatchProvider(REGISTRY, flags["n1"], flags["n1"], "n1", REGISTRY.schema())
    api.set_provider(provider)
    assert api.get_client().get_boolean_value(RLP, False) is True

    # drift after admission: fenced at once, orders blocked, the provider fails closed
    drifted = fleet.nodes["n2"]
    (trees["n2"] / "app" / "smars" / "router.py").write_bytes(OLD_ROUTER)
    await drifted.attest_once()
    assert drifted.verdict is not None and drifted.verdict.status == "fenced"
    assert AdmissionReason.NODE_DRIFTED in {f.reason for f in drifted.verdict.findings}
    assert not drifted.admitted
    assert drifted.check(order(2)).reason is RejectReason.LEASE_EXPIRED
    api.set_provider(
        KnightwatchProvider(REGISTRY, flags["n2"], flags["n2"], "n2", REGISTRY.schema())
    )
    details = api.get_client().get_boolean_details(RLP, True)
    assert details.value is False and details.flag_metadata["fail_closed"] == "node_not_admitted"

    # a rollback to a release that re-defines the flag id is refused; the target stays
    old = fleet.signers.release("r1", good, {RLP: REDEFINED_RLP})
    reply = await fleet.target(old)
    assert not reply.accepted
    assert [(f.reason, f.subject) for f in reply.findings] == [
        (AdmissionReason.FLAG_REDEFINED_IN_REGISTRY, RLP)
    ]
    await fleet.nodes["n1"].attest_once()
    assert fleet.nodes["n1"].release_admitted and fleet.nodes["n1"].verdict.release_id == "r2"  # type: ignore[union-attr]


def approved(plan: RolloutPlan, requester: str = "alice") -> Envelope:
    """Bob's signed approval of `requester` rolling RLP out with exactly `plan`."""
    now = SystemClock().time_ns()
    approval = Approval(
        ApprovalKind.ROLLOUT, RLP, True, None, requester, "reviewed", now, now + 3600 * 10**9,
        digest=plan_digest(plan),
    )  # fmt: skip
    return sign_approval(approval, BOB)


async def rollout_fleet(fleet: Fleet, tmp_path: Path) -> tuple[dict[str, NodeFlags], RolloutDriver]:
    """Every node admitted on the good release, armed, priced, following flags; a driver."""
    good = deploy(tmp_path / "good", NEW_ROUTER)
    assert (await fleet.target(fleet.signers.release("r2", good, REGISTRY.schema()))).accepted
    trees = {f"n{i}": deploy(tmp_path / f"n{i}", NEW_ROUTER) for i in range(1, N + 1)}
    await asyncio.gather(*(fleet.start_node(n, t) for n, t in trees.items()))
    await eventually(lambda: all(r.release_admitted for r in fleet.nodes.values()))
    for runtime in fleet.nodes.values():
        runtime.arm("ops")
        runtime.on_price("AAPL", 100.0)
    flags = {n: NodeFlags(r) for n, r in fleet.nodes.items()}
    for f in flags.values():
        await f.start()
    ops = await fleet.plane("alice")
    driver = RolloutDriver(
        ops,
        REGISTRY,
        fleet.clock,
        switch(ops, fleet.clock, "alice"),
        health=SupervisorConfig(rate_window_s=0.3),
    )
    await driver.start()
    return flags, driver


async def test_rollout_abort_on_unhealthy_metrics_turns_flag_off_and_halts(
    fleet: Fleet, tmp_path: Path
) -> None:
    flags, driver = await rollout_fleet(fleet, tmp_path)
    plan = RolloutPlan(
        stages=(Stage("canary", hold_s=30, nodes=1), Stage("fleet", hold_s=0.3, fraction=1.0)),
        gates=(HealthGate("reject_ratio", max=0.05),),
    )
    canary = await driver.begin(RLP, plan, actor="alice", approval=approved(plan))
    assert canary.exposed == ("n1",)
    await eventually(lambda: flags["n1"].get(RLP) is not None)
    assert flags["n1"].get(RLP).value_for("n1") is True  # type: ignore[union-attr]
    for runtime in fleet.nodes.values():
        await runtime.publish_once()  # baseline sample for the window
    # the canary starts rejecting: every order blocked by its own Guard
    fleet.nodes["n1"].guard.disarm("test: canary misbehaves")
    for i in range(20):
        fleet.nodes["n1"].check(order(i))
    for runtime in fleet.nodes.values():
        await runtime.publish_once()
    final = await driver.run(RLP, tick_s=0.1, timeout_s=15.0)
    assert final.status is RolloutStatus.ABORTED and "reject_ratio" in final.abort_reason
    await eventually(lambda: flags["n1"].get(RLP).value_for("n1") is False)  # type: ignore[union-attr]
    await eventually(
        lambda: fleet.nodes["n1"].guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED
    )
    # n2..n4 are never exposed; each has heard the flag's state before its value is read
    await eventually(lambda: all(flags[n].get(RLP) is not None for n in flags))
    assert all(flags[n].get(RLP).value_for(n) is None for n in ("n2", "n3", "n4"))  # type: ignore[union-attr]


async def test_rollout_promotes_on_healthy_evidence_through_to_the_fleet(
    fleet: Fleet, tmp_path: Path
) -> None:
    flags, driver = await rollout_fleet(fleet, tmp_path)
    plan = RolloutPlan(
        stages=(Stage("canary", hold_s=0.2, nodes=1), Stage("fleet", hold_s=0.2, fraction=1.0)),
        gates=(HealthGate("reject_ratio", max=0.05),),
        min_orders_per_node=5,
    )
    await driver.begin(RLP, plan, actor="alice", approval=approved(plan))
    done = asyncio.Event()

    async def trade() -> None:
        """Every node trades cleanly and publishes, stage after stage, until the end."""
        n = 0
        while not done.is_set():
            for runtime in fleet.nodes.values():
                for _ in range(3):
                    n += 1
                    assert runtime.check(
                        Order(f"{runtime.node_id}-{n}", "mm", "AAPL", Side.BUY, 1, 100.0)
                    ).accepted
                await runtime.publish_once()
            await asyncio.sleep(0.05)

    trader = asyncio.create_task(trade())
    try:
        final = await driver.run(RLP, tick_s=0.1, timeout_s=30.0)
    finally:
        done.set()
        await trader
    assert final.status is RolloutStatus.COMPLETED, final
    await eventually(
        lambda: all((s := flags[n].get(RLP)) is not None and s.value_for(n) is True for n in flags)
    )


async def test_a_promotion_is_held_while_a_kill_is_in_force_and_goes_ahead_after_the_resume(
    fleet: Fleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A strategy kill elsewhere freezes the fleet's rollouts: the canary's clean evidence
    would promote it, but the driver holds the stage (naming the kill) until the resume."""
    _, driver = await rollout_fleet(fleet, tmp_path)
    plan = RolloutPlan(
        stages=(Stage("canary", hold_s=0.2, nodes=1), Stage("fleet", hold_s=0.2, fraction=1.0)),
        gates=(HealthGate("reject_ratio", max=0.05),),
        min_orders_per_node=5,
    )
    canary = await driver.begin(RLP, plan, actor="alice", approval=approved(plan))
    ops = await fleet.plane("alice")
    ks = switch(ops, fleet.clock)
    assert (await ks.kill(Scope.STRATEGY, "other", "other desk ran away", timeout_s=15.0)).ok
    n = 0

    async def clean_evidence() -> None:
        nonlocal n
        for runtime in fleet.nodes.values():
            for _ in range(3):
                n += 1
                assert runtime.check(
                    Order(f"{runtime.node_id}-{n}", "mm", "AAPL", Side.BUY, 1, 100.0)
                ).accepted
            await runtime.publish_once()

    caplog.set_level("WARNING", logger="knightwatch.control.fleet.rollout")
    for _ in range(8):  # 0.8 s of clean flow: four times the canary's hold
        await clean_evidence()
        await asyncio.sleep(0.1)
        held = await driver.step(RLP)
        assert held.status is RolloutStatus.PROGRESSING
        assert held.stage_index == canary.stage_index == 0
    assert "ROLLOUT_HELD promotion of trading.smars.rlp_enabled: refused" in caplog.text
    assert "strategy kill 'other'" in caplog.text
    await ks.resume(Scope.STRATEGY, "other", "resolved", timeout_s=15.0, approvers=(BOB,))
    deadline = asyncio.get_running_loop().time() + 15.0  # evidence takes what a loaded box needs
    while asyncio.get_running_loop().time() < deadline:
        await clean_evidence()
        await asyncio.sleep(0.1)
        state = await driver.step(RLP)
        if state.stage_index > 0 or state.status is not RolloutStatus.PROGRESSING:
            break
    assert state.stage_index == 1 or state.status is RolloutStatus.COMPLETED, state


async def test_freeze_while_killed_refuses_risk_adding_changes_and_passes_reducing_ones(
    fleet: Fleet, tmp_path: Path
) -> None:
    _, driver = await rollout_fleet(fleet, tmp_path)
    ops = await fleet.plane("alice")
    ks = switch(ops, fleet.clock)
    kill = await ks.kill(Scope.FLEET, "", "runaway", timeout_s=15.0)
    assert kill.ok
    assert await record_known_good(ops, kill.entry, fleet.clock.time_ns()) == "r2"
    frozen = await kill_in_force(ops)
    assert frozen is not None and frozen.command_id == kill.entry.command_id

    # a different release, even newly signed, is refused naming the kill; the known-good passes
    tree = deploy(tmp_path / "r3", NEW_ROUTER)
    reply = await fleet.target(fleet.signers.release("r3", tree, REGISTRY.schema()))
    assert not reply.accepted
    (finding,) = reply.findings
    assert finding.reason is AdmissionReason.FROZEN_BY_KILL
    assert "fleet kill 'fleet'" in finding.detail and "only r2 (known-good)" in finding.detail
    good = deploy(tmp_path / "good-again", NEW_ROUTER)
    assert (await fleet.target(fleet.signers.release("r2", good, REGISTRY.schema()))).accepted

    # a flag towards trading behaviour is refused; back to its safe default passes
    view = await fleet_snapshot(ops, fleet.clock)
    gate = ActivationGate(
        REGISTRY, view, PlaneFlagStore(ops, fleet.clock), fleet.clock, frozen_by=describe(frozen)
    )
    on = ActivationRequest(RLP, True, "alice", "fix", "test", approver="bob")
    refused = await asyncio.to_thread(gate.apply, on)
    assert refused.code is ActivationCode.FROZEN_BY_KILL and "runaway" in refused.detail
    off = ActivationRequest(RLP, False, "alice", "safe", "test")
    assert (await asyncio.to_thread(gate.apply, off)).accepted

    # a rollout start is refused
    plan = RolloutPlan(stages=(Stage("fleet", hold_s=0.1, fraction=1.0),))
    with pytest.raises(
        RolloutError, match=r"rollout of trading\.smars\.rlp_enabled: refused while"
    ):
        await driver.begin(RLP, plan, actor="alice", approval=approved(plan))

    # a new node's enrolment (a roster version that adds it, signed by the admins) is not
    # taken by the admission service while the kill is in force
    roster = KIT.roster
    newcomer = member_of("n10", SigningKey.generate(), [Role.NODE])
    added = msgspec.structs.replace(
        roster,
        version=roster.version + 1,
        issued_ns=roster.issued_ns + 1,
        members=(*roster.members, newcomer),
    )
    envelope = roster_envelope(added)
    for admin in KIT.admin_names[: roster.admin_threshold]:
        envelope = sign_roster(envelope, KIT.signer(admin).key)
    await publish_roster(await fleet.plane("admin1"), envelope)
    service = fleet.admission
    assert service is not None
    await eventually(lambda: service.trust_store.version == added.version)
    await asyncio.sleep(0.2)
    assert "n10" not in service.roster and "n1" in service.roster

    # reducing the blast radius always passes: a further kill and a drain
    assert (await ks.kill(Scope.NODE, "n1", "belt and braces", timeout_s=1.0)).revision
    drained = await ks.kill(Scope.STRATEGY, "mm", "drain", state=TradingState.REDUCING)
    assert drained.revision is not None

    # the resume lifts the freeze (the strategy drain above is a kill of its own)
    await ks.resume(Scope.STRATEGY, "mm", "drained", approvers=(BOB,))
    await ks.resume(Scope.FLEET, "", "fixed", approvers=(BOB,))
    assert await kill_in_force(ops) is None
    assert (await fleet.target(fleet.signers.release("r3", tree, REGISTRY.schema()))).accepted


async def test_a_rollout_runs_only_the_plan_its_approval_names(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Bob approved a slow canary; an approval of another plan does not start this one, and
    a state edited in the store afterwards (straight to the fleet, bob's name kept) is not
    promoted: the driver aborts it back to the safe default."""
    flags, driver = await rollout_fleet(fleet, tmp_path)
    # a gate that judges nothing here (any reject ratio, missing data tolerated): these
    # plans differ in their stages alone
    lenient = (HealthGate("reject_ratio", max=1.0),)
    slow = RolloutPlan(
        stages=(Stage("canary", hold_s=60, nodes=1), Stage("fleet", hold_s=60, fraction=1.0)),
        gates=lenient,
        failure_limit=10**6,
    )
    fast = RolloutPlan(
        stages=(Stage("fleet", hold_s=0, fraction=1.0),), gates=lenient, failure_limit=10**6
    )
    with pytest.raises(RolloutError, match="not this change"):
        await driver.begin(RLP, fast, actor="alice", approval=approved(slow))
    with pytest.raises(RolloutError, match="other than alice"):
        await driver.begin(RLP, slow, actor="alice", approval=sign_approval_as(slow, "alice"))
    canary = await driver.begin(RLP, slow, actor="alice", approval=approved(slow))
    assert canary.exposed == ("n1",) and canary.approver == "bob"
    held = await driver.step(RLP)  # the approved plan holds its canary
    assert (held.status, held.stage_index) == (RolloutStatus.PROGRESSING, 0)
    # an operator's credentials can write the rollout record: a faster plan, bob still named
    ops = await fleet.plane("alice")
    value, revision = await ops.get_record(Bucket.ROLLOUTS, RLP)
    assert value is not None
    stored = msgspec.json.decode(value, type=RolloutState)
    edited = msgspec.structs.replace(stored, plan=fast)
    await ops.put_record(Bucket.ROLLOUTS, RLP, msgspec.json.encode(edited), revision)
    final = await driver.step(RLP)
    assert final.status is RolloutStatus.ABORTED, final
    assert final.abort_reason.startswith("rollout_unapproved") and "not this change" in (
        final.abort_reason
    )
    assert final.exposed == ("n1",)  # never promoted to the fleet
    await eventually(lambda: flags["n1"].get(RLP).value_for("n1") is False)  # type: ignore[union-attr]
    # n2..n4 are never exposed; each has heard the flag's state before its value is read
    await eventually(lambda: all(flags[n].get(RLP) is not None for n in flags))
    assert all(flags[n].get(RLP).value_for(n) is None for n in ("n2", "n3", "n4"))  # type: ignore[union-attr]

    # a record that is no rollout at all: a refusal that names it and says how to stop
    _, revision = await ops.get_record(Bucket.ROLLOUTS, RLP)
    await ops.put_record(Bucket.ROLLOUTS, RLP, b'{"rollout_id": 7}', revision)
    for attempt in (driver.abort(RLP, "stop"), driver.step(RLP)):
        with pytest.raises(RolloutError, match=r"stored rollout record .* cannot be read") as info:
            await attempt
        assert f"knightwatch flags set {RLP} off --reason" in str(info.value)


def sign_approval_as(plan: RolloutPlan, signer: str) -> Envelope:
    now = SystemClock().time_ns()
    approval = Approval(
        ApprovalKind.ROLLOUT, RLP, True, None, "alice", "mine", now, now + 10**12,
        digest=plan_digest(plan),
    )  # fmt: skip
    return sign_approval(approval, KIT.signer(signer))
