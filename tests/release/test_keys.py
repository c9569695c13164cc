from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.keys import (
    SigningKey,
    VerifyKey,
    load_signing_key,
    load_verify_key,
    write_key_pair,
)


def test_key_pair_files_round_trip_with_private_key_0600(tmp_path: Path) -> None:
    key, private, public = write_key_pair(tmp_path, "ci")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    loaded = load_signing_key(private)
    assert loaded.key_id == key.key_id == load_verify_key(public).key_id
    assert load_verify_key(public).verify(loaded.sign(b"release"), b"release")


def test_key_id_is_sha256_of_raw_public_key_and_stable() -> None:
    key = SigningKey.generate()
    again = VerifyKey.from_base64(key.public.to_base64(), field="k")
    assert again.key_id == key.key_id
    assert len(key.key_id) == 64
    assert key.key_id != SigningKey.generate().key_id


def test_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    write_key_pair(tmp_path, "rm")
    with pytest.raises(ReleaseInputError, match="already exists"):
        write_key_pair(tmp_path, "rm")


def test_world_readable_private_key_is_refused(tmp_path: Path) -> None:
    _, private, _ = write_key_pair(tmp_path, "ci")
    private.chmod(0o644)
    with pytest.raises(ReleaseInputError, match="chmod 600"):
        load_signing_key(private)


def test_a_public_key_given_as_the_private_key_is_named_before_its_mode(tmp_path: Path) -> None:
    """A .pub is 0644 by design: "run chmod 600" would send its owner the wrong way."""
    _, _, public = write_key_pair(tmp_path, "ci")
    with pytest.raises(ReleaseInputError, match=r"ci\.pub: the file holds a public key") as err:
        load_signing_key(public)
    assert "chmod" not in str(err.value)
    cert = tmp_path / "cert.pem"
    cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    with pytest.raises(ReleaseInputError, match="a PEM 'CERTIFICATE' block, not a private key"):
        load_signing_key(cert)


def test_key_directory_that_is_a_file_is_named(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ReleaseInputError, match=r"--dir .*afile: must be a directory"):
        write_key_pair(afile, "ci")
    assert afile.read_text() == "x"


def test_garbage_key_files_give_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"not a key")
    bad.chmod(0o600)
    with pytest.raises(ReleaseInputError, match=r"private key .*bad\.key: not an unencrypted"):
        load_signing_key(bad)
    with pytest.raises(ReleaseInputError, match=r"public key .*: not a PEM public key"):
        load_verify_key(bad)
    with pytest.raises(ReleaseInputError, match=r"missing\.pub: no such file"):
        load_verify_key(tmp_path / "missing.pub")
    with pytest.raises(ReleaseInputError, match=r"keys\.0\.public_key"):
        VerifyKey.from_base64("%%%", field="keys.0.public_key")


def test_key_name_must_be_a_plain_file_name(tmp_path: Path) -> None:
    with pytest.raises(ReleaseInputError, match="plain file name"):
        write_key_pair(tmp_path, "../escape")


def test_keys_new_refuses_a_planted_symlink_and_writes_nothing(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "ci.pub").symlink_to(victim)
    with pytest.raises(ReleaseInputError, match=r"ci\.pub: a symlink already exists"):
        write_key_pair(tmp_path, "ci")
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "ci.key").exists()
    (tmp_path / "ci.pub").unlink()
    (tmp_path / "dangling.pub").symlink_to(tmp_path / "nowhere" / "x.pub")
    with pytest.raises(ReleaseInputError, match="symlink"):
        write_key_pair(tmp_path, "dangling")
    assert not (tmp_path / "nowhere").exists()


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300), flip=st.integers(min_value=0))
def test_a_signature_verifies_only_over_its_own_bytes_by_its_own_key(
    data: bytes, flip: int
) -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    sig = key.sign(data)
    assert key.public.verify(sig, data)
    assert not other.public.verify(sig, data)
    bad = bytearray(sig)
    bad[(flip // 8) % len(sig)] ^= 1 << (flip % 8)  # any one bit of the signature
    assert not key.public.verify(bytes(bad), data)
    if data:
        changed = bytearray(data)
        changed[(flip // 8) % len(data)] ^= 1 << (flip % 8)  # any one bit of the data
        assert not key.public.verify(sig, bytes(changed))
    assert not key.public.verify(sig[:-1], data) and not key.public.verify(sig + b"\0", data)
    assert not key.public.verify(b"", data)


def _with_unknown_algorithm(der: bytes) -> bytes:
    """The same DER with Ed25519's OID (1.3.101.112) changed to 1.3.101.99, which no
    library knows."""
    oid = bytes([0x06, 0x03, 0x2B, 0x65, 0x70])
    at = der.index(oid)
    return der[: at + 4] + bytes([0x63]) + der[at + 5 :]


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode("ascii")
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n".encode()


def test_a_key_of_an_unknown_algorithm_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """cryptography raises UnsupportedAlgorithm (not a ValueError) for a key type it does
    not know: `release sign --key`, `keys show` and every --trusted key ended with it."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "odd.key").write_bytes(_pem("PRIVATE KEY", _with_unknown_algorithm(private)))
    (tmp_path / "odd.key").chmod(0o600)
    (tmp_path / "odd.pub").write_bytes(_pem("PUBLIC KEY", _with_unknown_algorithm(public)))
    with pytest.raises(ReleaseInputError, match=r"private key .*odd\.key: not an unencrypted"):
        load_signing_key(tmp_path / "odd.key")
    with pytest.raises(ReleaseInputError, match=r"public key .*odd\.pub: not a PEM public key"):
        load_verify_key(tmp_path / "odd.pub")
