"""Console users: a password and a wrapped private key per roster person, nothing else.

A console user is a person on the signed roster, by the same name; what they may
do comes from the roster (the console never widens it), so this file holds only
credentials. Each user's Ed25519 key (the key their roster entry holds) is
stored encrypted (ChaCha20-Poly1305) under a key derived from their password
with argon2id: the console process holds no key it could use without the
person. The key is unwrapped at login (the session keeps it for the stop
direction and for making requests) and unwrapped afresh from a re-entered
password for every approval. An API token carries its own wrapped copy, under a
key derived with HKDF from the token's 32 random bytes (no slow KDF is needed
for a secret that was never chosen by a person), so a bearer token signs as its
owner without the console keeping any key; a viewer-only token has no key.
Each token record is sealed (HMAC keyed from its secret: owner, roles, expiry),
a revoked token's digest is replaced by one the secret no longer matches (an
edit cannot revive it), and a password change, a reset or a disable revokes
every token of the user, as it ends their sessions.

The file is TOML written by this module (a tiny serializer: only names, base64,
hex, integers, booleans and role lists go in), atomically and 0600, and read
back through the bounded reader with every field checked: a bad file is one
line naming the file, the user, the field and the rule. A store notices a
changed file on the next lookup (one stat), so `knightwatch console user
disable` takes effect in a running console without a restart.

The whole file is sealed against being put back: every write numbers it (`generation`,
one more each time) and seals it (`mac`: HMAC-SHA256 over the generation and every
record) with a key kept in a file of its own beside it (`<file>.seal`, 0600), which also
holds the last generation written. Whoever can write the users file but not read that one
cannot edit the file, nor put back an older sealed copy (a revoked token, an old password,
a disabled or removed user revived): its generation is below the last one written, and
refused. A file without a seal (written by the version before seals) loads while no seal
file exists, and is sealed at its next write; once sealed, an unsealed file is refused.
A running console also refuses any generation below the highest it has read.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import argon2
import msgspec
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from knightwatch.audit.log import sync_dir
from knightwatch.errors import KnightwatchError, quoted
from knightwatch.inputs import UNDECODABLE, InputFileError, is_name, load_toml, read_bytes
from knightwatch.release.keys import SigningKey
from knightwatch.trust.identity import Signer
from knightwatch.trust.roster import Role

DEFAULT_USERS_FILE = "console-users.toml"
FORMAT_VERSION = 1

Argon2Params = argon2.Parameters
OWASP = Argon2Params(
    type=Type.ID,
    version=19,
    salt_len=16,
    hash_len=32,
    time_cost=2,
    memory_cost=19456,
    parallelism=1,
)
"""OWASP's argon2id minimum (19 MiB, 2 passes, 1 lane): the default for hashes and key wrapping."""

MIN_PASSWORD = 12
MAX_PASSWORD = 1024
"""Longer is refused: a megabyte password is a denial of service, not a password."""
MAX_TOKEN_TTL_S = 90 * 86400
TOKEN_CLOCK_SLACK_NS = 60 * 1_000_000_000
"""How far a token's issuer's clock may have run ahead of the console's (same host)."""
TOKEN_PREFIX = "kw_"
"""Makes a leaked token greppable (secret scanners, logs)."""
"""The roster's name rule: a console user is a roster person by the same name."""

