"""Admission on the wire: the verdict a node gets, and the fleet's target release record.

The release layer judges (`knightwatch.release.admission.Admitter`); these are
what the control plane stores and sends about that judgement, so `status`, the
flag gate and the node itself all read the same durable verdict.
"""

from __future__ import annotations

import msgspec

from knightwatch.release.dsse import Envelope
from knightwatch.release.reasons import AdmissionReason, Finding

SUBJECT_CHALLENGE = "admission.challenge"
"""Request: node id; reply: a single-use nonce."""
SUBJECT_ATTEST = "admission.attest"
"""Request: a signed attestation envelope; reply: a `Verdict`."""
SUBJECT_TARGET = "admission.target"
"""Request: a `TargetRequest`; reply: a `TargetReply`."""
TARGET_KEY = "target"

UNATTRIBUTABLE = frozenset(
    {
        AdmissionReason.NODE_UNKNOWN,
        AdmissionReason.ATTESTATION_MALFORMED,
        AdmissionReason.ATTESTATION_SIGNATURE_INVALID,
        AdmissionReason.ATTESTATION_REPLAYED,
        AdmissionReason.ATTESTATION_STALE,
        AdmissionReason.CHALLENGE_UNKNOWN,
    }
)
"""Reasons that say nothing about the node named in the attestation (anyone can send one)."""


class Verdict(msgspec.Struct, frozen=True):
    """The admission service's judgement of one node, stored under the node's id.

    `flag_schema` is the admitted release's schema from the signed manifest,
    empty unless admitted: the flag gate trusts this, never the node's say-so.
    """

    node: str
    admitted: bool
    status: str
    release_id: str
    manifest_digest: str
    findings: tuple[Finding, ...]
    at_ns: int
    flag_schema: dict[str, str] = {}

    @property
    def detail(self) -> str:
        if self.admitted:
            return f"admitted on release {self.release_id}"
        return "; ".join(str(f) for f in self.findings) or self.status

    @property
    def attributable(self) -> bool:
        return not any(f.reason in UNATTRIBUTABLE for f in self.findings)


class TargetRecord(msgspec.Struct, frozen=True):
    """The fleet's target release, who set it and why (a rollback is just a new one)."""

    release_id: str
    envelope: Envelope
    actor: str
    reason: str
    at_ns: int


class TargetRequest(msgspec.Struct, frozen=True):
    envelope: Envelope
    actor: str
    reason: str


class TargetReply(msgspec.Struct, frozen=True):
    accepted: bool
    release_id: str
    findings: tuple[Finding, ...]
    revision: int = 0


ENCODER = msgspec.json.Encoder()
VERDICT_DECODER = msgspec.json.Decoder(Verdict)
TARGET_DECODER = msgspec.json.Decoder(TargetRecord)
TARGET_REQUEST_DECODER = msgspec.json.Decoder(TargetRequest)
TARGET_REPLY_DECODER = msgspec.json.Decoder(TargetReply)
