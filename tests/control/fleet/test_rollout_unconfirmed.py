"""A stage its nodes did not confirm is held, never promoted or reported completed.

The driver wrote each stage and judged the metrics; it never looked at whether the nodes
took the stage. One that refused it (here: the change record of its stage does not hold the
stage's proof when it reads the state, so it cannot tell when the stage was written) sat at
the safe default while the driver reported the rollout completed. Now the promotion waits, bounded,
for the exposed nodes' confirmations and holds naming each node and its refusal.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from knightwatch.control.fleet.rollout import RolloutDriver
from knightwatch.control.fleet.supervisor import SupervisorConfig
from knightwatch.control.node.flags import NodeFlags, change_key, decode_state, state_key
from knightwatch.control.plane.protocol import Bucket
from knightwatch.flags.rollout import HealthGate, RolloutPlan, RolloutStatus, Stage
from knightwatch.flags.state import FlagChange
from knightwatch.order import Order, Side

from ...identities import switch
from ...integration.fleet_release import NEW_ROUTER, REGISTRY, RLP, deploy
from ...integration.test_fleet_governance import Fleet, approved, eventually
from ...integration.test_fleet_governance import fleet as fleet

PLAN = RolloutPlan(
    stages=(Stage("canary", hold_s=0.2, nodes=1), Stage("fleet", hold_s=0.2, fraction=1.0)),
    gates=(HealthGate("reject_ratio", max=0.05),),
    min_orders_per_node=5,
)


async def _trade(fleet: Fleet, done: asyncio.Event) -> None:
    """Every node trades cleanly and publishes until `done`: the gates and evidence pass."""
    n = 0
    while not done.is_set():
        for runtime in fleet.nodes.values():
            for _ in range(3):
                n += 1
                order = Order(f"{runtime.node_id}-{n}", "mm", "AAPL", Side.BUY, 1, 100.0)
                assert runtime.check(order).accepted
            await runtime.publish_once()
            await runtime.heartbeat_once()  # its membership record carries its refusal
        await asyncio.sleep(0.05)


async def test_a_stage_a_node_refuses_holds_the_rollout_naming_the_refusal(
    fleet: Fleet, tmp_path: Path
) -> None:
    """n2 starts following flags after the fleet stage was written (it learns it at a
    resync), and that stage's change record no longer holds its proof: n2 cannot tell when
    the stage was written, so it refuses it and stays at the safe default. Before, the
    driver completed the rollout over it: "every node held healthy through every stage"."""
    good = deploy(tmp_path / "good", NEW_ROUTER)
    assert (await fleet.target(fleet.signers.release("r2", good, REGISTRY.schema()))).accepted
    trees = {f"n{i}": deploy(tmp_path / f"n{i}", NEW_ROUTER) for i in range(1, 4)}
    await asyncio.gather(*(fleet.start_node(n, t) for n, t in trees.items()))
    await eventually(lambda: all(r.release_admitted for r in fleet.nodes.values()))
    for runtime in fleet.nodes.values():
        runtime.arm("ops")
        runtime.on_price("AAPL", 100.0)
    flags = {n: NodeFlags(r) for n, r in fleet.nodes.items()}
    for n in ("n1", "n3"):
        await flags[n].start()
    ops = await fleet.plane("alice")
    driver = RolloutDriver(
        ops,
        REGISTRY,
        fleet.clock,
        switch(ops, fleet.clock, "alice"),
        health=SupervisorConfig(rate_window_s=0.3),
        confirm_s=0.5,
    )
    await driver.start()
    canary = await driver.begin(RLP, PLAN, actor="alice", approval=approved(PLAN))
    assert canary.exposed == ("n1",)
    done = asyncio.Event()
    trader = asyncio.create_task(_trade(fleet, done))
    try:
        for _ in range(100):  # the canary proves itself: promoted to the fleet stage
            if (promoted := await driver.step(RLP)).stage_index == 1:
                break
            await asyncio.sleep(0.1)
        assert promoted.stage_index == 1 and promoted.exposed == ("n1", "n2", "n3"), promoted
        stored, _ = await ops.get_record(Bucket.FLAGS, state_key(RLP))
        assert stored is not None
        key = change_key(RLP, decode_state(RLP, stored).revision)
        await eventually(lambda: flags["n3"].get(RLP).value_for("n3") is True)  # type: ignore[union-attr]
        # the fleet stage's change record no longer holds its proof when n2 (its flag
        # follower restarted) reads the state: it cannot tell when the stage was written,
        # so it refuses it and stays at the safe default
        record, revision = await ops.get_record(Bucket.FLAGS, key)
        assert record is not None
        change = msgspec.json.decode(record, type=FlagChange)
        other = msgspec.json.encode(msgspec.structs.replace(change, proof="another proof"))
        await ops.put_record(Bucket.FLAGS, key, other, revision)
        await flags["n2"].start()
        await eventually(lambda: flags["n2"].last_refusal != "")
        final = await driver.run(RLP, tick_s=0.1, timeout_s=4.0)
    finally:
        done.set()
        await trader
    assert flags["n2"].get(RLP) is None or flags["n2"].get(RLP).value_for("n2") is not True  # type: ignore[union-attr]
    assert final.status is RolloutStatus.PROGRESSING, [(e.kind, e.detail) for e in final.events]
    assert final.hold_reason.startswith("rollout_unconfirmed: "), final.hold_reason
    assert "not confirmed by n2 (refused: " in final.hold_reason, final.hold_reason
    assert "n1 (" not in final.hold_reason and "n3 (" not in final.hold_reason
    assert any(e.kind == "held" and "rollout_unconfirmed" in e.detail for e in final.events)
    # the missing confirmation never holds an abort back
    aborted = await asyncio.wait_for(driver.abort(RLP, "stop"), 5.0)
    assert aborted.status is RolloutStatus.ABORTED
    await eventually(lambda: (s := flags["n1"].get(RLP)) is not None and s.value_for("n1") is False)
