"""A person's or component's identity: a name and an Ed25519 key (the release layer's keys).

The same key signs commands and authenticates to NATS: a NATS user nkey is
only another encoding of an Ed25519 public key (base32 with a type prefix and
a CRC-16), and the server's login challenge is a signature over its nonce, so
no second secret exists to leak or rotate separately.

The key that logs in is the key whose signatures count on commands, approvals and
roster versions, so it signs only a nonce that cannot be one of those: a DSSE
signature covers its pre-authentication encoding ("DSSEv1 <len> <type> <len>
<payload>", spaces always), and a NATS server's nonce is a short run of base64
characters (nats-server sends 15 of base64url). A server that sent the encoding of
a resume, an approval or a roster version as its "nonce" (a rogue server a client
was pointed or gossiped to, or one on the path of a plain connection) would
otherwise get that person's signature on it: one operator with such a server held
an approver's approval of their own resume.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

from knightwatch.release.dsse import Envelope, add_signature
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.keys import SigningKey, VerifyKey, load_signing_key
from knightwatch.trust.roster import TrustError

_NKEY_USER_PREFIX = 20 << 3
"""nkeys' prefix byte for a user public key (base32 'U')."""
DEFAULT_KEY_ENV = "KNIGHTWATCH_KEY"
_NONCE = re.compile(r"[A-Za-z0-9+/=_-]{8,128}")
"""A login nonce this key signs: base64 characters only (nats-server sends 15 of
base64url), which no DSSE pre-authentication encoding is (it always holds spaces)."""


class Signer:
    """Who signs: a roster name and one of its private keys."""

    __slots__ = ("key", "name")

    def __init__(self, name: str, key: SigningKey) -> None:
        self.name = name
        self.key = key

    def sign(self, envelope: Envelope) -> Envelope:
        return add_signature(envelope, self.key)

    @property
    def nkey(self) -> str:
        return nkey_public(self.key.public)

    def sign_nonce(self, nonce: str) -> bytes:
        """The NATS login challenge: base64 of the signature over the server's nonce.
        TrustError for a nonce that is not 8-128 base64 characters: this key's signature
        over anything else could count as a signed command or approval."""
        if _NONCE.fullmatch(nonce) is None:
            shown = repr(nonce)[:48]
            raise TrustError(
                f"NATS login nonce {shown}: not 8-128 base64 characters as a NATS server "
                f"sends; {self.name}'s key does not sign it (it could be a signed command "
                "or approval): is this the fleet's server?"
            )
        return base64.b64encode(self.key.sign(nonce.encode()))

    def __repr__(self) -> str:
        return f"Signer({self.name!r}, key {self.key.key_id[:16]})"


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the checksum nkeys appends (an encoding detail, not cryptography)."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def nkey_public(key: VerifyKey) -> str:
    """The NATS user nkey ("U...") for an Ed25519 public key."""
    raw = bytes([_NKEY_USER_PREFIX]) + base64.b64decode(key.to_base64())
    return base64.b32encode(raw + _crc16(raw).to_bytes(2, "little")).decode().rstrip("=")


def load_signer(path: Path, name: str | None = None) -> Signer:
    """A signer from a private key file (0600); the name defaults to the file's stem."""
    try:
        key = load_signing_key(path)
    except ReleaseInputError as exc:
        raise TrustError(str(exc)) from None
    return Signer(name or path.stem, key)


def default_key_path() -> Path:
    env = os.environ.get(DEFAULT_KEY_ENV)
    return Path(env) if env else Path.home() / ".knightwatch" / "identity.key"
