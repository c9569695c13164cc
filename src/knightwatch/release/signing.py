"""Release signatures: who must sign, and whether enough distinct people did.

The trust policy is a small TOML file pinned on the control plane (never
shipped next to the artifact it judges). It lists trusted keys, each owned by a
named signer, and a threshold of DISTINCT signers: two signatures by the same
key, or by two keys of the same signer (a rotated CI key), count once. That is
the "second technician" Knight did not have.

Example::

    threshold = 2

    [[keys]]
    signer = "ci"
    id = "<sha256 of the raw public key>"
    public_key = "<base64 raw Ed25519 public key>"

    [[keys]]
    signer = "release-manager"
    id = "..."
    public_key = "..."
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from knightwatch.errors import quoted
from knightwatch.inputs import NAME_RULE, InputFileError, is_name, load_toml
from knightwatch.release.canonical import sha256_hex
from knightwatch.release.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    Envelope,
    add_signature,
    check_signatures,
    new_envelope,
)
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.keys import SigningKey, VerifyKey
from knightwatch.release.manifest import Manifest
from knightwatch.release.reasons import AdmissionReason, Finding


class TrustedKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    signer: str
    id: str
    public_key: str


class TrustPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    threshold: int
    keys: tuple[TrustedKey, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        folded: dict[str, str] = {}
        for index, trusted in enumerate(self.keys):
            where = f"keys[{index}]"
            if not is_name(trusted.signer):
                # the rule `keys new` applies: a padded or odd spelling would count as a
                # second signer and let one person meet a threshold of two alone
                raise ReleaseInputError(f"{where}.signer: {quoted(trusted.signer)}: {NAME_RULE}")
            other = folded.setdefault(trusted.signer.lower(), trusted.signer)
            if other != trusted.signer:
                raise ReleaseInputError(
                    f"{where}.signer: {quoted(trusted.signer)} differs from signer "
                    f"{quoted(other)} only by case; one signer must have one name"
                )
            key = VerifyKey.from_base64(trusted.public_key, field=f"{where}.public_key")
            if key.key_id != trusted.id:
                raise ReleaseInputError(
                    f"{where}.id: {quoted(trusted.id)} is not the id of its public_key "
                    f"(expected {key.key_id})"
                )
            if trusted.id in seen:
                raise ReleaseInputError(f"{where}.id: key {trusted.id} listed twice")
            seen.add(trusted.id)
        signers = {k.signer for k in self.keys}
        if not 1 <= self.threshold <= len(signers):
            raise ReleaseInputError(
                f"threshold: {self.threshold} must be between 1 and the number of distinct "
                f"signers ({len(signers)})"
            )

    def verify_keys(self) -> dict[str, VerifyKey]:
        return {k.id: VerifyKey.from_base64(k.public_key, field=k.id) for k in self.keys}

    def signer_of(self, key_id: str) -> str:
        return next(k.signer for k in self.keys if k.id == key_id)

    @classmethod
    def of(cls, threshold: int, keys: dict[str, VerifyKey]) -> TrustPolicy:
        """Build from `{signer: public key}`, as tests and the replay do in-process."""
        return cls(
            threshold,
            tuple(TrustedKey(name, key.key_id, key.to_base64()) for name, key in keys.items()),
        )


def load_trust_policy(path: Path) -> TrustPolicy:
    try:
        data = load_toml(path, "trust policy")
    except InputFileError as exc:
        raise ReleaseInputError(str(exc)) from None
    try:
        return msgspec.convert(data, TrustPolicy)
    except msgspec.ValidationError as exc:
        raise ReleaseInputError(f"trust policy {path}: {exc}") from exc


def release_envelope(manifest: Manifest) -> Envelope:
    return new_envelope(IN_TOTO_PAYLOAD_TYPE, manifest.statement_bytes())


def sign_release(envelope: Envelope, key: SigningKey, *, source: str = "envelope") -> Envelope:
    """Add one signature; refuses an envelope that does not hold a release manifest.

    `source` names the envelope (its file) in the refusal: `release sign` said which rule
    the signed payload broke but not which envelope held it.
    """
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise ReleaseInputError(
            f"{source} payloadType: {quoted(envelope.payload_type)} is not {IN_TOTO_PAYLOAD_TYPE}"
        )
    Manifest.from_statement_bytes(envelope.payload_bytes(), source=f"{source} payload")
    return add_signature(envelope, key)


class ReleaseSigners:
    """A release pipeline's signers and the trust policy that requires all of them.

    The one way a signed release is built, whether by the local drill, the
    replay or a test: each named key signs the manifest, and the policy's
    threshold is the number of distinct signers, so no one of them alone can
    publish a release.
    """

    def __init__(self, keys: dict[str, SigningKey]) -> None:
        if len(keys) < 1:
            raise ReleaseInputError("signers: at least one signer is required")
        self.keys = dict(keys)
        self.trust = TrustPolicy.of(len(keys), {n: k.public for n, k in keys.items()})

    @classmethod
    def generate(cls, names: tuple[str, ...] = ("ci", "release-manager")) -> ReleaseSigners:
        """Fresh Ed25519 keys for each name (a local or simulated pipeline)."""
        return cls({name: SigningKey.generate() for name in names})

    def sign(self, manifest: Manifest) -> Envelope:
        """The manifest in a DSSE envelope carrying every signer's signature."""
        envelope = release_envelope(manifest)
        for key in self.keys.values():
            envelope = sign_release(envelope, key)
        return envelope


