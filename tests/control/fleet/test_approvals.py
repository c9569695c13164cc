"""An approval co-signs the request the approver named, never a record swapped in under its id.

Operators can write the approvals bucket, so a requester can replace request X
(a resume of A) by a resume of B signed by themselves. The record must be the
request of the id it is stored under, and a pinned approval (the id with the
digest of the resume that was shown) refuses a record whose resume differs
even if it kept the id and the command id.
"""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.clock import SimClock
from knightwatch.control.fleet.approvals import Request, Requests, digest, pinned
from knightwatch.control.fleet.killswitch import KillSwitchError
from knightwatch.control.plane.protocol import Bucket
from knightwatch.state import Scope

from ...identities import KIT, switch
from ..conftest import Backend

MS = 1_000_000


async def test_an_approval_refuses_a_record_swapped_in_under_the_requests_id(
    backend: Backend,
) -> None:
    clock = SimClock(5_000 * MS)
    alice = switch(await backend.plane("alice"), clock, "alice")
    bob = switch(await backend.plane("bob"), clock, "bob")
    await alice.start()
    await bob.start()
    for key in ("A", "B"):
        await alice.kill(Scope.STRATEGY, key, "stop", timeout_s=0.01)
    request = await Requests(alice).create(Scope.STRATEGY, "A", "A is fixed")
    shown = digest(request.entry)
    other = await alice.request_resume(Scope.STRATEGY, "B", "swapped")

    async def store(record: Request) -> None:
        await alice.plane.put_record(Bucket.APPROVALS, request.id, msgspec.json.encode(record))

    # another request's record under X's id: not the request of that id
    await store(Request(request.id, other))
    with pytest.raises(KillSwitchError, match="not this request"):
        await Requests(bob).approve(request.id)
    # B's resume given X's command id (the requester signs any id): the pin refuses it
    forged = msgspec.structs.replace(other, command_id=request.entry.command_id, proof=None)
    await store(Request(request.id, forged.signed(KIT.signer("alice").key)))
    with pytest.raises(KillSwitchError, match=r"digest: request .* no longer carries"):
        await Requests(bob).approve(pinned(request.id, shown))
    # the shown record back: the pinned approval co-signs exactly it
    await store(request)
    result = await Requests(bob).approve(pinned(request.id, shown), timeout_s=0.01)
    assert result.entry.key == "A" and digest(result.entry) == shown
