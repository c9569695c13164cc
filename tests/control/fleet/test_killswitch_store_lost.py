"""A kill whose store keeps failing says what the store answered, not only that it was slow.

The store write is retried for `durable_timeout_s` (a leader election is over in that
time); a kill reported when that ran out said only "store did not acknowledge in time",
whatever the store had answered: a deleted state bucket read as a slow election, and the
person waited for one instead of taking the runbook's fallback.
"""

from __future__ import annotations

from knightwatch.control.plane.nats import STATE_BUCKET
from knightwatch.control.site import Site
from knightwatch.state import Scope

from ..plane.test_lost_streams import delete_stream


async def test_a_kill_whose_store_is_gone_names_the_stores_answer(site: Site) -> None:
    alice = await site.connect("alice")
    switch = site.killswitch(alice, "alice")
    try:
        await delete_stream(site, f"KV_{STATE_BUCKET}")
        result = await switch.kill(Scope.FLEET, "", "runaway", timeout_s=0.2, durable_timeout_s=0.5)
        assert not result.ok and result.sent and result.revision is None
        assert "store did not acknowledge in time (last answer: " in result.durable_error
        # the store's own answer: its bucket is gone (not a slow election)
        assert f"bucket {STATE_BUCKET} not found" in result.durable_error, result.durable_error
    finally:
        await alice.close()
