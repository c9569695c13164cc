"""A subscription can be dropped: its handler is not called again, on either backend.

The plane's subscriptions lived as long as their connection. Readers that listen for a
while on a long-lived connection (a preflight or a snapshot on a console session's link,
a ramp's watch) could not let go, and every run left its handlers there for good: each
heartbeat then called all of them. `subscribe_*` return an `Unsubscribe`.
"""

from __future__ import annotations

import asyncio

from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.control.plane.wire import NodeStatus
from knightwatch.state import Scope, TradingState

from ..conftest import Backend
from ..helpers import entry, eventually


def _status(node: str = "n1") -> NodeStatus:
    return NodeStatus(
        node_id=node,
        host="h",
        pid=1,
        started_ns=1,
        seen_ns=10,
        lease_expires_ns=110,
        admitted=True,
        armed=True,
        node_state=TradingState.ACTIVE,
    )


def _live(plane: ControlPlane) -> int | None:
    """The NATS client's live subscriptions (None on the memory plane)."""
    if isinstance(plane, NatsControlPlane):
        assert plane._nc is not None
        return len(plane._nc._subs)
    return None


async def test_a_dropped_heartbeat_subscription_hears_nothing_more(backend: Backend) -> None:
    listener = await backend.plane("supervisor")
    n1 = await backend.plane("n1")
    dropped: list[str] = []
    kept: list[str] = []

    async def on_dropped(s: NodeStatus) -> None:
        dropped.append(s.node_id)

    async def on_kept(s: NodeStatus) -> None:
        kept.append(s.node_id)

    before = _live(listener)
    drop = await listener.subscribe_heartbeats(on_dropped)
    await listener.subscribe_heartbeats(on_kept)
    await n1.heartbeat(_status())
    await eventually(lambda: len(dropped) == 1 and len(kept) == 1, what="both heard")
    await drop()
    await drop()  # again: nothing, no error
    if before is not None:
        assert _live(listener) == before + 1
    await n1.heartbeat(_status())
    await eventually(lambda: len(kept) == 2, what="the kept subscription heard it")
    await listener.ping(10.0)
    await asyncio.sleep(0)
    assert dropped == ["n1"]


async def test_a_dropped_state_subscription_hears_neither_path(backend: Backend) -> None:
    """`subscribe_states` listens on two subjects (announced, stored): both are dropped."""
    alice = await backend.plane("alice")
    listener = await backend.plane("supervisor")
    heard: list[str] = []
    kept: list[str] = []

    async def on_state(e: object) -> None:
        heard.append(getattr(e, "command_id", ""))

    async def on_kept(e: object) -> None:
        kept.append(getattr(e, "command_id", ""))

    before = _live(listener)
    drop = await listener.subscribe_states(on_state)
    await listener.subscribe_states(on_kept)
    await drop()
    if before is not None:
        assert _live(listener) == before + 2
    await alice.announce_state(entry(Scope.FLEET, "fleet", command_id="a1"))
    await alice.put_state(entry(Scope.FLEET, "fleet", command_id="p1"))
    await eventually(lambda: {"a1", "p1"} <= set(kept), what="the kept subscription heard both")
    await listener.ping(10.0)
    await asyncio.sleep(0)
    assert heard == []


async def test_a_handler_that_drops_its_own_subscription_runs_to_its_end(
    backend: Backend,
) -> None:
    """nats-py cancels a dropped subscription's task: dropping it from its own handler
    must not cancel the rest of that handler (a kill it goes on to send)."""
    listener = await backend.plane("supervisor")
    n1 = await backend.plane("n1")
    calls: list[str] = []
    finished = asyncio.Event()
    drops = []

    async def once(s: NodeStatus) -> None:
        calls.append(s.node_id)
        await drops[0]()
        await listener.ping(10.0)  # awaits after the drop: not cancelled midway
        await asyncio.sleep(0.01)
        finished.set()

    before = _live(listener)
    drops.append(await listener.subscribe_heartbeats(once))
    await n1.heartbeat(_status())
    await n1.heartbeat(_status())
    await asyncio.wait_for(finished.wait(), 10.0)
    if before is not None:
        assert _live(listener) == before
    await n1.heartbeat(_status())
    await listener.ping(10.0)
    await asyncio.sleep(0.05)
    assert calls == ["n1"]


async def test_dropping_after_the_connection_closed_does_nothing(backend: Backend) -> None:
    listener = await backend.plane("supervisor")

    async def on_heartbeat(s: NodeStatus) -> None:
        del s

    drop_beats = await listener.subscribe_heartbeats(on_heartbeat)
    drop_states = await listener.subscribe_states(on_heartbeat)  # type: ignore[arg-type]
    await listener.close()
    await drop_beats()
    await drop_states()
