"""A request record whose resume names no slot hides no other request.

Operators can write the approvals bucket, so a record may carry a resume whose key no
slot can hold (empty, longer than any scope key). Listing the requests read each one's
slot, and such a key raised out of the whole listing: `knightwatch requests` showed one
line naming a key rule and no request at all, the pending ones included. It is listed as
stale, naming why, and approving it is refused in one line naming the request.
"""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.clock import SimClock
from knightwatch.control.fleet.approvals import Request, Requests, RequestStatus
from knightwatch.control.fleet.killswitch import KillSwitchError
from knightwatch.control.plane.protocol import Bucket
from knightwatch.state import Scope

from ...identities import switch
from ..conftest import Backend

MS = 1_000_000


@pytest.mark.parametrize("key", ["", "x" * 200])
async def test_a_record_whose_resume_names_no_slot_hides_no_other_request(
    backend: Backend, key: str
) -> None:
    clock = SimClock(5_000 * MS)
    alice = switch(await backend.plane("alice"), clock, "alice")
    bob = switch(await backend.plane("bob"), clock, "bob")
    await alice.kill(Scope.STRATEGY, "A", "stop", timeout_s=0.01)
    good = await Requests(alice).create(Scope.STRATEGY, "A", "fixed")
    bad_id = "b" * 12
    bad = msgspec.structs.replace(good.entry, key=key, command_id="b" * 32)
    await alice.plane.put_record(
        Bucket.APPROVALS, bad_id, msgspec.json.encode(Request(bad_id, bad))
    )
    listed = {r.id: r for r in await Requests(bob).list()}
    assert listed[good.id].status is RequestStatus.PENDING
    assert listed[bad_id].status is RequestStatus.STALE
    assert "names no slot" in listed[bad_id].detail and "strategy key" in listed[bad_id].detail
    with pytest.raises(KillSwitchError, match=rf"request {bad_id} is stale: .*names no slot"):
        await Requests(bob).approve(bad_id, timeout_s=0.01)
