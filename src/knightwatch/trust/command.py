"""Signed kill-switch commands and the one check every reader runs before trusting one.

A command travels as a DSSE envelope whose payload binds the scope and key,
the new state, the actor, a unique id, when it was issued and when it expires,
and, for a resume, the exact halt it lifts (that halt's command id and the
store revision it was decided on). Nodes, the kill switch, the supervisor and
`status` all call `check_state`; what it refuses is never applied.

What the check enforces, by direction:

* stop (HALTED, REDUCING): one signature by an operator or the supervisor
  whose name is the actor, or a node's automatic halt (actor "guard:<code>")
  of its own node or a strategy/symbol scope, never the fleet;
* resume (ACTIVE): the requester (an operator, the actor) plus, when the
  roster's approval policy asks for it at that instant, a second, different
  person with the approver role. People are counted by name, so a second key
  of the requester is not a second person. A resume carries its ramp (the
  fraction of the limits held per stage and for how long): what both people
  signed is the pace nodes step back up at, by their own clocks, so neither
  can shorten it alone afterwards. A stop carries none.

A fleet command names key "fleet" (the Guard's one fleet latch); one under another
key is malformed, in either direction: the kill switch never makes one.

Freshness (issue time within 5 s of the reader's clock, not past expiry) is
checked on live resumes only. A resume read from the store is judged at the time
the store's server wrote it (`stored_ns`, which no client sets), not at the issue
time its signers chose: its keys valid and the approval policy met then, stored
before its expiry and no earlier than 5 s before its issue time. A kill is never
refused for its clock: an issuer whose clock lags must still stop the fleet, and
a replayed kill can only stop trading (fail closed), and only an operator or the
supervisor may publish one at all. A stored kill from yesterday is still the state of
record; a stored resume is checked against the store's own history by the
reader (`decided_on` must be the revision it superseded), which a replayed
old resume cannot meet.

That binds a resume to one halt, not to one fleet: the same two people may sign on
staging and production, and a staging kill stored again in production's kill state
verifies there (a stop, from anyone who may kill), so the staging resume naming it,
stored right after it at the revision it names, lifted production's halt of that
slot. A resume therefore names its fleet (`fleet`, the roster's `Roster.fleet`) and
counts only where the roster names that fleet (`wrong_fleet`); a stop is never
refused for its fleet.
"""

from __future__ import annotations

import base64
from enum import StrEnum

import msgspec

from knightwatch.errors import KnightwatchError
from knightwatch.inputs import UNDECODABLE
from knightwatch.release.dsse import Envelope, add_signature, new_envelope, pae
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.keys import SigningKey
from knightwatch.state import FLEET_KEY, Scope, TradingState
from knightwatch.trust.roster import Member, Role, Roster, fleet_encoded, fleet_mismatch

COMMAND_PAYLOAD_TYPE = "application/vnd.knightwatch.state-command+json"
GUARD_ACTOR = "guard:"
MAX_TTL_NS = 24 * 3600 * 1_000_000_000
"""The longest a command may claim to stay valid (a resume request's approval window)."""
SKEW_NS = 5 * 1_000_000_000
"""How far a live command's issue time may lie ahead of the reader's clock."""


class TrustReason(StrEnum):
    """Stable codes for a refused command (metrics, the flight recorder, `status`)."""

    NO_ROSTER = "no_roster"
    UNSIGNED = "unsigned"
    MALFORMED = "malformed"
    PAYLOAD_MISMATCH = "payload_mismatch"
    SIGNATURE_INVALID = "signature_invalid"
    UNKNOWN_KEY = "unknown_key"
    KEY_NOT_VALID = "key_not_valid"
    ROLE_NOT_ALLOWED = "role_not_allowed"
    ACTOR_MISMATCH = "actor_mismatch"
    EXPIRED = "expired"
    FROM_FUTURE = "issued_in_future"
    APPROVAL_MISSING = "approval_missing"
    STALE = "stale"
    REPLAYED = "replayed"
    APPROVAL_INVALID = "approval_invalid"
    SELF_APPROVAL = "self_approval"
    FROZEN_BY_KILL = "frozen_by_kill"
    WRONG_FLEET = "wrong_fleet"
    """Signed for another fleet than the one whose roster judges it (`Roster.fleet`)."""


