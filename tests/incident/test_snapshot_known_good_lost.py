"""The automatic snapshot after a kill, when the known-good release cannot be recorded.

`kill` records the known-good release, then takes the evidence. A known-good write that
failed (here its bucket is gone) raised before the snapshot was taken: the evidence of
the incident was lost with a record that only labels it. Each part is now taken whatever
became of the other, and the error names both: the archive written, the record not.
Real nats-server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from knightwatch.cli.incident import snapshot_after_kill
from knightwatch.control.plane.nats import record_bucket
from knightwatch.control.plane.protocol import Bucket
from knightwatch.incident.snapshot import SnapshotError, verify_snapshot
from knightwatch.release.keys import write_key_pair
from knightwatch.state import Scope

from .fixtures import site_and_admin


async def test_a_known_good_write_that_failed_still_leaves_the_evidence(tmp_path: Path) -> None:
    _, key_path, _ = write_key_pair(tmp_path, "alice")
    out = tmp_path / "snapshots"
    async with site_and_admin(tmp_path) as (site, admin, alice):
        ks = site.killswitch(alice, "alice")
        result = await ks.kill(Scope.FLEET, "", "runaway", timeout_s=0.2)
        assert result.revision is not None, result
        await admin._require_js().delete_stream(f"KV_{record_bucket(Bucket.INCIDENT)}")
        with pytest.raises(SnapshotError) as caught:
            await snapshot_after_kill(alice, result, key_path, out)
    said = str(caught.value)
    assert "\n" not in said
    assert said.startswith(f"the kill was sent (command {result.entry.command_id[:12]})"), said
    assert "its known-good release was NOT recorded" in said, said
    (written,) = out.glob("snapshot-*.tar")
    assert f"its evidence snapshot was written to {written}" in said, said
    check = verify_snapshot(written.read_bytes(), source=str(written))
    assert check.ok, check.problems
    # the lost bucket is named in the evidence, the rest of it sealed
    assert any(g.startswith("incident/records.json") for g in check.incomplete), check.incomplete
