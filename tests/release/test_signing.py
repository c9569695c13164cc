from __future__ import annotations

import base64
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.release.dsse import Envelope, Signature, add_signature, pae
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.keys import SigningKey
from knightwatch.release.manifest import Manifest
from knightwatch.release.reasons import AdmissionReason
from knightwatch.release.signing import (
    TrustedKey,
    TrustPolicy,
    load_trust_policy,
    release_envelope,
    sign_release,
    verify_release,
)

from .release_world import World


def reasons(envelope: Envelope, policy: TrustPolicy) -> set[AdmissionReason]:
    return {f.reason for f in verify_release(envelope, policy).findings}


def unsigned(world: World) -> Envelope:
    return release_envelope(Manifest(release_id="r1", contents=world.contents()))


def test_ci_plus_release_manager_meet_a_two_signer_threshold(world: World) -> None:
    result = verify_release(world.release(), world.policy)
    assert result.ok
    assert result.signers == ("ci", "release-manager")
    assert result.manifest is not None and result.manifest.release_id == "2012.08.01-rlp"
    assert result.manifest_digest == result.manifest.digest()


def test_pae_matches_the_dsse_v1_specification() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_unsigned_release_is_refused_as_signature_missing(world: World) -> None:
    result = verify_release(unsigned(world), world.policy)
    assert not result.ok
    assert {f.reason for f in result.findings} == {AdmissionReason.SIGNATURE_MISSING}


def test_one_signer_is_below_a_threshold_of_two(world: World) -> None:
    envelope = sign_release(unsigned(world), world.ci)
    assert reasons(envelope, world.policy) == {AdmissionReason.BELOW_THRESHOLD}


def test_two_signatures_by_the_same_key_count_once(world: World) -> None:
    once = sign_release(unsigned(world), world.ci)
    assert len(sign_release(once, world.ci).signatures) == 1  # re-signing replaces
    duplicated = msgspec.structs.replace(once, signatures=once.signatures * 2)
    result = verify_release(duplicated, world.policy)
    assert not result.ok
    assert result.signers == ("ci",)
    assert {f.reason for f in result.findings} == {AdmissionReason.BELOW_THRESHOLD}


def test_two_keys_of_one_signer_count_once(world: World) -> None:
    rotated = SigningKey.generate()
    policy = TrustPolicy.of(1, {"ci": world.ci.public})
    policy = TrustPolicy(
        2,
        (
            *policy.keys,
            *TrustPolicy.of(1, {"ci": rotated.public}).keys,
            *TrustPolicy.of(1, {"release-manager": world.rm.public}).keys,
        ),
    )
    both_ci = sign_release(sign_release(unsigned(world), world.ci), rotated)
    assert reasons(both_ci, policy) == {AdmissionReason.BELOW_THRESHOLD}
    assert verify_release(sign_release(both_ci, world.rm), policy).ok


@pytest.mark.parametrize("spelling", ["ci ", " ci", "CI", "Ci", "ci\n"])
def test_one_signers_two_keys_under_another_spelling_are_refused_not_counted_twice(
    world: World, spelling: str
) -> None:
    """A padded or recased name was a second signer: one person's two keys met a
    threshold of two alone."""
    rotated = SigningKey.generate()
    keys = (
        *TrustPolicy.of(1, {"ci": world.ci.public}).keys,
        TrustedKey(spelling, rotated.public.key_id, rotated.public.to_base64()),
    )
    with pytest.raises(ReleaseInputError, match=r"keys\[1\]\.signer"):
        TrustPolicy(2, keys)


def test_tampered_manifest_is_refused(world: World) -> None:
    envelope = world.release()
    forged = Manifest(
        release_id="2012.08.01-rlp",
        contents=world.contents(files={"smars/router.py": b"power_peg()\n"}),
    )
    tampered = msgspec.structs.replace(
        envelope, payload=base64.b64encode(forged.statement_bytes()).decode()
    )
    result = verify_release(tampered, world.policy)
    assert not result.ok and result.manifest is None
    assert AdmissionReason.MANIFEST_TAMPERED in {f.reason for f in result.findings}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # a duplicated key: a first-wins reader sees r1, a last-wins one r-peg
        (b'"release_id":"r1"', b'"release_id":"r1","release_id":"r-peg"'),
        (b'"_type":"https://in-toto.io/Statement/v1",', b""),  # no _type: not a Statement
        (b'{"_type"', b'{ "_type"'),  # spacing: the digest is no longer the manifest's
    ],
)
def test_a_signed_payload_with_more_than_one_reading_is_refused(
    world: World, old: bytes, new: bytes
) -> None:
    """Signatures that verify over a non-canonical statement (a duplicated key that JSON
    readers resolve differently, a missing _type) do not make it a release."""
    canonical = unsigned(world).payload_bytes()
    assert old in canonical
    payload = canonical.replace(old, new, 1)
    envelope = msgspec.structs.replace(unsigned(world), payload=base64.b64encode(payload).decode())
    signed = sign_release_unchecked(sign_release_unchecked(envelope, world.ci), world.rm)
    result = verify_release(signed, world.policy)
    assert not result.ok
    assert [f.reason for f in result.findings] == [AdmissionReason.MANIFEST_MALFORMED]
    assert "not the canonical release statement" in result.findings[0].detail
    with pytest.raises(ReleaseInputError, match="not the canonical release statement"):
        sign_release(envelope, world.ci)


