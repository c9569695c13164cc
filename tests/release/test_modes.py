"""Mode bits that hand what runs to other accounts are refused, never attested.

A manifest holds each file's bytes, not its mode, so a node's artifact or config made
writable by every account (or a directory of the tree, where anyone could then add or
swap a module) attested exactly as before and stayed admitted: any account on the host
could change what the node runs between two attestations (a lazy import loads the
changed file; it is changed back before the next re-challenge). A set-user-id or
set-group-id file runs with its owner's rights whoever starts it. Both are refused when
measured, by `release build` and by the node, which then takes no lease.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from knightwatch.clock import SimClock
from knightwatch.control.node.attestor import directory_measure
from knightwatch.release.contents import hash_config, hash_directory
from knightwatch.release.errors import ReleaseInputError

from .release_world import CONFIG, FILES, FLAGS, World


def _deploy(root: Path) -> tuple[Path, Path]:
    """The release's files as a deploy leaves them (umask 022), and its config."""
    app = root / "app"
    for name, data in FILES.items():
        path = app / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)
    config = root / "config.toml"
    config.write_bytes(CONFIG)
    config.chmod(0o644)
    return app, config


def test_a_node_whose_file_is_made_world_writable_after_admission_cannot_attest_it(
    world: World, clock: SimClock, tmp_path: Path
) -> None:
    """Admitted, then `chmod o+w smars/router.py`: the same bytes attested, still admitted,
    while every account on the host could rewrite the router."""
    app, config = _deploy(tmp_path)
    measure = directory_measure(app, config, dict(FLAGS))
    admitter = world.admitter(clock)
    first = world.attestation("n3", admitter.challenge("n3"), clock, measure())
    verdict = admitter.admit(
        first, world.release(), world.registry, target_release="2012.08.01-rlp"
    )
    assert verdict.admitted

    router = app / "smars" / "router.py"
    router.chmod(0o646)
    with pytest.raises(ReleaseInputError) as err:
        measure()
    message = str(err.value)
    assert message.startswith(f"artifact {router}: writable by every account (mode 0646)")
    assert f"chmod o-w {router}" in message
    assert "\n" not in message


def test_a_world_writable_directory_in_the_tree_is_refused(tmp_path: Path) -> None:
    """Anyone could add a module there (one that shadows another) or swap one in."""
    app, _ = _deploy(tmp_path)
    smars = app / "smars"
    smars.chmod(0o777)
    with pytest.raises(ReleaseInputError) as err:
        hash_directory(app)
    assert str(err.value).startswith(
        f"artifacts directory {app}: {smars}: writable by every account (mode 0777)"
    )
    smars.chmod(0o1777)  # sticky: others still add files next to the release's
    with pytest.raises(ReleaseInputError, match=r"writable by every account \(mode 1777\)"):
        hash_directory(app)


def test_a_world_writable_artifacts_directory_itself_is_refused(tmp_path: Path) -> None:
    app, _ = _deploy(tmp_path)
    app.chmod(0o757)
    with pytest.raises(ReleaseInputError) as err:
        hash_directory(app)
    assert str(err.value).startswith(f"artifacts directory {app}: {app}: writable by every")


def test_a_world_writable_config_is_refused(tmp_path: Path) -> None:
    _, config = _deploy(tmp_path)
    config.chmod(0o666)
    with pytest.raises(ReleaseInputError) as err:
        hash_config(config)
    assert str(err.value).startswith(f"config file {config}: writable by every account (mode 0666)")


@pytest.mark.parametrize("bit", [stat.S_ISUID, stat.S_ISGID], ids=["setuid", "setgid"])
def test_a_set_id_artifact_is_refused(tmp_path: Path, bit: int) -> None:
    app, _ = _deploy(tmp_path)
    path = app / "smars" / "rlp.py"
    path.chmod(0o755 | bit)
    # never skipped: a filesystem that drops the bit would leave the refusal untested
    assert path.stat().st_mode & bit, f"{tmp_path}: the filesystem dropped the set-id bit"
    with pytest.raises(ReleaseInputError) as err:
        hash_directory(app)
    assert str(err.value).startswith(f"artifact {path}: set-user-id or set-group-id")


def test_group_writable_files_and_directories_are_measured_as_before(tmp_path: Path) -> None:
    """Modes differ across healthy hosts (umask 002): only the bits that hand the files to
    every account or run them as another are refused (the execute bit is measured:
    test_executables.py)."""
    app, config = _deploy(tmp_path)
    before = hash_directory(app)
    (app / "smars" / "router.py").chmod(0o664)
    (app / "smars").chmod(0o775)
    config.chmod(0o664)
    assert hash_directory(app) == before
    assert len(hash_config(config)) == 64


def test_a_tree_under_a_directory_every_account_can_write_is_refused(tmp_path: Path) -> None:
    """`/srv` left 0777: anyone could move `/srv/app` aside and put their own tree there;
    every file in it was still measured as the node's own."""
    srv = tmp_path / "srv"
    srv.mkdir()
    app, config = _deploy(srv)
    srv.chmod(0o777)
    with pytest.raises(ReleaseInputError) as err:
        hash_directory(app)
    message = str(err.value)
    assert message.startswith(
        f"artifacts directory {app}: {srv} above it: writable by every account (mode 0777)"
    )
    assert f"chmod o-w {srv}" in message
    with pytest.raises(ReleaseInputError) as err:
        hash_config(config)
    assert str(err.value).startswith(
        f"config file {config}: {srv} above it: writable by every account (mode 0777)"
    )


def test_a_sticky_directory_above_the_tree_is_measured(tmp_path: Path) -> None:
    """Like /tmp: others may add their own files there but never move ours aside."""
    srv = tmp_path / "srv"
    srv.mkdir()
    app, config = _deploy(srv)
    srv.chmod(0o1777)
    assert sorted(hash_directory(app)) == sorted(FILES)
    assert len(hash_config(config)) == 64


def test_a_linked_file_in_a_directory_every_account_can_write_is_refused(tmp_path: Path) -> None:
    """The link is followed and the target measured, but anyone could swap the target."""
    app, _ = _deploy(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "rlp.py").write_bytes(FILES["smars/rlp.py"])
    (app / "smars" / "rlp.py").unlink()
    (app / "smars" / "rlp.py").symlink_to(shared / "rlp.py")
    assert sorted(hash_directory(app)) == sorted(FILES)
    shared.chmod(0o777)
    with pytest.raises(ReleaseInputError) as err:
        hash_directory(app)
    assert str(err.value).startswith(
        f"artifact {app / 'smars' / 'rlp.py'}: {shared} above it: writable by every account"
    )
