"""A real, signed release for a local fleet (`knightwatch up`, the live drill).

Knight's eighth server was never judged; a local fleet whose nodes carry no
release inputs would repeat that. So `up` and the drill build a release the
way CI does: the artifact tree (this installation's `knightwatch` sources),
a config file and the flag table from the registry of record; it is signed by
two freshly generated keys ("ci" and "release-manager", threshold 2), every
node gets its own install tree and an enrolled attestation key, and the
admission service judges each one before it may take a lease or arm.

A stale node gets an install tree in which one file differs from the release
(the missed deploy), so it is refused at join, naming that file.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import msgspec

import knightwatch
from knightwatch.control.fleet.admission import request_target
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.errors import KnightwatchError
from knightwatch.flags.schema import RegistrySchema
from knightwatch.release.contents import contents_from_directory
from knightwatch.release.dsse import Envelope, encode_envelope
from knightwatch.release.flagfiles import load_flag_schema, load_registry_schema
from knightwatch.release.flagschema import FlagSchema
from knightwatch.release.manifest import Manifest
from knightwatch.release.signing import ReleaseSigners, TrustPolicy
from knightwatch.trust.identity import Signer
from knightwatch.trust.target import approve_target

STALE_FILE = "knightwatch/sim/drill/flow.py"
"""The file a stale node's install tree holds in its previous version."""
SIGNERS = ("ci", "release-manager")
_CONFIG = '[fleet]\nsource = "knightwatch up"\n'


def policy_toml(trust: TrustPolicy) -> str:
    """The trust policy in the file format `knightwatch release verify --policy` reads."""
    lines = [f"threshold = {trust.threshold}"]
    for key in trust.keys:
        lines += ["", "[[keys]]", f'signer = "{key.signer}"', f'id = "{key.id}"']
        lines.append(f'public_key = "{key.public_key}"')
    return "\n".join(lines) + "\n"


class LocalReleaseError(KnightwatchError, ValueError):
    """The release for the local fleet cannot be built; the message names the input."""


class LocalRelease:
    """One signed release under `<state_dir>/release`, rebuilt from scratch on every start."""

    def __init__(self, state_dir: Path, registry: Path | None) -> None:
        self.root = state_dir / "release"
        self.registry_path = registry
        self.flags_path = self.root / "flags.json"
        self.config_path = self.root / "config.toml"
        self.artifacts = self.root / "app"
        self.keys = self.root / "keys"
        self.envelope_path = self.root / "release.dsse.json"
        self.policy_path = self.root / "policy.toml"
        self.flag_table: FlagSchema = {}
        self.registry: RegistrySchema = RegistrySchema({})
        self.trust: TrustPolicy | None = None
        self.envelope: Envelope | None = None
        self.release_id = ""

    def build(self) -> Envelope:
        """Artifacts, config and flag table on disk; a manifest signed by two fresh keys."""
        if self.registry_path is not None:
            if not self.registry_path.is_file():
                raise LocalReleaseError(f"--registry: {self.registry_path} is not a file")
            self.registry = load_registry_schema(self.registry_path)
            self.flag_table = load_flag_schema(self.registry_path)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        package = Path(knightwatch.__file__).parent
        shutil.copytree(
            package,
            self.artifacts / "knightwatch",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        self.flags_path.write_bytes(msgspec.json.encode(self.flag_table))
        self.config_path.write_text(_CONFIG, encoding="utf-8")
        contents = contents_from_directory(self.artifacts, self.config_path, self.flag_table)
        fingerprint = hashlib.sha256(msgspec.json.encode(contents)).hexdigest()
        self.release_id = f"local-{fingerprint[:12]}"
        signers = ReleaseSigners.generate(SIGNERS)
        self.trust = signers.trust
        envelope = signers.sign(Manifest(release_id=self.release_id, contents=contents))
        self.envelope = envelope
        self.envelope_path.write_bytes(encode_envelope(envelope))
        self.policy_path.write_text(policy_toml(self.trust), encoding="utf-8")
        return envelope

    def deploy(self, node_id: str, *, stale: bool = False) -> list[str]:
        """The node's install tree and key; the `knightwatch node` options that present them."""
        tree = self.root / "nodes" / node_id
        shutil.copytree(self.artifacts, tree / "app")
        shutil.copyfile(self.config_path, tree / "config.toml")
        if stale:
            old = tree / "app" / STALE_FILE
            old.write_bytes(b"# previous release: missed this deploy\n" + old.read_bytes())
        return [
            "--artifacts", str(tree / "app"),
            "--config", str(tree / "config.toml"),
            "--flags", str(self.flags_path),
        ]  # fmt: skip

    async def set_target(
        self,
        plane: ControlPlane,
        requester: Signer,
        approver: Signer,
        now_ns: int,
        *,
        fleet: str = "",
    ) -> None:
        """Make this release the target of `fleet` (its roster's `Roster.fleet`, "" for an
        unnamed one) through the admission service (it re-checks): requested by `requester`
        (on `plane`, logged in as them), approved by `approver`."""
        assert self.envelope is not None, "build() first"
        reason = f"local fleet release {self.release_id}"
        approval = approve_target(
            self.envelope, approver, requester.name, reason, now_ns, fleet=fleet
        )
        reply = await request_target(
            plane, self.envelope, requester, reason, now_ns=now_ns, approval=approval, fleet=fleet
        )
        if not reply.accepted:
            findings = "; ".join(str(f) for f in reply.findings)
            raise LocalReleaseError(f"release {self.release_id} refused as target: {findings}")
