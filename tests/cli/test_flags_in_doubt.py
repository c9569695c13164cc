"""`flags set` says what became of a change whose state write got no answer, and of one the
store refused. Real nats-server, authorization on.

* Sent, not answered (the server hung while it held the write): `ChangeUncertain`, "it
  may be stored and in force; check flags show", exit 3. It had no test.
* Refused (the flags bucket full): nothing is stored. It was reported as the above,
  "sent but the control plane did not answer ... it may be stored and in force", exit 3,
  for a write the store had answered with a refusal; now "not changed, nothing stored",
  exit 2, naming the bucket's bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.control.node.flags import state_key
from knightwatch.control.plane.nats import NatsControlPlane, connect_as
from knightwatch.control.plane.protocol import Bucket, ControlPlaneRefused
from knightwatch.control.site import Site

from .test_flags_plane_lost import CLEAN, RLP, any_hour
from .test_flags_plane_lost import nats_server as nats_server  # at any hour
from .test_wait_timeouts import _member_that_never_confirms


def _set(site: Site, registry: Path, value: str) -> tuple[str, int]:
    env = {"COLUMNS": "400", **site.cli_env("alice")}
    result = CliRunner().invoke(
        app,
        ["flags", "set", RLP, value, "--nodes", "n1", "--reason", "launch", "--registry",
         str(registry), "--timeout", "0.5", *any_hour(registry.parent)],
        env=env,
    )  # fmt: skip
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return " ".join(result.output.split()), result.exit_code


def _stored_revision(site: Site) -> int:
    async def read() -> int:
        alice = await site.connect("alice")
        try:
            return (await alice.get_record(Bucket.FLAGS, state_key(RLP)))[1]
        finally:
            await alice.close()

    return asyncio.run(read())


async def _stopped(pid: int) -> None:
    """Once every thread of `pid` is stopped (a signal is delivered after `kill` returns)."""
    tasks = Path(f"/proc/{pid}/task")
    deadline = asyncio.get_running_loop().time() + 15.0
    while any(
        (t / "stat").read_text().rsplit(")", 1)[1].split()[0] != "T" for t in tasks.iterdir()
    ):
        assert asyncio.get_running_loop().time() < deadline, "nats-server never stopped"
        await asyncio.sleep(0.005)


def test_a_state_write_sent_and_never_answered_is_in_doubt_exit_3(
    nats_server: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = tmp_path / "feature-flags.yaml"
    shutil.copy(CLEAN / "feature-flags.yaml", registry)
    _member_that_never_confirms(nats_server, registry)
    pid = nats_server.server.pid
    assert pid is not None
    original = NatsControlPlane.put_record
    hung: list[str] = []

    async def hang_on_state(
        self: NatsControlPlane,
        bucket: Bucket,
        key: str,
        value: bytes,
        expected_revision: int | None = None,
    ) -> int:
        if key != state_key(RLP):
            return await original(self, bucket, key, value, expected_revision)
        os.kill(pid, signal.SIGSTOP)  # the write goes out; the server holds it, unanswered
        await _stopped(pid)
        hung.append(key)
        try:
            return await original(self, bucket, key, value, expected_revision)
        finally:
            os.kill(pid, signal.SIGCONT)

    monkeypatch.setattr(NatsControlPlane, "put_record", hang_on_state)
    out, code = _set(nats_server, registry, "on")
    assert hung == [state_key(RLP)], out
    assert f"in doubt: flag '{RLP}': the change to revision 1 was sent but the control plane " \
        "did not answer" in out, out  # fmt: skip
    assert "it may be stored and in force on the nodes that apply it" in out, out
    assert f"check `knightwatch flags show {RLP}` before doing anything else" in out, out
    assert code == 3, out


def test_a_state_write_the_full_bucket_refused_is_not_changed_exit_2(
    nats_server: Site, tmp_path: Path
) -> None:
    registry = tmp_path / "feature-flags.yaml"
    shutil.copy(CLEAN / "feature-flags.yaml", registry)
    _member_that_never_confirms(nats_server, registry)
    bound = 64 << 10

    async def fill() -> None:  # to the very bound: past the tools, with alice's own client
        nc = await connect_as(nats_server.server.provisioner, [nats_server.server.url])
        alice = await nats_server.connect("alice")
        try:
            js = nc.jetstream()
            config = (await js.stream_info("KV_kw_flags")).config
            await js.update_stream(dataclasses.replace(config, max_bytes=bound))
            for size in (4096, 512, 64, 1):  # until not a byte more is taken
                for i in range(bound // size):
                    try:
                        await alice.put_record(Bucket.FLAGS, f"change.x.{size}.{i}", b"x" * size)
                    except ControlPlaneRefused:
                        break
        finally:
            await alice.close()
            await nc.close()

    asyncio.run(fill())
    for value in ("off", "on"):
        out, code = _set(nats_server, registry, value)
        assert f"error: flag '{RLP}': not changed, nothing stored: control plane refused the " \
            "write: " in out, out  # fmt: skip
        assert "in doubt" not in out and "may be stored" not in out, out
        assert code == 2, out
    assert _stored_revision(nats_server) == 0