_TOKEN_ID = re.compile(r"t_[0-9a-f]{10}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TOKEN_SECRET = re.compile(r"kw_[A-Za-z0-9_-]{43}")
_KEK_BYTES = 32
_SALT_BYTES = 16
_NONCE_BYTES = 12
_TAG_BYTES = 16
_MAX_CIPHERTEXT = 4096
_HKDF_INFO = b"knightwatch console token key v1"
_SEAL_INFO = b"knightwatch console token seal v1"
_FILE_MAC_INFO = b"knightwatch console users file v1"
SEAL_SUFFIX = ".seal"
"""The seal file beside the users file: the key that seals it and the last generation."""
_MAX_SEAL_FILE = 4096
# Bounds on argon2 parameters read from the file: a hand-edited m=2^32 must not take the
# machine's memory at the next login.
_T_RANGE = range(1, 65)
_M_RANGE = range(8, 1024 * 1024 + 1)  # KiB: up to 1 GiB
_P_RANGE = range(1, 65)
_VIEWER_ONLY = frozenset({Role.VIEWER})


class ConsoleUserError(KnightwatchError, ValueError):
    """A users file, user or token that cannot be used; one line naming file, field and rule."""


class LoginFailed(KnightwatchError, PermissionError):
    """A refused login or token; the message never says which part was wrong.

    `why` is for the audit record only ("unknown_user", "bad_password",
    "disabled", "unknown_token", "token_expired", "token_revoked"); the person
    at the login form sees the same message whatever it is.
    """

    def __init__(self, why: str, message: str = "wrong name or password") -> None:
        super().__init__(message)
        self.why = why


class WrappedKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A private key encrypted under a key derived from a password (argon2id) or a token (HKDF)."""

    kdf: Literal["argon2id", "hkdf-sha256"]
    salt: str
    """Base64; the KDF's own random salt."""
    nonce: str
    """Base64, 12 bytes."""
    ciphertext: str
    """Base64 of ChaCha20-Poly1305 over the PKCS#8 PEM, bound to the owner and key id."""
    t: int = 0
    m: int = 0
    """argon2id time cost, memory cost (KiB), parallelism; 0 for hkdf-sha256."""
    p: int = 0


class Token(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An API token: stored as the SHA-256 of its secret, never the secret."""

    id: str
    """Public id ("t_" + 10 hex): what lists, audit records and revocation name."""
    sha256: str
    roles: tuple[Role, ...]
    """What the token may do: at most its owner's roster roles (the console intersects)."""
    service: bool
    """Acts for a service (a supervisor, CI): never approves."""
    created_ns: int
    expires_ns: int
    revoked_ns: int = 0
    seal: str = ""
    """Hex HMAC-SHA256, keyed by HKDF of the token's secret, over its owner, id, digest, roles,
    service mark, creation and expiry (`_seal_token`): an edited record is refused
    (`token_tampered`). "" in a file written before seals: refused (`token_unsealed`)."""
    key: WrappedKey | None = None
    """The owner's key under HKDF(secret); None for a viewer-only token."""


class SealState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The seal file: the key the users file is sealed with, and the last generation written."""

    version: int
    key: str
    """Base64 of 32 random bytes."""
    generation: int


class User(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    key_id: str
    """The id of the wrapped key's public half: checked without decrypting (admin reset)."""
    password_hash: str
    key: WrappedKey
    disabled: bool = False
    disables: int = 0
    """How many times `disable` ended the user's sessions. A session remembers it from its
    login: one opened before a disable stays ended after an `enable`, even if it made no
    request while the user was disabled (it was judged only at its next request)."""
    tokens: tuple[Token, ...] = ()


# --- wrapping ---------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _aad(user: str, key_id: str, purpose: str) -> bytes:
    """Binds a ciphertext to its owner, key and slot: one copied to another record fails."""
    return f"knightwatch console key\0{user}\0{key_id}\0{purpose}".encode()


def _password_kek(password: str, salt: bytes, t: int, m: int, p: int) -> bytes:
    return hash_secret_raw(password.encode(), salt, t, m, p, _KEK_BYTES, Type.ID)


def _token_kek(raw: bytes, salt: bytes) -> bytes:
    return HKDF(hashes.SHA256(), _KEK_BYTES, salt, _HKDF_INFO).derive(raw)


def _seal(kek: bytes, key: SigningKey, aad: bytes) -> tuple[str, str]:
    nonce = os.urandom(_NONCE_BYTES)
    return _b64(nonce), _b64(ChaCha20Poly1305(kek).encrypt(nonce, key.private_pem(), aad))


def _wrap_password(key: SigningKey, password: str, user: str, params: Argon2Params) -> WrappedKey:
    salt = os.urandom(_SALT_BYTES)
    t, m, p = params.time_cost, params.memory_cost, params.parallelism
    nonce, ct = _seal(_password_kek(password, salt, t, m, p), key, _aad(user, key.key_id, "pw"))
    return WrappedKey("argon2id", _b64(salt), nonce, ct, t, m, p)


def _wrap_token(key: SigningKey, raw: bytes, user: str, token_id: str) -> WrappedKey:
    salt = os.urandom(_SALT_BYTES)
    kek = _token_kek(raw, salt)
    nonce, ct = _seal(kek, key, _aad(user, key.key_id, token_id))
    return WrappedKey("hkdf-sha256", _b64(salt), nonce, ct)


def _to_secret(raw: bytes) -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _from_secret(secret: str) -> bytes | None:
    if not _TOKEN_SECRET.fullmatch(secret):
        return None
    try:
        raw = base64.urlsafe_b64decode(secret[len(TOKEN_PREFIX) :] + "=")
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 and _to_secret(raw) == secret else None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _tombstone(digest: str) -> str:
    """What a revoked token's digest becomes. The revocation was a field anyone writing the
    file could set back to 0 (reviving the token); the digest it replaces cannot be got back
    from this, so a revoked token stays revoked whatever else is edited."""
    return hashlib.sha256(b"knightwatch console revoked token\0" + digest.encode()).hexdigest()


def _seal_token(raw: bytes, user: str, token: Token) -> str:
    """The token's seal: its expiry, roles and owner were plain fields, so an edited file
    could stretch a token's life or widen it as if issued so."""
    mac_key = HKDF(hashes.SHA256(), _KEK_BYTES, None, _SEAL_INFO).derive(raw)
    fields = [user, token.id, token.sha256, [r.value for r in token.roles], token.service,
              token.created_ns, token.expires_ns]  # fmt: skip
    return hmac.new(mac_key, msgspec.json.encode(fields), hashlib.sha256).hexdigest()


def _revoked(token: Token, now_ns: int) -> Token:
    """`token` revoked now (its digest a tombstone); one already revoked stays as it was."""
    if token.revoked_ns:
        return token
    return msgspec.structs.replace(token, revoked_ns=now_ns, sha256=_tombstone(token.sha256))


# --- the file ---------------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and every control character escaped."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items() if x is not None) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to the users file")


def _pairs(table: dict[str, Any]) -> Iterator[str]:
    for k, v in table.items():
        if v is not None:
            yield f"{k} = {_value(v)}\n"


def file_mac(key: bytes, generation: int, users: Iterable[User]) -> str:
    """The users file's seal: HMAC-SHA256 over its generation and every record."""
    records = [msgspec.to_builtins(u) for u in sorted(users, key=lambda u: u.name)]
    body = msgspec.json.encode([_FILE_MAC_INFO.decode(), generation, records])
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def dump_users(
    users: Iterable[User], *, generation: int | None = None, mac: str | None = None
) -> str:
    """The users file's text; `parse_users` reads it back to the same records."""
    parts = [
        "# knightwatch console users: written by `knightwatch console user ...`; keep it 0600.\n"
        "# Passwords and token secrets are not in here: only argon2id hashes, SHA-256 digests\n"
        "# and private keys encrypted under them.\n",
        f"version = {FORMAT_VERSION}\n",
    ]
    if generation is not None and mac is not None:
        parts.append(f"generation = {generation}\nmac = {toml_string(mac)}\n")
    for user in sorted(users, key=lambda u: u.name):
        record = msgspec.to_builtins(user)
        record.pop("name")
        tokens = record.pop("tokens")
        parts.append(f"\n[users.{user.name}]\n")
        parts.extend(_pairs(record))
        for token in tokens:
            parts.append(f"\n[[users.{user.name}.tokens]]\n")
            parts.extend(_pairs(token))
    return "".join(parts)


def _locate(exc: msgspec.ValidationError) -> tuple[str, str]:
    """(field, rule) from msgspec's "Expected `int`, got `str` - at `$.key.t`"."""
    rule, _, at = str(exc).partition(" - at `$")
    field = at.rstrip("`").lstrip(".")
    for pattern, what in (
        (r"Object missing required field `(.+)`", "missing (required)"),
        (r"Object contains unknown field `(.+)`", "unknown field"),
    ):
        m = re.fullmatch(pattern, rule)
        if m:
            return (f"{field}.{m[1]}" if field else m[1]), what
    rule = rule[:1].lower() + rule[1:]
    if rule.startswith("invalid enum value") and re.search(r"roles\[\d+\]$", field):
        rule += f" (roles: {', '.join(r.value for r in Role)})"
    return field or "(table)", rule


class _Check:
    """Semantic checks on one converted user; every failure names the field and the rule."""

    def __init__(self, source: str, name: str) -> None:
        self.where = f"{source}: user {name}"

    def fail(self, field: str, rule: str) -> ConsoleUserError:
        return ConsoleUserError(f"{self.where}: {field}: {rule}")

    def b64(self, field: str, text: str, *, size: int | None = None, at_least: int = 1) -> None:
        try:
            raw = _unb64(text)
        except (binascii.Error, ValueError):
            raise self.fail(field, f"not base64 ({quoted(text, 24)})") from None
        if size is not None and len(raw) != size:
            raise self.fail(field, f"must be {size} bytes (got {len(raw)})")
        if len(raw) < at_least or len(raw) > _MAX_CIPHERTEXT:
            raise self.fail(
                field, f"must be {at_least} to {_MAX_CIPHERTEXT} bytes (got {len(raw)})"
            )

    def params(self, field: str, t: int, m: int, p: int) -> None:
        for letter, value, allowed in (("t", t, _T_RANGE), ("m", m, _M_RANGE), ("p", p, _P_RANGE)):
            if value not in allowed:
                raise self.fail(
                    f"{field}.{letter}" if field else letter,
                    f"argon2 parameter {value} is outside {allowed.start}..{allowed.stop - 1}",
                )

    def wrapped(self, field: str, key: WrappedKey, kdf: str) -> None:
        if key.kdf != kdf:
            raise self.fail(f"{field}.kdf", f"must be {kdf!r} here (got {key.kdf!r})")
        self.b64(f"{field}.salt", key.salt, at_least=8)
        self.b64(f"{field}.nonce", key.nonce, size=_NONCE_BYTES)
        self.b64(f"{field}.ciphertext", key.ciphertext, at_least=_TAG_BYTES + 1)
        if kdf == "argon2id":
            self.params(field, key.t, key.m, key.p)
        elif (key.t, key.m, key.p) != (0, 0, 0):
            raise self.fail(f"{field}.t", "argon2 parameters do not belong to an hkdf-sha256 key")

    def user(self, user: User) -> None:
        if not _HEX64.fullmatch(user.key_id):
            raise self.fail("key_id", "must be 64 lowercase hex characters (a key id)")
        if not user.password_hash.startswith("$argon2id$"):
            raise self.fail("password_hash", "must be an argon2id hash ($argon2id$...)")
        try:
            params = argon2.extract_parameters(user.password_hash)
        except (InvalidHashError, ValueError):
            raise self.fail("password_hash", "not a well-formed argon2id hash") from None
        self.params("password_hash", params.time_cost, params.memory_cost, params.parallelism)
        self.wrapped("key", user.key, "argon2id")
        if user.disables < 0:
            raise self.fail("disables", f"must be 0 or more (got {user.disables})")
        seen: set[str] = set()
        for i, token in enumerate(user.tokens):
            self.token(f"tokens[{i}]", token, seen)

    def token(self, field: str, token: Token, seen: set[str]) -> None:
        if not _TOKEN_ID.fullmatch(token.id):
            raise self.fail(
                f"{field}.id", f"must be t_ and 10 lowercase hex (got {quoted(token.id)})"
            )
        if token.id in seen:
            raise self.fail(f"{field}.id", f"token {token.id} is listed twice")
        seen.add(token.id)
        if not _HEX64.fullmatch(token.sha256):
            raise self.fail(f"{field}.sha256", "must be 64 lowercase hex characters")
        if not token.roles:
            raise self.fail(f"{field}.roles", "must name at least one role")
        if len(set(token.roles)) != len(token.roles):
            raise self.fail(f"{field}.roles", "a role is listed twice")
        if token.service and Role.APPROVER in token.roles:
            raise self.fail(f"{field}.roles", "a service token can never approve")
        if token.created_ns <= 0 or token.expires_ns <= token.created_ns:
            raise self.fail(f"{field}.expires_ns", "must be after created_ns (both positive)")
        if token.revoked_ns < 0:
            raise self.fail(f"{field}.revoked_ns", "must be 0 (not revoked) or an instant")
        if token.seal and not _HEX64.fullmatch(token.seal):
            raise self.fail(f"{field}.seal", "must be 64 lowercase hex characters (or absent)")
        if set(token.roles) <= _VIEWER_ONLY:
            if token.key is not None:
                raise self.fail(f"{field}.key", "a viewer-only token holds no key")
        elif token.key is None:
            raise self.fail(f"{field}.key", "required when the token's roles go beyond viewer")
        else:
            self.wrapped(f"{field}.key", token.key, "hkdf-sha256")


def parse_users(data: dict[str, Any], source: str) -> dict[str, User]:
    """Users from a parsed users file, every field checked (`source` names the file)."""
    unknown = sorted(set(data) - {"version", "generation", "mac", "users"})
    if unknown:
        raise ConsoleUserError(
            f"{source}: {unknown[0]}: unknown setting (version, generation, mac, users)"
        )
    if data.get("version") != FORMAT_VERSION:
        raise ConsoleUserError(
            f"{source}: version: must be {FORMAT_VERSION} (got {quoted(data.get('version'))})"
        )
    tables = data.get("users", {})
    if not isinstance(tables, dict):
        raise ConsoleUserError(f"{source}: users: must be a table of users")
    users: dict[str, User] = {}
    keys: dict[str, str] = {}
    for name, table in tables.items():
        if not is_name(name):
            raise ConsoleUserError(
                f"{source}: user {quoted(name)}: name: 1-64 letters, digits, - or _"
            )
        check = _Check(source, name)
        if not isinstance(table, dict):
            raise check.fail("(table)", "must be a table")
        if "name" in table:
            raise check.fail("name", "unknown field (the table's name is the user's name)")
        try:
            user = msgspec.convert({**table, "name": name}, User, strict=True)
        except msgspec.ValidationError as exc:
            raise check.fail(*_locate(exc)) from None
        check.user(user)
        if user.key_id in keys:
            raise check.fail("key_id", f"the same key is stored for user {keys[user.key_id]}")
        keys[user.key_id] = name
        users[name] = user
    return users


def parse_file_seal(data: dict[str, Any], source: str) -> tuple[int, str] | None:
    """(generation, mac) from a parsed users file; None for a file written before seals."""
    generation, mac = data.get("generation"), data.get("mac")
    if generation is None and mac is None:
        return None
    if generation is None or mac is None:
        missing = "generation" if generation is None else "mac"
        raise ConsoleUserError(f"{source}: {missing}: missing (generation and mac go together)")
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
        raise ConsoleUserError(
            f"{source}: generation: must be a whole number from 1 (got {quoted(generation)})"
        )
    if not isinstance(mac, str) or not _HEX64.fullmatch(mac):
        raise ConsoleUserError(f"{source}: mac: must be 64 lowercase hex characters")
    return generation, mac


# --- the store --------------------------------------------------------------------------------


class UserStore:
    """The users file: read on demand, re-read when it changes, written atomically 0600.

    Lookups (`get`, `names`, `verify`, `authenticate_token`) check the file's
    stat first and re-read it when it changed, so a running console follows the
    CLI's changes. A file that went bad is refused at the next lookup (never an
    old copy kept: a user disabled by that edit must not stay enabled). The last
    good copy is kept for one use only: judging, while the file cannot be read, the
    tokens and sessions the console lets stop the fleet and read (`*_last_read`).
    """

    def __init__(self, path: Path, *, profile: Argon2Params | None = None) -> None:
        self.path = path
        self.profile = profile or OWASP
        if self.profile.type is not Type.ID:
            raise ConsoleUserError("argon2 profile: must be argon2id")
        self._hasher = argon2.PasswordHasher.from_parameters(self.profile)
        self._lock = threading.RLock()
        self._users: dict[str, User] = {}
        self._seen: tuple[int, ...] | None = None
        self._read_ok = False
        """`_users` is what the file held at a read or write that succeeded (the last good
        copy, kept while the file cannot be read: `authenticate_token_last_read`)."""
        self.seal_path = path.with_name(path.name + SEAL_SUFFIX)
        self._highest = 0
        """The highest sealed generation this store has read or written: a running console
        refuses anything older (or unsealed) even if the seal file were put back too."""
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        """What an unknown name is verified against; made now, so no first login pays for it."""
        self._source = f"console users file {path}"

    # reading

    def _stat(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConsoleUserError(f"{self._source}: cannot stat: {exc.strerror}") from None
        return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_mode)

    def _refresh(self) -> dict[str, User]:
        with self._lock:
            seen = self._stat()
            if seen != self._seen:
                self._users = self._read() if seen is not None else {}
                self._seen = seen
                self._read_ok = True
            return self._users

    def _read(self) -> dict[str, User]:
        try:
            data = load_toml(self.path, "console users file")
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
            if mode & 0o077:
                raise ConsoleUserError(
                    f"{self._source}: permissions {mode:04o} let other accounts read the "
                    f"password hashes and wrapped keys; run chmod 600 {self.path}"
                )
            users = parse_users(data, self._source)
            self._check_sealed(data, users)
            return users
        except InputFileError as exc:
            self._seen = None  # retry at the next lookup
            raise ConsoleUserError(str(exc)) from None
        except ConsoleUserError:
            self._seen = None
            raise

    def _seal_state(self) -> SealState | None:
        """The seal file's key and last generation; None when there is none (never sealed)."""
        where = f"console users seal file {self.seal_path}"
        try:
            mode = stat.S_IMODE(os.stat(self.seal_path).st_mode)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConsoleUserError(f"{where}: cannot stat: {exc.strerror}") from None
        if mode & 0o077:
            raise ConsoleUserError(
                f"{where}: permissions {mode:04o} let other accounts read the key that seals "
                f"the users file; run chmod 600 {self.seal_path}"
            )
        try:
            state = msgspec.json.decode(
                read_bytes(self.seal_path, "console users seal file", _MAX_SEAL_FILE),
                type=SealState,
            )
        except InputFileError as exc:
            raise ConsoleUserError(str(exc)) from None
        except UNDECODABLE as exc:
            raise ConsoleUserError(f"{where}: not a seal file ({exc})") from None
        try:
            key = _unb64(state.key)
        except (binascii.Error, ValueError):
            key = b""
        if state.version != 1 or len(key) != _KEK_BYTES or state.generation < 0:
            raise ConsoleUserError(
                f"{where}: must be version 1, a 32-byte base64 key and a generation from 0"
            )
        return state

    def _check_sealed(self, data: dict[str, Any], users: dict[str, User]) -> None:
        """Refuse a users file that is not the last one written (rollback) or not as sealed."""
        sealed = parse_file_seal(data, self._source)
        state = self._seal_state()
        rule = "refused (a users file is never put back: `knightwatch console user` writes it)"
        if sealed is None:
            last = max(self._highest, state.generation if state is not None else 0)
            if state is not None or last:
                raise ConsoleUserError(
                    f"{self._source}: mac: missing, but generation {last} was written sealed "
                    f"({self.seal_path}): an older or hand-written copy; {rule}"
                )
            return  # written before seals: sealed at its next write
        generation, mac = sealed
        if state is None:
            raise ConsoleUserError(
                f"{self._source}: mac: its seal file {self.seal_path} is missing (the key it "
                f"was sealed with); {rule}"
            )
        if not hmac.compare_digest(mac, file_mac(_unb64(state.key), generation, users.values())):
            raise ConsoleUserError(
                f"{self._source}: mac: does not match the file (edited, or sealed with another "
                f"key); {rule}"
            )
        last = max(self._highest, state.generation)
        if generation < last:
            raise ConsoleUserError(
                f"{self._source}: generation: {generation} is older than the last one written "
                f"({last}): an older copy was put back (rollback); {rule}"
            )
        self._highest = generation

    @property
    def exists(self) -> bool:
        """False: no users file (every login is refused; the console says so at start)."""
        return self._stat() is not None

    def names(self) -> list[str]:
        return sorted(self._refresh())

    def get(self, name: str) -> User | None:
        return self._refresh().get(name)

    def tokens(self, name: str) -> tuple[Token, ...]:
        return self._user(name).tokens

    def _user(self, name: str) -> User:
        user = self.get(name)
        if user is None:
            raise ConsoleUserError(f"{self._source}: user {quoted(name)}: no such user")
        return user

    # writing

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, User]]:
        """Read-modify-write under a lock file, so the CLI and a console do not lose writes."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = self.path.with_name(self.path.name + ".lock")
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                users = dict(self._refresh())
                yield users
                self._write(users)
            finally:
                os.close(fd)

    def _write(self, users: dict[str, User]) -> None:
        """The file, sealed at the next generation; then the seal file records that generation
        (in this order: a crash between them leaves a file newer than the mark, still read)."""
        state = self._seal_state()
        key = _unb64(state.key) if state is not None else os.urandom(_KEK_BYTES)
        generation = max(self._highest, state.generation if state is not None else 0) + 1
        mac = file_mac(key, generation, users.values())
        self._atomic(self.path, dump_users(users.values(), generation=generation, mac=mac))
        seal = SealState(version=1, key=_b64(key), generation=generation)
        self._atomic(self.seal_path, msgspec.json.encode(seal).decode() + "\n")
        self._highest = generation
        self._users = users
        self._read_ok = True
        self._seen = self._stat()

    def _atomic(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(tmp, flags, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(text.encode())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            # the rename is durable only once the directory is: without this a machine crash
            # could keep the seal file's new generation and lose the users file's, and every
            # login was then refused as a rollback
            sync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ConsoleUserError(
                f"console users file {path}: cannot write: {exc.strerror}"
            ) from None

    def _check_password(self, password: str, field: str = "password") -> None:
        if len(password) < MIN_PASSWORD:
            raise ConsoleUserError(f"{field}: at least {MIN_PASSWORD} characters")
        if len(password) > MAX_PASSWORD:
            raise ConsoleUserError(f"{field}: at most {MAX_PASSWORD} characters")

    def add(self, name: str, password: str, key: SigningKey) -> User:
        if not is_name(name):
            raise ConsoleUserError(
                f"user name {quoted(name)}: 1-64 letters, digits, - or _ (the roster's rule)"
            )
        self._check_password(password)
        with self._changing() as users:
            if name in users:
                raise ConsoleUserError(f"{self._source}: user {name}: already exists")
            for other in users.values():
                if other.key_id == key.key_id:
                    raise ConsoleUserError(
                        f"{self._source}: user {name}: key {key.key_id[:16]} is already "
                        f"stored for user {other.name}"
                    )
            user = User(
                name=name,
                key_id=key.key_id,
                password_hash=self._hasher.hash(password),
                key=_wrap_password(key, password, name, self.profile),
            )
            users[name] = user
        return user

    def passwd(self, name: str, old_password: str, new_password: str) -> None:
        """The person's own change: the key is unwrapped with the old and rewrapped with the new."""
        self._check_password(new_password, "new password")
        with self._changing() as users:
            user = self.verify(name, old_password)
            key = self._unwrap_password(user, old_password)
            users[name] = self._rewrapped(user, key, new_password)

    def reset(self, name: str, new_password: str, key: SigningKey) -> None:
        """An admin's reset from the person's key file: the key must be the one stored."""
        self._check_password(new_password, "new password")
        with self._changing() as users:
            user = users.get(name)
            if user is None:
                raise ConsoleUserError(f"{self._source}: user {quoted(name)}: no such user")
            if key.key_id != user.key_id:
                raise ConsoleUserError(
                    f"--key: key {key.key_id[:16]} is not the key stored for user {name} "
                    f"({user.key_id[:16]})"
                )
            users[name] = self._rewrapped(user, key, new_password)

    def _rewrapped(self, user: User, key: SigningKey, password: str) -> User:
        """A password change or reset ends the user's tokens with their sessions: a token
        issued under the old password (perhaps by whoever learnt it) kept working."""
        return msgspec.structs.replace(
            user,
            password_hash=self._hasher.hash(password),
            key=_wrap_password(key, password, user.name, self.profile),
            tokens=tuple(_revoked(t, time.time_ns()) for t in user.tokens),
        )

    def disable(self, name: str) -> None:
        self._set_disabled(name, True)

    def enable(self, name: str) -> None:
        self._set_disabled(name, False)

    def _set_disabled(self, name: str, disabled: bool) -> None:
        with self._changing() as users:
            user = users.get(name)
            if user is None:
                raise ConsoleUserError(f"{self._source}: user {quoted(name)}: no such user")
            ended = user.disables + 1 if disabled else user.disables
            # a disable revokes every token (an `enable` brought them all back, as if the
            # disable had never been): the person issues new ones
            tokens = tuple(_revoked(t, time.time_ns()) for t in user.tokens) if disabled else ()
            users[name] = msgspec.structs.replace(
                user, disabled=disabled, disables=ended, tokens=tokens or user.tokens
            )

    # logging in

    def _matches(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except VerifyMismatchError:
            return False
        except InvalidHashError:
            raise ConsoleUserError(f"{self._source}: password_hash: not an argon2 hash") from None
        except VerificationError:
            return False

    def verify(self, name: str, password: str) -> User:
        """The user if the password is theirs; LoginFailed (same message) otherwise.

        An unknown name is verified against a dummy hash, so the time taken
        does not tell which names exist.
        """
        user = self.get(name) if is_name(name) else None
        if user is None or len(password) > MAX_PASSWORD:
            self._matches(self._dummy, password[:MAX_PASSWORD])
            raise LoginFailed("unknown_user" if user is None else "bad_password")
        if not self._matches(user.password_hash, password):
            raise LoginFailed("bad_password")
        if user.disabled:
            raise LoginFailed("disabled")
        return user

    def unlock(self, name: str, password: str) -> Signer:
        """Verify, then unwrap the user's key: the signer a session or an approval uses."""
        user = self.verify(name, password)
        return Signer(user.name, self._unwrap_password(user, password))

    def _unwrap_password(self, user: User, password: str) -> SigningKey:
        w = user.key
        kek = _password_kek(password, _unb64(w.salt), w.t, w.m, w.p)
        return self._open(user, "key", kek, w, _aad(user.name, user.key_id, "pw"))

    def _open(self, user: User, field: str, kek: bytes, w: WrappedKey, aad: bytes) -> SigningKey:
        where = f"{self._source}: user {user.name}: {field}"
        try:
            pem = ChaCha20Poly1305(kek).decrypt(_unb64(w.nonce), _unb64(w.ciphertext), aad)
        except InvalidTag:
            raise ConsoleUserError(
                f"{where}: does not decrypt (the record was changed or belongs elsewhere)"
            ) from None
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ConsoleUserError(f"{where}: decrypts to no private key") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ConsoleUserError(f"{where}: decrypts to a key that is not Ed25519")
        key = SigningKey(private)
        if key.key_id != user.key_id:
            raise ConsoleUserError(f"{where}: decrypts to a key other than key_id")
        return key

    # tokens

    def issue_token(
        self,
        name: str,
        password: str | None,
        roles: Iterable[Role | str],
        ttl_s: int,
        *,
        service: bool = False,
        now_ns: int,
    ) -> tuple[str, Token]:
        """A new token: (secret, record). The secret is returned once and never stored.

        A token whose roles go beyond viewer carries the owner's key wrapped
        under the secret, so the password is needed to unwrap it now.
        """
        wanted: list[Role] = []
        for r in roles:
            try:
                wanted.append(Role(r))
            except ValueError:
                known = ", ".join(x.value for x in Role)
                raise ConsoleUserError(f"--role {quoted(r)}: not a role (one of {known})") from None
        wanted = list(dict.fromkeys(wanted))
        if not wanted:
            raise ConsoleUserError("--role: a token needs at least one role")
        if service and Role.APPROVER in wanted:
            raise ConsoleUserError("--role approver: a service token can never approve")
        if not 1 <= ttl_s <= MAX_TOKEN_TTL_S:
            raise ConsoleUserError(
                f"token ttl: {ttl_s} s is outside 1 s..{MAX_TOKEN_TTL_S // 86400} days"
            )
        with self._changing() as users:
            user = users.get(name)
            if user is None:
                raise ConsoleUserError(f"{self._source}: user {quoted(name)}: no such user")
            if user.disabled:
                raise ConsoleUserError(f"{self._source}: user {name}: disabled; no new tokens")
            raw = os.urandom(32)
            secret = _to_secret(raw)
            taken = {t.id for u in users.values() for t in u.tokens}
            token_id = "t_" + secrets.token_hex(5)
            while token_id in taken:
                token_id = "t_" + secrets.token_hex(5)
            wrapped = None
            if not set(wanted) <= _VIEWER_ONLY:
                if password is None:
                    raise ConsoleUserError(
                        "password: needed to give a token beyond viewer its owner's key"
                    )
                signer = self.unlock(name, password)
                wrapped = _wrap_token(signer.key, raw, name, token_id)
            token = Token(
                id=token_id,
                sha256=_digest(secret),
                roles=tuple(wanted),
                service=service,
                created_ns=now_ns,
                expires_ns=now_ns + ttl_s * 1_000_000_000,
                key=wrapped,
            )
            token = msgspec.structs.replace(token, seal=_seal_token(raw, name, token))
            users[name] = msgspec.structs.replace(user, tokens=(*user.tokens, token))
        return secret, token

    def revoke_token(self, name: str, token_id: str, now_ns: int) -> Token:
        with self._changing() as users:
            user = users.get(name)
            if user is None:
                raise ConsoleUserError(f"{self._source}: user {quoted(name)}: no such user")
            found = [t for t in user.tokens if t.id == token_id]
            if not found:
                raise ConsoleUserError(f"user {name}: token {quoted(token_id)}: no such token")
            token = found[0]
            if token.revoked_ns == 0:
                token = _revoked(token, now_ns)
                users[name] = msgspec.structs.replace(
                    user, tokens=tuple(token if t.id == token_id else t for t in user.tokens)
                )
        return token

    def authenticate_token(self, secret: str, now_ns: int) -> tuple[User, Token, Signer | None]:
        """The token's owner, record and signer (None for viewer-only); LoginFailed otherwise,
        ConsoleUserError while the file cannot be read."""
        return self._token(self._refresh(), secret, now_ns)

    def authenticate_token_last_read(
        self, secret: str, now_ns: int
    ) -> tuple[User, Token, Signer | None]:
        """As `authenticate_token`, judged against the last copy of the file read (or written)
        successfully, for while it cannot be read now: the console lets such a token stop the
        fleet and read, never more, so a bad chmod never takes a script's kill away, and a
        token revoked, expired or disabled in that copy stays refused. ConsoleUserError when
        no copy was ever read."""
        with self._lock:
            if not self._read_ok:
                raise ConsoleUserError(f"{self._source}: never read since the console started")
            users = self._users
        return self._token(users, secret, now_ns)

    def get_last_read(self, name: str) -> User | None:
        """`name` as the last copy of the file read (or written) successfully held it, for
        while it cannot be read now: a session whose person that copy shows disabled, or
        with another password, ends then too. None when that copy (if any) lacks them."""
        with self._lock:
            return self._users.get(name)

    def _token(
        self, users: dict[str, User], secret: str, now_ns: int
    ) -> tuple[User, Token, Signer | None]:
        """Every stored digest is compared in constant time; the loop does not stop at a
        match."""
        refused = "token refused"
        raw = _from_secret(secret)
        digest = _digest(secret)
        tombstone = _tombstone(digest)
        match: tuple[User, Token] | None = None
        revoked = False
        for user in users.values():
            for token in user.tokens:
                if hmac.compare_digest(token.sha256, digest):
                    match = (user, token)
                if hmac.compare_digest(token.sha256, tombstone):
                    revoked = True
        if raw is not None and revoked:  # whatever its revoked_ns says now
            raise LoginFailed("token_revoked", refused)
        if raw is None or match is None:
            raise LoginFailed("unknown_token", refused)
        user, token = match
        if token.revoked_ns:  # revoked_ns is stamped with the revocation's time
            raise LoginFailed("token_revoked", refused)
        if not token.seal:
            raise LoginFailed("token_unsealed", refused)  # issued before seals: issue anew
        if not hmac.compare_digest(token.seal, _seal_token(raw, user.name, token)):
            raise LoginFailed("token_tampered", refused)
        if now_ns >= token.expires_ns:
            raise LoginFailed("token_expired", refused)
        longest = MAX_TOKEN_TTL_S * 1_000_000_000
        if (
            token.expires_ns - token.created_ns > longest
            or token.expires_ns - now_ns > longest + TOKEN_CLOCK_SLACK_NS
        ):
            # no token is issued for longer (`issue_token`); an edited expiry fails the seal
            # first, so this is a second line (an issuer whose clock ran far ahead)
            raise LoginFailed("token_ttl_beyond_max", refused)
        if user.disabled:
            raise LoginFailed("disabled", refused)
        if token.key is None:
            return user, token, None
        kek = _token_kek(raw, _unb64(token.key.salt))
        field = f"tokens[{user.tokens.index(token)}].key"
        key = self._open(user, field, kek, token.key, _aad(user.name, user.key_id, token.id))
        return user, token, Signer(user.name, key)
