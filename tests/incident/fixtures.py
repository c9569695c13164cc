"""A small live-clock fleet on the memory plane, for the incident workflow's unit tests.

With a `release`, the fleet runs the real admission path: an admission service
on the plane, a signed target release, and nodes that attest their install tree
with their enrolled keys (a node that does not attest is refused in a fleet
with a target release, so nothing is faked there).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.admission import AdmissionService
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.fleet.supervisor_service import AutoHaltRelay
from knightwatch.control.node.attestor import Attestor, directory_measure
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.site import Site
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Order, Side

from ..identities import set_target, signer, switch, trust
from ..integration.fleet_release import NEW_ROUTER, REGISTRY, Signers, deploy

POLICY = LeasePolicy(lease_timeout_s=2.0, heartbeat_s=0.05)
LIMITS = Limits(
    lease_timeout_s=POLICY.lease_timeout_s,
    max_orders_per_s_node=100,
    max_orders_per_min_node=None,
    max_orders_per_s_strategy=None,
    max_orders_per_min_strategy=None,
    max_orders_per_s_symbol=None,
    max_orders_per_min_symbol=None,
    version="desk",
)


class Fleet:
    def __init__(self) -> None:
        self.fabric = MemoryFabric()
        self.clock = SystemClock()
        self.nodes: list[NodeRuntime] = []
        self.n = 0
        self.relay: AutoHaltRelay | None = None
        self.tree: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    async def target(self, release: str) -> None:
        """Start the admission service and set a signed target release built from the
        install tree every node of this fleet runs."""
        self._tmp = tempfile.TemporaryDirectory()
        self.tree = deploy(Path(self._tmp.name) / "tree", NEW_ROUTER)
        signers = Signers()
        plane = await self.plane()
        service = AdmissionService(
            plane, signers.trust, REGISTRY.admission_schema(), clock=self.clock, roster=trust()
        )
        await service.start()
        envelope = signers.release(release, self.tree, REGISTRY.schema())
        reply = await set_target(plane, envelope, self.clock)
        assert reply.accepted, reply

    async def plane(self) -> MemoryControlPlane:
        plane = MemoryControlPlane(self.fabric)
        await plane.connect()
        return plane

    async def add(self, node_id: str, limits: Limits = LIMITS) -> NodeRuntime:
        if self.relay is None:  # nodes hand their automatic halts to the supervisor's relay
            self.relay = AutoHaltRelay(switch(await self.plane(), self.clock, "supervisor"))
            await self.relay.start()
        guard = Guard(limits, node=node_id, clock=self.clock)
        guard.on_price("AAPL", 100.0)
        attestor = None
        if self.tree is not None:
            attestor = Attestor(
                node_id,
                signer(node_id).key,
                directory_measure(self.tree / "app", self.tree / "config.toml", REGISTRY.schema()),
                clock=self.clock,
            )
        node = NodeRuntime(
            guard,
            await self.plane(),
            clock=self.clock,
            policy=POLICY,
            metrics_s=0.05,
            trust=trust(),
            signer=signer(node_id),
            attestor=attestor,
        )
        await node.start()
        node.arm("test")
        self.nodes.append(node)
        return node

    async def killswitch(self, actor: str = "alice") -> KillSwitch:
        """A switch signing as `actor` (a resume it makes is co-signed by `BOB` in tests)."""
        return switch(await self.plane(), self.clock, actor)

    def order(self, node: NodeRuntime, strategy: str = "mm") -> bool:
        self.n += 1
        return node.check(Order(f"o{self.n}", strategy, "AAPL", Side.BUY, 1, 100.0)).accepted

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


async def fleet(*ids: str, release: str | None = None) -> Fleet:
    """Nodes `ids` on one memory fabric; with `release`, admitted on that target first."""
    f = Fleet()
    if release is not None:
        await f.target(release)
    for node_id in ids:
        await f.add(node_id)
    return f


@contextlib.asynccontextmanager
async def site_and_admin(
    tmp_path: Path,
) -> AsyncIterator[tuple[Site, NatsControlPlane, NatsControlPlane]]:
    """A real nats-server enrolling node n1, with the provisioner's plane (whose JetStream
    deletes or purges a store, as an outage or a lost replica would) and alice's; all
    closed and stopped on the way out, the test failing or not."""
    site = Site(tmp_path / "site", ("n1",))
    await site.astart()
    try:
        admin = NatsControlPlane(
            site.url, name="provisioner", signer=site.server.provisioner, provision=True
        )
        await admin.connect()
        try:
            alice = await site.connect("alice")
            try:
                yield site, admin, alice
            finally:
                await alice.close()
        finally:
            await admin.close()
    finally:
        site.stop()
