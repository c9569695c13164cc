"""Prove it is safe before resuming: a checklist every item of which must pass.

"You don't turn trading back on because dashboards look calm." A resume is
refused unless the fleet is consistent (every node that will trade admitted on
the target release, which is the known-good one or a newly signed one), the
flag state is known-good (every stored value verifies as its node would judge
it, and none moved away from its safe default during the kill), every
node's Guard is armed with a live lease and a writing flight recorder, clocks
agree, no supervisor alert is open in the scope, no node is crash-looping, and
a halt the Guard raised itself has its cause acknowledged. Each failing item
says what to fix; a store the control plane cannot serve fails every item that
reads it, naming the store, while the other items still run.

`run_preflight` only reads; whoever creates the resume (today `knightwatch
resume`, with two-person approval the request it creates) calls it first and
refuses on a failing checklist. `halt_crash_loops` then keeps a crash-looping
node halted and pages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Collection, Mapping
from typing import TypeVar

import msgspec

from knightwatch.clock import NS_PER_S, Clock
from knightwatch.control.fleet.freeze import judged, known_good
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import Action, Rule
from knightwatch.control.fleet.supervisor_service import SUPERVISOR_ID
from knightwatch.control.node.flags import STATE_DECODER
from knightwatch.control.node.runtime import _STARTS_KEPT as STARTS_KEPT
from knightwatch.control.plane.history import UNVERIFIED_ACTOR, ResumeProofs, unproven_resume
from knightwatch.control.plane.protocol import Bucket, ControlPlane, ControlPlaneUnavailable
from knightwatch.control.plane.wire import (
    FLEET_KEY,
    GUARD_ACTOR,
    STARTS_DECODER,
    TARGET_DECODER,
    TARGET_KEY,
    VERDICT_DECODER,
    NodeMetrics,
    NodeStatus,
    StateEntry,
    Verdict,
    slot_of,
    starts_key,
)
from knightwatch.decision import RejectReason
from knightwatch.errors import KnightwatchError
from knightwatch.inputs import UNDECODABLE
from knightwatch.state import Scope, TradingState, split_pair
from knightwatch.trust.command import Refused
from knightwatch.trust.flagproof import check_flag_proof
from knightwatch.trust.store import TrustStore

log = logging.getLogger(__name__)

T = TypeVar("T")


class PreflightConfigError(KnightwatchError, ValueError):
    """A `[preflight]` table that cannot be used; the message names the field and the rule."""


class PreflightConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The bounds the checklist holds the fleet to."""

    max_clock_offset_ms: float = 250.0
    crash_loop_starts: int = 3
    """More starts than this within `crash_loop_window_s` is a crash loop."""
    crash_loop_window_s: float = 600.0
    max_verdict_age_s: float = 30.0
    max_metrics_age_s: float = 5.0
    listen_s: float = 1.0
    """How long to listen for heartbeats and metrics (clock offsets, recorder health)."""

    def __post_init__(self) -> None:
        problems = []
        # each rule written so NaN fails it: a NaN bound would pass every node
        for field, value, top in (
            ("max_clock_offset_ms", self.max_clock_offset_ms, 60_000.0),
            ("crash_loop_window_s", self.crash_loop_window_s, 86_400.0),
            ("max_verdict_age_s", self.max_verdict_age_s, 86_400.0),
            ("max_metrics_age_s", self.max_metrics_age_s, 3_600.0),
            ("listen_s", self.listen_s, 60.0),
        ):
            if not (0 < value <= top):
                problems.append(f"{field}: must be a number in (0, {top:g}] (got {value})")
        # a node keeps its last STARTS_KEPT starts: a bound of that many or more can never
        # be exceeded by what is stored, and the item passed every crash-looping node
        if not 1 <= self.crash_loop_starts < STARTS_KEPT:
            problems.append(
                f"crash_loop_starts: must be in 1..{STARTS_KEPT - 1} (a node keeps its last "
                f"{STARTS_KEPT} starts; got {self.crash_loop_starts})"
            )
        if problems:
            raise PreflightConfigError("preflight: " + "; ".join(problems))


class CheckItem(msgspec.Struct, frozen=True):
    """One line of the checklist: which check, whether it passed, what to fix (or what held)."""

    name: str
    ok: bool
    detail: str


