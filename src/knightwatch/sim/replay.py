"""`Replay`: run a scenario on a simulated clock, with the chosen guardrail layers in the loop.

The loop advances in fixed steps. Each step applies timeline actions and
parent arrivals, then releases the children due in the step. With no Guard
each parent's due children go to the venue as one batch; with a Guard they
are interleaved across parents and nodes in time order and each one is a
real `Order` checked by the node's real `Guard` at its own simulated instant.

The run ends at the scenario's stop (the 2012 manual stop), or earlier when
nothing more can happen: every node halted, or no parent left working and
none still to arrive.
"""

from __future__ import annotations

import bisect
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from knightwatch.clock import NS_PER_S, SimClock
from knightwatch.control.fleet.killswitch import CommandResult, KillSwitchError
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.plane.wire import Verdict
from knightwatch.decision import RejectReason
from knightwatch.flags.rollout import Metrics
from knightwatch.guard import Guard
from knightwatch.limits import RAMP_SCALED_KEYS
from knightwatch.sim.account import Account
from knightwatch.sim.exit import exit_value, marked_value
from knightwatch.sim.fleet import ControlAction, SimulatedFleet, SimulatedRamp, action_of
from knightwatch.sim.governance import Governance
from knightwatch.sim.layers import Layer
from knightwatch.sim.node import Node
from knightwatch.sim.recording import clear_other_runs, node_recorder
from knightwatch.sim.router import ParentOrder, RoutedParent, SmarsRouter
from knightwatch.sim.scenario import Scenario
from knightwatch.sim.setup import LayerSetup, TimelineAction
from knightwatch.sim.venue import Market, Venue
from knightwatch.state import FLEET_KEY, Scope, TradingState, pair_key

MOVE_THRESHOLD = 0.05
_STOPPED = frozenset({RejectReason.LEASE_EXPIRED.value, RejectReason.AUDIT_UNAVAILABLE.value})
"""Refusals that stop a node for good (until a person acts), besides its halts."""


def _longest(starts: list[float | None], lengths: list[float | None]) -> float | None:
    ran = [length for start, length in zip(starts, lengths, strict=True) if start is not None]
    if not ran:
        return 0.0
    if any(length is None for length in ran):
        return None
    return max(x for x in ran if x is not None)


def _named(detail: str) -> set[str]:
    """The node ids a refusal names (`node n8 ...`)."""
    return set(re.findall(r"\bnode (\S+?)[ ,;:)]", detail + " "))


class GuardrailEvent(msgspec.Struct, frozen=True):
    """Something a guardrail (or an operator) did, for the report's markers."""

    t_s: float
    layer: str
    node: str
    what: str


class Series(msgspec.Struct):
    """Per-sample time series for the plots."""

    t_s: list[float] = msgspec.field(default_factory=list)
    loss_usd: list[float] = msgspec.field(default_factory=list)
    gross_usd: list[float] = msgspec.field(default_factory=list)
    orders: dict[str, list[int]] = msgspec.field(default_factory=dict)


class NodeStats(msgspec.Struct, frozen=True):
    release: str
    orders: int
    executions: int
    blocked: int
    admitted: bool = True
    runaway_executions: int = 0
    runaway_from_s: float | None = None
    """This node's first runaway execution (seconds after the open)."""
    runaway_for_s: float | None = None
    """From its first runaway execution to its last; None while it was still running away
    when the replay stopped (or never ran away)."""


class ResumeStats(msgspec.Struct, frozen=True):
    """The person's resume after the kill (`timeline.resume_after_s`) and what followed.

    `outcome` is "ramp tripped", "ramp completed", "ramping" (still at the stop), "ramp
    refused" (stage one not applied everywhere: no resume) or "full limits"
    (`resume_ramp = false`).
    `halted_after_s` is from the resume to the first halt of any scope after it (the
    ramp's trip, a person's second kill, the supervisor); None if trading went on to
    the end. `orders_until_halt` are the child orders that got out in between.
    """

    at_s: float
    ramp: bool
    outcome: str
    stage: int | None
    halted_after_s: float | None
    halted_by: str
    reason: str
    orders_until_halt: int
    loss_at_resume_usd: float


