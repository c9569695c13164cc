"""A snapshot is never bigger than `incident verify` reads (`SNAPSHOT_MAX_BYTES`).

`incident verify` refuses an archive over `SNAPSHOT_MAX_BYTES` (256 MiB), but the
snapshot was sealed and written whatever its size: with `--last` near its bound (a
million records per node) on a busy fleet, the evidence was written, and then no one
could verify it. The flight-recorder tails, the one part that grows with `--last`,
are cut to the newest records that fit (the chain heads are read before, from the
whole tail), each cut named in `incomplete.json`; evidence that does not fit even
without them is refused with one line, before anything is written.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from knightwatch.cli.incident import snapshot_after_kill
from knightwatch.clock import SystemClock
from knightwatch.control.fleet.killswitch import CommandResult
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import AuditEnvelope, StateEntry
from knightwatch.incident import snapshot
from knightwatch.incident.snapshot import SnapshotError, take_snapshot, verify_snapshot
from knightwatch.release.keys import SigningKey, write_key_pair
from knightwatch.state import Scope, TradingState

BOUND = 64 * 1024


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        out = {}
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            assert handle is not None
            out[info.name] = handle.read()
        return out


async def _plane_with_records(per_node: int, pad: int) -> MemoryControlPlane:
    plane = MemoryControlPlane(MemoryFabric())
    await plane.connect()
    for i in range(1, per_node + 1):
        for node in ("n1", "n2", "supervisor"):
            line = json.dumps({"seq": i, "hash": f"{node}-h{i}", "pad": "x" * pad}).encode()
            await plane.append_audit(AuditEnvelope(node, f"i-{node}", i, line + b"\n"))
    return plane


async def test_a_snapshot_over_the_bound_keeps_the_newest_records_that_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(snapshot, "SNAPSHOT_MAX_BYTES", BOUND)
    plane = await _plane_with_records(400, 200)  # about 3 x 90 KB of tails
    data = await take_snapshot(
        plane, SystemClock(), SigningKey.generate(), actor="a", reason="r",
        last_records=400, listen_s=0.05,
    )  # fmt: skip
    assert len(data) <= BOUND
    check = verify_snapshot(data, source="s.tar")
    assert check.ok, check.problems
    files = _members(data)
    heads = json.loads(files["recorder/heads.json"])
    for node, name in (("n1", "recorder/n1.jsonl"), ("n2", "recorder/n2.jsonl")):
        tail = files[name].splitlines()
        assert 0 < len(tail) < 400
        # the newest records, in order, ending on the chain head read from the whole tail
        seqs = [json.loads(line)["seq"] for line in tail]
        assert seqs == list(range(401 - len(tail), 401))
        assert heads[node] == {"seq": 400, "hash": f"{node}-h400"}
        said = [g for g in check.incomplete if g.startswith(f"{name}: kept its last ")]
        assert said == [
            f"{name}: kept its last {len(tail)} of 400 records (the snapshot is bounded at "
            f"{BOUND} bytes, what `incident verify` reads); the older ones are in the "
            "audit stream only"
        ], check.incomplete
    actions = files["supervisor/actions.jsonl"].splitlines()
    assert 0 < len(actions) < 400
    assert json.loads(actions[-1])["seq"] == 400
    await plane.close()


async def test_a_snapshot_under_the_bound_is_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "SNAPSHOT_MAX_BYTES", BOUND)
    plane = await _plane_with_records(20, 20)
    data = await take_snapshot(
        plane, SystemClock(), SigningKey.generate(), actor="a", reason="r",
        last_records=400, listen_s=0.05,
    )  # fmt: skip
    check = verify_snapshot(data, source="s.tar")
    assert check.ok, check.problems
    assert not [g for g in check.incomplete if "kept its last" in g], check.incomplete
    assert len(_members(data)["recorder/n1.jsonl"].splitlines()) == 20
    await plane.close()


async def test_evidence_over_the_bound_without_any_tail_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(snapshot, "SNAPSHOT_MAX_BYTES", BOUND)
    plane = await _plane_with_records(5, 10)
    for i in range(40):  # stores alone over the bound
        value = json.dumps({"pad": "y" * 2000}).encode()
        await plane.put_record(Bucket.FLAGS, f"flag{i}", value)
    with pytest.raises(SnapshotError) as raised:
        await take_snapshot(
            plane, SystemClock(), SigningKey.generate(), actor="a", reason="r", listen_s=0.05
        )
    said = str(raised.value)
    assert "\n" not in said
    assert said.startswith("snapshot: the evidence is ")
    assert f"over the {BOUND} byte bound `incident verify` reads" in said
    assert "flags/state_and_history.json" in said  # the biggest member is named
    await plane.close()


async def test_an_automatic_snapshot_too_big_says_the_kill_was_sent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The snapshot `kill` takes by itself, refused for its size, says first that the kill
    went out (a bare "snapshot: ..." after a kill read as the kill failing)."""
    monkeypatch.setattr(snapshot, "SNAPSHOT_MAX_BYTES", BOUND)
    plane = await _plane_with_records(5, 10)
    for i in range(40):
        await plane.put_record(Bucket.FLAGS, f"flag{i}", json.dumps({"pad": "y" * 2000}).encode())
    entry = StateEntry(Scope.FLEET, "fleet", TradingState.HALTED, "runaway", "alice", "c" * 32, 1)
    result = CommandResult(entry, [], {}, [], 1, sent=True)
    _, key_path, _ = write_key_pair(tmp_path, "alice")
    out = tmp_path / "snapshots"
    with pytest.raises(SnapshotError) as raised:
        await snapshot_after_kill(plane, result, key_path, out)
    said = str(raised.value)
    assert said.startswith(
        f"the kill was sent (command {'c' * 12}); its automatic evidence snapshot was NOT "
        "taken: snapshot: the evidence is "
    ), said
    assert said.endswith("; take the evidence now: knightwatch incident snapshot")
    assert not out.exists() or not any(out.iterdir())
    await plane.close()
