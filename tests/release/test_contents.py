"""Measuring a release: what cannot be measured, or measured nothing, is never admitted.

Families not in the other tests: an empty release (a failed build signed as it was), a
file swapped for a pipe or a link to /dev/zero between listing and hashing (the hash
waited or read forever), a file written while it is hashed, and a name the listing
cannot examine (an OSError that stopped a node's attesting).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from knightwatch.clock import SimClock
from knightwatch.control.node.attestor import directory_measure
from knightwatch.release.admission import NodeStatus
from knightwatch.release.canonical import canonical_bytes
from knightwatch.release.contents import contents_from_memory, hash_config, hash_directory
from knightwatch.release.dsse import IN_TOTO_PAYLOAD_TYPE, add_signature, new_envelope
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.manifest import Manifest, decode_manifest, encode_manifest
from knightwatch.release.reasons import AdmissionReason
from knightwatch.release.signing import verify_release

from .release_world import CONFIG, FILES, FLAGS, World


def _empty_release_payload(world: World, release_id: str) -> bytes:
    """The canonical statement `release build` made for an empty directory (zero subjects)."""
    statement = json.loads(world.release(release_id).payload_bytes())
    statement["subject"] = []
    return canonical_bytes(statement)


def test_a_manifest_with_no_artifact_is_refused_when_built() -> None:
    empty = contents_from_memory({}, CONFIG, FLAGS)
    with pytest.raises(ReleaseInputError, match=r"artifacts: a release must list at least one"):
        Manifest(release_id="r1", contents=empty)


def test_a_manifest_file_with_no_artifact_is_refused_for_signing() -> None:
    whole = Manifest(release_id="r1", contents=contents_from_memory(FILES, CONFIG, FLAGS))
    data = json.loads(encode_manifest(whole))
    data["contents"]["artifacts"] = {}
    with pytest.raises(ReleaseInputError, match=r"m\.json: invalid manifest: .*at least one"):
        decode_manifest(json.dumps(data).encode(), source="manifest m.json")


def test_a_signed_empty_release_never_admits_a_node_that_runs_nothing_measured(
    world: World, clock: SimClock
) -> None:
    """Both signers signed what an empty build directory gave; the node's directory is empty
    too (a failed copy, a wrong mount): it was ADMITTED, running code nothing measured."""
    envelope = new_envelope(IN_TOTO_PAYLOAD_TYPE, _empty_release_payload(world, "r-empty"))
    for key in (world.ci, world.rm):
        envelope = add_signature(envelope, key)
    checked = verify_release(envelope, world.policy)
    assert checked.manifest is None
    assert [f.reason for f in checked.findings] == [AdmissionReason.MANIFEST_MALFORMED]
    assert "at least one artifact" in checked.findings[0].detail

    admitter = world.admitter(clock)
    nothing = contents_from_memory({}, CONFIG, FLAGS)
    attestation = world.attestation("n1", admitter.challenge("n1"), clock, nothing)
    verdict = admitter.admit(attestation, envelope, world.registry, target_release="r-empty")
    assert not verdict.admitted
    assert verdict.status is NodeStatus.REFUSED
    assert AdmissionReason.MANIFEST_MALFORMED in verdict.reasons


def test_a_node_with_an_empty_directory_is_refused_naming_every_missing_file(
    world: World, clock: SimClock, tmp_path: Path
) -> None:
    """The node side stays measurable: an empty directory attests no files, and the refusal
    lists what is missing rather than failing to attest."""
    (tmp_path / "app").mkdir()
    (tmp_path / "config.toml").write_bytes(CONFIG)
    measured = directory_measure(tmp_path / "app", tmp_path / "config.toml", dict(FLAGS))()
    assert measured.artifacts == {}
    admitter = world.admitter(clock)
    attestation = world.attestation("n2", admitter.challenge("n2"), clock, measured)
    verdict = admitter.admit(
        attestation, world.release(), world.registry, target_release="2012.08.01-rlp"
    )
    assert not verdict.admitted
    assert sorted(f.subject for f in verdict.findings) == sorted(FILES)
    assert set(verdict.reasons) == {AdmissionReason.FILE_MISSING}


def _hash_in_thread(call: Callable[[], object]) -> list[BaseException | object]:
    """Run `call` in a daemon thread; a measurement that never ends fails the test, not CI."""
    result: list[BaseException | object] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed back to the test
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "hashing did not end: it waited on or read an endless file"
    return result


def _swap_second_file(root: Path, replace: Callable[[Path], None]) -> Callable[[int, int], None]:
    def progress(done: int, total: int) -> None:
        if done == 1:  # a.py is hashed, b.py listed but not yet opened
            (root / "b.py").unlink()
            replace(root / "b.py")

    return progress


@pytest.mark.parametrize(
    "replace",
    [
        pytest.param(os.mkfifo, id="pipe"),
        pytest.param(lambda path: path.symlink_to("/dev/zero"), id="link-to-dev-zero"),
        pytest.param(lambda path: path.symlink_to("/dev/null"), id="link-to-dev-null"),
    ],
)
def test_a_file_swapped_for_something_endless_after_listing_is_refused(
    tmp_path: Path, replace: Callable[[Path], None]
) -> None:
    root = tmp_path / "app"
    root.mkdir()
    (root / "a.py").write_text("a\n")
    (root / "b.py").write_text("b\n")
    progress = _swap_second_file(root, replace)
    [outcome] = _hash_in_thread(lambda: hash_directory(root, progress))
    assert isinstance(outcome, ReleaseInputError), outcome
    assert str(outcome).startswith(f"artifact {root / 'b.py'}: not a regular file when opened")


def test_a_config_file_swapped_for_a_pipe_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    os.mkfifo(config)
    [outcome] = _hash_in_thread(lambda: hash_config(config))
    assert isinstance(outcome, ReleaseInputError), outcome
    assert str(outcome).startswith(f"config file {config}: not a regular file")


def test_a_file_written_while_it_is_hashed_is_refused_not_hashed_torn(tmp_path: Path) -> None:
    """A deploy still copying: the bytes read were never one version of the file."""
    root = tmp_path / "app"
    root.mkdir()
    big = root / "big.bin"
    big.write_bytes(b"\0" * (48 << 20))
    stop = threading.Event()
    wrote = threading.Event()

    def writer() -> None:
        with big.open("ab") as out:
            while not stop.is_set():
                out.write(b"x")
                out.flush()
                wrote.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        assert wrote.wait(5)
        with pytest.raises(ReleaseInputError, match=r"big\.bin: changed while it was being hashed"):
            hash_directory(root)
    finally:
        stop.set()
        thread.join(5)


def _too_long_for_the_kernel(root: Path) -> Path:
    """A file whose full path is longer than PATH_MAX: listed, but never examinable by path."""
    root.mkdir()
    (root / "a.py").write_text("a\n")
    here = root
    while len(str(here)) < 3850:
        here = here / ("d" * 200)
        here.mkdir()
    fd = os.open(here, os.O_RDONLY)
    try:
        out = os.open("f" * 250, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.close(out)
    finally:
        os.close(fd)
    return root


def test_a_name_that_cannot_be_examined_is_refused_with_a_reason_not_an_oserror(
    tmp_path: Path,
) -> None:
    """A raw OSError left the node's attest loop (it catches ReleaseInputError, logs
    RELEASE_UNMEASURABLE and attests again) and was a traceback from `release build`."""
    root = _too_long_for_the_kernel(tmp_path / "app")
    with pytest.raises(
        ReleaseInputError, match=r"^artifacts directory .*: cannot examine .*f{250}"
    ):
        hash_directory(root)
    (tmp_path / "config.toml").write_bytes(CONFIG)
    with pytest.raises(ReleaseInputError, match=r"cannot examine"):
        directory_measure(root, tmp_path / "config.toml", dict(FLAGS))()


def test_an_artifacts_path_that_cannot_be_examined_is_refused_by_the_node_measure(
    tmp_path: Path,
) -> None:
    """The node gets the error it logs as RELEASE_UNMEASURABLE, never a raw OSError."""
    (tmp_path / "config.toml").write_bytes(CONFIG)
    too_long = tmp_path / "/".join(["d" * 200] * 25)
    with pytest.raises(ReleaseInputError, match=r"^artifacts directory .*: cannot examine it"):
        directory_measure(too_long, tmp_path / "config.toml", dict(FLAGS))()
