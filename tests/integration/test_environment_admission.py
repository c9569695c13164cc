"""A dependency upgraded by hand on one node, refused by the admission service across
real processes: `knightwatch admission serve` as its own process on a real nats-server
with authorization on, two nodes measuring their Python environments, the target set and
the verdicts read through the real CLI.

The two nodes run the same artifacts, config and flags; one of them had a package in its
site-packages changed after the release was built (`pip install -U` on one host of eight,
the missed deploy of 2012 in Python's terms): before environments were measured, both were
admitted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.node.attestor import directory_measure
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.release.dsse import encode_envelope
from knightwatch.release.environment import EnvironmentMeasure
from knightwatch.release.manifest import Manifest

from .fleet_release import NEW_ROUTER, REGISTRY, deploy
from .fleet_release import node as make_node
from .test_cli_governance import Governed, cli, status_once_refused
from .test_cli_governance import site as site
from .test_fleet_governance import eventually

pytestmark = pytest.mark.timeout(120)

PACKAGE = {
    "fastroute/__init__.py": b"from .core import route\n",
    "fastroute/core.py": b"def route(order):\n    return order\n",
    "fastroute-2.0.dist-info/METADATA": b"Name: fastroute\nVersion: 2.0\n",
}


def _environment(root: Path) -> EnvironmentMeasure:
    for name, data in PACKAGE.items():
        (root / "site-packages" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "site-packages" / name).write_bytes(data)
    (root / "python3.11").write_bytes(b"\x7fELF interpreter")
    return _measure(root)


def _measure(root: Path) -> EnvironmentMeasure:
    return EnvironmentMeasure(
        {"site-packages": root / "site-packages"},
        {"interpreter": root / "python3.11"},
        "cpython-3.11.7",
        refresh_s=0.0,
    )


async def test_a_package_changed_on_one_node_is_refused_naming_it(
    site: Governed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in site.server.cli_env("alice").items():
        monkeypatch.setenv(name, value)
    opts = site.opts()
    tree = deploy(tmp_path / "build", NEW_ROUTER)
    built = _environment(tmp_path / "build-env")
    contents = directory_measure(tree / "app", tree / "config.toml", REGISTRY.schema(), built)()
    release = tmp_path / "r3.dsse.json"
    release.write_bytes(
        encode_envelope(site.signers.sign(Manifest(release_id="r3", contents=contents)))
    )
    approval = tmp_path / "r3-approval.json"
    code, out = await cli(
        "admission", "approve", release, "--for", "alice", "--reason", "reviewed",
        "--out", approval, "--key", site.server.key_path("bob"), *opts,
    )  # fmt: skip
    assert code == 0, out
    code, out = await cli(
        "admission", "target", release, "--reason", "deploy r3", "--approval", approval, *opts
    )  # fmt: skip
    assert code == 0 and "target release r3 set" in out, out

    clock = SystemClock()
    planes: list[NatsControlPlane] = []
    nodes: list[NodeRuntime] = []
    try:
        for name in ("n1", "n2"):
            shutil.copytree(tmp_path / "build-env", tmp_path / f"{name}-env")
            if name == "n2":  # upgraded by hand on this host alone
                (tmp_path / "n2-env" / "site-packages" / "fastroute" / "core.py").write_bytes(
                    b"def route(order):\n    return power_peg(order)\n"
                )
            plane = await site.server.connect(name)
            planes.append(plane)
            tree = deploy(tmp_path / name, NEW_ROUTER)
            env = _measure(tmp_path / f"{name}-env")
            runtime = make_node(name, plane, tree, clock, env)
            await runtime.start()
            nodes.append(runtime)
        await eventually(lambda: nodes[0].release_admitted and nodes[1].verdict is not None)
        assert not nodes[1].release_admitted

        row, out = await status_once_refused(opts, "n2")
        assert "admitted" in row["n1"] and "r3" in row["n1"], out
        assert "refused" in row["n2"], out
        assert "environment_mismatch: site-packages/fastroute" in out, out
    finally:
        for runtime in nodes:
            await runtime.stop()
        for plane in planes:
            await plane.close()
