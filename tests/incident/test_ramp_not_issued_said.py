"""A resume the ramp did not issue is said to be not issued, also when the store fails.

Before the resume, the ramp stores stage one and, if the resume is not to be issued
(a node did not apply stage one, a halt came first, the request went stale), marks that
record "tripped". A store that did not answer either write raised its own error out of
`apply` ("put: timeout"): the reason was lost, the approver could not tell whether the
scope was trading again, and `status` showed the ramp "ramping". Now the error says the
resume was not issued, why, and what the slot's record still reads.
"""

from __future__ import annotations

import pytest

from knightwatch.control.plane.protocol import Bucket, ControlPlane, ControlPlaneUnavailable
from knightwatch.incident.ramp import RampController, RampError, RampPlan
from knightwatch.state import Scope

from ..identities import BOB
from .fixtures import fleet


@pytest.mark.parametrize("answered", [0, 1])
async def test_a_resume_not_issued_is_said_when_the_store_fails_its_ramp_record(
    monkeypatch: pytest.MonkeyPatch, answered: int
) -> None:
    """`answered`: ramp record writes the store answers (0: not stage one; 1: stage one,
    not the "tripped" after "ghost" never applies it)."""
    f = await fleet("n1")
    try:
        ks = await f.killswitch()
        await ks.kill(Scope.FLEET, "", "runaway", timeout_s=10.0)
        real = ks.plane.put_record
        writes: list[str] = []

        async def put(
            self: ControlPlane,
            bucket: Bucket,
            key: str,
            value: bytes,
            expected_revision: int | None = None,
        ) -> int:
            if bucket is Bucket.RAMP:
                writes.append(key)
                if len(writes) > answered:
                    raise ControlPlaneUnavailable("put: timeout (leader election)")
            return await real(bucket, key, value, expected_revision)

        monkeypatch.setattr(ks.plane, "put_record", put.__get__(ks.plane))
        plan = RampPlan.instant((0.1, 1.0), 30.0, apply_timeout_s=0.5)
        ctl = RampController(ks.plane, ks, f.clock, plan)
        # before: ControlPlaneUnavailable("put: timeout ..."), the reason and the outcome lost
        with pytest.raises(RampError) as err:
            await ctl.resume(
                Scope.FLEET, "", "fixed", approvers=(BOB,), timeout_s=10.0, nodes=["n1", "ghost"]
            )
        said = str(err.value)
        assert "resume not issued" in said and "leader election" in said, said
        if answered:
            assert "stage 1 limits not applied by ghost" in said, said
            assert "it reads 'ramping' at stage 1, though no resume was issued" in said, said
        else:
            assert "stage 1 of fleet 'fleet' was not stored" in said, said
        assert not f.order(f.nodes[0])  # the scope is still halted
    finally:
        await f.stop()
