"""`FlagDefinition`: one flag's identity, meaning and lifecycle.

The definition hash covers only the fields that give the flag its meaning, so
that a node can prove it was built for the same meaning the registry holds. The
owner, expiry and lifecycle can change without changing what "on" does; the
description, the safe default and whether it changes trading behaviour cannot.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date
from enum import StrEnum
from typing import Annotated

import msgspec

HASH_SCHEME = "knightwatch.flag.v1"
MAX_FLAG_ID = 128
"""Longer ids are refused where they are read, so no error or record repeats a huge one."""

# Lower-case dotted segments, at least two: `trading.smars.rlp_enabled`.
NAMESPACED_ID = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")


class Lifecycle(StrEnum):
    """Flags only move forward: proposed -> active -> retired (a tombstone)."""

    PROPOSED = "proposed"
    ACTIVE = "active"
    RETIRED = "retired"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Lifecycle.PROPOSED: 0, Lifecycle.ACTIVE: 1, Lifecycle.RETIRED: 2}


class HistoryEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A line of the flag's own story, kept in the file of record.

    `definition_hash`, when recorded, pins the meaning at that moment; lint
    refuses a history whose hashes disagree with the current definition.
    """

    at: date
    actor: str
    action: str
    note: str = ""
    definition_hash: str | None = None


class FlagDefinition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One entry of `feature-flags.yaml`.

    `owner` and `expires` may be missing in the file so that lint can report
    them as findings instead of the loader failing on the first one.
    """

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_FLAG_ID)]
    description: str
    safe_default: bool
    trading_behaviour: bool
    lifecycle: Lifecycle
    created: date
    owner: str = ""
    expires: date | None = None
    definition_hash: str | None = None
    history: tuple[HistoryEntry, ...] = ()

    def __post_init__(self) -> None:
        # the description is the meaning the hash pins: a blank one pins none, and an
        # expiry before the flag existed is a typo that lint would call "expired" forever
        if not self.description.strip():
            raise ValueError("description: blank; say what the flag does when on")
        if self.expires is not None and self.expires < self.created:
            raise ValueError(
                f"expires: {self.expires.isoformat()} is before created {self.created.isoformat()}"
            )

    @property
    def meaning_hash(self) -> str:
        """The canonical hash of the meaning-bearing fields (what releases carry)."""
        return definition_hash(self.id, self.description, self.safe_default, self.trading_behaviour)

    @property
    def namespaced(self) -> bool:
        return NAMESPACED_ID.fullmatch(self.id) is not None

    @property
    def retired(self) -> bool:
        return self.lifecycle is Lifecycle.RETIRED


def definition_hash(
    flag_id: str, description: str, safe_default: bool, trading_behaviour: bool
) -> str:
    """Lower-case sha256 hex over sorted-key JSON, the digest spelling releases use.

    Whitespace in the description is not meaning.
    """
    canonical = {
        "scheme": HASH_SCHEME,
        "id": flag_id,
        "type": "boolean",
        "description": " ".join(description.split()),
        "safe_default": safe_default,
        "trading_behaviour": trading_behaviour,
    }
    return hashlib.sha256(msgspec.json.encode(canonical, order="sorted")).hexdigest()
