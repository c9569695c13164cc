"""A release on disk, its signed manifest, and nodes that run it, for the integration tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

from knightwatch.clock import Clock
from knightwatch.control.node.attestor import Attestor, directory_measure
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.flags.definition import FlagDefinition, Lifecycle
from knightwatch.flags.registry import FlagRegistry
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.release.contents import contents_from_directory
from knightwatch.release.dsse import Envelope
from knightwatch.release.keys import SigningKey
from knightwatch.release.manifest import Manifest
from knightwatch.release.signing import ReleaseSigners

from ..identities import signer, trust

RLP = "trading.smars.rlp_enabled"
PEG = "trading.smars.power_peg"
POLICY = LeasePolicy(lease_timeout_s=2.0, heartbeat_s=0.1)
NEW_ROUTER = b"def route(order):\n    return rlp(order)\n"
OLD_ROUTER = b"def route(order):\n    return power_peg(order)  # 2003 code\n"


def flag(flag_id: str, description: str, lifecycle: Lifecycle) -> FlagDefinition:
    return FlagDefinition(
        id=flag_id,
        description=description,
        safe_default=False,
        trading_behaviour=True,
        lifecycle=lifecycle,
        created=date(2012, 7, 1),
        owner="smars-team",
        expires=date(2099, 1, 1),
    )


REGISTRY = FlagRegistry.from_definitions(
    [
        flag(RLP, "Route eligible retail orders to the NYSE RLP.", Lifecycle.ACTIVE),
        flag(PEG, "Power Peg: test-only order generator.", Lifecycle.RETIRED),
    ],
    "integration-registry",
)
REDEFINED_RLP = flag(RLP, "Power Peg, under the RLP id.", Lifecycle.ACTIVE).meaning_hash


def deploy(root: Path, router: bytes) -> Path:
    """One node's install tree: two artifacts and a config file."""
    (root / "app" / "smars").mkdir(parents=True, exist_ok=True)
    (root / "app" / "smars" / "router.py").write_bytes(router)
    (root / "app" / "smars" / "__init__.py").write_bytes(b"")
    (root / "config.toml").write_text("[router]\nvenue = 'NYSE'\n")
    return root


class Signers(ReleaseSigners):
    """CI and release manager, signing a release built from an install tree on disk."""

    def __init__(self) -> None:
        super().__init__({"ci": SigningKey.generate(), "rm": SigningKey.generate()})

    def release(self, release_id: str, tree: Path, flags: dict[str, str]) -> Envelope:
        contents = contents_from_directory(tree / "app", tree / "config.toml", flags)
        return self.sign(Manifest(release_id=release_id, contents=contents))


def node(
    node_id: str,
    plane: ControlPlane,
    tree: Path,
    clock: Clock,
    environment: Callable[[], dict[str, str]] | None = None,
) -> NodeRuntime:
    """A node runtime whose attestation key is its own enrolled key (tests/identities.py);
    `environment`: it measures its Python environment too."""
    key = signer(node_id).key
    guard = Guard(
        Limits(lease_timeout_s=POLICY.lease_timeout_s, max_orders_per_s_symbol=None),
        node=node_id,
        clock=clock,
    )
    guard.on_price("AAPL", 100.0)
    attestor = Attestor(
        node_id,
        key,
        directory_measure(tree / "app", tree / "config.toml", REGISTRY.schema(), environment),
        clock=clock,
    )
    return NodeRuntime(
        guard,
        plane,
        clock=clock,
        policy=POLICY,
        attestor=attestor,
        attest_s=1.0,
        trust=trust(),
        signer=signer(node_id),
    )
