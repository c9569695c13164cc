"""A resume ramps back in stages and trips back to HALTED on the first sign of trouble.

"You don't turn trading back on because dashboards look calm": a resumed scope
first trades at a fraction of its rate, notional and exposure limits (10% for
five minutes, then 50%, then 100% by default), applied by every node's Guard
through a durable ramp record stored *before* the resume, so no node trades
the scope at full limits first. While it ramps, any halt in the scope (the
supervisor's alert, the Guard's own automatic halt, an operator's kill) or a
spike of blocked orders trips it: one kill of the scope, a page, and the
reason recorded on the ramp. Nobody needs a second person to trip it.

The resume a ramp applies is a signed request approved by a second person
(`RampController.apply` takes it as approved; nodes verify both signatures
before they trade again), so ramping changes nothing about who may resume.
The request carries the ramp's stages and both people sign them: the
controller walks those stages (its own plan gives only the trip rules), and
every node holds them by its own clock from when it applies the resume, so
neither person can shorten the ramp afterwards (an early or forged "done"
record changes nothing before the signed stages have run).

A scope's slot holds one ramp record, and one ramp writes it: stage one only over
the record read before the halt was checked, every later write only over the
ramp's own last write (compare-and-set). Two approvals of two requests for the
same halt (the CLI and a console) can both store stage one, but only one resume is
issued: the other approval's "tripped: resume not issued" lands only over its own
record, and the ramp whose resume the slot holds takes the record back from a
ramp that never resumed. Before, the loser wrote "tripped" over the running ramp
and every reader showed it tripped while the scope traded.

A ramp is complete when its "done" is stored, but what it reports is what the nodes
hold: each node's next metrics after "done" must show full limits, and the outcome
names every node that does not (`RampOutcome.held`). Nodes that refuse its records
(a key expired mid-ramp) hold 10%, and before, `approve` said "full limits" all the same.

`RampWatch` is the pure decision (stages, trip rules), shared by the live
`RampController` and the replay, so the two cannot disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Collection, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from knightwatch.clock import NS_PER_S, Clock
from knightwatch.control.fleet.freeze import held
from knightwatch.control.fleet.killswitch import CommandResult, KillSwitch, KillSwitchError
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import Action, Rule
from knightwatch.control.fleet.supervisor_service import outcome as kill_outcome
from knightwatch.control.plane.protocol import (
    ABSENT,
    Bucket,
    ControlPlane,
    ControlPlaneUnavailable,
    RevisionConflict,
    Unsubscribe,
)
from knightwatch.control.plane.wire import (
    ENCODER,
    RAMP_DECODER,
    NodeMetrics,
    RampRecord,
    StateEntry,
    slot_of,
)
from knightwatch.decision import RejectReason
from knightwatch.errors import KnightwatchError
from knightwatch.inputs import UNDECODABLE, InputFileError, load_toml
from knightwatch.limits import ramp_percent, scaled_percent
from knightwatch.release.keys import SigningKey
from knightwatch.state import Scope, TradingState, scope_key, split_pair
from knightwatch.trust.command import MIN_HOLD_S, Refused, ramp_problem
from knightwatch.trust.identity import Signer
from knightwatch.trust.rampproof import check_ramp
from knightwatch.trust.roster import Roster

log = logging.getLogger(__name__)

T = TypeVar("T")

LATCH_BLOCKS = frozenset(
    {
        RejectReason.NOT_ARMED.value,
        RejectReason.LEASE_EXPIRED.value,
        RejectReason.HALTED.value,
        RejectReason.REDUCING_ONLY.value,
    }
)
"""Blocks that say the scope is stopped, not that the flow misbehaves: no trip on these."""

RESCAN_S = 1.0
"""How often a running ramp reads every stored halt again (announcements can be lost)."""

HEARTBEAT_S = 5.0
"""How often a running ramp writes its record again while a stage holds (its `since_ns`
then the time of that write): the driver's heartbeat, which `status` reads."""

DRIVER_SILENT_S = 30.0
"""A ramping record not written for this long: its driver is taken as gone (`driver_silent`).
Six heartbeats, so a slow store or a driver's wall clock some seconds behind is not read as
a dead driver."""


class RampError(KnightwatchError, ValueError):
    """A ramp plan or a ramp that cannot go ahead; the message names the field or node."""


class Stage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    fraction: float
    hold_s: float


