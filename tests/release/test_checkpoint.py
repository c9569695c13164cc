"""Signed checkpoints catch what the hash chain alone cannot: a rewrite and an appended forgery.

The attacker here can write the recorder file and knows the format: they edit a
record and re-seal every record after it, or append records with a correct
chain. `audit verify` passes both on the chain alone (and with an `--anchor`
that is still in the file); with the node's signed checkpoints it fails both.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from knightwatch.audit import GENESIS, AuditContext, FlightRecorder
from knightwatch.audit.chain import seal_batch
from knightwatch.cli.app import app
from knightwatch.clock import SimClock
from knightwatch.control.node.checkpoints import Checkpointer, sidecar_path
from knightwatch.release.checkpoint import Checkpoint, sign_checkpoint
from knightwatch.release.keys import SigningKey, write_key_pair

runner = CliRunner()
CTX = AuditContext(node="n1")


def record_run(path: Path, key: SigningKey) -> Checkpointer:
    """A node's run: 20 records with a checkpoint after 10, a final one at close."""
    clock = SimClock(1_343_826_000 * 10**9)
    rec = FlightRecorder(path, clock=clock)
    cp = Checkpointer(rec, path, "n1", key, clock)
    for i in range(10):
        rec.record_event(
            "halt", CTX, scope="node", key="n1", state="HALTED", code="halted",
            reason=f"r{i}", actor="ops",
        )  # fmt: skip
    assert cp.sign_now() is not None
    clock.advance(10**9)
    for i in range(10, 20):
        rec.record_event("resume", CTX, scope="node", key="n1", reason=f"r{i}", actor="ops")
    assert cp.sign_now(final=True) is not None
    rec.close()
    return cp


def append_forged(path: Path, line: bytes) -> bytes:
    """What an attacker appends: a record and a seal chained to the file's head."""
    lines = path.read_bytes().splitlines()
    last = json.loads(lines[-1])
    obj = json.loads(line)
    obj.pop("seq")
    pieces, _, head = seal_batch([msgspec.json.encode(obj)], last["seq"] + 1, last["hash"].encode())
    path.write_bytes(b"".join(line + b"\n" for line in lines) + b"".join(pieces))
    return head


def reseal(lines: list[bytes]) -> bytes:
    """What an attacker does: re-chain the records so every hash matches again."""
    payloads = []
    for line in lines:
        obj = json.loads(line)
        if obj["kind"] == "seal":
            continue  # the forger drops the seals and seals everything again
        obj.pop("seq")
        payloads.append(msgspec.json.encode(obj))
    pieces, _, _ = seal_batch(payloads, 0, GENESIS.encode())
    return b"".join(pieces)


def verify(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", "verify", *args])
    return result.exit_code, result.output


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, Path]:
    key, _, pub = write_key_pair(tmp_path / "keys", "n1")
    path = tmp_path / "n1.jsonl"
    record_run(path, key)
    return path, pub


def test_an_honest_file_is_vouched_for_through_the_final_checkpoint(run: tuple[Path, Path]) -> None:
    path, pub = run
    assert sidecar_path(path).exists()
    code, out = verify(str(path), "--key", str(pub))
    assert code == 0, out
    last = json.loads(path.read_bytes().splitlines()[-1])  # the final checkpoint's seal
    assert f"through seq {last['seq']}" in out and "final" in out


def test_a_rewrite_with_a_recomputed_chain_is_caught(run: tuple[Path, Path]) -> None:
    path, pub = run
    lines = path.read_bytes().splitlines()
    lines[3] = lines[3].replace(b'"reason":"r3"', b'"reason":"nothing happened"')
    path.write_bytes(reseal(lines))
    code, out = verify(str(path), "--checkpoints", "/dev/null")  # the chain alone: fooled
    assert code == 0, out
    code, out = verify(str(path), "--key", str(pub))
    assert code == 1, out
    assert "checkpoint_mismatch" in out and "rewritten" in out


def test_an_appended_forgery_is_caught_even_with_an_anchor_in_the_file(
    run: tuple[Path, Path],
) -> None:
    path, pub = run
    lines = path.read_bytes().splitlines()
    anchor = json.loads(lines[-1])["hash"]
    append_forged(path, lines[5].replace(b'"reason":"r5"', b'"reason":"forged"'))
    code, out = verify(str(path), "--anchor", anchor, "--checkpoints", "/dev/null")
    assert code == 0, out  # before: an anchor kept earlier still passes
    code, out = verify(str(path), "--key", str(pub))
    assert code == 1, out
    assert "appended" in out and "someone else" in out


def test_a_checkpoint_signed_by_another_key_is_refused(
    run: tuple[Path, Path], tmp_path: Path
) -> None:
    path, pub = run
    lines = path.read_bytes().splitlines()
    head = append_forged(path, lines[5]).decode()
    seq = json.loads(path.read_bytes().splitlines()[-1])["seq"]
    mallory = SigningKey.generate()
    fake = sign_checkpoint(
        Checkpoint(node="n1", file=path.name, seq=seq, head=head, at_ns=2 * 10**18, final=True),
        mallory,
    )
    with sidecar_path(path).open("ab") as f:
        f.write(msgspec.json.encode(fake) + b"\n")
    code, out = verify(str(path), "--key", str(pub))
    assert code == 1, out
    assert "checkpoint_invalid" in out and "appended" in out


def test_a_deleted_checkpoint_file_is_not_a_pass_when_the_key_is_given(
    run: tuple[Path, Path],
) -> None:
    path, pub = run
    sidecar_path(path).unlink()
    code, out = verify(str(path), "--key", str(pub))
    assert code == 1 and "no checkpoint signed by key" in out, out
