"""The node's checkpoints in the control plane: a rewrite is caught after the disk is wiped.

A real nats-server with authorization on; `knightwatch audit verify --nats-url` in
its own process (logged in as carol) reads the node's latest checkpoint from the
plane and its enrolled key from the roster, verified from the trust anchor.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import msgspec

from knightwatch.audit import GENESIS, AuditContext, FlightRecorder
from knightwatch.audit.chain import seal_batch
from knightwatch.clock import SimClock
from knightwatch.control.node.checkpoints import Checkpointer, sidecar_path
from knightwatch.control.site import Site

CTX = AuditContext(node="n1")


def reseal(lines: list[bytes]) -> bytes:
    payloads = []
    for line in lines:
        obj = json.loads(line)
        if obj["kind"] == "seal":
            continue  # the forger drops the seals and seals everything again
        obj.pop("seq")
        payloads.append(msgspec.json.encode(obj))
    pieces, _, _ = seal_batch(payloads, 0, GENESIS.encode())
    return b"".join(pieces)


async def test_checkpoints_shipped_to_the_control_plane_outlive_the_node_disk(
    tmp_path: Path, nats_server: Site
) -> None:
    """The attacker rewrites the file and deletes the checkpoints beside it; the copy in
    the control plane (with the node's enrolled key) still catches the rewrite."""
    key = nats_server.signer("n1").key  # the node's enrolled key signs its checkpoints
    plane = await nats_server.connect("n1")
    try:
        path = tmp_path / "n1.jsonl"
        clock = SimClock(1_343_826_000 * 10**9)
        rec = FlightRecorder(path, clock=clock)
        cp = Checkpointer(rec, path, "n1", key, clock, plane)
        for i in range(20):
            rec.record_event(
                "halt", CTX, scope="node", key="n1", state="HALTED", code="halted",
                reason=f"r{i}", actor="ops",
            )  # fmt: skip
        await cp.close()
        rec.close()
    finally:
        await plane.close()
    lines = path.read_bytes().splitlines()
    lines[12] = lines[12].replace(b'"reason":"r12"', b'"reason":"quiet"')
    path.write_bytes(reseal(lines))
    sidecar_path(path).unlink()
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "knightwatch", "audit", "verify", str(path), "--nats-url",
         nats_server.url, "--identity", str(nats_server.key_path("carol")),
         "--trust-anchor", str(nats_server.anchor_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "checkpoint_mismatch" in proc.stdout


def test_a_symlink_planted_at_the_checkpoint_file_is_not_written_through(
    tmp_path: Path,
) -> None:
    """The checkpoints beside the recorder's file are the node's alone: a link planted at
    their path (to another node's checkpoints) is not appended through, and a new file is
    readable by its owner only."""
    from knightwatch.release.keys import SigningKey

    key = SigningKey.generate()
    clock = SimClock(1_343_826_000 * 10**9)
    path = tmp_path / "n1.jsonl"
    victim = tmp_path / "other.jsonl.checkpoints"
    victim.write_bytes(b"theirs\n")
    sidecar_path(path).symlink_to(victim)
    rec = FlightRecorder(path, clock=clock)
    try:
        rec.record_event(
            "halt", CTX, scope="node", key="n1", state="HALTED", code="halted",
            reason="r", actor="ops",
        )  # fmt: skip
        assert Checkpointer(rec, path, "n1", key, clock).sign_now() is not None
        assert victim.read_bytes() == b"theirs\n"  # nothing written through the link
        sidecar_path(path).unlink()
        rec.record_event(
            "halt", CTX, scope="node", key="n1", state="HALTED", code="halted",
            reason="r2", actor="ops",
        )  # fmt: skip
        assert Checkpointer(rec, path, "n1", key, clock).sign_now() is not None
        assert sidecar_path(path).stat().st_mode & 0o777 == 0o600
    finally:
        rec.close()


def test_a_fifo_planted_at_the_checkpoint_file_gets_no_checkpoint_and_blocks_nothing(
    tmp_path: Path,
) -> None:
    """A FIFO at the checkpoints' path: with nobody reading it, opening it blocked the
    node's event loop (its lease, its kills) for good; with a reader, the reader took the
    checkpoint. Now neither: the checkpoint is not kept there (logged), and signing goes on."""
    import os

    from knightwatch.release.keys import SigningKey

    key = SigningKey.generate()
    clock = SimClock(1_343_826_000 * 10**9)
    path = tmp_path / "n1.jsonl"
    os.mkfifo(sidecar_path(path))
    reader = os.open(sidecar_path(path), os.O_RDONLY | os.O_NONBLOCK)  # someone listening
    rec = FlightRecorder(path, clock=clock)
    try:
        rec.record_event(
            "halt", CTX, scope="node", key="n1", state="HALTED", code="halted",
            reason="r", actor="ops",
        )  # fmt: skip
        assert Checkpointer(rec, path, "n1", key, clock).sign_now() is not None
        try:
            taken = os.read(reader, 65536)
        except BlockingIOError:
            taken = b""
        assert taken == b""  # before: the signed checkpoint, handed to whoever read it
        os.close(reader)  # now nobody reads: before, the open below blocked for good
        rec.record_event(
            "halt", CTX, scope="node", key="n1", state="HALTED", code="halted",
            reason="r2", actor="ops",
        )  # fmt: skip
        assert Checkpointer(rec, path, "n1", key, clock).sign_now() is not None
    finally:
        rec.close()
