"""Who may do what: the roster of people and components, signed by a threshold of admins.

Every state-changing command is judged against the roster by whoever applies
it, so the roster is itself a signed record: version N+1 counts only if a
threshold of distinct admins of version N signed it (version 1 by the admins
of the pinned anchor, a `TrustPolicy` file every process is given). Rotating
or revoking a key is a new version; readers follow the chain as it is stored,
so no process restarts. Versions only move forward (no rollback to a roster
that still trusts a revoked key), and so does each version's issue instant: the
admins judged able to sign it are those valid at that instant, so a version dated
back before a revocation would count the revoked admin's signature again. That
instant is its signers' choice, so whoever receives a version also judges the
admins' keys at the instant it arrives (or, stored, was published): admins whose
keys have expired cannot sign a new version dated back inside their validity.

A name is one person or one component; it may hold several keys (rotation),
and every count of people (approvals, admin thresholds) counts names, never
keys, so one person with two keys is still one person. A component (node,
supervisor, admission service) never holds a person's role: it cannot approve.

An `admin_threshold` of 1 lets one admin take power away at once (revoke a key,
shorten its validity, remove a member); a version that gives power (a key, a
role, a wider validity, any change of approval policy, a higher `admin_threshold`,
or leaves a single admin able to sign, the other admins revoked, removed or their keys
ended) still needs two admins whenever the version before it has two or more, or one
admin could add a second identity for themselves and act as two, or raise the threshold
to as many admins as there are and never be revoked without their own signature. A
fresh site's one admin signs alone. Lowering the threshold takes the version before's
own threshold of admins, as every change does.

No version, whoever signs it, leaves the fleet with no key able to kill (an operator's
or the supervisor's, valid) sooner than the version before it did: revoking or ending
every such key, dropping the operator role from everyone, or keeping only keys that
begin later would have every node refuse every kill, the stop direction gated by a
roster change. A replacement key enrolled in the same version keeps the stop.

A roster names its fleet (`fleet`, e.g. "prod-ldn"), and every later version keeps
that name: the same admins may anchor a staging and a production fleet, so a version
they signed for staging, stored in production's roster bucket (one admin may write
it), was otherwise production's next version. Approvals and target requests name the
fleet they are for too (`fleet_mismatch`). An unnamed roster (as every earlier
release wrote) may name itself once; unnamed, nothing is bound to a fleet.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property

import msgspec

from knightwatch.errors import KnightwatchError
from knightwatch.flags.activation import MarketHours, SecondApprover
from knightwatch.inputs import NAME_RULE, UNDECODABLE, is_name
from knightwatch.release.dsse import Envelope, add_signature, check_signatures, new_envelope
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.keys import SigningKey, VerifyKey
from knightwatch.release.signing import TrustedKey, TrustPolicy

ROSTER_PAYLOAD_TYPE = "application/vnd.knightwatch.roster+json"


class TrustError(KnightwatchError, ValueError):
    """A roster, key or command that cannot be trusted; the message names the field and rule."""


class Role(StrEnum):
    VIEWER = "viewer"
    """Reads everything, changes nothing."""
    OPERATOR = "operator"
    """Kill, halt, drain, flag to its safe default, rollout abort; requests resumes."""
    APPROVER = "approver"
    """The second person on a resume or a risk-adding change."""
    ADMIN = "admin"
    """Signs roster versions (with a threshold of other admins); no approval power by role."""
    SUPERVISOR = "supervisor"
    """The automatic halter: kills and drains, nothing else."""
    NODE = "node"
    """A trading process: its own confirmations, heartbeats, metrics and automatic halts."""
    ADMISSION = "admission"
    """The admission service: verdicts and the target release record."""
    VENUE = "venue"
    """The drill's simulated venue: answers orders, injects the drill's runaway."""


PERSON_ROLES = frozenset({Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN})
COMPONENT_ROLES = frozenset({Role.SUPERVISOR, Role.NODE, Role.ADMISSION, Role.VENUE})


class Member(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One key of one person or component, with its roles and validity."""

    name: str
    key_id: str
    public_key: str
    roles: tuple[Role, ...]
    valid_from_ns: int = 0
    valid_until_ns: int = 0
    """0: no end."""
    revoked_ns: int = 0
    """0: not revoked; else nothing issued at or after this instant counts."""

    def valid_at(self, ns: int) -> bool:
        return (
            self.valid_from_ns <= ns
            and (self.valid_until_ns == 0 or ns < self.valid_until_ns)
            and (self.revoked_ns == 0 or ns < self.revoked_ns)
        )

    @property
    def person(self) -> bool:
        return any(r in PERSON_ROLES for r in self.roles)


class ApprovalPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When a loosening change needs a second person (the flags' market-hours rule, reused)."""

    resume: SecondApprover = SecondApprover.ALWAYS
    flag: SecondApprover = SecondApprover.MARKET_HOURS
    """A trading-behaviour flag moved away from its safe default (every node checks it;
    the activation gate's own policy file can only ask for more)."""
    target: SecondApprover = SecondApprover.ALWAYS
    """A change of the fleet's target release (a return to the known-good one while its
    kill is in force is the stop direction: one person, whatever this says)."""
    market_hours: MarketHours = MarketHours()

    def __post_init__(self) -> None:
        # the activation policy file's rule (`MarketHours.check_session`): hours with no
        # moment in them would make "market_hours" mean "never" (no second person asked
        # for), and a bound with a UTC offset makes `is_open` raise on every check
        try:
            self.market_hours.check_session()
        except ValueError as exc:
            raise TrustError(f"roster approvals.{exc}") from None

    def second_person(self, rule: SecondApprover, wall_ns: int) -> bool:
        if rule is SecondApprover.ALWAYS:
            return True
        return rule is SecondApprover.MARKET_HOURS and self.market_hours.is_open(wall_ns)


class Roster(msgspec.Struct, frozen=True, forbid_unknown_fields=True, dict=True):
    version: int
    issued_ns: int
    members: tuple[Member, ...]
    admin_threshold: int = 2
    approvals: ApprovalPolicy = ApprovalPolicy()
    fleet: str = ""
    """The fleet (site) this roster is for, named by its admins ("": unnamed, as before).
    Every later version keeps it, and approvals and target requests name it: the same
    people's keys on a staging and a production roster sign for one of them only.
    ("" is not written: a version naming no fleet is the bytes an earlier release wrote
    and reads, `fleet_encoded`.)"""

    def __post_init__(self) -> None:
        if self.version < 1:
            raise TrustError(f"roster version: must be >= 1 (got {self.version})")
        if self.fleet and not is_name(self.fleet):
            raise TrustError(f"roster fleet: {NAME_RULE} (got {self.fleet!r})")
        seen: set[str] = set()
        folded: dict[str, str] = {}
        for i, m in enumerate(self.members):
            where = f"roster members[{i}]"
            if not is_name(m.name):
                raise TrustError(f"{where}.name: {NAME_RULE} (got {m.name!r})")
            # one spelling for one name, as the release layer's signers: "Bob" beside
            # "bob" would be two people to every count of names
            other = folded.setdefault(m.name.lower(), m.name)
            if other != m.name:
                raise TrustError(
                    f"{where}.name: {m.name!r} differs from {other!r} only by case; one "
                    "person or component has one name"
                )
            if not m.roles:
                raise TrustError(f"{where}.roles: must name at least one role")
            roles = set(m.roles)
            if roles & PERSON_ROLES and roles & COMPONENT_ROLES:
                raise TrustError(
                    f"{where}.roles: a component ({', '.join(sorted(roles & COMPONENT_ROLES))}) "
                    "cannot also hold a person's role"
                )
            try:
                key = VerifyKey.from_base64(m.public_key, field=f"{where}.public_key")
            except ReleaseInputError as exc:
                raise TrustError(str(exc)) from None
            if key.key_id != m.key_id:
                raise TrustError(f"{where}.key_id: not the id of its public_key ({key.key_id})")
            if m.key_id in seen:
                raise TrustError(f"{where}.key_id: key {m.key_id[:16]} listed twice")
            seen.add(m.key_id)
        for m in self.members:
            if any(set(o.roles) != set(m.roles) for o in self.members if o.name == m.name):
                raise TrustError(
                    f"roster member {m.name}: every key of one name holds the same roles"
                )
        admins = {m.name for m in self.members if Role.ADMIN in m.roles and m.revoked_ns == 0}
        if not 1 <= self.admin_threshold <= max(len(admins), 1) or not admins:
            raise TrustError(
                f"roster admin_threshold: {self.admin_threshold} must be between 1 and the "
                f"number of admins ({len(admins)})"
            )

    @cached_property
    def _keys(self) -> dict[str, tuple[Member, VerifyKey]]:
        return {
            m.key_id: (m, VerifyKey.from_base64(m.public_key, field=m.key_id)) for m in self.members
        }

    def verify_keys(self) -> dict[str, VerifyKey]:
        return {k: v for k, (_, v) in self._keys.items()}

    def key(self, key_id: str) -> tuple[Member, VerifyKey] | None:
        """The member holding `key_id` and its public key object, built once per version."""
        return self._keys.get(key_id)

    def member(self, key_id: str) -> Member | None:
        found = self._keys.get(key_id)
        return found[0] if found else None

    def keys_of(self, name: str) -> list[Member]:
        return [m for m in self.members if m.name == name]

    def has_role(self, name: str, role: Role) -> bool:
        return any(role in m.roles for m in self.keys_of(name))

    def names_with(self, role: Role) -> list[str]:
        return sorted({m.name for m in self.members if role in m.roles})

    def admins(self, at_ns: int, received_ns: int | None = None) -> TrustPolicy:
        """The admins able to sign the next version at `at_ns`, as a threshold policy (its
        threshold lowered to their number when fewer are valid then: it names who signed;
        `verify_roster` still requires this version's own `admin_threshold`). With
        `received_ns` (when the version is received or, stored, was published), only keys
        valid then too: `at_ns` is the date its signers chose."""
        keys = tuple(
            TrustedKey(m.name, m.key_id, m.public_key)
            for m in self.members
            if Role.ADMIN in m.roles
            and m.valid_at(at_ns)
            and (received_ns is None or m.valid_at(received_ns))
        )
        threshold = min(self.admin_threshold, len({k.signer for k in keys}))
        return TrustPolicy(max(threshold, 1), keys) if keys else _NOBODY


_NOBODY_KEY = SigningKey.generate().public
_NOBODY = TrustPolicy(1, (TrustedKey("-", _NOBODY_KEY.key_id, _NOBODY_KEY.to_base64()),))
"""A policy no stored signature can meet (its key is thrown away): a roster without admins."""

ROSTER_DECODER = msgspec.json.Decoder(Roster)
_ENCODER = msgspec.json.Encoder(order="sorted")


def fleet_encoded(value: msgspec.Struct) -> bytes:
    """`value` (a struct with a `fleet` field) in JSON with sorted keys, its `fleet` left
    out when "": the bytes an earlier release wrote, which its readers (unknown fields
    refused) still take."""
    if getattr(value, "fleet", ""):
        return _ENCODER.encode(value)
    fields = msgspec.to_builtins(value)
    del fields["fleet"]
    return _ENCODER.encode(fields)


def roster_envelope(roster: Roster) -> Envelope:
    return new_envelope(ROSTER_PAYLOAD_TYPE, fleet_encoded(roster))


def sign_roster(envelope: Envelope, key: SigningKey) -> Envelope:
    if envelope.payload_type != ROSTER_PAYLOAD_TYPE:
        raise TrustError(f"envelope payloadType: {envelope.payload_type!r} is not a roster")
    return add_signature(envelope, key)


def decode_roster(envelope: Envelope) -> Roster:
    if envelope.payload_type != ROSTER_PAYLOAD_TYPE:
        raise TrustError(f"roster payloadType: {envelope.payload_type!r} is not a roster")
    try:
        return ROSTER_DECODER.decode(envelope.payload_bytes())
    except (*UNDECODABLE, ReleaseInputError) as exc:
        raise TrustError(f"roster payload: {exc}") from None


def signer_names(envelope: Envelope, policy: TrustPolicy) -> list[str]:
    """Distinct signers (names) whose signatures verify; TrustError if any known one does not."""
    check = check_signatures(envelope, policy.verify_keys())
    if check.invalid:
        raise TrustError(
            f"signature by {', '.join(sorted({policy.signer_of(k) for k in check.invalid}))} "
            "does not verify: the payload was changed after signing"
        )
    return sorted({policy.signer_of(k) for k in check.valid})


def admin_names(roster: Roster) -> set[str]:
    """The admins a roster counts (a name holding a key not revoked), as its threshold does."""
    return {m.name for m in roster.members if Role.ADMIN in m.roles and m.revoked_ns == 0}


def _end(ns: int) -> float:
    return float("inf") if ns == 0 else ns


def granted(before: Roster, after: Roster) -> str:
    """What `after` gives that `before` did not, as a clause ("" if nothing: it only takes
    away): a key it did not hold (a new key, or one moved to another name), a role, a
    wider validity, a lifted or later revocation, a changed approval policy, a higher
    `admin_threshold` (a veto over the other admins), or fewer than two admins with a valid
    key sooner than before (the one left would then change it alone: revoked, removed, or
    their keys ended)."""
    old = {m.key_id: m for m in before.members}
    for m in after.members:
        prev = old.get(m.key_id)
        if prev is None:
            return f"adds key {m.key_id[:16]} for {m.name}"
        if prev.name != m.name:
            return f"moves key {m.key_id[:16]} from {prev.name} to {m.name}"
        roles = set(m.roles) - set(prev.roles)
        if roles:
            return f"gives {m.name} the role(s) {', '.join(sorted(roles))}"
        if (
            m.valid_from_ns < prev.valid_from_ns
            or _end(m.valid_until_ns) > _end(prev.valid_until_ns)
            or _end(m.revoked_ns) > _end(prev.revoked_ns)
        ):
            return f"widens the validity of {m.name}'s key {m.key_id[:16]}"
    if after.approvals != before.approvals:
        return "changes the approval policy"
    if after.admin_threshold > before.admin_threshold:
        # a veto for every admin, first of all the one who raised it: one admin of two at
        # threshold 1 raising it to 2 could no longer be revoked without their own signature
        return f"raises admin_threshold from {before.admin_threshold} to {after.admin_threshold}"
    at = after.issued_ns
    if _one_admin_ns(after, at) < _one_admin_ns(before, at):
        # counted by validity, not by revocation alone: one admin ending the other's key
        # (now or in a minute) left themselves the only admin able to sign, and the
        # other could then never revoke them
        return "leaves one admin"
    return ""


def _one_admin_ns(roster: Roster, from_ns: int) -> float:
    """The first instant at or after `from_ns` when fewer than two admins (names) hold a
    valid key (inf if never): it begins at `from_ns` or where an admin's key ends."""
    keys = [m for m in roster.members if Role.ADMIN in m.roles]
    ends = {from_ns}
    for m in keys:
        ends |= {ns for ns in (m.valid_until_ns, m.revoked_ns) if ns > from_ns}
    for ns in sorted(ends):
        if len({m.name for m in keys if m.valid_at(ns)}) < 2:
            return ns
    return float("inf")


def fleet_mismatch(what: str, named: str, roster: Roster) -> str | None:
    """Why a signed `what` naming fleet `named` does not count under `roster`, or None
    when it names the roster's own fleet ("" for both: an unnamed fleet, as before)."""
    if named == roster.fleet:
        return None
    here = f"this is fleet {roster.fleet!r}" if roster.fleet else "this roster names no fleet"
    made = f"it was made for fleet {named!r}" if named else "it names no fleet"
    return (
        f"{what} fleet: {made}; {here} (it counts only in the fleet it names: ask for one "
        "made here)"
    )


KILL_ROLES = frozenset({Role.OPERATOR, Role.SUPERVISOR})
"""The roles whose one key may issue a kill (`trust.command`'s stop check)."""


def _stop_lost_ns(roster: Roster, from_ns: int) -> float:
    """The first instant at or after `from_ns` when no key of `roster` able to kill is
    valid (inf if none): a gap begins at `from_ns` or where such a key ends."""
    kill = [m for m in roster.members if KILL_ROLES & set(m.roles)]
    ends = {from_ns}
    for m in kill:
        ends |= {ns for ns in (m.valid_until_ns, m.revoked_ns) if ns > from_ns}
    for ns in sorted(ends):
        if not any(m.valid_at(ns) for m in kill):
            return ns
    return float("inf")


def check_stop_kept(before: Roster, after: Roster) -> None:
    """TrustError if `after` leaves the fleet with no key able to kill (an operator's or the
    supervisor's, valid) sooner than `before` did: revoking or ending every such key, now
    or later, dropping the operator role from everyone, or keeping only keys that begin
    later. The stop direction is never gated by a roster change, whoever signs it; a
    replacement key enrolled in the same version keeps it. Ending every other key too is
    no excuse: a node trades on without its key. A roster that could not kill before (a
    fresh site) is not made worse by a version that leaves that as it was."""
    at = after.issued_ns
    lost = _stop_lost_ns(after, at)
    if lost >= _stop_lost_ns(before, at):
        return
    when = "at its issue time" if lost == at else f"from {int(lost)}"
    raise TrustError(
        f"roster version {after.version}: no operator or supervisor key would be valid "
        f"{when} (issued_ns {at}): a roster version never leaves the fleet unable to kill; "
        "keep or enrol an operator or supervisor key valid throughout (e.g. rotate instead "
        "of revoke)"
    )


def verify_roster(
    envelope: Envelope,
    admins: TrustPolicy,
    *,
    after: Roster | None,
    received_ns: int | None = None,
) -> Roster:
    """The roster in `envelope` if a threshold of `admins` signed it and it follows `after`
    (`received_ns`: the instant `admins` were also judged at, named in a refusal)."""
    roster = decode_roster(envelope)
    expected = after.version + 1 if after is not None else 1
    if roster.version != expected:
        raise TrustError(f"roster version {roster.version}: expected {expected}")
    if after is not None and roster.issued_ns <= after.issued_ns:
        # The admins who count are those valid at the version's own instant, which its
        # signers choose: dated back before a revocation, a revoked admin's key would count
        # again (and the version could undo the revocation).
        raise TrustError(
            f"roster version {roster.version} issued_ns: {roster.issued_ns} must be after "
            f"version {after.version}'s ({after.issued_ns}): versions only move forward"
        )
    if after is not None and after.fleet and roster.fleet != after.fleet:
        # the same admins may sign for staging and production: a version signed for one
        # fleet, stored in another's roster bucket, would replace that fleet's roster
        raise TrustError(
            f"roster version {roster.version} fleet: {roster.fleet!r} is not fleet "
            f"{after.fleet!r} of version {after.version}: a fleet's roster keeps its name "
            "(a version signed for another fleet is refused; re-anchor to rename)"
        )
    if after is not None:
        check_stop_kept(after, roster)
    names = signer_names(envelope, admins)
    # The threshold is the previous version's own, never fewer: `admins` holds only the
    # keys valid at the new version's instant, which its signers choose, so dated past
    # the other admins' key expiry it would otherwise let one admin sign alone.
    required = admins.threshold if after is None else after.admin_threshold
    grant = granted(after, roster) if after is not None and required < 2 else ""
    if grant and after is not None and len(admin_names(after)) >= 2 and len(names) < 2:
        # admin_threshold 1 lets one admin take power away at once (revoke, shorten,
        # remove); giving it takes two whenever there are two, or one admin could add a
        # second identity for themselves (an approver, another admin) and act as two
        raise TrustError(
            f"roster version {roster.version}: it {grant}, and is signed by {len(names)} "
            f"admin(s) ({', '.join(names) or 'none'}) of 2 required: with two or more admins "
            "a version that gives power (a key, a role, a wider validity, another approval "
            "policy, a higher admin_threshold, a single admin left) needs two, "
            f"whatever admin_threshold ({required}) says"
        )
    if len(names) < required:
        valid = {k.signer for k in admins.keys} if admins is not _NOBODY else set()
        when = "" if received_ns is None else f" and when received ({received_ns})"
        short = (
            f"; only {len(valid)} admin(s) hold a key valid at its issue time "
            f"{roster.issued_ns}{when}: the roster cannot change without {required} "
            "(re-anchor)"
            if len(valid) < required
            else ""
        )
        raise TrustError(
            f"roster version {roster.version}: signed by {len(names)} admin(s) "
            f"({', '.join(names) or 'none'}) of {required} required{short}"
        )
    return roster
