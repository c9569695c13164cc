"""A refusal or fence reaches its node even when the verdict cannot be stored.

The admission service stores each verdict, then answers the node. A store write that
failed (a JetStream that refuses writes, a deleted bucket) raised out of the responder,
so the node heard nothing: a node that was admitted and now ran other code was told no
fence and kept its lease until its verdict's time to live ran out (15 s by default),
trading the code that missed the deploy. The stop direction is never gated on the
store: the fence is sent, the failed write logged. An admission that cannot be stored
is still not answered (the flag gate and status read the stored verdict).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from knightwatch.control.node.attestor import Attestor, directory_measure
from knightwatch.control.plane.nats import record_bucket
from knightwatch.control.plane.protocol import Bucket, ControlPlaneUnavailable
from knightwatch.control.plane.wire import VERDICT_DECODER
from knightwatch.control.site import Site
from knightwatch.release.reasons import AdmissionReason

from ...identities import set_target, signer
from ...integration.fleet_release import NEW_ROUTER, OLD_ROUTER, REGISTRY, deploy
from ..plane.test_lost_streams import delete_stream
from .test_admission import Stage, stage  # noqa: F401


async def test_a_fence_that_cannot_be_stored_still_reaches_the_node(
    stage: Stage,  # noqa: F811
    nats_server: Site,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert (await set_target(stage.alice, stage.r1, stage.clock)).accepted
    tree = deploy(tmp_path / "n1", NEW_ROUTER)
    measure = directory_measure(tree / "app", tree / "config.toml", REGISTRY.schema())
    n1 = await nats_server.connect("n1")
    attestor = Attestor("n1", signer("n1").key, measure, clock=stage.clock)
    try:
        assert (await attestor.attest(n1, 2.0)).admitted
        stored, _ = await stage.alice.get_record(Bucket.ADMISSION, "n1")
        assert stored is not None and VERDICT_DECODER.decode(stored).admitted

        await delete_stream(nats_server, f"KV_{record_bucket(Bucket.ADMISSION)}")
        (tree / "app" / "smars" / "router.py").write_bytes(OLD_ROUTER)
        with caplog.at_level(logging.ERROR, logger="knightwatch.control.fleet.admission"):
            verdict = await attestor.attest(n1, 2.0)
        assert not verdict.admitted and verdict.status == "fenced", verdict
        reasons = {f.reason for f in verdict.findings}
        assert {AdmissionReason.FILE_MISMATCH, AdmissionReason.NODE_DRIFTED} <= reasons
        assert "ADMISSION_NOT_STORED" in caplog.text and "n1" in caplog.text

        # an admission nobody can store is not answered: the node keeps what it had
        (tree / "app" / "smars" / "router.py").write_bytes(NEW_ROUTER)
        with pytest.raises(ControlPlaneUnavailable):
            await attestor.attest(n1, 1.0)
    finally:
        await n1.close()
