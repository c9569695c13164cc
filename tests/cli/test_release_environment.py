"""`release build --environment` and `release attest --environment`: the Python environment
this command runs in is measured into the manifest and compared at attestation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from knightwatch.release.environment import python_version

from .test_release import run
from .test_release import site as site


def test_a_release_built_with_its_environment_admits_only_a_node_measuring_the_same(
    site: Path,
) -> None:
    code, out = run(
        "release", "build", "--id", "r-env", "--artifacts", site / "release",
        "--config", site / "config.toml", "--flags", site / "flags.yaml",
        "--out", site / "m.json", "--environment",
    )  # fmt: skip
    assert code == 0, out
    said = re.search(r"environment (\S+) \((\d+) entries\)", out)
    assert said is not None, out
    assert said.group(1) == python_version() and int(said.group(2)) > 100
    source = site / "m.json"
    for signer in ("ci", "rm"):
        code, out = run("release", "sign", source, "--key", site / "keys" / f"{signer}.key")
        assert code == 0, out
        source = site / "m.dsse.json"
    common = (
        "release", "attest", "--node", "n1", "--artifacts", site / "release",
        "--config", site / "config.toml", "--flags", site / "flags.yaml",
        "--envelope", source, "--policy", site / "policy.toml",
    )  # fmt: skip
    code, out = run(*common, "--environment")
    assert code == 0, out
    assert "ADMITTED node n1 runs release r-env" in out
    code, out = run(*common)
    assert code == 1, out
    assert "environment_unmeasured" in out and "--measure-environment" in out


def test_attest_lists_the_environment_it_measured(site: Path) -> None:
    code, out = run(
        "release", "attest", "--node", "n1", "--artifacts", site / "release",
        "--config", site / "config.toml", "--flags", site / "flags.yaml", "--environment",
    )  # fmt: skip
    assert code == 0, out
    assert re.search(r"environment[\s│]+python[\s│]+" + re.escape(python_version()), out), out
    assert re.search(r"environment[\s│]+site-packages/msgspec[\s│]+[0-9a-f]{64}", out), out


@pytest.mark.parametrize(
    "command",
    [
        ["node", "--id", "n1"],
        ["gateway", "gateway.toml"],
    ],
)
def test_measuring_the_environment_without_release_admission_is_refused(
    command: list[str], tmp_path: Path
) -> None:
    """Nothing would be compared: said at once, before any file is read."""
    code, out = run(*command, "--key", tmp_path / "absent.key", "--measure-environment")
    assert code == 2, out
    assert "--measure-environment: used only with release admission" in " ".join(out.split())
