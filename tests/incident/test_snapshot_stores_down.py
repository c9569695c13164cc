"""An evidence snapshot whose kill-state or membership store cannot be read.

The snapshot's promise: a store that could not be read is named in `incomplete.json`,
never the whole evidence lost. Only the record buckets and the audit stream kept it;
the kill-state and membership stores, read first, lost everything with them.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from knightwatch.clock import SystemClock
from knightwatch.control.plane.nats import MEMBERS_BUCKET, STATE_BUCKET
from knightwatch.incident.snapshot import take_snapshot, verify_snapshot
from knightwatch.release.keys import SigningKey
from knightwatch.state import Scope

from .fixtures import site_and_admin


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        out = {}
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            assert handle is not None
            out[info.name] = handle.read()
        return out


async def test_kill_state_and_membership_stores_that_cannot_be_read_are_named(
    tmp_path: Path,
) -> None:
    async with site_and_admin(tmp_path) as (site, admin, alice):
        await site.killswitch(alice, "alice").kill(Scope.FLEET, "", "runaway", timeout_s=0.2)
        js = admin._require_js()
        await js.delete_stream(f"KV_{STATE_BUCKET}")
        await js.delete_stream(f"KV_{MEMBERS_BUCKET}")
        data = await take_snapshot(
            alice, SystemClock(), SigningKey.generate(), actor="alice", reason="t", listen_s=0.1
        )
        check = verify_snapshot(data, source="s.tar")
        assert check.ok, check.problems
        assert any(
            g.startswith("kill/entries.json: the kill-state store") for g in check.incomplete
        )
        assert any(
            g.startswith("nodes/members.json: the membership store") for g in check.incomplete
        ), check.incomplete
        files = _members(data)
        assert "unavailable" in json.loads(files["kill/entries.json"])
        assert "unavailable" in json.loads(files["kill/confirmations.json"])
        # the rest of the evidence is still sealed
        assert "flags/state_and_history.json" in files and "recorder/heads.json" in files
