"""Where the roster's versions are stored: one key per version, written once.

Versions are stored one per key (`v000001`, ...), created once and never overwritten
(compare-and-swap against "absent"): the chain from the pinned anchor can always be
walked again by a process that starts later. The key's one spelling lives here, below
every layer that writes or reads it: the NATS permissions let admins write only the next
versions' keys (`authz`), the provisioner and a local fleet store versions
(`connect.store_roster`), and every verifying process follows them
(`control.node.trustfeed`), each reading a key by `stored_version`: a key in another
spelling of a version ("v5" for "v000005") is refused, never read in its place.
"""

from __future__ import annotations

from knightwatch.control.plane.protocol import ABSENT, Bucket, ControlPlane
from knightwatch.release.dsse import Envelope, encode_envelope
from knightwatch.trust.roster import TrustError, decode_roster
from knightwatch.trust.store import decode_stored


def roster_key(version: int) -> str:
    """The key roster version `version` is stored under: "v" and six digits."""
    return f"v{version:06d}"


def roster_version(key: str) -> int:
    """The version stored under `key`, which must be that version's one spelling
    (`roster_key`); TrustError naming the key otherwise.

    Why only one: "v5", "v05" or "v0000005" beside "v000005" is a second key for version
    5, and whichever a reader met last (a copy of an older version, junk) took the real
    one's place, stopping the walk before it (a revocation undone)."""
    digits = key[1:]
    if key[:1] == "v" and digits.isascii() and digits.isdecimal():
        version = int(digits)
        if version >= 1 and key == roster_key(version):
            return version
    raise TrustError(
        f"roster key {key!r}: not a version's key ('v' and six digits, e.g. {roster_key(1)!r}); "
        "ignored"
    )


def stored_version(key: str, value: bytes) -> tuple[int, Envelope]:
    """A stored roster record as (version, envelope), for every reader of the bucket alike;
    TrustError naming why not (a key other than a version's one spelling, `roster_version`;
    a value that is no DSSE envelope)."""
    return roster_version(key), decode_stored(value)


async def publish_roster(plane: ControlPlane, envelope: Envelope) -> int:
    """Store one version under its own key; refused (RevisionConflict) if that version exists."""
    version = decode_roster(envelope).version
    return await plane.put_record(
        Bucket.ROSTER, roster_key(version), encode_envelope(envelope), expected_revision=ABSENT
    )
