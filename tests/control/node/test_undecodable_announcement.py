"""A kill announcement that arrives live but cannot be decoded is read in the store, and
halts the node only as the store says, or when the store cannot be read (fail closed).

Bytes that are no entry arrive on the kill subject: a truncated message, garbage, a later
version's format, and a server's JSON answer that anyone's key (a viewer's) can have
delivered there by naming `kw.state` as a request's reply (`test_reply_injection_live`).
Dropped, a real kill in a format this node cannot read went unnoticed; held as a halt of
the fleet, as it was, a viewer halted every node at will. The store is the kill state's
authority: a real kill is stored (its stored copy that cannot be decoded is a halt of its
slot, `decode_entry`). Real nats-server (authorization on), a node in-process.
"""

from __future__ import annotations

import logging

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
from ..plane.test_lost_streams import delete_stream


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


PAYLOADS = [
    b'{"scope":"fleet","key":"fleet","state":2,"reason":"runaw',  # truncated
    b"\x00\xffnot json at all",
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,  # nested deeper than msgspec decodes
    b'{"type":"io.nats.jetstream.api.v1.account_info_response","memory":0}',  # an answer
]


@pytest.mark.parametrize("payload", PAYLOADS)
async def test_an_announcement_that_cannot_be_decoded_halts_nothing_the_store_does_not_hold(
    site: Site, caplog: pytest.LogCaptureFixture, payload: bytes
) -> None:
    """The store holds no halt: the node reads it and trades on (before: a fleet halt)."""
    caplog.set_level(logging.WARNING, logger="knightwatch.control.plane.nats")
    node = await joined(site)
    try:
        assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
        await announce(site, payload)
        await eventually(
            lambda: (
                any("read in the store: 0 halt" in r.getMessage() for r in caplog.records)
                or node.guard.trading_state(Scope.FLEET) is not TradingState.ACTIVE
            ),
            what="the store read after the announcement",
        )
        assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
        assert node.guard.halts() == {}
    finally:
        await node.stop()
        await node.plane.close()


@pytest.mark.parametrize("payload", PAYLOADS)
async def test_an_announcement_that_cannot_be_decoded_halts_the_fleet_when_the_store_is_lost(
    site: Site, payload: bytes
) -> None:
    """The kill state's bucket is gone (the store cannot be read): fail closed."""
    node = await joined(site)
    try:
        await delete_stream(site, "KV_kw_state")
        await announce(site, payload)
        await eventually(lambda: node.guard.trading_state(Scope.FLEET) is TradingState.HALTED)
    finally:
        await node.stop()
        await node.plane.close()


async def test_an_announcement_in_a_later_format_halts_the_scope_it_names(site: Site) -> None:
    """It names this node (its scope and key read); a state this version does not know,
    stored as well as announced (a kill always is): n1 halts, the fleet does not."""
    node = await joined(site)
    payload = b'{"scope":"node","key":"n1","state":7,"actor":"alice"}'
    try:
        nc = await connect_as(site.signer("alice"), [site.url], name="alice-raw")
        try:
            await nc.jetstream().publish("$KV.kw_state.node.n1", payload)
        finally:
            await nc.close()
        await announce(site, payload)
        await eventually(lambda: node.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED)
        assert node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
    finally:
        await node.stop()
        await node.plane.close()