class Checklist(msgspec.Struct, frozen=True):
    scope: Scope
    key: str
    items: tuple[CheckItem, ...]
    trading_nodes: tuple[str, ...]
    crash_looping: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(i.ok for i in self.items)

    @property
    def failures(self) -> tuple[CheckItem, ...]:
        return tuple(i for i in self.items if not i.ok)

    def summary(self) -> str:
        return "; ".join(f"{i.name}: {i.detail}" for i in self.failures) or "all checks pass"


_KNOWN_CODES = frozenset(r.value for r in RejectReason)

CHECKS = ("halted", "release", "flags", "guard", "clocks", "alerts", "crash_loop", "cause")
"""Every item's name, in checklist order."""


def _node_halted(states: Mapping[str, tuple[StateEntry, int]], node: str) -> StateEntry | None:
    for e, _ in states.values():
        if e.scope is Scope.NODE and e.key == node and e.state is not TradingState.ACTIVE:
            return e
    return None


def _overlaps(scope: Scope, key: str, e: StateEntry) -> bool:
    """Whether halt `e` stops some of what the resumed scope trades."""
    if scope is Scope.FLEET or e.scope is Scope.FLEET:
        return True
    if e.scope is scope:
        return e.key == key
    if scope is Scope.STRATEGY_SYMBOL and e.scope in (Scope.STRATEGY, Scope.SYMBOL):
        # a halt of the pair's strategy, or of its symbol, stops all of what the pair
        # trades (as `ramp._in_scope` judges it): an alert open there is open on the pair
        strategy, symbol = split_pair(key)
        return e.key == (strategy if e.scope is Scope.STRATEGY else symbol)
    if e.scope is Scope.STRATEGY_SYMBOL:
        strategy, symbol = split_pair(e.key)
        return (scope is Scope.STRATEGY and strategy == key) or (
            scope is Scope.SYMBOL and symbol == key
        )
    return False


async def _listen(
    plane: ControlPlane, clock: Clock, listen_s: float
) -> tuple[dict[str, float], dict[str, NodeMetrics], dict[str, set[str]], dict[str, NodeStatus]]:
    """Clock offsets (node wall clock minus ours, at receipt), latest metrics, the
    process instances heard per node (more than one: two processes claim its id) and
    each node's latest heartbeat."""
    offsets: dict[str, float] = {}
    metrics: dict[str, NodeMetrics] = {}
    instances: dict[str, set[str]] = {}
    beats: dict[str, NodeStatus] = {}

    async def on_heartbeat(s: NodeStatus) -> None:
        offsets[s.node_id] = (s.seen_ns - clock.time_ns()) / 1e6
        beats[s.node_id] = s
        if s.instance:
            instances.setdefault(s.node_id, set()).add(s.instance)

    async def on_metrics(m: NodeMetrics) -> None:
        metrics[m.node_id] = m

    # dropped when done, however it ends: on a console session's link each preflight
    # left two live handlers for good, and every heartbeat called them all
    drop_heartbeats = await plane.subscribe_heartbeats(on_heartbeat)
    try:
        drop_metrics = await plane.subscribe_metrics(on_metrics)
        try:
            await asyncio.sleep(listen_s)
        finally:
            await drop_metrics()
    finally:
        await drop_heartbeats()
    return offsets, metrics, instances, beats


def _leased_by_its_word(s: NodeStatus) -> bool:
    """Whether a heartbeat says its node holds a lease: its expiry and its sending time
    are both on the node's own clock, so this holds whatever that clock's offset."""
    return s.admitted and not s.left and s.lease_expires_ns > s.seen_ns


