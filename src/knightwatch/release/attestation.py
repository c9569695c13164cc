"""Attestation: what a node actually runs, signed by the node, bound to a challenge.

The contents are computed by hashing the node's own files, config and
compiled-in flag table (`contents.py`), never copied from a version string it
was told, so a server that missed the deploy attests the old bytes. The node
signs the attestation with its enrolled key and includes the control plane's
nonce and its wall-clock time, so an old attestation cannot be presented again.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from knightwatch.clock import Clock
from knightwatch.errors import quoted
from knightwatch.inputs import UNDECODABLE
from knightwatch.release.canonical import canonical_bytes
from knightwatch.release.contents import ReleaseContents
from knightwatch.release.dsse import Envelope, add_signature, check_signatures, new_envelope
from knightwatch.release.keys import SigningKey, VerifyKey
from knightwatch.release.reasons import AdmissionReason, Finding

ATTESTATION_PAYLOAD_TYPE = "application/vnd.knightwatch.attestation+json"

NodeRoster = Mapping[str, VerifyKey]
"""Enrolled nodes: node id -> the public key the node signs attestations with."""


class Attestation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    node: str
    nonce: str
    at_ns: int
    contents: ReleaseContents


def attest(node: str, nonce: str, contents: ReleaseContents, *, clock: Clock) -> Attestation:
    return Attestation(node=node, nonce=nonce, at_ns=clock.time_ns(), contents=contents)


def sign_attestation(attestation: Attestation, key: SigningKey) -> Envelope:
    return add_signature(new_envelope(ATTESTATION_PAYLOAD_TYPE, canonical_bytes(attestation)), key)


_DECODER = msgspec.json.Decoder(Attestation)


def open_attestation(
    envelope: Envelope, roster: NodeRoster
) -> tuple[Attestation | None, tuple[Finding, ...]]:
    """The attestation if it is well formed and signed by the key enrolled for its node."""
    if envelope.payload_type != ATTESTATION_PAYLOAD_TYPE:
        return None, (
            Finding(
                AdmissionReason.ATTESTATION_MALFORMED,
                "payloadType",
                f"attestation envelope: {quoted(envelope.payload_type)} is not "
                f"{ATTESTATION_PAYLOAD_TYPE}",
            ),
        )
    try:
        attestation = _DECODER.decode(envelope.payload_bytes())
    except (*UNDECODABLE, ValueError) as exc:
        return None, (Finding(AdmissionReason.ATTESTATION_MALFORMED, "payload", str(exc)),)
    key = roster.get(attestation.node)
    if key is None:
        return None, (
            Finding(AdmissionReason.NODE_UNKNOWN, attestation.node, "node is not enrolled"),
        )
    check = check_signatures(envelope, {key.key_id: key})
    if key.key_id not in check.valid or check.invalid:
        return None, (
            Finding(
                AdmissionReason.ATTESTATION_SIGNATURE_INVALID,
                attestation.node,
                f"no valid signature by the node's enrolled key {key.key_id}",
            ),
        )
    return attestation, ()
