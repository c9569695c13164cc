"""A full rollouts bucket never keeps an abort from switching the nodes back off.

The rollouts bucket is bounded (`RECORD_MAX_BYTES`, discard new). The driver records an
abort (compare-and-swap on the rollout record) before it acts, so a concurrent driver
sees every node the abort is about to switch off; but a record write the store refused
(the bucket at its bound: one operator's flood) or did not answer raised out of `abort`
before any switch-off, and the exposed canary stayed on, the stop direction gated by a
bucket's room. Now the switch-off goes out whatever became of the record, and the abort
says it was not recorded. A new rollout (risk added) stops short of the bucket's last
share (`STOP_RESERVE_SHARE`), which stays for aborts. An abort whose actions did not
all land is tried again by the next abort, not refused as "already aborted". Real
nats-server, a real node applying the flag."""

from __future__ import annotations

import dataclasses

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.fleet.rollout import RolloutDriver, RolloutError
from knightwatch.control.node.flags import NodeFlags
from knightwatch.control.plane.nats import STOP_RESERVE_SHARE, NatsControlPlane, connect_as
from knightwatch.control.plane.protocol import Bucket, ControlPlaneRefused
from knightwatch.control.site import Site
from knightwatch.flags.activation import ActivationPolicy, SecondApprover
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.rollout import (
    HealthGate,
    RolloutPlan,
    RolloutStatus,
    Stage,
    failed_actions,
)

from ..helpers import eventually
from .test_flagstore import FLAG, REGISTRY
from .test_flagstore import flag_node as flag_node  # the shared fixture

BOUND = 256 << 10
"""The rollouts bucket's bound shrunk from 32 MiB, so filling it takes a moment."""
PLAN = RolloutPlan(
    stages=(Stage("canary", hold_s=600, nodes=1), Stage("fleet", hold_s=60, fraction=1.0)),
    gates=(HealthGate("reject_ratio", max=1.0),),
    failure_limit=10**6,
    halt_on_abort=False,
)


async def _fill(site: Site, upto: int) -> None:
    """Bound the rollouts bucket at `BOUND` and fill it to `upto` bytes (a flood); past
    the bound, until the store refuses even a small record."""
    nc = await connect_as(site.server.provisioner, [site.server.url])
    alice = await site.connect("alice")
    try:
        js = nc.jetstream()
        config = (await js.stream_info("KV_kw_rollouts")).config
        await js.update_stream(dataclasses.replace(config, max_bytes=BOUND))
        i = 0
        while (await js.stream_info("KV_kw_rollouts")).state.bytes < min(upto, BOUND - 4096):
            await alice.put_record(Bucket.ROLLOUTS, f"other.flag.{i}", b"x" * 4096)
            i += 1
        while upto >= BOUND:
            try:
                await alice.put_record(Bucket.ROLLOUTS, f"other.flag.{i}", b"x" * 64)
            except ControlPlaneRefused:
                break
            i += 1
    finally:
        await alice.close()
        await nc.close()


def _driver(site: Site, plane: NatsControlPlane) -> RolloutDriver:
    clock = SystemClock()
    return RolloutDriver(
        plane,
        REGISTRY,
        clock,
        KillSwitch(plane, clock, site.signer("alice"), site.store()),
        policy=ActivationPolicy(SecondApprover.NEVER),
    )


async def test_an_abort_whose_record_the_full_bucket_refuses_still_switches_the_canary_off(
    flag_node: tuple[Site, NatsControlPlane, NodeFlags],
) -> None:
    site, alice, flags = flag_node
    driver = _driver(site, alice)
    state = await driver.begin(FLAG, PLAN, actor="alice", approval=None)
    assert state.status is RolloutStatus.PROGRESSING and state.exposed == ("n1",), state
    await eventually(lambda: (held := flags.get(FLAG)) is not None and held.value_for("n1"))

    await _fill(site, BOUND)  # to the very bound: every write refused
    with pytest.raises(RolloutError) as refused:
        await driver.abort(FLAG, "canary misbehaves")
    line = str(refused.value)
    assert "abort not recorded" in line and "n1 switched back" in line, line
    await eventually(lambda: (held := flags.get(FLAG)) is not None and not held.value_for("n1"))


async def test_a_new_rollout_leaves_the_buckets_last_share_for_aborts(
    flag_node: tuple[Site, NatsControlPlane, NodeFlags],
) -> None:
    site, alice, flags = flag_node
    await _fill(site, BOUND - BOUND // STOP_RESERVE_SHARE)
    with pytest.raises(RolloutError) as refused:
        await _driver(site, alice).begin(FLAG, PLAN, actor="alice", approval=None)
    assert "kw_rollouts" in str(refused.value) and "nothing started" in str(refused.value)
    held = flags.get(FLAG)
    assert held is None or not held.value_for("n1")


async def test_an_abort_that_did_not_land_is_tried_again_not_refused_as_already_aborted(
    flag_node: tuple[Site, NatsControlPlane, NodeFlags],
) -> None:
    """The first abort's switch-off was refused (a registry without the flag given to
    `rollout abort`): the rollout read "aborted" with n1 on, and a second abort was refused
    as "already aborted", the stop direction left to whoever knew another command."""
    site, alice, flags = flag_node
    state = await _driver(site, alice).begin(FLAG, PLAN, actor="alice", approval=None)
    assert state.exposed == ("n1",), state
    await eventually(lambda: (held := flags.get(FLAG)) is not None and held.value_for("n1"))

    lost = _driver(site, alice)
    lost.registry = FlagRegistry.from_definitions((), "none")
    first = await lost.abort(FLAG, "canary misbehaves")
    assert first.status is RolloutStatus.ABORTED and failed_actions(first), first
    held = flags.get(FLAG)
    assert held is not None and held.value_for("n1")

    again = await _driver(site, alice).abort(FLAG, "canary misbehaves")
    assert again.status is RolloutStatus.ABORTED and not failed_actions(again), again.events
    assert again.abort_reason == first.abort_reason
    await eventually(lambda: (held := flags.get(FLAG)) is not None and not held.value_for("n1"))
    with pytest.raises(RolloutError, match="already aborted"):
        await _driver(site, alice).abort(FLAG, "once more")