async def run_preflight(
    plane: ControlPlane,
    scope: Scope,
    key: str,
    *,
    clock: Clock,
    config: PreflightConfig | None = None,
    acknowledged: Collection[str] = (),
    trust: TrustStore | None = None,
) -> Checklist:
    """Every check against the store of record and what the nodes say now; only reads.

    `acknowledged` holds the reason codes the resume request acknowledges (the
    cause of a Guard halt). With `trust`, kill-state entries are judged as nodes
    judge them (one that does not verify, or a resume the store's history does not
    show lifting its halt, is a halt), and so are flag values (`flag_problems`);
    without it no flag value can be verified, so any stored one fails `flags`.
    """
    cfg = config if config is not None else PreflightConfig()
    key = FLEET_KEY if scope is Scope.FLEET else key
    offsets, heard, instances, beats = await _listen(plane, clock, cfg.listen_s)
    now = clock.time_ns()
    # A store that cannot be read fails the items that need it, each naming the store:
    # before, the first one raised out of the preflight, and the operator got one line
    # naming a bucket (exit 2), no checklist and no item to fix.
    unread: dict[str, str] = {}

    async def read(store: str, reading: Awaitable[T], empty: T) -> T:
        try:
            return await reading
        except ControlPlaneUnavailable as exc:
            unread[store] = f"the {store} store could not be read ({exc})"
            return empty

    def unreadable_by(*stores: str) -> str:
        return "; ".join(unread[s] for s in stores if s in unread)

    states = await read("kill-state", judged(plane, trust), {})
    members_read = await read("membership", plane.members(), [])
    records = {m.node_id: m for m in members_read if not m.left}
    # A stored lease's expiry is on its node's clock: a node whose clock runs a second or
    # more behind ours looked expired, was listed as fenced and checked for nothing (its
    # clock least of all), then took the resume and traded. A node whose heartbeat says
    # it holds a lease is judged as trading, and so is one heard with no readable record.
    live_by_beat = {n for n, s in beats.items() if _leased_by_its_word(s)}
    members = [beats[n] if n in live_by_beat else m for n, m in records.items()] + [
        s for n, s in sorted(beats.items()) if n in live_by_beat and n not in records
    ]
    items: list[CheckItem] = []

    # halted: the scope must be halted, and by which entry
    entry, revision = states.get(slot_of(scope, key), (None, 0))
    kill_ns = now
    if "kill-state" in unread:
        items.append(CheckItem("halted", False, unreadable_by("kill-state")))
    elif entry is None or entry.state is TradingState.ACTIVE:
        items.append(CheckItem("halted", False, f"{scope.value} {key!r} is not halted"))
    else:
        items.append(
            CheckItem(
                "halted",
                True,
                f"{TradingState(entry.state).name} by {entry.actor}: {entry.reason!r}",
            )
        )
        # in force from when the store wrote it, if its issuer's clock ran ahead (a kill
        # dated after the flag changes made under it); else from its own date, the earlier
        # (unread: no kill time, and the flags cannot be judged against one)
        written = await read(
            "kill-state history", plane.stored_ns(entry.scope, entry.key, revision), None
        )
        kill_ns = min(entry.issued_ns, now if written is None else written)

    # which nodes will trade: members holding a lease, not halted on their own. A node
    # without a lease (refused at admission, fenced for drift, gone) cannot trade: it is
    # listed as fenced, and joins only through admission later.
    trading: list[str] = []
    staying: list[str] = []
    fenced: list[str] = []
    for m in members:
        if scope is Scope.NODE and m.node_id != key:
            continue
        if m.node_id not in live_by_beat and (not m.admitted or m.lease_expires_ns < now):
            fenced.append(m.node_id)
            continue
        if _node_halted(states, m.node_id) is not None and not (
            scope is Scope.NODE and m.node_id == key
        ):
            staying.append(m.node_id)
            continue
        trading.append(m.node_id)
    by_id = {m.node_id: m for m in members}

    # release: every trading node admitted on the target; target known-good or newly signed
    # a record that does not decode cannot be checked: it fails the item, naming it
    unreadable: list[str] = []
    target_value, _ = await read("release", plane.get_record(Bucket.RELEASE, TARGET_KEY), (None, 0))
    target = None
    if target_value is not None:
        try:
            target = TARGET_DECODER.decode(target_value)
        except UNDECODABLE as exc:
            unreadable.append(f"target release record undecodable ({exc})")
    verdicts: dict[str, Verdict] = {}
    admission = await read("admission", plane.records(Bucket.ADMISSION), {})
    for n, (stored, _) in sorted(admission.items()):
        try:
            verdicts[n] = VERDICT_DECODER.decode(stored)
        except UNDECODABLE as exc:
            if n in trading:
                unreadable.append(f"{n}: admission verdict undecodable ({exc})")
    good = await read("incident", known_good(plane), None)
    if unreadable_by("release", "admission", "incident"):
        unreadable.insert(0, unreadable_by("release", "admission", "incident"))
    if unreadable:
        items.append(
            CheckItem(
                "release",
                False,
                "; ".join(unreadable) + " -- cannot check the release: re-attest or reset it",
            )
        )
    elif target is None:
        items.append(
            CheckItem("release", not verdicts, "no target release set (fleet runs unattested)")
        )
    else:
        bad = []
        for n in trading:
            v = verdicts.get(n)
            if v is None:
                bad.append(f"{n}: no admission verdict")
            elif not v.admitted:
                bad.append(f"{n}: {v.status} ({v.detail})")
            elif v.release_id != target.release_id:
                bad.append(f"{n}: admitted on {v.release_id}, target is {target.release_id}")
            elif now - v.at_ns > cfg.max_verdict_age_s * NS_PER_S:
                bad.append(f"{n}: verdict {(now - v.at_ns) / 1e9:.0f}s old (re-attest)")
        origin = (
            "the known-good release"
            if good is None or good.release_id == target.release_id
            else f"newly signed (known-good was {good.release_id}), set by {target.actor}"
        )
        items.append(
            CheckItem(
                "release",
                not bad,
                "; ".join(bad) + " -- fix the node or roll the target back"
                if bad
                else f"{len(trading)} node(s) admitted on {target.release_id}, {origin}"
                + (f"; fenced, not trading: {', '.join(sorted(fenced))}" if fenced else ""),
            )
        )

    # flags: the values nodes would evaluate after the resume, judged as nodes judge them
    only = key if scope is Scope.NODE else None
    flags = await read("flags", plane.records(Bucket.FLAGS), {})
    problems = flag_problems(flags, verdicts, trust, kill_ns, now, only_node=only)
    # the values, the kill's time they are judged by, each node's schema: all needed
    cannot = unreadable_by("flags", "kill-state", "kill-state history", "admission")
    items.append(
        CheckItem(
            "flags",
            not problems and not cannot,
            f"{cannot} -- cannot judge the flag state"
            if cannot
            else "; ".join(problems) + ": set the flag to its safe default before resuming"
            if problems
            else "every flag value verifies and none moved away from its safe default "
            "during the kill",
        )
    )

    # guard: armed, lease live, flight recorder writing, one process behind the node id
    # (a second one trades on its own Guard and limits: twice the node's exposure)
    bad = []
    for n in trading:
        m = by_id[n]
        met = heard.get(n)
        if m.duplicate or len(instances.get(n, ())) > 1:
            other = f" ({m.duplicate})" if m.duplicate else ""
            bad.append(f"{n}: another process claims this node id{other}: stop it, restart {n}")
        if not m.armed:
            bad.append(f"{n}: Guard not armed")
        if m.node_id not in live_by_beat and m.lease_expires_ns < now:
            bad.append(f"{n}: lease expired")
        if met is None or now - met.at_ns > cfg.max_metrics_age_s * NS_PER_S:
            bad.append(f"{n}: no metrics heard in {cfg.listen_s:g}s")
        elif not met.recorder_ok:
            bad.append(f"{n}: flight recorder not writing")
    if "membership" in unread:
        bad.insert(0, f"{unread['membership']} -- cannot name the nodes that will trade")
    elif not trading:
        bad.append("no live node would trade")
    items.append(
        CheckItem(
            "guard",
            not bad,
            "; ".join(bad) if bad else f"{len(trading)} node(s) armed, leased, recording",
        )
    )

    # clocks: every trading node's offset within the bound
    bad = []
    worst = 0.0
    for n in trading:
        off = offsets.get(n)
        if off is None:
            bad.append(f"{n}: no heartbeat heard in {cfg.listen_s:g}s")
            continue
        worst = max(worst, abs(off))
        if abs(off) > cfg.max_clock_offset_ms:
            bad.append(f"{n}: clock off by {off:+.0f} ms (bound {cfg.max_clock_offset_ms:g} ms)")
    items.append(
        CheckItem(
            "clocks",
            not bad,
            "; ".join(bad) + " -- fix time sync"
            if bad
            else f"worst offset {worst:.1f} ms <= {cfg.max_clock_offset_ms:g} ms",
        )
    )

    # alerts: no supervisor halt open in the scope (a node's own halt keeps it out instead)
    open_alerts = [
        f"{e.scope.value} {e.key!r}: {e.reason}"
        for e, _ in states.values()
        if e.actor == SUPERVISOR_ID
        and e.state is not TradingState.ACTIVE
        and e.scope is not Scope.NODE
        and (entry is None or e.command_id != entry.command_id)
        and _overlaps(scope, key, e)
    ]
    items.append(
        CheckItem(
            "alerts",
            not open_alerts and "kill-state" not in unread,
            f"{unread['kill-state']} -- cannot tell which alerts are open"
            if "kill-state" in unread
            else "open: " + "; ".join(open_alerts) + " -- resolve and resume those first"
            if open_alerts
            else "no supervisor alert open"
            + (f"; staying halted: {', '.join(staying)}" if staying else ""),
        )
    )

    # crash loop: more than K starts in M minutes keeps the node halted. Judged for every
    # node in the scope not halted on its own, fenced ones too: a crash-looping node is
    # between two restarts (no lease) as often as not, and rejoins to trade after the
    # resume unless it is halted on its own now. By the record's key, the node it is for.
    returning = [
        n for n in fenced if _node_halted(states, n) is None or (scope is Scope.NODE and n == key)
    ]
    judged_nodes = {starts_key(n): n for n in (*trading, *returning)}
    looping: list[tuple[str, int, str]] = []
    unchecked: list[str] = []
    starts_read = await read("incident", plane.records(Bucket.INCIDENT), {})
    if "incident" in unread:
        unchecked.append(unread["incident"])
    for k, (raw, written_rev) in sorted(starts_read.items()):
        node = judged_nodes.get(k)
        if node is None:
            continue
        try:
            starts = STARTS_DECODER.decode(raw)
        except UNDECODABLE as exc:
            # a node's start record that cannot be read cannot show it is not looping
            unchecked.append(f"{k}: undecodable ({exc})")
            continue
        # The starts are dated by the node's own clock: one running more than the window
        # behind (a fenced node: no clock check looks at it) dated every start of its loop
        # "long ago" and passed, then rejoined to trade. The record's last write is its
        # last start by the server's clock; the starts shifted onto that clock count too.
        behind = 0
        if starts.started_ns and plane.keeps_write_times:
            try:
                written_at = await plane.record_stored_ns(Bucket.INCIDENT, k, written_rev)
            except ControlPlaneUnavailable as exc:
                unchecked.append(f"{k}: when the store wrote it could not be read ({exc})")
                continue
            if written_at is not None:
                behind = max(0, written_at - max(starts.started_ns))
        window_ns = cfg.crash_loop_window_s * NS_PER_S
        recent = [t for t in starts.started_ns if now - (t + behind) <= window_ns]
        if len(recent) > cfg.crash_loop_starts:
            own = sum(1 for t in starts.started_ns if now - t <= window_ns)
            clock_note = (
                f" (by the store's clock: {node}'s own runs {behind / NS_PER_S:.0f} s behind)"
                if own <= cfg.crash_loop_starts
                else ""
            )
            looping.append((node, len(recent), clock_note))
    bad = [
        f"{n} restarted {c} times in {cfg.crash_loop_window_s / 60:g} min{note}"
        for n, c, note in looping
    ]
    items.append(
        CheckItem(
            "crash_loop",
            not looping and not unchecked,
            "; ".join(bad) + " -- it stays halted; find why it crashes"
            if looping
            else "; ".join(unchecked) + " -- cannot tell whether it is crash-looping"
            if unchecked
            else f"no node started more than {cfg.crash_loop_starts} times "
            f"in {cfg.crash_loop_window_s / 60:g} min",
        )
    )

    # cause: a halt the Guard raised itself needs its cause acknowledged
    # (a restored operator halt carries the Guard's actor with the operator latch: no cause).
    # By the code the actor names, not `entry.source`: that reads a code this version does
    # not know (a newer node's) as the operator latch, which passed with nothing acknowledged
    # A halt held for an entry that does not verify (unsigned, a key the roster does not
    # hold) is `trust:unverified`'s: what the stored entry claims can only add a check.
    # Before, a Guard halt stored that way read as "operator or supervisor halt: nothing
    # to acknowledge" and the slot resumed with its loss limit never reconciled, while
    # the same halt properly signed needed `--ack`.
    # Under a stored write that lifts nothing, every write back to the first one that
    # verifies is walked (bounded by the writes the store keeps), and each Guard halt on
    # the way is asked for. Before, only the write just before it was looked at: a
    # loss-limit halt under two forged or replayed resumes read as "nothing to
    # acknowledge" and the slot resumed with its loss unreconciled.
    # Whoever halted on top (an operator killing the node, the supervisor, a re-halt
    # before a resume), the walk goes on to the last resume that verifies: a halt stored
    # over a Guard halt lifts nothing of it. Before, a signed operator or supervisor halt
    # over a loss-limit halt read as "nothing to acknowledge", and the slot resumed with
    # its loss never reconciled (after a restart the node holds the halt on top alone).
    causes: list[tuple[StateEntry, str]] = []
    hidden_unread = ""
    if entry is not None and "kill-state" not in unread:
        try:
            causes = await _hidden_guard_halts(plane, scope, key, entry, revision, trust)
        except ControlPlaneUnavailable as exc:
            hidden_unread = f"the kill-state history could not be read ({exc})"
    causes = [
        (c, note)
        for c, note in causes
        if c.actor.startswith(GUARD_ACTOR)
        and c.actor.removeprefix(GUARD_ACTOR) != RejectReason.HALTED.value
    ]
    if "kill-state" in unread or hidden_unread:
        why = unread.get("kill-state", hidden_unread)
        items.append(CheckItem("cause", False, f"{why} -- cannot tell who halted it"))
    elif causes:
        codes = list(dict.fromkeys(c.actor.removeprefix(GUARD_ACTOR) for c, _ in causes))
        said = "; ".join(
            f"the Guard halted on {_code_named(c.actor.removeprefix(GUARD_ACTOR))}{note} "
            f"({c.reason})"
            for c, note in causes
        )
        missing = [c for c in codes if c not in acknowledged]
        acks = " ".join(f"--ack {c}" for c in missing)
        items.append(
            CheckItem(
                "cause",
                not missing,
                f"{said}: acknowledged"
                if not missing
                else f"{said}: acknowledge it with {acks} after finding the cause",
            )
        )
    else:
        items.append(
            CheckItem("cause", True, "operator or supervisor halt: nothing to acknowledge")
        )

    looping_nodes = tuple(n for n, _, _ in looping)
    return Checklist(scope, key, tuple(items), tuple(sorted(trading)), looping_nodes)


