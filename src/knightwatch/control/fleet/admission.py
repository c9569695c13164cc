"""The admission service: the control plane's gate between a node and its lease.

A node asks for a challenge, attests what it actually runs and gets a
verdict; the verdict is stored durably, so `status`, the flag gate and a
restarted node all see the same judgement. The judging is the release layer's
`Admitter`; this service only brings it the roster (the node identities on the
signed roster: a node's enrolled key is the key it attests with), the
fleet's target release and the flag registry, and pins the trust policy:
a target release is accepted only if it passes `check_release` here, so a
rollback to a release that re-defines or still knows a retired flag is refused
before any node can be admitted on it. The service is also where the target's
two-person rule holds (it alone may write the target record): the request is
an operator's signature over the exact release (`trust.target`), fresh,
decided on the current target record and never replayed, and carries a second
person's approval of that release for that requester, counted for one change of
target only (each one used is recorded: moving the target away and back on the
same approval within its hour is refused); only a return to the known-good
release while its kill is in force is one person's.

Challenges live in this process's memory, so run one admission service per
fleet (`knightwatch up` runs it; `knightwatch admission serve` standalone). A node new
to the roster is not enrolled while a fleet or strategy kill is in force, and a restart
keeps that: at start, a node no earlier service judged (no verdict of its own stored) is
new, so restarting the service during a kill does not undo the freeze.
A challenge request is the node's signature (its enrolled key, the one it attests
with) over its name, a fresh random request id and its issue time: it is checked
against the roster (a node's key, valid now, its name the name asked for), issued
within the trust layer's skew allowance of this clock and never seen before, and
anything else is refused with a reason code, creating and withdrawing nothing. A bare
name (a node older than signed requests) is refused as unsigned. So only the node
itself can ask in its name: a flood in another node's name costs nothing but
refusals, and a replayed request withdraws nothing. The unanswered challenges stay
bounded per name (the 17th withdraws the name's oldest: only its own node can ask)
and the request ids remembered against replay per node, all pruned from the front.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import Counter, OrderedDict

import msgspec

from knightwatch.clock import NS_PER_S, Clock
from knightwatch.control.fleet.freeze import (
    FrozenByKill,
    describe,
    kill_in_force,
    refuse_target_if_frozen,
)
from knightwatch.control.node.trustfeed import follow_roster
from knightwatch.control.plane.protocol import (
    Bucket,
    ControlPlane,
    ControlPlaneUnavailable,
    Record,
    RevisionConflict,
)
from knightwatch.control.plane.wire import (
    CHALLENGE_REQUEST_DECODER,
    CHALLENGE_REQUEST_PAYLOAD_TYPE,
    ENCODER,
    SUBJECT_ATTEST,
    SUBJECT_CHALLENGE,
    SUBJECT_TARGET,
    TARGET_DECODER,
    TARGET_KEY,
    TARGET_REPLY_DECODER,
    TARGET_REQUEST_DECODER,
    VERDICT_DECODER,
    ChallengeReply,
    ChallengeRequest,
    StateEntry,
    TargetRecord,
    TargetReply,
    TargetRequest,
    Verdict,
)
from knightwatch.flags.schema import RegistrySchema
from knightwatch.inputs import NAME_RULE, UNDECODABLE, is_name
from knightwatch.release.admission import Admission, Admitter, check_release
from knightwatch.release.attestation import ATTESTATION_PAYLOAD_TYPE, open_attestation
from knightwatch.release.canonical import sha256_hex
from knightwatch.release.dsse import Envelope, decode_envelope
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.keys import VerifyKey
from knightwatch.release.reasons import AdmissionReason, Finding
from knightwatch.release.signing import TrustPolicy, verify_release
from knightwatch.trust.approval import ApprovalKind, check_approval
from knightwatch.trust.command import SKEW_NS, Refused, TrustReason, signers_of
from knightwatch.trust.identity import Signer
from knightwatch.trust.roster import Role, TrustError
from knightwatch.trust.store import TrustStore
from knightwatch.trust.target import check_target, target_command

log = logging.getLogger(__name__)

ENROL_RETRY_S = 1.0
"""How often a node new to the roster is tried again while the kill state cannot be read."""
REFUSAL_STORE_WAIT_S = 0.5
"""How long the answer to a refused or fenced node waits for its verdict to be stored (well
inside the 2 s a node waits for it); the write goes on after the answer is sent."""
CHALLENGE_MALFORMED = "challenge_malformed"
"""A challenge request that is not a signed request envelope (or carries more than one
signature), or whose node name or request id is not a valid name."""
CHALLENGE_UNSIGNED = "challenge_unsigned"
"""A challenge request carrying no signature: a bare node name (a node older than signed
challenge requests) or an envelope without one."""
CHALLENGE_NOT_AUTHENTIC = "challenge_not_authentic"
"""A challenge request not signed by a key the roster holds for the node named, valid now
(unknown, revoked or expired key, a signature that does not verify, not a node's key, or
another node's)."""
CHALLENGE_STALE = "challenge_stale"
"""A challenge request issued more than the skew allowance (5 s) away from this clock."""
CHALLENGE_REPLAYED = "challenge_replayed"
"""A challenge request whose request id was already served for that node."""
CHALLENGE_TOO_FREQUENT = "challenge_too_frequent"
"""A node asking more often than `max_requests_per_node` within the requests' validity."""
CHALLENGE_PENDING_NODE = "challenge_pending_node"
"""Too many unanswered challenges for one node name: the oldest was withdrawn."""
CHALLENGE_PENDING_TOTAL = "challenge_pending_total"
"""Too many unanswered challenges in all (names not enrolled on the roster)."""


class AdmissionService:
    def __init__(
        self,
        plane: ControlPlane,
        trust: TrustPolicy,
        registry: RegistrySchema,
        *,
        clock: Clock,
        roster: TrustStore,
        max_age_s: float = 30.0,
        max_pending_per_node: int = 16,
        max_pending: int = 4096,
        max_requests_per_node: int = 64,
    ) -> None:
        """`max_pending_per_node`, `max_pending`: unanswered challenges kept (for
        `max_age_s`) per node name, and in all for names not enrolled by this service; a
        request over the first withdraws the name's oldest (only the node itself can ask
        in its name), one over the second is refused, so requests cannot grow memory.
        `max_requests_per_node`: signed request ids remembered per node while a replay of
        them could still be fresh; a node asking more often than that is refused."""
        self.plane = plane
        self.trust_store = roster
        self.trust = trust
        self.registry = registry
        self.clock = clock
        self.roster: dict[str, VerifyKey] = {}
        self._loaded = False
        self._tasks: set[asyncio.Task[object]] = set()
        self.target: TargetRecord | None = None
        self.target_problem = ""
        """Why the stored target cannot be read ("" if it can): every attestation is refused."""
        self.admitter = Admitter(
            trust, self.roster, clock=clock, max_age_ns=int(max_age_s * NS_PER_S)
        )
        self._max_age_ns = int(max_age_s * NS_PER_S)
        self._max_pending_per_node = max_pending_per_node
        self._max_pending = max_pending
        self._pending: dict[str, OrderedDict[str, int]] = {}
        """Per node name: the challenges issued and not yet answered (nonce -> issued at),
        oldest first."""
        self._keys: dict[str, VerifyKey] = {}
        """Per unanswered challenge: the node key that signed the request for it, the key
        its attestation must be signed with (a node mid-rotation asks with either)."""
        self._issued: OrderedDict[str, str] = OrderedDict()
        """Every challenge not yet answered (nonce -> node name), oldest first: expiry
        looks only at its front, so a request costs O(1) amortised however many are
        pending (rebuilding `_pending` on every request let a flood of requests hold the
        service, one at a time, for all of them each time)."""
        self._max_requests_per_node = max_requests_per_node
        self._requests: OrderedDict[tuple[str, str], int] = OrderedDict()
        """Signed challenge requests served ((node, request id) -> served at), oldest first,
        kept while a replay of them could still be fresh (`_expire_requests`)."""
        self._requests_of: Counter[str] = Counter()
        """How many of `_requests` each node has."""
        self.examined = 0
        """Unanswered challenges looked at by expiry so far: the work it costs (at most one
        more per request than it forgets)."""
        self.challenges_refused: Counter[str] = Counter()
        """Refused challenge requests, per reason code."""
        self._starting: dict[str, str] = {}
        """Nodes not enrolled, with no key valid at the roster's last version but one that
        begins later (node -> key id): enrolled, unless a kill is in force, at their first
        request signed with it once it has begun (`_enrol_begun`)."""

    async def start(self) -> None:
        await follow_roster(self.plane, self.trust_store, self._enrol)
        await self._hold_new_at_start()
        await self.plane.subscribe_records(Bucket.RELEASE, self._on_release)
        stored, _ = await self.plane.get_record(Bucket.RELEASE, TARGET_KEY)
        if stored is not None:
            self._take_target(stored)
        await self.plane.serve(SUBJECT_CHALLENGE, self._on_challenge)
        await self.plane.serve(SUBJECT_ATTEST, self._on_attest)
        await self.plane.serve(SUBJECT_TARGET, self._on_target)

    def _enrol(self) -> None:
        """Node keys valid now, from the verified roster (the newest key of each node).

        A node new to the roster after the service started adds risk: while a
        kill is in force it is not enrolled (`_enrol_new` checks the freeze);
        the next roster version tries it again. A node with no key valid now but one
        that begins later is enrolled the same way at its first request once it has
        begun (`_enrol_begun`), with no roster version needed.
        """
        fresh = self._node_keys()
        new = [n for n in fresh if n not in self.roster] if self._loaded else []
        self.roster.clear()
        self.roster.update({n: k for n, k in fresh.items() if n not in new})
        self._starting = self._keys_to_begin(fresh)
        self._loaded = True
        for name in new:
            task = asyncio.get_running_loop().create_task(self._enrol_new(name, fresh[name]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _hold_new_at_start(self) -> None:
        """At start, before any request is served: a node no earlier service judged (no
        verdict of its own stored) is new to the fleet and is enrolled as any node new to
        the roster is, unless a kill is in force (refused; the next roster version after
        the resume enrols it); a kill state that cannot be read holds it back and is read
        again (`_enrol_new`). A node judged before (admitted or refused) stays enrolled:
        the running fleet keeps its admissions across a restart. Before, a start enrolled
        every node on the roster, so restarting the service during a kill enrolled a node
        the running service had refused for that kill (the freeze undone by a restart).
        Raises `ControlPlaneUnavailable` when the verdicts cannot be read (as the start's
        other reads do)."""
        stored = await self.plane.records(Bucket.ADMISSION)
        new = [n for n in self.roster if _verdict_of(stored.get(n, (b"", 0))[0]) != n]
        if not new:
            return
        unread = ""
        try:
            kill = await kill_in_force(self.plane, self.trust_store)
        except ControlPlaneUnavailable as exc:
            kill, unread = None, str(exc)
        if kill is None and not unread:
            return
        if unread:
            log.warning(
                "ENROL_PENDING nodes %s, never judged, at start: cannot read the kill state "
                "(%s); trying again in %g s",
                ", ".join(new),
                unread,
                ENROL_RETRY_S,
            )
        for node in new:
            key = self.roster.pop(node, None)  # a roster version heard meanwhile has its word
            if key is None:
                continue
            if kill is not None:
                self._enrol_unless(node, key, f"enrolment of node {node} (never judged)", kill)
                continue
            task = asyncio.get_running_loop().create_task(self._enrol_new(node, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _enrol_new(self, node: str, key: VerifyKey) -> None:
        """Enrol a node new to the roster unless a kill is in force (it adds risk). A kill
        state that cannot be read is no kill: the node stays out (fail closed) and this is
        tried again every `ENROL_RETRY_S` while the roster still lists that key and nothing
        else enrolled it. Before, one failed read (the server had just reloaded its users
        for that very roster version) refused it for good: the node stayed `node_unknown`
        until someone published another roster version."""
        change = f"enrolment of node {node}"
        while True:
            try:
                kill = await kill_in_force(self.plane, self.trust_store)
            except ControlPlaneUnavailable as exc:
                log.warning(
                    "ENROL_PENDING %s: cannot read the kill state (%s); trying again in %g s",
                    change,
                    exc,
                    ENROL_RETRY_S,
                )
                await asyncio.sleep(ENROL_RETRY_S)
                listed = self._node_keys().get(node)
                if node in self.roster or listed is None or listed.key_id != key.key_id:
                    return  # enrolled since, or no longer this key: the roster's word stands
                continue
            self._enrol_unless(node, key, change, kill)
            return

    def _keys_to_begin(self, fresh: dict[str, VerifyKey]) -> dict[str, str]:
        """Nodes not enrolled whose key on the verified roster begins later (node -> key id).

        Key validity moves with the clock, not with roster versions: a node added ahead of
        its start was left out here as not valid yet and nothing enrolled it once its start
        passed (`node_unknown` at every attestation until another roster version)."""
        roster = self.trust_store.roster
        now = self.clock.time_ns()
        return {
            m.name: m.key_id
            for m in (roster.members if roster is not None else ())
            if Role.NODE in m.roles
            and m.name not in fresh
            and m.name not in self.roster
            and m.valid_from_ns > now
            and m.valid_at(m.valid_from_ns)
        }

    async def _enrol_begun(self, node: str, key: VerifyKey) -> None:
        """Enrol `node`, new to the roster with a key that has begun since its version was
        heard, at its first request signed with that key: as any node new to the roster,
        not while a kill is in force (it adds risk; the next roster version after the
        resume enrols it). A kill state that cannot be read enrols nothing: its next
        request tries again (fail closed)."""
        if node in self.roster or self._starting.get(node) != key.key_id:
            return
        change = f"enrolment of node {node} (its key began after its roster version)"
        try:
            kill = await kill_in_force(self.plane, self.trust_store)
        except ControlPlaneUnavailable as exc:
            log.warning("ENROL_PENDING %s: cannot read the kill state (%s)", change, exc)
            return
        if self._starting.pop(node, None) != key.key_id or node in self.roster:
            return  # a roster version since has its word
        self._enrol_unless(node, key, change, kill)

    def _enrol_unless(
        self, node: str, key: VerifyKey, change: str, kill: StateEntry | None
    ) -> None:
        """Enrol a node new to the roster, unless a kill is in force (it adds risk: the next
        roster version after the resume enrols it)."""
        if kill is not None:
            log.error(
                "ENROL_REFUSED %s: refused while %s; the next roster version after the "
                "resume enrols it",
                change,
                describe(kill),
            )
            return
        self.roster[node] = key

    def _node_keys(self) -> dict[str, VerifyKey]:
        """Each node's key valid now on the verified roster (the newest, if several)."""
        roster = self.trust_store.roster
        now = self.clock.time_ns()
        return {
            m.name: VerifyKey.from_base64(m.public_key, field=f"roster {m.name}")
            for m in (roster.members if roster is not None else ())
            if Role.NODE in m.roles and m.valid_at(now)
        }

    async def _on_release(self, record: Record) -> None:
        if record.key == TARGET_KEY:
            self._take_target(record.value)

    def _take_target(self, value: bytes) -> None:
        """The stored target, or, if it cannot be read, no target and why: no node is
        admitted against a target nobody can read (nor against the one before it) until
        it is set again."""
        try:
            self.target, self.target_problem = TARGET_DECODER.decode(value), ""
        except UNDECODABLE as exc:
            self.target = None
            self.target_problem = f"the stored target release record cannot be read ({exc})"
            log.error("TARGET_UNREADABLE %s; every node is refused until it is set again", exc)

    async def _on_challenge(self, payload: bytes) -> bytes:
        """A single-use nonce for the node that signed the request; a `ChallengeReply`
        naming the reason (and no nonce) when refused.

        Only a request signed by the node named, fresh and not seen before, is served:
        a refusal creates and withdraws nothing, and is counted and logged (one line)."""
        now = self.clock.time_ns()
        checked = self._checked_request(payload, now)
        if isinstance(checked, bytes):
            return checked
        request, key = checked
        node = request.node
        if node in self._starting:
            await self._enrol_begun(node, key)
            if (node, request.request_id) in self._requests:  # served while enrolment read
                return self._refuse_challenge(
                    CHALLENGE_REPLAYED, node, f"request {request.request_id[:32]} was served"
                )
        self._expire(now)
        mine = self._pending.get(node)
        if mine is not None and len(mine) >= self._max_pending_per_node:
            # only the node itself can ask in its name: its 17th unanswered request makes
            # way by withdrawing its own oldest (`_withdraw`), memory stays bounded
            self._withdraw(node, mine)
        elif node not in self.roster and len(self._issued) >= self._max_pending:
            return self._refuse_challenge(
                CHALLENGE_PENDING_TOTAL,
                node,
                f"not enrolled, and {len(self._issued)} challenges are unanswered (limit "
                f"{self._max_pending})",
            )
        self._requests[(node, request.request_id)] = now
        self._requests_of[node] += 1
        nonce = self.admitter.challenge(node)
        self._pending.setdefault(node, OrderedDict())[nonce] = now
        self._issued[nonce] = node
        self._keys[nonce] = key
        return ENCODER.encode(ChallengeReply(nonce))

    def _checked_request(
        self, payload: bytes, now: int
    ) -> tuple[ChallengeRequest, VerifyKey] | bytes:
        """The request and the node key that signed it, if its node signed it, fresh and not
        seen before; else the refusal reply. Cheap checks first: a signature is verified
        only for a well formed, fresh request carrying exactly one."""
        try:
            bare = payload.decode()
        except UnicodeDecodeError:
            bare = ""
        if is_name(bare):
            return self._refuse_challenge(
                CHALLENGE_UNSIGNED,
                bare,
                "the request is a bare node name (a node older than signed challenge "
                "requests): a challenge request is signed with the node's enrolled key; "
                "upgrade the node",
            )
        try:
            envelope = decode_envelope(payload, source="challenge request")
        except ReleaseInputError as exc:
            return self._refuse_challenge(CHALLENGE_MALFORMED, "?", _line(str(exc)))
        if envelope.payload_type != CHALLENGE_REQUEST_PAYLOAD_TYPE:
            return self._refuse_challenge(
                CHALLENGE_MALFORMED,
                "?",
                f"payloadType {envelope.payload_type[:64]!r} is not "
                f"{CHALLENGE_REQUEST_PAYLOAD_TYPE}",
            )
        if not envelope.signatures:
            return self._refuse_challenge(
                CHALLENGE_UNSIGNED, "?", "the request carries no signature"
            )
        if len(envelope.signatures) != 1:
            return self._refuse_challenge(
                CHALLENGE_MALFORMED,
                "?",
                f"{len(envelope.signatures)} signatures; a challenge request carries exactly "
                "one, by its node's enrolled key",
            )
        try:
            body = envelope.payload_bytes()
            request = CHALLENGE_REQUEST_DECODER.decode(body)
        except (ReleaseInputError, *UNDECODABLE) as exc:
            return self._refuse_challenge(CHALLENGE_MALFORMED, "?", f"payload: {_line(str(exc))}")
        node = request.node
        if not is_name(node):
            return self._refuse_challenge(
                CHALLENGE_MALFORMED, "?", f"node name {node[:64]!r} is not {NAME_RULE}"
            )
        if not is_name(request.request_id):
            return self._refuse_challenge(
                CHALLENGE_MALFORMED,
                node,
                f"request_id {request.request_id[:64]!r} is not {NAME_RULE}",
            )
        skew = request.issued_ns - now
        if not -SKEW_NS <= skew <= SKEW_NS:
            return self._refuse_challenge(
                CHALLENGE_STALE,
                node,
                f"issued {abs(skew) / NS_PER_S:.1f} s {'ahead of' if skew > 0 else 'before'} "
                f"this clock (allowed {SKEW_NS / NS_PER_S:.0f} s either way)",
            )
        roster = self.trust_store.roster
        if roster is None:
            return self._refuse_challenge(
                CHALLENGE_NOT_AUTHENTIC, node, "no verified roster yet: nothing can be trusted"
            )
        try:
            (member,) = signers_of(envelope, body, roster, request.issued_ns, now)
        except Refused as exc:
            return self._refuse_challenge(CHALLENGE_NOT_AUTHENTIC, node, _line(str(exc)))
        if member.name != node or Role.NODE not in member.roles:
            return self._refuse_challenge(
                CHALLENGE_NOT_AUTHENTIC,
                node,
                f"signed by {member.name} ({', '.join(member.roles)}), not by node {node}'s key",
            )
        self._expire_requests(now)
        if (node, request.request_id) in self._requests:
            return self._refuse_challenge(
                CHALLENGE_REPLAYED,
                node,
                f"request {request.request_id[:32]} was already served; a node asks with a "
                "new request id each time",
            )
        if self._requests_of[node] >= self._max_requests_per_node:
            return self._refuse_challenge(
                CHALLENGE_TOO_FREQUENT,
                node,
                f"{self._requests_of[node]} requests within {2 * SKEW_NS / NS_PER_S:.0f} s "
                f"(limit {self._max_requests_per_node})",
            )
        found = roster.key(member.key_id)  # the key signers_of verified it under
        if found is None:
            return self._refuse_challenge(
                CHALLENGE_NOT_AUTHENTIC, node, f"key {member.key_id[:16]} is not on the roster"
            )
        return request, found[1]

    def _expire_requests(self, now: int) -> None:
        """Forget the served request ids a replay of which is refused as stale anyway (more
        than twice the skew allowance either way from when served), from the oldest."""
        requests = self._requests
        while requests:
            first = next(iter(requests))
            if -2 * SKEW_NS <= now - requests[first] <= 2 * SKEW_NS:
                return
            del requests[first]
            node = first[0]
            self._requests_of[node] -= 1
            if not self._requests_of[node]:
                del self._requests_of[node]

    def _live(self, issued_ns: int, now: int) -> bool:
        """A challenge is answerable within `max_age` of its issue, either way (the wall
        clock may step back)."""
        return -self._max_age_ns <= now - issued_ns <= self._max_age_ns

    def _expire(self, now: int) -> None:
        """Forget the unanswered challenges that expired, from the oldest (the Admitter
        forgets its own); one stamped before the wall clock stepped back may wait behind a
        newer one a while longer, and its answer is checked for age itself."""
        issued = self._issued
        while issued:
            self.examined += 1
            nonce = next(iter(issued))
            node = issued[nonce]
            if self._live(self._pending[node][nonce], now):
                return
            self._forget(node, nonce)

    def _forget(self, node: str, nonce: str) -> int | None:
        """Take `nonce` off `node`'s unanswered challenges: when it was issued, or None if it
        is not one of them."""
        mine = self._pending.get(node)
        at = mine.pop(nonce, None) if mine is not None else None
        if at is None:
            return None
        del self._issued[nonce]
        self._keys.pop(nonce, None)
        if not mine:
            del self._pending[node]
        return at

    def _withdraw(self, node: str, mine: OrderedDict[str, int]) -> None:
        """Withdraw the oldest unanswered challenge for `node` (the Admitter forgets it too,
        so memory stays bounded): only a request signed by the node itself gets here, so
        the newest request, the one it is about to answer, always gets a nonce."""
        nonce = next(iter(mine))  # issued in order: the first is the oldest
        self._forget(node, nonce)
        self.admitter.withdraw(nonce)
        self.challenges_refused[CHALLENGE_PENDING_NODE] += 1
        log.warning(
            "CHALLENGE_WITHDRAWN reason=%s node=%s the oldest of %d unanswered challenges "
            "for it (limit %d) makes way for a new one",
            CHALLENGE_PENDING_NODE,
            node,
            len(mine) + 1,
            self._max_pending_per_node,
        )

    def _refuse_challenge(self, reason: str, node: str, detail: str) -> bytes:
        self.challenges_refused[reason] += 1
        log.warning("CHALLENGE_REFUSED reason=%s node=%s %s", reason, node, detail)
        return ENCODER.encode(ChallengeReply("", reason, detail))

    async def _on_attest(self, payload: bytes) -> bytes:
        verdict = self.judge(payload)
        if verdict.node and verdict.attributable:
            await self._store(verdict)
        level = logging.INFO if verdict.admitted else logging.ERROR
        log.log(
            level, "ADMISSION node=%s verdict=%s %s", verdict.node, verdict.status, verdict.detail
        )
        return ENCODER.encode(verdict)

    async def _store(self, verdict: Verdict) -> None:
        """Store `verdict` before it is sent. An admission that cannot be stored raises (the
        node hears nothing and keeps what it had until its verdict's time to live runs out:
        the flag gate and `status` read the stored one). A refusal or fence is the stop
        direction and is sent whatever the store does: a failed or slow write is logged
        and the write goes on. Before, a failed write raised out of the responder and a
        node that had drifted kept trading on its last admission for the whole time to
        live."""
        write = self.plane.put_record(Bucket.ADMISSION, verdict.node, ENCODER.encode(verdict))
        if verdict.admitted:
            await write
            return
        task = asyncio.get_running_loop().create_task(write)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(functools.partial(_log_unstored, verdict))
        await asyncio.wait({task}, timeout=REFUSAL_STORE_WAIT_S)
        if not task.done():
            log.error(
                "ADMISSION_NOT_STORED node=%s verdict=%s: the store has not answered in %g s; "
                "the node is told now, the write goes on",
                verdict.node,
                verdict.status,
                REFUSAL_STORE_WAIT_S,
            )

    def judge(self, payload: bytes) -> Verdict:
        """The verdict on one attestation envelope against the current target."""
        now = self.clock.time_ns()
        try:
            envelope = decode_envelope(payload, source="attestation")
        except ReleaseInputError as exc:
            finding = Finding(AdmissionReason.ATTESTATION_MALFORMED, "envelope", str(exc))
            return Verdict("", False, "refused", "", "", (finding,), now)
        claimed = _claimed(envelope)
        keys: dict[str, VerifyKey] | None = None  # None: the enrolled roster (no claim read)
        if claimed is not None:
            node, nonce = claimed
            if len(envelope.signatures) != 1:
                # each signature naming the node's key was checked: one request carrying
                # hundreds held the service for as many checks
                finding = Finding(
                    AdmissionReason.ATTESTATION_MALFORMED,
                    "signatures",
                    f"{len(envelope.signatures)} signatures; an attestation carries exactly "
                    "one, by its node's enrolled key",
                )
                return Verdict("", False, "refused", "", "", (finding,), now)
            # a signature is checked only against a challenge still unanswered, and once:
            # the attempt spends it (a forgery repeated with one nonce costs no more checks)
            key = self._keys.get(nonce)
            at = self._forget(node, nonce)
            if at is None or not self._live(at, now):
                finding = Finding(
                    AdmissionReason.CHALLENGE_UNKNOWN,
                    node,
                    f"nonce {nonce[:32]!r} is not an unanswered challenge issued to {node[:64]!r} "
                    "(answered, expired or withdrawn); ask for a new one",
                )
                return Verdict("", False, "refused", "", "", (finding,), now)
            attesting = self._attesting_key(node, key, now)
            if isinstance(attesting, Finding):
                self.admitter.withdraw(nonce)
                return Verdict("", False, "refused", "", "", (attesting,), now)
            keys = attesting
            opened, _ = open_attestation(envelope, keys)
            if opened is None:  # not the node's: its challenge admits nobody now
                self.admitter.withdraw(nonce)
        target = self.target
        if self.target_problem:
            finding = Finding(
                AdmissionReason.NOT_TARGET_RELEASE,
                "target",
                f"{self.target_problem}; set it again with `knightwatch admission target`",
            )
            return Verdict("", False, "refused", "", "", (finding,), now)
        if target is None:
            finding = Finding(
                AdmissionReason.NOT_TARGET_RELEASE,
                "target",
                "no target release is set; run `knightwatch admission target ENVELOPE`",
            )
            return Verdict("", False, "refused", "", "", (finding,), now)
        admission = self.admitter.admit(
            envelope,
            target.envelope,
            self.registry,
            target_release=target.release_id,
            roster=keys,
        )
        return self._verdict(admission, target)

    def _attesting_key(
        self, node: str, key: VerifyKey | None, now: int
    ) -> dict[str, VerifyKey] | Finding:
        """The key `node`'s attestation is checked with: the one that signed its request
        for this challenge, still on the roster for that node and valid now.

        Before, the attestation was checked against one key per node taken at the last
        roster version (the newest then): a node still on its old key during a planned
        rotation's overlap got a challenge (its key was valid) and then was refused, its
        lease revoked; and once its old key ended and a new one began with no roster
        version in between, the ended key was the only one accepted, for good. A node not
        enrolled here (new while a kill was in force) stays unknown."""
        if node not in self.roster or key is None:
            return {}  # not enrolled: node_unknown, as before
        roster = self.trust_store.roster
        found = roster.key(key.key_id) if roster is not None else None
        member = found[0] if found is not None else None
        if (
            member is None
            or member.name != node
            or Role.NODE not in member.roles
            or not member.valid_at(now)
        ):
            return Finding(
                AdmissionReason.ATTESTATION_SIGNATURE_INVALID,
                node,
                f"key {key.key_id[:16]} that asked for this challenge is no longer valid on "
                "the roster for this node (revoked or ended since); ask again with a valid key",
            )
        return {node: key}

    def _verdict(self, admission: Admission, target: TargetRecord) -> Verdict:
        schema: dict[str, str] = {}
        if admission.admitted:
            checked = check_release(
                target.envelope, self.trust, self.registry, target_release=target.release_id
            )
            if checked.manifest is not None:
                schema = dict(checked.manifest.contents.flag_schema)
        return Verdict(
            node=admission.node,
            admitted=admission.admitted,
            status=str(admission.status),
            release_id=target.release_id,
            manifest_digest=admission.manifest_digest,
            findings=admission.findings,
            at_ns=admission.at_ns,
            flag_schema=schema,
        )

    async def _on_target(self, payload: bytes) -> bytes:
        """Set the fleet's target release: only a release that passes the pinned policy and
        registry, requested by an operator's signature and approved by a second person
        (except a return to the known-good release while its kill is in force)."""
        try:
            request = TARGET_REQUEST_DECODER.decode(payload)
        except UNDECODABLE as exc:
            finding = Finding(AdmissionReason.MANIFEST_MALFORMED, "request", str(exc))
            return ENCODER.encode(TargetReply(False, "", (finding,)))
        verified = verify_release(request.envelope, self.trust)
        release_id = verified.manifest.release_id if verified.manifest is not None else ""
        checked = check_release(
            request.envelope, self.trust, self.registry, target_release=release_id
        )
        manifest = checked.manifest
        try:
            command = check_target(request.request, self.trust_store.roster, now_ns=self._now())
        except Refused as exc:
            return self._refuse_target(
                release_id,
                "?",
                Finding(AdmissionReason.TARGET_REQUEST_REFUSED, "request", str(exc)),
            )
        actor = command.actor
        if manifest is None:
            return self._refuse_target(release_id, actor, *checked.findings)
        if (command.release_id, command.manifest_digest) != (
            manifest.release_id,
            verified.manifest_digest,
        ):
            detail = (
                f"{TrustReason.PAYLOAD_MISMATCH}: the request names release "
                f"{command.release_id} (manifest {command.manifest_digest[:12]}), not the "
                f"release sent ({manifest.release_id}, {verified.manifest_digest[:12]})"
            )
            finding = Finding(AdmissionReason.TARGET_REQUEST_REFUSED, "request", detail)
            return self._refuse_target(release_id, actor, finding)
        stored, revision = await self.plane.get_record(Bucket.RELEASE, TARGET_KEY)
        if stored is not None and _command_id(stored) == command.command_id:
            detail = f"{TrustReason.REPLAYED}: request {command.command_id[:12]} was applied"
            finding = Finding(AdmissionReason.TARGET_REQUEST_REFUSED, "request", detail)
            return self._refuse_target(release_id, actor, finding)
        if revision != command.decided_on:
            detail = (
                f"{TrustReason.STALE}: decided on target revision {command.decided_on}, the "
                f"target is now at {revision}; ask again"
            )
            finding = Finding(AdmissionReason.TARGET_REQUEST_REFUSED, "request", detail)
            return self._refuse_target(release_id, actor, finding)
        try:
            rollback = await refuse_target_if_frozen(
                self.plane, manifest.release_id, verified.manifest_digest, self.trust_store
            )
        except FrozenByKill as exc:
            return self._refuse_target(
                release_id, actor, Finding(AdmissionReason.FROZEN_BY_KILL, "fleet", str(exc))
            )
        approver = ""
        roster = self.trust_store.roster
        policy = roster.approvals if roster is not None else None
        needed = policy is None or policy.second_person(policy.target, self._now())
        if request.approval is not None or (needed and not rollback):
            try:
                if request.approval is None:
                    raise TrustError(
                        f"approval: none; a target release change by {actor} needs a second "
                        "person's signed approval (knightwatch admission approve)"
                    )
                approver = check_approval(
                    request.approval,
                    roster,
                    kind=ApprovalKind.TARGET,
                    flag_id=manifest.release_id,
                    value=True,
                    nodes=None,
                    requester=actor,
                    now_ns=self._now(),
                    digest=verified.manifest_digest,
                )
                # a second person approved ONE change of target: spent here, before the
                # target is written (a crash between spends it unused: fail closed)
                spent = await self._spend_approval(
                    request.approval, manifest.release_id, actor, approver, command.command_id
                )
                if spent:
                    raise TrustError(f"approval: {spent}")
            except TrustError as exc:
                if not rollback:
                    finding = Finding(AdmissionReason.TARGET_NOT_APPROVED, "approval", str(exc))
                    return self._refuse_target(release_id, actor, finding)
                # the return to the known-good release during its kill is one person's:
                # an approval sent with it that does not count is not counted, never a
                # refusal (the stop direction is not gated on what it does not need)
                log.warning("TARGET_APPROVAL_NOT_COUNTED release=%s %s", release_id, exc)
                approver = ""
        record = TargetRecord(
            manifest.release_id,
            request.envelope,
            actor,
            command.reason,
            self._now(),
            approver=approver,
            command_id=command.command_id,
        )
        try:
            revision = await self.plane.put_record(
                Bucket.RELEASE, TARGET_KEY, ENCODER.encode(record), expected_revision=revision
            )
        except RevisionConflict:
            detail = f"{TrustReason.STALE}: the target changed while this request was checked"
            finding = Finding(AdmissionReason.TARGET_REQUEST_REFUSED, "request", detail)
            return self._refuse_target(release_id, actor, finding)
        self.target, self.target_problem = record, ""
        log.warning(
            "TARGET_SET release=%s by=%s approved_by=%s reason=%r",
            manifest.release_id,
            actor,
            approver or "-" + (" (known-good rollback)" if rollback else ""),
            command.reason,
        )
        return ENCODER.encode(TargetReply(True, manifest.release_id, (), revision))

    async def _spend_approval(
        self, approval: Envelope, release_id: str, actor: str, approver: str, command_id: str
    ) -> str:
        """Record `approval` as used by this change of target; why it cannot be ("" if it
        was unused and is now recorded). An approval is of one change: once it made a
        release the target, moving the target away and back within its hour needs a new
        one. Each used approval is its own record (`used_approval_key`), created only if
        absent, so two requests racing on one approval cannot both count it; whether it
        was used, when the store cannot say, is taken as used (fail closed)."""
        key = used_approval_key(approval)
        try:
            stored, _ = await self.plane.get_record(Bucket.RELEASE, key)
            if stored is None:
                used = UsedApproval(release_id, actor, approver, command_id, self._now())
                await self.plane.put_record(
                    Bucket.RELEASE, key, ENCODER.encode(used), expected_revision=0
                )
                return ""
        except RevisionConflict:
            stored = b""
        except (ControlPlaneUnavailable, TimeoutError) as exc:
            return (
                f"{TrustReason.APPROVAL_INVALID}: whether this approval was used already cannot "
                f"be told ({_line(str(exc))}), so it counts for nothing (fail closed)"
            )
        try:
            earlier = _USED_DECODER.decode(stored)
            by = (
                f"target change to {earlier.release_id} by {earlier.actor} (request "
                f"{earlier.command_id[:12]})"
            )
        except UNDECODABLE:
            by = "an earlier target change"
        return (
            f"{TrustReason.REPLAYED}: this approval was used already, by {by}; an approval "
            "is of one change of target: ask for a new one"
        )

    def _now(self) -> int:
        return self.clock.time_ns()

    def _refuse_target(self, release_id: str, actor: str, *findings: Finding) -> bytes:
        log.error(
            "TARGET_REFUSED release=%s by=%s: %s",
            release_id or "?",
            actor,
            "; ".join(str(f) for f in findings),
        )
        return ENCODER.encode(TargetReply(False, release_id, findings))


async def request_target(
    plane: ControlPlane,
    release: Envelope,
    requester: Signer,
    reason: str,
    *,
    now_ns: int,
    approval: Envelope | None = None,
    timeout_s: float = 5.0,
    fleet: str = "",
) -> TargetReply:
    """Ask the admission service to make `release` the target: signed by `requester`,
    decided on the target record as it reads now, with a second person's `approval`
    (`approve_target`), for `fleet` (the roster's `Roster.fleet`: a named fleet refuses a
    request naming another or none, `wrong_fleet`). TrustError if `release` names no
    manifest."""
    _, revision = await plane.get_record(Bucket.RELEASE, TARGET_KEY)
    signed = target_command(
        release,
        requester,
        reason,
        command_id=uuid.uuid4().hex,
        now_ns=now_ns,
        decided_on=revision,
        fleet=fleet,
    )
    request = TargetRequest(release, signed, approval)
    reply = await plane.request(SUBJECT_TARGET, ENCODER.encode(request), timeout_s=timeout_s)
    try:
        return TARGET_REPLY_DECODER.decode(reply)
    except UNDECODABLE as exc:  # a refusal, never a traceback out of `release target`
        why = f"the admission service's reply ({len(reply)} bytes) is not a target reply: {exc}"
        finding = Finding(AdmissionReason.TARGET_REQUEST_REFUSED, "reply", _line(why))
        return TargetReply(False, "", (finding,))


USED_APPROVAL_PREFIX = "target-approval."
"""Release-bucket keys of the target approvals already used (`used_approval_key`)."""


class UsedApproval(msgspec.Struct, frozen=True):
    """The change of target an approval was spent on (stored under `used_approval_key`)."""

    release_id: str
    actor: str
    approver: str
    command_id: str
    at_ns: int


_USED_DECODER = msgspec.json.Decoder(UsedApproval)


def used_approval_key(approval: Envelope) -> str:
    """The record that says `approval` was used: by the sha256 of its signed payload (the
    approval itself, however its envelope is re-encoded or re-signed)."""
    return USED_APPROVAL_PREFIX + sha256_hex(approval.payload_bytes())


class _Claim(msgspec.Struct):
    """What an attestation says about itself before its signature is checked."""

    node: str
    nonce: str


_CLAIM_DECODER = msgspec.json.Decoder(_Claim)


def _claimed(envelope: Envelope) -> tuple[str, str] | None:
    """The node and nonce an attestation claims (unverified), or None if it cannot be
    read as one (`open_attestation` then says why, with no signature to check)."""
    if envelope.payload_type != ATTESTATION_PAYLOAD_TYPE:
        return None
    try:
        claim = _CLAIM_DECODER.decode(envelope.payload_bytes())
    except (*UNDECODABLE, ValueError):
        return None
    return claim.node, claim.nonce


def _log_unstored(verdict: Verdict, task: asyncio.Task[int]) -> None:
    """Log a refusal's write that failed (the node was told it anyway)."""
    if task.cancelled():
        log.error(
            "ADMISSION_NOT_STORED node=%s verdict=%s: write cancelled", verdict.node, verdict.status
        )
        return
    exc = task.exception()
    if exc is not None:
        log.error(
            "ADMISSION_NOT_STORED node=%s verdict=%s: the store refused it (%s); the node "
            "was told, `status` and the flag gate still read the verdict before it",
            verdict.node,
            verdict.status,
            _line(str(exc) or type(exc).__name__),
        )


def _line(text: str) -> str:
    """`text` on one line, cut short: a refusal is one log line and one reply line."""
    return " ".join(text.split())[:300]


def _verdict_of(stored: bytes) -> str:
    """The node a stored verdict judged ("" if there is none or it cannot be read)."""
    try:
        return VERDICT_DECODER.decode(stored).node if stored else ""
    except UNDECODABLE:
        return ""


def _command_id(stored: bytes) -> str:
    """The command id of the stored target ("" if it cannot be read: a new target, approved
    as any is, replaces one nobody can read)."""
    try:
        return TARGET_DECODER.decode(stored).command_id
    except UNDECODABLE:
        return ""
