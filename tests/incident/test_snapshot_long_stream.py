"""An audit stream longer than the snapshot reads: its tails are the records at the kill.

The snapshot reads at most `_AUDIT_CAP` audit messages. It read them from the stream's
first: on a stream longer than that (a day of a busy fleet) every tail and chain head
it sealed was hours before the kill, and the records nearest it were "not in this
snapshot". It reads the last ones now, and says which it left out.
"""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.wire import AuditEnvelope
from knightwatch.incident import snapshot
from knightwatch.incident.snapshot import take_snapshot, verify_snapshot
from knightwatch.release.keys import SigningKey


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        out = {}
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            assert handle is not None
            out[info.name] = handle.read()
        return out


@pytest.mark.parametrize("messages", [1, 49, 50, 51, 130, 1000])
async def test_the_tails_are_the_last_records_of_a_stream_longer_than_the_cap(
    monkeypatch: pytest.MonkeyPatch, messages: int
) -> None:
    monkeypatch.setattr(snapshot, "_AUDIT_CAP", 50)  # 500,000 in service
    monkeypatch.setattr(snapshot, "_AUDIT_PAGE", 10)
    plane = MemoryControlPlane(MemoryFabric())
    await plane.connect()
    for i in range(1, messages + 1):
        node = "n1" if i % 2 else "n2"
        line = json.dumps({"seq": i, "hash": f"h{i}"}).encode()
        await plane.append_audit(AuditEnvelope(node, f"i-{node}", i, line + b"\n"))
    clock = SystemClock()
    data = await take_snapshot(
        plane, clock, SigningKey.generate(), actor="a", reason="r", last_records=10, listen_s=0.05
    )
    check = verify_snapshot(data, source="s.tar")
    assert check.ok, check.problems
    files = _members(data)
    heads = json.loads(files["recorder/heads.json"])
    last = {"n1": messages if messages % 2 else messages - 1, "n2": messages - messages % 2}
    for node, seq in last.items():
        if seq:
            assert heads[node]["seq"] == seq, (node, heads[node])
            tail = files[f"recorder/{node}.jsonl"].splitlines()
            assert json.loads(tail[-1])["seq"] == seq
    skipped = [g for g in check.incomplete if "were not read" in g]
    if messages > 50:
        assert skipped == [
            f"recorder/: the audit stream's first {messages - 50} message(s) were not read "
            "(its last 50 were): records and supervisor actions only there are not in this "
            "snapshot"
        ], check.incomplete
    else:
        assert not skipped, check.incomplete
    assert not any("stopped reading" in g for g in check.incomplete), check.incomplete
    await plane.close()
