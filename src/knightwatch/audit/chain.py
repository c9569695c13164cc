"""The hash chain: how a record is sealed into a line and how a line is checked.

A line is ``BODY,"hash":"H"}`` + newline, where BODY is the JSON object opened by
``{"seq":N,``, closed by ``"prev":"P"`` and missing its final brace, and
``H = sha256(BODY)``. BODY carries the previous record's hash P, so H commits to
P and therefore to the whole chain before it. Verification hashes the raw bytes
it read: nothing is re-encoded, so there is no canonicalisation to get wrong.
"""

from __future__ import annotations

from hashlib import sha256

import msgspec

GENESIS = "0" * 64
"""The `prev` of the first record of every file."""

HASH_SUFFIX_LEN = len(b',"hash":"') + 64 + len(b'"}')
_HASH_KEY = b',"hash":"'


class Link(msgspec.Struct):
    """The chain fields of a line, decoded without the payload."""

    seq: int
    prev: str
    hash: str


def seal_batch(payloads: list[bytes], seq: int, prev: bytes) -> tuple[list[bytes], int, bytes]:
    """Turn encoded payload objects into chained lines.

    Returns the pieces to join (two per record: body, then hash and newline),
    the next seq and the new head (hex, as bytes). This is the recorder's inner
    loop: one format, one hash and two appends per record, one copy at the join.
    """
    out: list[bytes] = []
    append = out.append
    for payload in payloads:
        body = b'{"seq":%d,%b,"prev":"%b"' % (seq, payload[1:-1], prev)
        prev = sha256(body).hexdigest().encode()
        append(body)
        append(b',"hash":"%b"}\n' % prev)
        seq += 1
    return out, seq, prev


def split_line(line: bytes) -> tuple[bytes, bytes] | None:
    """Return (body, stored hash) of a line without its newline, or None if it is not sealed."""
    if len(line) <= HASH_SUFFIX_LEN or not line.endswith(b'"}'):
        return None
    if line[-HASH_SUFFIX_LEN : -HASH_SUFFIX_LEN + len(_HASH_KEY)] != _HASH_KEY:
        return None
    return line[:-HASH_SUFFIX_LEN], line[-66:-2]


def body_hash(body: bytes) -> bytes:
    """The hash a sealed body must carry (hex, as bytes)."""
    return sha256(body).hexdigest().encode()
