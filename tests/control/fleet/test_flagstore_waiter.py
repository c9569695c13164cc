"""A flag change's confirmation waiter ends with the change, and holds a bounded number of
claims whatever the nodes send.

`activate` (the console's "safe default" button, `flags set`) made a waiter per change
that subscribed to the fast-path confirmations and never let go: on a console session's
connection, which lives for the session, every change left one more handler that heard
every later confirmation, each keeping every claim it heard. And any node may publish a
claim naming any flag and node: a waiter kept one entry per name, as many as were sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet import flagstore
from knightwatch.control.fleet.activate import activate
from knightwatch.control.fleet.flagstore import AppliedWaiter
from knightwatch.control.node.flags import ENCODER, SUBJECT_APPLIED, FlagApplied
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.wire import NodeStatus
from knightwatch.control.site import Site
from knightwatch.flags.activation import ActivationPolicy, ActivationRequest
from knightwatch.state import TradingState

from ..helpers import eventually
from .test_flagstore import FLAG, REGISTRY


def _subscriptions(plane: NatsControlPlane) -> int:
    """How many subscriptions the plane's NATS connection holds."""
    assert plane._nc is not None
    return len(plane._nc._subs)


async def test_each_change_stops_listening_once_it_is_over(tmp_path: Path) -> None:
    site = Site(tmp_path / "site", ("n1",))
    await site.astart()
    clock = SystemClock()
    n1 = await site.connect("n1")
    alice = await site.connect("alice")
    try:
        now = clock.time_ns()
        status = NodeStatus("n1", "h", 1, now, now, now + 10**10, True, True, TradingState.ACTIVE)
        await n1.put_member(status)  # a member that never applies anything
        before = _subscriptions(alice)
        for i in range(3):
            off = ActivationRequest(FLAG, False, "alice", f"off {i}", "t", nodes=("n1",))
            result, _, missing = await activate(
                alice, site.store(), REGISTRY, ActivationPolicy(), off, clock, 0.1,
                signer=site.signer("alice"),
            )  # fmt: skip
            assert result.accepted and missing == ["n1"], (result, missing)
        assert _subscriptions(alice) == before
    finally:
        await alice.close()
        await n1.close()
        site.stop()


async def test_a_waiter_keeps_a_bounded_number_of_claims(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flagstore, "ARRIVALS_MAX", 8, raising=False)
    site = Site(tmp_path / "site", ("n1",))
    await site.astart()
    clock = SystemClock()
    n1 = await site.connect("n1")
    alice = await site.connect("alice")
    waiter = AppliedWaiter(alice, clock)
    other = AppliedWaiter(alice, clock)
    try:
        await waiter.start()
        for i in range(50):  # claims for flags that do not exist
            claim = FlagApplied(f"no.such.flag{i}", "n1", 1, clock.time_ns())
            await n1.publish(SUBJECT_APPLIED, ENCODER.encode(claim))
        await eventually(lambda: ("no.such.flag49", "n1") in waiter._arrivals, what="last claim")
        assert len(waiter._arrivals) == 8, len(waiter._arrivals)
        await waiter.close()
        assert not waiter._arrivals
        await other.start()  # on the same connection: hears what `waiter` would have
        await n1.publish(SUBJECT_APPLIED, ENCODER.encode(FlagApplied(FLAG, "n1", 1, 0)))
        await eventually(lambda: (FLAG, "n1") in other._arrivals, what="the claim heard")
        assert not waiter._arrivals
    finally:
        await other.close()
        await waiter.close()
        await alice.close()
        await n1.close()
        site.stop()
