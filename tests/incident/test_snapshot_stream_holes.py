"""Audit messages the stream no longer holds when the snapshot reads them are named.

The audit stream discards its oldest messages at its size limit (`DiscardPolicy.OLD`),
while a snapshot's read of up to 500,000 messages goes on too, and an admin may delete
one. The read skipped every such message without a word: a node's tail read seq 8 then
10, records before the first held were gone, and `incomplete.json` was empty, so the
sealed evidence claimed to hold what it did not. On a real server, purging the first
messages and deleting one stands in for the discard.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from knightwatch.clock import SystemClock
from knightwatch.control.plane.nats import AUDIT_STREAM, NatsControlPlane
from knightwatch.control.plane.wire import AuditEnvelope
from knightwatch.control.site import Site
from knightwatch.incident.snapshot import take_snapshot, verify_snapshot
from knightwatch.release.keys import SigningKey


async def test_messages_the_stream_no_longer_held_are_named(tmp_path: Path) -> None:
    site = Site(tmp_path / "site", ("n1",))
    await site.astart()
    admin = NatsControlPlane(
        site.url, name="provisioner", signer=site.server.provisioner, provision=True
    )
    await admin.connect()
    n1 = await site.connect("n1")
    alice = await site.connect("alice")
    try:
        for i in range(1, 13):
            line = json.dumps({"seq": i, "hash": f"h{i}"}).encode()
            await n1.append_audit(AuditEnvelope("n1", "i-n1", i, line + b"\n"))
        js = admin._require_js()
        await js.purge_stream(AUDIT_STREAM, seq=4)  # the oldest three discarded
        await js.delete_msg(AUDIT_STREAM, 9)
        await js.delete_msg(AUDIT_STREAM, 10)
        data = await take_snapshot(
            alice, SystemClock(), SigningKey.generate(), actor="alice", reason="t", listen_s=0.1
        )
        check = verify_snapshot(data, source="s.tar")
        assert check.ok, check.problems
        holes = [g for g in check.incomplete if "no longer in the stream" in g]
        assert holes == [
            "recorder/: 5 audit message(s) were no longer in the stream when read "
            "(seq 1-3, 9-10): discarded by its size limit or deleted; records and "
            "supervisor actions only there are not in this snapshot"
        ], check.incomplete
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            handle = tar.extractfile("recorder/n1.jsonl")
            assert handle is not None
            seqs = [json.loads(line)["seq"] for line in handle.read().splitlines()]
        assert seqs == [4, 5, 6, 7, 8, 11, 12]
    finally:
        await n1.close()
        await alice.close()
        await admin.close()
        site.stop()


async def test_a_whole_stream_names_no_hole(tmp_path: Path) -> None:
    site = Site(tmp_path / "site", ("n1",))
    await site.astart()
    n1 = await site.connect("n1")
    alice = await site.connect("alice")
    try:
        for i in range(1, 6):
            line = json.dumps({"seq": i, "hash": f"h{i}"}).encode()
            await n1.append_audit(AuditEnvelope("n1", "i-n1", i, line + b"\n"))
        data = await take_snapshot(
            alice, SystemClock(), SigningKey.generate(), actor="alice", reason="t", listen_s=0.1
        )
        check = verify_snapshot(data, source="s.tar")
        assert not [g for g in check.incomplete if "no longer" in g], check.incomplete
    finally:
        await n1.close()
        await alice.close()
        site.stop()
