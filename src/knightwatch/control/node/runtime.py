"""The node runtime: the control plane's agent inside an order-emitting process.

It hosts the process's Guard and is the only thing that renews its lease. The
embedding program calls `check`, `on_fill`, `on_cancel` and `on_price` on the
runtime instead of the Guard (same signatures), from the asyncio loop the
runtime runs on. What it guarantees:

* kill and halt entries reach the Guard the moment they arrive on either path
  (fast announcement or durable store), and each one is confirmed back;
* the lease is renewed only after a full round trip to the server, with kill
  state in sync; a disconnect, a failed round trip, or a stall longer than the
  lease (a frozen process, a starved loop) drops admission at once, and only a
  fresh resync from the store of record re-admits the node;
* with an `Attestor`, the node is judged by the admission service before it
  can take a lease or arm: it attests what it runs at join, every `attest_s`
  and whenever the fleet's target release changes; a refusal or a fence
  (drift) expires the Guard's lease at once, and so does a verdict older than
  `admission_ttl_s` (the admission service stopped answering: unknown release);
* metrics and flight-recorder lines flow to the control plane in the background;
* halts this node's own flight recorder says were in force when it last
  stopped (`recovered`) are restored at join for every slot the store has no
  word on (it lost them): the node comes back halted from its own durable
  record, stores the halt again, and stays halted until an operator resumes;
  each as the command it was (a kill's halt record names its command id), so a
  resume of that kill lifts it whatever the clocks said, and one of another does not
  unless the store's kept history held that kill before it (a kill heard on the fast
  path alone stays, however the resume is dated); the Guard's own halts (a loss
  stop) are restored whatever the store holds over them (an operator's kill, its
  resume) unless the store shows a resume of that very source, and stored again once
  the slot reads ACTIVE: only a resume that names such a halt lifts it;
* a resume ramp's stage (a `RampRecord` in the ramp bucket) reaches the Guard as
  scaled limits the moment it is stored, and on every resync, so a resumed
  scope trades at the stage's limits, never at full limits first; a record
  whose signature does not verify holds the tightest stage instead;
* each start is recorded, so a crash loop is visible to a resume's preflight;
* with a `drain` (a gateway with orders working at a venue), a kill is confirmed
  only once the drain says nothing in the scope is left working, or names the
  orders still working when it gives up; the Guard blocks at once either way.

The Guard may also be called from other threads (a FIX engine's): the runtime
then needs a `LockedGuard`, reads it through `counters` and `flush_records`,
and hands automatic halts decided on those threads to its own event loop.
* nothing is applied unless it verifies against the roster (`knightwatch.trust`):
  a live command that does not is refused, counted, logged and written to the
  flight recorder; a stored entry that does not is treated as a halt of its
  slot (fail closed), so a forged or wiped store entry can never lift a kill;
  a stored resume the node did not apply itself is adopted only if the store's
  history shows it was written right over the halt it lifts, at the revision it
  was decided on (else it is refused as `replayed` and its slot held halted), so
  an old approved resume put back over a newer kill lifts nothing; nor does it lift a
  halt held here that it does not name and the store never held before it (a kill heard
  on the fast path alone, dated before it by a lagging clock), as when heard live;
* the node signs its own automatic halts and hands them to the fleet's relay
  (it has no right to write the kill state itself), and a second process
  claiming its node id is refused at join and reported by the holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from knightwatch.audit.record import AuditContext
from knightwatch.audit.standing import StandingHalt
from knightwatch.clock import NS_PER_S, Clock
from knightwatch.control.node.attestor import Attestor
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.shipping import ShippingSink
from knightwatch.control.node.trustfeed import follow_roster
from knightwatch.control.plane.history import (
    UNVERIFIED_ACTOR,
    held_halted,
    unproven_resume,
    unverified_id,
)
from knightwatch.control.plane.protocol import (
    STATE_HISTORY,
    Bucket,
    ControlPlane,
    ControlPlaneUnavailable,
    Record,
    RevisionConflict,
)
from knightwatch.control.plane.wire import (
    ENCODER,
    GUARD_ACTOR,
    MAX_STATE_KEY,
    RAMP_DECODER,
    STARTS_DECODER,
    SUBJECT_AUTO_HALT,
    TARGET_KEY,
    UNDECODABLE_ACTOR,
    AuditEnvelope,
    Confirmation,
    NodeMetrics,
    NodeStarts,
    NodeStatus,
    RampRecord,
    StateEntry,
    StateKeyError,
    Verdict,
    parse_slot,
    slot_of,
    starts_key,
)
from knightwatch.decision import Decision, RejectReason
from knightwatch.errors import KnightwatchError
from knightwatch.guard import Guard, Halt, RecorderUnavailable
from knightwatch.inputs import UNDECODABLE
from knightwatch.limits import scaled
from knightwatch.order import Fill, Order
from knightwatch.release.dsse import Envelope
from knightwatch.release.errors import ReleaseInputError
from knightwatch.state import FLEET_KEY, Scope, TradingState
from knightwatch.trust.command import (
    Checked,
    Refused,
    StateCommand,
    TrustReason,
    check_state,
    ramp_ends_ns,
    ramp_fraction,
)
from knightwatch.trust.identity import Signer
from knightwatch.trust.rampproof import check_ramp
from knightwatch.trust.roster import Role
from knightwatch.trust.store import TrustStore

log = logging.getLogger(__name__)

_AUDIT_BATCH = 1000
_AUDIT_BYTES = 256 * 1024
"""An envelope's most lines and bytes: within NATS's default 1 MiB payload after base64."""
_AUDIT_ENVELOPES_PER_TICK = 8
_RECONFIRM_NS = 50_000_000
_UNLOCKED = contextlib.nullcontext()
"""What `_record` holds for a Guard without a lock (one driven from the loop only)."""
REPORT_DELAY_S = 0.02
"""How long a confirmed kill's record and log line wait: past the fleet's confirmations.

