"""DSSE envelopes (the in-toto/Sigstore signing wrapper) and in-toto Statement v1.

Signatures cover PAE(payloadType, payload), not the payload alone, so a
signature over a release manifest can never be replayed as a signature over a
node attestation or anything else with a different type. The envelope is the
same one in-toto, SLSA and cosign use, so other tools can add signatures to it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

import msgspec

from knightwatch.errors import quoted
from knightwatch.inputs import UNDECODABLE, InputFileError, check_json_depth
from knightwatch.release.canonical import is_sha256_hex
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.keys import SigningKey, VerifyKey

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


class Signature(msgspec.Struct, frozen=True):
    keyid: str
    sig: str


class Envelope(msgspec.Struct, frozen=True, rename={"payload_type": "payloadType"}):
    payload: str
    payload_type: str
    signatures: tuple[Signature, ...] = ()

    def payload_bytes(self) -> bytes:
        try:
            return base64.b64decode(self.payload, validate=True)
        except ValueError as exc:  # binascii.Error, or a character outside ASCII
            raise ReleaseInputError(f"envelope payload: not base64: {exc}") from None


class SignatureCheck(msgspec.Struct, frozen=True):
    """Which key ids in an envelope verified, which failed, and which we do not trust."""

    valid: frozenset[str]
    invalid: tuple[str, ...]
    untrusted: tuple[str, ...]


def new_envelope(payload_type: str, payload: bytes) -> Envelope:
    return Envelope(base64.b64encode(payload).decode("ascii"), payload_type)


def add_signature(envelope: Envelope, key: SigningKey) -> Envelope:
    """Sign; a key that already signed is replaced, never counted twice."""
    raw = key.sign(pae(envelope.payload_type, envelope.payload_bytes()))
    others = tuple(s for s in envelope.signatures if s.keyid != key.key_id)
    mine = Signature(key.key_id, base64.b64encode(raw).decode("ascii"))
    return msgspec.structs.replace(envelope, signatures=(*others, mine))


def check_signatures(envelope: Envelope, trusted: Mapping[str, VerifyKey]) -> SignatureCheck:
    message = pae(envelope.payload_type, envelope.payload_bytes())
    valid: set[str] = set()
    invalid: list[str] = []
    untrusted: list[str] = []
    for signature in envelope.signatures:
        key = trusted.get(signature.keyid)
        if key is None:
            untrusted.append(signature.keyid)
            continue
        try:
            raw = base64.b64decode(signature.sig, validate=True)
        except ValueError:  # binascii.Error, or a character outside ASCII: not a signature
            invalid.append(signature.keyid)
            continue
        if key.verify(raw, message):
            valid.add(signature.keyid)
        else:
            invalid.append(signature.keyid)
    return SignatureCheck(frozenset(valid), tuple(invalid), tuple(untrusted))


_ENVELOPE_DECODER = msgspec.json.Decoder(Envelope)
_PRETTY = msgspec.json.Encoder(order="sorted")


def encode_envelope(envelope: Envelope) -> bytes:
    return msgspec.json.format(_PRETTY.encode(envelope), indent=2) + b"\n"


def decode_envelope(data: bytes, *, source: str) -> Envelope:
    try:
        check_json_depth(data, source)
        return _ENVELOPE_DECODER.decode(data)
    except InputFileError as exc:
        raise ReleaseInputError(str(exc)) from None
    except (*UNDECODABLE, UnicodeDecodeError) as exc:
        raise ReleaseInputError(f"{source}: not a DSSE envelope: {exc}") from None


class Subject(msgspec.Struct, frozen=True):
    name: str
    digest: dict[str, str]

    def sha256(self) -> str:
        value = self.digest.get("sha256", "")
        if not is_sha256_hex(value):
            raise ReleaseInputError(
                f"statement subject {quoted(self.name)}: digest.sha256 must be 64 lower-case "
                "hex digits"
            )
        return value


_STATEMENT_NAMES = {"type": "_type", "predicate_type": "predicateType"}


class Statement(msgspec.Struct, frozen=True, rename=_STATEMENT_NAMES):
    """in-toto Statement v1; the predicate stays raw until its type is known."""

    subject: tuple[Subject, ...]
    predicate_type: str
    predicate: msgspec.Raw
    type: str = STATEMENT_TYPE