def _code_named(code: str) -> str:
    return code if code in _KNOWN_CODES else f"{code!r}, a code this version does not know"


async def _hidden_guard_halts(
    plane: ControlPlane,
    scope: Scope,
    key: str,
    entry: StateEntry,
    revision: int,
    trust: TrustStore | None,
) -> list[tuple[StateEntry, str]]:
    """The halts in force on the slot whose write at `revision` nodes hold as `entry`,
    with how each was found, newest first: `entry` itself (for a write that lifts nothing,
    held as `trust:unverified`, what that write claims), then every earlier halt back to
    the last resume that verifies as nodes judge it (what is under that was lifted). A
    halt stored over another lifts nothing of it, whoever signed it; writes that lift
    nothing (a forged or replayed resume, a delete marker, garbage, an unsigned halt) are
    walked over, and a halt among them counts as claimed, which can only add a cause.
    Bounded by the writes the store keeps of the slot (`STATE_HISTORY`). Raises
    `ControlPlaneUnavailable`."""
    found: list[tuple[StateEntry, str]] = []
    if entry.actor == UNVERIFIED_ACTOR:
        claimed, claimed_rev = await plane.get_state(scope, key)
        if (
            claimed is not None
            and claimed_rev == revision
            and claimed.state is not TradingState.ACTIVE
        ):
            found.append((claimed, " (its stored entry does not verify; it claims so)"))
        top = f"the stored entry at revision {revision}, which does not verify and lifts nothing"
    else:
        found.append((entry, ""))
        top = f"the halt by {entry.actor} stored at revision {revision}, which lifts nothing"
    proofs = ResumeProofs(plane)
    for before, rev in reversed(await plane.state_history(scope, key, revision)):
        if before is None:
            continue  # a delete marker, or a value that is no entry: lifts nothing
        ok = await _verifies(plane, proofs, before, rev, trust)
        if before.state is TradingState.ACTIVE:
            if ok:
                break  # a resume that lifted the halt under it: in force no more
            continue
        why = "" if ok else f"; its own entry at revision {rev} does not verify either"
        if entry.actor != UNVERIFIED_ACTOR and not ok:
            why = f"; its own entry at revision {rev} does not verify"
        found.append((before, f" (under {top} under it{why})"))
    return found