class Refused(KnightwatchError, ValueError):
    """A command that must not be applied, with its reason code."""

    def __init__(self, reason: TrustReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")


class StateCommand(msgspec.Struct, frozen=True):
    """What a kill-switch entry's signatures cover (every field of the entry but the proof)."""

    scope: Scope
    key: str
    state: TradingState
    reason: str
    actor: str
    command_id: str
    issued_ns: int
    expires_ns: int
    supersedes: str = ""
    decided_on: int = 0
    ramp: tuple[tuple[float, float], ...] = ()
    """A resume's stages: (fraction of the limits, seconds held), the last at 1.0."""
    fleet: str = ""
    """The fleet it is for (`Roster.fleet`): a resume counts only there. A stored entry
    need not carry it (its proof does); "" is not written, as an earlier release wrote."""


MAX_RAMP_STAGES = 16
MAX_RAMP_S = 24 * 3600.0
"""The longest a signed ramp may hold limits below full (its stages before the last)."""
MIN_HOLD_S = 0.1
"""The shortest hold a stage below full limits may have. A shorter one is no stage: the
ramp controller looks at the stage every 0.05 s and can step past it unrecorded, no
metrics interval falls within it to judge a spike by, and a hold of 1e-300 s (0 ns once
timed) was shown to both people as "10% for 1e-300 s" while it resumed at full limits at
once. Nodes refuse such a ramp as the controller does: one written into the store
directly (a writer of the kill state) no longer steps them through it at once."""


def ramp_problem(ramp: tuple[tuple[float, float], ...], name: str = "ramp") -> str | None:
    """What is wrong with a resume's signed ramp, or None: fractions in (0, 1] that never
    decrease and end at 1.0, holds of finite seconds >= 0 (>= `MIN_HOLD_S` below full
    limits), at most `MAX_RAMP_STAGES`
    stages and `MAX_RAMP_S` below full limits. `name` is the field the message names
    (a config file's `[ramp]` calls it `stages`)."""
    if len(ramp) > MAX_RAMP_STAGES:
        return f"{name}: at most {MAX_RAMP_STAGES} stages (got {len(ramp)})"
    last = 0.0
    for i, (fraction, hold_s) in enumerate(ramp):
        if not 0.0 < fraction <= 1.0:
            return f"{name}[{i}].fraction: must be in (0, 1] (got {fraction})"
        if fraction < last:
            return f"{name}[{i}].fraction: must not be below the stage before ({last})"
        if not 0.0 <= hold_s <= MAX_RAMP_S:
            return f"{name}[{i}].hold_s: must be within 0..{MAX_RAMP_S:g} s (got {hold_s})"
        if fraction < 1.0 and hold_s < MIN_HOLD_S:
            return (
                f"{name}[{i}].hold_s: must be >= {MIN_HOLD_S:g} s below full limits (got {hold_s})"
            )
        last = fraction
    if ramp and ramp[-1][0] != 1.0:
        return f"{name}: the last stage must be 1.0 (full limits)"
    if ramp_ends_ns(ramp) > MAX_RAMP_S * 1e9:
        return f"{name}: its stages below full limits must total at most {MAX_RAMP_S:g} s"
    return None


def ramp_fraction(ramp: tuple[tuple[float, float], ...], elapsed_ns: int) -> float:
    """The fraction of the limits `ramp` allows `elapsed_ns` after its resume took effect."""
    at = 0.0
    for fraction, hold_s in ramp[:-1]:
        at += hold_s
        if elapsed_ns < int(at * 1e9):  # the boundaries `ramp_ends_ns` uses, to the ns
            return fraction
    return 1.0


def ramp_ends_ns(ramp: tuple[tuple[float, float], ...]) -> int:
    """How long after its resume took effect `ramp` reaches full limits (ns)."""
    return int(sum(h for _, h in ramp[:-1]) * 1e9)


class Checked(msgspec.Struct, frozen=True):
    """Who a verified command is from: the actor and, for a resume, the approvers."""

    actor: str
    approvers: tuple[str, ...] = ()

    def describe(self) -> str:
        return self.actor + (
            f" (approved by {', '.join(self.approvers)})" if self.approvers else ""
        )


_ENCODER = msgspec.json.Encoder(order="sorted")
_DECODER = msgspec.json.Decoder(StateCommand)
_STRICT = msgspec.json.Decoder(
    msgspec.defstruct("StrictCommand", [], bases=(StateCommand,), forbid_unknown_fields=True)
)
_ANY = msgspec.json.Decoder()


def _check_canonical(payload: bytes) -> None:
    """A resume's signatures count only over the bytes the encoder writes (sorted keys, each
    once, no padding or escapes it would not write) of fields every reader knows: a field
    this reader would drop (a newer writer's narrowing) or a key another JSON reader takes
    differently would lift more than its two people signed. An entry stored by an earlier
    version lacks later fields (`ramp`): their defaults are not written, as then. A stop is
    never held to this (whatever it says beyond its fields, it only stops)."""
    try:
        _STRICT.decode(payload)
        canonical = _ENCODER.encode(_ANY.decode(payload)) == payload
    except UNDECODABLE as exc:
        raise Refused(TrustReason.MALFORMED, f"payload: {exc}") from None
    if not canonical:
        raise Refused(
            TrustReason.MALFORMED,
            "payload: a resume is signed over its canonical encoding (sorted keys, each once, "
            "no padding or escapes); these bytes are not",
        )


def command_envelope(command: StateCommand) -> Envelope:
    # naming no fleet: the bytes an earlier release signed (its readers take a resume only
    # with the fields they know)
    return new_envelope(COMMAND_PAYLOAD_TYPE, fleet_encoded(command))


def sign_command(command: StateCommand, key: SigningKey) -> Envelope:
    return add_signature(command_envelope(command), key)


def opened(
    proof: Envelope | None, roster: Roster | None, payload_type: str, what: str
) -> tuple[Roster, Envelope, bytes]:
    """The roster, the proof and its payload bytes, once what every check asks first holds:
    a roster to judge by, a proof at all, of `payload_type`, whose payload is base64.
    `what` names the signed thing in the refusal ("the entry", "the ramp record")."""
    if roster is None:
        raise Refused(TrustReason.NO_ROSTER, "no verified roster yet: nothing can be trusted")
    if proof is None:
        raise Refused(TrustReason.UNSIGNED, f"{what} carries no signature")
    if proof.payload_type != payload_type:
        raise Refused(TrustReason.MALFORMED, f"payloadType {proof.payload_type!r}")
    try:
        return roster, proof, proof.payload_bytes()
    except ReleaseInputError as exc:
        raise Refused(TrustReason.MALFORMED, f"payload: {exc}") from None


def signers_of(
    proof: Envelope, payload: bytes, roster: Roster, at_ns: int, now_ns: int | None
) -> list[Member]:
    """The roster members whose signatures verify over `payload` (decoded once, by the
    caller), each with its public key object as the roster version built it."""
    message = pae(proof.payload_type, payload)
    members: list[Member] = []
    unknown: list[str] = []
    for signature in proof.signatures:
        found = roster.key(signature.keyid)
        if found is None:
            unknown.append(signature.keyid)
            continue
        member, key = found
        try:
            raw = base64.b64decode(signature.sig, validate=True)
        except ValueError:  # binascii.Error, or a character outside ASCII: no signature
            raw = b""
        if not key.verify(raw, message):
            raise Refused(
                TrustReason.SIGNATURE_INVALID,
                f"signature by key {signature.keyid[:16]} does not verify over this command",
            )
        if member not in members:
            members.append(member)
    if not members:
        ids = ", ".join(s.keyid[:16] for s in proof.signatures) or "none"
        reason = TrustReason.UNKNOWN_KEY if proof.signatures else TrustReason.UNSIGNED
        raise Refused(reason, f"no signature by a key on the roster (keys: {ids})")
    for m in sorted(members, key=lambda m: m.key_id):
        if not m.valid_at(at_ns) or (now_ns is not None and not m.valid_at(now_ns)):
            what = "revoked" if m.revoked_ns else "outside its validity"
            raise Refused(TrustReason.KEY_NOT_VALID, f"key {m.key_id[:16]} of {m.name} is {what}")
    return members


def check_state(
    command: StateCommand,
    proof: Envelope | None,
    roster: Roster | None,
    *,
    now_ns: int,
    live: bool,
    stored_ns: int | None = None,
) -> Checked:
    """Verify a kill-switch command; `Refused` with a reason code if it must not be applied.

    `live`: the command arrived as news (announcement, republished store
    write), so its keys must be valid now as well, and a resume must be fresh.
    `stored_ns` (not live): when the store's server wrote the entry; a resume is
    judged at that instant too (a stop never is: nothing delays a kill).
    """
    roster, proof, payload = opened(proof, roster, COMMAND_PAYLOAD_TYPE, "the entry")
    try:
        signed = _DECODER.decode(payload)
    except UNDECODABLE as exc:
        raise Refused(TrustReason.MALFORMED, f"payload: {exc}") from None
    # a stored entry need not carry the fleet its proof names (the proof is what counts)
    carried = (
        command
        if command.fleet or not signed.fleet
        else msgspec.structs.replace(command, fleet=signed.fleet)
    )
    if signed != carried:
        raise Refused(TrustReason.PAYLOAD_MISMATCH, "the entry differs from what was signed")
    if signed.state is TradingState.ACTIVE:
        _check_canonical(payload)
    if command.scope is Scope.FLEET and command.key != FLEET_KEY:
        # The Guard holds one fleet latch whatever key names it: a fleet command under
        # another key would have its own slot (its own history, its own stale check) yet
        # lift or set the one latch, so a resume could lift a kill it never named.
        raise Refused(
            TrustReason.MALFORMED,
            f"key: a fleet command names key {FLEET_KEY!r} (got {command.key[:64]!r})",
        )
    if not 0 < command.expires_ns - command.issued_ns <= MAX_TTL_NS:
        raise Refused(TrustReason.MALFORMED, "expires_ns: must lie within 24 h after issued_ns")
    if command.ramp:
        if command.state is not TradingState.ACTIVE:
            raise Refused(TrustReason.MALFORMED, "ramp: only a resume carries one")
        problem = ramp_problem(command.ramp)
        if problem is not None:
            raise Refused(TrustReason.MALFORMED, problem)
    if live and command.state is TradingState.ACTIVE:
        if command.issued_ns > now_ns + SKEW_NS:
            raise Refused(TrustReason.FROM_FUTURE, "issued more than 5 s ahead of this clock")
        if now_ns > command.expires_ns:
            raise Refused(TrustReason.EXPIRED, "past its expiry (a replay, or held back)")
    judged_ns = now_ns if live else None
    if not live and stored_ns is not None and command.state is TradingState.ACTIVE:
        # the server's write time, which no client sets, not the one its signers chose
        if stored_ns > command.expires_ns:
            raise Refused(TrustReason.EXPIRED, "stored after its expiry (held back)")
        if command.issued_ns > stored_ns + SKEW_NS:
            raise Refused(TrustReason.FROM_FUTURE, "issued more than 5 s after the store wrote it")
        judged_ns = stored_ns
    members = signers_of(proof, payload, roster, command.issued_ns, judged_ns)
    by_name = {m.name: m for m in members}
    if command.state is TradingState.ACTIVE:
        # the same two people may sign on staging and production: a resume (with the kill
        # it names, which any operator may store again: a stop) counts only in its fleet.
        # A stop is never refused for its fleet.
        wrong_fleet = fleet_mismatch("resume", signed.fleet, roster)
        if wrong_fleet is not None:
            raise Refused(TrustReason.WRONG_FLEET, wrong_fleet)
        at_ns = judged_ns if judged_ns is not None else command.issued_ns
        return _check_resume(command, by_name, roster, at_ns)
    return Checked(_check_stop(command, by_name))


def _check_stop(command: StateCommand, by_name: dict[str, Member]) -> str:
    if command.actor.startswith(GUARD_ACTOR):
        nodes = [n for n, m in by_name.items() if Role.NODE in m.roles]
        if not nodes:
            raise Refused(TrustReason.ROLE_NOT_ALLOWED, "an automatic halt is signed by a node")
        node = nodes[0]
        if command.scope is Scope.FLEET or (command.scope is Scope.NODE and command.key != node):
            raise Refused(
                TrustReason.ROLE_NOT_ALLOWED,
                f"node {node} may halt itself or a strategy/symbol, not {command.scope.value} "
                f"{command.key!r}",
            )
        return node
    member = by_name.get(command.actor)
    if member is None:
        raise Refused(
            TrustReason.ACTOR_MISMATCH,
            f"actor {command.actor!r} did not sign (signed by {', '.join(sorted(by_name))})",
        )
    if not {Role.OPERATOR, Role.SUPERVISOR} & set(member.roles):
        raise Refused(
            TrustReason.ROLE_NOT_ALLOWED,
            f"{command.actor} holds {', '.join(member.roles)}; a kill needs operator or supervisor",
        )
    return command.actor


def _check_resume(
    command: StateCommand, by_name: dict[str, Member], roster: Roster, at_ns: int
) -> Checked:
    requester = by_name.get(command.actor)
    if requester is None or Role.OPERATOR not in requester.roles:
        raise Refused(
            TrustReason.ROLE_NOT_ALLOWED if requester else TrustReason.ACTOR_MISMATCH,
            f"a resume is requested and signed by an operator (actor {command.actor!r})",
        )
    if not command.supersedes:
        raise Refused(TrustReason.MALFORMED, "a resume names the halt it lifts (supersedes)")
    approvers = tuple(
        sorted(n for n, m in by_name.items() if n != command.actor and Role.APPROVER in m.roles)
    )
    policy = roster.approvals
    if policy.second_person(policy.resume, at_ns) and not approvers:
        others = sorted(n for n in by_name if n != command.actor)
        detail = (
            f"signed by {command.actor} only; a resume needs a second person with the "
            "approver role (the requester never counts)"
            if not others
            else f"{', '.join(others)} signed but does not hold the approver role"
        )
        raise Refused(TrustReason.APPROVAL_MISSING, detail)
    return Checked(command.actor, approvers)
