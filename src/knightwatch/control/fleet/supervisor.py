"""The supervisor: fleet-level anomaly detection that halts before a person could react.

Knight's monitoring watched prices, not volume; the runaway server's order rate
was the signal nobody looked at. The supervisor compares each node with its
peers (rate against the fleet median, P&L against the peers' median), watches
fleet gross exposure and block/reject spikes, refuses a node that reported
errors before it was armed, and halts a node that stopped reporting (a node
nobody can see is not one anybody is supervising). It is pure logic on an injected clock: the live
service feeds it metrics from NATS, the replay feeds it from MemoryControlPlane,
and both act on its `Action`s through the same kill switch.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

import msgspec

from knightwatch.clock import Clock
from knightwatch.control.plane.wire import FLEET_KEY, NodeMetrics
from knightwatch.inputs import load_toml
from knightwatch.state import Scope, TradingState


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


class SupervisorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Thresholds; the defaults suit a fleet of equity routers doing tens of orders a second."""

    rate_multiple: float = 5.0
    rate_floor_per_s: float = 20.0
    rate_window_s: float = 1.0
    min_peers: int = 2
    pnl_deviation: float = 50_000.0
    gross_exposure_cap: float = 50_000_000.0
    reject_ratio: float = 0.5
    reject_min_orders: int = 50
    stale_after_s: float = 5.0

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
            ("stale_after_s", self.stale_after_s > 0, "must be > 0"),
        )
        problems = [f"{f}: {rule} (got {getattr(self, f)!r})" for f, ok, rule in checks if not ok]
        if problems:
            raise ValueError("invalid supervisor config:\n  " + "\n  ".join(problems))

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


class NodeHealth(msgspec.Struct, frozen=True):
    """One node as the supervisor's rules see it, over its rate window.

    The rules and every reader of fleet health (rollout gates, live and in the
    replay) take these numbers from here, so a gate and a halt can never
    disagree about what "healthy" meant. Baselines count only participating
    peers (armed and admitted): a refused or idle node's zero rate is not part
    of what normal looks like.
    """

    node_id: str
    participating: bool
    order_rate: float
    """Orders (accepted or blocked) per second over the window."""
    fleet_median_rate: float
    """Median of this node's rate and its participating peers' rates."""
    order_rate_ratio: float
    """`order_rate` over the baseline `max(median, rate_floor_per_s / rate_multiple)`: the
    rate rule's condition is `order_rate_ratio > rate_multiple`."""
    peers: int
    window_orders: int
    reject_ratio: float
    pnl: float
    pnl_deviation: float | None
    """P&L minus the participating peers' median; None with fewer than `min_peers` peers."""
    gross_exposure: float
    armed: bool
    errors: int

    def gauges(self) -> dict[str, float]:
        """Named numbers for health gates (`HealthGate.metric`); undefined ones are absent."""
        out = {
            "order_rate": self.order_rate,
            "order_rate_ratio": self.order_rate_ratio,
            "reject_ratio": self.reject_ratio,
            "window_orders": float(self.window_orders),
            "pnl": self.pnl,
            "gross_exposure": self.gross_exposure,
            "errors": float(self.errors),
        }
        if self.pnl_deviation is not None:
            out["pnl_deviation"] = self.pnl_deviation
        return out


class _NodeTrack:
    __slots__ = ("latest", "over_since", "samples", "seen")

    def __init__(self) -> None:
        self.samples: deque[tuple[int, int, int]] = deque()  # (t, orders, rejected)
        self.latest: NodeMetrics | None = None
        self.over_since: int | None = None
        self.seen = 0

    @property
    def participating(self) -> bool:
        return self.latest is not None and self.latest.armed and self.latest.admitted


