"""What the console shows: one snapshot of the fleet, rebuilt from the control plane.

Every panel (nodes, admission, kill-switch entries and their sources,
requests, ramps, flags, rollouts, alerts) comes from one read of the plane,
judged as the nodes judge it: a kill-switch entry whose signatures do not
verify, or a resume the slot's history does not show lifting its halt (stored
again over a newer kill), is shown as UNVERIFIED and held HALTED, exactly what
a node does with it. The snapshot is plain data (msgspec structs) so the page,
the API and the live stream show the same thing.

`Watch` keeps the snapshot current: it listens to the plane's live feeds
(kill state, confirmations, heartbeats, records) and rebuilds after a change,
and at least once a second so lease ages stay honest while nothing happens.
Subscribers (the server-sent-event streams) get each new snapshot, and every
confirmation as it arrives, without waiting for the rebuild. The streams' beats
come from the console, not the fleet, so nothing vouches for a view but this:
its connection is proven by a round trip every `PROBE_EVERY_S` (a link that dies
without its socket closing, a hung server or a dropped route, is told to the
streams within `PROBE_EVERY_S + PROBE_TIMEOUT_S`, not when a read or the client's
pings time out), and a view grown `VIEW_AGE_S` older than its period (a read that
hangs) is told too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import msgspec

from knightwatch.clock import Clock
from knightwatch.control.fleet.approvals import Request, RequestStatus, digest, judge
from knightwatch.control.node.flags import APPLIED_DECODER, STATE_DECODER
from knightwatch.control.plane.history import MALFORMED_KEY, ResumeProofs
from knightwatch.control.plane.protocol import (
    Bucket,
    ControlPlane,
    ControlPlaneUnavailable,
    Record,
)
from knightwatch.control.plane.wire import (
    UNDECODABLE_ACTOR,
    VERDICT_DECODER,
    Confirmation,
    MemberProblem,
    NodeStatus,
    RampRecord,
    StateEntry,
    parse_slot,
    slot_of,
)
from knightwatch.flags.rollout import RolloutState
from knightwatch.incident.ramp import describe_ramp, ramp_signer, unverified_effect
from knightwatch.inputs import UNDECODABLE
from knightwatch.state import TradingState
from knightwatch.trust.command import GUARD_ACTOR, Refused
from knightwatch.trust.store import TrustStore

log = logging.getLogger(__name__)


class NodeRow(msgspec.Struct, frozen=True):
    node: str
    host: str
    lease_ms: float
    """Lease time left (negative: expired that long ago)."""
    expired: bool
    left: bool
    admitted: bool
    release: str
    """The release the admission service admitted it on ("" if none)."""
    armed: bool
    state: str
    flag_revisions: dict[str, int]
    """Flag id -> the revision this node confirmed applying."""
    last_command: str
    last_confirmed_ns: int
    refused: int
    last_refusal: str
    duplicate: str
    unreadable: str = ""
    """Why its membership record cannot be read (`member_undecodable: ...` or
    `member_forged: ...`, as `members()` lists it): "" for a record that was read."""


class AdmissionRow(msgspec.Struct, frozen=True):
    node: str
    admitted: bool
    status: str
    release: str
    at_ns: int
    findings: list[str]
    """Each refusal naming the differing file, flag or key."""


class HaltRow(msgspec.Struct, frozen=True):
    slot: str
    scope: str
    key: str
    state: str
    source: str
    """operator, supervisor, or guard:<reason code> (the node's own rule)."""
    actor: str
    approvers: list[str]
    reason: str
    issued_ns: int
    revision: int
    verified: bool
    refusal: str
    malformed: str = ""
    """Why the stored key is no slot (`state_key_malformed: ...`, `strategy.a.b` written by
    hand): no kill or resume addresses it. "" for a canonical slot."""


class RequestRow(msgspec.Struct, frozen=True):
    id: str
    status: str
    scope: str
    key: str
    requester: str
    approvers: list[str]
    needed: str
    """Who is still needed, in words ("" once applied)."""
    reason: str
    expires_ns: int
    detail: str
    preflight: str
    ramp: str
    """The stages signed with the request, in words ("-": none)."""
    digest: str
    """What an approver co-signs (`approvals.digest`): an approval names it, so a record
    replaced under the same id after it was shown is refused, not co-signed."""


class RampRow(msgspec.Struct, frozen=True):
    slot: str
    ramp_id: str
    stage: int
    stages: int
    fraction: float
    status: str
    actor: str
    trip_reason: str
    signed_by: str = ""
    """Who signed the record, judged as nodes do; "" if it does not verify."""
    refusal: str = ""
    """Why it does not verify, and what nodes do instead (`unverified_effect`)."""


class FlagRow(msgspec.Struct, frozen=True):
    flag: str
    revision: int
    values: dict[str, bool]
    applied: dict[str, int]
    pending: list[str]
    """Nodes that have not confirmed the current revision."""


class RolloutRow(msgspec.Struct, frozen=True):
    flag: str
    rollout_id: str
    status: str
    stage: str
    stage_index: int
    stages: int
    exposed: list[str]
    nodes: list[str]
    started_by: str
    approver: str
    hold_reason: str
    abort_reason: str


class Snapshot(msgspec.Struct, frozen=True):
    at_ns: int
    nodes: list[NodeRow]
    admission: list[AdmissionRow]
    halts: list[HaltRow]
    requests: list[RequestRow]
    ramps: list[RampRow]
    flags: list[FlagRow]
    rollouts: list[RolloutRow]
    roster_version: int
    problems: list[str]
    """Parts the console could not read (shown, never silently dropped)."""


def source_of(actor: str) -> str:
    if actor.startswith(GUARD_ACTOR):
        return actor
    if actor == "supervisor":
        return "supervisor"
    if actor == UNDECODABLE_ACTOR:
        return "store"  # the store's own halt of an entry it cannot decode: no person's
    return "operator"


_MEMBER_PROBLEMS = tuple(f"{p.value}: " for p in MemberProblem)


def unreadable_why(m: NodeStatus) -> str:
    """The reason `members()` gave for a record it could not read (`unreadable_member`),
    or "" for a record it read."""
    if m.host == "unreadable" and m.pid == 0 and m.last_refusal.startswith(_MEMBER_PROBLEMS):
        return m.last_refusal
    return ""


def malformed_why(slot: str) -> str:
    """Why a stored kill-state key is no slot, naming `MALFORMED_KEY`; "" for a slot."""
    try:
        parse_slot(slot)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"{MALFORMED_KEY}: {slot!r} is no slot ({exc}); no kill or resume addresses it"
    return ""


async def _halt_row(
    proofs: ResumeProofs,
    slot: str,
    entry: StateEntry | None,
    revision: int,
    trust: TrustStore,
    now: int,
) -> HaltRow:
    malformed = malformed_why(slot)
    if entry is None and malformed:
        why = "deleted under a key that is no slot: held by no reader"
        return HaltRow(
            slot, "", "", "MALFORMED", "unknown", "", [], "", 0, revision, False, why, malformed
        )
    if entry is None:
        scope, key = parse_slot(slot)
        why = "the stored entry was deleted: held HALTED"
        return HaltRow(
            slot, scope.value, key, "HALTED", "unknown", "", [], "", 0, revision, False, why
        )
    try:
        checked = await proofs.judge(entry, revision, trust.roster, now)
        verified, refusal, approvers = True, "", list(checked.approvers)
        state = TradingState(entry.state).name
    except Refused as exc:
        verified, refusal, approvers, state = False, str(exc), [], "HALTED"
    return HaltRow(
        slot,
        entry.scope.value,
        entry.key,
        state,
        source_of(entry.actor),
        entry.actor,
        approvers,
        entry.reason,
        entry.issued_ns,
        revision,
        verified,
        refusal,
        malformed,
    )


def _request_row(
    r: Request, states: dict[str, tuple[StateEntry | None, int]], now: int
) -> RequestRow:
    stored, revision = states.get(slot_of(r.entry.scope, r.entry.key), (None, 0))
    judged = judge(r, stored, revision, now)
    status, detail = judged.status, judged.detail
    needed = ""
    if status is RequestStatus.PENDING:
        needed = f"one person with the approver role other than {r.requester}"
    return RequestRow(
        r.id,
        str(status),
        r.entry.scope.value,
        r.entry.key,
        r.requester,
        list(r.approvers),
        needed,
        r.entry.reason,
        r.entry.expires_ns,
        detail,
        r.preflight,
        describe_ramp(r.entry.ramp),
        digest(r.entry),
    )


REQUEST_DECODER = msgspec.json.Decoder(Request)
RAMP_DECODER = msgspec.json.Decoder(RampRecord)
ROLLOUT_DECODER = msgspec.json.Decoder(RolloutState)


async def build(
    plane: ControlPlane, trust: TrustStore, clock: Clock, proofs: ResumeProofs | None = None
) -> Snapshot:
    """One snapshot; a bucket that cannot be read is named in `problems`. `proofs`
    remembers which stored resumes the slot history showed lifting their halts."""
    proofs = proofs if proofs is not None else ResumeProofs(plane)
    problems: list[str] = []
    now = clock.time_ns()
    members: list[NodeStatus] = await plane.members()
    states = await plane.states()

    async def records(bucket: Bucket) -> dict[str, tuple[bytes, int]]:
        try:
            return await plane.records(bucket)
        except ControlPlaneUnavailable as exc:
            problems.append(f"{bucket.value}: {exc}")
            return {}

    admission_raw = await records(Bucket.ADMISSION)
    approvals_raw = await records(Bucket.APPROVALS)
    ramp_raw = await records(Bucket.RAMP)
    flags_raw = await records(Bucket.FLAGS)
    rollouts_raw = await records(Bucket.ROLLOUTS)

    verdicts = {}
    for node, (value, _) in admission_raw.items():
        try:
            verdicts[node] = VERDICT_DECODER.decode(value)
        except UNDECODABLE:
            problems.append(f"admission {node}: undecodable verdict")

    applied_by_node: dict[str, dict[str, int]] = {}
    flag_rows: list[FlagRow] = []
    applied: dict[str, dict[str, int]] = {}
    for key, (value, _) in flags_raw.items():
        if key.startswith("applied."):
            try:
                a = APPLIED_DECODER.decode(value)
            except UNDECODABLE:
                problems.append(f"flags {key}: undecodable confirmation")
                continue
            applied.setdefault(a.flag_id, {})[a.node] = a.revision
            applied_by_node.setdefault(a.node, {})[a.flag_id] = a.revision
    for key, (value, _) in sorted(flags_raw.items()):
        if not key.startswith("state."):
            continue
        try:
            st = STATE_DECODER.decode(value)
        except UNDECODABLE:
            problems.append(f"flags {key}: undecodable state")
            continue
        got = applied.get(st.flag_id, {})
        pending = sorted(n for n in st.node_values if got.get(n, 0) < st.revision)
        flag_rows.append(FlagRow(st.flag_id, st.revision, dict(st.node_values), got, pending))

    nodes = []
    for m in sorted(members, key=lambda m: m.node_id):
        v = verdicts.get(m.node_id)
        lease_ms = (m.lease_expires_ns - now) / 1e6
        nodes.append(
            NodeRow(
                m.node_id,
                f"{m.host}:{m.pid}",
                round(lease_ms, 1),
                lease_ms < 0 and not m.left,
                m.left,
                m.admitted,
                v.release_id if v is not None and v.admitted else "",
                m.armed,
                TradingState(m.node_state).name,
                applied_by_node.get(m.node_id, {}),
                m.last_command_id[:12],
                m.last_confirmed_ns,
                m.refused,
                m.last_refusal,
                m.duplicate,
                unreadable_why(m),
            )
        )
    admission = [
        AdmissionRow(n, v.admitted, v.status, v.release_id, v.at_ns, [str(f) for f in v.findings])
        for n, v in sorted(verdicts.items())
    ]
    halts = [
        await _halt_row(proofs, slot, e, rev, trust, now)
        for slot, (e, rev) in sorted(states.items(), key=lambda x: -x[1][1])
    ]
    requests = []
    for key, (value, _) in approvals_raw.items():
        try:
            request = REQUEST_DECODER.decode(value)
        except UNDECODABLE:
            problems.append(f"approvals {key}: undecodable request")
            continue
        try:
            requests.append(_request_row(request, states, now))
        except ValueError as exc:
            # a request naming a key no slot holds (StateKeyError; operators write this
            # bucket): it raised out of `build`, and one such record left every snapshot
            # unbuilt (/api/snapshot a 500, the stream frozen on its last one, still LIVE)
            problems.append(f"approvals {key}: no request a node could act on ({exc})")
    requests.sort(key=lambda r: (r.status != "pending", -r.expires_ns))
    ramps = []
    for slot, (value, _) in sorted(ramp_raw.items()):
        try:
            r = RAMP_DECODER.decode(value)
        except UNDECODABLE:
            problems.append(f"ramp {slot}: undecodable record")
            continue
        signer = ramp_signer(r, trust.roster)
        ramps.append(
            RampRow(
                slot,
                r.ramp_id,
                r.stage,
                len(r.stages),
                r.fraction,
                r.status,
                r.actor,
                r.trip_reason,
                signer if isinstance(signer, str) else "",
                "" if isinstance(signer, str) else f"{signer}; {unverified_effect(r)}",
            )
        )
    rollouts = []
    for flag, (value, _) in sorted(rollouts_raw.items()):
        try:
            ro = ROLLOUT_DECODER.decode(value)
        except UNDECODABLE:
            problems.append(f"rollouts {flag}: undecodable state")
            continue
        stage = None
        if 0 <= ro.stage_index < len(ro.plan.stages):
            stage = ro.plan.stages[ro.stage_index]
        elif ro.plan.stages:
            # an IndexError here left every snapshot unbuilt (as a bad request did, above)
            problems.append(
                f"rollouts {flag}: stage_index {ro.stage_index} is outside its plan's "
                f"{len(ro.plan.stages)} stages"
            )
        rollouts.append(
            RolloutRow(
                ro.flag_id,
                ro.rollout_id,
                str(ro.status),
                stage.name if stage is not None else "",
                ro.stage_index,
                len(ro.plan.stages),
                list(ro.exposed),
                list(ro.nodes),
                ro.started_by,
                ro.approver or "",
                ro.hold_reason,
                ro.abort_reason,
            )
        )
    return Snapshot(
        now,
        nodes,
        admission,
        halts,
        requests,
        ramps,
        flag_rows,
        rollouts,
        trust.version,
        problems,
    )


PROBE_EVERY_S = 0.25
"""How often the view's connection is proven by a round trip (a PING the server answers)."""
PROBE_TIMEOUT_S = 0.5
"""A round trip not answered within this is a silent link: told as a problem at once. The
streams' beats come from the console, not the fleet, so they kept a page LIVE over a view
frozen on a link that died with its socket open, until a read timed out (2 s) or the
client's pings failed (2-3 s)."""
VIEW_AGE_S = 3.0
"""How much older than `every_s` the view may grow, and how long one read may take, before
it is told as a problem: a read that hangs (no answer, no error, no lost connection, every
round trip answered) left the pages LIVE over the last view built for as long as it hung.
A read's own requests time out in 2 s (then a problem is told anyway): past this, nothing
vouches for the view."""
OLD = "the fleet view was last read {age:.1f} s ago and no read has finished since: {tail}"
LAST_VIEW = "this is the last view read, not the fleet now"
SILENT = "control plane did not answer a round trip in {timeout:g} s: " + LAST_VIEW

Listener = Callable[[str, bytes], None]
"""(event name, JSON data) for each subscriber; must not block."""

SNAPSHOT_ENCODER = msgspec.json.Encoder()


class Watch:
    """Keeps `latest` current and tells listeners; one per console process."""

    def __init__(
        self, plane: ControlPlane, trust: TrustStore, clock: Clock, *, every_s: float = 1.0
    ) -> None:
        self.plane = plane
        self.trust = trust
        self.clock = clock
        self.every_s = every_s
        self.latest: Snapshot | None = None
        self.latest_json = b"{}"
        self.event_id = 0
        self._listeners: set[Listener] = set()
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._proofs = ResumeProofs(plane)
        self.error = ""
        self._losses = 0
        """Times the plane's connection was lost (or went silent, `_probe`): a read that
        spans a loss is no view now."""
        self._silent = False
        """The last round trip went unanswered (`_probe`); cleared when one is answered."""
        self._read_at: float | None = None
        """When the read of `latest` began (the loop's clock): how old the view shown is."""

    def listen(self, listener: Listener) -> Callable[[], None]:
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    def _tell(self, event: str, data: bytes) -> None:
        self.event_id += 1
        for listener in list(self._listeners):
            listener(event, data)

    async def _changed(self, _: object) -> None:
        self._dirty.set()

    async def _confirmed(self, c: Confirmation) -> None:
        self._tell(
            "confirm",
            msgspec.json.encode(
                {
                    "command_id": c.command_id,
                    "node": c.node_id,
                    "scope": c.scope.value,
                    "key": c.key,
                    "state": TradingState(c.state).name,
                    "applied_ns": c.applied_ns,
                    "still_working": c.still_working,
                }
            ),
        )
        self._dirty.set()

    async def _connection(self, connected: bool) -> None:
        """The plane's connection went or came back. Gone: the streams hear it at once (the
        pages turn STALE). The next read only fails when its request times out (2 s), and
        until then the streams' beats, every 0.25 s on a local console, kept a page LIVE
        over a view that no longer changed. Back: read again now."""
        if connected:
            self._dirty.set()
            return
        self._losses += 1
        self.error = "control plane connection lost: this is the last view read, not the fleet now"
        self._tell("problem", msgspec.json.encode({"error": self.error}))

    async def start(self) -> None:
        self.plane.on_connection(self._connection)
        await self.plane.subscribe_states(self._changed)
        await self.plane.subscribe_confirmations(self._confirmed)
        for bucket in (Bucket.APPROVALS, Bucket.ADMISSION, Bucket.FLAGS, Bucket.ROLLOUTS,
                       Bucket.RAMP):  # fmt: skip
            await self.plane.subscribe_records(bucket, self._record)
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="console-watch")
        self._probe_task = asyncio.create_task(self._probe(), name="console-watch-probe")

    async def _probe(self) -> None:
        """Prove the connection every `PROBE_EVERY_S`. Unanswered within `PROBE_TIMEOUT_S`:
        a loss (a read in flight across it is no view now) told at once; answered again:
        read now, whose snapshot turns the pages LIVE again. A closed connection is left to
        `_connection`, which hears it."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            await asyncio.sleep(PROBE_EVERY_S)
            read_at = self._read_at
            if read_at is not None and not self.error:
                age = loop.time() - read_at
                if age > self.every_s + VIEW_AGE_S:
                    self.error = OLD.format(age=age, tail=LAST_VIEW)
                    log.warning("console view: %s", self.error)
                    self._tell("problem", msgspec.json.encode({"error": self.error}))
            if not self.plane.connected:
                continue
            try:
                await self.plane.ping(PROBE_TIMEOUT_S)
            except Exception as exc:  # unproven, whatever the cause: never shown as live
                self._losses += 1
                if not self._silent:
                    log.warning("console view: control plane silent: %s", exc)
                self._silent = True
                self.error = SILENT.format(timeout=PROBE_TIMEOUT_S)
                self._tell("problem", msgspec.json.encode({"error": self.error}))
                continue
            if self._silent:
                self._silent = False
                log.warning("console view: control plane answers again")
                self._dirty.set()

    async def _record(self, _: Record) -> None:
        self._dirty.set()

    async def refresh(self) -> None:
        losses = self._losses
        began = asyncio.get_running_loop().time()
        try:
            snap = await build(self.plane, self.trust, self.clock, self._proofs)
            if losses != self._losses or not self.plane.connected:
                # read (in part) before the connection went: not the fleet now, and told
                # as current it would turn a STALE page LIVE again
                raise ControlPlaneUnavailable(
                    "control plane connection lost during the read: this is the last view "
                    "read, not the fleet now"
                )
        except ControlPlaneUnavailable as exc:
            self.error = str(exc)
            self._tell("problem", msgspec.json.encode({"error": self.error}))
            return
        self.error = ""
        self._read_at = began
        self.latest = snap
        self.latest_json = SNAPSHOT_ENCODER.encode(snap)
        self._tell("snapshot", self.latest_json)
        took = asyncio.get_running_loop().time() - began
        if took > VIEW_AGE_S:
            # shown (it is newer than what the pages hold), but not as the fleet now: what
            # it read may be as old as the read was long
            self.error = f"the last fleet read took {took:.1f} s: {LAST_VIEW}"
            self._tell("problem", msgspec.json.encode({"error": self.error}))

    async def _loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.every_s)
            self._dirty.clear()
            try:
                await self.refresh()
            except Exception as exc:  # a bad record must not stop the console's view for good
                log.exception("console snapshot failed")
                # and the page must learn it: the stream's beats kept it LIVE on the last
                # snapshot built, with nothing saying that no newer one could be (a kill
                # after it never showed in the halts panel)
                self.error = f"the fleet view could not be rebuilt ({type(exc).__name__}: {exc})"
                self._tell("problem", msgspec.json.encode({"error": self.error}))

    async def stop(self) -> None:
        """End the loop. A cancel that lands in a read can be swallowed on the way (the loop
        then waited on, and the console's stop hung, for good): the loop also checks a flag,
        and the cancel is repeated until the task has ended."""
        self._stopping = True
        for task in (self._task, self._probe_task):
            while task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
        self._task = self._probe_task = None
