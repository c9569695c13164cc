"""Where the roster's versions are stored: one key per version, written once.

Versions are stored one per key (`v000001`, ...), created once and never overwritten
(compare-and-swap against "absent"): the chain from the pinned anchor can always be
walked again by a process that starts later. The key's one spelling lives here, below
every layer that writes or reads it: the NATS permissions let admins write only the next
versions' keys (`authz`), the provisioner and a local fleet store versions
(`connect.store_roster`), and every verifying process follows them
(`control.node.trustfeed`).
"""

from __future__ import annotations

from knightwatch.control.plane.protocol import ABSENT, Bucket, ControlPlane
from knightwatch.release.dsse import Envelope, encode_envelope
from knightwatch.trust.roster import decode_roster


def roster_key(version: int) -> str:
    """The key roster version `version` is stored under: "v" and six digits."""
    return f"v{version:06d}"


async def publish_roster(plane: ControlPlane, envelope: Envelope) -> int:
    """Store one version under its own key; refused (RevisionConflict) if that version exists."""
    version = decode_roster(envelope).version
    return await plane.put_record(
        Bucket.ROSTER, roster_key(version), encode_envelope(envelope), expected_revision=ABSENT
    )
