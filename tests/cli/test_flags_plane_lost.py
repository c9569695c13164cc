"""`flags set` that loses the control plane once its change went out says how far it got.

The state written (nodes apply it) and the plane then lost, before the change record or
before the confirmations were read, ended as "error: flag state unreachable: ..." exit 2,
or as "not confirmed" for nodes nobody could read: an operator read that as "nothing
changed" and retried, or walked away with a risk-adding change live. Now the line names
the revision stored and that it is in force, and the exit is 3.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.control.node.flags import change_key, state_key
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.site import Site
from knightwatch.flags.activation import SecondApprover
from knightwatch.trust.roster import ApprovalPolicy

from .test_wait_timeouts import _member_that_never_confirms

CLEAN = Path(__file__).parents[1] / "flags" / "fixtures" / "clean_repo"
RLP = "trading.smars.rlp_enabled"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[Site]:
    """A fleet whose roster asks no second person to switch a flag on, at any hour: these
    tests are about what became of a change's writes, not its approval. On the test cast's
    roster (a second person while New York's market is open) switching RLP on was refused
    from 09:30 to 16:00 New York, and the tests failed then."""
    site = Site(tmp_path / "site", approvals=ApprovalPolicy(flag=SecondApprover.NEVER))
    try:
        site.start()
        yield site
    finally:
        site.stop()


def any_hour(tmp_path: Path) -> list[str]:
    """`flags set`'s own activation policy, asking no second person at any hour (its
    default asks for one while New York's market is open)."""
    policy = tmp_path / "any-hour.toml"
    policy.write_text('second_approver = "never"\n')
    return ["--policy", str(policy)]


def _cut_after(
    monkeypatch: pytest.MonkeyPatch,
    site: Site,
    cut: Callable[[str], bool],
    at: Bucket = Bucket.FLAGS,
) -> list[str]:
    """The server stopped right after a write of a key `cut` picks was stored."""
    original = NatsControlPlane.put_record
    written: list[str] = []

    async def put_then_cut(
        self: NatsControlPlane,
        bucket: Bucket,
        key: str,
        value: bytes,
        expected_revision: int | None = None,
    ) -> int:
        revision = await original(self, bucket, key, value, expected_revision)
        written.append(key)
        if bucket is at and cut(key):
            await asyncio.to_thread(site.stop)
        return revision

    monkeypatch.setattr(NatsControlPlane, "put_record", put_then_cut)
    return written


@pytest.mark.parametrize("value", ["on", "off"])
@pytest.mark.parametrize("cut_at", ["state", "record"])
def test_a_change_stored_then_the_plane_lost_says_it_is_in_force_exit_3(
    nats_server: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, cut_at: str
) -> None:
    registry = tmp_path / "feature-flags.yaml"
    shutil.copy(CLEAN / "feature-flags.yaml", registry)
    _member_that_never_confirms(nats_server, registry)
    key = state_key(RLP) if cut_at == "state" else change_key(RLP, 1)
    written = _cut_after(monkeypatch, nats_server, lambda k: k == key)
    env = {"COLUMNS": "400", **nats_server.cli_env("alice")}
    result = CliRunner().invoke(
        app,
        ["flags", "set", RLP, value, "--nodes", "n1", "--reason", "launch", "--registry",
         str(registry), "--timeout", "0.5", *any_hour(tmp_path)],
        env=env,
    )  # fmt: skip
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert key in written, (written, result.output)
    out = " ".join(result.output.split())
    assert f"flag '{RLP}': stored at revision 1: in force on the nodes that apply it" in out, out
    assert f"check `knightwatch flags show {RLP}`" in out, out
    if cut_at == "state":
        assert "its change record not written" in out, out
    else:
        assert "confirmations not read from n1" in out, out
        assert "not confirmed" not in out, out
    assert result.exit_code == 3, result.output


def test_a_rollout_started_then_the_plane_lost_says_it_may_be_in_force_exit_3(
    nats_server: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its record stored (the rollout claimed), then the plane lost: exit 2 "error: control
    plane did not answer" read as "not started", with a rollout stored as progressing."""
    registry = tmp_path / "feature-flags.yaml"
    shutil.copy(CLEAN / "feature-flags.yaml", registry)
    _member_that_never_confirms(nats_server, registry)
    written = _cut_after(monkeypatch, nats_server, lambda k: k == RLP, at=Bucket.ROLLOUTS)
    env = {"COLUMNS": "400", **nats_server.cli_env("alice")}
    result = CliRunner().invoke(
        app, ["rollout", "start", RLP, "--registry", str(registry)], env=env
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert RLP in written, (written, result.output)
    out = " ".join(result.output.split())
    assert f"rollout of {RLP}: the control plane was lost while it started" in out, out
    assert "it may be stored, its first stage in force" in out, out
    assert f"knightwatch rollout abort {RLP}" in out, out
    assert result.exit_code == 3, result.output
