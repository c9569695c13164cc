"""Where the roster's versions are stored: under the version's key or an admin's own slot.

Versions are stored under keys created once (compare-and-swap against "absent"): the
chain from the pinned anchor can always be walked again by a process that starts later.
The version's key (`v000005`) is where the provisioner stores it; an admin stores it in
a slot of their own (`v000005.<their key id's first 16 hex digits>`, `roster_slot`),
which the NATS permissions let no other admin write (`authz`). Before, every admin wrote
the one key: one admin's junk there (or their raw publish over a stored version) kept
the real next version, another admin's revocation, out of the store until the
provisioner purged it. Readers take every record of a version, in the order the store
wrote them, and accept the first that verifies (`stored_rosters`,
`TrustStore.follow_records`): junk is skipped, never accepted, and a later write (an
overwrite of the version's key) never goes before a record still stored that verifies. An
overwrite does remove the record it replaces (history 1): the version's key is open to
every admin, so admins store versions in their slots (`identity publish`).

The keys' one spelling lives here, below every layer that writes or reads them: the
provisioner and a local fleet store versions (`connect.store_roster`), admins publish
them (`identity publish`), and every verifying process follows them
(`control.node.trustfeed`), each reading a key by `stored_version`: a key in another
spelling of a version ("v5" for "v000005") is refused, never read in its place.
"""

from __future__ import annotations

import logging

from knightwatch.control.plane.protocol import ABSENT, Bucket, ControlPlane
from knightwatch.release.dsse import Envelope, encode_envelope
from knightwatch.trust.roster import TrustError, decode_roster
from knightwatch.trust.store import StoredRecord, decode_stored

log = logging.getLogger(__name__)

SLOT_CHARS = 16
"""How much of an admin's key id names their slot (as their inbox, `authz.inbox_prefix`)."""
_HEX = frozenset("0123456789abcdef")


def roster_key(version: int) -> str:
    """The key roster version `version` is stored under: "v" and six digits."""
    return f"v{version:06d}"


def roster_slot(version: int, key_id: str | None = None) -> str:
    """The key roster version `version` is stored under: the version's key (`roster_key`)
    or, given an admin's `key_id`, that admin's own slot of it (a dot and the key id's
    first `SLOT_CHARS` hex digits)."""
    key = roster_key(version)
    return key if key_id is None else f"{key}.{key_id[:SLOT_CHARS]}"


def roster_version(key: str) -> int:
    """The version stored under `key`, which must be that version's one spelling
    (`roster_key`) or an admin's slot of it (`roster_slot`); TrustError naming the key
    otherwise.

    Why only one: "v5", "v05" or "v0000005" beside "v000005" is a second key for version
    5, and whichever a reader met last (a copy of an older version, junk) took the real
    one's place, stopping the walk before it (a revocation undone)."""
    base, dot, slot = key.partition(".")
    digits = base[1:]
    if (
        base[:1] == "v"
        and digits.isascii()
        and digits.isdecimal()
        and (not dot or (len(slot) == SLOT_CHARS and set(slot) <= _HEX))
    ):
        version = int(digits)
        if version >= 1 and base == roster_key(version):
            return version
    raise TrustError(
        f"roster key {key!r}: not a version's key ('v' and six digits, e.g. {roster_key(1)!r}, "
        f"or an admin's slot of it, e.g. {roster_key(1) + '.' + '0' * SLOT_CHARS!r}); ignored"
    )


def stored_version(key: str, value: bytes) -> tuple[int, Envelope]:
    """A stored roster record as (version, envelope), for every reader of the bucket alike;
    TrustError naming why not (a key other than a version's one spelling, `roster_version`;
    a value that is no DSSE envelope)."""
    return roster_version(key), decode_stored(value)


def parse_stored(key: str, value: bytes) -> tuple[int, Envelope] | None:
    """`stored_version`, or None with the refusal logged (junk is skipped, never read)."""
    try:
        return stored_version(key, value)
    except TrustError as exc:
        log.error("ROSTER_REFUSED key=%s %s", key, exc)
        return None


async def stored_rosters(plane: ControlPlane, after: int = 0) -> dict[int, list[StoredRecord]]:
    """Every stored record of each version after `after` (the version's key and the
    admins' slots), in the order the store wrote them (its revisions), each with when the
    server wrote it (`record_stored_ns`; None where the plane keeps no write times): what
    `TrustStore.follow_records` walks, for every reader of the bucket alike."""
    found: list[tuple[int, int, str, Envelope]] = []
    for key, (value, revision) in (await plane.records(Bucket.ROSTER)).items():
        parsed = parse_stored(key, value)
        if parsed is not None and parsed[0] > after:
            found.append((revision, parsed[0], key, parsed[1]))
    records: dict[int, list[StoredRecord]] = {}
    for revision, version, key, envelope in sorted(found, key=lambda f: f[0]):
        at_ns = None
        if plane.keeps_write_times:
            at_ns = await plane.record_stored_ns(Bucket.ROSTER, key, revision)
        records.setdefault(version, []).append((envelope, at_ns))
    return records


async def publish_roster(
    plane: ControlPlane, envelope: Envelope, *, publisher: str | None = None
) -> int:
    """Store one version under its key or, given the `publisher`'s key id (an admin), in
    that admin's own slot (`roster_slot`): another admin's junk at the version's key does
    not keep it out. RevisionConflict if that key is taken."""
    key = roster_slot(decode_roster(envelope).version, publisher)
    return await plane.put_record(
        Bucket.ROSTER, key, encode_envelope(envelope), expected_revision=ABSENT
    )
