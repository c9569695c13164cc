"""A node's applied record over its bucket's value bound is refused as such, and a fleet
provisioned with the earlier, smaller bound gets the current one at its next provisioning
start. Before, the refusal read "control plane did not answer" (an outage to look for),
and raising the bound changed only new fleets. Real nats-server, authorization on."""

from __future__ import annotations

import dataclasses

import pytest

from knightwatch.control.plane.nats import (
    APPLIED_BUCKET,
    APPLIED_MAX_VALUE,
    NatsControlPlane,
    connect_as,
)
from knightwatch.control.plane.protocol import Bucket, ControlPlaneUnavailable
from knightwatch.control.site import Site


async def test_a_record_over_the_value_bound_is_refused_naming_the_bound(site: Site) -> None:
    n1 = await site.connect("n1")
    try:
        with pytest.raises(ControlPlaneUnavailable) as refused:
            too_large = b"x" * (APPLIED_MAX_VALUE + 1)
            await n1.put_record(Bucket.FLAGS, "applied.n1.some.flag", too_large)
        assert "larger than its bucket takes" in str(refused.value), refused.value
        assert "APPLIED_MAX_VALUE" in str(refused.value)
        assert "did not answer" not in str(refused.value)
    finally:
        await n1.close()


async def test_a_bucket_provisioned_with_a_smaller_value_bound_gets_the_current_one(
    site: Site,
) -> None:
    nc = await connect_as(site.server.provisioner, [site.server.url])
    try:
        js = nc.jetstream()
        stream = f"KV_{APPLIED_BUCKET}"
        config = (await js.stream_info(stream)).config
        await js.update_stream(dataclasses.replace(config, max_msg_size=1024))  # smaller, as before
        plane = NatsControlPlane(
            [site.server.url], name="provisioner", signer=site.server.provisioner, provision=True
        )
        await plane.connect()
        await plane.close()
        assert (await js.stream_info(stream)).config.max_msg_size == APPLIED_MAX_VALUE
    finally:
        await nc.close()
