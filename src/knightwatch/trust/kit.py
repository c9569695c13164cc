"""Provisioning a fleet's identities in one place: keys, anchor and signed roster versions.

`knightwatch up`, the replay and the tests need a whole cast at once (admins,
operators, approvers, the supervisor, the admission service, nodes). A `Kit`
generates their keys, builds version 1 of the roster signed by the admins,
and makes later versions (add, rotate, revoke) signed the same way, so every
one of them goes through the same verification a production roster does. A
production fleet does the same with `knightwatch identity`, each admin signing
on their own machine.

A `Kit(fleet=...)` names its fleet in version 1 (`Roster.fleet`), and every later
version keeps it: approvals and target requests made for another fleet do not
count on it. Without a name the roster is written as an earlier release wrote it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import msgspec

from knightwatch.inputs import JSON_MAX_BYTES, InputFileError, read_bytes
from knightwatch.release.dsse import Envelope, encode_envelope
from knightwatch.release.keys import SigningKey, VerifyKey
from knightwatch.release.signing import TrustPolicy
from knightwatch.trust.identity import Signer, load_signer
from knightwatch.trust.roster import (
    ApprovalPolicy,
    Member,
    Role,
    Roster,
    TrustError,
    roster_envelope,
    sign_roster,
)
from knightwatch.trust.store import TrustStore, anchor_of, anchor_toml, decode_stored, load_anchor

PEOPLE: dict[str, tuple[Role, ...]] = {
    "alice": (Role.OPERATOR, Role.APPROVER),
    "bob": (Role.OPERATOR, Role.APPROVER),
    "carol": (Role.VIEWER,),
}
"""The cast a local fleet and the tests start with."""


def member_of(name: str, key: SigningKey, roles: Iterable[Role], **validity: int) -> Member:
    return member_of_public(name, key.public, roles, **validity)


def member_of_public(name: str, key: VerifyKey, roles: Iterable[Role], **validity: int) -> Member:
    """A roster entry for a public key someone handed over (their private key stays theirs)."""
    return Member(name, key.key_id, key.to_base64(), tuple(roles), **validity)


class Kit:
    def __init__(
        self,
        *,
        now_ns: int,
        people: Mapping[str, tuple[Role, ...]] = PEOPLE,
        nodes: Iterable[str] = (),
        admins: int = 2,
        approvals: ApprovalPolicy | None = None,
        node_keys: Mapping[str, SigningKey] | None = None,
        fleet: str = "",
    ) -> None:
        self.now_ns = now_ns
        self.signers: dict[str, Signer] = {}
        members: list[Member] = []
        admin_names = [f"admin{i}" for i in range(1, admins + 1)]
        cast: dict[str, tuple[Role, ...]] = {n: (Role.ADMIN,) for n in admin_names}
        cast |= dict(people)
        cast |= {"supervisor": (Role.SUPERVISOR,), "admission": (Role.ADMISSION,)}
        cast |= {n: (Role.NODE,) for n in nodes}
        for name, roles in cast.items():
            key = (node_keys or {}).get(name) or SigningKey.generate()
            self.signers[name] = Signer(name, key)
            members.append(member_of(name, key, roles))
        self.admin_names = admin_names
        self.anchor: TrustPolicy = anchor_of(
            {n: self.signers[n].key.public.to_base64() for n in admin_names}, min(admins, 2)
        )
        self.envelopes: list[Envelope] = []
        self.roster = Roster(
            1,
            now_ns,
            tuple(members),
            admin_threshold=min(admins, 2),
            approvals=approvals or ApprovalPolicy(),
            fleet=fleet,
        )
        self.envelopes.append(self._sign(self.roster))

    @classmethod
    def read(cls, directory: Path) -> Kit:
        """The cast `write` left under `directory`, every version re-verified from the
        anchor (so a local fleet restarted on the same state keeps its identities, and
        the kill state its signers stored stays verifiable). TrustError names the file."""
        anchor = load_anchor(directory / "anchor.toml")
        found = list((directory / "roster").glob("v*.json"))
        for path in found:
            # one name per version, as `write` names it: "v02.json" beside "v2.json" was a
            # second file for version 2, read in its place whichever sorted first
            digits = path.stem[1:]
            if not (digits.isascii() and digits.isdecimal()) or path.name != f"v{int(digits)}.json":
                raise TrustError(
                    f"roster file {path}: not named v<N>.json (N the version, no leading zeros)"
                )
        versions = sorted(found, key=lambda p: (int(p.stem[1:]), p.name))
        envelopes = []
        store = TrustStore(anchor)
        for path in versions:
            try:
                envelope = decode_stored(read_bytes(path, "roster version", JSON_MAX_BYTES))
                if int(path.stem[1:]) != store.version + 1:
                    raise TrustError(
                        f"not named for the next version v{store.version + 1}.json (a gap, or "
                        "the same version twice)"
                    )
                store.accept(envelope)
            except (InputFileError, TrustError) as exc:
                raise TrustError(f"roster file {path}: {exc}") from None
            envelopes.append(envelope)
        if store.roster is None:
            raise TrustError(f"roster directory {directory / 'roster'}: no version found")
        kit = cls.__new__(cls)
        kit.now_ns = store.roster.issued_ns
        kit.anchor = anchor
        kit.envelopes = envelopes
        kit.roster = store.roster
        kit.admin_names = store.roster.names_with(Role.ADMIN)
        kit.signers = {}
        for path in sorted((directory / "keys").glob("*.key")):
            signer = load_signer(path)
            member = store.roster.member(signer.key.key_id)
            if member is not None and member.name != signer.name:
                # it would sign as another name's key: every command it signs is refused
                # as not signed by its actor, far from the file that caused it
                raise TrustError(
                    f"key file {path}: holds {member.name}'s key {signer.key.key_id[:16]}, "
                    f"not {signer.name}'s"
                )
            if member is not None:
                kit.signers[signer.name] = signer
        return kit

    def adopt(self, history: Sequence[Envelope]) -> None:
        """Take the versions a store holds after this kit's own (`history`: version 1 on, as
        the store's follower verified them), re-verified here from the anchor: a restarted
        local fleet signs its next version on top of what its admins published meanwhile.
        TrustError (naming the version) for a stored version that is not this kit's own
        version of that number, or for a history that does not verify."""
        for version, (mine, theirs) in enumerate(zip(self.envelopes, history, strict=False), 1):
            if mine.payload != theirs.payload:
                raise TrustError(f"roster version {version}: the store holds another version")
        if len(history) <= len(self.envelopes):
            return
        store = TrustStore.of(self.anchor, *history)
        assert store.roster is not None  # a history of one version at least
        self.envelopes = list(history)
        self.roster = store.roster
        self.admin_names = store.roster.names_with(Role.ADMIN)

    def _sign(self, roster: Roster) -> Envelope:
        envelope = roster_envelope(roster)
        held = [n for n in self.admin_names if n in self.signers]
        if len(held) < roster.admin_threshold:
            raise TrustError(
                f"roster version {roster.version}: {roster.admin_threshold} admins must sign "
                f"it, this kit holds the keys of {', '.join(held) or 'none'}"
            )
        for name in held[: roster.admin_threshold]:
            envelope = sign_roster(envelope, self.signers[name].key)
        return envelope

    def store(self) -> TrustStore:
        return TrustStore.of(self.anchor, *self.envelopes)

    def signer(self, name: str) -> Signer:
        return self.signers[name]

    @property
    def latest(self) -> Envelope:
        return self.envelopes[-1]

    def next_version(
        self, members: Iterable[Member], at_ns: int | None = None, *, fleet: str | None = None
    ) -> Envelope:
        """A new version with these members (naming `fleet`, else keeping the name), signed
        by the admins. TrustError for a version the roster's rules refuse (`fleet` no name)."""
        # a version is issued after the one before it (`verify_roster`), whatever `at_ns` says
        at = max(at_ns if at_ns is not None else 0, self.roster.issued_ns + 1)
        roster = msgspec.structs.replace(
            self.roster,
            version=self.roster.version + 1,
            issued_ns=at,
            members=tuple(members),
            fleet=self.roster.fleet if fleet is None else fleet,
        )
        envelope = self._sign(roster)  # refused: the kit stays as it was
        self.roster = roster
        self.envelopes.append(envelope)
        return envelope

    def name(self, fleet: str) -> Envelope:
        """The next version naming this fleet `fleet`, as `knightwatch identity name` proposes
        it: once, and kept by every later version. TrustError if the roster names a fleet
        already (a fleet's roster keeps its name) or `fleet` is no name."""
        if self.roster.fleet:
            raise TrustError(
                f"fleet {fleet!r}: this roster names fleet {self.roster.fleet!r} already "
                f"(version {self.roster.version}); a fleet's roster keeps its name"
            )
        return self.next_version(self.roster.members, fleet=fleet)

    def add(self, name: str, roles: Iterable[Role], key: SigningKey | None = None) -> Envelope:
        """Enrol a new person or component, or a second key for an existing name."""
        new = key or SigningKey.generate()
        self.signers.setdefault(name, Signer(name, new))
        return self.next_version([*self.roster.members, member_of(name, new, roles)])

    def rotate(self, name: str, at_ns: int) -> tuple[Signer, Envelope]:
        """A new key for `name`; the old ones stop being valid at `at_ns`."""
        roles = self.roster.keys_of(name)[0].roles
        new = SigningKey.generate()
        members = [
            msgspec.structs.replace(m, valid_until_ns=at_ns) if m.name == name else m
            for m in self.roster.members
        ]
        members.append(member_of(name, new, roles))
        self.signers[name] = Signer(name, new)
        return self.signers[name], self.next_version(members, at_ns)

    def revoke(self, name: str, at_ns: int) -> Envelope:
        members = [
            msgspec.structs.replace(m, revoked_ns=at_ns) if m.name == name else m
            for m in self.roster.members
        ]
        return self.next_version(members, at_ns)

    def write(self, directory: Path, private: Iterable[str] = ()) -> None:
        """anchor.toml, roster/v<N>.json and `private` names' keys (0600) under `directory`.

        Whatever the umask, the directories and files are never writable by other
        accounts (anchor.toml names the admins every reader trusts) and `keys/` is the
        owner's alone; each file appears whole or not at all (written aside, then moved
        in). A key file is never replaced: one already holding the same key is left as
        it is, one holding anything else is refused (TrustError naming it) before
        anything is written, so a cast written over another's keeps the keys it had."""
        keys = directory / "keys"
        names = list(private)
        for name in names:
            path = keys / f"{name}.key"
            if path.is_symlink() or (path.exists() and not path.is_file()):
                raise TrustError(f"key file {path}: not a regular file; not overwritten")
            if path.exists() and _head(path) != self.signers[name].key.private_pem():
                raise TrustError(
                    f"key file {path}: holds another key than {name}'s "
                    f"{self.signers[name].key.key_id[:16]}; not overwritten (move it away "
                    "to replace it)"
                )
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        (directory / "roster").mkdir(mode=0o755, exist_ok=True)
        keys.mkdir(mode=0o700, exist_ok=True)
        _write_whole(directory / "anchor.toml", anchor_toml(self.anchor).encode(), 0o644)
        for envelope, version in zip(
            self.envelopes, range(1, len(self.envelopes) + 1), strict=True
        ):
            path = directory / "roster" / f"v{version}.json"
            _write_whole(path, encode_envelope(envelope), 0o644)
        for name in names:
            path = keys / f"{name}.key"
            if not path.exists():
                _write_whole(path, self.signers[name].key.private_pem(), 0o600, replace=False)


def _head(path: Path) -> bytes:
    """A key file's first 64 KiB (a PEM key is far shorter; more is not the same key)."""
    with path.open("rb") as f:
        return f.read(65536)


def _write_whole(path: Path, data: bytes, mode: int, *, replace: bool = True) -> None:
    """`data` at `path`, whole or not at all: written to a file beside it created with
    `mode` (the umask can only take bits away), then moved in (`replace`) or linked in
    (never over an existing file: FileExistsError)."""
    aside = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(aside, path)
        else:
            os.link(aside, path)
    finally:
        aside.unlink(missing_ok=True)
