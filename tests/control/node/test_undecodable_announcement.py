"""A kill announcement that arrives live but cannot be decoded halts the node (fail closed).

Whoever may write the kill subject can send bytes that are no entry: a truncated
message, garbage, a later version's format. The stored copy of an entry that cannot
be decoded is a halt of its slot's scope (`decode_entry`); the live copy must be one
too, of the scope it names when that much can be read, else of the fleet, and it can
only stop. Real nats-server (authorization on), a node in-process. Before, the NATS
backend (`NatsControlPlane.subscribe_states`) dropped what did not decode before the
node heard of it (`wire.decode_announcement` now makes it a halt).
"""

from __future__ import annotations

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.nats import connect_as
from knightwatch.control.site import Site
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.state import Scope, TradingState

from ..fleet_fixtures import POLICY
from ..helpers import eventually


async def joined(site: Site) -> NodeRuntime:
    clock = SystemClock()
    guard = Guard(Limits(lease_timeout_s=POLICY.lease_timeout_s), node="n1", clock=clock)
    guard.arm("test")
    node = NodeRuntime(
        guard,
        await site.connect("n1"),
        clock=clock,
        policy=POLICY,
        trust=site.store(),
        signer=site.signer("n1"),
    )
    await node.join()
    return node


async def announce(site: Site, payload: bytes) -> None:
    """`payload` on the kill subject, from alice (an operator: she may write it)."""
    nc = await connect_as(site.signer("alice"), [site.url], name="alice-raw")
    try:
        await nc.publish("kw.state", payload)
        await nc.flush()
    finally:
        await nc.close()


@pytest.mark.parametrize(
    "payload",
    [
        b'{"scope":"fleet","key":"fleet","state":2,"reason":"runaw',  # truncated
        b"\x00\xffnot json at all",
        b'{"a":' * 5_000 + b"1" + b"}" * 5_000,  # nested deeper than msgspec decodes
    ],
)
async def test_an_announcement_that_cannot_be_decoded_halts_the_fleet_scope(
    site: Site, payload: bytes
) -> None:
    node = await joined(site)
    try:
        assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
        await announce(site, payload)
        await eventually(lambda: node.guard.trading_state(Scope.FLEET) is TradingState.HALTED)
    finally:
        await node.stop()
        await node.plane.close()


async def test_an_announcement_in_a_later_format_halts_the_scope_it_names(site: Site) -> None:
    """It names this node (its scope and key read); a state this version does not know."""
    node = await joined(site)
    try:
        await announce(site, b'{"scope":"node","key":"n1","state":7,"actor":"alice"}')
        await eventually(lambda: node.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED)
        assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    finally:
        await node.stop()
        await node.plane.close()
