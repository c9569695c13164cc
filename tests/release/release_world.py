"""A small signed release and an eight-node fleet, built in memory.

Tests vary one thing at a time from this scenario: CI plus release manager
sign, nodes attest, the control plane admits.
"""

from __future__ import annotations

from collections.abc import Mapping

from knightwatch.clock import NS_PER_S, SimClock
from knightwatch.flags.definition import definition_hash
from knightwatch.flags.schema import RegistrySchema
from knightwatch.release.admission import Admitter
from knightwatch.release.attestation import attest, sign_attestation
from knightwatch.release.contents import ReleaseContents, contents_from_memory
from knightwatch.release.dsse import Envelope
from knightwatch.release.keys import SigningKey
from knightwatch.release.manifest import Manifest
from knightwatch.release.signing import ReleaseSigners

RLP = "trading.smars.rlp_enabled"
POWER_PEG = "trading.smars.power_peg"
RLP_HASH = definition_hash(RLP, "Retail Liquidity Program routing", False, True)
POWER_PEG_HASH = definition_hash(POWER_PEG, "Legacy Power Peg parent algorithm", False, True)

FILES: dict[str, bytes] = {
    "smars/router.py": b"def route(order):\n    return rlp(order)\n",
    "smars/rlp.py": b"def rlp(order):\n    return order\n",
    "smars/__init__.py": b"",
}
CONFIG = b"max_child_orders = 100\n"
FLAGS: dict[str, object] = {RLP: RLP_HASH}
START_NS = 1_343_827_800 * NS_PER_S  # 2012-08-01 13:30 UTC, 09:30 New York


class World:
    """Signers, nodes and a target release the tests vary one thing at a time."""

    def __init__(self) -> None:
        self.signers = ReleaseSigners.generate(("ci", "release-manager"))
        self.ci = self.signers.keys["ci"]
        self.rm = self.signers.keys["release-manager"]
        self.outsider = SigningKey.generate()
        self.policy = self.signers.trust
        self.node_keys = {f"n{i}": SigningKey.generate() for i in range(1, 9)}
        self.roster = {node: key.public for node, key in self.node_keys.items()}
        self.registry = RegistrySchema(
            {RLP: RLP_HASH, POWER_PEG: POWER_PEG_HASH}, frozenset({POWER_PEG})
        )

    def contents(
        self,
        files: Mapping[str, bytes] = FILES,
        config: bytes = CONFIG,
        flags: Mapping[str, object] = FLAGS,
    ) -> ReleaseContents:
        return contents_from_memory(files, config, flags)

    def release(
        self, release_id: str = "2012.08.01-rlp", contents: ReleaseContents | None = None
    ) -> Envelope:
        return self.signers.sign(
            Manifest(release_id=release_id, contents=contents or self.contents())
        )

    def admitter(self, clock: SimClock) -> Admitter:
        counter = iter(range(1_000_000))
        return Admitter(
            self.policy,
            self.roster,
            clock=clock,
            max_age_ns=30 * NS_PER_S,
            nonce_source=lambda: f"nonce-{next(counter)}",
        )

    def attestation(
        self,
        node: str,
        nonce: str,
        clock: SimClock,
        contents: ReleaseContents | None = None,
    ) -> Envelope:
        statement = attest(node, nonce, contents or self.contents(), clock=clock)
        return sign_attestation(statement, self.node_keys[node])
