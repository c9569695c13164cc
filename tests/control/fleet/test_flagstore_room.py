"""A full flags bucket never refuses a change back to the safe default.

The flags bucket is bounded (`RECORD_MAX_BYTES`, discard new): at its bound every write
was refused, a flag's switch-off included, and a refused state write was reported as
"sent but not answered: it may be stored and in force" (exit 3). Now a change away from
the safe default is refused once the bucket is past all but its last share
(`STOP_RESERVE_SHARE`), which stays for the switch-offs; a refusal is `ChangeRefused`:
nothing stored. Real nats-server, a real node applying the flag."""

from __future__ import annotations

import dataclasses

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.activate import activate
from knightwatch.control.fleet.flagstore import ChangeInDoubt, ChangeRefused
from knightwatch.control.node.flags import NodeFlags, decode_state, state_key
from knightwatch.control.plane.nats import STOP_RESERVE_SHARE, NatsControlPlane, connect_as
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.site import Site
from knightwatch.flags.activation import ActivationPolicy, ActivationRequest, SecondApprover

from .test_flagstore import FLAG, REGISTRY
from .test_flagstore import flag_node as flag_node  # the shared fixture

NEVER = ActivationPolicy(SecondApprover.NEVER)
BOUND = 256 << 10
"""The flags bucket's bound shrunk from 64 MiB, so filling it takes a moment."""


async def _fill(site: Site, upto: int) -> None:
    """Bound the flags bucket at `BOUND` and fill it with change records to `upto` bytes
    (as a busy desk's change log, kept for good, or one operator's flood)."""
    nc = await connect_as(site.server.provisioner, [site.server.url])
    alice = await site.connect("alice")
    try:
        js = nc.jetstream()
        config = (await js.stream_info("KV_kw_flags")).config
        await js.update_stream(dataclasses.replace(config, max_bytes=BOUND))
        i = 0
        while (await js.stream_info("KV_kw_flags")).state.bytes < upto:
            await alice.put_record(Bucket.FLAGS, f"change.other.flag.{i}", b"x" * 4096)
            i += 1
    finally:
        await alice.close()
        await nc.close()


def _request(value: bool) -> ActivationRequest:
    reason = "launch" if value else "emergency off"
    return ActivationRequest(FLAG, value, "alice", reason, "t", nodes=("n1",))


async def test_past_the_share_open_to_risk_a_switch_on_is_refused_and_switch_offs_go_in(
    flag_node: tuple[Site, NatsControlPlane, NodeFlags],
) -> None:
    site, alice, flags = flag_node
    clock = SystemClock()
    signer = site.signer("alice")
    result, _, missing = await activate(
        alice, site.store(), REGISTRY, NEVER, _request(True), clock, 10.0, signer=signer
    )
    assert result.accepted and missing == [], result.detail
    await _fill(site, BOUND - BOUND // STOP_RESERVE_SHARE)

    with pytest.raises(ChangeRefused) as refused:
        await activate(
            alice, site.store(), REGISTRY, NEVER, _request(True), clock, 10.0, signer=signer
        )
    line = str(refused.value)
    assert not isinstance(refused.value, ChangeInDoubt)
    assert line.startswith(f"flag {FLAG!r}: not changed, nothing stored: control plane refused")
    assert "bucket kw_flags holds" in line and "kept for changes back to a flag's safe" in line
    stored, _ = await alice.get_record(Bucket.FLAGS, state_key(FLAG))
    assert stored is not None and decode_state(FLAG, stored).revision == 1

    for _ in range(3):  # switch-offs, each confirmed by the node that applies it
        result, _, missing = await activate(
            alice, site.store(), REGISTRY, NEVER, _request(False), clock, 10.0, signer=signer
        )
        assert result.accepted and missing == [], result.detail
        held = flags.get(FLAG)
        assert held is not None and held.value_for("n1") is not True
        assert result.state is not None and held.revision == result.state.revision


async def test_a_state_write_refused_at_the_bound_is_not_reported_in_doubt(
    flag_node: tuple[Site, NatsControlPlane, NodeFlags],
) -> None:
    """A bucket filled to its very bound past the tools (an operator's own NATS client):
    the switch-off's state write is refused. It was `ChangeUncertain`, "it may be stored
    and in force" (exit 3), for a write the store had refused; it is `ChangeRefused`."""
    site, alice, _ = flag_node
    await _fill(site, BOUND - 4096)
    with pytest.raises(ChangeRefused) as refused:
        await activate(
            alice, site.store(), REGISTRY, NEVER, _request(False), SystemClock(), 10.0,
            signer=site.signer("alice"),
        )  # fmt: skip
    assert not isinstance(refused.value, ChangeInDoubt)
    assert str(refused.value).startswith(
        f"flag {FLAG!r}: not changed, nothing stored: control plane refused the write: "
        "the bucket is at its byte bound"
    ), refused.value
    assert (await alice.get_record(Bucket.FLAGS, state_key(FLAG)))[0] is None
