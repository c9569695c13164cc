"""A stored record nested too deep fails its preflight item or is kept as evidence; no crash.

msgspec raises `RecursionError` (not a `DecodeError`) for JSON nested deeper than it
decodes inside a field a record skips (or anywhere in a generic value). Before, one such
admission verdict, target release or start record made the preflight die with a traceback
instead of failing the item naming the record, and one such record in any bucket, or a
node's last recorder line, made the evidence snapshot die, losing all of it.
"""

from __future__ import annotations

import json

import pytest

from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import TARGET_KEY, AuditEnvelope, starts_key
from knightwatch.incident.preflight import run_preflight
from knightwatch.incident.snapshot import take_snapshot, verify_snapshot
from knightwatch.release.keys import SigningKey
from knightwatch.state import Scope

from .fixtures import fleet
from .test_preflight import CFG, item, killed
from .test_snapshot import members

NEST = b"[" * 5000 + b"]" * 5000


def deep(head: bytes) -> bytes:
    """A record of the right shape with an unknown field nested 5000 deep."""
    return b"{" + head + b', "x": ' + NEST + b"}"


@pytest.mark.parametrize(
    ("bucket", "key", "head", "name", "needle"),
    [
        (Bucket.ADMISSION, "n2", b'"node": "n2"', "release", "n2: admission verdict undecodable"),
        (Bucket.RELEASE, TARGET_KEY, b'"release_id": "r1"', "release", "target release"),
        (Bucket.INCIDENT, starts_key("n2"), b'"node_id": "n2"', "crash_loop", "starts.n2"),
    ],
)
async def test_a_deep_record_fails_its_preflight_item_naming_it(
    bucket: Bucket, key: str, head: bytes, name: str, needle: str
) -> None:
    if bucket is Bucket.RELEASE:  # a fleet without an admission service (it reads it too)
        f = await fleet("n1", "n2")
        plane = await f.plane()
        await (await f.killswitch()).kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    else:
        f, plane = await killed()
    await plane.put_record(bucket, key, deep(head))
    checklist = await run_preflight(plane, Scope.FLEET, "", clock=f.clock, config=CFG)
    ok, detail = item(checklist, name)
    assert not ok and not checklist.passed
    assert needle in detail and ("cannot check the release" in detail or "cannot tell" in detail)
    await f.stop()


async def test_a_deep_record_and_a_deep_last_line_are_kept_as_evidence() -> None:
    f = await fleet("n1")
    plane = await f.plane()
    record = deep(b'"node": "n2"')
    await plane.put_record(Bucket.ADMISSION, "n2", record)
    await plane.append_audit(AuditEnvelope("n1", "i-n1", 1, b'{"seq":1,"hash":"h1"}\n' + NEST))
    await (await f.killswitch()).kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    data = await take_snapshot(plane, f.clock, SigningKey.generate(), actor="a", reason="r",
                               listen_s=0.1)  # fmt: skip
    check = verify_snapshot(data, source="s.tar")
    assert check.ok
    admission = json.loads(members(data)["nodes/admission.json"])
    assert admission["n2"]["value"] == record.decode()  # kept as the text it is
    assert "recorder/n1.jsonl: no chain head: last record undecodable" in check.incomplete
    await f.stop()