class Supervisor:
    def __init__(self, config: SupervisorConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self._nodes: dict[str, _NodeTrack] = {}
        self._firing: set[tuple[Rule, str]] = set()
        self.actions: list[Action] = []

    def rate(self, node_id: str) -> float:
        """Orders per second over the last window, as seen by this supervisor."""
        track = self._nodes.get(node_id)
        if track is None or len(track.samples) < 2:
            return 0.0
        (t0, o0, _), (t1, o1, _) = track.samples[0], track.samples[-1]
        return (o1 - o0) / ((t1 - t0) / 1e9) if t1 > t0 else 0.0

    def record(self, m: NodeMetrics) -> _NodeTrack:
        """Take one metrics sample into the node's window without judging it (watch only)."""
        now = self.clock.monotonic_ns()
        track = self._nodes.setdefault(m.node_id, _NodeTrack())
        track.latest = m
        track.seen = now
        track.samples.append((now, m.orders, m.rejected))
        window = int(self.config.rate_window_s * 1e9)
        while len(track.samples) > 2 and now - track.samples[1][0] >= window:
            track.samples.popleft()
        return track

    def observe(self, m: NodeMetrics) -> list[Action]:
        """Take one metrics sample; return the actions it triggers (each rule fires once
        per episode: it re-arms when its condition clears, or through `rearm`)."""
        track = self.record(m)
        now = track.seen
        fresh = self._fresh(now)
        health = self._health(m.node_id, fresh)
        out: list[Action] = []
        out += self._errors_before_arming(m)
        out += self._order_rate(health, track, now)
        out += self._pnl(health)
        out += self._rejects(health)
        out += self._exposure(fresh)
        out += self._stale(now)
        self.actions.extend(out)
        return out

    def sweep(self) -> list[Action]:
        """Judge silence at the clock's current instant, with no sample to trigger it.

        Every `observe` does this too, but if the whole fleet goes quiet no sample
        arrives: the live service calls this on a timer so that case is caught.
        """
        out = self._stale(self.clock.monotonic_ns())
        self.actions.extend(out)
        return out

    def rearm(self, rule: Rule, key: str) -> None:
        """Let `rule` fire again for `key` at the next judgement: its action did not
        take effect (a node did not confirm the halt, or the halt was not stored)."""
        self._firing.discard((rule, key))

    def health(self) -> dict[str, NodeHealth]:
        """Every node heard from within `stale_after_s`, as the rules see it now (a node
        with a single sample has an empty window: no orders yet); read-only. A node missing
        here has not been heard from: gates fail closed on it."""
        fresh = self._fresh(self.clock.monotonic_ns())
        return {n: self._health(n, fresh) for n in sorted(fresh)}

    def _fresh(self, now: int) -> dict[str, _NodeTrack]:
        stale = int(self.config.stale_after_s * 1e9)
        return {n: t for n, t in self._nodes.items() if now - t.seen <= stale}

    def _health(self, node_id: str, fresh: dict[str, _NodeTrack]) -> NodeHealth:
        cfg = self.config
        track = self._nodes[node_id]
        latest = track.latest
        assert latest is not None
        peers = {n: t for n, t in fresh.items() if n != node_id and t.participating}
        rate = self.rate(node_id)
        median = statistics.median([*(self.rate(n) for n in peers), rate])
        baseline = max(median, cfg.rate_floor_per_s / cfg.rate_multiple)
        (_, o0, r0), (_, o1, r1) = track.samples[0], track.samples[-1]
        orders, rejected = o1 - o0, r1 - r0
        peer_pnl = [t.latest.pnl for t in peers.values() if t.latest is not None]
        deviation = (
            latest.pnl - statistics.median(peer_pnl) if len(peer_pnl) >= cfg.min_peers else None
        )
        return NodeHealth(
            node_id=node_id,
            participating=track.participating,
            order_rate=rate,
            fleet_median_rate=median,
            order_rate_ratio=rate / baseline if baseline > 0 else (math.inf if rate else 0.0),
            peers=len(peers),
            window_orders=orders,
            reject_ratio=rejected / orders if orders > 0 else 0.0,
            pnl=latest.pnl,
            pnl_deviation=deviation,
            gross_exposure=latest.gross_exposure,
            armed=latest.armed,
            errors=latest.errors,
        )

    def _fire(
        self, rule: Rule, key: str, active: bool, scope: Scope, state: TradingState, why: str
    ) -> list[Action]:
        tag = (rule, key)
        if not active:
            self._firing.discard(tag)
            return []
        if tag in self._firing:
            return []
        self._firing.add(tag)
        return [Action(rule, scope, key, state, f"{rule.value}: {why}", self.clock.time_ns())]

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

    def _rejects(self, h: NodeHealth) -> list[Action]:
        cfg = self.config
        bad = h.window_orders >= cfg.reject_min_orders and h.reject_ratio > cfg.reject_ratio
        rejected = round(h.reject_ratio * h.window_orders)
        why = (
            f"node {h.node_id} had {rejected} of {h.window_orders} orders blocked or rejected "
            f"in the last window (limit {cfg.reject_ratio:.0%})"
        )
        return self._fire(Rule.REJECT_SPIKE, h.node_id, bad, Scope.NODE, TradingState.HALTED, why)

    def _stale(self, now: int) -> list[Action]:
        limit = self.config.stale_after_s
        fresh = self._fresh(now)
        out: list[Action] = []
        for node_id, track in sorted(self._nodes.items()):
            silent = node_id not in fresh
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
        bad = gross > self.config.gross_exposure_cap
        why = (
            f"fleet gross exposure {gross:,.0f} over cap {self.config.gross_exposure_cap:,.0f}; "
            "reducing orders only"
        )
        return self._fire(
            Rule.GROSS_EXPOSURE, FLEET_KEY, bad, Scope.FLEET, TradingState.REDUCING, why
        )


def gate_metrics(health: Mapping[str, NodeHealth]) -> dict[str, dict[str, float]]:
    """Health as rollout gates read it: node -> metric name -> value."""
    return {node: h.gauges() for node, h in health.items()}
