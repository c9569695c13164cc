"""A process's view of the roster: the pinned anchor plus every version it has verified.

Each process is given the anchor (the first admins and their threshold, a
`TrustPolicy` file) and follows the stored roster versions from there; a
version that does not verify against the admins of the one before it is
refused and the current roster stays in force.

A version's `issued_ns` is chosen by its signers, so a receiver with a clock
also judges it at the instant it arrives (`received_ns`), or for a stored
version at the instant the store recorded its publication: its signers' keys
must be valid then too (admins whose keys expired cannot sign a version dated
back inside their validity), and it may be dated no more than the 5 s a clock
may be off (`SKEW_NS`) after that instant. Without such an instant (the kit's
own chain, built in-process; a local directory's files, which record none) a
version is judged at its issue time alone, as the chain records it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from knightwatch.inputs import UNDECODABLE, InputFileError, load_toml
from knightwatch.release.dsse import Envelope
from knightwatch.release.signing import TrustedKey, TrustPolicy
from knightwatch.trust.command import SKEW_NS
from knightwatch.trust.roster import Roster, TrustError, decode_roster, verify_roster

log = logging.getLogger(__name__)

REFUSED_KEPT = 32
"""How many refusals a store remembers, the newest: every record written where the next
version goes is judged as it arrives, and one admin may write as many there as they like
(each refusal naming its own dates), so remembering them all grew every process's memory
without end."""


StoredRecord = tuple[Envelope, int | None]
"""One stored record of a roster version and when the store wrote it (None: not known)."""


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

    def _admins(self, issued_ns: int, received_ns: int | None) -> TrustPolicy:
        if self.roster is None:
            return self.anchor
        return self.roster.admins(issued_ns, received_ns)

    def accept(self, envelope: Envelope, *, received_ns: int | None = None) -> Roster:
        """Verify the next version against the current admins and make it current.

        `received_ns`: the instant it is received (the receiver's clock) or, stored, was
        published (the store's record of it); its signers' keys must be valid then too."""
        claimed = decode_roster(envelope)
        if received_ns is not None and claimed.issued_ns > received_ns + SKEW_NS:
            raise TrustError(
                f"roster version {claimed.version} issued_ns: {claimed.issued_ns} is more than "
                f"5 s after it was received or published ({received_ns})"
            )
        admins = self._admins(claimed.issued_ns, received_ns)
        roster = verify_roster(envelope, admins, after=self.roster, received_ns=received_ns)
        self.roster = roster
        return roster

    def follow(
        self,
        stored: dict[int, Envelope],
        *,
        received_ns: int | None = None,
        published_ns: Mapping[int, int] | None = None,
    ) -> bool:
        """Accept every stored version after the current one, in order; True if any was new.

        Each is judged at its `published_ns` entry (when the store recorded it) if there
        is one, else at `received_ns` (this process's clock as it arrives), else at its
        issue time alone (`accept`). With `published_ns` (a store that records write
        times), a version after the first missing from it is refused: only version 1 is
        judged against the pinned anchor, whose keys carry no validity to judge.
        `follow_records` with one record per version."""
        at = published_ns or {}
        records = {version: [(envelope, at.get(version))] for version, envelope in stored.items()}
        return bool(
            self.follow_records(records, received_ns=received_ns, stamped=published_ns is not None)
        )

    def follow_records(
        self,
        records: Mapping[int, Sequence[StoredRecord]],
        *,
        received_ns: int | None = None,
        stamped: bool = False,
    ) -> list[Envelope]:
        """Accept every stored version after the current one, in order; the envelopes
        accepted, oldest first (empty: none was new).

        A version may be stored more than once (the version's key and each admin's own
        slot, `control.plane.rosters`), so one admin's junk where the next version goes
        cannot keep another admin's real one out: its records are tried in the order
        given (the order the store wrote them) and the first that verifies is accepted.
        Each is judged at when the store wrote it if known, else at `received_ns`, else at
        its issue time alone (`accept`); with `stamped` (a store that records write times)
        a record it holds no time for is refused, except version 1's, judged against the
        pinned anchor. When none of a version's records verifies the walk stops (each
        refusal remembered in `refused`, the newest `REFUSED_KEPT`): later versions
        cannot be trusted without it.
        """
        accepted: list[Envelope] = []
        while candidates := records.get(self.version + 1):
            version = self.version + 1
            for envelope, at_ns in candidates:
                try:
                    if stamped and at_ns is None and version > 1:
                        # the store records when each version was written, but not this
                        # one's: its own date is its signers' choice, so it is not judged
                        # by it alone
                        raise TrustError(
                            "the store holds no record of when it was written: its signers' "
                            "keys cannot be judged then (fail closed)"
                        )
                    self.accept(envelope, received_ns=received_ns if at_ns is None else at_ns)
                except TrustError as exc:
                    self._refuse(f"roster version {version} refused: {exc}")
                    continue
                accepted.append(envelope)
                break
            else:
                return accepted
        return accepted

    def _refuse(self, message: str) -> None:
        if message not in self.refused:
            self.refused.append(message)
            del self.refused[:-REFUSED_KEPT]
            log.error("ROSTER_REFUSED %s", message)


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
    except UNDECODABLE as exc:
        raise TrustError(f"stored roster: not a DSSE envelope: {exc}") from None


def version_of(value: bytes) -> int:
    return decode_roster(decode_stored(value)).version
