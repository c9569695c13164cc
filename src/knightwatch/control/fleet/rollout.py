"""Staged rollouts on the live fleet: the `Rollout` state machine fed by the supervisor.

The state machine (`knightwatch.flags.rollout`) decides; this driver feeds it
the health of every node as a watching `Supervisor` computes it from the same
`NodeMetrics` stream (`order_rate_ratio` against the participating fleet's
median, `reject_ratio`, `pnl_deviation`, ...: `NodeHealth.gauges()`), so a gate
and an automatic halt read one set of numbers. It applies the rollout's actions
through the activation gate against the live fleet view, and sends its halt
requests to the kill switch. The rollout state is one record per flag with
compare-and-swap, so `rollout abort` from another terminal wins over a driver
mid-step, and `rollout status` reads the truth.

A second person's approval names the plan's digest (stages, fractions, holds,
gates); the driver checks it where the rollout starts and stores it with the
state, and before every step checks that the stored plan is still the
approved one, by an approver whose key is valid at that step: a state edited
in the store (a faster plan, another approver), or one whose approver's key
was revoked since, is aborted back to the safe default, never promoted.

The approval is of one rollout: one that the flag's last rollout record or a committed
change of the flag (an earlier rollout's stage) already carried starts nothing, so an
aborted rollout is not started again by its requester alone within the approval's hour.
Its stages ride it for `ROLLOUT_SPAN_NS` after the start (every node refuses later
ones), so a rollout still progressing then is aborted, never promoted.

Before every step the driver checks that the flag state still holds its stages: every
node a stage switched on holds the target value, by a change of this rollout (with an
approval, its signed `rollout_id`). One that does not (a `flags set` overwrote it, or the
state cannot be read) ended the rollout on every node (they refuse its later stages as
`replayed`); the driver aborts it, naming the node and the revision, instead of recording
refused stages as switched on and promoting over a flag that is no longer its own.

An abort is recorded before it acts (so a driver mid-step sees the nodes it switches off),
but the stop direction never waits on that record: a rollouts bucket at its byte bound (one
operator's flood) or a write not answered raised out of the abort before any switch-off,
and the canary stayed on. Now the switch-off goes out whatever became of the record, and
the abort says it was not recorded (`RolloutError`). A new rollout adds risk, so it stops
short of the bucket's last share (`STOP_RESERVE_SHARE`), which stays for the aborts.

A stage is promoted (or the rollout completed) only once every node it exposed confirmed
the flag state holding it: its own durable `applied` record at the state's revision or
later. A node that refused the stage (its release does not know the flag, it cannot check
an earlier stage's change record: its `last_refusal`) sits at the safe default; before,
the driver promoted over it and reported the rollout completed, the canary believed run
there. Now the promotion waits `confirm_s` for the missing confirmations, then holds
(`rollout_unconfirmed`, naming each node and its refusal) and is judged again at the next
step, without waiting again. Only promotion waits: an abort (a gate breach, an overtaken or
unapproved state, the operator's) never does. Between steps, `rollout status` names the
exposed nodes that have not confirmed (`confirmations`, read from the store, never waited).

Metrics are news (a subscription, no history), so a driver just started has heard nobody:
`rollout start` judged its first step before any exposed node's metrics reached it, read
each gate as failed for missing data, aborted the rollout it had just begun and halted its
canary. A node not heard from yet is not judged while the driver has listened for less
than the supervisor's `stale_after_s` and no node it heard breaches a gate (`unheard`);
after that a node still silent fails its gates, as before.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import msgspec

from knightwatch.clock import NS_PER_S, Clock
from knightwatch.control.fleet.flagstore import AppliedWaiter, PlaneFlagStore, fleet_snapshot
from knightwatch.control.fleet.freeze import FrozenByKill, refuse_if_frozen
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.fleet.supervisor import (
    NodeHealth,
    Supervisor,
    SupervisorConfig,
    gate_metrics,
)
from knightwatch.control.node.flags import (
    APPLIED_DECODER,
    applied_key,
    carried_by,
    changes_of,
    claimed_away,
    decode_state,
    state_key,
)
from knightwatch.control.plane.protocol import (
    Bucket,
    ControlPlane,
    ControlPlaneRefused,
    ControlPlaneUnavailable,
    RevisionConflict,
    RoomKept,
    Unsubscribe,
)
from knightwatch.control.plane.wire import NodeMetrics, NodeStatus
from knightwatch.errors import KnightwatchError
from knightwatch.flags.activation import ActivationGate, ActivationPolicy
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.rollout import (
    ADMITTED,
    HALTED,
    ORDERS,
    Metrics,
    Rollout,
    RolloutAction,
    RolloutEvent,
    RolloutPlan,
    RolloutRunner,
    RolloutState,
    RolloutStatus,
    SetFlag,
    failed_actions,
    plan_digest,
    rollout_nodes,
)
from knightwatch.flags.state import StateUnavailable
from knightwatch.inputs import UNDECODABLE
from knightwatch.release.dsse import Envelope, encode_envelope
from knightwatch.release.errors import ReleaseInputError
from knightwatch.state import Scope, TradingState
from knightwatch.trust.approval import ApprovalKind, check_approval, decode_approval_file
from knightwatch.trust.flagproof import ROLLOUT_SPAN_NS, FlagSealer
from knightwatch.trust.roster import TrustError

_STATE = msgspec.json.Decoder(RolloutState)
_ENC = msgspec.json.Encoder()
_ABORT_ATTEMPTS = 10
_UNCONFIRMED = "rollout_unconfirmed"


log = logging.getLogger(__name__)


class RolloutError(KnightwatchError, RuntimeError):
    """A rollout command that cannot proceed; the message says why."""


class _WallClock:
    """Rollout records are read by other processes, so hold times use wall time."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def monotonic_ns(self) -> int:
        return self._clock.time_ns()

    def time_ns(self) -> int:
        return self._clock.time_ns()


