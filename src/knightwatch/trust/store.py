"""A process's view of the roster: the pinned anchor plus every version it has verified.

Each process is given the anchor (the first admins and their threshold, a
`TrustPolicy` file) and follows the stored roster versions from there; a
version that does not verify against the admins of the one before it is
refused and the current roster stays in force.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

from knightwatch.inputs import InputFileError, load_toml
from knightwatch.release.dsse import Envelope
from knightwatch.release.signing import TrustedKey, TrustPolicy
from knightwatch.trust.roster import Roster, TrustError, decode_roster, verify_roster

log = logging.getLogger(__name__)


class TrustStore:
    def __init__(self, anchor: TrustPolicy) -> None:
        self.anchor = anchor
        self.roster: Roster | None = None
        self.refused: list[str] = []

    @classmethod
    def of(cls, anchor: TrustPolicy, *envelopes: Envelope) -> TrustStore:
        store = cls(anchor)
        for envelope in envelopes:
            store.accept(envelope)
        return store

    @property
    def version(self) -> int:
        return self.roster.version if self.roster is not None else 0

    def _admins(self, issued_ns: int) -> TrustPolicy:
        return self.anchor if self.roster is None else self.roster.admins(issued_ns)

    def accept(self, envelope: Envelope) -> Roster:
        """Verify the next version against the current admins and make it current."""
        claimed = decode_roster(envelope)
        roster = verify_roster(envelope, self._admins(claimed.issued_ns), after=self.roster)
        self.roster = roster
        return roster

    def follow(self, stored: dict[int, Envelope]) -> bool:
        """Accept every stored version after the current one, in order; True if any was new.

        A version that does not verify stops the walk (and is remembered in
        `refused`): later versions cannot be trusted without it.
        """
        moved = False
        while (envelope := stored.get(self.version + 1)) is not None:
            try:
                self.accept(envelope)
            except TrustError as exc:
                message = f"roster version {self.version + 1} refused: {exc}"
                if message not in self.refused:
                    self.refused.append(message)
                    log.error("ROSTER_REFUSED %s", message)
                return moved
            moved = True
        return moved


def anchor_toml(anchor: TrustPolicy) -> str:
    """The anchor in the trust-policy file format (`release verify --policy` reads it too)."""
    lines = [f"threshold = {anchor.threshold}"]
    for key in anchor.keys:
        lines += ["", "[[keys]]", f'signer = "{key.signer}"', f'id = "{key.id}"']
        lines.append(f'public_key = "{key.public_key}"')
    return "\n".join(lines) + "\n"


def load_anchor(path: Path) -> TrustPolicy:
    """The pinned anchor file (bounded read, nesting checked); TrustError naming the file."""
    try:
        data = load_toml(path, "trust anchor")
    except InputFileError as exc:
        raise TrustError(str(exc)) from None
    try:
        return msgspec.convert(data, TrustPolicy)
    except (msgspec.ValidationError, ValueError) as exc:
        raise TrustError(f"trust anchor {path}: {exc}") from None


def anchor_of(roster_admins: dict[str, str], threshold: int) -> TrustPolicy:
    """An anchor from `{name: base64 public key}` (tests and local fleets build it in-process)."""
    from knightwatch.release.keys import VerifyKey

    keys = tuple(
        TrustedKey(name, VerifyKey.from_base64(pub, field=name).key_id, pub)
        for name, pub in roster_admins.items()
    )
    return TrustPolicy(threshold, keys)


def decode_stored(value: bytes) -> Envelope:
    """A stored roster record (DSSE JSON)."""
    try:
        return msgspec.json.decode(value, type=Envelope)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise TrustError(f"stored roster: not a DSSE envelope: {exc}") from None


def version_of(value: bytes) -> int:
    return decode_roster(decode_stored(value)).version
