"""Which checkpoint is a file's newest is read from the file's order (seq), not the wall clock.

A node's wall clock steps (NTP corrects it, an operator sets it). Checkpoints were ranked
by their signed time first: a periodic checkpoint stamped before a step back outranked
the final one signed after it, so records appended after the node closed the file were
only "not yet covered" and `audit verify` passed a forgery; and a restart whose clock
had stepped back left the old final checkpoint newest, so the node's own later records
were called appended by someone else. Seqs only grow within a file, whatever the clock
says; the signed time only orders checkpoints of the same seq (a restart's reopening).
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from knightwatch.audit import AuditContext, FlightRecorder
from knightwatch.cli.app import app
from knightwatch.clock import SimClock
from knightwatch.control.node.checkpoints import Checkpointer
from knightwatch.release.keys import write_key_pair

from .test_checkpoint import append_forged

runner = CliRunner()
CTX = AuditContext(node="n1")
T0 = 1_343_826_000 * 10**9


class WallClock:
    """A wall clock that can be set backwards, as a node's can."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def monotonic_ns(self) -> int:
        return 0

    def time_ns(self) -> int:
        return self.now_ns


def _records(rec: FlightRecorder, n: int, tag: str) -> None:
    for i in range(n):
        rec.record_event(
            "halt", CTX, scope="node", key="n1", state="HALTED", code="halted",
            reason=f"{tag}{i}", actor="ops",
        )  # fmt: skip


def verify(path: Path, pub: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", "verify", str(path), "--key", str(pub)])
    return result.exit_code, result.output


def test_a_forgery_after_the_final_checkpoint_is_caught_when_the_clock_stepped_back(
    tmp_path: Path,
) -> None:
    key, _, pub = write_key_pair(tmp_path / "keys", "n1")
    path = tmp_path / "n1.jsonl"
    wall = WallClock(T0 + 60 * 10**9)  # running a minute fast
    rec = FlightRecorder(path, clock=SimClock(T0))
    cp = Checkpointer(rec, path, "n1", key, wall)
    _records(rec, 10, "a")
    assert cp.sign_now() is not None
    wall.now_ns = T0 + 5 * 10**9  # NTP steps the clock back 55 s
    _records(rec, 10, "b")
    assert cp.sign_now(final=True) is not None
    rec.close()
    code, out = verify(path, pub)
    assert code == 0, out
    lines = path.read_bytes().splitlines()
    append_forged(path, lines[5].replace(b'"reason":"a5"', b'"reason":"forged"'))
    code, out = verify(path, pub)
    assert code == 1, out
    assert "appended" in out and "someone else" in out


def test_a_restart_after_the_clock_stepped_back_is_not_called_an_appended_forgery(
    tmp_path: Path,
) -> None:
    key, _, pub = write_key_pair(tmp_path / "keys", "n1")
    path = tmp_path / "n1.jsonl"
    wall = WallClock(T0 + 60 * 10**9)
    rec = FlightRecorder(path, clock=SimClock(T0))
    cp = Checkpointer(rec, path, "n1", key, wall)
    _records(rec, 10, "a")
    assert cp.sign_now(final=True) is not None
    rec.close()
    wall.now_ns = T0 + 5 * 10**9  # the node restarts after its clock was set right
    rec = FlightRecorder(path, clock=SimClock(T0 + 10 * 10**9))
    cp = Checkpointer(rec, path, "n1", key, wall)
    _records(rec, 10, "b")
    assert cp.sign_now() is not None
    _records(rec, 3, "c")  # written, then the node crashed before its next checkpoint
    rec.close()
    code, out = verify(path, pub)
    assert "someone else" not in out, out
    assert code == 0, out