async def _verifies(
    plane: ControlPlane,
    proofs: ResumeProofs,
    entry: StateEntry,
    revision: int,
    trust: TrustStore | None,
) -> bool:
    """Whether the slot's write of `entry` at `revision` is in force as nodes judge it
    (as `judged` judges a slot's latest write)."""
    if trust is None:
        return entry.state is not TradingState.ACTIVE or (
            await unproven_resume(plane, entry, revision) is None
        )
    try:
        await proofs.judge(entry, revision, trust.roster, now_ns=0)
    except Refused:
        return False
    return True


def flag_problems(
    records: Mapping[str, tuple[bytes, int]],
    verdicts: Mapping[str, Verdict],
    trust: TrustStore | None,
    kill_ns: int,
    now_ns: int,
    *,
    only_node: str | None = None,
) -> list[str]:
    """What is wrong with the flag state a resume would trade on, one line per flag and fault.

    Judged as each node judges it (`check_flag_proof`, against the roster and the flag
    schema of the node's admitted release), never by the unsigned change log: a value
    whose proof does not verify, and a signed change away from the safe default issued
    at or after the kill (`kill_ns`), approved or not: every node refuses it (during the
    kill and after the resume, `frozen_by_kill`), so the fleet would resume on values
    the store does not show; it is put back first, and issued again afterwards. A node
    without a value evaluates its safe default and is fine. `only_node`: a node kill
    judges that node's values alone.
    """
    found: dict[str, list[str]] = {}
    roster = trust.roster if trust is not None else None
    for k, (raw, _) in sorted(records.items()):
        if not k.startswith("state."):
            continue
        try:
            state = STATE_DECODER.decode(raw)
        except UNDECODABLE:
            found.setdefault(f"{k}: undecodable flag state", [])
            continue
        for node, value in sorted(state.node_values.items()):
            if only_node is not None and node != only_node:
                continue
            v = verdicts.get(node)
            try:
                verdict = check_flag_proof(
                    state.proofs.get(node, ""),
                    roster,
                    flag_id=state.flag_id,
                    node=node,
                    value=value,
                    schema=dict(v.flag_schema) if v is not None and v.admitted else {},
                    now_ns=now_ns,
                    live=False,
                )
            except Refused as exc:
                what = f"{state.flag_id}={value} does not verify ({exc.reason.value}: {exc.detail})"
            else:
                if not verdict.away or verdict.issued_ns < kill_ns:
                    continue
                by = verdict.checked.actor
                if verdict.checked.approvers:
                    by += f", approved by {', '.join(verdict.checked.approvers)}"
                turned = "on" if value else "off"
                what = f"{state.flag_id} -> {turned} by {by}, issued during the kill"
            found.setdefault(what, []).append(node)
    return [f"{what} on {', '.join(nodes)}" if nodes else what for what, nodes in found.items()]


