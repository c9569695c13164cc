"""An applied record written before a stage's nodes were dropped from it still decodes.

A node's memory of a rollout stage (`RolloutStep`) once listed the nodes the stage added;
they are read from the stage's proof in the state now, and the field is gone. A record an
older node wrote (with them) must still be read at every node's start: each stage's
revision, proof digest and times kept, the listed nodes ignored; nothing writes them again.
"""

from __future__ import annotations

import msgspec

from knightwatch.control.node.flags import APPLIED_DECODER, ENCODER, RolloutSeen, RolloutStep

OLDER = {
    "flag_id": "risk.quote_wide",
    "node": "n1",
    "revision": 2,
    "at_ns": 9,
    "proof_revision": 2,
    "rollouts": [
        {
            "approval": "a" * 64,
            "binding": "quote-1",
            "approved_ns": 5,
            "value": True,
            "stages": {
                "0": {"revision": 1, "proof": "b" * 64, "nodes": ["n0"], "issued_ns": 6},
                "1": {
                    "revision": 2,
                    "proof": "c" * 64,
                    "nodes": ["n1", "n2"],
                    "issued_ns": 7,
                    "heard_ns": 8,
                },
            },
            "ended": "",
        }
    ],
}


def test_an_older_record_listing_each_stages_nodes_is_read_and_written_without_them() -> None:
    applied = APPLIED_DECODER.decode(msgspec.json.encode(OLDER))
    (seen,) = applied.rollouts
    assert seen == RolloutSeen(
        "a" * 64,
        "quote-1",
        5,
        True,
        {0: RolloutStep(1, "b" * 64, 6), 1: RolloutStep(2, "c" * 64, 7, 8)},
    )
    assert b'"nodes"' not in ENCODER.encode(applied)  # nothing writes them again