class RampPlan(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Stages (fraction of the limits, seconds held) and what trips the ramp.

    The last stage must be 1.0 (full limits); its hold is how long the trip
    stays armed after reaching it. A spike is, on one node over one metrics
    interval, at least `spike_min_blocks` non-latch blocks at a rate of at
    least `spike_blocks_per_s`, making up at least `spike_ratio` of its
    orders: a runaway hitting the stage's limits, not a normal flow trimmed by
    them (that one is blocked at a fraction of its own, modest rate).
    """

    stages: tuple[Stage, ...] = (Stage(0.1, 300.0), Stage(0.5, 300.0), Stage(1.0, 60.0))
    spike_min_blocks: int = 20
    spike_blocks_per_s: float = 100.0
    spike_ratio: float = 0.5
    apply_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        problems = []
        # the stages meet what a resume may carry, since a request signs them in
        stages = (
            ramp_problem(self.signed, "stages") if self.stages else "stages: at least one stage"
        )
        if stages is not None:
            problems.append(stages)
        else:
            stages = _pace_problem(self.stages)
            if stages is not None:
                problems.append(stages)
        if self.spike_min_blocks < 1:
            problems.append(f"spike_min_blocks: must be >= 1 (got {self.spike_min_blocks})")
        # written so that NaN fails each rule (it passes every comparison made the other way)
        if not (0 < self.spike_blocks_per_s < math.inf):
            problems.append(
                f"spike_blocks_per_s: must be a finite number > 0 (got {self.spike_blocks_per_s})"
            )
        if not 0.0 < self.spike_ratio <= 1.0:
            problems.append(f"spike_ratio: must be in (0, 1] (got {self.spike_ratio})")
        if not (0 < self.apply_timeout_s <= 300):
            problems.append(f"apply_timeout_s: must be in (0, 300] (got {self.apply_timeout_s})")
        if problems:
            raise RampError("ramp: " + "; ".join(problems))

    @property
    def fractions(self) -> tuple[float, ...]:
        return tuple(st.fraction for st in self.stages)

    @property
    def signed(self) -> tuple[tuple[float, float], ...]:
        """The stages as a resume request carries them (`StateEntry.ramp`)."""
        return tuple((st.fraction, st.hold_s) for st in self.stages)

    def following(self, entry: StateEntry) -> RampPlan:
        """This plan's trip rules with the stages `entry` was signed with (the requester's
        and the approver's), or this plan as it is for a resume that carries none."""
        if not entry.ramp:
            return self
        return msgspec.structs.replace(self, stages=tuple(Stage(f, h) for f, h in entry.ramp))

    def describe(self) -> str:
        """`10% for 300 s, 50% for 300 s, then 100%`."""
        return describe_ramp(self.signed)

    @classmethod
    def from_toml(cls, path: Path) -> RampPlan:
        """The `[ramp]` table of a TOML file; errors name the file and field."""
        try:
            data = load_toml(path, "ramp config")
        except InputFileError as exc:
            raise RampError(str(exc)) from None
        table = data.get("ramp")
        if not isinstance(table, dict):
            raise RampError(f"{path}: needs a [ramp] table")
        try:
            return msgspec.convert(table, cls)
        except msgspec.ValidationError as exc:
            raise RampError(f"{path}: [ramp] {exc}") from None
        except RampError as exc:
            raise RampError(f"{path}: {exc}") from None

    @classmethod
    def instant(cls, fractions: Sequence[float], hold_s: float, **rest: Any) -> RampPlan:
        """Equal holds for each fraction (drills and tests)."""
        return cls(stages=tuple(Stage(f, hold_s) for f in fractions), **rest)


def _pace_problem(stages: tuple[Stage, ...]) -> str | None:
    """What a plan must hold beyond what a resume may carry: every stage above the one
    before and held at least `MIN_HOLD_S`. A stage held 0 s (or 1e-300 s) is skipped (a
    10% stage of 0 s is a resume at full limits at once), and a last stage held 0 s
    never arms the trip at full limits; a repeated fraction is no step up."""
    for i, st in enumerate(stages):
        if not st.hold_s >= MIN_HOLD_S:  # NaN fails it too
            return f"stages[{i}].hold_s: must be >= {MIN_HOLD_S:g} s (got {st.hold_s})"
        if i and not st.fraction > stages[i - 1].fraction:
            return (
                f"stages[{i}].fraction: must be above the stage before "
                f"({stages[i - 1].fraction}, got {st.fraction})"
            )
    return None


def describe_ramp(ramp: tuple[tuple[float, float], ...]) -> str:
    """A signed ramp in words: `10% for 300 s, 50% for 300 s, then 100%` ("-": none)."""
    if not ramp:
        return "-"
    steps = [f"{fraction:.0%} for {hold_s:g} s" for fraction, hold_s in ramp[:-1]]
    return ", ".join([*steps, "then 100%"]) if steps else "100% at once"


def _in_scope(scope: Scope, key: str, entry: StateEntry) -> bool:
    """Whether a halt of `entry` stops some of what the ramping scope trades."""
    if scope is Scope.FLEET or entry.scope is Scope.FLEET or entry.scope is Scope.NODE:
        return True  # a fleet ramp covers every node; any node halt lands in it
    if entry.scope is scope:
        return entry.key == key
    if scope is Scope.STRATEGY and entry.scope is Scope.STRATEGY_SYMBOL:
        return split_pair(entry.key)[0] == key
    if scope is Scope.SYMBOL and entry.scope is Scope.STRATEGY_SYMBOL:
        return split_pair(entry.key)[1] == key
    if scope is Scope.STRATEGY_SYMBOL and entry.scope in (Scope.STRATEGY, Scope.SYMBOL):
        # a halt of the pair's strategy, or of its symbol, stops all of what the pair trades
        strategy, symbol = split_pair(key)
        return entry.key == (strategy if entry.scope is Scope.STRATEGY else symbol)
    return scope is Scope.NODE


class RampWatch:
    """The ramp's decisions: which stage applies when, and whether anything trips it.

    `known`: the command ids of the halts in force when the watch started (the live
    controller reads them from the store). With it, every other halt in the scope trips
    the ramp whatever its date: a halt is dated by its issuer's clock, so one a node
    whose clock runs behind ours raised just after the resume, and an entry that cannot
    be decoded (dated 0, held as a halt by every node), were dated "before the ramp" and
    passed unseen. Without it (the replay: one clock for everyone), a halt dated before
    `start_ns` is one that was there already.
    """

    def __init__(
        self,
        scope: Scope,
        key: str,
        plan: RampPlan,
        start_ns: int,
        nodes: Sequence[str],
        *,
        known: Collection[str] | None = None,
    ) -> None:
        self.scope = scope
        self.key = key
        self.plan = plan
        self.start_ns = start_ns
        self.nodes = frozenset(nodes)
        self.known = frozenset(known) if known is not None else None
        self.tripped = ""
        self._last: dict[str, NodeMetrics] = {}

    def stage_at(self, now_ns: int) -> int | None:
        """The stage index in force at `now_ns`; None once the last stage's hold is over."""
        t = self.start_ns
        for i, st in enumerate(self.plan.stages):
            t += int(st.hold_s * NS_PER_S)
            if now_ns < t:
                return i
        return None

    def on_state(self, entry: StateEntry) -> str:
        """A stored or announced entry: a halt in the scope trips the ramp (returns why)."""
        if self.tripped or entry.state is TradingState.ACTIVE:
            return ""
        if self.known is not None:
            if entry.command_id in self.known:
                return ""  # in force before the ramp (a node staying halted; a re-announcement)
        elif entry.issued_ns < self.start_ns:
            return ""
        if not _in_scope(self.scope, self.key, entry):
            return ""
        if entry.scope is Scope.NODE and self.nodes and entry.key not in self.nodes:
            return ""
        if entry.actor.startswith("guard:"):
            kind = "Guard automatic halt"
        elif entry.actor == "supervisor":
            kind = "supervisor alert"
        else:
            kind = f"halt by {entry.actor}"
        self.tripped = f"{kind} {entry.scope.value} {entry.key!r}: {entry.reason}"
        return self.tripped

    def on_metrics(self, m: NodeMetrics) -> str:
        """A node's counters: a block-rate spike over its last interval trips the ramp."""
        if self.tripped or (self.nodes and m.node_id not in self.nodes):
            return ""
        before = self._last.get(m.node_id)
        self._last[m.node_id] = m
        if before is None:
            return ""
        orders = m.orders - before.orders
        blocks = sum(
            n - before.blocks.get(reason, 0)
            for reason, n in m.blocks.items()
            if reason not in LATCH_BLOCKS
        )
        span_s = max((m.at_ns - before.at_ns) / NS_PER_S, 1e-9)
        if (
            blocks >= self.plan.spike_min_blocks
            and blocks / span_s >= self.plan.spike_blocks_per_s
            and blocks >= self.plan.spike_ratio * max(orders, 1)
        ):
            worst = max(
                (r for r in m.blocks if r not in LATCH_BLOCKS),
                key=lambda r: m.blocks[r] - before.blocks.get(r, 0),
            )
            self.tripped = (
                f"block-rate spike on node {m.node_id}: {blocks} of {orders} orders blocked "
                f"in {(m.at_ns - before.at_ns) / 1e9:.2f}s (mostly {worst})"
            )
        return self.tripped

    def would_trip(self) -> str:
        """What trips it, for `approve` as the ramp starts."""
        return (
            "any halt in the scope (supervisor alert, Guard automatic halt, operator kill); "
            + self.spike()
        )

    def spike(self) -> str:
        """Its block-rate spike rule in words."""
        return (
            f">= {self.plan.spike_min_blocks} blocked orders on one node in one interval, "
            f">= {self.plan.spike_blocks_per_s:g}/s and "
            f">= {self.plan.spike_ratio:.0%} of its orders"
        )


class RampOutcome(msgspec.Struct, frozen=True):
    """How a ramp ended: completed, or tripped (when, at which stage, why, the kill).

    `held`: for a completed ramp, each node of its scope not trading at full limits
    once "done" was stored, with the percent of its limits it reported (None: none
    reported since). A node that refuses the ramp's records (a key expired mid-ramp)
    holds 10%, and another scope's ramp or a node that joined mid-ramp (it holds the
    signed stages from its start) can hold it lower too: "done" stored is not full
    limits on every node."""

    ramp_id: str
    completed: bool
    stage: int
    fraction: float
    trip_reason: str
    resume: CommandResult | None
    trip: CommandResult | None
    started_ns: int
    ended_ns: int
    held: tuple[tuple[str, int | None], ...] = ()

    def short_of(self) -> str:
        """`held` in words ("" when every node trades at full limits)."""
        return _in_words(self.held)


def _in_words(held: Sequence[tuple[str, int | None]]) -> str:
    """`n1 holds 10% of its limits, n2 reported no limits since 'done' was stored`."""
    return ", ".join(
        f"{node} reported no limits since 'done' was stored"
        if percent is None
        else f"{node} holds {percent}% of its limits"
        for node, percent in held
    )


class RampController:
    """Runs one resume as a ramp on a live control plane."""

    def __init__(
        self,
        plane: ControlPlane,
        killswitch: KillSwitch,
        clock: Clock,
        plan: RampPlan,
        *,
        pager: Pager | None = None,
        on_stage: Callable[[RampRecord], None] | None = None,
        on_resumed: Callable[[CommandResult], None] | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        """`on_stage` hears each stage as it is stored (once: not its heartbeats);
        `on_resumed` the resume's result once it was applied (the ramp then runs on for its
        stages); `heartbeat_s`: how often a held stage's record is written again."""
        self.on_resumed = on_resumed
        self.heartbeat_s = heartbeat_s
        self._told: tuple[str, int, str] | None = None
        """The ramp, stage and status `on_stage` last heard (a heartbeat is not told)."""
        self.plane = plane
        self.ks = killswitch
        self.clock = clock
        self.plan = plan
        self.pager = pager
        self.on_stage = on_stage
        self._metrics: dict[str, NodeMetrics] = {}
        self._heard: dict[str, int] = {}
        """How many metrics reports each node sent while the watch listened."""
        self._watch: RampWatch | None = None
        self._tripped = asyncio.Event()
        self._drops: list[Unsubscribe] = []
        """The live subscriptions of a running `apply`, dropped when its watch ends."""
        self._rev = ABSENT
        """The revision of this ramp's last write of its record (what the next one must find)."""
        self._unstored: RampRecord | None = None
        """This ramp's latest record while the store has not taken it (it did not answer):
        written again at every rescan, and the ramp is not over until its "done" is stored."""

    async def _on_metrics(self, m: NodeMetrics) -> None:
        self._metrics[m.node_id] = m
        self._heard[m.node_id] = self._heard.get(m.node_id, 0) + 1
        if self._watch is not None and self._watch.on_metrics(m):
            self._tripped.set()

    async def _on_state(self, entry: StateEntry) -> None:
        if self._watch is not None and self._watch.on_state(entry):
            self._tripped.set()

    async def _subscribe(self) -> None:
        if not self._drops:
            self._drops.append(await self.plane.subscribe_metrics(self._on_metrics))
            self._drops.append(await self.plane.subscribe_states(self._on_state))

    async def _unsubscribe(self) -> None:
        """Drop the watch's subscriptions (the ramp is over: tripped, done or refused). A
        controller on a long-lived link (a console session's) kept them for good, and
        every metrics message called them all. What it heard goes with them: a later
        `apply` waits for metrics heard anew, as a new controller does."""
        drops, self._drops = self._drops, []
        for drop in drops:
            await drop()
        self._metrics.clear()
        self._heard.clear()

    async def _halts(self) -> dict[str, tuple[StateEntry, int]]:
        """Every stored slot as readers hold it (a deleted entry is a halt of its slot)."""
        return held(await self.plane.states())

    async def _rescan(self) -> None:
        """Feed every stored halt to the watch, as if announced. A halt's announcement is
        at most once: one stored while this connection was down (a reconnect, a slow
        consumer), or while the halts in force were being read at the start, was never
        heard, and the ramp stepped up to full limits past it and said "complete". The
        store is read again instead; one that cannot be read now is read next time."""
        if self._watch is None:
            return
        try:
            stored = await self._halts()
        except ControlPlaneUnavailable as exc:
            log.warning("ramp: the kill-state store could not be read again (%s)", exc)
            return
        for entry, _ in sorted(stored.values(), key=lambda x: x[1]):
            if self._watch is not None and self._watch.on_state(entry):
                self._tripped.set()

    async def _put(self, record: RampRecord, expected: int) -> None:
        """Store `record` signed by this switch's signer for its roster's fleet (nodes verify
        both before taking it), only over revision `expected` of the slot
        (`RevisionConflict` otherwise)."""
        signed = signed_for(record, self.ks.signer.key, self.ks.trust.roster)
        self._rev = await self.plane.put_record(
            Bucket.RAMP,
            slot_of(record.scope, record.key),
            ENCODER.encode(signed),
            expected_revision=expected,
        )
        told = (record.ramp_id, record.stage, record.status)
        if told != self._told:
            self._told = told
            _tell(self.on_stage, record, "on_stage")

    async def _holder(self, record: RampRecord) -> tuple[str, int]:
        """Whose record the slot holds now (its ramp id, or why none can be named) and
        its revision."""
        value, revision = await self.plane.get_record(
            Bucket.RAMP, slot_of(record.scope, record.key)
        )
        if value is None:
            return "a deleted record", revision
        try:
            return f"ramp {RAMP_DECODER.decode(value).ramp_id[:64]!r}", revision
        except UNDECODABLE:
            return "an undecodable record", revision

    async def _put_own(self, record: RampRecord, own: str | None) -> str:
        """Store a later write of this ramp's record, only over its own last write. Returns
        "" once stored, or whose record the slot holds instead (left as it is).

        With `own` (the command id of what this ramp itself stored in the slot's state:
        its resume, or its trip's kill), a record another ramp wrote over ours is taken
        back while the slot's state is still `own`: no other resume has been issued since,
        so that ramp's never was (another approval of the same halt, whose stage one was
        stored just after ours). Without it (a resume not issued), never."""
        for _ in range(3):  # the other ramp writes at most twice: stage one, "tripped"
            try:
                await self._put(record, self._rev)
                return ""
            except RevisionConflict:
                pass
            holder, revision = await self._holder(record)
            if own is None:
                return holder
            state, _ = await self.plane.get_state(record.scope, record.key)
            if state is None or state.command_id != own:
                return holder
            log.warning(
                "RAMP_RECORD_TAKEN_BACK ramp=%s from %s: the slot holds this ramp's %s",
                record.ramp_id,
                holder,
                "resume" if state.state is TradingState.ACTIVE else "trip",
            )
            self._rev = revision
        return (await self._holder(record))[0]

    async def _keep_own(self, record: RampRecord, own: str) -> None:
        """Take the slot's record back if another ramp wrote over it (see `_put_own`); the
        running ramp checks right after its resume and at every rescan."""
        try:
            _, revision = await self.plane.get_record(
                Bucket.RAMP, slot_of(record.scope, record.key)
            )
            if revision != self._rev or self._unstored is not None:
                await self._put_or_say(record, own)
        except ControlPlaneUnavailable as exc:
            log.warning("ramp: its record could not be read again (%s)", exc)

    async def _put_or_say(self, record: RampRecord, own: str) -> None:
        """Store a stage (or the end) of a ramp whose resume is applied; one the store did not
        take is logged, and the watch goes on. Raising here ended `apply` with the resume in
        force and nothing watching it: a halt or a block spike later tripped nothing.

        A record the store did not answer stays `_unstored` (also if this write is cut short)
        and is written again at every rescan. Nodes hold the tighter of the resume's signed
        stages and the slot's record, so they trade at the last stage stored: before, a store
        that did not answer the last stage's and the "done" writes (a leader election, the
        approver's link down) left every node at the stage before for good, while `approve`
        said "complete: full limits" and `status` showed the ramp "ramping", watched by no one."""
        first = self._unstored != record  # said once per record, not at every retry
        self._unstored = record
        try:
            other = await self._put_own(record, own)
            self._unstored = None  # stored, or the slot holds another ramp's: not ours to retry
            if other:
                log.critical(
                    "RAMP_STAGE_NOT_STORED ramp=%s stage=%d status=%s (still watched): "
                    "the slot holds %s, not written over",
                    record.ramp_id,
                    record.stage + 1,
                    record.status,
                    other,
                )
        except ControlPlaneUnavailable as exc:
            if first:
                log.critical(
                    "RAMP_STAGE_NOT_STORED ramp=%s stage=%d status=%s (still watched; "
                    "written again every %g s, nodes hold the last stage stored): %s",
                    record.ramp_id,
                    record.stage + 1,
                    record.status,
                    RESCAN_S,
                    exc,
                )

    async def _applied(self, nodes: Sequence[str], fraction: float, timeout_s: float) -> list[str]:
        """Wait until no node trades looser than the stage; returns those that still do.

        A node trades at the tightest ramp in force on it (another scope's ramp may hold
        it lower), so its limits version shows this stage's fraction or a smaller one:
        either keeps it within the stage. A node at full limits during a partial stage
        has not applied it (nor one that reports no limits version)."""
        stage = ramp_percent(fraction)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s

        def missing() -> list[str]:
            out = []
            for n in nodes:
                m = self._metrics.get(n)
                version = m.limits_version if m is not None else None
                if version is None or scaled_percent(version) > stage:
                    out.append(n)
            return out

        while missing() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return missing()

    async def _held(
        self, nodes: Sequence[str], timeout_s: float
    ) -> tuple[tuple[str, int | None], ...]:
        """The nodes not at full limits once "done" is stored, as each reports it (the
        percent of its limits; None: no limits reported since), waiting at most
        `timeout_s` for them.

        Only a node's second report after "done" was stored counts: the first may have
        been sent before the node took it. Before, the ramp ended on storing "done" and
        `approve` said "complete: full limits" while nodes that refused its records (a key
        expired mid-ramp) still traded at 10%."""
        since = dict(self._heard)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s

        def short() -> tuple[tuple[str, int | None], ...]:
            out: list[tuple[str, int | None]] = []
            for n in nodes:
                m = self._metrics.get(n)
                fresh = m is not None and self._heard.get(n, 0) >= since.get(n, 0) + 2
                version = m.limits_version if fresh and m is not None else ""
                percent = scaled_percent(version) if version else None
                if percent != 100:
                    out.append((n, percent))
            return tuple(out)

        while short() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return short()

    async def resume(
        self,
        scope: Scope,
        key: str,
        reason: str,
        *,
        approvers: Sequence[Signer] = (),
        timeout_s: float = 2.0,
        nodes: Sequence[str] | None = None,
    ) -> RampOutcome:
        """Request a resume, co-sign it with `approvers` in this process, and ramp it.

        Tests, the drill and the replay use this; people use a request and `approve`."""
        entry = await self.ks.request_resume(
            scope, scope_key(scope, key), reason, ramp=self.plan.signed
        )
        for approver in approvers:
            entry = entry.cosigned(approver.key)
        return await self.apply(entry, timeout_s=timeout_s, nodes=nodes)

    async def apply(
        self,
        entry: StateEntry,
        *,
        timeout_s: float = 2.0,
        nodes: Sequence[str] | None = None,
    ) -> RampOutcome:
        """Store stage one, wait for every node to apply it, apply the signed resume `entry`
        (approvals included), then walk the stages: the ones `entry` was signed with,
        this controller's own for a resume that carries none.

        A request decided on a revision the slot no longer holds is refused as stale
        before any stage is stored (`KillSwitchError`). The watch's subscriptions are
        dropped when it ends, however it ends (after a trip's kill is sent)."""
        try:
            return await self._apply(entry, timeout_s, nodes)
        finally:
            await self._unsubscribe()

    async def _apply(
        self, entry: StateEntry, timeout_s: float, nodes: Sequence[str] | None
    ) -> RampOutcome:
        self.plan = self.plan.following(entry)
        scope, key, reason = entry.scope, entry.key, entry.reason
        # the slot's ramp record as it is before the halt is checked: stage one is stored
        # only over it, so not over another approval's stage one stored meanwhile
        _, seen = await self.plane.get_record(Bucket.RAMP, slot_of(scope, key))
        _, revision = await self.plane.get_state(scope, key)
        if revision != entry.decided_on:
            raise KillSwitchError(
                f"resume {entry.command_id[:12]} is stale: {scope.value} {key!r} changed since "
                f"it was decided on (revision {entry.decided_on}, now {revision}); "
                f"request a new one{await self._resumed_by_another(entry)}"
            )
        await self._subscribe()
        self._tripped.clear()
        self._unstored = None
        targets = list(nodes) if nodes is not None else await self.ks.live_nodes()
        if scope is Scope.NODE:
            targets = [key]
        ramp_id = entry.command_id[:12]  # the request id: ramp and request name each other
        start = self.clock.time_ns()
        first = self.plan.stages[0].fraction
        record = RampRecord(
            scope,
            key,
            ramp_id,
            0,
            self.plan.fractions,
            first,
            "ramping",
            entry.actor if entry.actor == self.ks.actor else f"{entry.actor}+{self.ks.actor}",
            reason,
            start,
        )
        # Watched from before stage one is stored: any halt in the scope other than those
        # in force now (whatever its issuer's clock dates it) trips the ramp, and one that
        # comes before the resume is issued refuses the resume. A fleet, strategy or symbol
        # ramp covers every node, also one that starts while it runs (it holds the stages
        # from its start): each one's spike trips it.
        watched = targets if scope is Scope.NODE else []
        # (as readers hold them: a slot deleted before the ramp is one of those, not new)
        known = {
            e.command_id
            for e, _ in (await self._halts()).values()
            if e.state is not TradingState.ACTIVE
        }
        self._watch = RampWatch(scope, key, self.plan, start, watched, known=known)
        try:
            try:
                await self._put(record, seen)
            except RevisionConflict:
                holder, _ = await self._holder(record)
                raise RampError(
                    f"ramp {ramp_id}: the record of {scope.value} {key!r} was written by "
                    f"another ramp as this one started (now {holder}: another approval of "
                    "this halt?); resume not issued"
                ) from None
            except ControlPlaneUnavailable as exc:
                # said as what it is: before, a bare "put: timeout" left the approver unsure
                # whether the scope was trading again
                raise RampError(
                    f"ramp {ramp_id}: stage 1 of {scope.value} {key!r} was not stored ({exc}); "
                    "resume not issued"
                ) from None
            missing = await self._applied(targets, first, self.plan.apply_timeout_s)
            await self._rescan()  # one announced while the halts in force were being read
            why = ""
            if missing:
                why = f"stage 1 limits not applied by {', '.join(missing)}; resume not issued"
            elif self._watch.tripped:
                why = f"{self._watch.tripped}; resume not issued"
            if why:
                lost = await self._not_issued(record, why)
                raise RampError(f"ramp {ramp_id}: {why}{lost}")
            try:
                resumed = await self.ks.apply_resume(entry, timeout_s=timeout_s)
            except (KillSwitchError, RevisionConflict) as exc:
                # no resume happened: the record must not keep holding stage one as "ramping"
                # (but only ours: another approval's resume of this halt may have gone first)
                lost = await self._not_issued(record, f"resume not issued: {exc}")
                first_in = await self._resumed_by_another(entry)
                raise KillSwitchError(f"{exc}{first_in}{lost}") from None
            except ControlPlaneUnavailable as exc:
                # The store did not answer the resume's compare-and-set write (a request
                # timed out in a leader election): it may have landed, or land late. Before,
                # this raised out of `apply`, and a resume that landed traded with nothing
                # left to trip it back, its record "ramping" for good. The scope is killed
                # at once: over a resume that landed, it halts it; before one still in
                # flight, it moves the slot's revision, so that write is refused.
                self._watch.tripped = (
                    f"the store did not answer the resume's write ({exc}); it may have "
                    "landed: killed again, request a new resume"
                )
                return await self._trip(record, 0, None, start)
        except BaseException:
            self._watch = None
            raise
        own = resumed.entry.command_id
        # another approval of this halt may have stored its stage one over ours
        await self._or_trip(self._keep_own(record, own))
        _tell(self.on_resumed, resumed, "on_resumed")
        # The stages run from now, when the resume was applied, not from when it was
        # requested (an approved request can be minutes old).
        # The holds are timed by the monotonic clock: a wall clock stepped forward (NTP)
        # must not skip stages, nor end the ramp and disarm its trip early.
        self._watch.start_ns = max(self.clock.time_ns(), resumed.entry.issued_ns + 1)
        began = self.clock.monotonic_ns()
        rescanned = written = began
        stage = 0
        while True:
            if self._watch.tripped:
                return await self._trip(record, stage, resumed, start)
            elapsed = self.clock.monotonic_ns() - began
            now_stage = self._watch.stage_at(self._watch.start_ns + elapsed)
            if now_stage is None or self.clock.monotonic_ns() - rescanned >= RESCAN_S * NS_PER_S:
                # the store again, every RESCAN_S and before the ramp may end: no halt
                # stored while it ran goes unseen because its announcement was lost
                await self._or_trip(self._rescan())
                rescanned = self.clock.monotonic_ns()
                if self._watch.tripped:
                    return await self._trip(record, stage, resumed, start)
                await self._or_trip(self._keep_own(record, own))
                if self._watch.tripped:
                    return await self._trip(record, stage, resumed, start)
            if now_stage is None:
                break
            beat = self.clock.monotonic_ns() - written >= self.heartbeat_s * NS_PER_S
            if now_stage != stage or beat:
                # a new stage, or the same one written again: `status` tells a ramp whose
                # driver is gone (nothing trips it) by a record no longer written
                stage = now_stage
                fraction = self.plan.stages[stage].fraction
                record = msgspec.structs.replace(
                    record, stage=stage, fraction=fraction, since_ns=self._since(record)
                )
                written = self.clock.monotonic_ns()
                await self._or_trip(self._put_or_say(record, own))
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self._tripped.wait()
        done = msgspec.structs.replace(
            record,
            stage=len(self.plan.stages) - 1,
            fraction=1.0,
            status="done",
            since_ns=self._since(record),
        )
        await self._or_trip(self._put_or_say(done, own))
        # Not over until the nodes are told: a "done" (or a last stage) the store did not
        # take leaves them at the last stage stored, so it is written again, still watched.
        while self._unstored is not None or self._watch.tripped:
            if self._watch.tripped:
                return await self._trip(record, stage, resumed, start)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESCAN_S):
                    await self._tripped.wait()
            if not self._watch.tripped:
                await self._or_trip(self._rescan())
            if not self._watch.tripped:
                await self._or_trip(self._put_or_say(done, own))
        self._watch = None
        nodes = [key] if scope is Scope.NODE else sorted({*targets, *self._metrics})
        held = await self._held(nodes, self.plan.apply_timeout_s)
        if held:
            log.critical(
                "RAMP_NOT_AT_FULL_LIMITS ramp=%s %s %r: 'done' is stored, but %s (a node "
                "logging RAMP_REFUSED could not verify the ramp's records; another scope's "
                "ramp, or a start mid-ramp, also holds a node lower)",
                ramp_id,
                scope.value,
                key,
                _in_words(held),
            )
        return RampOutcome(
            ramp_id,
            True,
            done.stage,
            1.0,
            "",
            resumed,
            None,
            start,
            self.clock.time_ns(),
            held,
        )

    async def _or_trip(self, work: Coroutine[Any, Any, None]) -> None:
        """The running ramp's work with the store (a rescan, a stage's record), given up
        when a trip is heard first: the trip's kill goes out then, not when a slow store
        answers. Before, a store that answered each read only at its request timeout (a
        JetStream leader election, while announcements and metrics still flowed) held a
        heard Guard halt's or block spike's kill of the scope for as long as the reads
        took, and the scope traded on at the stage's limits. What was cut short is safe
        to leave: a rescan is read again, a record is taken back by the trip's write."""
        task = asyncio.ensure_future(work)
        heard = asyncio.ensure_future(self._tripped.wait())
        try:
            await asyncio.wait({task, heard}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            heard.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not task.cancelled():
            task.result()  # its own failures are its own to raise

    def _since(self, record: RampRecord) -> int:
        """The date of this ramp's next record: now, but never before its last one. Nodes
        ignore a record that would loosen what they hold when it is dated before the one
        held (a replayed earlier record): the approver's wall clock stepped back mid-ramp
        (NTP correcting a clock that ran ahead) dated stage two and "done" before stage
        one, and every node held stage one's 10% for good while `approve` said "complete:
        full limits" and `status` showed the ramp done."""
        return max(self.clock.time_ns(), record.since_ns + 1)

    async def _not_issued(self, record: RampRecord, why: str) -> str:
        """Mark this ramp's stage one "tripped" (its resume was not issued), only over its
        own write: "" once stored, else what the slot holds instead (or that the store did
        not answer), for the error."""
        try:
            other = await self._put_own(
                msgspec.structs.replace(record, status="tripped", trip_reason=why), None
            )
        except ControlPlaneUnavailable as exc:
            # the refusal is still said, and what the slot shows: before, the store's error
            # replaced it ("put: timeout"), and the approver could not tell whether the
            # resume went out while `status` showed the ramp "ramping"
            return (
                f"; its record was not marked tripped ({exc}): it reads 'ramping' at stage 1, "
                "though no resume was issued"
            )
        if not other:
            return ""
        return f"; its record was not marked tripped: the slot holds another ramp's ({other})"

    async def _resumed_by_another(self, entry: StateEntry) -> str:
        """Why a resume of this halt failed if another approval's resume went first."""
        with contextlib.suppress(ControlPlaneUnavailable):
            state, _ = await self.plane.get_state(entry.scope, entry.key)
            if (
                state is not None
                and state.state is TradingState.ACTIVE
                and state.command_id != entry.command_id
            ):
                return (
                    f"; another approval's resume {state.command_id[:12]} of "
                    f"{entry.scope.value} {entry.key!r} was applied first (its ramp runs)"
                )
        return ""

    async def _trip(
        self, record: RampRecord, stage: int, resumed: CommandResult | None, start: int
    ) -> RampOutcome:
        assert self._watch is not None
        why = self._watch.tripped or "tripped"
        self._watch = None
        trip: CommandResult | None = None
        try:
            trip = await self.ks.kill(record.scope, record.key, f"ramp tripped: {why}")
            said = kill_outcome(trip)
        except (KillSwitchError, ControlPlaneUnavailable) as exc:
            log.critical("RAMP_TRIP_KILL_FAILED ramp=%s %s", record.ramp_id, exc)
            # the page says whether the halt took: "tripped" alone read as a halted scope
            said = f"its kill was NOT sent ({exc}): kill the scope again now"
        tripped = msgspec.structs.replace(
            record, status="tripped", trip_reason=why, since_ns=self._since(record)
        )
        try:
            # taken back from a ramp that never resumed only while the slot holds our kill
            other = await self._put_own(tripped, trip.entry.command_id if trip else None)
            if other:
                log.critical(
                    "RAMP_TRIP_NOT_STORED ramp=%s: the slot holds %s, not written over",
                    record.ramp_id,
                    other,
                )
        except ControlPlaneUnavailable as exc:
            # the page and the outcome (which says the kill must be repeated) still go out
            log.critical("RAMP_TRIP_NOT_STORED ramp=%s %s", record.ramp_id, exc)
        action = Action(
            Rule.RAMP_TRIP,
            record.scope,
            record.key,
            TradingState.HALTED,
            f"ramp {record.ramp_id} tripped at stage {stage + 1} "
            f"({record.fraction:.0%} limits): {why}",
            self.clock.time_ns(),
        )
        if self.pager is not None:
            await self.pager.page(action, said)
        else:
            log.critical("PAGE rule=%s %s outcome=%r", action.rule.value, action.reason, said)
        return RampOutcome(
            record.ramp_id,
            False,
            stage,
            record.fraction,
            why,
            resumed,
            trip,
            start,
            self.clock.time_ns(),
        )


def _tell(hear: Callable[[T], None] | None, what: T, name: str) -> None:
    """Hand `what` to a caller's callback (a stage line printed, a console's future set).
    One that raises (a closed stdout, a full disk under a redirected one) is logged and
    the ramp goes on: before, it raised out of `apply` mid-ramp with the resume in force
    and nothing watching it, and out of a trip before its page went out."""
    if hear is None:
        return
    try:
        hear(what)
    except Exception:
        log.exception("ramp: its %s callback failed; the ramp goes on watching", name)


def signed_for(record: RampRecord, key: SigningKey, roster: Roster | None) -> RampRecord:
    """`record` with a proof by `key` for `roster`'s fleet (`Roster.fleet`): what that
    fleet's nodes take."""
    return record.signed(key, fleet=roster.fleet if roster is not None else "")


def ramp_signer(record: RampRecord, roster: Roster | None) -> str | Refused:
    """Who signed a stored ramp record, judged as a node reading the store does, or why
    nodes do not take it (`unverified_effect` says what they do instead; for `status`
    and the console)."""
    try:
        return check_ramp(
            record.proof, record.payload(), roster, at_ns=record.since_ns, now_ns=None
        ).actor
    except Refused as exc:
        return exc


def driver_silent(record: RampRecord, now_ns: int) -> bool:
    """True for a ramping record its driver has not written for `DRIVER_SILENT_S`: the
    `approve` that runs it writes it every `HEARTBEAT_S`, so its process is gone (or cut
    off from the store), nothing trips the ramp, and the scope stays at the stage shown.
    Without this, a ramp whose driver died looked like one still ramping."""
    return record.status == "ramping" and now_ns - record.since_ns > DRIVER_SILENT_S * NS_PER_S


def unverified_effect(record: RampRecord) -> str:
    """What nodes do with a ramp record they cannot verify (`NodeRuntime._take_ramp`)."""
    if record.holds:
        return "nodes hold 10%"
    return "nodes that held this ramp hold 10%; others count it as no ramp"


async def ramp_records(plane: ControlPlane) -> list[RampRecord]:
    """Every ramp record (undecodable ones are skipped: nodes already hold them tight)."""
    out = []
    for value, _ in (await plane.records(Bucket.RAMP)).values():
        with contextlib.suppress(*UNDECODABLE):
            out.append(RAMP_DECODER.decode(value))
    return out
