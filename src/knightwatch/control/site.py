"""A fleet's identities and its authorized server in one object, for tests, benches and drills.

Every test that needs NATS starts a real server with authorization on; this
is how: a `Kit` (admins, alice, bob, carol, the supervisor, the admission
service, the venue, nodes), its keys and anchor written under `root/trust`
(keys 0600), a server whose users are the roster's keys, provisioned by the
server's own provisioner key. Connections log in as a named identity.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.plane.connect import provision
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.plane.server import EmbeddedNatsServer
from knightwatch.release.dsse import Envelope
from knightwatch.trust.identity import Signer
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import ApprovalPolicy, Role, TrustError
from knightwatch.trust.store import TrustStore

NODES = tuple(f"n{i}" for i in range(1, 9))


class Site:
    def __init__(
        self,
        root: Path,
        nodes: Iterable[str] = NODES,
        *,
        approvals: ApprovalPolicy | None = None,
        port: int | None = None,
        kit: Kit | None = None,
        fleet: str = "",
    ) -> None:
        """`kit`: an existing cast to serve (it must hold the venue); else a new one, its
        roster naming `fleet` (`Roster.fleet`; "" names none)."""
        self.root = root
        if kit is None:
            kit = Kit(
                now_ns=SystemClock().time_ns() - 1, nodes=nodes, approvals=approvals, fleet=fleet
            )
            kit.add("venue", [Role.VENUE])
        elif fleet and kit.roster.fleet != fleet:
            raise TrustError(f"Site fleet: {fleet!r} is not the kit's {kit.roster.fleet!r}")
        self.kit = kit
        self.trust_dir = root / "trust"
        self.kit.write(self.trust_dir, private=list(self.kit.signers))
        self.server = EmbeddedNatsServer(root / "nats", port=port, roster=self.kit.roster)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def anchor_path(self) -> Path:
        return self.trust_dir / "anchor.toml"

    def key_path(self, name: str) -> Path:
        return self.trust_dir / "keys" / f"{name}.key"

    def signer(self, name: str) -> Signer:
        return self.kit.signer(name)

    def store(self) -> TrustStore:
        """A fresh view of the roster as it stands (what a new process would verify)."""
        return self.kit.store()

    def start(self) -> str:
        """Start (or restart) the server and provision it; returns its URL.

        Provisioning runs on its own event loop in a worker thread, so this can
        be called from synchronous code that an event loop is running under."""
        url = self.server.start()
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, provision(url, self.server.provisioner, self.kit)).result()
        return url

    async def astart(self) -> str:
        url = self.server.start()
        await provision(url, self.server.provisioner, self.kit)
        return url

    def stop(self) -> None:
        self.server.stop()

    def plane(self, name: str, **options: object) -> NatsControlPlane:
        """A plane (not yet connected) logged in as `name`."""
        return NatsControlPlane(self.server.url, name=name, signer=self.signer(name), **options)  # type: ignore[arg-type]

    async def connect(self, name: str) -> NatsControlPlane:
        plane = self.plane(name)
        await plane.connect()
        return plane

    def killswitch(self, plane: NatsControlPlane, name: str) -> KillSwitch:
        return KillSwitch(plane, SystemClock(), self.signer(name), self.store())

    async def publish(self, envelope: Envelope) -> None:
        """Store a new roster version (as the admins would) and serve its users; returns
        once the server has applied them and answers JetStream logins again."""
        await provision(self.server.url, self.server.provisioner, self.kit)
        await asyncio.to_thread(self.server.reload, self.kit.roster, 5.0)
        deadline = asyncio.get_running_loop().time() + 5.0
        while True:
            try:
                await provision(self.server.url, self.server.provisioner, self.kit)
                break
            except ControlPlaneUnavailable:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)
        del envelope

    def cli_env(self, name: str) -> dict[str, str]:
        """Environment for a `knightwatch` command run as `name` against this site."""
        return {
            "KNIGHTWATCH_KEY": str(self.key_path(name)),
            "KNIGHTWATCH_ANCHOR": str(self.anchor_path),
            "KNIGHTWATCH_NATS_URL": self.server.url,
        }
