"""A bucket or stream deleted on the server (an operator's mistake, a rebuilt store) is an
unavailable control plane to every reader, named, never a raw client error: the
snapshot, the preflight and the resume catch `ControlPlaneUnavailable` and state the
gap or refuse, where nats-py's own `NotFoundError` went through them as a traceback."""

from __future__ import annotations

import pytest

from knightwatch.control.plane.nats import AUDIT_STREAM, connect_as
from knightwatch.control.plane.protocol import Bucket, ControlPlaneUnavailable
from knightwatch.control.site import Site


async def delete_stream(site: Site, stream: str) -> None:
    """As the provisioner (the only identity allowed to): the stream is gone."""
    nc = await connect_as(site.server.provisioner, [site.server.url])
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


async def test_a_deleted_bucket_is_an_unavailable_plane_naming_it(site: Site) -> None:
    alice = await site.connect("alice")
    try:
        assert await alice.records(Bucket.FLAGS) == {}
        await delete_stream(site, "KV_kw_flags")
        with pytest.raises(ControlPlaneUnavailable, match="kw_flags not found"):
            await alice.records(Bucket.FLAGS)
    finally:
        await alice.close()


async def test_a_deleted_audit_stream_is_an_unavailable_plane_naming_it(site: Site) -> None:
    alice = await site.connect("alice")
    try:
        await alice.audit()
        await delete_stream(site, AUDIT_STREAM)
        with pytest.raises(ControlPlaneUnavailable, match=f"{AUDIT_STREAM} not found"):
            await alice.audit()
    finally:
        await alice.close()
