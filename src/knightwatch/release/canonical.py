"""Deterministic bytes for everything that is hashed or signed.

A manifest digest must be reproducible on any machine: keys and struct fields
are sorted and the encoding is compact UTF-8 JSON, so the same release always
hashes to the same value and a signature made in CI verifies on every node.
"""

from __future__ import annotations

import hashlib
import re

import msgspec

_ENCODER = msgspec.json.Encoder(order="sorted")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def canonical_bytes(value: object) -> bytes:
    return _ENCODER.encode(value)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_sha256_hex(value: str) -> bool:
    """Lower-case 64-digit hex, the only digest spelling accepted, so equal means equal."""
    return _SHA256_HEX.fullmatch(value) is not None