class ReleaseVerification(msgspec.Struct, frozen=True):
    """The manifest is set only when the envelope passed; findings say why not."""

    manifest: Manifest | None
    manifest_digest: str
    signers: tuple[str, ...]
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return self.manifest is not None


def verify_release(envelope: Envelope, policy: TrustPolicy) -> ReleaseVerification:
    """Threshold of distinct trusted signers over an untampered release statement.

    Fails closed: an invalid signature under a trusted key id refuses the
    envelope even when the threshold is met otherwise, because it means the
    payload or a signature was altered after signing. Signatures by keys the
    policy does not know are ignored (other tools may add their own).
    """
    findings: list[Finding] = []
    try:
        payload = envelope.payload_bytes()
    except ReleaseInputError as exc:
        malformed = Finding(AdmissionReason.MANIFEST_MALFORMED, "payload", str(exc))
        return ReleaseVerification(None, "", (), (malformed,))
    digest = sha256_hex(payload)
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        findings.append(
            Finding(
                AdmissionReason.MANIFEST_MALFORMED,
                "payloadType",
                f"{quoted(envelope.payload_type)} is not {IN_TOTO_PAYLOAD_TYPE}",
            )
        )
    check = check_signatures(envelope, policy.verify_keys())
    signers = tuple(sorted({policy.signer_of(k) for k in check.valid}))
    if not envelope.signatures:
        findings.append(
            Finding(AdmissionReason.SIGNATURE_MISSING, "envelope", "the release is not signed")
        )
    elif check.invalid and not check.valid:
        findings.append(
            Finding(
                AdmissionReason.MANIFEST_TAMPERED,
                "payload",
                f"no trusted signature verifies over the payload (keys "
                f"{', '.join(sorted(set(check.invalid)))}): the manifest was changed after "
                "signing or every signature is forged",
            )
        )
    else:
        for key_id in sorted(set(check.invalid)):
            findings.append(
                Finding(
                    AdmissionReason.SIGNATURE_INVALID,
                    key_id,
                    f"signature by {policy.signer_of(key_id)} does not verify",
                )
            )
    if not check.valid and not check.invalid:
        findings.extend(
            Finding(
                AdmissionReason.SIGNATURE_UNTRUSTED,
                key_id,
                "signed by a key the trust policy does not list",
            )
            for key_id in sorted(set(check.untrusted))
        )
    if envelope.signatures and len(signers) < policy.threshold:
        findings.append(
            Finding(
                AdmissionReason.BELOW_THRESHOLD,
                "envelope",
                f"{len(signers)} distinct trusted signer(s) ({', '.join(signers) or 'none'}) "
                f"of {policy.threshold} required",
            )
        )
    manifest: Manifest | None = None
    try:
        decoded = Manifest.from_statement_bytes(payload, source="envelope payload")
    except ReleaseInputError as exc:
        findings.append(Finding(AdmissionReason.MANIFEST_MALFORMED, "payload", str(exc)))
    else:
        if not findings:
            manifest = decoded
    return ReleaseVerification(manifest, digest, signers, tuple(findings))