class ReplayResult(msgspec.Struct, frozen=True):
    scenario: str
    guards: list[str]
    seed: int
    executions: int
    child_orders: int
    blocked_orders: int
    runaway_executions: int
    symbols_traded: int
    shares: int
    net_long_usd: float
    net_long_symbols: int
    net_short_usd: float
    net_short_symbols: int
    peak_gross_usd: float
    loss_usd: float
    marked_pnl_usd: float
    symbols_moved_over_5pct: int
    contained_after_s: float | None
    runaway_from_s: float | None
    longest_runaway_s: float | None
    """The longest any node ran away, from its first runaway execution to its last (0.0:
    none did; None: one still was when the replay stopped). A fleet-wide runaway after a
    rollback starts at the rollback on the nodes it reaches, so this is what "contained
    within N s of its first runaway execution" is measured on."""
    parents: int
    parents_completed: int
    parents_resting: int
    simulated_s: float
    per_node: dict[str, NodeStats]
    stale_nodes: list[str]
    events: list[GuardrailEvent]
    control_actions: list[ControlAction]
    automatic_halt_s: float | None
    series: Series
    wall_seconds: float
    resume: ResumeStats | None = None
    skew: dict[str, str] = msgspec.field(default_factory=dict)
    """How each of `stale_nodes` differs from the deploy ("missed the deploy", "its own
    config", ...), as the scenario says: what the report labels the node with."""

    def summary(self) -> dict[str, Any]:
        """The machine-readable summary (`--json`): everything but the time series."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        del out["series"]
        return out


@contextmanager
def _quiet_guard_log() -> Iterator[None]:
    """A replay blocks millions of orders on purpose: it counts and records them
    (per-node counts, first block per reason, Guard halts) instead of logging each."""
    log = logging.getLogger("knightwatch.guard")
    before = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(before)


class Replay:
    """One run. `audit_dir` gives every node's Guard a flight-recorder file there
    (`<node>.jsonl`); without it the chain is sealed in bounded memory."""

    def __init__(
        self,
        scenario: Scenario,
        layers: tuple[Layer, ...],
        seed: int | None = None,
        *,
        audit_dir: Path | None = None,
    ):
        self.scenario = scenario
        self.layers = layers
        self.seed = scenario.scenario.seed if seed is None else seed
        sc = scenario
        self.clock = SimClock(sc.open_ns)
        self.symbols = sc.symbols(self.seed)
        self.market = Market(self.symbols, sc.market)
        self.venue = Venue(self.market)
        self.account = Account(len(self.symbols))
        self.setup = LayerSetup(sc)
        for layer in layers:
            layer.configure(self.setup)
        limits = self.setup.limits() if self.setup.guarded else None
        if audit_dir is not None:  # only this run's files: a reused --report held others
            clear_other_runs(audit_dir, sc.node_ids() if limits is not None else ())
        names = [s.name for s in self.symbols]
        self.nodes: list[Node] = []
        for nid in sc.node_ids():
            release = sc.node_release(nid)
            guard = None
            if limits is not None:
                recorder = node_recorder(nid, self.clock, audit_dir)
                guard = Guard(limits, node=nid, clock=self.clock, recorder=recorder)
                guard.set_context(release_id=release.id)
            self.nodes.append(
                Node(
                    nid,
                    release,
                    SmarsRouter(nid, self.setup.router_bounds),
                    guard,
                    strategy=sc.fleet.strategy,
                    venue=self.venue,
                    account=self.account,
                    symbols=names,
                    config=sc.node_config(nid),
                    faults=sc.faults.get(nid),
                    open_ns=sc.open_ns,
                )
            )
        self._by_id = {n.id: n for n in self.nodes}
        self.governance = Governance(sc, self.clock, self.setup.governance)
        attestation = self.setup.governance.attestation
        self.control: SimulatedFleet | None = None
        if self.setup.control_plane:
            self.control = SimulatedFleet(
                self.clock,
                [n.guard for n in self.nodes if n.guard is not None],
                policy=sc.control.policy(),
                metrics_interval_s=sc.control.metrics_s,
                supervisor=sc.supervisor
                if self.setup.supervisor or self.setup.watch_health
                else None,
                supervisor_acts=self.setup.supervisor,
                admission=self.governance.fleet_admission(self.nodes) if attestation else None,
            )
        self.governance.attach(
            self.nodes, self.control.members if self.control is not None and attestation else None
        )
        self.control_actions: list[ControlAction] = []
        self.events: list[GuardrailEvent] = []
        self._ramp: SimulatedRamp | None = None
        self._resume: ResumeStats | None = None
        self._resume_orders = 0
        self._held: set[int] = set()
        self._arm()
        self._rerouted = 0
        self._agenda: list[tuple[int, int, str, TimelineAction]] = []
        self._next = 0
        self._seq = 0
        self.parents: list[RoutedParent] = []
        self._watch: list[set[int]] = [set() for _ in self.nodes]
        self._flow_done = [0] * len(sc.flow)
        self.series = Series(orders={n.id: [] for n in self.nodes})

    def _arm(self) -> None:
        """Arm every Guard before the open. Errors a node reported before the open
        (`fleet.pre_open_errors`, Knight's unread e-mails) are read only by the control
        plane: its node runtime then refuses to arm, and the supervisor pages and halts."""
        errors = self.scenario.fleet.pre_open_errors
        for node in self.nodes:
            if node.guard is None:
                continue
            if self.control is None:
                node.guard.arm(actor="replay")
                continue
            refused = self.control.arm(node.id, errors.get(node.id, 0))
            if refused is not None:
                layer = "supervisor" if self.admitted(node.id) else "attestation"
                self.mark(layer, node.id, f"arming refused: {refused}")

    # ------------------------------------------------------------------ actions

    def now_s(self) -> float:
        return (self.clock.monotonic_ns() - self.scenario.open_ns) / NS_PER_S

    def node(self, node_id: str) -> Node:
        return self._by_id[node_id]

    def admitted(self, node_id: str) -> bool:
        """Whether the node is admitted on the target release, as its runtime holds it
        (always, without the attestation layer: the deploy log is believed)."""
        if self.control is None or not self.setup.governance.attestation:
            return True
        return self.control.admitted(node_id)

    def verdict(self, node_id: str) -> Verdict | None:
        """The admission service's verdict on the node (None without attestation)."""
        if self.control is None or not self.setup.governance.attestation:
            return None
        return self.control.verdict(node_id)

    @property
    def runaway_from_s(self) -> float | None:
        """When the first runaway execution happened (seconds after the open), if one has."""
        first = self.account.first_runaway_ns
        return None if first is None else (first - self.scenario.open_ns) / NS_PER_S

    @property
    def runaway_running(self) -> bool:
        """Whether some node is still running away (an overfilled parent it can still work)."""
        return bool(self._runaway_live())

    def schedule(
        self, at_s: float, label: str, action: TimelineAction, *, hold: bool = False
    ) -> None:
        """Add an action to the running timeline (at the current instant if `at_s` is past).
        With `hold` the run does not end before it, even with every node halted: a person
        who will act later (a resume) still has something to do."""
        at_ns = max(self.scenario.open_ns + round(at_s * NS_PER_S), self.clock.monotonic_ns())
        self._seq += 1
        bisect.insort(self._agenda, (at_ns, self._seq, label, action), lo=self._next)
        if hold:
            self._held.add(self._seq)

    def step_rollout(self, metrics: Metrics) -> None:
        """One rollout step on the health the supervisor computed (the rollout layer's hook)."""
        self.governance.step_rollout(self, metrics)

    def mark(self, layer: str, node: str, what: str) -> None:
        self.events.append(GuardrailEvent(round(self.now_s(), 3), layer, node, what))

    def operator_kill(self, layer: str, reason: str) -> None:
        """An operator's fleet kill through the control plane's kill switch."""
        assert self.control is not None, "the kill_switch layer runs the control plane"
        try:
            result = self.control.kill(Scope.FLEET, FLEET_KEY, reason, actor=f"operator:{layer}")
        except ControlPlaneUnavailable as exc:
            self.mark(
                layer, "*", f"kill not delivered: {exc}; nodes stop when their leases run out"
            )
            return
        self._record_command(layer, "manual_kill", result)

    def control_halt(self, layer: str, scope: Scope, key: str, reason: str, actor: str) -> None:
        """A halt another component asked for (a rollout abort), through the kill switch."""
        assert self.control is not None, f"the {layer} layer runs the control plane"
        try:
            result = self.control.kill(scope, key, reason, actor=actor)
        except ControlPlaneUnavailable as exc:
            self.mark(layer, key, f"halt not delivered: {exc}; the lease stops the node")
            return
        self._record_command(layer, f"{layer}_halt", result)

    def operator_resume(self, layer: str, reason: str) -> None:
        """The person resumes the fleet: through the scenario's `[ramp]`, the way
        `knightwatch resume` does, or at full limits with `timeline.resume_ramp = false`."""
        assert self.control is not None, "the kill_switch layer runs the control plane"
        actor = f"operator:{layer}"
        ramped = self.scenario.timeline.resume_ramp
        self._resume_orders = sum(n.sent for n in self.nodes)
        self._resume = ResumeStats(
            at_s=round(self.now_s(), 3),
            ramp=ramped,
            outcome="ramping" if ramped else "full limits",
            stage=0 if ramped else None,
            halted_after_s=None,
            halted_by="",
            reason="",
            orders_until_halt=0,
            loss_at_resume_usd=round(self._loss_now(), 2),
        )
        try:
            if ramped:
                ramp = SimulatedRamp(
                    self.control, self.scenario.ramp, Scope.FLEET, FLEET_KEY, reason, actor
                )
                limits = self.setup.limits()
                if all(getattr(limits, k) is None for k in RAMP_SCALED_KEYS):
                    self.mark(
                        "ramp",
                        "*",
                        "no rate, notional or exposure limit is on: the ramp's stages scale "
                        "nothing, only a halt in the scope can trip it",
                    )
                result = ramp.start()
                if result is None:
                    self._resume = msgspec.structs.replace(
                        self._resume, outcome="ramp refused", reason=ramp.refused
                    )
                    self.mark("ramp", "*", f"resume refused: {ramp.refused}")
                    return
                self._ramp = ramp
            else:
                result = self.control.resume(Scope.FLEET, FLEET_KEY, reason, actor)
        except (ControlPlaneUnavailable, KillSwitchError) as exc:
            self._resume = None
            self.mark(layer, "*", f"resume not delivered: {exc}")
            return
        self._record_command(layer, "ramp_resume" if ramped else "manual_resume", result)

    def _step_ramp(self) -> None:
        ramp = self._ramp
        assert ramp is not None and self._resume is not None
        trip = ramp.step()
        if trip is not None:
            fraction = self.scenario.ramp.stages[ramp.stage].fraction
            self.mark(
                "ramp",
                "*",
                f"ramp {ramp.record.ramp_id} tripped at stage {ramp.stage + 1} "
                f"({fraction:.0%} limits): {ramp.record.trip_reason}",
            )
            self._resume = msgspec.structs.replace(
                self._resume, outcome="ramp tripped", stage=ramp.stage
            )
            self._record_command("ramp", "ramp_trip", trip)
        elif ramp.done:
            self.mark("ramp", "*", f"ramp {ramp.record.ramp_id} complete: full limits")
            self._resume = msgspec.structs.replace(
                self._resume, outcome="ramp completed", stage=ramp.stage
            )
        elif ramp.stage != self._resume.stage:
            fraction = self.scenario.ramp.stages[ramp.stage].fraction
            self.mark("ramp", "*", f"ramp stage {ramp.stage + 1}: {fraction:.0%} limits")
            self._resume = msgspec.structs.replace(self._resume, stage=ramp.stage)
        if ramp.done:
            self._ramp = None

    def _loss_now(self) -> float:
        pos = self.account.position
        return float(-(self.account.cash + exit_value(self.market, pos, self.scenario.exit)))

    def _record_command(self, layer: str, rule: str, result: CommandResult) -> None:
        entry = result.entry
        if entry.scope is Scope.NODE:
            before = self.node(entry.key).sent
        else:
            before = sum(n.sent for n in self.nodes)
        loss = self._loss_now()
        action = action_of(result, self.now_s(), rule, before, loss)
        self.control_actions.append(action)
        resumed = self._resume
        if (
            resumed is not None
            and resumed.halted_after_s is None
            and entry.state is TradingState.HALTED
            and action.t_s >= resumed.at_s
            and rule not in ("ramp_resume", "manual_resume")
        ):
            self._resume = msgspec.structs.replace(
                resumed,
                halted_after_s=round(action.t_s - resumed.at_s, 3),
                halted_by=rule,
                reason=entry.reason,
                orders_until_halt=sum(n.sent for n in self.nodes) - self._resume_orders,
            )
        who = f"confirmed by {len(action.confirmed)}/{len(result.targets)} nodes"
        if action.missing:
            who += f", not by {', '.join(action.missing)}"
        where = "*" if entry.scope is Scope.FLEET else entry.key
        self.mark(
            layer, where, f"{action.scope} {action.key} {action.state} ({who}): {entry.reason}"
        )

    def rollback(self) -> None:
        """2012: the new code was removed from every server, so all of them run the old one.
        With attestation on, the old release is a new target and must pass admission first."""
        previous = self.scenario.releases[self.scenario.deploy.previous]
        attested = self.control is not None and self.setup.governance.attestation
        if attested:
            assert self.control is not None
            reply = self.control.set_target(self.governance.envelopes[previous.id], "2012 rollback")
            if not reply.accepted:
                why = "; ".join(str(f) for f in reply.findings)
                self.mark("attestation", "*", f"rollback to {previous.id} refused: {why}")
                return
        for node in self.nodes:
            node.set_release(previous)
            if node.guard is not None:
                node.guard.set_context(release_id=previous.id)
        if attested:
            assert self.control is not None
            self.control.attest_all()
        self.mark("operator", "*", f"rollback: every node now runs {previous.id}")

    def switch_flag_on(self) -> None:
        """The deploy flag leaves its safe default: at once (2012), or through a rollout."""
        gov = self.governance
        if self.setup.governance.rollout:
            gov.start_rollout(self)
            return
        result = gov.switch_on()
        on = [n.id for n in self.nodes if n.flag_on]
        if result.accepted:
            self.mark("operator", "*", f"{gov.flag} switched on at {len(on)} node(s)")
        else:
            layer = "flag_schema" if self.setup.governance.flag_schema else "operator"
            runs = ", ".join(
                f"{n.id} runs {n.release.id}" for n in self.nodes if n.id in _named(result.detail)
            )
            self.mark(
                layer,
                "*",
                f"activation refused: {result.code}: {result.detail}"
                + (f" (as simulated: {runs})" if runs else ""),
            )

    def _timeline(self) -> list[tuple[int, int, str, TimelineAction]]:
        sc = self.scenario
        out: list[tuple[int, int, str, TimelineAction]] = []
        items: list[tuple[float, str, TimelineAction]] = list(self.setup.actions)
        items.append((sc.deploy.flag_on_s, "flag_on", lambda _: self.switch_flag_on()))
        if sc.timeline.rollback_s is not None:
            items.append((sc.timeline.rollback_s, "rollback", lambda _: self.rollback()))
        for nid, fault in sc.faults.items():
            ff = fault.frozen_feed
            if ff is not None:
                node = self._by_id[nid]
                items.append((ff.from_s, f"feed_frozen:{nid}", self._feed_action(node, False)))
                if ff.until_s is not None:
                    items.append((ff.until_s, f"feed_back:{nid}", self._feed_action(node, True)))
            # the node injects these itself; the timeline only marks them
            ws = fault.wrong_side
            if ws is not None:
                wrong = "children sent on the wrong side of their parents"
                items.append((ws.from_s, f"wrong_side:{nid}", self._fault_mark(nid, wrong)))
                if ws.until_s is not None:
                    right = "children on their parents' side again"
                    items.append((ws.until_s, f"right_side:{nid}", self._fault_mark(nid, right)))
            op = fault.off_price
            if op is not None:
                what = f"children priced {op.pct:.0%} through the touch"
                items.append((op.from_s, f"off_price:{nid}", self._fault_mark(nid, what)))
            ri = fault.reused_ids
            if ri is not None:
                what = f"router restarted: child ids from {nid}-1 again"
                items.append((ri.from_s, f"reused_ids:{nid}", self._fault_mark(nid, what)))
        for seq, (at_s, label, action) in enumerate(items):
            out.append((sc.open_ns + round(at_s * NS_PER_S), seq, label, action))
        out.sort(key=lambda a: (a[0], a[1]))
        self._seq = len(out)
        return out

    def _feed_action(self, node: Node, live: bool) -> TimelineAction:
        def act(_: object) -> None:
            (self._thaw if live else self._freeze)(node)

        return act

    def _fault_mark(self, nid: str, what: str) -> TimelineAction:
        def act(_: object) -> None:
            self.mark("fault", nid, what)

        return act

    def _freeze(self, node: Node) -> None:
        """`faults.<node>.frozen_feed`: the node's feed stops; its router and Guard keep the
        prices they have."""
        node.freeze_feed(self.market)
        self.mark("fault", node.id, "reference-price feed frozen")

    def _thaw(self, node: Node) -> None:
        node.thaw_feed()
        self.mark("fault", node.id, "reference-price feed back")
        if node.guard is not None:
            names = node.symbols
            for idx in self._watch[self.nodes.index(node)]:
                node.guard.on_price(names[idx], self.market.books[idx].mid())

    def _arrive(self, po: ParentOrder) -> None:
        node = self._by_id[po.node]
        if not self.admitted(node.id):
            # Order flow only goes to nodes the admission service admitted on the target.
            members = [n for n in self.nodes if self.admitted(n.id)]
            if not members:
                return
            node = members[self._rerouted % len(members)]
            self._rerouted += 1
        idx = self.market.index[po.symbol]
        spec = self.symbols[idx]
        cfg = node.config
        per_s = spec.peg_updates_per_s * cfg.peg_rate_scale
        span = round(self.scenario.scenario.duration_s * NS_PER_S) + 1
        # a peg slower than one update per run sends its first child only (a tiny
        # peg_rate_scale made the interval infinite: OverflowError, or 0.0: ZeroDivisionError)
        interval = span if per_s * span <= NS_PER_S else max(1, round(NS_PER_S / per_s))
        rp = RoutedParent(
            po,
            idx,
            node.algorithm(po.flag),
            self.scenario.parents.child_qty,
            interval,
            cfg.work_multiple,
        )
        node.router.accept(rp)
        self.parents.append(rp)
        if node.guard is not None:
            # the customer's order, declared to the Guard: its children's fills within it are
            # the customer's; whether they may exceed it is the parent check's business
            node.guard.register_parent(po.id, po.qty, account=po.account, side=po.side)
            self._watch[self.nodes.index(node)].add(idx)
            if node.frozen is None:  # a frozen feed sends the Guard nothing new
                node.guard.on_price(po.symbol, self.market.books[idx].mid())

    # ------------------------------------------------------------------ run

    def run(self, progress: Callable[[float], None] | None = None) -> ReplayResult:
        with _quiet_guard_log():
            return self._run(progress)

    def _run(self, progress: Callable[[float], None] | None) -> ReplayResult:
        wall0 = time.perf_counter()
        sc = self.scenario
        open_ns, step = sc.open_ns, sc.step_ns
        end_ns = open_ns + round(sc.scenario.duration_s * NS_PER_S)
        sample_ns = round(sc.scenario.sample_s * NS_PER_S)
        quiet_ns = round(sc.market.quiet_s * NS_PER_S)
        step_s = step / NS_PER_S
        parents = sc.parent_orders(self.symbols, self.seed)
        self._agenda = timeline = self._timeline()
        guarded = self.setup.guarded
        halts_seen = [0] * len(self.nodes)
        pi = 0
        next_sample = open_ns
        peak_gross = 0.0
        t0 = open_ns
        self._sample(0.0)
        while t0 < end_ns:
            t1 = min(t0 + step, end_ns)
            self.clock.advance_to(t0)
            while (pi < len(parents) and parents[pi].arrival_ns < t1) or (
                self._next < len(timeline) and timeline[self._next][0] < t1
            ):
                ai = self._next
                take_parent = pi < len(parents) and (
                    ai >= len(timeline) or parents[pi].arrival_ns < timeline[ai][0]
                )
                if take_parent:
                    self._arrive(parents[pi])
                    pi += 1
                else:
                    self.clock.advance_to(max(self.clock.monotonic_ns(), timeline[ai][0]))
                    self._next = ai + 1
                    timeline[ai][3](self)
            if sc.flow:
                self._other_flow(t1)
            if guarded:
                self._step_guarded(t1)
            else:
                self._step_batched(t1)
            for node in self.nodes:
                node.router.sweep()
            self.market.relax_idle(t1, step_s, quiet_ns)
            self.clock.advance_to(t1)
            if guarded:
                self._guard_events(halts_seen)
            for watcher in self.setup.watchers:  # every step: a plan is not held to a sample
                watcher(self)
            if t1 >= next_sample or t1 == end_ns:
                gross = self._sample((t1 - open_ns) / NS_PER_S)
                peak_gross = max(peak_gross, gross)
                next_sample = t1 + sample_ns
                if guarded:
                    self._feed_prices()
                if self.setup.sample_hooks:
                    assert self.control is not None, "sample hooks read the control plane"
                    metrics = self.control.rollout_metrics()
                    for hook in self.setup.sample_hooks:
                        hook(self, metrics)
                if progress is not None:
                    progress((t1 - open_ns) / (end_ns - open_ns))
            t0 = t1
            if self._finished(guarded, pi < len(parents) or self._next < len(timeline)):
                break
        if self.series.t_s[-1] != (t0 - open_ns) / NS_PER_S:
            peak_gross = max(peak_gross, self._sample((t0 - open_ns) / NS_PER_S))
        for node in self.nodes:
            for t_ns, pid, rule in node.router.bound_hits:
                self.events.append(
                    GuardrailEvent(
                        round((t_ns - open_ns) / NS_PER_S, 3),
                        "router_bounds",
                        node.id,
                        f"parent {pid} stopped: {rule}",
                    )
                )
            for reason, t_ns in node.first_block.items():
                self.events.append(
                    GuardrailEvent(
                        round((t_ns - open_ns) / NS_PER_S, 3),
                        "guard",
                        node.id,
                        f"first order blocked: {reason}",
                    )
                )
        self._final_admitted = {n.id: self.admitted(n.id) for n in self.nodes}
        if self.control is not None:
            self.control.close()
        for node in self.nodes:
            if node.guard is not None:
                node.guard.recorder.close()
        self.events.sort(key=lambda e: (e.t_s, e.node, e.layer))
        if progress is not None:
            progress(1.0)
        return self._result(t0, end_ns, peak_gross, time.perf_counter() - wall0)

    def _other_flow(self, t1: int) -> None:
        """`[[flow]]`: other participants' shares due by `t1` taken from the book at the
        step's start. The book moves; the firm's volume and accounts do not."""
        sc = self.scenario
        for i, fl in enumerate(sc.flow):
            start = sc.open_ns + round(fl.from_s * NS_PER_S)
            span = round((fl.to_s - fl.from_s) * NS_PER_S)
            due = round(fl.shares * min(1.0, max(0.0, (t1 - start) / span)))
            qty = due - self._flow_done[i]
            if qty > 0:
                self._flow_done[i] = due
                book = self.market.books[self.market.index[fl.symbol]]
                volume = book.volume
                book.take(fl.side == "buy", qty, self.clock.monotonic_ns())
                book.volume = volume  # "symbols traded" counts the firm's trading

    def _step_batched(self, t1: int) -> None:
        for node in self.nodes:
            for p in node.router.active:
                due = p.due_before(t1)
                if due:
                    node.route_batch(p, due)

    def _step_guarded(self, t1: int) -> None:
        due: list[tuple[int, int, int, Node, RoutedParent]] = []
        for ni, node in enumerate(self.nodes):
            for pj, p in enumerate(node.router.active):
                if p.algorithm.resting:
                    p.next_k += p.due_before(t1)  # a resting parent sends nothing marketable
                    continue
                for j in range(p.due_before(t1)):
                    due.append((p.child_time(p.next_k + j), ni, pj, node, p))
        due.sort(key=lambda c: (c[0], c[1], c[2]))
        clock = self.clock
        ticks = self.control.ticks_before(t1) if self.control is not None else []
        ti = 0
        for t, _, _, node, p in due:
            while ti < len(ticks) and ticks[ti] <= t:
                self._control_tick(ticks[ti])
                ti += 1
            clock.advance_to(t)
            node.route_one(p, t)
        for tick in ticks[ti:]:
            self._control_tick(tick)

    def _control_tick(self, t_ns: int) -> None:
        """Heartbeats and metrics at `t_ns`; each supervisor action is recorded with the
        kill-switch result (who confirmed) it produced."""
        assert self.control is not None
        self.clock.advance_to(t_ns)
        for action, result in self.control.step():
            self._record_command("supervisor", action.rule.value, result)
        if self._ramp is not None:
            self._step_ramp()

    def _guard_events(self, seen: list[int]) -> None:
        for i, node in enumerate(self.nodes):
            assert node.guard is not None
            halts = node.guard.halts()
            if len(halts) > seen[i]:
                ordered = sorted(halts.items(), key=lambda kv: kv[1].ts_ns)
                for (scope, key), h in ordered[seen[i] :]:
                    if h.actor.startswith(("operator", "rollout:")) or h.actor == "supervisor":
                        continue  # recorded with its kill-switch command and confirmations
                    self.events.append(
                        GuardrailEvent(
                            round((h.ts_ns - self.scenario.open_ns) / NS_PER_S, 3),
                            h.actor.removeprefix("guard:"),
                            node.id,
                            f"halted {scope.value} {key}: {h.reason}",
                        )
                    )
                seen[i] = len(halts)

    def _feed_prices(self) -> None:
        """Market data: every node's Guard gets fresh reference prices for its symbols."""
        books, names = self.market.books, self.nodes[0].symbols
        for node, watch in zip(self.nodes, self._watch, strict=True):
            assert node.guard is not None
            if node.frozen is not None:  # `faults.<node>.frozen_feed`
                continue
            for idx in watch:
                node.guard.on_price(names[idx], books[idx].mid())

    def _finished(self, guarded: bool, pending: bool) -> bool:
        """Nothing more can happen: nothing still to arrive and no parent left that a node
        could still work (a halted node's parents wait for a person), or every node halted."""
        if not pending and not any(
            self._can_trade(n, p) for n in self.nodes for p in n.router.active
        ):
            return True
        if not guarded:
            return False
        if any(seq in self._held for _, seq, _, _ in self._agenda[self._next :]):
            return False
        for node in self.nodes:
            g = node.guard
            assert g is not None
            if (
                g.trading_state(Scope.FLEET) is not TradingState.HALTED
                and g.trading_state(Scope.NODE, node.id) is not TradingState.HALTED
            ):
                return False
        return True

    def _runaway_live(self) -> set[str]:
        """The nodes that ran away and were not stopped: nothing halted them (or expired
        their lease), and their overfilled parents, if any are left, can still trade. A
        rule that only blocks (a rate or exposure limit) leaves a runaway live: its children
        get out again as soon as the window frees or the marks move; and a bleed that ended
        only because its customer flow did was not contained either."""
        return {n.id for n in self.nodes if n.runaway_first_ns is not None and not self._stopped(n)}

    def _stopped(self, node: Node) -> bool:
        g = node.guard
        if g is None:
            return False
        if not g.armed or node.refused_for in _STOPPED:
            return True
        if any(
            g.trading_state(sc, key) is not TradingState.ACTIVE
            for sc, key in ((Scope.FLEET, FLEET_KEY), (Scope.NODE, node.id))
        ):
            return True
        over = [p for p in node.router.active if p.filled > p.qty]
        return bool(over) and not any(self._can_trade(node, p) for p in over)

    def _node_stats(self, n: Node, live: set[str]) -> NodeStats:
        open_ns = self.scenario.open_ns
        first, last = n.runaway_first_ns, n.runaway_last_ns
        return NodeStats(
            n.release.id,
            n.sent,
            n.executions,
            n.blocked,
            self._final_admitted[n.id],
            runaway_executions=n.runaway_executions,
            runaway_from_s=None if first is None else round((first - open_ns) / NS_PER_S, 3),
            runaway_for_s=(
                None
                if first is None or last is None or n.id in live
                else round((last - first) / NS_PER_S, 3)
            ),
        )

    def _can_trade(self, node: Node, p: RoutedParent) -> bool:
        g = node.guard
        if g is None:
            return True
        if not g.armed or p.refused_for in _STOPPED:
            return False
        symbol = node.symbols[p.symbol]
        scopes = (
            (Scope.FLEET, FLEET_KEY),
            (Scope.NODE, node.id),
            (Scope.STRATEGY, node.strategy),
            (Scope.SYMBOL, symbol),
            (Scope.STRATEGY_SYMBOL, pair_key(node.strategy, symbol)),
        )
        return all(g.trading_state(sc, key) is TradingState.ACTIVE for sc, key in scopes)

    def _sample(self, t_s: float) -> float:
        s = self.series
        pos = self.account.position
        mids = self.market.mids()
        gross = float(np.abs(np.asarray(pos, dtype=np.float64)) @ mids)
        s.t_s.append(round(t_s, 3))
        s.loss_usd.append(-(self.account.cash + exit_value(self.market, pos, self.scenario.exit)))
        s.gross_usd.append(gross)
        for node in self.nodes:
            s.orders[node.id].append(node.sent)
        return gross

    def _result(self, t_ns: int, end_ns: int, peak_gross: float, wall: float) -> ReplayResult:
        sc = self.scenario
        acct = self.account
        pos = acct.position
        mids = self.market.mids()
        long_usd = sum(q * mids[i] for i, q in enumerate(pos) if q > 0)
        short_usd = sum(-q * mids[i] for i, q in enumerate(pos) if q < 0)
        moved = self.market.moved_over(MOVE_THRESHOLD)
        marked = acct.cash + marked_value(self.market, pos)
        loss = -(acct.cash + exit_value(self.market, pos, sc.exit))
        contained: float | None
        live = self._runaway_live()
        if acct.last_runaway_ns is None:
            contained = 0.0
        elif live or (t_ns >= end_ns and acct.last_runaway_ns >= end_ns - sc.step_ns):
            contained = None
        else:
            contained = round((acct.last_runaway_ns - sc.open_ns) / NS_PER_S, 3)
        stats = {n.id: self._node_stats(n, live) for n in self.nodes}
        completed = sum(1 for p in self.parents if p.filled >= p.qty)
        resting = sum(1 for p in self.parents if p.filled < p.qty and p.algorithm.resting)
        return ReplayResult(
            scenario=sc.name,
            guards=[layer.name for layer in self.layers] or ["none"],
            seed=self.seed,
            executions=self.venue.executions,
            child_orders=sum(n.sent for n in self.nodes),
            blocked_orders=sum(n.blocked for n in self.nodes),
            runaway_executions=acct.runaway_executions,
            symbols_traded=sum(1 for b in self.market.books if b.volume),
            shares=self.venue.shares,
            net_long_usd=round(float(long_usd), 2),
            net_long_symbols=sum(1 for q in pos if q > 0),
            net_short_usd=round(float(short_usd), 2),
            net_short_symbols=sum(1 for q in pos if q < 0),
            peak_gross_usd=round(peak_gross, 2),
            loss_usd=round(loss, 2) + 0.0,
            marked_pnl_usd=round(marked, 2) + 0.0,
            symbols_moved_over_5pct=moved,
            contained_after_s=contained,
            runaway_from_s=(
                None
                if acct.first_runaway_ns is None
                else round((acct.first_runaway_ns - sc.open_ns) / NS_PER_S, 3)
            ),
            longest_runaway_s=_longest(
                [n.runaway_from_s for n in stats.values()],
                [n.runaway_for_s for n in stats.values()],
            ),
            parents=sc.parents.count,
            parents_completed=completed,
            parents_resting=resting,
            simulated_s=round((t_ns - sc.open_ns) / NS_PER_S, 3),
            per_node=stats,
            stale_nodes=sc.skewed_nodes(),
            events=self.events,
            control_actions=self.control_actions,
            automatic_halt_s=next(
                (
                    a.t_s
                    for a in self.control_actions
                    if a.actor == "supervisor" and a.state == TradingState.HALTED.name
                ),
                None,
            ),
            series=self.series,
            wall_seconds=round(wall, 3),
            resume=self._resume_at_end(),
            skew={n: sc.skew_of(n) for n in sc.skewed_nodes()},
        )

    def _resume_at_end(self) -> ResumeStats | None:
        """The resume's figures; with no halt after it, the orders out until the end."""
        r = self._resume
        if r is None or r.halted_after_s is not None:
            return r
        return msgspec.structs.replace(
            r, orders_until_halt=sum(n.sent for n in self.nodes) - self._resume_orders
        )
