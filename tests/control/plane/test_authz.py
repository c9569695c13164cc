"""What the generated NATS authorization lets each identity read, against a real nats-server
with authorization on: a node ships its flight-recorder lines to the fleet stream, but
reading them back (every node's orders, strategies and sizes) is for those who watch the
fleet, never for another node."""

from __future__ import annotations

import nats.errors
import pytest
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from knightwatch.control.plane.nats import AUDIT_STREAM, METRICS_STREAM, connect_as
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.plane.wire import AuditEnvelope, NodeMetrics
from knightwatch.control.site import Site

SECRET = b'{"kind":"decision","order":"n1-secret","strategy":"mm","qty":5000}\n'


async def test_a_node_cannot_read_another_nodes_audit_records(nats_server: Site) -> None:
    """n1 ships a decision; n2's credentials get none of it, by message get (what
    `audit()` does) or by a push consumer delivering to its own inbox, while the
    supervisor and a viewer read it. Before, every identity held the JetStream read API on
    every stream, so any node read the whole fleet's decisions."""
    n1 = await nats_server.connect("n1")
    n2 = await nats_server.connect("n2")
    carol = await nats_server.connect("carol")
    supervisor = await nats_server.connect("supervisor")
    spy = await connect_as(nats_server.signer("n2"), [nats_server.url], name="n2-spy")
    try:
        seq = await n1.append_audit(AuditEnvelope("n1", "i1", 1, SECRET))
        await n1.publish_metrics(NodeMetrics("n1", 5, 10, 9, 1, 4, 1000.0, -3.5, True, 0, {}))
        assert [env.lines() for _, env in await carol.audit()] == [[SECRET.strip()]]
        assert [env.lines() for _, env in await supervisor.audit()] == [[SECRET.strip()]]
        with pytest.raises(ControlPlaneUnavailable):
            await n2.audit()
        js = spy.jetstream(timeout=1.0)
        for stream in (AUDIT_STREAM, METRICS_STREAM):
            with pytest.raises(nats.errors.TimeoutError):
                await js.get_msg(stream, seq=seq if stream == AUDIT_STREAM else 1)
        got: list[bytes] = []

        async def on_msg(msg: Msg) -> None:
            got.append(msg.data)

        deliver = spy.new_inbox()
        await spy.subscribe(deliver, cb=on_msg)
        for filtered in ("kw.audit.n1", "kw.audit.>"):
            with pytest.raises(nats.errors.TimeoutError):
                await js.add_consumer(
                    AUDIT_STREAM,
                    ConsumerConfig(
                        deliver_subject=deliver,
                        deliver_policy=DeliverPolicy.ALL,
                        filter_subject=filtered,
                        inactive_threshold=5.0,
                    ),
                )
        info = await carol._require_js().stream_info(AUDIT_STREAM)
        assert info.state.consumer_count == 0  # the server made no consumer for n2
        await spy.flush()
        assert got == []
        # what a node needs of the streams still works: binding to them and shipping
        assert await n2.append_audit(AuditEnvelope("n2", "i2", 1, b"own\n")) > seq
    finally:
        await spy.close()
        for plane in (n1, n2, carol, supervisor):
            await plane.close()
