"""Which artifacts may be run is part of what a node attests.

The manifest held each file's bytes but not whether it is executable, so a release
script shipped off (mode 0644: a start-up hook run only when executable, a cron job,
a tool kept for the record) was switched on by `chmod +x` on one node with not a byte
changed: the node attested the release exactly and stayed admitted, the way a dormant
Power Peg was woken by a flag. The owner's execute bit of every artifact is now in the
signed manifest and in every attestation; the group's and others' bits are not (a
umask of 077 takes them off on a healthy host).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from knightwatch.clock import SimClock
from knightwatch.control.node.attestor import directory_measure
from knightwatch.release.admission import NodeStatus
from knightwatch.release.attestation import Attestation, attest, sign_attestation
from knightwatch.release.canonical import canonical_bytes
from knightwatch.release.contents import ReleaseContents, contents_from_memory
from knightwatch.release.dsse import Envelope, add_signature, new_envelope
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.manifest import Manifest, decode_manifest, encode_manifest
from knightwatch.release.reasons import AdmissionReason
from knightwatch.release.signing import verify_release

from .release_world import CONFIG, FILES, FLAGS, World

HOOK = "hooks/enable_power_peg.sh"
TREE: dict[str, bytes] = {**FILES, HOOK: b"#!/bin/sh\nexec smars --power-peg\n"}
RUN = "bin/start.sh"


def _deploy(root: Path, executable: tuple[str, ...] = (RUN,)) -> tuple[Path, Path]:
    app = root / "app"
    for name, data in {**TREE, RUN: b"#!/bin/sh\nexec smars\n"}.items():
        path = app / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if name in executable else 0o644)
    config = root / "config.toml"
    config.write_bytes(CONFIG)
    return app, config


def _release(world: World, contents: ReleaseContents, release_id: str = "r-modes") -> Envelope:
    return world.signers.sign(Manifest(release_id=release_id, contents=contents))


def test_a_release_file_made_executable_on_an_admitted_node_fences_it(
    world: World, clock: SimClock, tmp_path: Path
) -> None:
    app, config = _deploy(tmp_path)
    measure = directory_measure(app, config, dict(FLAGS))
    release = _release(world, measure())
    admitter = world.admitter(clock)
    first = world.attestation("n4", admitter.challenge("n4"), clock, measure())
    assert admitter.admit(first, release, world.registry, target_release="r-modes").admitted

    (app / HOOK).chmod(0o755)  # not a byte changed
    again = world.attestation("n4", admitter.challenge("n4"), clock, measure())
    verdict = admitter.admit(again, release, world.registry, target_release="r-modes")
    assert not verdict.admitted
    assert verdict.status is NodeStatus.FENCED
    [mode] = [f for f in verdict.findings if f.reason is AdmissionReason.FILE_MODE_MISMATCH]
    assert mode.subject == HOOK
    assert mode.detail == "executable on the node, not in the release"
    assert AdmissionReason.NODE_DRIFTED in verdict.reasons


def test_a_release_script_deployed_without_its_execute_bit_is_refused(
    world: World, clock: SimClock, tmp_path: Path
) -> None:
    """A copy that dropped the mode (shutil.copyfile): the start script cannot be run."""
    app, config = _deploy(tmp_path / "ci")
    release = _release(world, directory_measure(app, config, dict(FLAGS))())
    node_app, node_config = _deploy(tmp_path / "node", executable=())
    admitter = world.admitter(clock)
    measured = directory_measure(node_app, node_config, dict(FLAGS))()
    attestation = world.attestation("n5", admitter.challenge("n5"), clock, measured)
    verdict = admitter.admit(attestation, release, world.registry, target_release="r-modes")
    assert verdict.status is NodeStatus.REFUSED
    assert [(f.reason, f.subject, f.detail) for f in verdict.findings] == [
        (AdmissionReason.FILE_MODE_MISMATCH, RUN, "executable in the release, not on the node")
    ]


def test_only_the_owners_execute_bit_is_measured(tmp_path: Path) -> None:
    """A host with umask 077 (0700, 0600) attests what one with 022 does (0755, 0644)."""
    app, config = _deploy(tmp_path)
    before = directory_measure(app, config, dict(FLAGS))()
    assert before.executables == (RUN,)
    (app / RUN).chmod(0o700)
    (app / "smars" / "router.py").chmod(0o600)
    (app / "smars" / "rlp.py").chmod(0o654)  # group and others may run it: not the owner
    assert directory_measure(app, config, dict(FLAGS))() == before


def test_the_executables_are_in_the_signed_statement_and_the_manifest_file(
    tmp_path: Path,
) -> None:
    app, config = _deploy(tmp_path)
    manifest = Manifest(release_id="r1", contents=directory_measure(app, config, dict(FLAGS))())
    predicate = json.loads(manifest.statement_bytes())["predicate"]
    assert predicate["executables"] == [RUN]
    assert Manifest.from_statement_bytes(manifest.statement_bytes(), source="s") == manifest
    assert decode_manifest(encode_manifest(manifest), source="m") == manifest
    assert json.loads(encode_manifest(manifest))["contents"]["executables"] == [RUN]


def _legacy_payload(world: World) -> bytes:
    """A statement signed before the execute bit was measured: no `executables` key."""
    statement = json.loads(world.release("r-legacy").payload_bytes())
    del statement["predicate"]["executables"]
    return canonical_bytes(statement)


def test_a_release_signed_before_modes_were_measured_still_verifies_and_admits(
    world: World, clock: SimClock
) -> None:
    """A rollback to a release signed by an older `release build` is not refused for its
    format: its nodes are compared on bytes, config and flags as they were then."""
    envelope = new_envelope(world.release().payload_type, _legacy_payload(world))
    for key in (world.ci, world.rm):
        envelope = add_signature(envelope, key)
    checked = verify_release(envelope, world.policy)
    assert checked.findings == ()
    assert checked.manifest is not None
    assert checked.manifest.contents.executables is None
    admitter = world.admitter(clock)
    runs = contents_from_memory(FILES, CONFIG, FLAGS, executables=("smars/router.py",))
    attestation = world.attestation("n6", admitter.challenge("n6"), clock, runs)
    assert admitter.admit(attestation, envelope, world.registry, target_release="r-legacy").admitted


def test_a_node_that_does_not_report_its_executables_is_refused(
    world: World, clock: SimClock
) -> None:
    """An older node's attestation (no `executables`) cannot show the release's modes."""
    admitter = world.admitter(clock)
    nonce = admitter.challenge("n7")
    old = attest("n7", nonce, contents_from_memory(FILES, CONFIG, FLAGS), clock=clock)
    body = json.loads(canonical_bytes(old))
    del body["contents"]["executables"]
    envelope = sign_attestation(
        Attestation(
            node="n7",
            nonce=nonce,
            at_ns=old.at_ns,
            contents=ReleaseContents(
                artifacts=body["contents"]["artifacts"],
                config_sha256=body["contents"]["config_sha256"],
                flag_schema=body["contents"]["flag_schema"],
            ),
        ),
        world.node_keys["n7"],
    )
    assert b"executables" not in base64.b64decode(envelope.payload)
    verdict = admitter.admit(
        envelope, world.release(), world.registry, target_release="2012.08.01-rlp"
    )
    assert verdict.status is NodeStatus.REFUSED
    assert [(f.reason, f.subject) for f in verdict.findings] == [
        (AdmissionReason.FILE_MODE_MISMATCH, "executables")
    ]


@pytest.mark.parametrize(
    ("executables", "rule"),
    [
        (["smars/rlp.py", "smars/__init__.py"], "sorted"),
        (["smars/rlp.py", "smars/rlp.py"], "sorted"),
        (["smars/absent.py"], "not an artifact"),
    ],
    ids=["unsorted", "twice", "not-an-artifact"],
)
def test_a_statement_with_a_bad_executables_list_is_refused(
    world: World, executables: list[str], rule: str
) -> None:
    statement = json.loads(world.release().payload_bytes())
    statement["predicate"]["executables"] = executables
    with pytest.raises(ReleaseInputError, match=rf"^s: executables: .*{rule}"):
        Manifest.from_statement_bytes(canonical_bytes(statement), source="s")