def sign_release_unchecked(envelope: Envelope, key: SigningKey) -> Envelope:
    return add_signature(envelope, key)


def test_forged_signature_under_a_trusted_key_id_is_refused(world: World) -> None:
    envelope = world.release()
    forged_sig = world.outsider.sign(pae(envelope.payload_type, envelope.payload_bytes()))
    forged = msgspec.structs.replace(
        envelope,
        signatures=(
            envelope.signatures[0],
            Signature(world.rm.key_id, base64.b64encode(forged_sig).decode()),
        ),
    )
    found = verify_release(forged, world.policy).findings
    assert {f.reason for f in found} == {
        AdmissionReason.SIGNATURE_INVALID,
        AdmissionReason.BELOW_THRESHOLD,
    }
    assert any(f.subject == world.rm.key_id for f in found)


def test_extra_invalid_signature_refuses_even_when_threshold_is_met(world: World) -> None:
    envelope = world.release()
    garbage = Signature(world.ci.key_id, base64.b64encode(b"\0" * 64).decode())
    bad = msgspec.structs.replace(envelope, signatures=(*envelope.signatures, garbage))
    assert reasons(bad, world.policy) == {AdmissionReason.SIGNATURE_INVALID}


def test_signatures_by_unknown_keys_do_not_count(world: World) -> None:
    only_outsider = add_signature(unsigned(world), world.outsider)
    assert reasons(only_outsider, world.policy) == {
        AdmissionReason.SIGNATURE_UNTRUSTED,
        AdmissionReason.BELOW_THRESHOLD,
    }
    plus_outsider = add_signature(world.release(), world.outsider)
    assert verify_release(plus_outsider, world.policy).ok


@settings(max_examples=60, deadline=None)
@given(position=st.integers(min_value=0), delta=st.integers(min_value=1, max_value=255))
def test_any_single_byte_change_to_the_payload_fails(
    world: World, position: int, delta: int
) -> None:
    envelope = world.release()
    payload = bytearray(envelope.payload_bytes())
    index = position % len(payload)
    payload[index] = (payload[index] + delta) % 256
    changed = msgspec.structs.replace(envelope, payload=base64.b64encode(payload).decode())
    result = verify_release(changed, world.policy)
    assert not result.ok
    assert AdmissionReason.MANIFEST_TAMPERED in {f.reason for f in result.findings}


def test_signing_something_that_is_not_a_release_is_refused(world: World) -> None:
    other = Envelope(base64.b64encode(b"{}").decode(), "application/json")
    with pytest.raises(ReleaseInputError, match="payloadType"):
        sign_release(other, world.ci)


def write_policy(path: Path, world: World, threshold: int, *, bad_id: bool = False) -> Path:
    lines = [f"threshold = {threshold}"]
    for name, key in (("ci", world.ci), ("release-manager", world.rm)):
        key_id = "0" * 64 if bad_id and name == "ci" else key.key_id
        lines += [
            "[[keys]]",
            f'signer = "{name}"',
            f'id = "{key_id}"',
            f'public_key = "{key.public.to_base64()}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_policy_file_round_trip(tmp_path: Path, world: World) -> None:
    policy = load_trust_policy(write_policy(tmp_path / "p.toml", world, 2))
    assert policy == world.policy


@pytest.mark.parametrize(
    ("threshold", "bad_id", "message"),
    [
        (3, False, r"threshold: 3 must be between 1 and the number of distinct signers \(2\)"),
        (0, False, "threshold: 0"),
        (2, True, r"keys\[0\]\.id: .* is not the id of its public_key"),
    ],
)
def test_bad_policy_files_name_the_field(
    tmp_path: Path, world: World, threshold: int, bad_id: bool, message: str
) -> None:
    path = write_policy(tmp_path / "p.toml", world, threshold, bad_id=bad_id)
    with pytest.raises(ReleaseInputError, match=message):
        load_trust_policy(path)


def test_unparseable_policy_files(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("threshold = \n")
    with pytest.raises(ReleaseInputError, match="not valid TOML"):
        load_trust_policy(path)
    path.write_text('threshold = 1\nkeys = [{signer = "x"}]\n')
    with pytest.raises(ReleaseInputError, match="missing required field"):
        load_trust_policy(path)
