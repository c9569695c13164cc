"""The node's side of admission: measure what runs here, sign it, get a verdict.

The measurement is recomputed from the node's own bytes at every attestation
(artifact files, config, and the flag table compiled into this process), never
from a version string, so a server that missed a deploy, or whose files were
changed after admission, attests exactly that and is refused or fenced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from knightwatch.clock import Clock
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.control.plane.wire import (
    SUBJECT_ATTEST,
    SUBJECT_CHALLENGE,
    VERDICT_DECODER,
    Verdict,
)
from knightwatch.release.attestation import attest, sign_attestation
from knightwatch.release.contents import ReleaseContents, contents_from_directory
from knightwatch.release.dsse import encode_envelope
from knightwatch.release.flagschema import FlagSchema
from knightwatch.release.keys import SigningKey

Measure = Callable[[], ReleaseContents]


def directory_measure(artifacts: Path, config: Path, flag_table: FlagSchema) -> Measure:
    """Hash the artifact directory and config anew on every call; the flag table is fixed."""
    return lambda: contents_from_directory(artifacts, config, flag_table)


class Attestor:
    def __init__(self, node_id: str, key: SigningKey, measure: Measure, *, clock: Clock) -> None:
        self.node_id = node_id
        self.key = key
        self.measure = measure
        self.clock = clock

    async def attest(self, plane: ControlPlane, timeout_s: float) -> Verdict:
        """Challenge, measure (off the loop), sign, submit; ControlPlaneUnavailable if no answer."""
        nonce = (await plane.request(SUBJECT_CHALLENGE, self.node_id.encode(), timeout_s)).decode()
        contents = await asyncio.to_thread(self.measure)
        envelope = sign_attestation(
            attest(self.node_id, nonce, contents, clock=self.clock), self.key
        )
        reply = await plane.request(SUBJECT_ATTEST, encode_envelope(envelope), timeout_s)
        return VERDICT_DECODER.decode(reply)
