"""The supervisor on a control plane: metrics in, halts and pages out.

The same `Supervisor` decides in the replay (fed by MemoryControlPlane) and in
the live fleet (fed by NATS); this service only wires it to a plane, the kill
switch and the pager, and records each action in the fleet audit stream.

On a live fleet (`concurrent=True`) each action runs as its own task. A
transport delivers one subscription's messages in order, so awaiting a kill
(confirmations up to `confirm_timeout_s`, the store write up to 15 s) inside
the metrics callback would make a second runaway wait behind the first. A
replay stepped on a simulated clock keeps actions inline: no simulated time
passes while one runs, and it must be complete when the step that fired it
returns. A kill that did not take effect (a node did not
confirm, or no revision was stored) re-arms its rule, so the next judgement
retries it rather than the supervisor believing the node stopped. A kill that
was stored, and whose only unconfirmed nodes hold a lease known to have
expired, did take effect (each stopped trading by itself and reads the halt
when it returns): it is not retried, or a dead node was killed and paged again
at every judgement for as long as it stayed dead.

The service also relays nodes' automatic halts into the kill state
(`AutoHaltRelay`): a node may not write the kill state itself, so it signs
its halt and the supervisor, which may, stores it after checking the
signature and that a node halts only itself or a strategy/symbol.

It also hears every kill, halt and drain the kill state carries, checked as a node checks
it (`_on_state`): the nodes such a stop covers cancel what they had working in it, and
those cancels are the stop direction (`Supervisor.stopping`). Unheard, an operator's kill
of one strategy had the supervisor halt each node it ran on as a cancel storm, every other
strategy there with it. A stop that does not verify excuses nothing.

Every member holding a lease is expected to report: those at the start, and,
while the service sweeps, those that take a lease later (read every `expect_s`),
so a node whose metrics never arrive is halted as silent whenever it joined.

A live service also watches itself: when its own event loop went unscheduled
for longer than `stall_s` (a starved or paused process), the nodes' samples
from that gap are still queued, and judging silence before reading them would
halt healthy nodes. It tells the supervisor (`Supervisor.missed`), which does not
count the gap as any node's silence (only the gap: counted from the moment it could
listen again, stalls every few seconds kept a node gone silent from ever being judged).

A person is paged once per incident, with the outcome (who did not confirm, what was
not stored): a kill retried because it did not take effect pages again only once
a kill of that rule and key has taken effect and the rule fires anew. Paged at
every retry, a node that never confirmed paged someone at every judgement, the
97 unread emails again. The incident also ends when its node is judged again after
the re-arm and the rule does not fire (the halt held after all, the node reporting
it, or the condition cleared): the rule firing later is a new incident, paged. Before,
its (rule, key) stayed marked as paged for good, and a new incident a day later was
taken for a retry and only logged. Nothing after the kill (the page, the audit record) can
make a kill that took effect count as failed: it is never issued again for that.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid

import msgspec

from knightwatch.control.fleet.killswitch import CommandResult, KillSwitch
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import (
    ACTIONS_KEPT,
    DAY_KEY_PREFIX,
    Action,
    Supervisor,
    keep_latest,
)
from knightwatch.control.plane.protocol import (
    Bucket,
    ControlPlane,
    ControlPlaneUnavailable,
    RevisionConflict,
)
from knightwatch.control.plane.wire import (
    ENTRY_DECODER,
    GUARD_ACTOR,
    SUBJECT_AUTO_HALT,
    AuditEnvelope,
    NodeMetrics,
    StateEntry,
)
from knightwatch.inputs import UNDECODABLE
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import Refused, TrustReason, check_state

log = logging.getLogger(__name__)

SUPERVISOR_ID = "supervisor"


def stopped_by_lease(result: CommandResult) -> bool:
    """Whether a kill that is not `ok` took effect all the same: it was stored and sent, no
    order is left working, and each node that did not confirm has a known lease that had
    expired when the kill finished (the node stopped trading by itself). A lease that is
    unknown (no membership record) or still live is no such proof: its kill is retried."""
    return (
        result.revision is not None
        and result.sent
        and not result.unreachable
        and not result.still_working
        and not result.members_error
        and bool(result.missing)
        and all(result.leases.get(n, 0) > 0 and result.lease_expired(n) for n in result.missing)
    )


def outcome(result: CommandResult) -> str:
    """One line for a page: whether the kill took, and if not, what is missing."""
    parts = []
    if result.unreachable:
        parts.append(f"control plane unreachable ({result.unreachable})")
    if not result.sent:
        parts.append("NOT sent")
    if result.missing:
        parts.append(f"NOT confirmed by {', '.join(result.missing)}")
    if result.still_working:
        parts.append(f"orders still working on {', '.join(result.still_working)}")
    if result.members_error:
        parts.append(f"members never heard from not awaited ({result.members_error})")
    if result.revision is None:
        parts.append(f"NOT stored ({result.durable_error or 'no revision'})")
    if not parts:
        return f"confirmed by all {len(result.targets)} targets, stored at {result.revision}"
    return "; ".join(parts)


class AutoHaltRelay:
    """Stores the automatic halts nodes sign, with compare-and-swap on what they decided on."""

    def __init__(self, killswitch: KillSwitch) -> None:
        self.killswitch = killswitch
        self.plane = killswitch.plane
        self.stored = 0
        self.refused = 0

    async def start(self) -> None:
        await self.plane.subscribe(SUBJECT_AUTO_HALT, self._on_halt)

    async def _on_halt(self, payload: bytes) -> None:
        try:
            entry = ENTRY_DECODER.decode(payload)
            if not entry.actor.startswith(GUARD_ACTOR):
                raise Refused(TrustReason.ROLE_NOT_ALLOWED, "only automatic halts are relayed")
            check_state(
                entry.command(),
                entry.proof,
                self.killswitch.trust.roster,
                now_ns=self.killswitch.clock.time_ns(),
                live=True,
            )
        except (*UNDECODABLE, Refused) as exc:
            self.refused += 1
            log.error("AUTO_HALT_REFUSED %s", exc)
            return
        try:
            await self.plane.put_state(entry, expected_revision=entry.decided_on)
            self.stored += 1
        except RevisionConflict:
            pass  # the node re-reads, re-signs and sends it again
        except ControlPlaneUnavailable as exc:
            log.warning("automatic halt of %s not stored: %s", entry.actor, exc)


class SupervisorService:
    def __init__(
        self,
        plane: ControlPlane,
        supervisor: Supervisor,
        killswitch: KillSwitch,
        pager: Pager,
        confirm_timeout_s: float = 1.0,
        sweep_s: float | None = None,
        concurrent: bool = False,
        expect_s: float | None = None,
    ) -> None:
        """`concurrent`: dispatch each action as its own task (live) rather than finish it
        inside the metrics callback (a stepped replay). `sweep_s`: how often (event-loop
        seconds) to judge silence with no sample arriving, so a fleet that goes quiet all
        at once is still halted; None leaves it to the samples (a stepped replay).
        `expect_s`: how often, with `sweep_s`, to read the membership for nodes holding a
        lease that the supervisor has never heard from (default: `sweep_s`, at least 1 s)."""
        if sweep_s is not None and sweep_s <= 0:
            raise ValueError(f"sweep_s: must be > 0 (got {sweep_s!r})")
        if expect_s is not None and not 0 < expect_s < math.inf:
            raise ValueError(f"expect_s: must be > 0 and finite (got {expect_s!r})")
        self.plane = plane
        self.supervisor = supervisor
        self.killswitch = killswitch
        self.pager = pager
        self.confirm_timeout_s = confirm_timeout_s
        self.sweep_s = sweep_s
        self.concurrent = concurrent
        self.results: list[tuple[Action, CommandResult]] = []
        """The latest actions with their kills' results, oldest first (`ACTIONS_KEPT` at
        least, never twice as many: one result per retry of a halt no node confirms)."""
        self.relay = AutoHaltRelay(killswitch)
        self._seq = 0
        self._instance = uuid.uuid4().hex[:12]
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = False
        """Set by `stop`: actions in flight finish, no new one starts."""
        self._sweeper: asyncio.Task[None] | None = None
        self._expecter: asyncio.Task[None] | None = None
        self.expect_s = expect_s if expect_s is not None else max(sweep_s or 0.0, 1.0)
        self._unsaved: dict[str, bytes] = {}
        """Day histories (`Supervisor.day_records`) waiting to be stored, newest per key."""
        self._saver: asyncio.Task[None] | None = None
        self.stall_s = None if sweep_s is None else max(2 * sweep_s, 1.0)
        """An event-loop gap longer than this is the service's own stall, not the nodes'."""
        self._alive = 0.0
        self._retrying: set[tuple[str, str]] = set()
        """(rule, key) of kills that did not take effect and were paged: their retries
        are not paged again (one page per incident)."""
        self._rearmed: set[tuple[str, str]] = set()
        """(rule, key) of node kills re-armed and not fired since: the node's next judgement
        without them ends the incident (`_judged`)."""

    def _awake(self) -> None:
        t = asyncio.get_running_loop().time()
        if self.stall_s is not None and self._alive and t - self._alive > self.stall_s:
            log.warning(
                "supervisor did not run for %.1f s: no node's silence counts it", t - self._alive
            )
            self.supervisor.missed(t - self._alive)
        self._alive = t

    async def start(self) -> None:
        """Read back the day history a previous supervisor stored before judging a sample
        (a plane that cannot be read fails the start): a history that cannot be read halts
        its node (`Supervisor.restore`). Every member holding a lease is expected to report
        (`Supervisor.expect`): one that does not is halted as silent."""
        self._stopping = False
        await self.killswitch.start()
        stored = await self.plane.records(Bucket.INCIDENT)
        for action in self.supervisor.restore({k: v for k, (v, _) in stored.items()}):
            await self._dispatch(action)
        # the nodes holding a lease now are judged silent if they never report to this
        # supervisor: one restarted while a node had gone quiet never heard of it
        await self._expect_members()
        await self.relay.start()
        await self.plane.subscribe_states(self._on_state)
        await self.plane.subscribe_metrics(self._on_metrics)
        if self.sweep_s is not None and self._sweeper is None:
            self._alive = asyncio.get_running_loop().time()
            self._sweeper = asyncio.create_task(self._sweep_loop(self.sweep_s))
            self._expecter = asyncio.create_task(self._expect_loop(self.expect_s))

    async def _expect_members(self) -> None:
        """Every member holding a lease now is expected to report (`Supervisor.expect`)."""
        now = self.supervisor.clock.time_ns()
        self.supervisor.expect(m.node_id for m in await self.plane.members() if m.live(now, 0))

    async def _expect_loop(self, every_s: float) -> None:
        """Go on expecting members while running, off the sweep (a slow membership read never
        delays a judgement of silence): a node that took its lease after the start and never
        reported (its metrics stuck or refused by the server) was never judged at all."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self._expect_members()
            except ControlPlaneUnavailable as exc:
                log.warning("membership not read for silent nodes: %s", exc)
            except Exception:  # the loop must outlive one bad read: it is a safety check
                log.exception("membership not read for silent nodes")

    async def stop(self) -> None:
        """Stop sweeping and wait for every action in flight to finish (halts are not
        abandoned half-way); none starts after this is called. Before, the metrics that
        went on arriving could start one for ever: a halt no node confirmed was retried at
        every judgement, and `up` stopped while its fleet was starting waited on them."""
        self._stopping = True
        for task in (self._sweeper, self._expecter):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._sweeper = self._expecter = None
        await self.drain()

    async def drain(self) -> None:
        """Wait until no action is in flight (including ones dispatched meanwhile), nor a
        day history being stored."""
        while self._inflight or self._saver is not None:
            await asyncio.gather(*self._inflight, *([self._saver] if self._saver else []))

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def _on_state(self, entry: StateEntry) -> None:
        """A kill, halt or drain, signed and checked as a node checks it: the cancels of the
        nodes it covers are that stop's for a while (`Supervisor.stopping`). One that does
        not verify excuses nothing (anyone able to publish could blind the cancel rule)."""
        if entry.state is TradingState.ACTIVE:
            return
        try:
            check_state(
                entry.command(),
                entry.proof,
                self.killswitch.trust.roster,
                now_ns=self.supervisor.clock.time_ns(),
                live=True,
            )
        except (*UNDECODABLE, Refused) as exc:
            log.warning(
                "STOP_NOT_HEARD %s %s by %s: %s; its cancels count",
                entry.scope.value,
                entry.key[:64],
                entry.actor[:64],
                exc,
            )
            return
        self.supervisor.stopping(entry.scope, entry.key, entry.state, entry.issued_ns)

    async def _on_metrics(self, metrics: NodeMetrics) -> None:
        self._awake()
        actions = self.supervisor.observe(metrics)
        self._judged(metrics.node_id, actions)
        for action in actions:
            await self._dispatch(action)
        self._unsaved.update(self.supervisor.day_records())
        if not self._unsaved or self._saver is not None:
            return
        if not self.concurrent:
            await self._save()
            return
        # stored by one task, off the metrics path: a slow store never delays a judgement
        self._saver = asyncio.create_task(self._save(), name="supervisor:day")

    def _judged(self, node_id: str, actions: list[Action]) -> None:
        """`node_id` was judged again with `actions` fired: a node kill re-armed since its
        last attempt and not among them is over (its halt held, or its condition cleared),
        so the rule firing on the node later is a new incident and is paged."""
        fired = {(a.rule.value, a.key) for a in actions}
        for tag in [t for t in self._rearmed if t[1] == node_id]:
            self._rearmed.discard(tag)
            if tag not in fired and tag in self._retrying:
                self._retrying.discard(tag)
                log.warning(
                    "supervisor %s on %s not fired again after its re-arm: incident over",
                    *tag,
                )

    async def _save(self) -> None:
        """Store the waiting day histories in the incident bucket; one that fails is handed
        out again at its node's next sample (`Supervisor.unsaved`)."""
        try:
            while self._unsaved:
                key, value = next(iter(self._unsaved.items()))
                try:
                    await self.plane.put_record(Bucket.INCIDENT, key, value)
                except ControlPlaneUnavailable as exc:
                    log.error("supervisor day history %s not stored: %s", key, exc)
                    for k in self._unsaved:
                        self.supervisor.unsaved(k.removeprefix(DAY_KEY_PREFIX))
                    self._unsaved.clear()
                    return
                if self._unsaved.get(key) is value:
                    del self._unsaved[key]
        finally:
            self._saver = None

    async def _sweep_loop(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            self._awake()
            for action in self.supervisor.sweep():
                await self._dispatch(action)

    async def _dispatch(self, action: Action) -> None:
        self._rearmed.discard((action.rule.value, action.key))  # fired again: a retry
        if self._stopping:
            log.error(
                "supervisor stopping: %s on %s not issued (%s)",
                action.rule.value,
                action.key,
                action.reason,
            )
            return
        if not self.concurrent:
            await self._guarded(action)
            return
        task = asyncio.create_task(self._guarded(action), name=f"{action.rule}:{action.key}")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _guarded(self, action: Action) -> None:
        try:
            await self.act(action)
        except Exception:
            # A task's exception would otherwise surface only at garbage collection;
            # the halt may not have happened, so let the rule fire again.
            log.exception("supervisor action %s on %s failed; will retry", action.rule, action.key)
            self.supervisor.rearm(action.rule, action.key)

    async def act(self, action: Action) -> None:
        """Halt first, page and record after: a slow webhook must not delay the stop."""
        tag = (action.rule.value, action.key)
        retry = tag in self._retrying  # paged already, its incident not over when fired
        result = await self.killswitch.kill(
            action.scope,
            action.key,
            action.reason,
            timeout_s=self.confirm_timeout_s,
            state=action.state,
        )
        self.results.append((action, result))
        keep_latest(self.results, ACTIONS_KEPT)
        if not result.ok and stopped_by_lease(result):
            # stored, and every node that did not confirm has lost its lease: each stopped
            # trading by itself and reads the stored halt when it returns. Re-armed, a dead
            # node was killed and paged again at every judgement for as long as it was dead.
            log.error(
                "supervisor %s on %s stored at revision %s; not confirmed by %s, whose lease "
                "expired (stopped by itself; the stored halt holds it when it returns)",
                action.rule.value,
                action.key,
                result.revision,
                ", ".join(result.missing),
            )
        elif not result.ok:
            self.supervisor.rearm(action.rule, action.key)
            log.error(
                "supervisor %s on %s not confirmed (missing %s, stored revision %s); "
                "will retry at the next judgement",
                action.rule.value,
                action.key,
                result.missing,
                result.revision,
            )
        took = result.ok or stopped_by_lease(result)
        if took:
            self._retrying.discard(tag)
        else:
            self._retrying.add(tag)
            if action.scope is Scope.NODE:
                self._rearmed.add(tag)
        if retry:
            log.error(
                "supervisor %s on %s retried (already paged): %s",
                action.rule.value,
                action.key,
                outcome(result),
            )
        else:
            try:
                await self.pager.page(action, outcome(result))
            except Exception:  # a page never undoes a halt: the kill is not issued again
                log.exception("PAGE_FAILED rule=%s key=%s", action.rule.value, action.key)
        self._seq += 1
        record = msgspec.json.encode(
            {"kind": "supervisor_action", "action": action, "command_id": result.entry.command_id,
             "confirmed": result.latencies_ms, "missing": result.missing}
        )  # fmt: skip
        try:
            await self.plane.append_audit(
                AuditEnvelope(SUPERVISOR_ID, self._instance, self._seq, record + b"\n")
            )
        except Exception as exc:  # the kill above stands whatever the record's fate
            log.error("supervisor action not recorded in the fleet stream: %s", exc)
