"""The Python environment a node runs in is part of what it attests, when a release names it.

Most of the code a node runs is in its interpreter, standard library and site-packages,
not its artifacts directory: a dependency upgraded by hand on one host (`pip install -U`
on one router of eight) or a package dropped into site-packages ran beside an exact
attestation of the release. A release built with the environment measured names each
installed package, module and `.pth` file by hash, and a node measuring its own is
compared entry by entry.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from knightwatch.clock import SimClock
from knightwatch.control.node.attestor import directory_measure
from knightwatch.release.admission import MAX_ENVIRONMENT_FINDINGS
from knightwatch.release.contents import ReleaseContents
from knightwatch.release.environment import EnvironmentMeasure, python_version
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.manifest import Manifest, decode_manifest, encode_manifest
from knightwatch.release.reasons import AdmissionReason
from knightwatch.release.signing import verify_release

from .release_world import CONFIG, FILES, FLAGS, World

PKG = {
    "smars_algos/__init__.py": b"",
    "smars_algos/peg.py": b"def peg(order):\n    return None\n",
    "smars_algos-1.0.dist-info/METADATA": b"Name: smars-algos\nVersion: 1.0\n",
    "smars_algos-1.0.dist-info/RECORD": b"smars_algos/peg.py,sha256=x,33\n",
    "smars_algos-1.0.dist-info/direct_url.json": b'{"url": "file:///build/1"}',
    "smars_algos/__pycache__/peg.cpython-311.pyc": b"\x00compiled at 1",
    "six.py": b"# six\n",
}


def _install(root: Path, files: dict[str, bytes] = PKG) -> tuple[Path, Path]:
    """An interpreter binary and a site-packages holding `files`."""
    site = root / "site-packages"
    for name, data in files.items():
        path = site / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    binary = root / "bin" / "python3.11"
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_bytes(b"\x7fELF interpreter")
    return site, binary


def _measure(root: Path, python: str = "cpython-3.11.7") -> EnvironmentMeasure:
    site = root / "site-packages"
    return EnvironmentMeasure(
        {"site-packages": site}, {"interpreter": root / "bin" / "python3.11"}, python, refresh_s=0
    )


def _app(root: Path) -> tuple[Path, Path]:
    app = root / "app"
    for name, data in FILES.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_bytes(data)
    config = root / "config.toml"
    config.write_bytes(CONFIG)
    return app, config


def _verdict(
    world: World, clock: SimClock, release: ReleaseContents, node: ReleaseContents
) -> tuple[bool, list[tuple[AdmissionReason, str, str]]]:
    envelope = world.signers.sign(Manifest(release_id="r-env", contents=release))
    admitter = world.admitter(clock)
    attestation = world.attestation("n2", admitter.challenge("n2"), clock, node)
    verdict = admitter.admit(attestation, envelope, world.registry, target_release="r-env")
    return verdict.admitted, [(f.reason, f.subject, f.detail) for f in verdict.findings]


def test_each_package_module_and_pth_file_is_an_entry(tmp_path: Path) -> None:
    _install(tmp_path)
    env = _measure(tmp_path)()
    assert sorted(env) == [
        "interpreter",
        "python",
        "site-packages/six.py",
        "site-packages/smars_algos",
        "site-packages/smars_algos-1.0.dist-info",
    ]
    assert env["python"] == "cpython-3.11.7"
    contents = ReleaseContents(
        artifacts={"a": "0" * 64}, config_sha256="0" * 64, flag_schema={}, environment=env
    )
    assert contents.environment == env


def test_bytecode_and_where_pip_found_a_wheel_are_not_measured(tmp_path: Path) -> None:
    """They differ between healthy hosts running the same code."""
    site, _ = _install(tmp_path)
    measure = _measure(tmp_path)
    before = measure()
    (site / "smars_algos/__pycache__/peg.cpython-311.pyc").write_bytes(b"\x00compiled at 2")
    (site / "smars_algos-1.0.dist-info/direct_url.json").write_bytes(b'{"url": "file:///b/2"}')
    assert measure() == before


@pytest.mark.parametrize(
    ("change", "entry"),
    [
        (lambda s: (s / "smars_algos/peg.py").write_bytes(b"def peg(o):\n    return o\n"),
         "site-packages/smars_algos"),
        (lambda s: (s / "smars_algos/power_peg.py").write_bytes(b"# woken\n"),
         "site-packages/smars_algos"),
        (lambda s: (s / "six.py").unlink(), "site-packages/six.py"),
        (lambda s: (s / "zz_hook.pth").write_bytes(b"import smars_algos.peg\n"),
         "site-packages/zz_hook.pth"),
    ],
    ids=["edited", "added-module", "removed", "new-pth"],
)  # fmt: skip
def test_a_changed_file_changes_exactly_its_entry(
    tmp_path: Path, change: Callable[[Path], object], entry: str
) -> None:
    site, _ = _install(tmp_path)
    measure = _measure(tmp_path)
    before = measure()
    change(site)
    after = measure()
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {entry}


def test_an_environment_is_measured_again_only_after_its_refresh(tmp_path: Path) -> None:
    site, _ = _install(tmp_path)
    measure = EnvironmentMeasure({"site-packages": site}, {}, "cpython-3.11.7", refresh_s=3600.0)
    before = measure()
    (site / "six.py").write_bytes(b"# six, edited\n")
    assert measure() == before  # within the refresh: the last measurement
    measure.refresh_s = 0.0
    assert measure()["site-packages/six.py"] != before["site-packages/six.py"]


def test_a_dependency_upgraded_on_one_node_is_named_by_package(
    world: World, clock: SimClock, tmp_path: Path
) -> None:
    app, config = _app(tmp_path)
    _install(tmp_path / "ci")
    release = directory_measure(app, config, dict(FLAGS), _measure(tmp_path / "ci"))()
    assert release.environment is not None

    node = tmp_path / "n2"
    shutil.copytree(tmp_path / "ci", node)
    site = node / "site-packages"
    (site / "smars_algos/peg.py").write_bytes(b"def peg(order):\n    return order\n")
    (site / "smars_algos-1.0.dist-info").rename(site / "smars_algos-1.1.dist-info")
    measured = directory_measure(app, config, dict(FLAGS), _measure(node))()
    admitted, findings = _verdict(world, clock, release, measured)
    assert not admitted
    assert [(r, s) for r, s, _ in findings] == [
        (AdmissionReason.ENVIRONMENT_MISMATCH, "site-packages/smars_algos"),
        (AdmissionReason.ENVIRONMENT_MISSING, "site-packages/smars_algos-1.0.dist-info"),
        (AdmissionReason.ENVIRONMENT_UNEXPECTED, "site-packages/smars_algos-1.1.dist-info"),
    ]

    same = directory_measure(app, config, dict(FLAGS), _measure(tmp_path / "ci"))()
    assert _verdict(world, clock, release, same) == (True, [])


def test_a_node_that_does_not_measure_its_environment_is_refused(
    world: World, clock: SimClock, tmp_path: Path
) -> None:
    app, config = _app(tmp_path)
    _install(tmp_path)
    release = directory_measure(app, config, dict(FLAGS), _measure(tmp_path))()
    admitted, findings = _verdict(world, clock, release, directory_measure(app, config, FLAGS)())
    assert not admitted
    [(reason, subject, detail)] = findings
    assert (reason, subject) == (AdmissionReason.ENVIRONMENT_UNMEASURED, "environment")
    assert "--measure-environment" in detail


def test_a_release_without_an_environment_compares_none(
    world: World, clock: SimClock, tmp_path: Path
) -> None:
    """Releases built before (or without) `--environment` admit as they did."""
    app, config = _app(tmp_path)
    _install(tmp_path)
    release = directory_measure(app, config, dict(FLAGS))()
    node = directory_measure(app, config, dict(FLAGS), _measure(tmp_path))()
    assert _verdict(world, clock, release, node) == (True, [])


def test_another_interpreter_is_named_and_a_flood_of_entries_is_counted(
    world: World, clock: SimClock, tmp_path: Path
) -> None:
    app, config = _app(tmp_path)
    many = {f"mod{i:03}.py": f"# {i}\n".encode() for i in range(40)}
    _install(tmp_path / "ci", many)
    release = directory_measure(app, config, dict(FLAGS), _measure(tmp_path / "ci"))()
    _install(tmp_path / "n2", {name: b"# other\n" for name in many})
    node = directory_measure(
        app, config, dict(FLAGS), _measure(tmp_path / "n2", "cpython-3.12.1")
    )()
    admitted, findings = _verdict(world, clock, release, node)
    assert not admitted
    assert findings[0] == (
        AdmissionReason.ENVIRONMENT_MISMATCH,
        "python",
        "node runs cpython-3.12.1, release has cpython-3.11.7",
    )
    assert len(findings) == MAX_ENVIRONMENT_FINDINGS + 1
    assert findings[-1][1] == "environment"
    assert findings[-1][2].startswith(f"and {40 - MAX_ENVIRONMENT_FINDINGS + 1} more entries")


def test_a_signed_release_keeps_its_environment(world: World, tmp_path: Path) -> None:
    app, config = _app(tmp_path)
    _install(tmp_path)
    contents = directory_measure(app, config, dict(FLAGS), _measure(tmp_path))()
    manifest = Manifest(release_id="r-env", contents=contents)
    assert decode_manifest(encode_manifest(manifest), source="m.json") == manifest
    verified = verify_release(world.signers.sign(manifest), world.policy)
    assert verified.manifest is not None
    assert verified.manifest.contents.environment == contents.environment


@pytest.mark.parametrize(
    ("environment", "says"),
    [
        ({"python": "3.11"}, "environment[python]: '3.11' must be an implementation and version"),
        ({"bogus/x": "0" * 64}, "environment: entry 'bogus/x' must be python, interpreter"),
        ({"site-packages/a/b": "0" * 64}, "entry 'site-packages/a/b' must be python"),
        ({"site-packages/x": "XYZ"}, "environment['site-packages/x']: must be 64 lower-case hex"),
    ],
)
def test_a_malformed_environment_is_refused_naming_the_entry(
    environment: dict[str, str], says: str, tmp_path: Path
) -> None:
    doc = {
        "release_id": "r-env",
        "contents": {
            "artifacts": {"a.py": "0" * 64},
            "config_sha256": "0" * 64,
            "flag_schema": {},
            "environment": environment,
        },
    }
    with pytest.raises(ReleaseInputError) as exc:
        decode_manifest(msgspec.json.encode(doc), source="m.json")
    assert str(exc.value).startswith("m.json: ") and says in str(exc.value), str(exc.value)


def test_what_cannot_be_measured_is_refused_naming_it(tmp_path: Path) -> None:
    site, _ = _install(tmp_path)
    (site / "smars_algos").chmod(0o777)
    with pytest.raises(ReleaseInputError, match="smars_algos: writable by every account"):
        _measure(tmp_path)()
    (site / "smars_algos").chmod(0o755)
    os.symlink(tmp_path / "gone.py", site / "gone.py")
    with pytest.raises(ReleaseInputError, match=r"gone\.py is a broken symlink"):
        _measure(tmp_path)()
    (site / "gone.py").unlink()
    os.symlink(site, site / "smars_algos" / "loop")
    with pytest.raises(ReleaseInputError, match="links back to a directory above it"):
        _measure(tmp_path)()


def test_this_interpreter_measures_its_own_environment() -> None:
    """The real thing: this test run's interpreter, standard library and site-packages."""
    env = EnvironmentMeasure()()
    assert env["python"] == python_version()
    assert "interpreter" in env
    assert "stdlib/json" in env and "site-packages/msgspec" in env
    assert not [k for k in env if k.startswith("stdlib/site-packages")]
    assert len(msgspec.json.encode(env)) < 256 * 1024  # an attestation on the control plane
