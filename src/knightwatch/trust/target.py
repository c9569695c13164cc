"""A signed request to change the fleet's target release, and the check the admission service runs.

The target release decides what every node must run to be admitted, so who
asked for it is whoever signed the request (an operator on the roster, key
valid now), never a name typed on a command line. The request binds the
release id and its manifest digest (the exact signed release, not a name), the
reason, a unique id, a short expiry and the target record revision it was
decided on: a request held back past its expiry, replayed after it was
applied, decided on a target that has changed since, or made for another fleet
than the one whose roster judges it (`Roster.fleet`) is refused. A second
person's approval (`ApprovalKind.TARGET`, `knightwatch admission approve`)
travels with it; the admission service checks both before it stores the
target. Only a return to the release the fleet was last known-good on, while
the kill that froze it is in force, is one person's: that is the stop
direction.
"""

from __future__ import annotations

import msgspec

from knightwatch.inputs import UNDECODABLE
from knightwatch.release.canonical import sha256_hex
from knightwatch.release.dsse import Envelope, add_signature, new_envelope
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.manifest import Manifest
from knightwatch.trust.approval import APPROVAL_TTL_S, Approval, ApprovalKind, sign_approval
from knightwatch.trust.command import SKEW_NS, Refused, TrustReason, opened, signers_of
from knightwatch.trust.identity import Signer
from knightwatch.trust.roster import Role, Roster, TrustError, fleet_encoded, fleet_mismatch

TARGET_PAYLOAD_TYPE = "application/vnd.knightwatch.target-request+json"
TARGET_TTL_NS = 60 * 1_000_000_000
"""How long a signed target request stays usable (it is sent at once)."""


class TargetCommand(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the requester's signature covers."""

    release_id: str
    manifest_digest: str
    reason: str
    actor: str
    command_id: str
    issued_ns: int
    expires_ns: int
    decided_on: int
    """The target record's revision the requester saw (0: no target yet)."""
    fleet: str = ""
    """The fleet it is for (`Roster.fleet`); not written when "" (as an earlier release)."""


_DECODER = msgspec.json.Decoder(TargetCommand)
_NS_PER_S = 1_000_000_000


def release_ref(release: Envelope, source: str = "release envelope") -> tuple[str, str]:
    """The release id the envelope's manifest names and the manifest's digest (sha256 of the
    payload, as release verification computes it); TrustError naming `source` otherwise."""
    try:
        payload = release.payload_bytes()
        manifest = Manifest.from_statement_bytes(payload, source=source)
    except ReleaseInputError as exc:
        raise TrustError(f"{source}: {exc}") from None
    return manifest.release_id, sha256_hex(payload)


def sign_target(command: TargetCommand, signer: Signer) -> Envelope:
    return add_signature(new_envelope(TARGET_PAYLOAD_TYPE, fleet_encoded(command)), signer.key)


def target_command(
    release: Envelope,
    signer: Signer,
    reason: str,
    *,
    command_id: str,
    now_ns: int,
    decided_on: int,
    fleet: str = "",
) -> Envelope:
    """The requester's signed request for `release`, in `fleet` (its roster's `fleet`)."""
    release_id, digest = release_ref(release)
    command = TargetCommand(
        release_id,
        digest,
        reason,
        signer.name,
        command_id,
        now_ns,
        now_ns + TARGET_TTL_NS,
        decided_on,
        fleet,
    )
    return sign_target(command, signer)


def approve_target(
    release: Envelope,
    approver: Signer,
    requester: str,
    reason: str,
    now_ns: int,
    *,
    fleet: str = "",
) -> Envelope:
    """`approver`'s signed approval of `requester` making `release` the target of `fleet`
    (its roster's `fleet`)."""
    release_id, digest = release_ref(release)
    approval = Approval(
        ApprovalKind.TARGET,
        release_id,
        True,
        None,
        requester,
        reason,
        now_ns,
        now_ns + int(APPROVAL_TTL_S * _NS_PER_S),
        digest=digest,
        fleet=fleet,
    )
    return sign_approval(approval, approver)


def check_target(proof: Envelope, roster: Roster | None, *, now_ns: int) -> TargetCommand:
    """The verified request: signed by its actor, an operator whose key is valid now, issued
    within 5 s of this clock and not past its expiry; `Refused` with the reason otherwise.
    The caller checks what it binds (release, digest, revision) against what it applies."""
    roster, proof, payload = opened(proof, roster, TARGET_PAYLOAD_TYPE, "the target request")
    try:
        command = _DECODER.decode(payload)
    except UNDECODABLE as exc:
        raise Refused(TrustReason.MALFORMED, f"payload: {exc}") from None
    if not 0 < command.expires_ns - command.issued_ns <= TARGET_TTL_NS:
        raise Refused(TrustReason.MALFORMED, "expires_ns: must lie within 60 s after issued_ns")
    wrong_fleet = fleet_mismatch("target request", command.fleet, roster)
    if wrong_fleet is not None:
        raise Refused(TrustReason.WRONG_FLEET, wrong_fleet)
    if command.issued_ns > now_ns + SKEW_NS:
        raise Refused(TrustReason.FROM_FUTURE, "issued more than 5 s ahead of this clock")
    if now_ns > command.expires_ns:
        raise Refused(TrustReason.EXPIRED, "past its expiry (a replay, or held back)")
    by_name = {m.name: m for m in signers_of(proof, payload, roster, command.issued_ns, now_ns)}
    member = by_name.get(command.actor)
    if member is None:
        raise Refused(
            TrustReason.ACTOR_MISMATCH,
            f"actor {command.actor!r} did not sign (signed by {', '.join(sorted(by_name))})",
        )
    if Role.OPERATOR not in member.roles:
        raise Refused(
            TrustReason.ROLE_NOT_ALLOWED,
            f"{command.actor} holds {', '.join(member.roles)}; a target release change is "
            "requested by an operator",
        )
    return command
