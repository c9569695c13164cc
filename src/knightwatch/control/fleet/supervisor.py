"""The supervisor: fleet-level anomaly detection that halts before a person could react.

Knight's monitoring watched prices, not volume; the runaway server's order rate
was the signal nobody looked at. Comparing a node with its peers (rate against
the fleet median, P&L against the peers' median) sees one odd node, but not a
fleet where every node runs away at once (Knight's rollback put the old code on
all eight), nor a node bleeding at twice its normal pace. So besides the peer
rules the supervisor holds each node, and the fleet as a whole, to a
**baseline**: a configured profile (`[supervisor.profile]`) or what the node and
the fleet did themselves over the last `baseline_s` (an average over the history
so far, judged once `warmup_s` of it is in, and never fed from a window that is
itself in alarm). Until then the rates are held to their floors as baseline, so a
runaway from the first second is not learned as normal; and a learned baseline
never rises above the limit in force when it came into force, so a ramp slow
enough for the average to follow cannot carry the limit to any rate (children per
parent, a running average since the node started that long-worked parents raise all day,
is not held so). The fleet's totals (its rates and principal flow) are held to the sum of the
own baselines of the nodes taking part now, so most of a fleet halted for a while, then
resumed, is its normal again, not a runaway of the few left meanwhile, and nor is one node
doing most of the fleet's flow resumed after its halt (learned as one per-node figure, the
small nodes' pace became every node's). The fleet's children per parent counts only the
nodes working parents (a node with none sends no children). Six measures
have baselines: accepted order rate, executed notional rate, the firm's own
(principal) notional rate, child orders per parent, messages per execution and a
node's cancel rate (cancels the venue confirmed, a replace it took counting as one, and
cancel requests for orders its Guard did not hold, which no venue confirms: a
cancel/replace loop, a quoter pulling every tick, or a loop cancelling ids that do not
exist, inside its order-rate limit and still filling, moved no other measure; held per
node, not as a fleet total; the cancels a signed kill, halt or drain makes, of the node,
the fleet, or a strategy or symbol, the node ACTIVE, are the stop direction and not
counted for `stop_cancels_s`: `stopping`).
A measure over `baseline_multiple` x its baseline (and its floor) for a full
rate window halts the node (or, for the fleet's total, the fleet); the episode
ends only after a full rate window back under it, so a sawtooth dipping under
once a window does not restart the count. A node's rates are also averaged over
`count_window_s` (since its last halt): over the limit there halts it too, so a train
of bursts each shorter than the window (over it for one metrics interval less than
the window), a window or more apart, is halted however short each burst is once it has
gone over the limit `TRAIN_BURSTS` times in that span (or as many times within
`TRAIN_BURSTS` x that span, each burst putting the average over the limit, and the average
over that longer span over it too: 30,000 orders every 31 s, 48x a node's normal, passed for
good), while a basket now and then is not
(one basket of 1,500 orders on a node doing 2 a second averages over its limit for a
minute). The order-rate rule judges what a node
offered, accepted or refused (throttling by rate limits included): a strategy
hammering the Guard is a runaway the Guard is hiding; what a stopped scope refused (a
killed strategy resending into its kill) reaches no market and is left out (`_offered`).
A node working only its customers' parents is judged on those refusals alone, and only
once they have stayed over the limit for `count_window_s` (as the reject rule judges
throttling): an open whose customer orders outrun the node's rate limit for a few
seconds is the Guard working, and halting it left customers' parents unfilled. The
fleet's totals leave out a node already over its own limit (its own rule halts it), so one node's
leak or glitch never halts the whole fleet with it. Principal
flow halts at once, because an agency router's normal principal flow is nil (and
stays nil: it is never learned) and the Guard books every fill beyond its parent
there. A node held at
`bleed_multiple` x its order-rate baseline for `bleed_window_s` while its P&L
falls by `bleed_loss` is a slow bleed and is halted too. Every alert names the
baseline it crossed, learned or configured, and by how much.

It also watches fleet gross exposure and block/reject spikes (throttling by a
rate limit is the Guard working, not a broken node, and is not counted there, until
over `reject_ratio` of a node's orders have been refused for `count_window_s` on end:
a node filing every refusal as throttling from its first interval was never judged),
refuses a node that reported errors before it was armed, and halts a node that
stopped reporting (a node nobody can see is not one anybody is supervising) or
whose metrics cannot be read (a negative count, an amount that is not a finite
number, a count or amount beyond 2^53 (a wrapped counter, whose one-sample jump
no windowed rule held): each made some rule silently pass; an exposure that
cannot be read counts as over the cap). A node's counters go on across its
restart (they count from 0 again; every one of them, under a new `instance`), so the
windows it is judged over never lose what it did before it; a counter that goes back
under the same process (`NodeMetrics.instance`) is no restart but unreadable, and so
is a block reason's count or the refusals that are not throttling going back, or more
blocks than refusals (the refusals less throttling went negative and read as a restart,
hiding a reject spike),
or a node or fleet state no `TradingState` names (read as a halt already in force, it
held back every action on the node), or more principal notional than notional (the firm's
own is part of the total), or a node reporting HALTED whose accepted orders grow in a second
interval of one run of HALTED samples from the same process (one interval may be a resume
and a halt between two samples). An unreadable node's halt is issued though it reports
itself halted: its state is part of what cannot be believed. An agency router's own
flow summed over a day is held to `principal_day_multiple` x `principal_floor` (a leak
kept under the floor in every window went on for good; the day is stored in the
control plane and read back at start (`DayRecord`), so a restart gives no node a fresh
day, and a history that cannot be read halts its node), and one node's gross
exposure to `node_exposure_share` x `gross_exposure_cap` (the fleet's cap names
no node). Each node's learned baselines in force are stored with its day, at most a
minute apart, and a restarted supervisor judges the node against them from its first
sample (stored within the hour): learned afresh, a runaway under way at the restart (a
cancel/replace loop under the floors, nothing filled) became the node's normal.
An action already in force (the node or the fleet reports that state) is never
issued again, except for unreadable metrics (above); a drain issued over a halt of its
scope never loosens it (the kill switch and the nodes keep the stricter kill). It is
pure logic on an injected clock: the live service feeds it metrics from NATS, the
replay feeds it from MemoryControlPlane, and both act on its `Action`s through the same kill switch.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TypeVar

import msgspec

from knightwatch.clock import Clock
from knightwatch.control.plane.wire import FLEET_KEY, NodeMetrics
from knightwatch.inputs import UNDECODABLE, load_toml
from knightwatch.limits import scaled_percent
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import SKEW_NS


class Rule(StrEnum):
    """Stable reason codes for automatic actions (dashboards and pages key on them)."""

    ORDER_RATE = "supervisor_order_rate"
    PNL_DEVIATION = "supervisor_pnl_deviation"
    GROSS_EXPOSURE = "supervisor_gross_exposure"
    REJECT_SPIKE = "supervisor_reject_spike"
    ERRORS_BEFORE_ARMING = "supervisor_errors_before_arming"
    STALE_METRICS = "supervisor_stale_metrics"
    RAMP_TRIP = "ramp_trip"
    CRASH_LOOP = "crash_loop"
    BASELINE_ORDER_RATE = "supervisor_baseline_order_rate"
    BASELINE_NOTIONAL_RATE = "supervisor_baseline_notional_rate"
    PRINCIPAL_FLOW = "supervisor_principal_flow"
    BASELINE_CHILDREN_PER_PARENT = "supervisor_baseline_children_per_parent"
    BASELINE_MESSAGES_PER_EXECUTION = "supervisor_baseline_messages_per_execution"
    SLOW_BLEED = "supervisor_slow_bleed"
    UNREADABLE_METRICS = "supervisor_unreadable_metrics"
    PRINCIPAL_DAY = "supervisor_principal_day"
    NODE_GROSS_EXPOSURE = "supervisor_node_gross_exposure"
    BASELINE_CANCEL_RATE = "supervisor_baseline_cancel_rate"


class Measure(msgspec.Struct, frozen=True):
    """One baselined measure: its rule, how it reads, and whether it halts at once."""

    name: str
    rule: Rule
    unit: str
    at_once: bool = False
    """Halt on the first window over the limit (no sustain): principal flow."""
    additive: bool = True
    """The fleet's value is the sum of the nodes' (rates), not a ratio of totals."""


MEASURES: tuple[Measure, ...] = (
    Measure("order_rate", Rule.BASELINE_ORDER_RATE, "orders/s"),
    Measure("notional_rate", Rule.BASELINE_NOTIONAL_RATE, "$/s"),
    Measure("principal_notional", Rule.PRINCIPAL_FLOW, "$", at_once=True),
    Measure(
        "children_per_parent", Rule.BASELINE_CHILDREN_PER_PARENT, "children/parent", additive=False
    ),
    Measure(
        "messages_per_execution",
        Rule.BASELINE_MESSAGES_PER_EXECUTION,
        "orders/execution",
        additive=False,
    ),
    Measure("cancel_rate", Rule.BASELINE_CANCEL_RATE, "cancels/s"),
)
"""The measures held to a baseline, per node and for the fleet (cancels per node only: a
storm on every node at once is each node's over its own baseline)."""
_ADDITIVE = {m.name: m.additive for m in MEASURES}
_WARMUP_FLOORED = ("order_rate", "notional_rate", "cancel_rate")
"""Measures held to their floor as baseline while a learned one warms up."""
_UNHELD = ("children_per_parent",)
"""Measures whose learned baseline is not held to its first limit (`_Baseline.hold`): a
node's accepted orders over the parents it registered since it started is a day's running
average, not a rate. An agency router working parents registered at the open (a VWAP slicing
each all day) raises it at a steady pace all day: held, 10 parents at one child a second
each were halted at 500 children a parent, 8 minutes in. A runaway of children still moves
it 5x past its learned average in seconds to a minute; unfilled children are messages per
execution's to halt, and fills beyond a parent principal flow's."""
TRAIN_BURSTS = 3
"""Times a node's rate must go over its limit within `count_window_s`, with its average
over that window over the limit too, to be halted as a train of bursts each shorter than
the rate window; one or two baskets a minute are not. So many bursts each putting that
average over the limit, within `TRAIN_BURSTS` x `count_window_s` and with the average over
that span over the limit too, are a train as well: one every 31 to 90 s was never three
within one window, at any size."""
CUSTOMER_REFUSALS = 0.01
"""Share of a rate window's orders an agency router may have refused (throttling aside) and
still be working only its customers' parents (`customers_only`): a per-order cap refusing a
child now and then is the Guard trimming a basket. With none allowed, one child a second
refused out of a 2,000-a-second basket at the open had the router halted as a 100x runaway,
its customers' parents left unfilled; a router sending children beyond its parents has
them refused (`parent_qty_exceeded`) at far more than this as its parents fill."""
_BLED = ("order_rate", "notional_rate")
"""The rates a slow bleed is held on (`Supervisor._bleed`): more orders, or bigger ones."""
_CUSTOMER_RATES = ("order_rate", "notional_rate")
"""The rates a node working only its customers' parents (`customers_only`) is let off: a big
parent at a busy open is fast, not broken. Its children per parent and its messages per
execution are still judged: a loop placing children within its parents that never fill (or
cancel and replace them) was let off every rule, at any rate, for good."""


class BaselineProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one healthy node normally does, when the operator knows it (a configured
    baseline); a measure left unset is learned from the fleet's own history instead."""

    order_rate: float | None = None
    """Accepted child orders per second."""
    notional_rate: float | None = None
    """Executed notional per second."""
    principal_notional: float | None = None
    """Executed notional that is the firm's own (beyond or without a parent) within
    `principal_window_s`."""
    children_per_parent: float | None = None
    messages_per_execution: float | None = None
    cancel_rate: float | None = None
    """Cancels the venue confirmed per second (a replace it took counts as one)."""

    def __post_init__(self) -> None:
        bad = [
            f"profile.{m.name}: must be >= 0 and finite (got {v!r})"
            for m in MEASURES
            if (v := getattr(self, m.name)) is not None and not (0 <= v < math.inf)
        ]
        if bad:
            raise ValueError("invalid supervisor profile:\n  " + "\n  ".join(bad))


class SupervisorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Thresholds; the defaults suit a fleet of equity routers doing tens of orders a second.

    Peer rules: `rate_multiple` x the fleet median order rate (and `rate_floor_per_s`)
    for `rate_window_s`; `pnl_deviation` from the peers' median. Baseline rules: a
    measure over `baseline_multiple` x its baseline and over its floor
    (`rate_floor_per_s`, `notional_floor_per_s`, `principal_floor`,
    `children_per_parent_floor`, `messages_per_execution_floor`, `cancel_floor_per_s`;
    for the fleet's rates and principal flow, the floor times the nodes taking part) for
    `rate_window_s`; baselines are `profile` values or learned over `baseline_s`
    after `warmup_s`. Principal flow is the firm's own executed notional within
    `principal_window_s` (long enough to see a slow leak, judged at every sample).
    The reject spike and messages per execution need `reject_min_orders` orders: a
    node that sends fewer within `rate_window_s` is judged on its last
    `reject_min_orders`, looking back as far as `count_window_s` (and no further
    than its last halt). An agency router's own flow within a day is held to
    `principal_day_multiple` x `principal_floor`, and one node's gross exposure to
    `node_exposure_share` x `gross_exposure_cap`.
    """

    rate_multiple: float = 5.0
    rate_floor_per_s: float = 20.0
    rate_window_s: float = 1.0
    min_peers: int = 2
    pnl_deviation: float = 50_000.0
    gross_exposure_cap: float = 50_000_000.0
    reject_ratio: float = 0.5
    reject_min_orders: int = 50
    count_window_s: float = 60.0
    stale_after_s: float = 5.0
    baseline_multiple: float = 5.0
    baseline_s: float = 300.0
    warmup_s: float = 30.0
    notional_floor_per_s: float = 250_000.0
    principal_floor: float = 10_000.0
    principal_window_s: float = 60.0
    children_per_parent_floor: float = 100.0
    messages_per_execution_floor: float = 10.0
    cancel_floor_per_s: float = 20.0
    """No node is halted on its cancel rate at or under this, whatever its baseline: a
    quoting node cancels about as often as it sends (the order-rate floor's scale)."""
    stop_cancels_s: float = 10.0
    """Cancels a node confirms within this after a signed kill, halt or drain of a scope it
    may trade in was issued (`Supervisor.stopping`) are that stop's: its cancel rate is
    neither judged nor learned while its rate window reaches into that span. A strategy's
    kill leaves its nodes ACTIVE, and the thousands of orders it had working, cancelled in a
    second or two, halted each node (every other strategy on it) as a cancel storm."""
    bleed_multiple: float = 1.5
    bleed_window_s: float = 60.0
    bleed_loss: float = 10_000.0
    principal_day_multiple: float = 10.0
    """An agency router's own flow within a day may reach this x `principal_floor`: a leak
    kept under the floor in every `principal_window_s` is halted when its sum gets there."""
    node_exposure_share: float = 0.5
    """One node's gross exposure over this share of `gross_exposure_cap` puts that node into
    REDUCING (named), as the total over the cap does the fleet."""
    profile: BaselineProfile = BaselineProfile()

    def __post_init__(self) -> None:
        checks = (
            ("rate_multiple", self.rate_multiple > 1, "must be > 1"),
            ("rate_floor_per_s", self.rate_floor_per_s >= 0, "must be >= 0"),
            ("rate_window_s", self.rate_window_s > 0, "must be > 0"),
            ("min_peers", self.min_peers >= 1, "must be >= 1"),
            ("pnl_deviation", self.pnl_deviation > 0, "must be > 0"),
            ("gross_exposure_cap", self.gross_exposure_cap > 0, "must be > 0"),
            ("reject_ratio", 0 < self.reject_ratio <= 1, "must be in (0, 1]"),
            ("reject_min_orders", self.reject_min_orders >= 1, "must be >= 1"),
            (
                "count_window_s",
                self.count_window_s >= self.rate_window_s,
                "must be >= rate_window_s",
            ),
            ("stale_after_s", self.stale_after_s > 0, "must be > 0"),
            ("baseline_multiple", self.baseline_multiple > 1, "must be > 1"),
            ("baseline_s", self.baseline_s > 0, "must be > 0"),
            ("warmup_s", self.warmup_s >= 0, "must be >= 0"),
            ("notional_floor_per_s", self.notional_floor_per_s >= 0, "must be >= 0"),
            ("principal_floor", self.principal_floor >= 0, "must be >= 0"),
            ("principal_window_s", self.principal_window_s > 0, "must be > 0"),
            ("children_per_parent_floor", self.children_per_parent_floor >= 0, "must be >= 0"),
            (
                "messages_per_execution_floor",
                self.messages_per_execution_floor >= 0,
                "must be >= 0",
            ),
            ("cancel_floor_per_s", self.cancel_floor_per_s >= 0, "must be >= 0"),
            ("stop_cancels_s", self.stop_cancels_s >= 0, "must be >= 0"),
            ("bleed_multiple", self.bleed_multiple > 1, "must be > 1"),
            ("bleed_window_s", self.bleed_window_s > 0, "must be > 0"),
            ("bleed_loss", self.bleed_loss > 0, "must be > 0"),
            ("principal_day_multiple", self.principal_day_multiple >= 1, "must be >= 1"),
            ("node_exposure_share", 0 < self.node_exposure_share <= 1, "must be in (0, 1]"),
        )
        problems = [f"{f}: {rule} (got {getattr(self, f)!r})" for f, ok, rule in checks if not ok]
        # an infinite threshold passed every check above and silently disabled its rule (an
        # exposure cap of inf), or made every judgement raise: a window or a limit in
        # seconds is counted in nanoseconds (a stale_after_s of inf, or of 1e300)
        named = {f for f, ok, _ in checks if not ok}
        seconds = {f for f in self.__struct_fields__ if f.endswith("_s") and "_per_" not in f}
        problems += [
            f"{f}: must be finite{' (in nanoseconds too)' if f in seconds else ''} (got {v!r})"
            for f in self.__struct_fields__
            if f not in named
            and isinstance(v := getattr(self, f), float | int)
            and not math.isfinite(v * 1e9 if f in seconds else v)
        ]
        if problems:
            raise ValueError("invalid supervisor config:\n  " + "\n  ".join(problems))

    def floor(self, measure: str) -> float:
        return {
            "order_rate": self.rate_floor_per_s,
            "notional_rate": self.notional_floor_per_s,
            "principal_notional": self.principal_floor,
            "children_per_parent": self.children_per_parent_floor,
            "messages_per_execution": self.messages_per_execution_floor,
            "cancel_rate": self.cancel_floor_per_s,
        }[measure]

    @classmethod
    def from_toml(cls, path: Path) -> SupervisorConfig:
        """The `[supervisor]` table of a TOML file (absent: the defaults).

        The supervisor command and the rollout driver both load their thresholds
        here, so a rollout gate and an automatic halt judge the same numbers.
        Raises ValueError naming the file and the offending key.
        """
        data = load_toml(path, "supervisor config")
        try:
            return msgspec.convert(data.get("supervisor", {}), cls)
        except msgspec.ValidationError as exc:
            raise ValueError(f"supervisor config {path}: [supervisor] {exc}") from None


class Action(msgspec.Struct, frozen=True):
    """One automatic halt: which rule, which scope, why (with the numbers)."""

    rule: Rule
    scope: Scope
    key: str
    state: TradingState
    reason: str
    at_ns: int


ACTIONS_KEPT = 10_000
"""How many of its latest actions a supervisor (and its service, with their results) keeps
for reading back (`Supervisor.actions`); `Supervisor.acted` counts every one. A node that
never confirms its halt is halted again at every sample: kept whole, the list grew by one
action a second for as long as the supervisor ran."""

_T = TypeVar("_T")


def keep_latest(log: list[_T], kept: int) -> None:
    """Drop the oldest entries of `log` once it holds twice `kept`, leaving the latest
    `kept`: a long-running process's record of what it did stays bounded, at an amortised
    constant cost per entry."""
    if len(log) >= 2 * kept:
        del log[:-kept]


DAY_KEY_PREFIX = "supervisor_day."
"""Incident-bucket keys of the day history (`DayRecord`): `supervisor_day.<node>`."""


def day_key(node_id: str) -> str:
    return f"{DAY_KEY_PREFIX}{node_id}"


class DayRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the daily rule (`supervisor_principal_day`) has counted of one node, as stored in
    the control plane so a restarted supervisor goes on counting the same day: held in
    memory only, every restart gave a node that had booked most of its day a fresh one."""

    node_id: str
    at_ns: int
    """Wall-clock time of the sample this record was taken at."""
    instance: str
    """The node's process then (`NodeMetrics.instance`)."""
    raw: float
    """`principal_notional` as the node sent it then (its process's own count)."""
    value: float
    """The principal flow as the supervisor had continued it across node restarts then."""
    points: list[tuple[int, float]]
    """(wall-clock ns, continued principal flow), a minute apart over the last day, oldest
    first."""
    own_flow: bool = False
    """The node trades for itself (it is no agency router, whatever parents it works)."""
    baselines: dict[str, tuple[float, float | None]] = {}
    """Each learned baseline in force then, by measure: (value, anchor: its value when it came
    into force, `_Baseline.anchor`). Taken back at the node's first sample if the record is at
    most `BASELINE_KEEP_NS` old: held in memory only, a restarted supervisor judged every node
    against the floors for `warmup_s` and then learned what it did meanwhile, so a runaway
    under way (a cancel/replace loop under the order-rate floor, nothing filled) became the
    node's normal and ran for good."""


BASELINE_KEEP_NS = 3_600 * 1_000_000_000
"""Stored baselines older than this (the supervisor down an hour, or the node silent) are
not taken back: the desk's normal may have changed meanwhile, and the node is learned afresh."""
_MEASURE_NAMES = frozenset(m.name for m in MEASURES)

_DAY_DECODER = msgspec.json.Decoder(DayRecord)
_DAY_ENCODER = msgspec.json.Encoder()


def _day_problems(key: str, rec: DayRecord) -> list[str]:
    """Why a decoded day record cannot be believed (empty: it can)."""
    out = []
    if key != day_key(rec.node_id):
        out.append(f"node_id {rec.node_id!r} is not the key's node")
    amounts = [rec.raw, rec.value, *(v for _, v in rec.points)]
    if not all(math.isfinite(v) and 0 <= v < _MAX for v in amounts):
        out.append("an amount is negative, not finite or beyond 2^53")
    elif rec.raw > rec.value or any(v > rec.value for _, v in rec.points):
        out.append("a point or the raw count is above the flow it was continued to")
    if any(a[0] > b[0] or a[1] > b[1] for a, b in zip(rec.points, rec.points[1:], strict=False)):
        out.append("points go back in time or in flow")
    for name, (value, anchor) in sorted(rec.baselines.items()):
        # a baseline beyond any rate turns its rule off for good, a negative one halts at once
        if name not in _MEASURE_NAMES:
            out.append(f"baselines[{name!r}] is no baselined measure")
        elif not all(math.isfinite(v) and 0 <= v < _MAX for v in (value, anchor) if v is not None):
            out.append(
                f"baselines[{name!r}] ({value!r}, {anchor!r}) is negative, not finite or "
                "beyond 2^53"
            )
    return out


class NodeHealth(msgspec.Struct, frozen=True):
    """One node as the supervisor's rules see it, over its rate window.

    The rules and every reader of fleet health (rollout gates, live and in the
    replay) take these numbers from here, so a gate and a halt can never
    disagree about what "healthy" meant. Baselines count only participating
    peers (armed and admitted): a refused or idle node's zero rate is not part
    of what normal looks like, nor is a halted one's (the rate median and `peers`
    leave it out; its P&L still counts for the P&L median).
    """

    node_id: str
    participating: bool
    order_rate: float
    """Orders (accepted or blocked) per second over the window, those a stopped scope
    blocked aside (`_offered`)."""
    fleet_median_rate: float
    """Median of this node's rate and its participating peers' rates (halted ones aside)."""
    order_rate_ratio: float
    """`order_rate` over the baseline `max(median, rate_floor_per_s / rate_multiple)`: the
    rate rule's condition is `order_rate_ratio > rate_multiple`. 0 at or below
    `rate_floor_per_s`, or while the node works only its customers' parents
    (`customers_only`): no rate anomaly for a rule or a gate (a rollout gate at 3x
    would otherwise abort on one healthy burst of big parents)."""
    peers: int
    window_orders: int
    """Orders in the span the reject spike judges: the rate window, or as far back as it
    takes to hold `reject_min_orders` of them (`count_window_s`, since the last halt)."""
    reject_ratio: float
    """Share of those orders blocked or rejected, throttling by rate limits excluded."""
    pnl: float
    pnl_deviation: float | None
    """P&L minus the participating peers' median; None with fewer than `min_peers` peers."""
    gross_exposure: float
    armed: bool
    errors: int
    measures: dict[str, float] = {}
    """Each baselined measure's value now (absent when it cannot be measured yet)."""
    baselines: dict[str, float] = {}
    """The baseline each measure is held to (absent while a learned one warms up)."""
    customers_only: bool = False
    """Every child in the window went out within a customer's registered parent and at most
    `CUSTOMER_REFUSALS` of them were refused (throttling aside): `order_rate_ratio` is then 0
    and the rate rules pass
    it by; principal flow, rejects and the rest still judge it."""
    rate_judged: bool = True
    """The node had at least `min_peers` participating peers: its `order_rate_ratio` above
    the floor compares it with a fleet. With fewer, the median is mostly the node itself
    (a one-node fleet's ratio is 1 however fast it runs): the rate rule passes it by and
    `gauges` leaves the ratio out, so a rollout gate on it fails rather than promotes."""

    def gauges(self) -> dict[str, float]:
        """Named numbers for health gates (`HealthGate.metric`); undefined ones are absent.
        Each baselined measure `m` gives `m` and, once it has a baseline, `m_baseline_ratio`."""
        out = {
            "order_rate": self.order_rate,
            "reject_ratio": self.reject_ratio,
            "window_orders": float(self.window_orders),
            "pnl": self.pnl,
            "gross_exposure": self.gross_exposure,
            "errors": float(self.errors),
        }
        if self.rate_judged or self.order_rate_ratio == 0.0:  # 0: at or under the floor
            out["order_rate_ratio"] = self.order_rate_ratio
        if self.pnl_deviation is not None:
            out["pnl_deviation"] = self.pnl_deviation
        for name, value in self.measures.items():
            out["accepted_order_rate" if name == "order_rate" else name] = value
            base = self.baselines.get(name)
            if base is not None:
                out[f"{name}_baseline_ratio"] = _ratio(value, base)
        return out


def _ratio(value: float, base: float) -> float:
    if base > 0:
        return value / base
    return math.inf if value > 0 else 0.0


_STOPS = ("halted", "reducing_only")
"""Block reasons of a scope a kill or a drain stopped. An expired lease or a Guard not armed
still counts: the node's own trouble (its loop stalled, say), which a rollout's health
gate and the spike must see."""
_THROTTLES = (
    "rate_node",
    "rate_strategy",
    "rate_symbol",
    "max_turnover",
    "execution_throttle",
    *_STOPS,
)
"""Block reasons left out of the reject spike: a throughput cap throttling (orders, notional
or executions per window), and a scope a kill or a drain stopped, each doing its job.
Counted, a strategy's kill made every node still sending in that strategy a reject spike,
halted by the supervisor on top (one more two-person resume per node). The turnover cap
was counted until stop 48: a rolling minute's notional refuses everything for the last
seconds of each minute a flow runs just over it, and `knightwatch up`'s default fleet (20
orders/s of $10k against $10M a minute) had every node halted as rejecting 50 s after it
started. A node held at its throughput caps for `count_window_s` on end is still halted
(`Supervisor._rejects`, throttling included)."""

_TRIMMED = (
    "max_order_qty",
    "max_order_notional",
    "max_position",
    "max_gross_exposure",
    "max_net_exposure",
)
"""Block reasons of the limits a resume ramp's stage scales down (`limits.RAMP_SCALED_KEYS`;
its rates, turnover and execution throttle are `_THROTTLES` already). While a node reports a
stage's limits (`NAME@10%`), its refusals under them are the ramp trimming a normal flow,
not a reject spike: counted, a flow the stage's caps trimmed had its nodes halted as
rejecting, and the ramp tripped at its first stage (one more two-person resume per node,
and a ramp that could never finish). A runaway during a ramp is the ramp's own spike
rule's to trip (`incident.ramp`), as it is the stage's limits it hits."""


def _ramping(m: NodeMetrics | None) -> bool:
    """Whether the node reports a resume ramp's stage limits (below 100%)."""
    return m is not None and scaled_percent(m.limits_version) < 100


_COUNTERS = (
    "orders", "rejected", "accepted", "fills", "notional", "principal_notional", "stopped",
    "cancels",
)  # fmt: skip
"""Cumulative counters, kept continuous across a node's restart (`Supervisor._continued`)."""
_COUNTS = (
    "orders", "accepted", "rejected", "fills", "errors", "parents", "lowered", "cancels",
    "unknown_cancels",
)  # fmt: skip
_AMOUNTS = ("gross_exposure", "pnl", "notional", "principal_notional")
_MONOTONE = (
    "orders", "accepted", "rejected", "fills", "notional", "principal_notional", "lowered",
    "cancels", "unknown_cancels",
)  # fmt: skip
"""Counters that only grow within one process: going back under the same instance is a lie."""
_STATES = frozenset(int(s) for s in TradingState)
_DAY_NS = 86_400 * 1_000_000_000
_DAY_STEP_NS = 60 * 1_000_000_000
"""An agency router's principal flow is kept a day back, one point a minute."""
_MAX = 2**53
"""No count or amount reaches this (a million orders a second for 285 years): beyond it a
float no longer holds every whole number. A value there is a wrapped unsigned counter or a
flipped bit, and its one-sample jump passed every windowed rule (never sustained)."""


def unreadable(m: NodeMetrics) -> list[str]:
    """Why a sample cannot be judged: a count below 0, an amount that is not a finite
    number, an exposure or executed notional below 0, a count or amount beyond 2^53, more
    accepted or refused orders than orders, more blocks (summed over their reasons) than
    refused orders, more principal notional than notional, a node or fleet state that is
    no `TradingState`. Empty when every field reads."""
    out = [f"{f} {getattr(m, f)!r} < 0" for f in _COUNTS if getattr(m, f) < 0]
    out += [
        f"{f} {getattr(m, f)!r} not finite" for f in _AMOUNTS if not math.isfinite(getattr(m, f))
    ]
    out += [
        f"{f} {v!r} < 0"
        for f in ("gross_exposure", "notional", "principal_notional")
        if (v := getattr(m, f)) < 0
    ]
    out += [f"blocks[{r!r}] {n!r} < 0" for r, n in sorted(m.blocks.items()) if n < 0]
    out += [
        f"{f} {v!r} beyond 2^53"
        for f in (*_COUNTS, *_AMOUNTS)
        if math.isfinite(v := getattr(m, f)) and abs(v) >= _MAX
    ]
    out += [f"blocks[{r!r}] {n!r} beyond 2^53" for r, n in sorted(m.blocks.items()) if n >= _MAX]
    if m.accepted + m.rejected > m.orders >= 0:
        out.append(f"accepted {m.accepted} + rejected {m.rejected} > orders {m.orders}")
    if m.lowered > m.accepted >= 0:
        out.append(f"lowered {m.lowered!r} > accepted {m.accepted!r} (they are part of it)")
    if m.principal_notional > m.notional >= 0:
        # the firm's own executed notional is part of the total: more of it than the total
        # is a lie or a glitch, and the principal or notional rules judged a wrong number
        out.append(
            f"principal_notional {m.principal_notional!r} > notional {m.notional!r} "
            "(the firm's own is part of the total)"
        )
    # a state no TradingState names (a flipped bit, a lie) read as "halted already": every
    # action on the node was held back as in force, and it left the fleet's totals
    out += [
        f"{f} {v!r} is no trading state ({', '.join(f'{s.value} {s.name}' for s in TradingState)})"
        for f in ("node_state", "fleet_state")
        if (v := getattr(m, f)) not in _STATES
    ]
    blocked = sum(m.blocks.values())
    if blocked > m.rejected >= 0:
        # a node counts each refusal once under its reason: more blocks than refusals made
        # the refusals less throttling negative (read as a restart), or hid a reject spike
        throttled = _throttled(m)
        out.append(
            f"blocks {blocked} (summed over reasons, throttling {throttled}) > "
            f"rejected {m.rejected}"
        )
    return out


def _throttled(m: NodeMetrics) -> int:
    """Refusals filed under a rate limit or a stopped scope (`_THROTTLES`), left out of the
    reject spike."""
    return sum(m.blocks.get(r, 0) for r in _THROTTLES)


class _Sample(msgspec.Struct, frozen=True, array_like=True):
    t: int
    orders: int
    rejected: int
    accepted: int
    fills: int
    notional: float
    principal: float
    stopped: int = 0
    """Orders blocked by a stopped scope (`_STOPS`), as a running count."""
    cancels: int = 0
    """Cancels the venue confirmed and cancel requests for orders the Guard did not hold
    (`NodeMetrics.cancels`, `unknown_cancels`), continued across restarts."""
    stop: int = 0
    """The stricter of the node's and the fleet's state it reported (`TradingState`)."""


class _Baseline:
    """A learned (or configured) normal value for one measure of one node or the fleet."""

    __slots__ = (
        "anchor",
        "bursts",
        "exempt",
        "fixed",
        "last",
        "over_since",
        "since",
        "under_since",
        "value",
        "was_over",
    )

    def __init__(self, fixed: float | None = None) -> None:
        self.fixed = fixed
        self.value: float | None = fixed
        self.since: int | None = None
        self.last = 0
        self.over_since: int | None = None
        self.under_since: int | None = None
        """When the measure last went back under its limit within an episode: the episode
        ends only after a full rate window under it (`Supervisor._baseline_rules`)."""
        self.anchor: float | None = None
        """The learned value when it came into force (warm-up over): what bounds its rise."""
        self.bursts: deque[tuple[int, bool]] = deque()
        """When the measure went over its limit (from under it), and whether its average over
        `count_window_s` was over the limit then (a big burst), within the last
        `TRAIN_BURSTS` x `count_window_s`: `TRAIN_BURSTS` of them within `count_window_s`, or
        as many big ones, make a train (`Supervisor._baseline_rules`)."""
        self.was_over = False
        self.exempt = False
        """The node works its customers' parents only (`customers_only`) and the measure is
        over its own limit: its own rule lets it be, and so does the fleet's total (a big
        parent on one agency router halted a small fleet it shared with firm nodes)."""

    def current(self, now: int, warmup_ns: int) -> float | None:
        """The baseline in force now: the configured value, or the learned one after warm-up."""
        if self.fixed is not None:
            return self.fixed
        if self.since is None or now - self.since < warmup_ns:
            return None
        return self.value

    def learn(self, value: float, now: int, tau_ns: int) -> None:
        if self.fixed is not None:
            return
        if self.since is None or self.value is None:
            self.since, self.last, self.value = now, now, value
            return
        # an average over the history so far until it spans `tau_ns`, then an exponential
        # one: started from its first sample alone, 30 s of warm-up left the baseline 90%
        # that sample (a fleet's first total, before all its nodes had reported, say)
        weight = min(1.0, (now - self.last) / min(tau_ns, max(now - self.since, 1)))
        self.value += (value - self.value) * weight
        self.last = now

    def pause(self, now: int) -> None:
        """A sample not learned (the node halted, ramping or in alarm): the time up to it
        is no interval of the next sample learned. Counted, the first sample after a
        ten-minute halt and ramp weighed 90% of the baseline: a ramp's last seconds with
        its turnover window full (0 accepted orders a second) became the node's normal,
        and its flow at full limits tripped the ramp at its last stage."""
        if self.since is not None:
            self.last = now

    def hold(self, now: int, warmup_ns: int, ceiling: Callable[[float], float]) -> None:
        """Keep a learned baseline in force at or below `ceiling(anchor)`, the limit that
        was in force when it came into force: a ramp slow enough for the average to follow
        (each window under `baseline_multiple` x the last) would otherwise carry the
        baseline, and the limit with it, to any rate at all."""
        if self.fixed is not None or self.since is None or self.value is None:
            return
        if now - self.since < warmup_ns:
            return
        if self.anchor is None:
            self.anchor = self.value
        self.value = min(self.value, ceiling(self.anchor))


class _Track:
    """One node's (or the fleet's) baselines and the state of each baseline rule."""

    __slots__ = (
        "agency",
        "baselines",
        "bleed_since",
        "counts",
        "customers_only",
        "long",
        "longer",
        "measures",
        "own_flow",
        "pnl",
        "refused_rate",
        "summed",
        "window_full",
    )

    def __init__(self, config: SupervisorConfig) -> None:
        prof = config.profile
        self.baselines = {m.name: _Baseline(getattr(prof, m.name)) for m in MEASURES}
        self.measures: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        """How many nodes each additive measure sums (the fleet's totals; absent: one): its
        floor is that times the per-node floor, and its baseline their own summed
        (`summed`): learned as a total, most of a fleet halted for twenty minutes taught it
        the few left as normal, and their resume at their normal rates halted the fleet."""
        self.agency = False
        """Works registered customer parents and never traded for itself before: its normal
        principal flow is nil from the start (a firm trading for itself, customers or not,
        has its principal baseline learned like the rest)."""
        self.own_flow = False
        """Principal flow was seen while the node had no customer parent: it trades for
        itself, so a customer parent arriving later does not make it an agency router."""
        self.window_full = False
        """The principal window spans `principal_window_s`: only then is its amount learned
        (a window still filling would teach a ramp)."""
        self.customers_only = False
        """In the last rate window every child went out within a customer's parent and at most
        `CUSTOMER_REFUSALS` of them were refused (throttling aside): the node is working its
        customers' orders, however
        fast, and the rate rules leave it be (a big parent at a busy open is no runaway)."""
        self.long: dict[str, tuple[float, float]] = {}
        """A node's rates (`_CUSTOMER_RATES`) averaged over its counted span once that spans
        `count_window_s` (value, seconds): a burst shorter than a rate window was over its
        limit for less than a window (one metrics interval fewer than the window), so a
        train of them, each a window under the limit apart, was never held over it (1,000
        orders in 0.2 s every 2.2 s, 23x a node's normal rate, for good). Empty for the
        fleet and while the span is shorter (a single burst after a resume is no train)."""
        self.longer: dict[str, float] = {}
        """The same rates over the node's history (`_NodeTrack.history`: `TRAIN_BURSTS` x
        `count_window_s` since its last halt) once that spans `count_window_s`: what a train
        of bursts further apart than a third of the window is judged on."""
        self.bleed_since: int | None = None
        self.pnl: deque[tuple[int, float]] = deque()
        self.refused_rate = 0.0
        """Orders refused per second over the rate window, throttling by rate limits
        included: the order-rate rule judges what the node offered, not only what the Guard
        let through (a strategy hammering the Guard is a runaway the Guard is hiding)."""
        self.summed: dict[str, float | None] = {}
        """The fleet's additive baselines: the sum of the own baselines of the nodes its total
        counts now (None: one of them has none yet). Learned as one per-node figure, the fleet
        took a node's mix for every node's: a node doing most of the fleet's flow halted for
        a while taught it the small nodes' pace, and the fleet was halted when it resumed."""


class _NodeTrack:
    __slots__ = (
        "bad",
        "base",
        "based",
        "claim",
        "claim_grew",
        "counted",
        "day",
        "excused",
        "history",
        "latest",
        "offset",
        "over_since",
        "principal",
        "raw",
        "samples",
        "saved",
        "seen",
        "throttled_since",
        "throttled_under",
        "trimmed",
    )

    def __init__(self, config: SupervisorConfig) -> None:
        self.raw: tuple[float, ...] | None = None
        """The cumulative counters of the node's last sample, as it sent them."""
        self.offset: tuple[float, ...] = (0.0,) * len(_COUNTERS)
        """What each counter had reached before it went back (a restart starts from 0)."""
        self.bad: list[str] = []
        """Why the node's last sample could not be read (empty: it could)."""
        self.samples: deque[_Sample] = deque()
        self.counted: deque[_Sample] = deque()
        """Samples over `count_window_s` since the node's last halt (`Supervisor._counted`)."""
        self.history: deque[_Sample] = deque()
        """Samples over `TRAIN_BURSTS` x `count_window_s` since the node's last halt
        (`_Track.longer`)."""
        self.principal: deque[tuple[int, float]] = deque()
        self.day: deque[tuple[int, float]] = deque()
        """Principal flow a minute apart over the last day (`Supervisor._principal_day`)."""
        self.saved: tuple[bool, float] | None = (False, 0.0)
        """(own flow, principal flow) as last handed out to be stored (`Supervisor.day_records`);
        None: to be stored at the next sample whatever it holds."""
        self.latest: NodeMetrics | None = None
        self.claim: tuple[str, int] | None = None
        """(instance, accepted) of the node's last sample that reported it HALTED (None:
        its last sample did not), for `Supervisor._halted_yet_accepting`."""
        self.claim_grew = 0
        """Intervals in which accepted orders grew between two samples that both reported
        HALTED, since the node last reported another state or process."""
        self.over_since: int | None = None
        self.throttled_since: int | None = None
        """Since when over `reject_ratio` of its orders were refused, throttling included
        (`Supervisor._rejects`)."""
        self.throttled_under: int | None = None
        """When that share last went back under `reject_ratio` within an episode."""
        self.seen = 0
        self.excused = 0
        """Nanoseconds the supervisor itself was stalled since `seen` (`Supervisor.missed`):
        no part of the node's silence."""
        self.trimmed = 0
        """Refusals under a ramp stage's limits (`_TRIMMED`) while the node reported that
        stage, summed over its samples: left out of its refusals as throttling is."""
        self.base = _Track(config)
        self.based: int | None = None
        """When its learned baselines were last handed out to be stored (`DayRecord.baselines`;
        None: never, or not stored): they go out again a minute later."""

    @property
    def participating(self) -> bool:
        return self.latest is not None and self.latest.armed and self.latest.admitted

    @property
    def halted(self) -> bool:
        m = self.latest
        return m is not None and max(m.node_state, m.fleet_state) >= TradingState.HALTED


class Supervisor:
    def __init__(self, config: SupervisorConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self._nodes: dict[str, _NodeTrack] = {}
        self._fleet = _Track(_fleet_config(config))
        self._fleet_judged = -1
        self._firing: set[tuple[Rule, str]] = set()
        self._restored: dict[str, DayRecord] = {}
        """Day histories read back from the store (`restore`), applied at each node's first
        sample."""
        self._unvouched: set[str] = set()
        """Nodes whose stored day history could not be read: stored afresh at their first
        sample (their halt was issued at `restore`)."""
        self._unvouched_halts: dict[str, str] = {}
        """Why `restore` halted each node whose stored day history could not be read, until
        the node reports itself halted: a halt that did not take effect (`rearm`) is issued
        again at the node's next judgement (`_retry_unvouched`)."""
        self._retry_unvouched: set[str] = set()
        self._dirty: set[str] = set()
        self._stop_cancels: dict[str, int] = {}
        """Node id -> monotonic ns until which its cancels are a stop's (`stopping`)."""
        self._stop_cancels_all = 0
        """Monotonic ns until which every node's cancels are a stop's (of the fleet, a
        strategy or a symbol)."""
        self.actions: list[Action] = []
        """The latest actions, oldest first (`ACTIONS_KEPT` of them at least, never twice
        as many)."""
        self.acted: dict[Rule, int] = dict.fromkeys(Rule, 0)
        """Every action taken since this supervisor started, by rule (a counter: never
        trimmed like `actions`)."""

    def rate(self, node_id: str) -> float:
        """Orders offered per second over the last window, as seen by this supervisor: the
        ones a stopped scope refused aside (`_offered`)."""
        track = self._nodes.get(node_id)
        if track is None or len(track.samples) < 2:
            return 0.0
        a, b = track.samples[0], track.samples[-1]
        return _offered(a, b) / ((b.t - a.t) / 1e9) if b.t > a.t else 0.0

    def record(self, m: NodeMetrics) -> _NodeTrack:
        """Take one metrics sample into the node's window and learn its baselines, without
        judging it (watch only)."""
        now = self.clock.monotonic_ns()
        track = self._nodes.setdefault(m.node_id, _NodeTrack(self.config))
        track.seen = now
        track.excused = 0
        track.bad = unreadable(m) or _went_back(track.latest, m)
        if not track.bad:
            track.bad = self._halted_yet_accepting(track, m)
        if track.bad:  # judged by `observe` as unreadable; nothing of it is learned or summed
            return track
        throttled = _throttled(m)
        last = track.latest
        # another process (`instance`) counts from 0, whatever it reached before this sample
        restarted = last is not None and m.instance != last.instance
        if last is not None and not restarted and _ramping(m):
            # what this interval refused under the stage's limits, never more than all it
            # refused less throttling (so the refusals judged never go back)
            step = sum(m.blocks.get(r, 0) - last.blocks.get(r, 0) for r in _TRIMMED)
            room = (m.rejected - throttled) - (last.rejected - _throttled(last))
            track.trimmed += max(0, min(step, room))
        track.latest = m
        stops = sum(m.blocks.get(r, 0) for r in _STOPS)
        orders, rejected, accepted, fills, notional, principal, stopped, cancels = (
            self._continued(
                track, (m.orders, m.rejected - throttled, m.accepted, m.fills, m.notional,
                        m.principal_notional, stops, m.cancels + m.unknown_cancels),
                restarted=restarted
            )
        )  # fmt: skip
        rejected -= track.trimmed
        track.samples.append(
            _Sample(now, int(orders), int(rejected), int(accepted), int(fills), notional,
                    principal, int(stopped), int(cancels), max(m.node_state, m.fleet_state))
        )  # fmt: skip
        window = int(self.config.rate_window_s * 1e9)
        while len(track.samples) > 2 and now - track.samples[1].t >= window:
            track.samples.popleft()
        counted = track.counted
        counted.append(track.samples[-1])
        if track.halted:  # what it refused while halted is no spike once it resumes
            while len(counted) > 1:
                counted.popleft()
            for baseline in track.base.baselines.values():
                baseline.bursts.clear()  # nor is a burst after its resume a train with these
        cwindow = int(self.config.count_window_s * 1e9)
        while len(counted) > 2 and now - counted[1].t >= cwindow:
            counted.popleft()
        history = track.history
        history.append(track.samples[-1])
        if track.halted:
            while len(history) > 1:
                history.popleft()
        while len(history) > 2 and now - history[1].t >= cwindow * TRAIN_BURSTS:
            history.popleft()
        track.principal.append((now, principal))
        pwindow = int(self.config.principal_window_s * 1e9)
        while len(track.principal) > 2 and now - track.principal[1][0] >= pwindow:
            track.principal.popleft()
        day = track.day
        if not day:
            self._resume_day(track, m, principal, now)
        if not day or now - day[-1][0] >= _DAY_STEP_NS:
            day.append((now, principal))
        while len(day) > 2 and now - day[1][0] >= _DAY_NS:
            day.popleft()
        base = track.base
        base.measures = self._measures(track)
        if m.parents == 0 and m.principal_notional > 0:
            base.own_flow = True
        if track.saved != (base.own_flow, 0.0 if base.own_flow else principal):
            self._dirty.add(m.node_id)  # a trading firm's own flow is its business: not kept
        base.agency = m.parents > 0 and not base.own_flow
        base.window_full = now - track.principal[0][0] >= 0.95 * pwindow
        a, b = track.samples[0], track.samples[-1]
        base.customers_only = (
            base.agency
            and b.principal <= a.principal
            and b.rejected - a.rejected <= CUSTOMER_REFUSALS * (b.orders - a.orders)
        )
        base.pnl.append((now, m.pnl))
        keep = int(self.config.bleed_window_s * 1e9)
        while len(base.pnl) > 2 and now - base.pnl[1][0] >= keep:
            base.pnl.popleft()
        # a halted node's quiet is not its normal: it neither learns nor counts for the fleet;
        # nor is a ramp stage's trimmed flow: learned, 10% of its flow for five minutes
        # became the node's baseline, and its normal flow at the next stage was 5x that,
        # halted, and every default ramp tripped at its second stage
        if not track.halted and track.participating and not _ramping(m):
            self._learn(base, now)
        else:
            for baseline in base.baselines.values():
                baseline.pause(now)
        if (track.based is None or now - track.based >= _DAY_STEP_NS) and self._learned(base, now):
            self._dirty.add(m.node_id)  # stored so a restarted supervisor judges it at once
        return track

    def _learned(self, track: _Track, now: int) -> dict[str, tuple[float, float | None]]:
        """The node's learned baselines in force now, as stored (`DayRecord.baselines`)."""
        warm = int(self.config.warmup_s * 1e9)
        return {
            name: (b.value, b.anchor)
            for name, b in track.baselines.items()
            if b.fixed is None and b.value is not None and b.current(now, warm) is not None
        }

    def observe(self, m: NodeMetrics) -> list[Action]:
        """Take one metrics sample; return the actions it triggers (each rule fires once
        per episode: it re-arms when its condition clears, or through `rearm`)."""
        track = self.record(m)
        now = track.seen
        fresh = self._fresh(now)
        out: list[Action] = self._unreadable(m.node_id, track)
        if track.bad:
            out += self._exposure(fresh)
            out += self._stale(now)
            return self._acting(out)
        health = self._health(m.node_id, fresh)
        out += self._errors_before_arming(m)
        out += self._order_rate(health, track, now)
        out += self._baseline_rules(track.base, Scope.NODE, m.node_id, now, 1)
        out += self._bleed(track.base, m.node_id, now)
        out += self._principal_day(track, m.node_id, now)
        out += self._node_exposure(m)
        out += self._pnl(health)
        out += self._rejects(health, track, now)
        out += self._exposure(fresh)
        out += self._fleet_baselines(fresh, now)
        out += self._stale(now)
        return self._acting(out)

    def _acting(self, out: list[Action]) -> list[Action]:
        """Record the actions just decided (`actions`, `acted`); returns them."""
        self.actions.extend(out)
        keep_latest(self.actions, ACTIONS_KEPT)
        for action in out:
            self.acted[action.rule] += 1
        return out

    def sweep(self) -> list[Action]:
        """Judge silence at the clock's current instant, with no sample to trigger it.

        Every `observe` does this too, but if the whole fleet goes quiet no sample
        arrives: the live service calls this on a timer so that case is caught.
        """
        out = self._stale(self.clock.monotonic_ns())
        return self._acting(out)

    def expect(self, node_ids: Iterable[str]) -> None:
        """Nodes the fleet's membership holds live (leased) as this supervisor starts: each is
        judged silent `stale_after_s` from now unless it reports. A supervisor knew only the
        nodes it had heard from, so one restarted while a node had gone quiet (its lease
        held, its orders flowing) never judged that node at all."""
        now = self.clock.monotonic_ns()
        for node_id in node_ids:
            if node_id not in self._nodes:
                track = self._nodes[node_id] = _NodeTrack(self.config)
                track.seen = now

    def stopping(self, scope: Scope, key: str, state: TradingState, issued_ns: int) -> bool:
        """A kill, halt or drain of (`scope`, `key`), issued at `issued_ns` (wall clock) and
        verified by the caller, is news: the nodes it covers (the node it names; every node
        for a fleet, strategy or symbol) cancel what they had working in it, and those
        cancels are the stop direction, not a storm. Their cancel rate is not judged (nor
        learned) until `stop_cancels_s` after it was issued. Counted, a strategy's kill left
        its nodes ACTIVE and halted each on its cancel rate, every other strategy with it.

        A resume, or a stop issued more than `stop_cancels_s` ago or more than the signing
        skew ahead of this clock (a replay: the nodes keep the newest entry, so it cancels
        nothing), excuses nothing. Returns whether it excused anything."""
        span = int(self.config.stop_cancels_s * 1e9)
        age = self.clock.time_ns() - issued_ns
        if state < TradingState.REDUCING or not -SKEW_NS <= age <= span:
            return False
        now = self.clock.monotonic_ns()
        until = now + span - max(age, 0)
        if scope is not Scope.NODE:
            self._stop_cancels_all = max(self._stop_cancels_all, until)
            return True
        stops = self._stop_cancels
        for k in [k for k, t in stops.items() if t <= now]:
            del stops[k]  # (bounded by the stops of the last `stop_cancels_s`)
        stops[key] = max(stops.get(key, 0), until)
        return True

    def missed(self, gap_s: float) -> None:
        """The supervisor itself was not running for the last `gap_s` (its process or event
        loop stalled): what the nodes sent meanwhile is still queued, unheard. That time is
        no node's silence, so the first sample judged after the stall does not halt the
        peers whose samples wait behind it; a node that stays silent is halted once it has
        been silent `stale_after_s` outside the supervisor's stalls. (Counted from the
        stall's end instead, a supervisor stalling every few seconds never judged a node
        that had gone silent, however long ago.)"""
        gap = int(min(max(gap_s, 0.0), 1e9) * 1e9) if math.isfinite(gap_s) else 0
        for track in self._nodes.values():
            # (no sample is taken while the supervisor is stalled: each was heard before it)
            track.excused += gap

    def rearm(self, rule: Rule, key: str) -> None:
        """Let `rule` fire again for `key` at the next judgement: its action did not
        take effect (a node did not confirm the halt, or the halt was not stored). A halt
        `restore` issued is issued again then though no rule's condition holds (its reason,
        a day history that cannot be read, does until the node reports the halt)."""
        self._firing.discard((rule, key))
        if rule is Rule.PRINCIPAL_DAY and key in self._unvouched_halts:
            self._retry_unvouched.add(key)

    def restore(self, stored: Mapping[str, bytes]) -> list[Action]:
        """Take back the day histories a previous supervisor stored (incident-bucket keys
        `supervisor_day.<node>`; other keys are ignored), each applied at that node's first
        sample. A history that cannot be decoded or believed cannot vouch for what the node
        booked today: the node is halted (`supervisor_principal_day`, naming the key), as a
        sample that cannot be read is, rather than the supervisor refusing to start (which
        would leave the whole fleet unsupervised), and its history is stored afresh. A halt
        of these that does not take effect (`rearm`) is issued again at the node's next
        judgement, until the node reports itself halted."""
        out: list[Action] = []
        for key, raw in sorted(stored.items()):
            if not key.startswith(DAY_KEY_PREFIX):
                continue
            node_id = key.removeprefix(DAY_KEY_PREFIX)
            try:
                rec = _DAY_DECODER.decode(raw)
                problems = _day_problems(key, rec)
            except UNDECODABLE as exc:
                problems = [str(exc)]
            if not problems:
                self._restored[node_id] = rec
                continue
            self._unvouched.add(node_id)
            why = (
                f"node {node_id}'s stored day history ({key}) cannot be read: "
                f"{'; '.join(problems)}; what it booked today cannot be vouched for"
            )
            self._unvouched_halts[node_id] = why
            out += self._fire(
                Rule.PRINCIPAL_DAY, node_id, True, Scope.NODE, TradingState.HALTED, why,
                trust_state=False,
            )  # fmt: skip
        return self._acting(out)

    def day_records(self) -> dict[str, bytes]:
        """The day histories changed since last taken, by incident-bucket key, encoded: what
        the service stores so a restarted supervisor goes on counting the same day."""
        out: dict[str, bytes] = {}
        wall, mono = self.clock.time_ns(), self.clock.monotonic_ns()
        for node_id in sorted(self._dirty):
            track = self._nodes[node_id]
            m, raw = track.latest, track.raw
            if m is None or raw is None or not track.samples:
                continue
            value = track.samples[-1].principal
            own = track.base.own_flow
            out[day_key(node_id)] = _DAY_ENCODER.encode(
                DayRecord(
                    node_id,
                    wall - (mono - track.samples[-1].t),
                    m.instance,
                    raw[_COUNTERS.index("principal_notional")],
                    value,
                    [] if own else [(wall - (mono - t), v) for t, v in track.day],
                    own,
                    self._learned(track.base, mono),
                )
            )
            track.saved = (own, 0.0 if own else value)
            track.based = mono
        self._dirty.clear()
        return out

    def unsaved(self, node_id: str) -> None:
        """The record `day_records` handed out for `node_id` was not stored: hand it out again
        at the node's next sample."""
        track = self._nodes.get(node_id)
        if track is not None:
            track.saved = None
            track.based = None

    def _resume_day(self, track: _NodeTrack, m: NodeMetrics, principal: float, now: int) -> None:
        """Go on with the node's stored day at its first sample: the stored points, shifted to
        this supervisor's count, then what the node booked since the record (all it counts
        now if it is another process, or its count went back); and its learned baselines, if
        the record is at most `BASELINE_KEEP_NS` old."""
        node_id = m.node_id
        if node_id in self._unvouched:
            self._unvouched.discard(node_id)
            track.saved = None  # store a history that reads, from now
        rec = self._restored.pop(node_id, None)
        if rec is None:
            return
        raw = m.principal_notional
        since = raw - rec.raw if m.instance == rec.instance and raw >= rec.raw else raw
        shift = principal - since - rec.value
        wall = self.clock.time_ns()
        for t, v in rec.points:
            track.day.append((now - max(0, wall - t), v + shift))
        track.base.own_flow = rec.own_flow
        track.saved = (rec.own_flow, 0.0 if rec.own_flow else principal - since)
        if abs(wall - rec.at_ns) > BASELINE_KEEP_NS:
            return  # too old to say what the node does now: learned afresh
        # in force at once and learned at the pace of a full history, as it was: the first
        # samples after the restart must not teach it a runaway
        since = now - int(max(self.config.warmup_s, self.config.baseline_s) * 1e9)
        for name, (value, anchor) in rec.baselines.items():
            b = track.base.baselines[name]
            if b.fixed is None:  # (a measure configured since is held to its profile)
                b.value, b.anchor, b.since, b.last = value, anchor, since, now

    def health(self) -> dict[str, NodeHealth]:
        """Every node heard from within `stale_after_s`, as the rules see it now (a node
        with a single sample has an empty window: no orders yet); read-only. A node missing
        here has not been heard from: gates fail closed on it."""
        fresh = self._fresh(self.clock.monotonic_ns())
        return {n: self._health(n, fresh) for n in sorted(fresh) if fresh[n].latest is not None}

    def _fresh(self, now: int) -> dict[str, _NodeTrack]:
        stale = int(self.config.stale_after_s * 1e9)
        return {n: t for n, t in self._nodes.items() if now - t.seen <= stale}

    @staticmethod
    def _continued(
        track: _NodeTrack, raw: tuple[float, ...], *, restarted: bool = False
    ) -> tuple[float, ...]:
        """The node's counters, continued across a restart: a counter that went back (a
        restarted node counts from 0 again) goes on from where it had reached, so the
        windows it is judged over never hold a negative span (which hid principal flow,
        refusals and unfilled orders until the pre-restart samples aged out). A sample from
        another process (`restarted`: a new `instance`) goes on from there for every
        counter, gone back or not: a restarted node that booked more before its first
        sample than its predecessor had reached was read as having booked only the
        difference (a $9k leak, a restart and $9.5k more within a minute passed the $10k
        principal floor)."""
        if track.raw is not None:
            track.offset = tuple(
                o + last if restarted or r < last else o
                for r, last, o in zip(raw, track.raw, track.offset, strict=True)
            )
        track.raw = raw
        return tuple(r + o for r, o in zip(raw, track.offset, strict=True))

    @staticmethod
    def _halted_yet_accepting(track: _NodeTrack, m: NodeMetrics) -> list[str]:
        """A node reporting HALTED (its own state or the fleet's) whose accepted orders go
        on growing: the counts contradict the claim, which held back every action on it as
        in force and kept it out of the fleet's totals.

        One interval of growth between two HALTED samples is no proof: the node may have
        been resumed, traded and been halted again between them. So the claim is judged
        over an unbroken run of HALTED samples from one process (`instance`): growth in a
        second interval of the run is unreadable, and so is every later sample of that run
        (a resume shows as a sample in another state, which ends the run). A halted Guard
        still accepts a replace that only lowers what is working (the stop direction): those
        (`lowered`) are left out. A sender without an instance (an older one) is read as one
        process: its restart counts from 0, which is no growth, while exempting it let a node
        that claims HALTED and sends no instance accept orders unjudged for good."""
        halted = max(m.node_state, m.fleet_state) >= TradingState.HALTED
        added = m.accepted - m.lowered  # a halted Guard accepts only replaces that lower
        last, track.claim = track.claim, ((m.instance, added) if halted else None)
        if not halted or last is None or last[0] != m.instance:
            track.claim_grew = 0
            return []
        if added > last[1]:
            track.claim_grew += 1
        if track.claim_grew < 2:
            return []
        return [
            f"accepted less lowered grew in {track.claim_grew} intervals (now {added!r}) while "
            f"the same process (instance {m.instance!r}) reported node_state {m.node_state!r}, "
            f"fleet_state {m.fleet_state!r}: a HALTED node accepts no new order"
        ]

    # ------------------------------------------------------------ measures and baselines

    def _measures(self, track: _NodeTrack) -> dict[str, float]:
        """The node's baselined measures over its window (absent: cannot be measured yet)."""
        a, b = track.samples[0], track.samples[-1]
        m = track.latest
        assert m is not None
        out: dict[str, float] = {}
        if b.t > a.t:
            dt = (b.t - a.t) / 1e9
            out["order_rate"] = (b.accepted - a.accepted) / dt
            track.base.refused_rate = max(0.0, _offered(a, b) - (b.accepted - a.accepted)) / dt
            out["notional_rate"] = (b.notional - a.notional) / dt
            excused = max(self._stop_cancels_all, self._stop_cancels.get(m.node_id, 0))
            if a.t >= excused and all(s.stop == TradingState.ACTIVE for s in track.samples):
                # a drain or a kill cancels what the node had working: the stop direction,
                # not a storm (measured, a drain's cancels escalated it to a halt, and a
                # kill's were still in the window after the resume and halted it again);
                # so does one of a strategy or a symbol, the node ACTIVE (`stopping`)
                out["cancel_rate"] = (b.cancels - a.cancels) / dt
        out["principal_notional"] = track.principal[-1][1] - track.principal[0][1]
        if m.parents > 0:
            out["children_per_parent"] = m.accepted / m.parents
        a, b = self._counted(track)
        sent, fills = b.accepted - a.accepted, b.fills - a.fills
        if sent >= self.config.reject_min_orders:
            out["messages_per_execution"] = sent / max(fills, 1)
        # the rates over the whole counted span (`_Track.long`): what offered (accepted or
        # refused) and executed there, once it spans count_window_s since the last halt
        first, last = track.counted[0], track.counted[-1]
        span = (last.t - first.t) / 1e9
        track.base.long = (
            {
                "order_rate": (_offered(first, last) / span, span),
                "notional_rate": ((last.notional - first.notional) / span, span),
            }
            if span >= 0.95 * self.config.count_window_s
            else {}
        )
        first = track.history[0]
        span = (last.t - first.t) / 1e9
        track.base.longer = (
            {
                "order_rate": _offered(first, last) / span,
                "notional_rate": (last.notional - first.notional) / span,
            }
            if span >= 0.95 * self.config.count_window_s
            else {}
        )
        return out

    def _counted(self, track: _NodeTrack) -> tuple[_Sample, _Sample]:
        """The span the reject spike and messages per execution judge: the rate window,
        or, if it holds fewer than `reject_min_orders` orders, back from the newest sample
        until it does (within `count_window_s`, since the last halt). A node sending a
        few orders a second is judged on its last `reject_min_orders` orders, not never."""
        a, b = track.samples[0], track.samples[-1]
        need = self.config.reject_min_orders
        if b.orders - a.orders >= need:
            return a, b
        first = track.counted[0]
        if first.orders <= b.orders < first.orders + need:
            return first, b  # counts only grow: no later sample reaches `need` either
        for s in reversed(track.counted):
            if b.orders - s.orders >= need:
                return s, b
        return track.counted[0], b

    def _learn(self, track: _Track, now: int) -> None:
        """Fold the measures into their baselines, except a measure in alarm: a runaway
        must not teach the supervisor that a runaway is normal."""
        cfg = self.config
        tau = int(cfg.baseline_s * 1e9)
        warm = int(cfg.warmup_s * 1e9)
        for name, value in track.measures.items():
            b = track.baselines[name]
            base = self._baseline(track, name, now, warm, 1)
            if (
                (base is not None and value > self._limit(name, base, 1))
                # nor may a suspected bleed become the node's normal
                or (name in _BLED and track.bleed_since is not None)
                or (name == "principal_notional" and not track.window_full)
            ):
                b.pause(now)
                continue
            b.learn(value, now, tau)
            if name not in _UNHELD:
                b.hold(now, warm, partial(self._limit, name, nodes=1))

    def _baseline(self, track: _Track, name: str, now: int, warm: int, nodes: int) -> float | None:
        """The baseline `name` is held to now: configured, learned, or, while a learned
        one warms up, its floor (for the fleet's rates, times the nodes taking part), so
        a runaway from the first second is judged against the floor and never learned
        as normal. The ratios have no such stand-in until they are learned (a quoting
        strategy's normal is many orders to a fill; a node trading for itself and for a
        customer sends many orders per parent), nor has a firm's own principal flow (its
        amount within a minute is its business); an agency router's is 0."""
        if name in track.summed:
            return track.summed[name]
        b = track.baselines[name]
        if name == "principal_notional" and track.agency and b.fixed is None:
            # an agency router: its normal own flow is nil, now and later; learning it
            # let a leak under the floor raise the limit to 5x that leak
            return 0.0
        base = b.current(now, warm)
        if base is not None:
            return base * nodes if _ADDITIVE[name] else base
        if name in _WARMUP_FLOORED:
            return self.config.floor(name) * nodes
        return None

    def _limit(self, name: str, base: float, nodes: int) -> float:
        cfg = self.config
        floor = cfg.floor(name)
        if _ADDITIVE[name]:
            floor *= nodes
        return max(cfg.baseline_multiple * base, floor)

    def _baseline_rules(
        self, track: _Track, scope: Scope, key: str, now: int, nodes: int
    ) -> list[Action]:
        cfg = self.config
        warm = int(cfg.warmup_s * 1e9)
        sustain = int(cfg.rate_window_s * 1e9)
        patience = int(cfg.count_window_s * 1e9)
        state = TradingState.HALTED
        who = "fleet" if scope is Scope.FLEET else f"node {key}"
        out: list[Action] = []
        every = nodes
        for m in MEASURES:
            nodes = track.counts.get(m.name, every)
            b = track.baselines[m.name]
            value = track.measures.get(m.name)
            base = self._baseline(track, m.name, now, warm, nodes)
            refused = track.refused_rate if m.name == "order_rate" else 0.0
            b.exempt = False
            hold = sustain
            if m.name in _CUSTOMER_RATES and track.customers_only:
                # what it has left is throttling: judged with the reject rule's patience
                hold = patience
                # working its customers' parents only: only what the Guard refused is judged,
                # and what it works over its own limit is left out of the fleet's total too
                b.exempt = (
                    value is not None
                    and base is not None
                    and value > self._limit(m.name, base, nodes)
                )
                value = refused if refused > 0 and value is not None else None
            elif value is not None:
                value += refused
            if value is None or base is None:
                b.over_since = b.under_since = None
                out += self._fire(m.rule, key, False, scope, state, "")
                continue
            limit = self._limit(m.name, base, nodes)
            # over its limit on average over count_window_s is held over it, however short
            # each burst (`_Track.long`); a node let off its rates (customers_only) aside
            long, span = track.long.get(m.name, (0.0, 0.0))
            # ... if it is a train: `TRAIN_BURSTS` times over its limit within the window. One
            # basket (1,500 orders at once on a node doing 2 a second) averages over the
            # limit for a minute too, and a basket now and then is no runaway
            over_now = value > limit
            if over_now and not b.was_over:
                # (big: the burst had the window's average over the limit as it came)
                b.bursts.append((now, long > limit))
            b.was_over = over_now
            while b.bursts and now - b.bursts[0][0] > patience * TRAIN_BURSTS:
                b.bursts.popleft()
            # ... or `TRAIN_BURSTS` bursts each big enough to hold the window's average over
            # the limit, within `TRAIN_BURSTS` x the window: counted within one
            # window only, 30,000 orders every 31 s (48x a node's normal) passed for good
            # (and the average over that span over the limit too: three 3,000-order baskets
            # 59 s apart each held the minute with the one before over it, at 3.5x normal)
            recent = sum(1 for t, _ in b.bursts if now - t <= patience)
            big = sum(1 for _, over in b.bursts if over)
            spaced = big >= TRAIN_BURSTS and track.longer.get(m.name, 0.0) > limit
            train = long > limit and not track.customers_only and (recent >= TRAIN_BURSTS or spaced)
            if value <= limit and not train:
                # an episode ends after a full rate window under the limit, not one sample:
                # a sawtooth dipping under it once a window (2,000/s for 0.2 s in every
                # 1.2 s, 3x the limit on average) reset the sustain each time, for good
                if b.under_since is None:
                    b.under_since = now
                if b.over_since is None or now - b.under_since >= sustain:
                    b.over_since = b.under_since = None
                    out += self._fire(m.rule, key, False, scope, state, "")
                continue
            b.under_since = None
            if b.over_since is None:
                b.over_since = now
            held = m.at_once or now - b.over_since >= hold or train
            kind = "configured" if b.fixed is not None else "learned"
            if m.name in track.summed:
                kind = "nodes' own summed"
            elif m.name in _WARMUP_FLOORED and b.current(now, warm) is None:
                kind = "warm-up (floor)"
            if value <= limit or (train and now - b.over_since < hold):
                value, over = long, f" on average over the last {span:,.0f} s"
                refused = 0.0  # (the rate window's refusals are not what this names)
            else:
                over = "" if m.at_once else f" for >= {hold / 1e9:g} s"
            times = f"{value / base:,.1f}x" if base > 0 else "above"
            floor = cfg.floor(m.name) * (nodes if m.additive else 1)
            why = (
                f"{who} {m.name} {_num(value)} {m.unit}, {times} its {kind} baseline "
                f"{_num(base)} {m.unit} (limit {_num(limit)} = max({cfg.baseline_multiple:g}x "
                f"baseline, floor {_num(floor)}))"
                + over
                + (f", {_num(refused)} {m.unit} of it refused by the Guard" if refused else "")
            )
            out += self._fire(m.rule, key, held, scope, state, why)
        return out

    def _bleed(self, track: _Track, node_id: str, now: int) -> list[Action]:
        """A node held above `bleed_multiple` x its order-rate or its notional-rate baseline
        (`_BLED`) for `bleed_window_s` while its P&L fell by more than `bleed_loss` over that
        window. On the order rate alone, a loop alternating sides with bigger clips (the
        same orders a second, each 4x the size: its position flat, its turnover up, under
        5x and the notional floor) lost $18k a minute a node on a whole fleet for good."""
        cfg = self.config
        warm = int(cfg.warmup_s * 1e9)
        state = TradingState.HALTED
        held: tuple[str, float, float, _Baseline] | None = None
        for name in _BLED:
            b = track.baselines[name]
            base = b.current(now, warm)
            value = track.measures.get(name)
            if (
                base is not None
                and value is not None
                and value >= cfg.bleed_multiple * max(base, 1e-9)
            ):
                held = (name, value, base, b)
                break
        if held is None or track.customers_only:
            track.bleed_since = None
            return self._fire(Rule.SLOW_BLEED, node_id, False, Scope.NODE, state, "")
        name, value, base, b = held
        if track.bleed_since is None:
            track.bleed_since = now
        t0, pnl0 = track.pnl[0]
        _, pnl1 = track.pnl[-1]
        window = int(cfg.bleed_window_s * 1e9)
        bad = now - track.bleed_since >= window and now - t0 >= window // 2
        drop = pnl0 - pnl1
        bad = bad and drop > cfg.bleed_loss
        kind = "configured" if b.fixed is not None else "learned"
        unit = next(m.unit for m in MEASURES if m.name == name)
        why = (
            f"node {node_id} held at {name} {_num(value)} {unit} = "
            f"{value / max(base, 1e-9):,.1f}x its {kind} baseline {_num(base)} {unit} (bleed at "
            f">= {cfg.bleed_multiple:g}x) for >= {cfg.bleed_window_s:g} s while its P&L fell "
            f"{drop:,.0f} (limit {cfg.bleed_loss:,.0f})"
        )
        return self._fire(Rule.SLOW_BLEED, node_id, bad, Scope.NODE, state, why)

    def _principal_day(self, track: _NodeTrack, node_id: str, now: int) -> list[Action]:
        """An agency router's own flow summed over the last day, held to
        `principal_day_multiple` x `principal_floor`: a leak kept just under the floor in
        every `principal_window_s` passed the window rule for good. Judged while the flow
        still grows (within the rate window) and the window rule is not already over, so a
        resumed node that leaks no more trades on, and one leak is not halted twice."""
        unvouched = self._unvouched_halts.get(node_id)
        if unvouched is not None and track.halted:
            del self._unvouched_halts[node_id]  # the halt `restore` issued holds
            self._retry_unvouched.discard(node_id)
        elif unvouched is not None and node_id in self._retry_unvouched:
            # it did not take effect (`rearm`): before, nothing issued it again, and the node
            # traded on with a day nobody could vouch for
            self._retry_unvouched.discard(node_id)
            return self._fire(
                Rule.PRINCIPAL_DAY, node_id, True, Scope.NODE, TradingState.HALTED, unvouched
            )
        cfg = self.config
        base = track.base
        b = base.baselines["principal_notional"]
        a, z = track.samples[0], track.samples[-1]
        since, start = track.day[0]
        total = z.principal - start
        limit = cfg.principal_day_multiple * cfg.principal_floor
        bad = (
            base.agency
            and b.fixed is None
            and b.over_since is None
            and z.principal > a.principal
            and total > limit
        )
        why = (
            f"node {node_id}, an agency router, booked {_num(total)} $ of the firm's own flow "
            f"in {(now - since) / 3.6e12:.1f} h (limit {_num(limit)} $ a day = "
            f"{cfg.principal_day_multiple:g}x principal_floor), under principal_floor "
            f"{_num(cfg.principal_floor)} $ within {cfg.principal_window_s:g} s"
        )
        return self._fire(Rule.PRINCIPAL_DAY, node_id, bad, Scope.NODE, TradingState.HALTED, why)

    def _node_exposure(self, m: NodeMetrics) -> list[Action]:
        """One node's gross exposure over `node_exposure_share` x `gross_exposure_cap`
        puts that node into REDUCING by name, as the fleet's cap does the fleet (which names
        no node, and trips only on the total): it may unwind, never add."""
        cfg = self.config
        cap = cfg.node_exposure_share * cfg.gross_exposure_cap
        why = (
            f"node {m.node_id} gross exposure {m.gross_exposure:,.0f} over its cap {cap:,.0f} "
            f"({cfg.node_exposure_share:g}x gross_exposure_cap {cfg.gross_exposure_cap:,.0f})"
        )
        bad = m.gross_exposure > cap
        state = TradingState.REDUCING
        return self._fire(Rule.NODE_GROSS_EXPOSURE, m.node_id, bad, Scope.NODE, state, why)

    def _fleet_baselines(self, fresh: dict[str, _NodeTrack], now: int) -> list[Action]:
        """The fleet's total held to the fleet's baseline, so a runaway of every node at
        once (each one's peers rising with it) trips like a runaway of one."""
        if now == self._fleet_judged:
            return []  # the fleet already judged at this instant (its nodes report together)
        self._fleet_judged = now
        live = [t for t in fresh.values() if t.participating and not t.halted]
        if not live:
            return []
        fleet = self._fleet
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        summed: dict[str, float | None] = {}
        warm = int(self.config.warmup_s * 1e9)
        for name in ("order_rate", "notional_rate", "principal_notional"):
            # a node over its own limit is left to its own rule: one node's leak (principal
            # flow halts at once) or counter glitch must not halt the whole fleet with it
            taking = [t for t in live if name in t.base.measures and not _alone(t, name)]
            if taking:
                totals[name] = sum(t.base.measures[name] for t in taking)
                counts[name] = len(taking)
                # held to what each of those nodes normally does (`_Track.summed`)
                own = [self._baseline(t.base, name, now, warm, 1) for t in taking]
                summed[name] = None if None in own else sum(v for v in own if v is not None)
        fleet.refused_rate = sum(t.base.refused_rate for t in live if not _alone(t, "order_rate"))
        # children per parent over the nodes working parents: a node with none sends no
        # children, and its own orders counted as children made the fleet's ratio its flow
        # over the others' parents (one agency node of two halted, and the firm's own nodes'
        # orders over the parents left halted the fleet)
        latest = [
            t.latest
            for t in live
            if t.latest is not None
            and t.latest.parents > 0
            and not _alone(t, "children_per_parent")
        ]
        parents = sum(m.parents for m in latest)
        # the fleet's normal principal flow is nil only when every node's is: one agency
        # router must not zero the total of nodes trading for themselves
        fleet.agency = all(t.base.agency for t in live)
        fleet.customers_only = all(t.base.customers_only for t in live)
        fleet.window_full = all(t.base.window_full for t in live)
        if parents:
            totals["children_per_parent"] = sum(m.accepted for m in latest) / parents
        sent, fills = self._fleet_counts(live)
        if sent >= self.config.reject_min_orders:
            totals["messages_per_execution"] = sent / max(fills, 1)
        fleet.measures = totals
        fleet.counts = counts
        fleet.summed = summed
        out = self._baseline_rules(fleet, Scope.FLEET, FLEET_KEY, now, len(live))
        if not any(_ramping(t.latest) for t in live):  # (as a node's, `record`)
            self._learn_fleet(now, len(live))
        else:
            for b in self._fleet.baselines.values():
                b.pause(now)
        return out

    def _fleet_counts(self, live: list[_NodeTrack]) -> tuple[int, int]:
        """Orders sent and fills across the live nodes, for the fleet's messages per execution.

        Over the rate window while the fleet sends `reject_min_orders` in it; otherwise over
        the counted spans (`_counted`: as far back as `count_window_s`, since the last halt)
        of the nodes too quiet to be judged alone. Many quiet nodes whose fills stop
        together are then still judged: none of them alone, nor the fleet within one rate
        window, holds enough orders. A node judged alone is left to its own rule, so one
        node's runaway never halts the whole fleet through this total."""
        sent = fills = 0
        live = [t for t in live if not _alone(t, "messages_per_execution")]
        for t in live:
            a, b = t.samples[0], t.samples[-1]
            sent += b.accepted - a.accepted
            fills += b.fills - a.fills
        if sent >= self.config.reject_min_orders:
            return sent, fills
        sent = fills = 0
        for t in live:
            if "messages_per_execution" in t.base.measures:
                continue
            a, b = self._counted(t)
            sent += b.accepted - a.accepted
            fills += b.fills - a.fills
        return sent, fills

    def _learn_fleet(self, now: int, nodes: int) -> None:
        cfg = self.config
        tau = int(cfg.baseline_s * 1e9)
        warm = int(cfg.warmup_s * 1e9)
        fleet = self._fleet
        for name, value in fleet.measures.items():
            if name in fleet.summed:
                continue  # an additive total is held to its nodes' own (`_Track.summed`)
            b = fleet.baselines[name]
            n = fleet.counts.get(name, nodes)
            base = self._baseline(fleet, name, now, warm, n)
            if (base is not None and value > self._limit(name, base, n)) or (
                name == "principal_notional" and not fleet.window_full
            ):
                b.pause(now)
                continue
            b.learn(value / n if _ADDITIVE[name] else value, now, tau)
            if name not in _UNHELD:
                b.hold(now, warm, partial(self._limit, name, nodes=1))

    # ------------------------------------------------------------ peer rules

    def _health(self, node_id: str, fresh: dict[str, _NodeTrack]) -> NodeHealth:
        cfg = self.config
        track = self._nodes[node_id]
        latest = track.latest
        assert latest is not None
        others = {n: t for n, t in fresh.items() if n != node_id and t.participating}
        # a halted peer's quiet is its halt, not what normal looks like: counted, most of a
        # fleet halted (its metrics silent for a blip, say) put the median at 0, and every
        # node still trading over the floor was halted as a 5x runaway on top
        peers = {n: t for n, t in others.items() if not t.halted}
        rate = self.rate(node_id)
        median = statistics.median([*(self.rate(n) for n in peers), rate])
        baseline = max(median, cfg.rate_floor_per_s / cfg.rate_multiple)
        a, b = self._counted(track)
        orders, rejected = b.orders - a.orders, b.rejected - a.rejected
        peer_pnl = [t.latest.pnl for t in others.values() if t.latest is not None]
        deviation = (
            latest.pnl - statistics.median(peer_pnl) if len(peer_pnl) >= cfg.min_peers else None
        )
        now = self.clock.monotonic_ns()
        warm = int(cfg.warmup_s * 1e9)
        baselines = {
            name: v
            for name in track.base.baselines
            if (v := self._baseline(track.base, name, now, warm, 1)) is not None
        }
        return NodeHealth(
            node_id=node_id,
            participating=track.participating,
            order_rate=rate,
            fleet_median_rate=median,
            order_rate_ratio=(
                0.0
                if rate <= cfg.rate_floor_per_s or track.base.customers_only
                else (rate / baseline if baseline > 0 else math.inf)
            ),
            peers=len(peers),
            window_orders=orders,
            reject_ratio=max(0.0, rejected / orders) if orders > 0 else 0.0,
            pnl=latest.pnl,
            pnl_deviation=deviation,
            gross_exposure=latest.gross_exposure,
            armed=latest.armed,
            errors=latest.errors,
            measures=dict(track.base.measures),
            baselines=baselines,
            customers_only=track.base.customers_only,
            rate_judged=len(peers) >= cfg.min_peers,
        )

    def _in_force(self, scope: Scope, key: str, state: TradingState) -> bool:
        """Whether the action's state already holds where it would apply, as reported."""
        if scope is Scope.FLEET:
            live = [t.latest for t in self._fresh(self.clock.monotonic_ns()).values()]
            reports = [m for m in live if m is not None]
            return bool(reports) and all(m.fleet_state >= state for m in reports)
        if scope is Scope.NODE:
            track = self._nodes.get(key)
            m = None if track is None else track.latest
            return m is not None and max(m.node_state, m.fleet_state) >= state
        return False

    def _fire(
        self,
        rule: Rule,
        key: str,
        active: bool,
        scope: Scope,
        state: TradingState,
        why: str,
        *,
        trust_state: bool = True,
    ) -> list[Action]:
        tag = (rule, key)
        if not active:
            self._firing.discard(tag)
            return []
        if tag in self._firing:
            return []
        if trust_state and self._in_force(scope, key, state):
            # never re-issue what already holds; should it be lifted while the condition
            # still holds, the rule fires then
            return []
        self._firing.add(tag)
        return [Action(rule, scope, key, state, f"{rule.value}: {why}", self.clock.time_ns())]

    def _unreadable(self, node_id: str, track: _NodeTrack) -> list[Action]:
        """A node whose sample cannot be read is the worst case, not a sample to skip.

        Its halt is issued though the node reports itself halted: the state it reports is
        part of what cannot be believed (a node claiming HALTED while it accepts orders), and
        the last readable sample, which the in-force check reads, is older than this one."""
        why = f"node {node_id} sent metrics that cannot be read: {'; '.join(track.bad)}"
        return self._fire(
            Rule.UNREADABLE_METRICS,
            node_id,
            bool(track.bad),
            Scope.NODE,
            TradingState.HALTED,
            why,
            trust_state=False,
        )

    def _errors_before_arming(self, m: NodeMetrics) -> list[Action]:
        bad = m.errors > 0 and not m.armed
        why = f"node {m.node_id} reported {m.errors} error(s) before arming; not to be armed"
        return self._fire(
            Rule.ERRORS_BEFORE_ARMING, m.node_id, bad, Scope.NODE, TradingState.HALTED, why
        )

    def _order_rate(self, h: NodeHealth, track: _NodeTrack, now: int) -> list[Action]:
        cfg = self.config
        node_id = h.node_id
        if h.peers < cfg.min_peers or h.order_rate_ratio <= cfg.rate_multiple:
            track.over_since = None
            return self._fire(Rule.ORDER_RATE, node_id, False, Scope.NODE, TradingState.HALTED, "")
        if track.over_since is None:
            track.over_since = now
        sustained = now - track.over_since >= int(cfg.rate_window_s * 1e9)
        limit = max(cfg.rate_multiple * h.fleet_median_rate, cfg.rate_floor_per_s)
        why = (
            f"node {node_id} at {h.order_rate:.0f} orders/s vs fleet median "
            f"{h.fleet_median_rate:.0f}/s (limit {limit:.0f}/s) for >= {cfg.rate_window_s:g} s"
        )
        return self._fire(Rule.ORDER_RATE, node_id, sustained, Scope.NODE, TradingState.HALTED, why)

    def _pnl(self, h: NodeHealth) -> list[Action]:
        if h.pnl_deviation is None:
            return []
        median = h.pnl - h.pnl_deviation
        bad = abs(h.pnl_deviation) > self.config.pnl_deviation
        why = (
            f"node {h.node_id} P&L {h.pnl:,.0f} deviates {h.pnl_deviation:+,.0f} from peer "
            f"median {median:,.0f} (threshold {self.config.pnl_deviation:,.0f})"
        )
        return self._fire(Rule.PNL_DEVIATION, h.node_id, bad, Scope.NODE, TradingState.HALTED, why)

    def _rejects(self, h: NodeHealth, track: _NodeTrack, now: int) -> list[Action]:
        """Over `reject_ratio` of the orders blocked or rejected, throttling aside; or, with
        throttling, for `count_window_s` on end. A rate limit refusing a burst is the Guard
        working, but a node whose refusals are all filed as throttling from its first
        interval on (offering under the rate rules' limits) was never judged at all: most of
        what it sends refused, for good, is a broken or runaway strategy the Guard is hiding.
        The episode ends after a full rate window under the ratio, not at one dip."""
        cfg = self.config
        bad = h.window_orders >= cfg.reject_min_orders and h.reject_ratio > cfg.reject_ratio
        rejected = round(h.reject_ratio * h.window_orders)
        why = (
            f"node {h.node_id} had {rejected} of {h.window_orders} orders blocked or rejected "
            "in the last window, throttling and stopped scopes aside "
            f"(limit {cfg.reject_ratio:.0%})"
        )
        a, b = self._counted(track)
        orders = b.orders - a.orders
        # a stopped scope's blocks are neither refusals nor orders judged (a strategy's kill)
        stopped = b.stopped - a.stopped
        orders -= stopped
        refused = (b.orders - b.accepted) - (a.orders - a.accepted) - stopped
        if track.halted or _ramping(track.latest):
            # what a halted node refuses is the halt: no episode of its own; nor is what a
            # ramp's stage trims off a normal flow (its rates at 10% for minutes), which the
            # ramp's own spike rule judges against the stage's limits
            track.throttled_since = track.throttled_under = None
        elif orders >= cfg.reject_min_orders and refused > cfg.reject_ratio * orders:
            track.throttled_under = None
            if track.throttled_since is None:
                track.throttled_since = now
        elif track.throttled_since is not None:
            if track.throttled_under is None:
                track.throttled_under = now
            if now - track.throttled_under >= int(cfg.rate_window_s * 1e9):
                track.throttled_since = track.throttled_under = None
        since = track.throttled_since
        if not bad and since is not None and now - since >= int(cfg.count_window_s * 1e9):
            bad = True
            why = (
                f"node {h.node_id} had {refused} of {orders} orders refused in the last "
                f"window, throttling included, and over {cfg.reject_ratio:.0%} of its orders "
                f"refused for {(now - since) / 1e9:.0f} s (limit {cfg.count_window_s:g} s)"
            )
        return self._fire(Rule.REJECT_SPIKE, h.node_id, bad, Scope.NODE, TradingState.HALTED, why)

    def _stale(self, now: int) -> list[Action]:
        limit = self.config.stale_after_s
        window = int(limit * 1e9)
        out: list[Action] = []
        for node_id, track in sorted(self._nodes.items()):
            silent = now - track.seen - track.excused > window
            why = (
                f"node {node_id} sent no metrics for {(now - track.seen) / 1e9:.1f} s "
                f"(limit {limit:g} s)"
            )
            out += self._fire(
                Rule.STALE_METRICS, node_id, silent, Scope.NODE, TradingState.HALTED, why
            )
        return out

    def _exposure(self, fresh: dict[str, _NodeTrack]) -> list[Action]:
        gross = sum(t.latest.gross_exposure for t in fresh.values() if t.latest is not None)
        if any("gross_exposure" in why for t in fresh.values() for why in t.bad):
            gross = math.inf  # an exposure that cannot be read is the worst it could be
        bad = gross > self.config.gross_exposure_cap
        why = (
            f"fleet gross exposure {gross:,.0f} over cap {self.config.gross_exposure_cap:,.0f}; "
            "reducing orders only"
        )
        return self._fire(
            Rule.GROSS_EXPOSURE, FLEET_KEY, bad, Scope.FLEET, TradingState.REDUCING, why
        )


def _went_back(last: NodeMetrics | None, m: NodeMetrics) -> list[str]:
    """The counters that went back since the node's last readable sample from the same
    process (`instance`): a restart counts from 0 under a new instance, so this is a lie or
    a glitch, and reading it as a restart of one counter passed it. Empty without an
    instance on both (an older sender: a counter going back is read as a restart)."""
    if last is None or not m.instance or m.instance != last.instance:
        return []
    same = f"before it from the same process (instance {m.instance!r})"
    out = [
        f"{f} {v!r} < {w!r} {same}"
        for f in _MONOTONE
        if (v := getattr(m, f)) < (w := getattr(last, f))
    ]
    # each reason's count only grows too, and so do the refusals that are not throttling:
    # refusals filed again as throttling went back, were read as a restart and hid a spike
    out += [
        f"blocks[{r!r}] {v!r} < {w!r} {same}"
        for r, w in sorted(last.blocks.items())
        if (v := m.blocks.get(r, 0)) < w
    ]
    v, w = m.rejected - _throttled(m), last.rejected - _throttled(last)
    if v < w:
        out.append(f"rejected less throttling {v!r} < {w!r} {same}")
    return out


def _offered(a: _Sample, b: _Sample) -> int:
    """Orders the node offered from `a` to `b`, accepted or refused, less those a stopped
    scope refused (`_STOPS`: a kill or a drain of a strategy or a symbol, the node ACTIVE).
    Those reach no market: a killed strategy resending what its kill refuses, counted, had
    each node it ran on halted as an order-rate runaway, every other strategy there with it.
    Refusals by a rate limit still count: a strategy hammering a throttle is a runaway the
    Guard is hiding."""
    return (b.orders - a.orders) - (b.stopped - a.stopped)


def _alone(track: _NodeTrack, name: str) -> bool:
    """The node's own `name` is over its own limit: its own rule judges it, not the fleet's
    (or, working its customers' parents only, lets it be: `_Baseline.exempt`)."""
    b = track.base.baselines[name]
    return b.over_since is not None or b.exempt


def _fleet_config(config: SupervisorConfig) -> SupervisorConfig:
    """The fleet's own track: a configured per-node profile has no meaning for the total
    (it depends on how many nodes take part), so the fleet always learns."""
    return msgspec.structs.replace(config, profile=BaselineProfile())


def _num(v: float) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:,.2f}M"
    if a >= 1e3:
        return f"{v:,.0f}"
    return f"{v:,.1f}"


def gate_metrics(health: Mapping[str, NodeHealth]) -> dict[str, dict[str, float]]:
    """Health as rollout gates read it: node -> metric name -> value."""
    return {node: h.gauges() for node, h in health.items()}