async def halt_crash_loops(
    checklist: Checklist, killswitch: KillSwitch, pager: Pager | None, clock: Clock
) -> list[str]:
    """Halt each crash-looping node on its own and page; returns the nodes whose halt was
    stored (a node between two restarts confirms nothing: the stored halt is what keeps it
    out when it comes back).

    The halts go out together, and each node is paged whatever became of its halt: one
    kill that raised, or waited out a store that is down, neither held back the others
    nor was reported as "halted and paged" (the kill's result was not read, so a halt
    never sent was named as done)."""
    nodes = list(checklist.crash_looping)
    reason = "crash loop: {} restarted too often; stays halted until fixed"
    results = await asyncio.gather(
        *(killswitch.kill(Scope.NODE, node, reason.format(node), timeout_s=0.5) for node in nodes),
        return_exceptions=True,
    )
    halted = []
    for node, result in zip(nodes, results, strict=True):
        why = reason.format(node)
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result  # a cancellation is not a failed halt
            why += f"; its halt FAILED ({result}): halt it by hand"
        elif result.revision is None:
            sent = "was sent but not stored" if result.sent else "was NOT sent"
            detail = result.durable_error or result.unreachable
            why += f"; its halt {sent}{f' ({detail})' if detail else ''}: halt it by hand"
        else:
            halted.append(node)
        action = Action(
            Rule.CRASH_LOOP, Scope.NODE, node, TradingState.HALTED, why, clock.time_ns()
        )
        if pager is not None:
            await pager.page(action)
        else:
            log.critical("PAGE rule=%s %s", action.rule.value, action.reason)
    return halted
