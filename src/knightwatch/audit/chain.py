"""The hash chain: records are plain JSON lines; a seal line after each batch proves them.

A file is a sequence of lines, each a JSON object opened by ``{"seq":N,`` with
seq counting every line (records and seals) from 0. After a batch of records
the recorder appends a seal line::

    {"seq":N,"ts":T,"kind":"seal","records":C,"prev":"P","hash":"H"}

BODY is that line up to and including the ``prev`` field (without the closing
brace) and ``H = sha256(B + BODY)``, where B is the exact bytes (newlines
included) of the C record lines between the previous seal line (or the start
of the file) and this one. P is the previous seal's H (64 zeros for the first
seal of a file), so each seal commits to every byte before it. Verification
hashes the raw bytes it read: nothing is re-encoded, so there is no
canonicalisation to get wrong.

Why a hash per batch and not per record: the hash is the one part of a record
that cannot run off the order's path cheaply in CPython (a sha256 call per
short record holds the interpreter lock for about 2 µs; one call over a batch
releases it). What a seal proves, and what it does not, is in
docs/flight-recorder.md.
"""

from __future__ import annotations

from hashlib import sha256
from typing import TYPE_CHECKING, Final

import msgspec

if TYPE_CHECKING:
    from hashlib import _Hash

GENESIS: Final = "0" * 64
"""The `prev` of the first seal of every file."""

SEAL: Final = "seal"
"""The kind of a seal line."""

HASH_SUFFIX_LEN: Final = len(b',"hash":"') + 64 + len(b'"}')
_HASH_KEY = b',"hash":"'


class Link(msgspec.Struct):
    """What verification needs of any line: its place in the sequence and its kind."""

    seq: int
    kind: str


class Seal(msgspec.Struct, frozen=True):
    """A seal line as read back."""

    seq: int
    ts: int
    kind: str
    records: int
    prev: str
    hash: str


def seal_body(seq: int, ts: int, records: int, prev: bytes) -> bytes:
    """The hashed part of a seal line (everything before `,"hash":...}`)."""
    return b'{"seq":%d,"ts":%d,"kind":"seal","records":%d,"prev":"%b"' % (seq, ts, records, prev)


def finish_seal(batch: _Hash, body: bytes) -> tuple[bytes, bytes]:
    """Close a seal: `batch` has been fed the batch's bytes. Returns (line, hash as hex bytes)."""
    batch.update(body)
    digest = batch.hexdigest().encode()
    return b'%b,"hash":"%b"}\n' % (body, digest), digest


def split_line(line: bytes) -> tuple[bytes, bytes] | None:
    """Return (body, stored hash) of a seal line without its newline, or None if it has none."""
    if len(line) <= HASH_SUFFIX_LEN or not line.endswith(b'"}'):
        return None
    if line[-HASH_SUFFIX_LEN : -HASH_SUFFIX_LEN + len(_HASH_KEY)] != _HASH_KEY:
        return None
    return line[:-HASH_SUFFIX_LEN], line[-66:-2]


def seal_hash(batch: bytes, body: bytes) -> bytes:
    """The hash a seal over `batch` with this body must carry (hex, as bytes)."""
    h = sha256(batch)
    h.update(body)
    return h.hexdigest().encode()


def seal_batch(
    payloads: list[bytes], seq: int, prev: bytes, ts: int = 0
) -> tuple[list[bytes], int, bytes]:
    """Number encoded payload objects (`{...}` without seq) as lines and seal them as one batch.

    Returns the pieces to join (the record lines, then the seal line), the next
    seq and the new head (hex, as bytes). Anyone can do this: it is how a
    forger rewrites a file from some point on, which a chain alone cannot
    show (an anchor or a signed checkpoint kept elsewhere can).
    """
    out = [b'{"seq":%d,%b\n' % (seq + i, p[1:]) for i, p in enumerate(payloads)]
    seq += len(out)
    line, head = finish_seal(sha256(b"".join(out)), seal_body(seq, ts, len(out), prev))
    out.append(line)
    return out, seq + 1, head