class _KillSwitchHalts:
    """`HaltSink` for the rollout runner's worker thread: halts through the kill switch."""

    def __init__(self, killswitch: KillSwitch, loop: asyncio.AbstractEventLoop) -> None:
        self._killswitch = killswitch
        self._loop = loop

    def halt(self, scope: Scope, key: str, reason: str, actor: str) -> None:
        kill = self._killswitch.kill(scope, key, f"{actor}: {reason}", timeout_s=2.0)
        asyncio.run_coroutine_threadsafe(kill, self._loop).result(30.0)


class RolloutDriver:
    def __init__(
        self,
        plane: ControlPlane,
        registry: FlagRegistry,
        clock: Clock,
        killswitch: KillSwitch,
        *,
        policy: ActivationPolicy | None = None,
        health: SupervisorConfig | None = None,
        confirm_s: float = 5.0,
    ) -> None:
        """`health` configures the watching supervisor (its `rate_window_s` is the gate
        window); give the fleet supervisor's own config so gates and halts agree. The
        default is the supervisor's default, for the same reason. `confirm_s` bounds the
        wait, before a promotion, for the exposed nodes' confirmations of their stage."""
        if not (math.isfinite(confirm_s) and confirm_s >= 0):
            raise RolloutError(f"rollout driver: confirm_s {confirm_s} must be finite and >= 0")
        self.plane = plane
        self.registry = registry
        self.clock = _WallClock(clock)
        self.killswitch = killswitch
        self.policy = policy or ActivationPolicy()
        self.supervisor = Supervisor(health or SupervisorConfig(), clock)
        self._monotonic = clock
        self._heard_since: int | None = None
        """When this driver began to hear metrics (`start`; None: not started)."""
        self._published: dict[str, NodeMetrics] = {}
        self.confirm_s = confirm_s
        self._waiter = AppliedWaiter(plane, clock)
        self._listening = False
        """Whether `_waiter` hears confirmations: subscribed at the first promotion that
        needs them, never on the way to an abort (`start` gains no step that can fail)."""
        self._unsubscribe: Unsubscribe | None = None

    async def start(self) -> None:
        await self.killswitch.start()
        self._unsubscribe = await self.plane.subscribe_metrics(self._on_metrics)
        self._heard_since = self._monotonic.monotonic_ns()

    async def stop(self) -> None:
        """Stop listening (metrics, confirmations). A driver made for one request on a
        long-lived connection (the console's abort, on a person's session) otherwise kept
        its watching supervisor fed with every node's metrics for the connection's life,
        one more at every request. Never raises; the driver may be started again."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        self._heard_since = None
        self._listening = False
        if unsubscribe is not None:
            await unsubscribe()
        await self._waiter.close()

    def unheard(self, state: RolloutState, metrics: Metrics) -> list[str]:
        """The exposed nodes this driver has not heard from yet while it is too new to have
        (listening for less than the supervisor's `stale_after_s`, in which a live node
        publishes), when no node it has heard from breaches a gate: [] once it could have
        heard every live node, or a heard node breaches (the gates judge then, as before).

        Metrics are news, not a record: a driver just started (`rollout start`, a new
        process) judged its first step before any exposed node's metrics reached it, read
        every gate as failed for missing data and aborted the rollout it had just begun,
        halting its canary. A node still silent after the warm-up fails its gates."""
        if self._heard_since is None:
            return []
        listened_ns = self._monotonic.monotonic_ns() - self._heard_since
        if listened_ns >= self.supervisor.config.stale_after_s * NS_PER_S:
            return []
        unheard = [n for n in state.exposed if n not in self._published]
        heard = [n for n in state.exposed if n in self._published]
        if any(g.breach(n, metrics) for n in heard for g in state.plan.gates):
            return []
        return unheard

    async def _on_metrics(self, m: NodeMetrics) -> None:
        self.supervisor.record(m)
        self._published[m.node_id] = m

    async def metrics(self) -> Metrics:
        """Health gauges plus promotion evidence for every node the plane knows about."""
        members = await self.plane.members()
        return rollout_metrics(self.supervisor.health(), self._published, members)

    async def load(self, flag_id: str) -> tuple[RolloutState | None, int]:
        value, revision = await self.plane.get_record(Bucket.ROLLOUTS, flag_id)
        if value is None:
            return None, revision
        try:
            return _STATE.decode(value), revision
        except UNDECODABLE as exc:  # the bucket is operator-writable: anything
            flag = self.registry.get(flag_id)
            safe = "" if flag is None else ("on" if flag.safe_default else "off")
            how = f"`knightwatch flags set {flag_id} {safe} --reason ...`, " if safe else ""
            raise RolloutError(
                f"{flag_id}: the stored rollout record (revision {revision}) cannot be read "
                f"({exc}); nothing can be promoted or aborted from it: to stop it, set the "
                f"flag back to its safe default everywhere ({how}one person) or kill"
            ) from None

    async def begin(
        self, flag_id: str, plan: RolloutPlan, *, actor: str, approval: Envelope | None
    ) -> RolloutState:
        """Start a rollout by `actor` (the signer of this driver's kill switch), with a second
        person's `approval` of exactly this plan (checked here, stored with the state)."""
        flag = self.registry.get(flag_id)
        if flag is None:
            raise RolloutError(f"{flag_id}: not in the flag registry")
        approver = None
        approved_at = self.clock.time_ns()
        before_last = sum(stage.hold_s for stage in plan.stages[:-1])
        if approval is not None and before_last * 1_000_000_000 > ROLLOUT_SPAN_NS:
            span_h = ROLLOUT_SPAN_NS // 3_600_000_000_000
            raise RolloutError(
                f"rollout of {flag_id}: plan.stages hold {before_last / 3600:.1f} h before the "
                f"last stage; its approval carries stages for {span_h} h after the start "
                "(every node refuses later ones): shorten the holds"
            )
        if approval is not None:
            try:
                approver = check_approval(
                    approval,
                    self.killswitch.trust.roster,
                    kind=ApprovalKind.ROLLOUT,
                    flag_id=flag_id,
                    value=not flag.safe_default,
                    nodes=None,
                    requester=actor,
                    now_ns=approved_at,
                    digest=plan_digest(plan),
                )
            except TrustError as exc:
                raise RolloutError(f"rollout of {flag_id}: {exc}") from None
        try:
            await refuse_if_frozen(self.plane, f"rollout of {flag_id}", self.killswitch.trust)
        except FrozenByKill as exc:
            raise RolloutError(str(exc)) from None
        current, revision = await self.load(flag_id)
        if current is not None and current.status is RolloutStatus.PROGRESSING:
            raise RolloutError(f"{flag_id}: rollout {current.rollout_id} is in progress")
        if approval is not None:
            used = await self._approval_used(flag_id, approval, current)
            if used:
                raise RolloutError(used)
        if isinstance(self.plane, RoomKept):
            try:  # risk added: the bucket's last share stays for the aborts' records
                await self.plane.check_room(Bucket.ROLLOUTS)
            except ControlPlaneRefused as exc:
                raise RolloutError(f"rollout of {flag_id}: nothing started: {exc}") from None
        view = await fleet_snapshot(self.plane, self.clock)
        number = int(current.rollout_id.rsplit("-", 1)[-1]) + 1 if current else 1
        nodes, excluded = rollout_nodes(view.members())
        try:
            rollout, actions = Rollout.start(
                f"{flag_id}-{number}",
                flag_id,
                not flag.safe_default,
                nodes,
                plan,
                self.clock,
                started_by=actor,
                approver=approver,
                excluded=excluded,
            )
        except ValueError as exc:
            raise RolloutError(str(exc)) from None
        if approval is not None:
            rollout = Rollout(
                msgspec.structs.replace(
                    rollout.state,
                    approval=encode_envelope(approval).decode(),
                    approved_at_ns=approved_at,
                ),
                self.clock,
            )
        claimed = await self._claim(rollout.state, revision)
        if claimed is None:
            raise RolloutError(f"{flag_id}: another rollout was started meanwhile; check status")
        return await self._act(rollout, actions, claimed)

    async def _approval_used(
        self, flag_id: str, approval: Envelope, current: RolloutState | None
    ) -> str:
        """Why `approval` starts nothing now ("" if it is unused): the last rollout of the
        flag was started with it, or a committed change of the flag (a stage of an earlier
        rollout, its proof) carried it. A second person approved one rollout: aborted, it
        is not started again by the requester alone within the approval's hour."""
        payload = approval.payload_bytes()
        if current is not None and current.approval:
            try:
                stored = decode_approval_file(current.approval.encode(), "stored approval")
                earlier = stored.payload_bytes()
            except (TrustError, ReleaseInputError):
                earlier = b""
            if earlier == payload:
                return (
                    f"rollout of {flag_id}: this approval was used already, by rollout "
                    f"{current.rollout_id} ({current.status}, started by {current.started_by}); "
                    "an approval is of one rollout: ask for a new one"
                )
        try:
            changes = changes_of(flag_id, await self.plane.records(Bucket.FLAGS))
        except StateUnavailable as exc:
            raise RolloutError(
                f"rollout of {flag_id}: {exc}; whether this approval was used already cannot "
                "be told, so it starts nothing (fail closed)"
            ) from None
        change = carried_by(payload, changes)
        if change is None:
            return ""
        return (
            f"rollout of {flag_id}: this approval was used already, by revision "
            f"{change.revision} ({'on' if change.value else 'off'} by {change.actor}); an "
            "approval is of one rollout: ask for a new one"
        )

    async def _existing(self, flag_id: str) -> tuple[RolloutState, int]:
        state, revision = await self.load(flag_id)
        if state is None:
            raise RolloutError(f"{flag_id}: no rollout")
        return state, revision

    async def step(self, flag_id: str) -> RolloutState:
        """One judgement of the exposed nodes' health: promote, hold, complete or abort."""
        state, revision = await self._existing(flag_id)
        rollout = Rollout(state, self.clock)
        # not the approved plan running, or its stages no longer in the state (the nodes
        # refuse the rest): no promotion, back to the safe default
        event, code, why = "", "", ""
        if unapproved := self.unapproved(state):
            event, code, why = "ROLLOUT_REFUSED", "rollout_unapproved", unapproved
        elif overtaken := await self.overtaken(state):
            event, code, why = "ROLLOUT_OVERTAKEN", "rollout_overtaken", overtaken
        if why:
            log.error("%s %s %s", event, state.rollout_id, why)
            actions = rollout.abort(f"{code}: {why}")
            claimed = await self._claim_stop(rollout, actions, revision)
            if claimed is None:
                return (await self._existing(flag_id))[0]
            return await self._act(rollout, actions, claimed)
        metrics = await self.metrics()
        if unheard := self.unheard(state, metrics):
            log.info("ROLLOUT_WARMING %s not heard from yet: %s", state.rollout_id, unheard)
            return state  # nothing judged, nothing recorded: the next step judges
        actions = rollout.step(metrics)
        if rollout.state == state:
            return state  # holding: nothing to record
        moved = rollout.state.status is RolloutStatus.COMPLETED or (
            rollout.state.status is RolloutStatus.PROGRESSING
            and rollout.state.stage_index > state.stage_index
        )
        if moved and (unconfirmed := await self.unconfirmed(state)):
            # a node that did not take its stage sits at the safe default: no promotion
            log.warning("ROLLOUT_UNCONFIRMED %s %s", state.rollout_id, unconfirmed)
            held = _held(state, metrics, f"{_UNCONFIRMED}: {unconfirmed}", self.clock)
            if held == state:
                return state
            actions, rollout = [], Rollout(held, self.clock)
        if rollout.state.status is RolloutStatus.PROGRESSING:
            try:  # a promotion adds risk: hold while a kill is in force (an abort passes)
                await refuse_if_frozen(self.plane, f"promotion of {flag_id}", self.killswitch.trust)
            except FrozenByKill as exc:
                log.warning("ROLLOUT_HELD %s", exc)
                return state
        claimed = await self._claim_stop(rollout, actions, revision)
        if claimed is None:
            return (await self._existing(flag_id))[0]  # moved on meanwhile: theirs stands
        return await self._act(rollout, actions, claimed)

    async def overtaken(self, state: RolloutState) -> str:
        """Why the flag state no longer holds a progressing rollout's stages ("": it does).

        Every node a stage switched on must hold the target value by a change of this
        rollout (with an approval: one whose signed `rollout_id` is this rollout's). A
        `flags set` over them ended the rollout on every node, which refuses its later
        stages as `replayed`; before, the driver recorded those refused stages as
        switched on and kept promoting. A state that cannot be read holds nothing."""
        if state.status is not RolloutStatus.PROGRESSING or not state.switched_on:
            return ""
        key = state_key(state.flag_id)
        stored, _ = await self.plane.get_record(Bucket.FLAGS, key)
        if stored is None:
            return f"the flag state record {key!r} is gone; the nodes hold none of its stages"
        try:
            flags = decode_state(state.flag_id, stored)
        except StateUnavailable as exc:
            return f"{exc}; the nodes hold none of its stages"
        for node in state.switched_on:
            value = flags.value_for(node)
            decision = claimed_away(flags.proofs.get(node, ""))
            if value != state.target_value:
                held = "no value (the safe default)" if value is None else _on(value)
            elif state.approval and (decision is None or decision.rollout_id != state.rollout_id):
                by = "" if decision is None else f" by {decision.actor}"
                of = "" if decision is None or not decision.rollout_id else decision.rollout_id
                held = f"{_on(value)} by another change{by}" + (f" (rollout {of})" if of else "")
            else:
                continue
            return (
                f"flag state revision {flags.revision}: {node} holds {held}, not a stage of "
                f"rollout {state.rollout_id}; the nodes refuse its later stages, so it is "
                "not promoted"
            )
        return ""

    async def unconfirmed(self, state: RolloutState) -> str:
        """Which exposed nodes have not confirmed the flag state their stage is in, each
        with its refusal if it published one ("": every one has); waits up to `confirm_s`
        (not again while the rollout already holds for them).

        A node confirms a revision by its own durable `applied` record (`AppliedWaiter`):
        the revision of the flag state now, or later. A state that cannot be read is
        confirmed by no node."""
        if not state.exposed:
            return ""
        stored, _ = await self.plane.get_record(Bucket.FLAGS, state_key(state.flag_id))
        if stored is None:
            return f"the flag state record {state_key(state.flag_id)!r} is gone"
        try:
            revision = decode_state(state.flag_id, stored).revision
        except StateUnavailable as exc:
            return str(exc)
        t0 = self.clock.monotonic_ns()
        records = await self.plane.records(Bucket.FLAGS)
        pending = [n for n in state.exposed if _applied(records, state.flag_id, n) < revision]
        if not pending:
            return ""  # confirmed before this driver listened (a `rollout step` process)
        if not self._listening:
            await self._waiter.start()
            self._listening = True
        # waited once per hold: a step held for them still judges the gates every tick
        wait_s = 0.0 if state.hold_reason.startswith(_UNCONFIRMED) else self.confirm_s
        _, missing = await self._waiter.wait(state.flag_id, revision, pending, t0, wait_s)
        if not missing:
            return ""
        refusals = {m.node_id: m.last_refusal for m in await self.plane.members()}
        parts = []
        for node in missing:
            if node in self._waiter.unread:
                why = f"its confirmation could not be read ({self._waiter.unread[node]})"
            else:
                why = _refused(refusals, state.flag_id, node) or (
                    f"no confirmation within {self.confirm_s:g} s"
                )
            parts.append(f"{node} ({why})")
        return (
            f"flag state revision {revision} not confirmed by {'; '.join(parts)}; "
            "those nodes may be at the safe default, so the rollout holds (no promotion, "
            "not completed)"
        )

    async def switched_off(self, state: RolloutState, wait_s: float) -> Confirmations:
        """After an abort: the exposed nodes that have not confirmed the flag state (the
        switch-off, or a later revision) within `wait_s`, each with its refusal if it
        published one. The switch-off went out already: this only waits to report it (an
        abort said "aborted" whether or not a partitioned node stayed on the new path)."""
        if state.status is not RolloutStatus.ABORTED or not state.exposed:
            return Confirmations(0, {})
        if not self._listening:  # before the records are read: no confirmation falls between
            await self._waiter.start()
            self._listening = True
        t0 = self._monotonic.monotonic_ns()
        records = await self.plane.records(Bucket.FLAGS)
        now = confirmations(state, records, ())
        if not now.missing or not now.revision:
            return now  # confirmed, or no flag state to confirm (named as such)
        _, missing = await self._waiter.wait(
            state.flag_id, now.revision, list(now.missing), t0, wait_s
        )
        refusals = {m.node_id: m.last_refusal for m in await self.plane.members()}
        why = {
            node: (
                f"its confirmation could not be read ({self._waiter.unread[node]})"
                if node in self._waiter.unread
                else _refused(refusals, state.flag_id, node)
                or f"no confirmation within {wait_s:g} s"
            )
            for node in missing
        }
        return Confirmations(now.revision, why)

    def unapproved(self, state: RolloutState) -> str:
        """Why a progressing rollout's stored state is not what was approved (empty: it is).

        A promotion is the approved plan running, not a new decision: the stored approval
        must still name this flag, value, requester and plan digest, signed by a person
        with the approver role other than the requester, unexpired when the rollout
        started, by a key still valid now (revoked or rotated out after the start, it
        no longer carries the later stages: the nodes refuse them too), and be who the
        state names as approver. A rollout without an approval may name no approver
        (the activation gate's policy then decides each stage)."""
        if state.status is not RolloutStatus.PROGRESSING:
            return ""
        if not state.approval:
            return (
                f"it names approver {state.approver} without an approval" if state.approver else ""
            )
        try:
            envelope = decode_approval_file(state.approval.encode(), "stored approval")
            approver = check_approval(
                envelope,
                self.killswitch.trust.roster,
                kind=ApprovalKind.ROLLOUT,
                flag_id=state.flag_id,
                value=state.target_value,
                nodes=None,
                requester=state.started_by,
                now_ns=state.approved_at_ns,
                digest=plan_digest(state.plan),
                keys_valid_ns=self.clock.time_ns(),
            )
        except TrustError as exc:
            return f"the stored plan or state does not match its approval ({exc})"
        if approver != state.approver:
            return f"it names approver {state.approver}, the approval is {approver}'s"
        if self.clock.time_ns() - state.approved_at_ns > ROLLOUT_SPAN_NS:
            return (
                f"it started more than {ROLLOUT_SPAN_NS // 3_600_000_000_000} h ago "
                f"(approved_at_ns {state.approved_at_ns}): its approval carries no later "
                "stage (the nodes refuse them too); ask for a new one"
            )
        return ""

    async def abort(self, flag_id: str, reason: str) -> RolloutState:
        """Abort; if a driver moves the rollout on meanwhile, abort what it moved to.

        An aborted rollout whose abort did not fully land (its switch-off or a halt
        failed: `failed_actions`) is aborted again, its actions tried again: the stop
        direction is never refused as "already aborted" with the nodes still on."""
        for _ in range(_ABORT_ATTEMPTS):
            state, revision = await self._existing(flag_id)
            if state.status is RolloutStatus.ABORTED and failed_actions(state):
                again = Rollout(
                    msgspec.structs.replace(state, status=RolloutStatus.PROGRESSING), self.clock
                )
                actions = again.abort(f"operator, again (the last abort did not land): {reason}")
                rollout = Rollout(
                    msgspec.structs.replace(again.state, abort_reason=state.abort_reason),
                    self.clock,
                )
            elif state.status is not RolloutStatus.PROGRESSING:
                raise RolloutError(
                    f"{flag_id}: rollout {state.rollout_id} is already {state.status}"
                )
            else:
                rollout = Rollout(state, self.clock)
                actions = rollout.abort(f"operator: {reason}")
            claimed = await self._claim_stop(rollout, actions, revision)
            if claimed is not None:
                return await self._act(rollout, actions, claimed)
        raise RolloutError(f"{flag_id}: rollout kept changing; abort not recorded, try again")

    async def run(self, flag_id: str, *, tick_s: float, timeout_s: float) -> RolloutState:
        """Step until the rollout completes or aborts (here or from another terminal)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            state = await self.step(flag_id)
            if state.status is not RolloutStatus.PROGRESSING or loop.time() >= deadline:
                return state
            await asyncio.sleep(tick_s)

    async def _act(
        self, rollout: Rollout, actions: Sequence[RolloutAction], claimed: int
    ) -> RolloutState:
        """Act on a state already claimed at revision `claimed`, then record the outcome.

        The caller claims first (compare-and-swap on the revision its step was
        computed from), so a concurrent `abort` sees every node this step is
        about to expose. If the outcome cannot be recorded, someone else's
        decision stands and is returned; if that is an abort made while this
        step was switching nodes on, those nodes are put back to the safe default
        here too (the abort's switch-off may have landed before this switch-on).
        """
        if not actions:
            return rollout.state
        await self._run_actions(rollout, actions)
        try:
            recorded = await self._claim(rollout.state, claimed)
        except ControlPlaneUnavailable as exc:
            if rollout.state.status is not RolloutStatus.ABORTED:
                raise
            raise _unrecorded(rollout.state, exc) from None
        if recorded is not None:
            return rollout.state
        flag_id = rollout.state.flag_id
        theirs = (await self._existing(flag_id))[0]
        if theirs.status is RolloutStatus.ABORTED and theirs.exposed:
            back = SetFlag(
                flag_id,
                not theirs.target_value,
                theirs.exposed,
                f"rollout {theirs.rollout_id} aborted",
            )
            await self._run_actions(Rollout(theirs, self.clock), [back])
        return theirs

    async def _run_actions(self, rollout: Rollout, actions: Sequence[RolloutAction]) -> None:
        gate = ActivationGate(
            self.registry,
            await fleet_snapshot(self.plane, self.clock),
            PlaneFlagStore(self.plane, self.clock),
            self.clock,
            self.policy,
            sealer=FlagSealer(self.killswitch.signer, self.killswitch.trust.roster),
        )
        runner = RolloutRunner(
            gate,
            _KillSwitchHalts(self.killswitch, asyncio.get_running_loop()),
            f"{socket.gethostname()} knightwatch-rollout",
        )
        await asyncio.to_thread(runner.execute, rollout, actions)

    async def _claim_stop(
        self, rollout: Rollout, actions: Sequence[RolloutAction], revision: int
    ) -> int | None:
        """`_claim`; an abort whose record the store refused or did not answer still acts
        (the stop direction never waits on a record) and raises `RolloutError` saying so."""
        try:
            return await self._claim(rollout.state, revision)
        except ControlPlaneUnavailable as exc:
            if rollout.state.status is not RolloutStatus.ABORTED:
                raise
            log.error("ROLLOUT_ABORT_UNRECORDED %s %s", rollout.state.rollout_id, exc)
            await self._run_actions(rollout, actions)
            raise _unrecorded(rollout.state, exc) from None

    async def _claim(self, state: RolloutState, revision: int) -> int | None:
        """Write `state` if the record is still at `revision`; its new revision, or None."""
        try:
            return await self.plane.put_record(
                Bucket.ROLLOUTS, state.flag_id, _ENC.encode(state), expected_revision=revision
            )
        except RevisionConflict:
            return None


def _unrecorded(state: RolloutState, exc: Exception) -> RolloutError:
    """An abort that acted but whose record was not stored, saying what went out."""
    failed = [e.detail for e in failed_actions(state)]
    exposed = ", ".join(state.exposed) or "no node"
    went = (
        f"switch-off of {exposed} sent; failed: {'; '.join(failed)}"
        if failed
        else f"{exposed} switched back to the safe default"
    )
    return RolloutError(
        f"{state.flag_id}: rollout {state.rollout_id} aborted, abort not recorded ({exc}); "
        f"{went}; the rollout record does not hold this abort's outcome: abort again once "
        "the store takes writes, or set the flag to its safe default (`knightwatch flags set`) "
        "or kill"
    )


def _refused(refusals: Mapping[str, str], flag_id: str, node: str) -> str:
    """`node`'s published refusal of a revision of `flag_id` ("refused: ..."), or ""."""
    refusal = refusals.get(node, "")
    return f"refused: {refusal}" if refusal.startswith(f"{flag_id} r") else ""


class Confirmations(NamedTuple):
    """The exposed nodes of a rollout that have not confirmed the flag state as the store
    holds it now (`confirmations`; after an abort, `RolloutDriver.switched_off`)."""

    revision: int
    """The flag state's revision (0: there is none, or it cannot be read)."""
    missing: dict[str, str]
    """Per node that has not confirmed it, why: its refusal, or what it confirmed."""

    def text(self, meaning: str = "those nodes may be at the safe default") -> str:
        """One line naming each node and why, then `meaning` ("": every one confirmed)."""
        if not self.missing:
            return ""
        at = f" revision {self.revision}" if self.revision else ""
        nodes = "; ".join(f"{node} ({why})" for node, why in self.missing.items())
        return f"flag state{at} not confirmed by {nodes}; {meaning}"


def confirmations(
    state: RolloutState, records: Mapping[str, tuple[bytes, int]], members: Iterable[NodeStatus]
) -> Confirmations:
    """Which nodes the rollout exposed have not confirmed the flag state as stored now
    (their own `applied` record at its revision or later), read and never waited for:
    what `rollout status` shows of a progressing rollout between the driver's steps.
    Before, a node that refused its stage was named only in the hold of a promotion
    judged over it; through the stage's hold the rollout showed healthy, that node at the
    safe default. A flag state that is gone or cannot be read is confirmed by no node."""
    if not state.exposed:
        return Confirmations(0, {})
    key = state_key(state.flag_id)
    stored = records.get(key)
    try:
        if stored is None:
            raise StateUnavailable(f"the flag state record {key!r} is gone")
        revision = decode_state(state.flag_id, stored[0]).revision
    except StateUnavailable as exc:
        return Confirmations(0, dict.fromkeys(state.exposed, str(exc)))
    refusals = {m.node_id: m.last_refusal for m in members}
    missing: dict[str, str] = {}
    for node in state.exposed:
        applied = _applied(records, state.flag_id, node)
        if applied < revision:
            missing[node] = _refused(refusals, state.flag_id, node) or (
                f"confirmed r{applied}" if applied else "no confirmation"
            )
    return Confirmations(revision, missing)


def _applied(records: Mapping[str, tuple[bytes, int]], flag_id: str, node: str) -> int:
    """The revision `node`'s own durable record says it applied (0: none, or not its own)."""
    stored = records.get(applied_key(flag_id, node))
    if stored is None:
        return 0
    try:
        applied = APPLIED_DECODER.decode(stored[0])
    except UNDECODABLE:
        return 0
    return applied.revision if applied.node == node and applied.flag_id == flag_id else 0


def _held(state: RolloutState, metrics: Metrics, reason: str, clock: _WallClock) -> RolloutState:
    """`state` holding at its stage for `reason` (an event once per hold), its evidence
    baselines noted as the judgement that would have promoted it noted them."""
    baseline = dict(state.stage_baseline)
    for node in state.exposed:
        orders = metrics.get(node, {}).get(ORDERS)
        if node not in baseline and orders is not None:
            baseline[node] = int(orders)
    if state.hold_reason.startswith(_UNCONFIRMED):
        # held for this already: the reason is kept current, the events not grown by it
        return msgspec.structs.replace(state, stage_baseline=baseline, hold_reason=reason)
    event = RolloutEvent(
        clock.time_ns(), "held", f"stage {state.plan.stages[state.stage_index].name}: {reason}"
    )
    return msgspec.structs.replace(
        state, stage_baseline=baseline, hold_reason=reason, events=(*state.events, event)
    )


def _on(value: bool) -> str:
    return "on" if value else "off"


def rollout_metrics(
    health: Mapping[str, NodeHealth],
    published: Mapping[str, NodeMetrics],
    members: Iterable[NodeStatus],
) -> Metrics:
    """What a rollout judges each node on, live and in the replay alike.

    The supervisor's health gauges (the gates), plus the evidence a stage needs
    before it may promote: orders sent (from the node's last published
    metrics), whether it is admitted (same), and whether it is halted (its
    membership record's trading state). A node with no membership record counts
    as halted, so missing evidence holds a rollout rather than promoting it.
    """
    states = {s.node_id: s.node_state for s in members}
    gauges = gate_metrics(health)
    out: dict[str, dict[str, float]] = {}
    for node in gauges.keys() | published.keys():
        row = dict(gauges.get(node, {}))
        m = published.get(node)
        if m is not None:
            row[ORDERS] = float(m.orders)
            row[ADMITTED] = 1.0 if m.admitted else 0.0
        row[HALTED] = 0.0 if states.get(node) is TradingState.ACTIVE else 1.0
        out[node] = row
    return out
