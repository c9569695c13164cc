"""A second person's approval of a flag change, a rollout or a target release, signed by them.

A flag turned towards trading behaviour, or rolled out, and a change of the
fleet's target release need a second person with the approver role. The
approver names what they approve (the flag, the value, the nodes, or the
release and its manifest digest, and who will make the change) and signs it
with their own key on their own machine (`knightwatch flags approve`,
`knightwatch admission approve`); the person making the change hands the file
over (`--approval FILE`). Who approved is whoever
signed, checked against the roster: never the requester (any key of theirs),
never a name typed on a command line, never after the approval expired, never
by a key that is not valid both when the approval was signed and when it is
used (an approval dated back before its key's revocation is no approval),
never by one claiming to stay usable longer than `APPROVAL_TTL_S`, and never in
another fleet than the one it names (`Roster.fleet`): the same people hold keys
on staging and production rosters, and an approval made on one counted on the
other within its hour.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from knightwatch.inputs import UNDECODABLE
from knightwatch.release.dsse import Envelope, add_signature, check_signatures, new_envelope
from knightwatch.release.errors import ReleaseInputError
from knightwatch.trust.command import SKEW_NS
from knightwatch.trust.identity import Signer
from knightwatch.trust.roster import Role, Roster, TrustError, fleet_encoded, fleet_mismatch

APPROVAL_PAYLOAD_TYPE = "application/vnd.knightwatch.approval+json"
APPROVAL_TTL_S = 3600.0
"""How long an approval stays usable after it was signed."""


class ApprovalKind(StrEnum):
    FLAG = "flag"
    """`flags set FLAG VALUE`."""
    ROLLOUT = "rollout"
    """`rollout start FLAG` (to the flag's non-default value) with exactly the plan whose
    digest (`flags.rollout.plan_digest`) is `digest`."""
    TARGET = "target"
    """`admission target ENVELOPE`: `flag_id` holds the release id, `digest` its manifest's."""


class Approval(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the second person approves, exactly."""

    kind: ApprovalKind
    flag_id: str
    value: bool
    nodes: tuple[str, ...] | None
    """None: the whole fleet."""
    requester: str
    """The roster name that will make the change (it cannot approve it itself)."""
    reason: str
    issued_ns: int
    expires_ns: int
    digest: str = ""
    """TARGET: the sha256 of the release manifest (the envelope's payload) approved;
    ROLLOUT: the rollout plan's digest (stages, fractions, holds, gates)."""
    fleet: str = ""
    """The fleet it is for (`Roster.fleet` where it was made): it counts only where the
    roster names that fleet. "" is not written: one naming no fleet is the bytes an
    earlier release wrote and reads."""


_DECODER = msgspec.json.Decoder(Approval)
_TTL_NS = int(APPROVAL_TTL_S * 1_000_000_000) + SKEW_NS
"""The longest window an approval may claim: the TTL its makers give it, and the 5 s a
clock may be off by (a window a few ns over the hour is a rounding, not a year)."""


def sign_approval(approval: Approval, signer: Signer) -> Envelope:
    return add_signature(new_envelope(APPROVAL_PAYLOAD_TYPE, fleet_encoded(approval)), signer.key)


def check_approval(
    envelope: Envelope,
    roster: Roster | None,
    *,
    kind: ApprovalKind,
    flag_id: str,
    value: bool,
    nodes: tuple[str, ...] | None,
    requester: str,
    now_ns: int,
    digest: str = "",
    keys_valid_ns: int | None = None,
) -> str:
    """The approver's roster name if `envelope` approves exactly this change; TrustError
    naming the rule otherwise.

    The approver's key must be valid at the approval's issue time and at `now_ns` (the
    instant the change is judged at), and at `keys_valid_ns` too when given (a change
    that arrives live: the reader's own clock)."""
    if roster is None:
        raise TrustError("approval: no verified roster yet")
    if envelope.payload_type != APPROVAL_PAYLOAD_TYPE:
        raise TrustError(f"approval payloadType: {envelope.payload_type!r} is not an approval")
    try:
        approval = _DECODER.decode(envelope.payload_bytes())
    except (*UNDECODABLE, ReleaseInputError) as exc:
        raise TrustError(f"approval payload: {exc}") from None
    wanted = (kind, flag_id, value, nodes, requester, digest)
    got = (
        approval.kind,
        approval.flag_id,
        approval.value,
        approval.nodes,
        approval.requester,
        approval.digest,
    )
    if got != wanted and approval.kind is ApprovalKind.TARGET:
        raise TrustError(
            f"approval: it approves target release {approval.flag_id} (manifest "
            f"{approval.digest[:12]}) by {approval.requester}, not this change"
        )
    if got != wanted:
        raise TrustError(
            f"approval: it approves {approval.kind} {approval.flag_id}={approval.value} on "
            f"{','.join(approval.nodes) if approval.nodes else 'the fleet'} by "
            f"{approval.requester}, not this change"
        )
    wrong_fleet = fleet_mismatch("approval", approval.fleet, roster)
    if wrong_fleet is not None:
        raise TrustError(wrong_fleet)
    if not 0 <= approval.expires_ns - approval.issued_ns <= _TTL_NS:
        raise TrustError(
            f"approval expires_ns: must lie within {APPROVAL_TTL_S / 60:.0f} min after "
            "issued_ns (how long an approval stays usable)"
        )
    if not approval.issued_ns <= now_ns <= approval.expires_ns:
        raise TrustError("approval: expired (or issued in the future); ask for a new one")
    check = check_signatures(envelope, roster.verify_keys())
    if check.invalid:
        raise TrustError("approval: a signature does not verify (the file was changed)")
    names = set()
    not_valid: list[str] = []
    instants = [approval.issued_ns, now_ns]
    if keys_valid_ns is not None:
        instants.append(keys_valid_ns)
    for key_id in sorted(check.valid):
        member = roster.member(key_id)
        if member is None:
            continue
        if all(member.valid_at(ns) for ns in instants):
            names.add(member.name)
        else:
            what = "revoked" if member.revoked_ns else "outside its validity"
            not_valid.append(f"{member.name}'s key {key_id[:16]} is {what}")
    approvers = sorted(n for n in names if n != requester and roster.has_role(n, Role.APPROVER))
    if not approvers:
        signed = ", ".join(sorted(names)) or "nobody on the roster"
        invalid = f" ({'; '.join(not_valid)})" if not_valid else ""
        raise TrustError(
            f"approval: signed by {signed}{invalid}; it needs a person with the approver role "
            f"other than {requester} (the requester never counts, any key of theirs)"
        )
    return approvers[0]


def decode_approval_file(data: bytes, source: str) -> Envelope:
    try:
        return msgspec.json.decode(data, type=Envelope)
    except UNDECODABLE as exc:
        raise TrustError(f"{source}: not a signed approval: {exc}") from None
