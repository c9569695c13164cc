"""A node's background loops outlive one round that fails with an error nobody expected.

Before, one such error (a plane raising something other than `ControlPlaneUnavailable`)
ended its loop for good, silently until the node stopped: a heartbeat loop gone left the
Guard blocking every order for ever while the node's status still read admitted; a
metrics loop gone got the node halted by the supervisor as silent, and its flight
recorder's lines were never shipped again."""

from __future__ import annotations

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.plane.memory import MemoryFabric
from knightwatch.control.plane.wire import NodeMetrics, NodeStatus

from ..fleet_fixtures import OrderIds, make_node, plane_on
from ..helpers import eventually


async def test_a_heartbeat_that_raises_drops_admission_and_the_next_round_renews(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plane = await plane_on(MemoryFabric())
    node = make_node("n1", plane, SystemClock())
    await node.start()
    ids = OrderIds("o")
    assert node.check(ids.order()).accepted
    beat = plane.heartbeat
    beats: list[NodeStatus] = []

    async def fails_once(status: NodeStatus) -> None:
        beats.append(status)
        if len(beats) == 1:
            raise RuntimeError("an error nobody expected")
        await beat(status)

    plane.heartbeat = fails_once  # type: ignore[method-assign]
    try:
        await eventually(lambda: len(beats) >= 3, what="heartbeats after the failed one")
        await eventually(lambda: node.admitted, what="re-admitted")
        assert node.check(ids.order()).accepted
        assert "LOOP_ERROR node=n1 loop=heartbeat" in caplog.text
    finally:
        await node.stop()


async def test_a_metrics_publish_that_raises_does_not_end_the_metrics_loop() -> None:
    plane = await plane_on(MemoryFabric())
    node = make_node("n1", plane, SystemClock())
    node.metrics_s = 0.02
    await node.start()
    publish = plane.publish_metrics
    sent: list[NodeMetrics] = []

    async def fails_once(metrics: NodeMetrics) -> None:
        sent.append(metrics)
        if len(sent) == 1:
            raise RuntimeError("an error nobody expected")
        await publish(metrics)

    plane.publish_metrics = fails_once  # type: ignore[method-assign]
    try:
        await eventually(lambda: len(sent) >= 3, what="metrics after the failed publish")
    finally:
        await node.stop()
