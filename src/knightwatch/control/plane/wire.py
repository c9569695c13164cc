"""What travels on the control plane: frozen msgspec structs, encoded as JSON.

JSON rather than msgpack so an operator can read any subject or KV key with the
stock `nats` tooling during an incident; the payloads are tiny and rare, so the
cost does not matter.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum

import msgspec

from knightwatch.decision import RejectReason
from knightwatch.errors import KnightwatchError, quoted
from knightwatch.inputs import UNDECODABLE
from knightwatch.order import MAX_ID_LEN, MAX_SYMBOL_LEN
from knightwatch.release.dsse import Envelope, add_signature, new_envelope
from knightwatch.release.keys import SigningKey
from knightwatch.release.reasons import AdmissionReason, Finding
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import GUARD_ACTOR as GUARD_ACTOR
from knightwatch.trust.command import StateCommand, command_envelope
from knightwatch.trust.rampproof import sign_ramp

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CANONICAL = msgspec.json.Encoder(order="sorted")


class StateEntry(msgspec.Struct, frozen=True):
    """The trading state an operator (or the supervisor) set for one scope and key.

    This is the kill switch's unit of record. `order_key` orders entries for
    the same scope and key, so a node that hears one command on both the fast
    path and the durable path, or out of order, keeps the newest. Each issuer
    makes its own `issued_ns` strictly increasing, so its later command is
    always newer; two issuers at the same instant are ordered by severity first
    (the stricter state wins: fail closed), then by actor, and only then by the
    random `command_id`, which decides nothing but which reason text is kept.

    `proof` is the DSSE envelope signed over every other field
    (`knightwatch.trust.check_state` verifies it); an entry without one, or
    whose fields differ from what was signed, is refused by every reader.
    A resume names the halt it lifts (`supersedes`, its command id) and the
    store revision it was decided on (`decided_on`), and carries its ramp
    (`ramp`: fraction of the limits and seconds held per stage, signed by both
    people), which every node holds by its own clock from when it applies it.
    """

    scope: Scope
    key: str
    state: TradingState
    reason: str
    actor: str
    command_id: str
    issued_ns: int
    expires_ns: int = 0
    supersedes: str = ""
    decided_on: int = 0
    proof: Envelope | None = None
    ramp: tuple[tuple[float, float], ...] = ()

    def command(self) -> StateCommand:
        """What the signatures cover."""
        return StateCommand(
            self.scope,
            self.key,
            self.state,
            self.reason,
            self.actor,
            self.command_id,
            self.issued_ns,
            self.expires_ns,
            self.supersedes,
            self.decided_on,
            self.ramp,
        )

    def signed(self, *keys: SigningKey, fleet: str = "") -> StateEntry:
        """This entry with a proof signed by `keys` (replacing any proof it had), naming
        `fleet` (the roster's `Roster.fleet`) in the proof only: a resume counts only in the
        fleet it names, and a named fleet refuses one naming none. A stop needs no fleet."""
        command = self.command()
        if fleet:  # a kill (no fleet) is signed as before, nothing added to its path
            command = msgspec.structs.replace(command, fleet=fleet)
        envelope = command_envelope(command)
        for key in keys:
            envelope = add_signature(envelope, key)
        return msgspec.structs.replace(self, proof=envelope)

    def cosigned(self, key: SigningKey) -> StateEntry:
        """Add one signature to the existing proof (an approver's)."""
        proof = self.proof if self.proof is not None else command_envelope(self.command())
        return msgspec.structs.replace(self, proof=add_signature(proof, key))

    @property
    def slot(self) -> str:
        return slot_of(self.scope, self.key)

    @property
    def order_key(self) -> tuple[int, int, str, str]:
        return (self.issued_ns, int(self.state), self.actor, self.command_id)

    def newer_than(self, other: StateEntry | None) -> bool:
        return other is None or self.order_key > other.order_key

    @property
    def source(self) -> RejectReason:
        """Which of the Guard's halt latches this entry sets: an automatic halt's own code
        (actor "guard:<code>"), otherwise the operator latch `halted`."""
        if self.actor.startswith(GUARD_ACTOR):
            try:
                return RejectReason(self.actor.removeprefix(GUARD_ACTOR))
            except ValueError:
                return RejectReason.HALTED
        return RejectReason.HALTED


class Confirmation(msgspec.Struct, frozen=True):
    """A node's proof that it applied a command to its Guard: who, what, when.

    `still_working` names orders a node with orders outside the process (a FIX
    gateway) could not get cancelled at the venue before it stopped waiting.
    """

    command_id: str
    node_id: str
    scope: Scope
    key: str
    state: TradingState
    applied_ns: int
    still_working: list[str] = msgspec.field(default_factory=list)


class NodeStatus(msgspec.Struct, frozen=True):
    """A node's membership record and heartbeat: the fleet's answer to "where is everyone"."""

    node_id: str
    host: str
    pid: int
    started_ns: int
    seen_ns: int
    lease_expires_ns: int
    admitted: bool
    armed: bool
    node_state: TradingState
    last_command_id: str = ""
    last_confirmed_ns: int = 0
    left: bool = False
    instance: str = ""
    """Random per process: a second process claiming this node id shows a different one."""
    refused: int = 0
    """Commands this node refused (bad or missing signature, role, freshness, staleness)."""
    last_refusal: str = ""
    duplicate: str = ""
    """Another live process claiming this node id, as the holder saw it (host:pid)."""

    def live(self, now_ns: int, grace_ns: int) -> bool:
        """Whether the node still holds a lease, allowing `grace_ns` for the heartbeat in flight."""
        return not self.left and now_ns <= self.lease_expires_ns + grace_ns


class NodeMetrics(msgspec.Struct, frozen=True):
    """Counters a node publishes each metrics interval; the supervisor's only input.

    Counters are cumulative since the node started so a lost message loses
    resolution, never counts.
    """

    node_id: str
    at_ns: int
    orders: int
    accepted: int
    rejected: int
    fills: int
    gross_exposure: float
    pnl: float
    armed: bool
    errors: int
    blocks: dict[str, int] = msgspec.field(default_factory=dict)
    admitted: bool = True
    """Holds its lease and release admission; a node that does not sits out of fleet baselines."""
    limits_version: str = ""
    """The Guard's limits version now: `NAME@10%` while a resume ramp holds it at a stage."""
    recorder_ok: bool = True
    """The flight recorder is writing (a resume's preflight needs it)."""
    notional: float = 0.0
    """Executed notional, customers' and the firm's own."""
    principal_notional: float = 0.0
    """Executed notional that is the firm's own: fills beyond their parent or with none."""
    parents: int = 0
    """Customer parent orders registered with the node's Guard."""
    node_state: int = 0
    """The node's own halt state (`TradingState` value), so a halt in force is not re-issued."""
    fleet_state: int = 0
    """The fleet-wide state as this node applies it."""
    instance: str = ""
    """The sending process (random, new at each start): a counter that goes back under the
    same instance is a lie, not a restart. Empty from a sender that predates it."""
    lowered: int = 0
    """Of `accepted`, the replaces that only lowered a working order at its price: the stop
    direction, which a HALTED Guard still accepts. 0 from a sender that predates it."""
    cancels: int = 0
    """Cancels the venue confirmed, a replace it took counting as one (its original is
    cancelled), since the node started: never reset by a halt, unlike the Guard's
    cancel-to-fill ratio. A cancel storm shows here when nothing else moves. 0 from a
    sender that predates it."""
    unknown_cancels: int = 0
    """Cancel requests for orders the node's Guard did not hold (`Guard.on_cancel_request`),
    since the node started: forwarded to the venue ("unknown order") and confirmed by
    nobody, so never in `cancels`. 0 from a sender that predates it."""


class AuditEnvelope(msgspec.Struct, frozen=True):
    """Flight-recorder lines shipped to the fleet stream as one message, opaque to the plane.

    A node ships what its recorder wrote since the last tick in one stream write
    and one acknowledgement, not one per line (a halt is a line on every node, so
    per-line writes multiplied each kill's work by the fleet's size, on the cores
    the next kill's confirmations need).

    `seq` numbers one sending process's envelopes from 1 and `instance` names the
    process, so the stream drops a retry whose first copy did land (same
    `Nats-Msg-Id`), and a restarted process never reuses its predecessor's ids.
    """

    node_id: str
    instance: str
    seq: int
    records: bytes
    """One or more records, each one line ending in a newline."""

    def lines(self) -> list[bytes]:
        """The records, without their newlines."""
        return self.records.splitlines()


MAX_STATE_KEY = MAX_ID_LEN + 1 + MAX_SYMBOL_LEN
"""The longest scope key: a strategy and a symbol as long as an order may name them, joined
(`pair_key`). Shorter, an order could trade in a strategy and symbol no kill could name."""


class StateKeyError(KnightwatchError, ValueError):
    """A scope key that cannot be stored; names the rule."""


def slot_of(scope: Scope, key: str) -> str:
    """Map (scope, key) to a NATS KV key, injectively.

    KV keys allow only `[-/_=.A-Za-z0-9]`; symbols and strategy names may carry
    anything, so keys outside a plain alphabet are hex-encoded behind `=`, which
    a plain key can never contain.
    """
    if not key:
        raise StateKeyError(f"{scope.value} key: must be a non-empty string")
    if len(key) > MAX_STATE_KEY:
        raise StateKeyError(
            f"{scope.value} key: must be at most {MAX_STATE_KEY} characters (got {quoted(key)})"
        )
    token = key if _PLAIN_KEY.fullmatch(key) else "=" + key.encode().hex()
    return f"{scope.value}.{token}"


def parse_slot(slot: str) -> tuple[Scope, str]:
    """The (scope, key) a slot was made from; ValueError if `slot` is not one."""
    scope, sep, token = slot.partition(".")
    if not sep or not token:
        raise ValueError(f"{slot!r}: not SCOPE.KEY")
    key = bytes.fromhex(token[1:]).decode() if token.startswith("=") else token
    parsed = Scope(scope), key
    if slot_of(*parsed) != slot:
        raise ValueError(f"{slot!r}: not the canonical slot of {parsed}")
    if parsed[0] is Scope.FLEET and key != FLEET_KEY:
        # No tool writes one and no such command verifies (`check_state`), but the Guard's
        # one fleet latch would hold its halt, and nothing could ever resume it.
        raise ValueError(f"{slot!r}: the fleet's only slot is {slot_of(Scope.FLEET, FLEET_KEY)!r}")
    return parsed


FLEET_KEY = "fleet"
"""The single key of the fleet scope."""

UNDECODABLE_ACTOR = "store:undecodable"
"""Actor of the halt a node holds for a stored entry it cannot decode."""


def scope_of_slot(slot: str) -> tuple[Scope, str]:
    """The (scope, key) a KV key names; the fleet when it names nothing readable.

    The inverse of `slot_of`. Used for entries that cannot be decoded: the key
    of the slot is all that is left to say which scope they were about, and
    when even that is unreadable the only safe scope is the whole fleet.
    """
    scope_text, _, token = slot.partition(".")
    try:
        scope = Scope(scope_text)
        key = bytes.fromhex(token[1:]).decode() if token.startswith("=") else token
    except (ValueError, UnicodeDecodeError):
        return Scope.FLEET, FLEET_KEY
    if scope is Scope.FLEET:
        return scope, FLEET_KEY
    if not key:
        return Scope.FLEET, FLEET_KEY
    return scope, key


def decode_entry(slot: str, value: bytes, revision: int) -> StateEntry:
    """The entry stored at `slot`; one that cannot be decoded (or names another slot) is
    a HALT of the slot's scope, so uncertainty blocks instead of being skipped.

    It orders before any real command (`issued_ns` 0), so the next kill or resume of
    the slot replaces it; `knightwatch resume` lifts it like any operator halt.
    """
    try:
        entry = ENTRY_DECODER.decode(value)
        if entry.slot == slot:
            return entry
        problem = f"it names slot {entry.slot!r}"
    except (*UNDECODABLE, StateKeyError) as exc:
        problem = str(exc)[:200]
    scope, key = scope_of_slot(slot)
    return StateEntry(
        scope=scope,
        key=key,
        state=TradingState.HALTED,
        reason=(
            f"stored entry {slot!r} (revision {revision}) cannot be decoded ({problem}); "
            "held as a halt until a kill or resume replaces it"
        ),
        actor=UNDECODABLE_ACTOR,
        command_id=f"undecodable-{slot}-{revision}",
        issued_ns=0,
    )


class _Addressed(msgspec.Struct):
    """The two fields of an entry that say what it is about (anything else ignored)."""

    scope: Scope
    key: str


_ADDRESSED_DECODER = msgspec.json.Decoder(_Addressed)
UNDECODABLE_ANNOUNCEMENT = "announcement_undecodable"
"""Reason code of an announced entry that cannot be decoded (held as a halt)."""


def decode_announcement(data: bytes) -> StateEntry:
    """An announced entry; one that cannot be decoded is a HALT, as a stored one is
    (`decode_entry`): of the scope and key it names when those two can be read (a later
    version's format), else of the fleet (truncated, garbage). It can only stop: it is
    never signed, orders before any real command (`issued_ns` 0), and the next kill of
    its scope replaces it (a resume of that kill lifts it)."""
    try:
        return ENTRY_DECODER.decode(data)
    except (*UNDECODABLE, StateKeyError) as exc:
        problem = str(exc)[:200]
    scope, key = Scope.FLEET, FLEET_KEY
    try:
        named = _ADDRESSED_DECODER.decode(data)
        slot_of(named.scope, named.key)
        if named.scope is not Scope.FLEET and named.key.strip():
            scope, key = named.scope, named.key
    except (*UNDECODABLE, StateKeyError):
        pass
    digest = hashlib.sha256(data).hexdigest()[:24]
    return StateEntry(
        scope=scope,
        key=key,
        state=TradingState.HALTED,
        reason=(
            f"{UNDECODABLE_ANNOUNCEMENT}: an announced entry ({len(data)} bytes, sha256 "
            f"{digest}) cannot be decoded ({problem}); held as a halt until a kill of "
            "this scope replaces it"
        ),
        actor=UNDECODABLE_ACTOR,
        command_id=f"undecodable-announcement-{digest}",
        issued_ns=0,
    )


SUBJECT_AUTO_HALT = "autohalt"
"""A node's signed automatic halt, for the relay that may write the kill state."""

ENCODER = msgspec.json.Encoder()
ENTRY_DECODER = msgspec.json.Decoder(StateEntry)
CONFIRMATION_DECODER = msgspec.json.Decoder(Confirmation)
STATUS_DECODER = msgspec.json.Decoder(NodeStatus)
METRICS_DECODER = msgspec.json.Decoder(NodeMetrics)
AUDIT_DECODER = msgspec.json.Decoder(AuditEnvelope)


class AuditRefusal(StrEnum):
    """Why a message on a node's audit subject is not taken as that node's records."""

    UNDECODABLE = "audit_undecodable"
    FORGED = "audit_forged"
    """The envelope names another node than the subject it was sent on."""
    EMPTY = "audit_empty"


def audit_from(sender: str, data: bytes) -> AuditEnvelope:
    """The envelope sent on `sender`'s audit subject, attributed to `sender`.

    Only `sender`'s identity may publish on its subject (the server's authorization),
    so the subject, not the payload, says whose records these are. A message that does
    not decode, that names another node (a node planting lines in another node's tail,
    or in the supervisor's actions) or that holds no records comes back as one line of
    `sender`'s naming the refusal: the evidence keeps that it happened, under the name
    of whoever sent it, and nothing of it is read as anyone's records.
    """
    try:
        envelope = AUDIT_DECODER.decode(data)
    except UNDECODABLE as exc:
        return _refused(sender, AuditRefusal.UNDECODABLE, str(exc), data)
    if envelope.node_id != sender:
        detail = f"names node {envelope.node_id!r} but was sent on {sender!r}'s subject"
        return _refused(sender, AuditRefusal.FORGED, detail, data)
    if not envelope.records.strip():
        return _refused(sender, AuditRefusal.EMPTY, "the envelope holds no records", data)
    return envelope


def _refused(sender: str, reason: AuditRefusal, detail: str, data: bytes) -> AuditEnvelope:
    line = ENCODER.encode(
        {
            "event": "audit_refused",
            "reason": reason.value,
            "sender": sender,
            "detail": detail[:300],
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        }
    )
    return AuditEnvelope(sender, "", 0, line + b"\n")


class MemberProblem(StrEnum):
    """Why a stored membership record is not read as its node's status."""

    UNDECODABLE = "member_undecodable"
    FORGED = "member_forged"
    """The record under node N's key names another node."""


def unreadable_member(key: str, revision: int, problem: MemberProblem, why: str) -> NodeStatus:
    """What `members()` lists for a membership record it cannot read: the node its key
    names, not admitted, not armed, halted, with no lease, and `last_refusal` giving the
    reason code and why, so everyone looking at the fleet sees the record is unreadable
    (before, it vanished from the list, and the node with it)."""
    return NodeStatus(
        node_id=key,
        host="unreadable",
        pid=0,
        started_ns=0,
        seen_ns=0,
        lease_expires_ns=0,
        admitted=False,
        armed=False,
        node_state=TradingState.HALTED,
        last_refusal=f"{problem.value}: the membership record at revision {revision} "
        f"cannot be read ({why[:200]})",
    )


# ---------------------------------------------------------------- admission

SUBJECT_CHALLENGE = "admission.challenge"
"""Request: the node's signed `ChallengeRequest` (`challenge_request`); reply: a
`ChallengeReply` (a single-use nonce, or why the request was refused)."""
SUBJECT_ATTEST = "admission.attest"
"""Request: a signed attestation envelope; reply: a `Verdict`."""
SUBJECT_TARGET = "admission.target"
"""Request: a `TargetRequest`; reply: a `TargetReply`."""
TARGET_KEY = "target"

UNATTRIBUTABLE = frozenset(
    {
        AdmissionReason.NODE_UNKNOWN,
        AdmissionReason.ATTESTATION_MALFORMED,
        AdmissionReason.ATTESTATION_SIGNATURE_INVALID,
        AdmissionReason.ATTESTATION_REPLAYED,
        AdmissionReason.ATTESTATION_STALE,
        AdmissionReason.CHALLENGE_UNKNOWN,
    }
)
"""Reasons that say nothing about the node named in the attestation (anyone can send one)."""


class Verdict(msgspec.Struct, frozen=True):
    """The admission service's judgement of one node, stored under the node's id.

    `flag_schema` is the admitted release's schema from the signed manifest,
    empty unless admitted: the flag gate trusts this, never the node's say-so.
    """

    node: str
    admitted: bool
    status: str
    release_id: str
    manifest_digest: str
    findings: tuple[Finding, ...]
    at_ns: int
    flag_schema: dict[str, str] = {}

    @property
    def detail(self) -> str:
        if self.admitted:
            return f"admitted on release {self.release_id}"
        return "; ".join(str(f) for f in self.findings) or self.status

    @property
    def attributable(self) -> bool:
        return not any(f.reason in UNATTRIBUTABLE for f in self.findings)


class TargetRecord(msgspec.Struct, frozen=True):
    """The fleet's target release, who asked (signed) and approved it, and why (a rollback
    is just a new one). Written by the admission service alone."""

    release_id: str
    envelope: Envelope
    actor: str
    reason: str
    at_ns: int
    approver: str = ""
    """Empty for a one-person return to the known-good release."""
    command_id: str = ""
    """The signed request's id (a replay of it is refused)."""


class TargetRequest(msgspec.Struct, frozen=True):
    """The release, the requester's signed `TargetCommand` over it and a second person's
    signed approval (`knightwatch admission approve`)."""

    envelope: Envelope
    request: Envelope
    approval: Envelope | None = None


class TargetReply(msgspec.Struct, frozen=True):
    accepted: bool
    release_id: str
    findings: tuple[Finding, ...]
    revision: int = 0


CHALLENGE_REQUEST_PAYLOAD_TYPE = "application/vnd.knightwatch.challenge-request+json"


class ChallengeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a node's signature over its challenge request covers: its name, a fresh
    random id (a replay of the request is refused) and when it was issued (by its clock)."""

    node: str
    request_id: str
    issued_ns: int


class ChallengeReply(msgspec.Struct, frozen=True):
    """The nonce issued, or ("" and) the reason code and one line of why not."""

    nonce: str = ""
    reason: str = ""
    detail: str = ""


def challenge_request(node: str, key: SigningKey, *, request_id: str, now_ns: int) -> Envelope:
    """A challenge request for `node`, signed with its enrolled key (the attestation key)."""
    request = ChallengeRequest(node, request_id, now_ns)
    envelope = new_envelope(CHALLENGE_REQUEST_PAYLOAD_TYPE, _CANONICAL.encode(request))
    return add_signature(envelope, key)


CHALLENGE_REQUEST_DECODER = msgspec.json.Decoder(ChallengeRequest)
CHALLENGE_REPLY_DECODER = msgspec.json.Decoder(ChallengeReply)
VERDICT_DECODER = msgspec.json.Decoder(Verdict)
TARGET_DECODER = msgspec.json.Decoder(TargetRecord)
TARGET_REQUEST_DECODER = msgspec.json.Decoder(TargetRequest)
TARGET_REPLY_DECODER = msgspec.json.Decoder(TargetReply)


# ---------------------------------------------------------------- incident


class RampRecord(msgspec.Struct, frozen=True):
    """A resume ramping a scope back: the fraction of the rate, notional and exposure
    limits every node in the scope applies now, stored before the resume itself so
    no node ever trades the resumed scope at full limits first.

    `status` is "ramping", "done" (full limits) or "tripped" (the scope was halted
    again; nodes keep the stage's limits until the next resume starts a new ramp).

    `proof` is signed over every other field by whoever stored the record
    (`knightwatch.trust.rampproof`); a node holds one it cannot verify as the
    tightest stage.
    """

    scope: Scope
    key: str
    ramp_id: str
    stage: int
    stages: tuple[float, ...]
    fraction: float
    status: str
    actor: str
    reason: str
    since_ns: int
    trip_reason: str = ""
    proof: Envelope | None = None

    def payload(self) -> bytes:
        """What the signature covers: every field but the proof, in one canonical form."""
        return _CANONICAL.encode(msgspec.structs.replace(self, proof=None))

    def signed(self, key: SigningKey, *, fleet: str = "") -> RampRecord:
        """This record with a proof signed by `key` for `fleet` (the writer's
        `Roster.fleet`, "" for an unnamed one; a named fleet's nodes refuse a record made
        for another), replacing any proof it had."""
        return msgspec.structs.replace(self, proof=sign_ramp(self.payload(), key, fleet=fleet))

    @property
    def holds(self) -> bool:
        """Whether nodes keep scaled limits for it (a finished ramp holds nothing)."""
        return self.status != "done"


class KnownGood(msgspec.Struct, frozen=True):
    """The release the fleet was last known-good on, recorded when a kill froze it."""

    release_id: str
    kill_command_id: str
    at_ns: int


class NodeStarts(msgspec.Struct, frozen=True):
    """A node's most recent process starts (wall clock), newest last: crash-loop evidence."""

    node_id: str
    started_ns: tuple[int, ...]


RAMP_DECODER = msgspec.json.Decoder(RampRecord)
KNOWN_GOOD_DECODER = msgspec.json.Decoder(KnownGood)
STARTS_DECODER = msgspec.json.Decoder(NodeStarts)
KNOWN_GOOD_KEY = "known_good"


def starts_key(node_id: str) -> str:
    return f"starts.{node_id}"