On a host shared by many nodes (32 on 2 cores in `bench/kill_bench.py`), every
node's bookkeeping right after its own confirmation ran while other nodes were
still on their way to theirs, and a kill is as slow as its slowest node. The
Guard blocks before the confirmation, so the wait delays only the record (its
`latched_ns` says when the halt took effect, and `audit why` reads it) and the
line. A resume arriving first writes them at once (`_apply`), and so does a
stop; another kill's waits behind them, so a kill in a burst is confirmed before
the records of the ones before it are written. A crash inside the wait loses
them from this node's file, not from the store of record, which the restarted
node reads back."""


def _nothing() -> None:
    """What is left to do after confirming a resume: it was recorded before it applied."""


_DROPS_SAID_S = 10
"""The shortest time between two lines saying shipped lines were dropped."""
_ATTEST_TIMEOUT_S = 2.0
_SEEN_COMMANDS = 4096
THAWED_KEPT = STATE_HISTORY
"""Lifted kills a node remembers per slot (`NodeRuntime.thawed`): as many as the store
keeps writes of a slot, so a node that ran through them knows at least what a restarted
one reads back."""
_VERIFIED_CACHE = 256
_AUTO_RETRY_S = 0.2
_STARTS_KEPT = 16
_AUTO_TTL_NS = 60 * NS_PER_S


_TIGHTEST_RAMP = 0.1
"""The fraction a ramp record that cannot be trusted holds: the default first stage."""


def _tightest(why: str) -> RampRecord:
    """What a node holds for a ramp record it cannot decode or verify (fail closed)."""
    return RampRecord(
        Scope.FLEET, "fleet", "?", 0, (_TIGHTEST_RAMP,), _TIGHTEST_RAMP, "ramping", "?", why, 0
    )


def _named(ramp: RampRecord) -> str:
    """The ramp bucket key `ramp` belongs under ("" if its scope and key name no slot)."""
    try:
        return slot_of(ramp.scope, ramp.key)
    except StateKeyError:
        return ""


def _ramp_level(ramp: RampRecord) -> float:
    """The fraction of its limits `ramp` lets a node trade at."""
    return ramp.fraction if ramp.holds else 1.0


def _undecodable(entry: StateEntry) -> bool:
    """The halt `decode_entry` made of a stored value that is no entry: made here, never
    signed, and it can only stop its slot (a stop needs no signature to be safe)."""
    return (
        entry.actor == UNDECODABLE_ACTOR
        and entry.state is TradingState.HALTED
        and entry.issued_ns == 0
    )


"""Actor of the halt a node holds for a stored entry it cannot verify (fail closed)."""


def _slot_problem(scope: Scope, key: str) -> str | None:
    """Why no Guard latch can hold `key` of `scope`, or None: a key no slot can hold (empty,
    over `MAX_STATE_KEY` characters), or one the Guard refuses to halt (only whitespace).
    Such an entry is no command; before, a stored one raised out of every node's resync
    (no node could start) and an announced one out of its handler."""
    try:
        slot_of(scope, key)
    except StateKeyError as exc:
        return str(exc)
    if scope is not Scope.FLEET and not key.strip():
        return f"{scope.value} key: must not be only whitespace (got {key!r})"
    return None


_CARRIED = " [command "


def _carrying(reason: str, command_id: str) -> str:
    """The Guard latch's reason for a kill: its own, then the id of the command it applies.

    The flight recorder's halt record keeps the reason, so a node restarting from its
    own record (`NodeRuntime._restore`) knows which command the halt was: a resume naming
    it lifts it after the restart as before, whatever the clocks of its signers and this
    node said, and a resume naming another command does not."""
    return f"{reason}{_CARRIED}{command_id}]"


def _carried(reason: str) -> tuple[str, str]:
    """`reason` without the command id `_carrying` added, and that id ("" if none)."""
    if reason.endswith("]"):
        text, sep, command_id = reason.rpartition(_CARRIED)
        if sep and len(command_id) > 1:
            return text, command_id[:-1]
    return reason, ""


def _kept_ids(slot: str, kept: list[tuple[StateEntry | None, int]]) -> frozenset[str]:
    """The commands a slot's kept history held: each write's command id, and the
    fail-closed halt a reader holds for a write it could not trust (`unverified_id`)."""
    ids = {unverified_id(slot, at) for _, at in kept}
    ids.update(e.command_id for e, _ in kept if e is not None)
    return frozenset(ids)


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again every half second.

    Python 3.11's `asyncio.wait_for` (inside nats-py's requests) can swallow a
    cancellation that lands as its inner future completes: a loop cancelled there went
    on to its next sleep and round, and the one awaiting it (a node stopping) waited for
    good (seen under load: a stopping node's checkpoint loop)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s ended with %r while stopping", task.get_name(), task.exception())


class NodeError(KnightwatchError, RuntimeError):
    """The runtime cannot host this Guard or arm it; the message says why."""


Drain = Callable[[StateEntry], Awaitable[list[str]]]
"""Cancels what a kill's scope has working outside the process (orders at a venue) and
returns the ids still working when it stops waiting (empty: all gone)."""


MAX_METRICS_S = 60.0
"""The longest metrics interval: a supervisor judges a node by its counters, and halts one
it has not heard from within its `stale_after_s` (5 s by default: keep the interval below
the supervisor's)."""
MAX_ATTEST_S = 3600.0
"""The longest re-attestation interval: drift is seen at the next attestation."""
MAX_ADMISSION_TTL_S = 4 * MAX_ATTEST_S
"""The longest a verdict counts without a new one (the admission service silent)."""


class NodeRuntime:
    def __init__(
        self,
        guard: Guard,
        plane: ControlPlane,
        *,
        clock: Clock,
        trust: TrustStore,
        signer: Signer,
        policy: LeasePolicy | None = None,
        metrics_s: float = 0.5,
        shipper: ShippingSink | None = None,
        attestor: Attestor | None = None,
        attest_s: float = 5.0,
        admission_ttl_s: float | None = None,
        recovered: Sequence[StandingHalt] = (),
    ) -> None:
        self.policy = policy if policy is not None else LeasePolicy()
        for name, given, least, most in (
            ("metrics_s", metrics_s, 0.01, MAX_METRICS_S),
            ("attest_s", attest_s, 0.05, MAX_ATTEST_S),
        ):
            if not least <= given <= most:  # NaN fails too
                # an infinite interval passed the old checks: a node that never published
                # its counters (halted as silent), or never attested again (drift unseen)
                raise NodeError(f"{name}: must be between {least:g} and {most:g} s (got {given})")
        ttl = admission_ttl_s if admission_ttl_s is not None else 3 * attest_s
        if not attest_s <= ttl <= MAX_ADMISSION_TTL_S:
            raise NodeError(
                f"admission_ttl_s: must be between attest_s ({attest_s:g}) and "
                f"{MAX_ADMISSION_TTL_S:g} s (got {ttl:g})"
            )
        self.recovered = tuple(recovered)
        lease = guard.limits.lease_timeout_s
        if lease is None or abs(lease - self.policy.lease_timeout_s) > 1e-9:
            raise NodeError(
                f"lease_timeout_s: the Guard's limits must set lease_timeout_s = "
                f"{self.policy.lease_timeout_s:g} to match the node's lease policy (got {lease})"
            )
        try:
            guard.listen_for_halts(self._on_guard_halt)
        except ValueError:
            raise NodeError(
                "on_halt: the runtime stores the Guard's automatic halts; leave it unset"
            ) from None
        if signer.name != guard.node:
            raise NodeError(
                f"signer: node {guard.node} must sign with its own enrolled key (got {signer.name})"
            )
        self.guard = guard
        self.base_limits = guard.limits
        """The limits this node was started with; a ramp stage scales these."""
        self._ramps: dict[str, RampRecord] = {}
        # per slot, the last signed ramp record passed over as stale (`_take_ramp`): taken
        # again when the resume its ramp belongs to comes into force here
        self._passed: dict[str, bytes] = {}
        # per slot, the newest revision of a ramp record heard live since a resync began
        self._ramps_heard: dict[str, int] = {}
        # per slot, the resume in force whose signed ramp this node holds by its own clock,
        # and when (monotonic ns) that ramp started here
        self._plans: dict[str, tuple[StateEntry, int]] = {}
        self.plane = plane
        self.node_id = guard.node
        self.trust = trust
        self.signer = signer
        self.instance = uuid.uuid4().hex[:12]
        self.refused: Counter[TrustReason] = Counter()
        self.last_refusal = ""
        self._refused_ids: dict[str, None] = {}
        # stop-direction commands already verified, per roster version: the same kill heard
        # again (the other path, a re-announcement) costs a dict lookup, not a signature check
        self._verified: dict[tuple[int, bool, StateCommand, Envelope], Checked] = {}
        self.duplicate = ""
        self._claimed = False
        """This process holds the node id (`_claim_id` passed): only then does its stop say
        the node `left`. A second process refused the id wrote `left` over the live
        holder's record, and kills, the preflight and the console took the node for gone."""
        self.clock = clock
        self.metrics_s = metrics_s
        self.shipper = shipper
        self.admitted = False
        self.errors: list[str] = []
        self.confirmed: list[Confirmation] = []
        self._applied: dict[str, StateEntry] = {}
        self._applied_by: dict[str, Checked | None] = {}
        """Who signed the entry held per slot (a resume: its requester and approvers)."""
        self.thawed: dict[tuple[Scope, str], list[tuple[int, int, str]]] = {}
        """Per fleet or strategy slot, the verified kills resumes lifted on this node, oldest
        first (at most `THAWED_KEPT`): (when the kill was in force from: its issued_ns, or
        when this node latched it or the store wrote it if earlier (a clock ahead), the
        resume's issued_ns, who killed). A flag change issued in between was made under
        that kill, and `NodeFlags` refuses it after the resume too, so a node started
        after the resumes judges it as the ones that ran through the kills did (from the
        slot's kept history)."""
        self._seen: dict[str, None] = {}
        """Command ids applied lately, in order; a halt not among them is applied regardless."""
        self._in_force: dict[str, tuple[str, int]] = {}
        """Per slot, a kill read from the store that was in force before its issue time
        (its signer's clock ahead): its command id and when the store wrote it."""
        self._restored: set[str] = set()
        """Slots whose entry held is a halt restored from this node's own record (`_restore`)."""
        self._auto: dict[tuple[Scope, str], dict[RejectReason, Halt]] = {}
        """The Guard's own halts still in force, per slot and source (its code), kept so
        they can be stored (again), one after the other as each stored one is resumed."""
        self._confirmed_at: dict[str, int] = {}
        self._reports: list[Callable[[], None]] = []
        """Records and log lines of confirmed commands, written once their confirmation left."""
        self._last_renewal_ns = 0
        self._drops = 0
        self._unstorable: set[tuple[Scope, str]] = set()
        """Halts restored after a store loss that a node may not sign (logged once)."""
        """Connection losses seen so far (`_dropped_since`)."""
        self._started_ns = clock.time_ns()
        self._tasks: list[asyncio.Task[None]] = []
        self._member_put: asyncio.Task[None] | None = None
        self._member_said: NodeStatus | None = None
        """The last stored membership record, without its two clock fields."""
        self._member_expires_ns = 0
        self._audit_seq = 0
        self._unshipped: AuditEnvelope | None = None
        """An envelope sent but not acknowledged: sent again, as it is, before any new one."""
        self._running = False
        self.attestor = attestor
        self.attest_s = attest_s
        self._admission_ttl_ns = int(ttl * NS_PER_S)
        self.verdict: Verdict | None = None
        self._verdict_mono = 0
        self._attest_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self.target_set = False
        self.release_event = asyncio.Event()
        """Set once the node is admitted on the target release (always, without an attestor)."""
        if attestor is None:
            self.release_event.set()
        self.drain: Drain | None = None
        """Set by a host with orders outside the process (see the module docstring)."""
        self._draining: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failing: set[str] = set()
        """Background loops whose last round raised (`_round`): logged once per run."""
        self._dropped_said = 0
        self._dropped_said_ns = 0
        """`shipper.dropped` when last logged (`_say_dropped`), and when (monotonic ns)."""

    # --- the embedding program's order path ---------------------------------
    def check(self, order: Order) -> Decision:
        """The Guard's verdict; while not admitted the Guard's lease is expired, so it blocks."""
        return self.guard.check(order)

    def on_fill(self, fill: Fill) -> None:
        self.guard.on_fill(fill)

    def on_cancel(self, order_id: str) -> None:
        self.guard.on_cancel(order_id)

    def on_price(self, symbol: str, price: float) -> None:
        self.guard.on_price(symbol, price)

    # --- arming --------------------------------------------------------------
    def report_error(self, text: str) -> None:
        """Something the process found wrong before or while trading (Knight's 97 emails).

        Errors before arming make `arm` refuse, and the supervisor pages on them.
        """
        self.errors.append(text)
        log.error("NODE_ERROR node=%s armed=%s error=%r", self.node_id, self.guard.armed, text)

    @property
    def release_admitted(self) -> bool:
        """Admitted on the fleet's target release by a verdict still within its time to live.

        A node without an attestor is admitted only while the fleet has no target
        release: once it has one, every node attests or never arms."""
        if self.attestor is None:
            return not self.target_set
        v = self.verdict
        fresh = self.clock.monotonic_ns() - self._verdict_mono <= self._admission_ttl_ns
        return v is not None and v.admitted and fresh

    def _refusal(self) -> str:
        if self.attestor is None:
            return (
                "release admission: the fleet has a target release and this node does not "
                "attest (start it with --artifacts, --config and --flags; a gateway with "
                "--artifacts, --release-config and --flags)"
            )
        v = self.verdict
        if v is None:
            return "release admission: no verdict yet"
        if not v.admitted:
            return f"release admission {v.status}: {v.detail}"
        return "release admission expired: the admission service has not answered"

    def arm(self, actor: str) -> None:
        if not self.release_admitted:
            raise NodeError(f"node {self.node_id} cannot arm: {self._refusal()}")
        if self.errors and not self.guard.armed:
            raise NodeError(
                f"node {self.node_id} reported {len(self.errors)} error(s) before arming "
                f"(first: {self.errors[0]!r}); fix them and restart instead of arming"
            )
        self.guard.arm(actor)

    # --- lifecycle -----------------------------------------------------------
    async def join(self) -> None:
        """Subscribe, resync kill state, take the lease and register; raises if unreachable.

        A simulation calls this and then steps `heartbeat_once`/`publish_once` on
        its own clock; live processes call `start`, which adds the timed loops.
        """
        self._loop = asyncio.get_running_loop()
        self.plane.on_connection(self._on_connection)
        await self.plane.subscribe_records(Bucket.RAMP, self._on_ramp)
        await follow_roster(self.plane, self.trust)
        if self.trust.roster is None or not self.trust.roster.has_role(self.node_id, Role.NODE):
            raise NodeError(
                f"node {self.node_id} is not enrolled: the roster (version {self.trust.version}) "
                "holds no node identity of that name; enrol its key first"
            )
        await self._claim_id()
        self._claimed = True
        # its own subject only: a wildcard is refused by the server under authorization,
        # and every other node's heartbeat would cost this process a decode
        await self.plane.subscribe_heartbeats(self._on_heartbeat, self.node_id)
        await self.plane.subscribe_states(self._on_state)
        drops = self._drops
        stored = await self._resync()
        relatched = self._restore(
            stored, await self._lifted_in_store(stored), await self._own_lifted(stored)
        )
        self._store_lost(stored, relatched)
        await self._record_start()
        await self.plane.subscribe_records(Bucket.RELEASE, self._on_release)
        target, _ = await self.plane.get_record(Bucket.RELEASE, TARGET_KEY)
        self.target_set = target is not None
        if self.attestor is not None:
            await self.attest_once()
        elif self.target_set:
            self.release_event.clear()
            log.error("RELEASE_REFUSED node=%s %s", self.node_id, self._refusal())
        if self._dropped_since(drops):
            pass  # no lease yet: the first heartbeat resyncs
        elif self.release_admitted:
            self._renew()
        else:
            log.error("node %s: not admitted; no lease (%s)", self.node_id, self._refusal())
        await self.plane.put_member(self.status())

    async def start(self) -> None:
        """`join`, then heartbeats and metrics in the background until `stop`."""
        await self.join()
        self._running = True
        self._tasks = [
            asyncio.create_task(self._heartbeats(), name=f"{self.node_id}-heartbeat"),
            asyncio.create_task(self._publishing(), name=f"{self.node_id}-metrics"),
        ]
        if self.attestor is not None:
            self._tasks.append(
                asyncio.create_task(self._attesting(), name=f"{self.node_id}-attest")
            )
        log.info("node %s joined (lease %.3fs)", self.node_id, self.policy.lease_timeout_s)

    async def stop(self) -> None:
        self._running = False
        self._report_now()
        self._revoke("node stopping")
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            await stop_task(task)
        self._tasks = []
        if self._member_put is not None:
            self._member_put.cancel()
        if not self._claimed:
            return  # the id is another process's (refused at join): its record is not ours
        with contextlib.suppress(ControlPlaneUnavailable):
            await self.plane.put_member(self.status(left=True))

    # --- one node id, one process ---------------------------------------------
    async def _claim_id(self) -> None:
        """Refuse to join while another live process holds this node id.

        A crashed holder's record stays live until its lease runs out, so a
        restart waits for that before deciding; a holder that keeps renewing is
        another process, and this one is refused.
        """
        grace_ns = self.policy.lease_ns
        holder = ""
        for _ in range(3):
            held = {s.node_id: s for s in await self.plane.members()}.get(self.node_id)
            now = self.clock.time_ns()
            if held is None or held.instance == self.instance or not held.live(now, grace_ns):
                return
            holder = f"{held.host}:{held.pid}"
            await asyncio.sleep(min((held.lease_expires_ns + grace_ns - now) / NS_PER_S, 2.0))
        raise NodeError(
            f"node id {self.node_id} is held by a live process ({holder}); "
            "a node id belongs to one process: refusing to join"
        )

    async def _on_heartbeat(self, status: NodeStatus) -> None:
        if status.node_id != self.node_id or status.instance in ("", self.instance):
            return
        seen = f"{status.host}:{status.pid}"
        if seen != self.duplicate:
            self.duplicate = seen
            log.error(
                "DUPLICATE_NODE node=%s other=%s: another process claims this node id",
                self.node_id,
                seen,
            )
            self._record("duplicate_node", other=seen)

    # --- verification ---------------------------------------------------------
    def record_event(self, kind: str, **fields: str | int) -> None:
        """An event in this node's flight recorder (its flag state's refusals, too)."""
        self._record(kind, **fields)

    def _record(self, kind: str, **fields: str | int) -> None:
        """Under the Guard's lock when it has one (`LockedGuard`, a gateway's): the recorder
        has one writer at a time, and the FIX engine's threads write decisions under that
        lock. Written from the loop without it, an event could cut into a decision's line
        or batch, and `audit verify` found the gateway's own lines edited."""
        context = AuditContext(node=self.node_id, limits_version=self.guard.limits.version)
        try:
            with getattr(self.guard, "lock", _UNLOCKED):
                self.guard.recorder.record_event(kind, context, **fields)
        except Exception:
            log.exception("node %s: %s not recorded", self.node_id, kind)

    def _verify(
        self,
        entry: StateEntry,
        *,
        live: bool,
        stored_ns: int | None = None,
        kept: frozenset[str] | None = frozenset(),
    ) -> Checked | None:
        """The verified signer(s) of `entry`, or None after recording why it was refused.
        `stored_ns`: when the store wrote it (a stored resume is judged then). A live
        resume that does not name what this node holds is refused as stale (`_stale`)
        unless it is a halt among `kept` (the store had it before the resume); None: not
        judged here (the caller reads the store first, `_on_state`).

        A stop command's check does not depend on the clock (only a resume must be
        fresh), so its result is kept per roster version and an identical one heard again
        is not verified twice; a new roster version (a revocation) starts afresh."""
        command = entry.command()
        cache_key = None
        if entry.state is not TradingState.ACTIVE and entry.proof is not None:
            cache_key = (self.trust.version, live, command, entry.proof)
            cached = self._verified.get(cache_key)
            if cached is not None:
                return cached
        try:
            checked = check_state(
                command,
                entry.proof,
                self.trust.roster,
                now_ns=self.clock.time_ns(),
                live=live,
                stored_ns=stored_ns,
            )
            if cache_key is not None:
                self._verified[cache_key] = checked
                if len(self._verified) > _VERIFIED_CACHE:
                    del self._verified[next(iter(self._verified))]
            if live and kept is not None:
                stale = self._stale(entry, kept)
                if stale is not None:
                    raise stale
            return checked
        except Refused as exc:
            self._refuse(entry, exc, "live" if live else "stored")
            return None

    def _stale(self, entry: StateEntry, kept: frozenset[str]) -> Refused | None:
        """Why the live resume `entry` must not change what this node holds for its slot,
        or None: it names it (`supersedes`), or that is a halt the store had before the
        resume (`kept`, `_kept_before`), as a resync judges it. Else (a resume this node
        holds, or a halt heard on the fast path alone) it is stale."""
        held = self._applied.get(entry.slot)
        if (
            entry.state is not TradingState.ACTIVE
            or held is None
            or held.command_id in (entry.supersedes, entry.command_id)
            or (held.state is not TradingState.ACTIVE and held.command_id in kept)
        ):
            return None
        return Refused(
            TrustReason.STALE,
            f"resumes {entry.supersedes[:12]}, but this node holds "
            f"{held.command_id[:24]} for {entry.slot}",
        )

    async def _kept_live(self, entry: StateEntry) -> frozenset[str]:
        """For a verified live resume that does not name the halt this node holds: what
        the store kept of the slot before it (`_kept_before`), if the store holds this very
        resume over the halt it names (`unproven_resume`); else, or with no answer, nothing
        (it stays stale). Before, such a resume was refused though the node's next resync
        adopted it: a running node that held an undecodable halt of the slot when a drain
        was stored over it refused the two-person resume of that drain and stayed halted,
        with the store reading ACTIVE, until it reconnected."""
        try:
            stored, revision = await self.plane.get_state(entry.scope, entry.key)
            if stored != entry or await unproven_resume(self.plane, entry, revision) is not None:
                return frozenset()
            return await self._kept_before(entry, revision)
        except ControlPlaneUnavailable:
            return frozenset()

    def _adopts(self, entry: StateEntry) -> bool:
        """Whether `entry` is a resume this node has not applied yet (so must check)."""
        if entry.state is not TradingState.ACTIVE:
            return False
        held = self._applied.get(entry.slot)
        return held is None or held.command_id != entry.command_id

    def _refuse(self, entry: StateEntry, exc: Refused, path: str) -> None:
        if entry.command_id in self._refused_ids:
            return  # a re-announcement of one refused command counts once
        self._refused_ids[entry.command_id] = None
        while len(self._refused_ids) > _SEEN_COMMANDS:
            del self._refused_ids[next(iter(self._refused_ids))]
        self.refused[exc.reason] += 1
        self.last_refusal = f"{exc.reason.value}: {exc.detail}"
        log.error(
            "COMMAND_REFUSED node=%s path=%s command=%s scope=%s key=%s state=%s actor=%s "
            "reason=%s detail=%r",
            self.node_id,
            path,
            entry.command_id,
            entry.scope.value,
            entry.key[:MAX_STATE_KEY],
            TradingState(entry.state).name,
            entry.actor[:64],
            exc.reason.value,
            exc.detail,
        )
        self._record(
            "command_refused",
            command_id=entry.command_id[:64],
            scope=entry.scope.value,
            key=entry.key[:MAX_STATE_KEY],
            state=TradingState(entry.state).name,
            actor=entry.actor[:64],
            reason=exc.reason.value,
            detail=exc.detail,
            path=path,
        )

    # --- kill state ----------------------------------------------------------
    def _concerns_me(self, entry: StateEntry) -> bool:
        return entry.scope is not Scope.NODE or entry.key == self.node_id

    def _apply(
        self, entry: StateEntry, checked: Checked | None = None, *, live: bool = True
    ) -> Callable[[], None] | None:
        """Apply to the Guard if newer than what this node holds; None if nothing changed.

        Returns what is left to do once the change is confirmed: the flight
        record and the log line of a halt (a kill is confirmed before either).

        A halt this node has never seen is applied even when it orders older than
        the entry held (fail closed): its issuer's clock may lag, and on the fast
        path, with the store unreachable, nobody could bump it past the stored entry.
        The kill a resume applied here lifts counts as seen. A resume naming the
        halt held (`supersedes`) lifts it whatever the two issue times say, and that
        halt heard again afterwards changes nothing: a clock ahead cannot keep a slot
        halted past its resume, and a resume naming another halt is ordered as before.

        A resume clears only the Guard latch of the entry it supersedes: the
        automatic halt's own source when that entry was one (actor "guard:<code>"),
        else the operator latch `halted`. So resuming an operator kill never lifts
        a loss stop, and an automatic halt is lifted only by resuming that halt.
        Its signed ramp is in force before the latch lifts (`_hold_plan`); a halt
        of the slot ends it.
        """
        if not self._concerns_me(entry):
            return None
        if entry.state is TradingState.ACTIVE:
            # a resume is recorded as it applies: what came before is recorded first. A
            # halt's own record waits behind theirs (`_report_later`), so a kill in a burst
            # is confirmed before the earlier kills' records and lines are written
            self._report_now()
        held = self._applied.get(entry.slot)
        if entry.state is not TradingState.ACTIVE and entry.slot in self._restored:
            held = None  # a halt restored from this node's record orders before any kill
        seen = entry.command_id in self._seen
        self._seen[entry.command_id] = None
        while len(self._seen) > _SEEN_COMMANDS:
            del self._seen[next(iter(self._seen))]
        if (
            held is not None
            and held.state is TradingState.ACTIVE
            and entry.state is not TradingState.ACTIVE
            and held.supersedes == entry.command_id
        ):
            # the very kill the resume held here lifted, heard again (re-announced, the
            # store's re-dated copy): it may be dated after the resume (its issuer's clock
            # ran ahead), yet it is over
            return None
        if held is not None and entry.state is not TradingState.ACTIVE and held.state > entry.state:
            # a milder kill (a drain) over a halt held here, however new: the halt stays.
            # Applied, it loosened the halt to REDUCING on one signature; loosening is a
            # resume's, which takes two people. It is confirmed (the Guard blocks more).
            return None
        if entry.newer_than(held) or (
            held is not None
            and entry.state is TradingState.ACTIVE
            and held.state is not TradingState.ACTIVE
            and entry.supersedes == held.command_id
        ):
            # a resume lifts the halt it names even when that halt is dated after it (an
            # issuer's clock ahead): ordering it by issue time would keep the slot halted
            # until the clocks got there; it was judged fresh on its own times
            if entry.state is TradingState.ACTIVE:  # kept, should the resume not be recorded
                before = (held, self._applied_by.get(entry.slot), entry.slot in self._restored)
            self._applied[entry.slot] = entry
            self._applied_by[entry.slot] = checked
            self._restored.discard(entry.slot)
            if (
                seen
                and entry.state is not TradingState.ACTIVE
                and self.guard.trading_state(entry.scope, entry.key) >= entry.state
            ):
                # a kill already in force here, heard again re-dated (the kill switch stores
                # it past a slot written later by a clock ahead): held, not latched twice
                return None
        elif (
            seen
            or entry.state is TradingState.ACTIVE
            or self.guard.trading_state(entry.scope, entry.key) >= entry.state
        ):
            return None  # older, and seen before or it could only loosen what the Guard holds
        elif held is not None and entry.state > held.state:
            # an older kill never seen, stricter than the one held (a halt issued with a
            # drain, dated before it and heard after it): latched, and held as the slot's,
            # since the store keeps the stricter of the two whatever their dates (the kill
            # switch never loosens a stored halt), so that is the one a resume names.
            # Before, the node latched it but held the drain, and refused the resume of
            # the halt as stale: halted until it reconnected
            self._applied[entry.slot] = entry
            self._applied_by[entry.slot] = checked
            self._restored.discard(entry.slot)
        actor = checked.describe() if checked is not None else entry.actor
        if entry.state is TradingState.ACTIVE:
            if entry.supersedes:
                # the kill it lifts counts as seen: its late arrival (the kill switch
                # re-announcing it to a node that resynced past it) does not halt again
                self._seen[entry.supersedes] = None
            if held is not None and held.actor != UNVERIFIED_ACTOR:
                self._thaw(entry, held)  # `held` was verified when it was applied
            source = held.source if held is not None else RejectReason.HALTED
            self._hold_plan(entry, live=live)  # scaled limits first, then the latch lifts
            # a resume is recorded before the latch lifts (if it cannot be, nothing lifts)
            try:
                self.guard.resume(entry.scope, entry.key, entry.reason, actor, code=source)
            except RecorderUnavailable as exc:
                # nothing lifted: the node holds what it held, so it does not confirm the
                # resume, and the resume heard again (the other path, a resync, an
                # announcement) lifts the halt once it can be recorded. Before, the node
                # held the resume as applied: it confirmed it at its second arrival while
                # halted, and never lifted the halt
                self._unapply(entry.slot, *before)
                log.error(
                    "RESUME_NOT_APPLIED node=%s command=%s: %s", self.node_id, entry.command_id, exc
                )
                return None
            self._on_resumed(entry.scope, entry.key, source)
            self._retake(entry)  # its ramp's record passed over before: loosens, after the lift
            return _nothing
        report = self.guard.latch(
            entry.scope,
            entry.key,
            _carrying(entry.reason, entry.command_id),
            actor,
            state=TradingState(entry.state),
            code=entry.source,
        )
        if self._plans.pop(entry.slot, None) is None:
            return report

        def then() -> None:  # the halted slot's ramp is over: after the confirmation
            report()
            self._apply_ramps()

        return then

    def _unapply(
        self, slot: str, held: StateEntry | None, by: Checked | None, restored: bool
    ) -> None:
        """Hold again what `slot` held before a resume that could not be applied."""
        if held is None:
            self._applied.pop(slot, None)
            self._applied_by.pop(slot, None)
        else:
            self._applied[slot] = held
            self._applied_by[slot] = by
        if restored:
            self._restored.add(slot)

    def _thaw(self, resume: StateEntry, kill: StateEntry, in_force_ns: int | None = None) -> None:
        """Remember the kill `resume` lifts, if it froze flag changes (`thawed`).

        The kill was in force from the earlier of its own issue time and `in_force_ns`
        (when this node latched it, or when the store wrote it; None: the latch of the
        slot this node's Guard holds now): a kill signed by a clock ahead, even dated
        after its resume, still covers the changes made while it held. A kill with a
        sane date keeps its issue time, the earlier of the two."""
        if (
            resume.scope in (Scope.FLEET, Scope.STRATEGY)
            and kill.state is not TradingState.ACTIVE
            and kill.issued_ns > 0
        ):
            if in_force_ns is None:
                latch = self.guard.halts().get((resume.scope, resume.key))
                in_force_ns = latch.ts_ns if latch is not None else None
                stored = self._in_force.get(resume.slot)
                if stored is not None and stored[0] == kill.command_id:
                    # read from the store at a start: in force since the store wrote it
                    in_force_ns = stored[1] if in_force_ns is None else min(stored[1], in_force_ns)
            since = kill.issued_ns if in_force_ns is None else min(kill.issued_ns, in_force_ns)
            lifted = self.thawed.setdefault((resume.scope, resume.key), [])
            interval = (since, resume.issued_ns, kill.actor)
            if interval not in lifted:
                lifted.append(interval)
                del lifted[:-THAWED_KEPT]

    async def _thaw_stored(self, resume: StateEntry, revision: int) -> None:
        """The kills the slot's kept history shows lifted, up to the stored resume this node
        never held (`unproven_resume` showed it lifts the write right before it): each kill
        and each earlier resume is remembered only if it verifies, and a resume lifts only
        the kill it names, as a node that ran through them would have applied them."""
        if resume.scope not in (Scope.FLEET, Scope.STRATEGY):
            return
        kept = await self.plane.state_history(resume.scope, resume.key, revision)
        writes = [(e, rev) for e, rev in kept if e is not None and not _undecodable(e)]
        kill: StateEntry | None = None  # the verified kill in force at this point of history
        kill_revision = 0
        for entry, at in [*writes, (resume, revision)]:
            try:
                check_state(entry.command(), entry.proof, self.trust.roster, now_ns=0, live=False)
            except Refused:
                continue  # a node would have refused it: it changed nothing there
            if entry.state is not TradingState.ACTIVE:
                kill, kill_revision = entry, at
            elif kill is not None and entry.supersedes == kill.command_id:
                # in force from when the store wrote it, if its signer's clock ran ahead
                stored = await self.plane.stored_ns(kill.scope, kill.key, kill_revision)
                self._thaw(entry, kill, kill.issued_ns if stored is None else stored)
                kill = None

    def _hold_plan(self, entry: StateEntry, *, live: bool) -> None:
        """Hold the ramp a resume was signed with, from now (`live`) or, for one read from
        the store at a start, from the latest it can have been applied: its expiry, or now
        if sooner (the node may hold a stage longer than the fleet, never shorter).

        This node's wall clock alone never runs a stored resume's ramp forward: where the
        store keeps write times, the ramp is held from now until the server's own times
        show how far it has run (`_bound_plan`), and then from the later of the two starts.
        Before, a node starting with its clock an hour (even 20 minutes) ahead read the
        resume's expiry as long past and traded at full limits at once."""
        dropped = self._plans.pop(entry.slot, None)
        if entry.ramp:
            now = self.clock.monotonic_ns()
            if not live:
                wall = self.clock.time_ns()
                by_wall = max(0, wall - min(wall, entry.expires_ns))
                if by_wall and self.plane.keeps_write_times:
                    self._bound_later(entry, now, by_wall)
                else:
                    # no write times (the replay's one clock for every writer), or none run
                    now -= by_wall
            self._plans[entry.slot] = (entry, now)
        if entry.ramp or dropped is not None:
            self._apply_ramps()

    def _bound_later(self, entry: StateEntry, held_from: int, by_wall: int) -> None:
        """Ask the store how far `entry`'s ramp has run (`_bound_plan`), in the background;
        with no loop to ask on, it stays held from `held_from` (fail closed)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self.track(loop.create_task(self._bound_plan(entry, held_from, by_wall)))

    async def _bound_plan(self, entry: StateEntry, held_from: int, by_wall: int) -> None:
        """Run a stored resume's ramp, held from `held_from` (monotonic), forward to the
        lesser of two lower bounds on how long ago it was applied: `by_wall` (this node's
        wall clock against the resume's expiry, at `held_from`) and the server's own times
        (the resume's write against the latest write time known: the slot's ramp record,
        this start's record). Unread or unknown, it stays held from `held_from`."""
        slot = entry.slot
        try:
            stored, revision = await self.plane.get_state(entry.scope, entry.key)
            resumed = None
            if stored is not None and stored.command_id == entry.command_id:
                resumed = await self.plane.stored_ns(entry.scope, entry.key, revision)
            server = 0 if resumed is None else await self._server_ns(slot)
        except (ControlPlaneUnavailable, *UNDECODABLE) as exc:
            log.warning("node %s: ramp %s held from now (%s)", self.node_id, slot, exc)
            return
        now = self.clock.monotonic_ns()
        by_store = max(0, server - resumed) if resumed is not None else 0
        start = max(held_from - by_wall, now - by_store)
        plan = self._plans.get(slot)
        if plan is None or plan != (entry, held_from):
            return  # halted again, or another resume's ramp: that one holds now
        log.warning(
            "RAMP_PLAN_BOUND node=%s ramp=%s slot=%s: %.1f s in by the store's times, "
            "%.1f s by this node's clock; held as %.1f s in",
            self.node_id,
            entry.command_id[:12],
            slot,
            by_store / NS_PER_S,
            by_wall / NS_PER_S,
            (now - start) / NS_PER_S,
        )
        if start < held_from:
            self._plans[slot] = (entry, start)
            self._apply_ramps()

    async def _server_ns(self, slot: str) -> int:
        """The latest server time this node can read: when the store wrote `slot`'s ramp
        record, or this start's record (`_record_start`, waited for up to 3 s)."""
        latest = 0
        _, revision = await self.plane.get_record(Bucket.RAMP, slot)
        if revision > 0:
            latest = await self.plane.record_stored_ns(Bucket.RAMP, slot, revision) or 0
        key = starts_key(self.node_id)
        for _ in range(30):
            value, revision = await self.plane.get_record(Bucket.INCIDENT, key)
            if value is not None and self._started_ns in STARTS_DECODER.decode(value).started_ns:
                at = await self.plane.record_stored_ns(Bucket.INCIDENT, key, revision)
                return max(latest, at or 0)
            await asyncio.sleep(0.1)
        return latest

    # --- automatic halts made durable ---------------------------------------------
    def _on_guard_halt(self, scope: Scope, key: str, halt: Halt) -> None:
        """The Guard halted itself: store it, so status shows it, a restart keeps it
        and `knightwatch resume` can lift it."""
        self._auto.setdefault((scope, key), {})[halt.code] = halt
        self._publish_auto(scope, key)

    def _on_resumed(self, scope: Scope, key: str, source: RejectReason) -> None:
        """A resume lifted the Guard's latch of `source`: that halt is over. One of another
        source still held is stored again (the slot now says ACTIVE). Before, a slot kept
        one automatic halt (the latest): a loss stop replaced by a fill mismatch was never
        stored again once the mismatch was resumed, and the node stayed halted for good
        while the store read ACTIVE (nothing to resume)."""
        autos = self._auto.get((scope, key))
        if autos is None:
            return
        autos.pop(source, None)
        if not autos:
            del self._auto[(scope, key)]
        else:
            self._publish_auto(scope, key)

    def _publish_auto(self, scope: Scope, key: str) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        own = self._loop
        if own is not None and loop is not own and not own.is_closed():
            # decided on another thread (a FIX engine's, a sync program's, even one that
            # runs a loop of its own): store it from the runtime's loop
            own.call_soon_threadsafe(self._publish_auto, scope, key)
            return
        if loop is None:
            log.error(
                "node %s: automatic halt %s/%s not stored (no event loop)", self.node_id, scope, key
            )
            return
        self.track(loop.create_task(self._store_auto(scope, key), name=f"{self.node_id}-auto-halt"))

    async def _store_auto(self, scope: Scope, key: str) -> None:
        """Have the automatic halt stored unless the slot already holds a halt.

        A node may not write the kill state: it signs the halt (decided on the
        slot's revision it read) and hands it to the fleet's relay, which
        verifies and stores it with compare-and-swap; this loop re-reads until
        the slot holds a halt, re-signing against the latest revision, for as
        long as the halt is in force. A slot already halted (an operator kill)
        is left as it is: overwriting it would make the operator's resume clear
        the wrong latch. When that kill is resumed, `_on_resumed` stores this
        halt again.
        """
        sent = False
        while autos := self._auto.get((scope, key)):
            halt, *_ = autos.values()  # the oldest still held (copied at once: a FIX thread adds)
            try:
                current, revision = await self.plane.get_state(scope, key)
                if current is not None and current.state is not TradingState.ACTIVE:
                    if sent:
                        log.warning(
                            "AUTO_HALT_STORED node=%s scope=%s key=%s code=%s",
                            self.node_id,
                            scope.value,
                            key,
                            halt.code.value,
                        )
                    return
                issued = self.clock.time_ns()
                if current is not None:
                    issued = max(issued, current.issued_ns + 1)
                held = self._applied.get(slot_of(scope, key))
                if held is not None:
                    # after a store loss nothing stored dates it: dated before the entry this
                    # node still holds (its clock stepped back), it was ignored as older and
                    # its resume refused as stale; the node stayed blocked for good
                    issued = max(issued, held.issued_ns + 1)
                entry = StateEntry(
                    scope=scope,
                    key=key,
                    state=halt.state,
                    reason=f"node {self.node_id}: {halt.reason}",
                    actor=f"{GUARD_ACTOR}{halt.code.value}",
                    command_id=uuid.uuid4().hex,
                    issued_ns=issued,
                    expires_ns=issued + _AUTO_TTL_NS,
                    decided_on=revision,
                ).signed(self.signer.key)
                await self.plane.publish(SUBJECT_AUTO_HALT, ENCODER.encode(entry))
                sent = True
            except ControlPlaneUnavailable as exc:
                log.warning("node %s: automatic halt not stored yet (%s)", self.node_id, exc)
            await asyncio.sleep(_AUTO_RETRY_S)

    def _holds_effect(self, entry: StateEntry) -> bool:
        """Whether the Guard already blocks at least what `entry` asks: the command itself,
        or a kill of this scope superseded by a stricter or newer one. Such a node is in fact
        stopped, so it confirms; a kill superseded by a resume is not in effect and is not."""
        held = self._applied.get(entry.slot)
        if held is not None and held.command_id == entry.command_id:
            return True
        if entry.state is TradingState.ACTIVE:
            return False
        return self.guard.trading_state(entry.scope, entry.key) >= entry.state

    async def _on_state(self, entry: StateEntry) -> None:
        """A kill, halt or resume from either path: verified, applied, confirmed, then
        recorded.

        Every command arrives twice (the fast announcement and the store's
        watch); the second arrival of the very entry just confirmed is dropped
        here, first. Anything else is verified against the roster before it can
        change the Guard (a stored value that is no entry halts its slot).
        """
        if not self._concerns_me(entry):
            return
        problem = _slot_problem(entry.scope, entry.key)  # a key no latch can hold: refused
        if problem is not None:
            self._refuse(entry, Refused(TrustReason.MALFORMED, problem), "live")
            return
        last = self._confirmed_at.get(entry.command_id)
        now = self.clock.monotonic_ns()
        held = self._applied.get(entry.slot)
        report: Callable[[], None] | None = None
        if held is not None and held.command_id == entry.command_id and held == entry:
            if last is not None and now - last < _RECONFIRM_NS:
                return  # the echo of what this node has just applied and confirmed
        elif _undecodable(entry):
            report = self._apply(entry)  # the store holds something that is no entry
        else:
            other = (  # a resume that does not name the halt held here
                entry.state is TradingState.ACTIVE
                and self._unnamed_halt(entry, frozenset()) is not None
            )
            checked = self._verify(entry, live=True, kept=None if other else frozenset())
            if checked is None:
                return
            if other:
                # signed and fresh, but it names another halt: the store may show it had
                # the one held before the resume, as the node's resync would read it
                stale = self._stale(entry, await self._kept_live(entry))  # after the await
                if stale is not None:
                    self._refuse(entry, stale, "live")
                    return
            elif entry.state is TradingState.ACTIVE and entry.slot not in self._applied:
                # a resume of a halt this node never held: the store must show it lifts one
                try:
                    stored, revision = await self.plane.get_state(entry.scope, entry.key)
                    if stored is None or stored.command_id != entry.command_id:
                        return  # not (or no longer) what the store holds: nothing to adopt
                    replay = await unproven_resume(self.plane, entry, revision)
                    if replay is None:
                        await self._thaw_stored(entry, revision)
                except ControlPlaneUnavailable as exc:
                    log.warning("node %s: resume %s not adopted: %s", self.node_id, entry.slot, exc)
                    return  # the resync after reconnecting judges the store
                if replay is not None:
                    self._refuse(entry, replay, "live")
                    halt = self._unverified(entry.slot, revision)
                    if halt is None:
                        return
                    entry, checked = halt, None
                else:
                    # a kill latched while the store was read (it had none for this slot
                    # before): the resume never named it, so it lifts nothing, as it is
                    # refused when the kill is held before it arrives (`_verify`)
                    unnamed = self._unnamed_halt(entry, frozenset())
                    if unnamed is not None:
                        self._refuse(entry, unnamed, "live")
                        return
            report = self._apply(entry, checked)
        if report is not None:
            if self._drains(entry):
                self._report_in_order(report)  # the Guard blocks; the venue's drain is next
                self._start_drain(entry)
            else:
                await self._confirm(entry)
                self._report_later(report)
            return
        if not self._holds_effect(entry):
            return
        if entry.command_id in self._draining:
            return  # confirmed when the drain ends
        # Already in effect: its issuer may be waiting (a first sight of an "older" command,
        # or our confirmation lost in a reconnect). Answer, but not to every echo of it.
        if last is None or now - last >= _RECONFIRM_NS:
            await self._confirm(entry)

    def _report_later(self, report: Callable[[], None]) -> None:
        """Record and log a confirmed command `REPORT_DELAY_S` after its confirmation.

        The kill's latency is the slowest node's, so this node's bookkeeping waits
        until the others have confirmed too. Reports run in the order their commands
        were applied (`_apply` writes any still waiting before a resume changes anything,
        `_report_in_order` before a report written at once)."""
        self._reports.append(report)
        if len(self._reports) == 1:
            asyncio.get_running_loop().call_later(REPORT_DELAY_S, self._report_now)

    def _report_in_order(self, report: Callable[[], None]) -> None:
        """Record and log a confirmed command now, after those still waiting."""
        self._reports.append(report)
        self._report_now()

    def _report_now(self) -> None:
        while self._reports:
            report = self._reports.pop(0)
            try:
                report()
            except Exception:
                log.exception("node %s: a confirmed command was not recorded", self.node_id)

    def _drains(self, entry: StateEntry) -> bool:
        """Whether this command's confirmation waits for a drain (a kill on a gateway)."""
        return self.drain is not None and entry.state is not TradingState.ACTIVE

    def _start_drain(self, entry: StateEntry) -> None:
        self._draining.add(entry.command_id)
        self.track(
            asyncio.create_task(self._drain_then_confirm(entry), name=f"{self.node_id}-drain")
        )

    async def _drain_then_confirm(self, entry: StateEntry) -> None:
        assert self.drain is not None
        working: list[str] = []
        try:
            working = await self.drain(entry)
        except Exception as exc:  # the drain failed: confirm the block, say nothing is known
            log.error("node %s: drain of %s failed: %r", self.node_id, entry.command_id, exc)
            working = [f"unknown: drain failed ({exc!r})"[:200]]
        finally:
            self._draining.discard(entry.command_id)
        await self._confirm(entry, working)

    async def _confirm(self, entry: StateEntry, working: list[str] | None = None) -> None:
        """Publish the confirmation first; the bookkeeping waits until it is on its way.

        `working` names what a drain left working at the venue when it gave up."""
        confirmation = Confirmation(
            command_id=entry.command_id,
            node_id=self.node_id,
            scope=entry.scope,
            key=entry.key,
            state=self.guard.trading_state(entry.scope, entry.key),
            applied_ns=self.clock.time_ns(),
            still_working=working or [],
        )
        self._confirmed_at[entry.command_id] = self.clock.monotonic_ns()  # before any await
        try:
            await self.plane.confirm(confirmation)
        except ControlPlaneUnavailable:
            log.warning("node %s: confirmation of %s not sent", self.node_id, entry.command_id)
        self.confirmed.append(confirmation)
        if len(self.confirmed) > 128:
            del self.confirmed[:-64]
            self._confirmed_at = {
                c.command_id: self._confirmed_at.get(c.command_id, 0) for c in self.confirmed
            }

    async def _resync(self) -> dict[str, StateEntry]:
        """Read every entry from the store of record and apply what is newer than ours;
        returns what each slot holds as this node judged it.

        Ramp stages first: a resume that is ramping must find the scaled limits in place.
        A slot whose stored entry does not verify (or cannot be decoded, or was
        deleted) is held HALTED by this node until a verified entry supersedes
        it: the store is where a restarted node learns of kills, so an entry
        that may have overwritten one must never read as "not halted".
        """
        self._ramps_heard = {}
        ramps = await self.plane.records(Bucket.RAMP)
        # a record heard live while the store was read, newer than what the read returned
        # for its slot, stands as taken (before, the read's older record replaced it: a
        # ramp's "done" heard meanwhile was undone by its stage 50% until the next write)
        heard = {
            key: (self._ramps.get(key), self._passed.get(key))
            for key, revision in self._ramps_heard.items()
            if revision > ramps.get(key, (b"", 0))[1]
        }
        self._ramps = {}
        self._passed = {}
        for key, (value, _) in ramps.items():
            if key not in heard:
                self._take_ramp(key, value, live=False)
        for key, (ramp, passed) in heard.items():
            if ramp is not None:
                self._ramps[key] = ramp
            if passed is not None:
                self._passed[key] = passed
        self._apply_ramps()
        changed: list[tuple[StateEntry, Callable[[], None], int]] = []
        judged: dict[str, StateEntry] = {}
        for slot, (stored, revision) in (await self.plane.states()).items():
            entry = stored
            checked: Checked | None = None
            if entry is not None and _undecodable(entry):
                pass  # the store's own fail-closed halt of its slot: it can only stop
            elif entry is not None and entry.slot != slot:
                self._refuse(
                    entry,
                    Refused(TrustReason.PAYLOAD_MISMATCH, f"stored under {slot}"),
                    "stored",
                )
                entry = None
            elif entry is not None:
                adopts = self._adopts(entry)  # a resume never applied: judged when stored
                stored_ns = (
                    await self.plane.stored_ns(entry.scope, entry.key, revision) if adopts else None
                )
                checked = None
                if adopts and stored_ns is None:
                    why = (
                        f"the store no longer holds revision {revision} of {slot}: "
                        "when it was stored is unknown"
                    )
                    self._refuse(entry, Refused(TrustReason.STALE, why), "stored")
                else:
                    checked = self._verify(entry, live=False, stored_ns=stored_ns)
                if checked is None:
                    entry = None
                elif adopts:
                    replay = await unproven_resume(self.plane, entry, revision)
                    if replay is not None:
                        self._refuse(entry, replay, "stored")
                        entry, checked = None, None
                    else:
                        kept = await self._kept_before(entry, revision)
                        if entry.slot not in self._applied:
                            await self._thaw_stored(entry, revision)
                        unnamed = self._unnamed_halt(entry, kept)  # after the last await
                        if unnamed is not None:
                            # the store's resume never lifted the halt held here: it stays,
                            # and the store's word is a resume over it (`_store_lost`)
                            self._refuse(entry, unnamed, "stored")
                            judged[entry.slot] = entry
                            continue
            if entry is None:
                entry = self._unverified(slot, revision)
                if entry is None:
                    continue
            problem = _slot_problem(entry.scope, entry.key)
            if problem is not None:
                self._refuse(entry, Refused(TrustReason.MALFORMED, problem), "stored")
                continue
            judged[entry.slot] = entry
            report = self._apply(entry, checked, live=False)
            if report is not None:
                changed.append((entry, report, revision))
        later: list[Callable[[], None]] = []
        for entry, report, _ in changed:
            if self._drains(entry):
                self._report_in_order(report)
                self._start_drain(entry)
            else:
                await self._confirm(entry)  # every change confirmed first, then recorded
                later.append(report)
        for report in later:
            self._report_in_order(report)
        for entry, _, revision in changed:
            await self._stored_since(entry, revision)
        return judged

    async def _kept_before(self, resume: StateEntry, revision: int) -> frozenset[str]:
        """The commands the store kept of `resume`'s slot before its write at `revision`,
        read only when this node holds a halt of that slot the resume does not name (else
        empty): each write's command id, and the fail-closed halt a reader holds for a
        write it could not trust (`unverified_id`). A halt among them the store had before
        the resume, so it is over whatever the resume names. So is the halt held when the
        history is full and its oldest write was stored after this node latched it
        (`_outran`): before, a node away through eight kills and resumes of the slot stayed
        halted by its first kill until it restarted (which judged it over), while the store
        read ACTIVE and `knightwatch resume` had nothing to resume."""
        held = self._applied.get(resume.slot)
        if (
            held is None
            or held.state is TradingState.ACTIVE
            or held.command_id in (resume.supersedes, resume.command_id)
        ):
            return frozenset()
        latch = self.guard.halts().get((resume.scope, resume.key))
        kept = await self.plane.state_history(resume.scope, resume.key, revision)
        ids = _kept_ids(resume.slot, kept)
        if held.command_id not in ids and await self._outran(
            resume, kept, latch.ts_ns if latch is not None else None
        ):
            # the store went on through a full history of writes after this node latched
            # the halt (away through kill after kill): over, as at a restart (`_store_held`)
            ids |= {held.command_id}
        return ids

    async def _outran(
        self, resume: StateEntry, kept: list[tuple[StateEntry | None, int]], since_ns: int | None
    ) -> bool:
        """Whether the store's kept history of `resume`'s slot before it (`kept`) is full
        and its oldest write was stored after `since_ns` (when a halt not among them was
        latched or recorded here): the store dropped older writes and went on through all
        of these after that halt, so a resume over them is over it too. A history not full
        is all the store wrote of the slot; an unknown time proves nothing (fail closed)."""
        if since_ns is None or len(kept) < STATE_HISTORY - 1:
            return False
        oldest = await self.plane.stored_ns(resume.scope, resume.key, kept[0][1])
        return oldest is not None and since_ns < oldest

    def _unnamed_halt(self, resume: StateEntry, kept: frozenset[str]) -> Refused | None:
        """Why the stored `resume` must not lift the halt this node holds for its slot, or
        None: it lifts it if it names it (`supersedes`), or if the store had that halt
        before it (`kept`, `_kept_before`). Else the halt reached this node alone (the fast
        path; its store write failed or is still on its way, re-dated), and a resume that
        ordered after it only by its signers' clocks lifted it at the next resync, though
        the same resume heard live is refused as stale (`_verify`)."""
        held = self._applied.get(resume.slot)
        if (
            held is None
            or held.state is TradingState.ACTIVE
            or held.command_id in (resume.supersedes, resume.command_id)
            or held.command_id in kept
        ):
            return None
        return Refused(
            TrustReason.STALE,
            f"resumes {resume.supersedes[:12]}, but this node holds {held.command_id[:24]} "
            f"for {resume.slot}, which the store never held before it",
        )

    async def _stored_since(self, entry: StateEntry, revision: int) -> None:
        """Remember when the store wrote a fleet or strategy kill this node latched from it,
        if before the kill's issue time (`held`, `_thaw`): after the kill is applied and
        confirmed, never in its way; unknown (the store no longer says) changes nothing."""
        if (
            entry.scope not in (Scope.FLEET, Scope.STRATEGY)
            or entry.state is TradingState.ACTIVE
            or entry.issued_ns <= 0
        ):
            return
        try:
            stored = await self.plane.stored_ns(entry.scope, entry.key, revision)
        except ControlPlaneUnavailable:
            return
        if (
            stored is not None
            and stored < entry.issued_ns
            and self._applied.get(entry.slot) == entry
        ):
            self._in_force[entry.slot] = (entry.command_id, stored)

    async def _lifted_in_store(self, stored: dict[str, StateEntry]) -> frozenset[tuple[str, str]]:
        """The (slot, command id) of each kill this node's record holds that the store's
        resume in force for its slot (in `stored`, as the resync judged it) lifted without
        naming it (`_store_held`); read before `_restore`, which runs without a wait."""
        lifted: set[tuple[str, str]] = set()
        for h in self.recovered:
            _, command_id = _carried(h.reason)
            if not command_id:
                continue
            try:
                slot = slot_of(Scope(h.scope), h.key)
            except (ValueError, StateKeyError):
                continue  # `_restore` halts this node for it
            held = stored.get(slot)
            if (
                held is not None
                and held.state is TradingState.ACTIVE
                and held.supersedes != command_id
                and await self._store_held(held, command_id, h.ts)
            ):
                lifted.add((slot, command_id))
        return frozenset(lifted)

    async def _store_held(self, resume: StateEntry, command_id: str, recorded_ns: int) -> bool:
        """Whether the store held the halt `command_id` (recorded here at `recorded_ns`)
        before the stored `resume` that does not name it: its kept history of the slot
        before the resume's write holds it (a write's id, or the fail-closed halt a reader
        holds for a write it could not trust), so the resume is over it. If the history is
        full (the store may have dropped older writes), a halt recorded before the oldest
        write it keeps was stored is over too: the store went on through all of them.

        Else (the history would show it) the halt reached this node alone, on the fast
        path (its store write failed), and the resume's date after it proves nothing: its
        signers decided it without seeing that halt, or their clocks ran ahead. A store
        that cannot answer, or holds another entry now, proves nothing (fail closed)."""
        try:
            current, revision = await self.plane.get_state(resume.scope, resume.key)
            if current != resume:
                return False
            kept = await self.plane.state_history(resume.scope, resume.key, revision)
            if command_id in _kept_ids(resume.slot, kept):
                return True
            return await self._outran(resume, kept, recorded_ns)
        except ControlPlaneUnavailable:
            return False

    def _own_halt(self, h: StandingHalt) -> tuple[Scope, str, RejectReason] | None:
        """The slot and source of `h` if it is one of this node's Guard's own halts (a
        source other than an operator's kill: a loss stop, a fill mismatch), else None.
        One naming no command the Guard latched itself; one naming a command was latched
        from the store at an earlier start, and is this node's own only on its node slot
        (a strategy's may be another node's)."""
        _, command_id = _carried(h.reason)
        try:
            scope, key, code = Scope(h.scope), h.key, RejectReason(h.code)
            slot_of(scope, key)
        except (ValueError, StateKeyError):
            return None
        if code is RejectReason.HALTED or scope is Scope.FLEET:
            return None
        if command_id and not (scope is Scope.NODE and key == self.node_id):
            return None
        if scope is Scope.NODE and key != self.node_id:
            return None
        return scope, key, code

    async def _own_lifted(self, stored: dict[str, StateEntry]) -> frozenset[tuple[str, str]]:
        """The (slot, source) of each of this node's own Guard halts in its record
        (`_own_halt`) that the store shows resumed: a verified resume in the slot's kept
        history (or in force) names a halt of that very source this node stored after it
        latched it (or the one it records), or the store went on through a full history of
        writes after it (`_outran`). A resume of another halt stored over it (an operator's,
        a supervisor's) lifts only that one, as on a running node, where the Guard holds
        one latch per source; a store that cannot answer proves nothing (fail closed)."""
        lifted: set[tuple[str, str]] = set()
        for h in self.recovered:
            own = self._own_halt(h)
            if own is None:
                continue
            scope, key, code = own
            slot = slot_of(scope, key)
            held = stored.get(slot)
            if held is None or (held.state is not TradingState.ACTIVE and held.source is code):
                continue  # the store lost it (restored), or holds it (the resync latched it)
            _, command_id = _carried(h.reason)
            try:
                current, revision = await self.plane.get_state(scope, key)
                if current is None:
                    continue
                kept = await self.plane.state_history(scope, key, revision)
                if await self._outran(current, kept, h.ts):
                    lifted.add((slot, code.value))
                    continue
            except ControlPlaneUnavailable:
                continue
            writes = [e for e, _ in kept if e is not None] + [current]
            ours = {
                e.command_id
                for e in writes
                if e.state is not TradingState.ACTIVE
                and e.source is code
                and (e.command_id == command_id or e.issued_ns >= h.ts)
            }
            for e in writes:
                if e.state is not TradingState.ACTIVE or e.supersedes not in ours:
                    continue
                try:
                    check_state(e.command(), e.proof, self.trust.roster, now_ns=0, live=False)
                except Refused:
                    continue  # a node would have refused it: it lifted nothing
                lifted.add((slot, code.value))
                break
        return frozenset(lifted)

    def _restore(
        self,
        stored: dict[str, StateEntry],
        lifted: frozenset[tuple[str, str]] = frozenset(),
        own_lifted: frozenset[tuple[str, str]] = frozenset(),
    ) -> dict[tuple[Scope, str], dict[RejectReason, Halt]]:
        """Latch again every halt the node's own record holds and the store has lost.

        The store's word wins where it has one: a halt it holds is applied by the
        resync, and a resume lifts a recorded kill if it names it or the store held
        that kill before it (`lifted`, `_store_held`); a recorded halt that names no
        command (an older record) is lifted by a resume issued after it. Else (the
        store has nothing, or a resume that never lifted it: a kill heard on the fast
        path alone, dated before it) the halt is latched again, logged as
        RESTORED_HALT and stored (`_store_lost`). Runs once, at join; returns what it
        latched again per slot and source, for `_store_lost` to store each in turn.

        Each source is its own latch: a second source's halt of a slot is latched too, even
        when the Guard already holds the slot as strictly. Before, only the first was (the
        slot already read HALTED): a loss stop and a fill mismatch came back as one, an
        operator's kill under a loss stop not at all, and the one resume let the node trade.
        """
        recovered, self.recovered = self.recovered, ()
        before = self.guard.halts()  # latched before the restore (an embedding program's)
        relatched: dict[tuple[Scope, str], dict[RejectReason, Halt]] = {}
        for h in sorted(recovered, key=lambda h: h.seq):
            text, command_id = _carried(h.reason)
            try:
                scope, key = Scope(h.scope), h.key
                code, state = RejectReason(h.code), TradingState[h.state]
                slot = slot_of(scope, key)
                if state is TradingState.ACTIVE:
                    raise ValueError("a halt record cannot say ACTIVE")
                if _slot_problem(scope, key) is not None:
                    raise ValueError("no latch can hold its key")
            except (ValueError, KeyError, StateKeyError):  # unreadable: halt this node
                scope, key = Scope.NODE, self.node_id
                code, state = RejectReason.HALTED, TradingState.HALTED
                slot = slot_of(scope, key)
                command_id = ""
            held = stored.get(slot)
            if held is not None and code is not RejectReason.HALTED and self._own_halt(h):
                # the Guard's own halt: lifted only by a resume of that source, whatever the
                # store holds over it (before, an operator's kill stored on top of a loss
                # stop came back alone, and its resume let the node trade, the loss never
                # resumed)
                if (held.state is not TradingState.ACTIVE and held.source is code) or (
                    slot,
                    code.value,
                ) in own_lifted:
                    continue
                self._restore_own(h, scope, key, code, state, text)
                continue
            if held is not None and (
                held.state is not TradingState.ACTIVE
                or (command_id == "" and held.issued_ns >= h.ts)
                or (command_id != "" and held.supersedes == command_id)
                or (slot, command_id) in lifted
            ):
                # the store holds a halt (the resync applied it), or the resume of this
                # very kill, or one over it in the store's history, whatever the dates say
                # (a kill dated ahead, a node's clock ahead of its resume's signers'); a
                # record naming no command: a resume after it. A resume merely dated after
                # a kill it never named (heard here alone) lifted it at a restart, though
                # refused as stale when heard live or at a resync (`_unnamed_halt`)
                continue
            again = relatched.get((scope, key), {}).get(code)
            first = before.get((scope, key))
            if (again is not None and again.state >= state) or (
                first is not None and first.code is code and first.state >= state
            ):
                continue  # this source is latched as strictly already
            reason = (
                f"restored from this node's flight recorder (seq {h.seq}): {text}; "
                "the control plane store had lost it"
            )
            actor = h.actor or "recorder"
            if command_id:
                # held as that command, as before the restart: a resume naming it lifts it,
                # one naming another command is refused, and a restart keeps the id
                reason = _carrying(reason, command_id)
                self._applied[slot] = StateEntry(
                    scope=scope,
                    key=key,
                    state=state,
                    reason=reason,
                    actor=actor if code is RejectReason.HALTED else f"{GUARD_ACTOR}{code.value}",
                    command_id=command_id,
                    issued_ns=h.ts,
                )
                self._applied_by[slot] = None
                self._restored.add(slot)
                self._seen[command_id] = None
            self.guard.halt(scope, key, reason, actor, state=state, code=code)
            relatched.setdefault((scope, key), {})[code] = Halt(
                state, code, reason, actor, self.clock.time_ns()
            )
            log.error(
                "RESTORED_HALT node=%s scope=%s key=%s code=%s from seq %d",
                self.node_id,
                scope.value,
                key,
                code.value,
                h.seq,
            )
        return relatched

    def _restore_own(
        self,
        h: StandingHalt,
        scope: Scope,
        key: str,
        code: RejectReason,
        state: TradingState,
        text: str,
    ) -> None:
        """Latch again the Guard's own halt `h` (of `code`) that the store holds another
        entry over (an operator's kill, or a resume of that kill), and keep it among the
        automatic halts to store (`_on_guard_halt`): stored once the slot reads ACTIVE, so
        it is lifted only by a resume that names it, as on a node that never restarted."""
        reason = f"restored from this node's flight recorder (seq {h.seq}): {text}; never resumed"
        actor = h.actor or f"{GUARD_ACTOR}{code.value}"
        self.guard.halt(scope, key, reason, actor, state=state, code=code)
        log.error(
            "RESTORED_HALT node=%s scope=%s key=%s code=%s from seq %d: the store holds "
            "another entry over it",
            self.node_id,
            scope.value,
            key,
            code.value,
            h.seq,
        )
        self._on_guard_halt(scope, key, Halt(state, code, reason, actor, self.clock.time_ns()))

    def _store_lost(
        self,
        stored: dict[str, StateEntry],
        relatched: dict[tuple[Scope, str], dict[RejectReason, Halt]] | None = None,
    ) -> None:
        """Store again every halt the Guard holds that the store has no word on.

        After a store lost its entries (a single server's disk, a deleted bucket),
        the nodes still hold their latches; storing them again lets `status` show
        them and `knightwatch resume` lift them, and halts every other node too.
        Every source of a slot is kept among the halts to store (`_auto`), each
        stored in turn as the one before is resumed: the Guard's own ones, the kill
        held as the slot's entry, and what the restart latched again (`relatched`).
        Before, only the slot's worst latch was, and a slot whose own halt had been
        stored before the loss was skipped as "being stored" with no loop left to
        store it: the other latches were held by the Guard alone, and the node stayed
        blocked for good while the store read ACTIVE (nothing to resume).
        """
        for (scope, key), halt in self.guard.halts().items():
            held = stored.get(slot_of(scope, key))
            if held is not None and (
                held.state is not TradingState.ACTIVE or held.issued_ns >= halt.ts_ns
            ):
                continue
            if scope is Scope.FLEET or (scope is Scope.NODE and key != self.node_id):
                # a node signs halts of itself, a strategy or a symbol only (`check_state`):
                # the relay would refuse this one, and the loop would send it forever. The
                # Guard holds it; an operator's kill stores it again for everyone.
                if (scope, key) not in self._unstorable:
                    self._unstorable.add((scope, key))
                    log.error(
                        "LOST_HALT_UNSTORABLE node=%s scope=%s key=%s code=%s: the store has "
                        "no entry and a node cannot sign this scope's halt; held here, an "
                        "operator must kill it again for status and every other node",
                        self.node_id,
                        scope.value,
                        key,
                        halt.code.value,
                    )
                continue
            sources = dict((relatched or {}).get((scope, key), {}))
            sources.setdefault(halt.code, halt)
            applied = self._applied.get(slot_of(scope, key))
            if applied is not None and applied.state is not TradingState.ACTIVE:
                # the kill this node holds as the slot's entry: its latch is held until a
                # resume of it, which the store can no longer name
                sources.setdefault(
                    applied.source,
                    Halt(
                        TradingState(applied.state),
                        applied.source,
                        applied.reason,
                        applied.actor,
                        self.clock.time_ns(),
                    ),
                )
            autos = self._auto.setdefault((scope, key), {})
            for code, source in sources.items():
                if code in autos:
                    continue
                autos[code] = source
            for code in autos:
                log.error(
                    "LOST_HALT_STORED node=%s scope=%s key=%s code=%s: the store had no entry",
                    self.node_id,
                    scope.value,
                    key,
                    code.value,
                )
            self._publish_auto(scope, key)  # one after the other, as each is resumed

    # --- resume ramp ---------------------------------------------------------
    def _take_ramp(self, key: str, value: bytes, *, live: bool) -> None:
        """Hold a stored ramp record if it verifies (`knightwatch.trust.rampproof`).

        One that cannot be decoded or verified is held as the tightest stage any
        ramp uses (fail closed: a forged "done" cannot lift a ramp this node
        holds); only an unverified "done" for a slot this node holds no ramp in
        counts as no record, which is all a deleted one is (so a store written by
        a version that did not sign records holds no finished ramp). A verified
        one that would loosen what the node holds is ignored when it is stale, or
        when the resume it ramps is in force here and neither that resume's
        requester nor its approver signed it (another operator cannot step
        someone's ramp up). Stale is judged by each ramp's own order, never by dates
        written on two hosts' clocks: a record older than the held record of its own
        ramp (a replay of its earlier stage), a record of another ramp over the held
        record of the ramp whose resume is in force here (whatever its date: an old
        ramp's "done" replayed over the running one), and, where neither ramp's resume
        is in force, one dated before the held record of another ramp. A record of the
        ramp whose resume is in force is never stale over another ramp's (before, a
        "tripped" of a losing approval or of an earlier ramp, dated by a clock ahead,
        held the slot at its stage for good: every record of the running ramp, its
        "done" too, was older). The last record passed over as stale is taken again
        when the resume its ramp belongs to comes into force here (`_retake`).
        A record stored under another key than its own slot's (its scope and key) is
        refused as one that does not verify: the key is not signed."""
        if self._another_nodes(key):
            # only that node's own record can stand under its key (one filed under any
            # other key is refused below), so nothing there ever scales this node; before,
            # an unreadable value there held it at the tightest stage, and that node's
            # genuine record written over it was skipped without clearing it
            self._ramps.pop(key, None)
            return
        self._passed.pop(key, None)  # the slot's record is this one now
        try:
            ramp = RAMP_DECODER.decode(value)
        except UNDECODABLE as exc:
            # RecursionError: nested deeper than msgspec decodes (one operator's write to
            # the ramp bucket); before, it escaped the resync, and no node could start
            log.error("RAMP_UNDECODABLE node=%s key=%s: %s", self.node_id, key, exc)
            self._ramps[key] = _tightest("undecodable")
            return
        now = self.clock.time_ns()
        try:
            if _named(ramp) != key:
                # a record of another scope stored over this one (its signature holds:
                # the key is not signed): before, it replaced the record held here, and
                # the check below, which asks whose resume the record ramps, looked at
                # this slot's resume, not the record's own: a third operator stepped a
                # ramp up with a "done" of some other ramp of hers
                raise Refused(
                    TrustReason.PAYLOAD_MISMATCH,
                    f"a record of {_named(ramp) or 'no slot'} stored under {key}",
                )
            by = check_ramp(
                ramp.proof,
                ramp.payload(),
                self.trust.roster,
                at_ns=ramp.since_ns,
                now_ns=now if live else None,
            )
        except Refused as exc:
            held = self._ramps.get(key)
            if not ramp.holds and (held is None or not held.holds):
                self._refuse_ramp(key, ramp, exc, "no ramp held here: as if absent")
                self._ramps.pop(key, None)
            else:
                self._refuse_ramp(key, ramp, exc, "holding the tightest stage")
                self._ramps[key] = _tightest(f"refused: {exc.reason.value}")
            return
        held = self._ramps.get(key)
        loosens = _ramp_level(ramp) > (_ramp_level(held) if held is not None else 1.0)
        resume = self._applied.get(key)
        people = self._applied_by.get(key)
        # the ramp of the resume in force here (the request id: ramp and request name each other)
        current = (
            resume.command_id[:12]
            if resume is not None and resume.state is TradingState.ACTIVE
            else None
        )
        if (
            loosens
            and current == ramp.ramp_id
            and people is not None
            and by.actor not in (people.actor, *people.approvers)
        ):
            # the resume this ramp belongs to is in force here: only its own two people
            # (the requester, the approver who runs the ramp) may step it up
            why = f"signed by {by.actor}, not by {people.describe()} who resumed {key}"
            self._refuse_ramp(key, ramp, Refused(TrustReason.ACTOR_MISMATCH, why), "ignored")
            return
        if loosens and held is not None and held.proof is not None:
            stale = ""
            if ramp.ramp_id == held.ramp_id:
                if ramp.since_ns < held.since_ns:
                    stale = f"older than its own record held ({held.ramp_id})"
            elif held.ramp_id == current:
                stale = f"another ramp than {held.ramp_id} held, whose resume is in force"
            elif ramp.ramp_id != current and ramp.since_ns < held.since_ns:
                stale = f"older than ramp {held.ramp_id} held"
            if stale:
                log.error(
                    "RAMP_STALE node=%s key=%s ramp=%s signed by %s: %s; ignored",
                    self.node_id,
                    key,
                    ramp.ramp_id,
                    by.actor,
                    stale,
                )
                self._passed[key] = value
                return
        self._ramps[key] = ramp

    def _retake(self, resume: StateEntry) -> None:
        """Take again the ramp record passed over as stale in `resume`'s slot if it is of
        `resume`'s ramp, now in force here: a new ramp's stage one stored (before its
        resume) over an earlier ramp's record dated by a clock ahead, or heard while this
        node still held the resume before the kill the new ramp follows."""
        value = self._passed.get(resume.slot)
        if value is None:
            return
        try:
            ramp_id = RAMP_DECODER.decode(value).ramp_id
        except UNDECODABLE:  # decoded once already; never held
            return
        if ramp_id == resume.command_id[:12]:
            self._take_ramp(resume.slot, value, live=True)
            self._apply_ramps()

    def _another_nodes(self, key: str) -> bool:
        """Whether ramp bucket key `key` is another node's slot (`node.<other id>`)."""
        try:
            scope, named = parse_slot(key)
        except (ValueError, UnicodeDecodeError):
            return False  # no slot: a record under it is refused (held tightest) below
        return scope is Scope.NODE and named != self.node_id

    def _refuse_ramp(self, key: str, ramp: RampRecord, exc: Refused, outcome: str) -> None:
        """Log and record a ramp record this node does not take, and what it does instead."""
        log.error(
            "RAMP_REFUSED node=%s key=%s ramp=%s status=%s reason=%s detail=%r; %s",
            self.node_id,
            key,
            ramp.ramp_id,
            ramp.status,
            exc.reason.value,
            exc.detail,
            outcome,
        )
        self._record(
            "ramp_refused",
            key=key[:200],
            ramp_id=ramp.ramp_id[:64],
            status=ramp.status[:32],
            reason=exc.reason.value,
            detail=exc.detail[:500],
        )

    def ramp_fraction(self) -> float:
        """The fraction of its limits this node trades at: the tightest of the ramp records
        holding it and the signed ramps of the resumes in force (by this node's clock)."""
        held = [r.fraction for r in self._ramps.values() if r.holds]
        now = self.clock.monotonic_ns()
        for slot, (entry, start) in list(self._plans.items()):
            if now - start >= ramp_ends_ns(entry.ramp):
                del self._plans[slot]  # run through: full limits, as far as it goes
            else:
                held.append(ramp_fraction(entry.ramp, now - start))
        return min(held, default=1.0)

    def _apply_ramps(self) -> None:
        fraction = self.ramp_fraction()
        wanted = scaled(self.base_limits, fraction)
        if wanted.version != self.guard.limits.version:
            ids = (
                ",".join(
                    sorted(
                        {r.ramp_id for r in self._ramps.values() if r.holds}
                        | {e.command_id[:12] for e, _ in self._plans.values()}
                    )
                )
                or "-"
            )
            self.guard.set_limits(wanted, actor=f"ramp:{ids}")
            log.warning(
                "RAMP_APPLIED node=%s limits=%s ramps=%s", self.node_id, wanted.version, ids
            )

    async def _on_ramp(self, record: Record) -> None:
        if record.revision > self._ramps_heard.get(record.key, 0):
            self._ramps_heard[record.key] = record.revision
        self._take_ramp(record.key, record.value, live=True)
        self._apply_ramps()

    async def _record_start(self) -> None:
        """Append this start to the node's start history (kept short; best effort)."""
        key = starts_key(self.node_id)
        for _ in range(5):
            try:
                value, revision = await self.plane.get_record(Bucket.INCIDENT, key)
                before = STARTS_DECODER.decode(value).started_ns if value is not None else ()
                starts = NodeStarts(self.node_id, (*before, self._started_ns)[-_STARTS_KEPT:])
                await self.plane.put_record(
                    Bucket.INCIDENT, key, ENCODER.encode(starts), expected_revision=revision
                )
                return
            except RevisionConflict:
                continue
            except (ControlPlaneUnavailable, *UNDECODABLE) as exc:
                log.warning("node %s: start not recorded (%s)", self.node_id, exc)
                return

    def _unverified(self, slot: str, revision: int) -> StateEntry | None:
        """The fail-closed halt this node holds for a slot whose stored entry it cannot trust."""
        try:
            return held_halted(slot, revision, "does not verify")
        except ValueError:
            log.error("node %s: kill-state key %r is not a slot; ignored", self.node_id, slot)
            return None

    # --- lease ---------------------------------------------------------------
    def _renew(self) -> None:
        self.guard.renew_lease()
        self._last_renewal_ns = self.clock.monotonic_ns()
        if not self.admitted:
            self.admitted = True

    def _revoke(self, why: str) -> None:
        if self.admitted:
            self.admitted = False
            self.guard.expire_lease(why, actor=f"node:{self.node_id}")
            log.warning("node %s: admission dropped (%s); blocking all orders", self.node_id, why)

    async def _on_connection(self, up: bool) -> None:
        if not up:
            self._drops += 1
            self._revoke("control plane disconnected")

    def _dropped_since(self, drops: int) -> bool:
        """Whether the connection went down since `_drops` was `drops`: a resync read across
        it may miss a kill both paths carried while it was down, so it admits nothing."""
        if self._drops == drops:
            return False
        log.warning("node %s: disconnected during the resync; not re-admitted", self.node_id)
        return True

    async def heartbeat_once(self) -> None:
        """One renewal attempt; the loop calls it every heartbeat, the replay steps it."""
        if self.clock.monotonic_ns() - self._last_renewal_ns > self.policy.lease_ns:
            self._revoke("lease ran out before renewal (process stalled)")
        try:
            await self.plane.ping(self.policy.ping_timeout_s)
            if not self.release_admitted:
                self._revoke(self._refusal())
                await self.plane.heartbeat(self.status())
                await self._put_member()
                return
            if not self.admitted:
                drops = self._drops
                self._store_lost(await self._resync())
                if self._dropped_since(drops):
                    return  # the next heartbeat reads the store again
                if not self.release_admitted:
                    # refused while the store was read (a target release, a fence): that
                    # refusal found nothing to drop, and renewing now would admit the node
                    # on a release it cannot show until the next heartbeat
                    log.warning("node %s: not re-admitted (%s)", self.node_id, self._refusal())
                    return
                log.warning("node %s: kill state resynced; re-admitted", self.node_id)
            if self._plans:
                self._apply_ramps()  # a signed ramp steps up by this node's clock
            self._renew()
            await self.plane.heartbeat(self.status())
        except ControlPlaneUnavailable as exc:
            self._revoke(str(exc))
            return
        if self._member_put is None or self._member_put.done():
            self._member_put = asyncio.create_task(self._put_member())

    # --- release admission ----------------------------------------------------
    async def attest_once(self) -> None:
        """Attest what this node runs now; a refusal or fence expires the lease at once."""
        assert self.attestor is not None
        async with self._attest_lock:
            was = self.release_admitted
            try:
                verdict = await self.attestor.attest(self.plane, _ATTEST_TIMEOUT_S)
            except ControlPlaneUnavailable as exc:
                log.warning("node %s: attestation not answered (%s)", self.node_id, exc)
                if not self.release_admitted:
                    self._revoke(self._refusal())
                return
            except ReleaseInputError as exc:
                verdict = None
                log.error("RELEASE_UNMEASURABLE node=%s %s", self.node_id, exc)
            self.verdict = verdict
            self._verdict_mono = self.clock.monotonic_ns()
            if verdict is not None and verdict.admitted:
                self.release_event.set()
                if not was:
                    log.warning("node %s: admitted on release %s", self.node_id, verdict.release_id)
            else:
                self.release_event.clear()
                self._log_refusal(verdict)
        if not was and self.release_admitted and self._running:
            await self.heartbeat_once()

    def _log_refusal(self, verdict: Verdict | None) -> None:
        if verdict is not None:
            log.error(
                "RELEASE_REFUSED node=%s status=%s %s", self.node_id, verdict.status, verdict.detail
            )
        self._revoke(self._refusal())

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a background task alive until it finishes; `stop` cancels what is left."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _on_release(self, record: Record) -> None:
        if record.key != TARGET_KEY:
            return
        self.target_set = True
        if self.attestor is None:
            self.release_event.clear()
            self._log_refusal(None)
            return
        self.track(asyncio.create_task(self.attest_once(), name=f"{self.node_id}-reattest"))

    async def _attesting(self) -> None:
        while self._running:
            await asyncio.sleep(self.attest_s)
            await self._round("attestation", self.attest_once)

    async def _put_member(self) -> None:
        """Store this node's membership record when it says something new, or when the
        stored one has less than half a lease left (readers judge liveness by its lease
        expiry), not at every heartbeat: each is a write to the server's store. With a
        heartbeat of at most a third of the lease the stored record never lapses while
        the node holds its lease (`tests/control/node/test_runtime.py`)."""
        status = self.status()
        said = msgspec.structs.replace(status, seen_ns=0, lease_expires_ns=0)
        if (
            said == self._member_said
            and self._member_expires_ns - status.seen_ns > self.policy.lease_ns // 2
        ):
            return
        with contextlib.suppress(ControlPlaneUnavailable):
            await self.plane.put_member(status)
            self._member_said = said
            self._member_expires_ns = status.lease_expires_ns

    async def _heartbeats(self) -> None:
        while self._running:
            await asyncio.sleep(self.policy.heartbeat_s)
            await self._round("heartbeat", self.heartbeat_once)

    async def _round(self, loop: str, once: Callable[[], Awaitable[None]]) -> None:
        """One round of a background loop; an error nobody expected ends the round, not the
        loop. Before, one (a plane raising something other than `ControlPlaneUnavailable`)
        ended the loop for good and nothing was said until the node stopped: a heartbeat
        loop gone left the Guard blocking every order for ever while the node's status
        still read admitted, a metrics loop gone got the node halted as silent and its
        audit lines never shipped again. A heartbeat round that fails drops admission at
        once (the next one resyncs first); the error is logged once per run of failures."""
        try:
            await once()
        except Exception as exc:
            if loop == "heartbeat":
                self._revoke(f"heartbeat failed: {exc!r}"[:200])
            if loop not in self._failing:
                self._failing.add(loop)
                log.exception(
                    "LOOP_ERROR node=%s loop=%s: round failed; retrying", self.node_id, loop
                )
            return
        if loop in self._failing:
            self._failing.discard(loop)
            log.warning("node %s: %s round succeeded again", self.node_id, loop)

    # --- metrics and audit ---------------------------------------------------
    def metrics(self) -> NodeMetrics:
        g = self.guard
        lowered = g.lowered  # read first: never more than the `accepted` read after it
        accepted, blocked = g.counters()
        rejected = sum(blocked.values())
        blocks = {r.value: n for r, n in blocked.items()}
        fills, customer, principal, _, parents = g.flow()
        return NodeMetrics(
            node_id=self.node_id,
            at_ns=self.clock.time_ns(),
            orders=accepted + rejected,
            accepted=accepted,
            lowered=lowered,
            cancels=g.cancels(),
            unknown_cancels=g.unknown_cancels,
            rejected=rejected,
            fills=fills,
            gross_exposure=g.exposure()[0],
            pnl=g.pnl(),
            armed=g.armed,
            errors=len(self.errors),
            blocks=blocks,
            admitted=self.admitted and self.release_admitted,
            limits_version=g.limits.version,
            recorder_ok=g.recorder.healthy,
            notional=customer + principal,
            principal_notional=principal,
            parents=parents,
            node_state=int(g.trading_state(Scope.NODE, self.node_id)),
            fleet_state=int(g.trading_state(Scope.FLEET, FLEET_KEY)),
            instance=self.instance,
        )

    def held(self, scope: Scope, key: str) -> StateEntry | None:
        """The kill-state entry this node applied for (scope, key), if any.

        A kill the store wrote before its own issue time (signed by a clock ahead) is
        dated when the store wrote it: it was in force from then, and a node started
        during it counts it from then (the flag freeze), not from its own start."""
        slot = slot_of(scope, key)
        entry = self._applied.get(slot)
        since = self._in_force.get(slot)
        if entry is not None and since is not None and since[0] == entry.command_id:
            return msgspec.structs.replace(entry, issued_ns=min(entry.issued_ns, since[1]))
        return entry

    def status(self, left: bool = False) -> NodeStatus:
        now = self.clock.time_ns()
        remaining = self._last_renewal_ns + self.policy.lease_ns - self.clock.monotonic_ns()
        last = self.confirmed[-1] if self.confirmed else None
        node_state = max(
            self.guard.trading_state(Scope.FLEET, "fleet"),
            self.guard.trading_state(Scope.NODE, self.node_id),
        )
        return NodeStatus(
            node_id=self.node_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_ns=self._started_ns,
            seen_ns=now,
            lease_expires_ns=now + max(remaining, 0) if self.admitted else now,
            admitted=self.admitted,
            armed=self.guard.armed,
            node_state=TradingState(node_state),
            last_command_id=last.command_id if last else "",
            last_confirmed_ns=last.applied_ns if last else 0,
            left=left,
            instance=self.instance,
            refused=sum(self.refused.values()),
            last_refusal=self.last_refusal,
            duplicate=self.duplicate,
        )

    async def publish_once(self) -> None:
        """Send current metrics and what the flight recorder wrote since; never raises on outage.

        The lines go in envelopes of up to `_AUDIT_BATCH` lines (`_AUDIT_BYTES`), one
        stream write each. One that is not acknowledged stays and goes again unchanged
        (its id lets the stream drop it if the first copy landed) before any new one,
        so no line is lost or shipped twice by an outage.
        """
        self._say_dropped()
        try:
            await self.plane.publish_metrics(self.metrics())
            if self.shipper is None:
                return
            self.guard.flush_records()
            for _ in range(_AUDIT_ENVELOPES_PER_TICK):
                envelope = self._unshipped
                if envelope is None:
                    lines = self.shipper.take(_AUDIT_BATCH, _AUDIT_BYTES)
                    if not lines:
                        return
                    self._audit_seq += 1
                    envelope = self._unshipped = AuditEnvelope(
                        self.node_id,
                        self.instance,
                        self._audit_seq,
                        b"\n".join(lines) + b"\n",
                    )
                await self.plane.append_audit(envelope)
                self._unshipped = None
        except ControlPlaneUnavailable:
            return

    def _say_dropped(self) -> None:
        """Log the lines the shipping buffer dropped since last said (at most one line every
        `_DROPS_SAID_S`, counting them all).

        The buffer drops its oldest lines when the stream is away or slower than the
        recorder (`ShippingSink`); before, they were only counted in `shipper.dropped`,
        which nothing read: the fleet's audit stream had gaps nobody was told of. The
        file keeps every line."""
        shipper = self.shipper
        if shipper is None or shipper.dropped <= self._dropped_said:
            return
        now = self.clock.monotonic_ns()
        if self._dropped_said_ns and now - self._dropped_said_ns < _DROPS_SAID_S * NS_PER_S:
            return
        lost, self._dropped_said = shipper.dropped - self._dropped_said, shipper.dropped
        self._dropped_said_ns = now
        log.error(
            "AUDIT_DROPPED node=%s lines=%d total=%d: not shipped to the fleet's audit stream "
            "(its buffer was full); the flight recorder's file keeps them",
            self.node_id,
            lost,
            shipper.dropped,
        )

    async def _publishing(self) -> None:
        while self._running:
            await asyncio.sleep(self.metrics_s)
            await self._round("metrics", self.publish_once)
