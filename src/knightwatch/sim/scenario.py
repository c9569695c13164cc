"""Scenarios are data: a TOML file describes the fleet, releases, parents, market and timeline.

Loading is strict, because a typo in a drill file silently changes what the
drill proves: unknown keys, wrong types (no ``"50000"`` or ``4.0`` where an
integer belongs) and out-of-range values are `ScenarioError`s that name the
key (``parents.count: must be >= 1``), and so is a scenario that would run but
show nothing: a deploy flag no release knows, a node listed twice, a rollback
to the release already deployed.

A scenario is a test bed for fleets a user has, not only for 2012: besides the
releases and the one missed deploy, `[config]` is the router configuration
every node reads and `[nodes.<id>]` overrides one node's release, its
compiled-in flag table or its config, so a config-only skew, a hotfix build
with its own flag table or several stale nodes can each be written down.
`[faults.<id>]` says what goes wrong on a node while it trades: a reference-price
feed that freezes, a router that reuses client order ids after a restart, children
priced away from the touch, children sent on the wrong side of their parent.
"""

from __future__ import annotations

import math
import random
import re
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import msgspec

from knightwatch.clock import NS_PER_S
from knightwatch.control.fleet.supervisor import MEASURES, NodeHealth, SupervisorConfig
from knightwatch.control.node.lease import LeaseError, LeasePolicy
from knightwatch.errors import KnightwatchError, quoted
from knightwatch.flags.definition import NAMESPACED_ID
from knightwatch.flags.rollout import ADMITTED, HALTED, ORDERS, RolloutPlan
from knightwatch.incident.ramp import RampPlan
from knightwatch.inputs import TOML_MAX_BYTES, InputFileError, parse_toml, read_text
from knightwatch.limits import FLEET_RULES, VERSION_MAX_CHARS, Limits, LimitsError
from knightwatch.order import MAX_QTY, Side, order_problem
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.flagschema import check_flag_id
from knightwatch.release.manifest import check_release_id
from knightwatch.sim.release import BEHAVIOURS, Release
from knightwatch.sim.router import ParentOrder, RouterBounds
from knightwatch.sim.universe import SymbolSpec, Tier, generate
from knightwatch.sim.venue import MarketParams

BUILTIN = ("knight-2012",)
OPEN_RANGE = (
    datetime.fromisoformat("1971-01-01T00:00:00Z"),
    datetime.fromisoformat("2200-01-01T00:00:00Z"),
)
"""Opens the replay's nanosecond clocks can hold, with a month either side (governance
dates its releases a month before the open)."""
MAX_DURATION_S = 86_400.0
"""One simulated day: a replay steps through every millisecond step, so `duration_s = 1e12`
(or `inf`) would run for ever; no incident window is longer than a trading day."""


MAX_PARENTS = 100_000
"""Customer parents in one run: the replay draws them all before the open (`parent_orders`),
so `count = 1e9` ran out of memory before the first step."""
MAX_PRE_OPEN_ERRORS = 10_000
"""Errors a node reports before it is armed (Knight's 97 e-mails): each is one error its
runtime keeps and logs, so `1e18` filled the memory (18 GB) and never armed."""


MAX_BOOK_PRICE = 1e9
"""A symbol's opening price: children carry book prices, which an `Order` holds up to
`knightwatch.order.MAX_PRICE`, and a runaway can push the quote far above the open."""
MIN_LEVEL_DEPTH = 1e-6
"""Shares the book's first level holds at least (`d1`, sim/book.py): below it one share
moves the quote by over a thousand ticks, and the book's walk, level by level, over
10^10 levels never ends (a $2e12 symbol hung the replay)."""
VERSION_PREFIX = "replay:"
"""The replay's limits version is this and the scenario's name (`sim/setup.py`)."""
MAX_QTY_MULTIPLE = 100.0
"""The router's `max_qty_multiple` at most, as `config.work_multiple`: the router turns
it into a share count (`int(qty * multiple)`), and `1e308` ended the run in an
OverflowError at the first parent."""
MAX_DISCOUNT_Y = 100.0
"""`exit.discount_y` at most (about 30 times the *history* calibration, 3.2): a short's
block buy-back is not capped, and a finite `1e308` overflowed it to an infinite loss
(printed as "$infB", written to `--json` as null)."""


def _gate_metrics() -> frozenset[str]:
    """Every metric a rollout gate can read (`rollout_metrics`: the supervisor's
    `NodeHealth.gauges()` with every optional gauge present, and the promotion evidence).
    A gate on any other name is never reported, so it fails at the first stage: the
    rollout layer aborted and halted, and the replay showed it as containing a runaway it
    never judged."""
    every = {m.name: 1.0 for m in MEASURES}
    full = NodeHealth(
        node_id="n1", participating=True, order_rate=1.0, fleet_median_rate=1.0,
        order_rate_ratio=1.0, peers=1, window_orders=1, reject_ratio=0.0, pnl=0.0,
        pnl_deviation=0.0, gross_exposure=0.0, armed=True, errors=0, measures=every,
        baselines=every,
    )  # fmt: skip
    return frozenset(full.gauges()) | {ORDERS, ADMITTED, HALTED}


GATE_METRICS = _gate_metrics()


class ScenarioError(KnightwatchError, ValueError):
    """Every problem found in a scenario file, one `key: rule` per line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: invalid scenario\n  " + "\n  ".join(problems))


class Meta(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    title: str = ""
    open: datetime = datetime.fromisoformat("2012-08-01T09:30:00-04:00")
    duration_s: float = 2700.0
    step_ms: int = 1000
    sample_s: float = 1.0
    seed: int = 1


class NodeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The router configuration a node reads (attested with its code, as its config file).

    `fill_check = false` switches off the cumulative-quantity check for every
    algorithm: children go out on every peg update for as long as the parent is
    worked, whatever was filled (what the 2005 code move did to Power Peg).
    `work_multiple` is how much of each parent the router works to (1.0: the
    parent's quantity; 2.0 is a lot-size bug that fills every parent twice
    over). `peg_rate_scale` multiplies how often a pegged child is re-sent.
    """

    fill_check: bool = True
    work_multiple: float = 1.0
    peg_rate_scale: float = 1.0

    def problems(self, where: str) -> list[str]:
        out = []
        if not 0 < self.work_multiple <= 100:
            out.append(f"{where}.work_multiple: must be in (0, 100] (got {self.work_multiple!r})")
        if not 0 < self.peg_rate_scale <= 100:
            out.append(f"{where}.peg_rate_scale: must be in (0, 100] (got {self.peg_rate_scale!r})")
        return out


class NodeOverride(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One node that differs from the fleet: the release it runs (instead of the deploy
    target, or `deploy.previous` for a missed deploy), flags its build maps differently
    from that release (flag id -> behaviour), and config keys that differ from
    `[config]`."""

    release: str | None = None
    flags: dict[str, str] = msgspec.field(default_factory=dict)
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class FrozenFeed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The node's market-data feed stops updating at `from_s` (until `until_s`, or to the
    end): its router prices children off the last quote it saw, and its Guard (which
    reads the same feed) gets no reference price, while the market moves on."""

    from_s: float
    until_s: float | None = None


class ReusedIds(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The node's router restarts at `from_s` and numbers its children from 1 again, so
    they go out under client order ids it already used; an execution is matched to the
    first child that carried its id (and so to that child's parent)."""

    from_s: float


class OffPrice(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """From `from_s` the node prices its children `pct` through the touch (a buy `pct`
    above the ask, a sell `pct` below the bid): a bad price feed or a fat-fingered price."""

    from_s: float
    pct: float


class WrongSide(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """From `from_s` (until `until_s`, or to the end) the node's router sends each child
    on the opposite side of its parent (a sign bug: selling for a customer's buy order),
    and reports its fill to the customer as done on the parent's side. The firm, which
    makes its customer whole, holds both legs: twice the child on the child's side."""

    from_s: float
    until_s: float | None = None


class NodeFaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What goes wrong on one node during the run (`[faults.<node>]`): none of it is in
    what the node attests, so the deploy-time layers cannot see it."""

    frozen_feed: FrozenFeed | None = None
    reused_ids: ReusedIds | None = None
    off_price: OffPrice | None = None
    wrong_side: WrongSide | None = None


class OtherFlow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Other participants' flow (`[[flow]]`): `shares` of `symbol` taken from the book
    evenly from `from_s` to `to_s`. It moves the market (a sell-off, a squeeze) without
    being the firm's: it is in no account, execution count or order count."""

    symbol: str
    side: Literal["buy", "sell"]
    shares: int
    from_s: float
    to_s: float


class Fleet(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`pre_open_errors` counts errors a node reports before it is armed (Knight's 97
    unread "Power Peg disabled" e-mails, whose sending server the SEC does not name);
    only the control plane reads them: the node is then not armed."""

    nodes: int
    missed_deploy: list[str] = msgspec.field(default_factory=list)
    strategy: str = "smars"
    pre_open_errors: dict[str, int] = msgspec.field(default_factory=dict)


class Deploy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`target` is the release deployed before the open, `previous` what it replaced;
    `flag` (a namespaced id, as the flag registry requires) leaves its safe default
    `flag_on_s` seconds after the open."""

    target: str
    previous: str
    flag: str
    flag_on_s: float = 0.0


class Parents(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Customer parent orders: `pre_open` were received before the open and are worked
    from the open, the rest arrive evenly up to `arrival_end_s`; every symbol gets one
    before any gets a second."""

    count: int
    pre_open: int
    arrival_end_s: float
    qty: list[int]
    child_qty: int = 100
    long_symbols: int | None = None
    accounts: int = 0
    """Customer accounts the parents belong to (seeded draw); 0: every parent is its own."""


class Universe(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tiers: list[Tier] = msgspec.field(default_factory=list)
    symbols: list[SymbolSpec] = msgspec.field(default_factory=list)


class Exit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How leftover positions are unwound after the stop: a block sale to one buyer at
    a discount of `discount_y * sigma * sqrt(Q/adv)`, or a second metaorder on the book."""

    kind: Literal["block", "metaorder"] = "block"
    discount_y: float = 3.2


class Timeline(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Operator actions, in seconds after the open. `rollback_s` puts the previous
    release on every node (2012); the manual kill fires at `notice_s + reaction_s`.
    `resume_after_s` has the person who killed resume the fleet that long after the
    kill, with whatever caused it still in place: through the `[ramp]` (as
    `knightwatch resume` does) or, with `resume_ramp = false`, at full limits at once."""

    rollback_s: float | None = None
    notice_s: float = 60.0
    reaction_s: float = 240.0
    resume_after_s: float | None = None
    resume_ramp: bool = True


class ControlParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The control plane in a replay (kill_switch and supervisor layers): each node's lease
    and heartbeat, as `knightwatch.control.lease.LeasePolicy` checks them, and how often
    nodes publish metrics to the supervisor; all in simulated seconds."""

    lease_timeout_s: float = LeasePolicy().lease_timeout_s
    heartbeat_s: float = LeasePolicy().heartbeat_s
    metrics_s: float = 0.2

    def policy(self) -> LeasePolicy:
        return LeasePolicy(lease_timeout_s=self.lease_timeout_s, heartbeat_s=self.heartbeat_s)


class Record(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The historical figures a replay is compared with (SEC order, paras. 1, 17, 18)."""

    source: str = ""
    executions: int | None = None
    symbols: int | None = None
    shares: int | None = None
    net_long_usd: float | None = None
    net_long_symbols: int | None = None
    net_short_usd: float | None = None
    net_short_symbols: int | None = None
    loss_usd: float | None = None
    symbols_moved_over_5pct: int | None = None


class Scenario(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    scenario: Meta
    fleet: Fleet
    releases: dict[str, Release]
    deploy: Deploy
    parents: Parents
    universe: Universe
    market: MarketParams = MarketParams()
    exit: Exit = Exit()
    timeline: Timeline = Timeline()
    router: RouterBounds = RouterBounds(max_children_per_parent=100)
    rollout: RolloutPlan = RolloutPlan()
    control: ControlParams = ControlParams()
    supervisor: SupervisorConfig = SupervisorConfig()
    ramp: RampPlan = RampPlan()
    limits: dict[str, Any] = msgspec.field(default_factory=dict)
    record: Record = Record()
    config: NodeConfig = NodeConfig()
    nodes: dict[str, NodeOverride] = msgspec.field(default_factory=dict)
    faults: dict[str, NodeFaults] = msgspec.field(default_factory=dict)
    flow: list[OtherFlow] = msgspec.field(default_factory=list)
    source: str = ""

    # ------------------------------------------------------------------ derived

    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def open_ns(self) -> int:
        return int(self.scenario.open.timestamp()) * NS_PER_S

    @property
    def step_ns(self) -> int:
        return self.scenario.step_ms * 1_000_000

    def node_ids(self) -> list[str]:
        return [f"n{i}" for i in range(1, self.fleet.nodes + 1)]

    def node_release(self, node: str) -> Release:
        """What `node` runs at the open: its override, else the previous release if it
        missed the deploy, else the target; with its build's own flag table if it has one."""
        o = self.nodes.get(node)
        if o is not None and o.release is not None:
            rid = o.release
        elif node in self.fleet.missed_deploy:
            rid = self.deploy.previous
        else:
            rid = self.deploy.target
        release = self.releases[rid]
        if o is not None and o.flags:
            release = Release(id=release.id, flags={**release.flags, **o.flags})
        return release

    def node_config(self, node: str) -> NodeConfig:
        o = self.nodes.get(node)
        if o is None or not o.config:
            return self.config
        return msgspec.convert(
            {**msgspec.structs.asdict(self.config), **o.config}, NodeConfig, strict=True
        )

    def skewed_nodes(self) -> list[str]:
        """Nodes that do not run exactly what the rest were deployed with (release, flag
        table or config): the ones the report draws apart."""
        target = self.releases[self.deploy.target]
        return [
            n
            for n in self.node_ids()
            if self.node_release(n) != target or self.node_config(n) != self.config
        ]

    def skew_of(self, node: str) -> str:
        """How `node` differs from what the rest were deployed with, in words the report
        prints ("" if it does not): a config-only skew or a hotfix build did not miss the
        deploy, and the report said they had."""
        o = self.nodes.get(node)
        why: list[str] = []
        if o is not None and o.release is not None:
            if o.release != self.deploy.target:
                why.append(f"runs {o.release}, not the deployed {self.deploy.target}")
        elif node in self.fleet.missed_deploy and self.deploy.previous != self.deploy.target:
            why.append("missed the deploy")
        if o is not None and o.flags:
            base = self.releases[self.node_release(node).id].flags
            if {**base, **o.flags} != base:
                why.append("its own flag table")
        if self.node_config(node) != self.config:
            why.append("its own config")
        return ", ".join(why)

    def symbols(self, seed: int) -> tuple[SymbolSpec, ...]:
        u = self.universe
        return tuple(u.symbols) if u.symbols else generate(tuple(u.tiers), seed)

    def parent_orders(self, symbols: tuple[SymbolSpec, ...], seed: int) -> list[ParentOrder]:
        """The parents, deterministic for a seed: symbols shuffled so each gets one parent
        before any gets two, sides fixed per symbol, nodes assigned round-robin by arrival."""
        pc = self.parents
        rng = random.Random(f"parents:{seed}")
        names = [s.name for s in symbols]
        n_long = pc.long_symbols if pc.long_symbols is not None else (len(names) + 1) // 2
        longs = set(rng.sample(names, n_long))
        order: list[str] = []
        while len(order) < pc.count:
            batch = names[:]
            rng.shuffle(batch)
            order.extend(batch)
        order = order[: pc.count]
        nodes = self.node_ids()
        later = pc.count - pc.pre_open
        out = []
        accounts = random.Random(f"accounts:{seed}")
        for i, sym in enumerate(order):
            t = 0.0 if i < pc.pre_open else (i - pc.pre_open) * pc.arrival_end_s / max(later, 1)
            pid = f"P{i + 1:04d}"
            out.append(
                ParentOrder(
                    id=pid,
                    symbol=sym,
                    side=Side.BUY if sym in longs else Side.SELL,
                    qty=rng.choice(pc.qty),
                    arrival_ns=self.open_ns + round(t * NS_PER_S),
                    node=nodes[i % len(nodes)],
                    flag=self.deploy.flag,
                    account=(
                        pid if pc.accounts == 0 else f"C{accounts.randrange(pc.accounts) + 1:03d}"
                    ),
                )
            )
        return out


# ---------------------------------------------------------------------- loading


def load(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name (`knight-2012`) or a TOML file by path."""
    text: str
    source = str(name_or_path)
    if isinstance(name_or_path, str) and name_or_path in BUILTIN:
        ref = resources.files("knightwatch.sim") / "scenarios" / f"{name_or_path}.toml"
        text = ref.read_text(encoding="utf-8")
    else:
        path = Path(name_or_path)
        if not path.exists():
            known = ", ".join(BUILTIN)
            raise ScenarioError(source, [f"no such file (built-in scenarios: {known})"])
        try:
            text = read_text(path, "scenario", TOML_MAX_BYTES)
        except InputFileError as exc:
            raise ScenarioError(source, [str(exc)]) from None
    return loads(text, source)


def with_resume(sc: Scenario, after_s: float | None, ramp: bool | None) -> Scenario:
    """`sc` with the command line's resume (`--resume-after`, `--ramp/--no-ramp`) in its
    timeline, checked by the same rules as the file's."""
    changes: dict[str, Any] = {}
    if after_s is not None:
        changes["resume_after_s"] = after_s
    if ramp is not None:
        changes["resume_ramp"] = ramp
    if not changes:
        return sc
    out = msgspec.structs.replace(sc, timeline=msgspec.structs.replace(sc.timeline, **changes))
    problems = _problems(out)
    if problems:
        raise ScenarioError(f"{sc.source or sc.name} with --resume-after", problems)
    return out


def loads(text: str, source: str = "scenario") -> Scenario:
    try:
        data = parse_toml(text, source)
    except InputFileError as exc:
        raise ScenarioError(source, [str(exc)]) from None
    if "source" in data:
        raise ScenarioError(source, ["source: unknown key"])
    # msgspec names a table's key `[...]`: check keyed tables one by one, by their name
    named: list[str] = []
    for table, kind in (("releases", Release), ("nodes", NodeOverride), ("faults", NodeFaults)):
        named.extend(_entry_problems(table, data.get(table), kind))
    fleet = data.get("fleet")
    if isinstance(fleet, dict):
        named.extend(_entry_problems("fleet.pre_open_errors", fleet.get("pre_open_errors"), int))
    if named:
        raise ScenarioError(source, named)
    try:
        sc = msgspec.convert(data, Scenario, strict=True)
    except msgspec.ValidationError as exc:
        raise ScenarioError(source, _msgspec_problems(str(exc))) from None
    problems = _problems(sc)
    if problems:
        raise ScenarioError(source, problems)
    return msgspec.structs.replace(sc, source=source)


def _entry_problems(where: str, entries: object, kind: Any) -> list[str]:
    """Problems of each entry of a keyed table (`[releases.<id>]`, `[nodes.<id>]`, a flag
    table), named by its key: msgspec names every key `[...]`, and `releases[...].foo`
    did not say which release had the typo."""
    if not isinstance(entries, dict):
        return []  # msgspec names the table itself
    out: list[str] = []
    for key, entry in entries.items():
        if kind in (Release, NodeOverride) and isinstance(entry, dict):
            flags = _entry_problems(f"{where}.{key}.flags", entry.get("flags"), str)
            if flags:
                out.extend(flags)
                continue
        try:
            msgspec.convert(entry, kind, strict=True)
        except msgspec.ValidationError as exc:
            out.extend(f"{where}.{key}.{q}" for q in _msgspec_problems(str(exc)))
    return [q.replace(".(top level): ", ": ") for q in out]


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")


def _msgspec_problems(message: str) -> list[str]:
    m = _AT.match(message)
    msg, path = (m.group("msg"), m.group("path") or "") if m else (message, "")
    key = re.sub(r"\[(\d+)\]", r"[\1]", path.lstrip("."))
    u = _UNKNOWN.match(msg)
    if u:
        full = f"{key}.{u.group('field')}" if key else u.group("field")
        return [f"{full}: unknown key"]
    missing = re.match(r"Object missing required field `(?P<field>[^`]+)`", msg)
    if missing:
        full = f"{key}.{missing.group('field')}" if key else missing.group("field")
        return [f"{full}: required key is missing"]
    # A section's own checks (e.g. SupervisorConfig) list one `field: rule` per line.
    listed = [line.strip() for line in msg.splitlines()[1:] if line.strip()]
    if key and listed:
        return [f"{key}.{line}" for line in listed]
    if key and msg.startswith(f"{key}: "):  # a section that names itself (RampPlan)
        return [f"{key}.{part}" for part in msg.removeprefix(f"{key}: ").split("; ")]
    return [f"{key or '(top level)'}: {msg}"]


def _problems(sc: Scenario) -> list[str]:
    p: list[str] = []

    def need(ok: bool, key: str, rule: str, value: object) -> None:
        if not ok:
            p.append(f"{key}: {rule} (got {quoted(value)})")

    _finite(p, sc, "")
    m = sc.scenario
    need(bool(m.name), "scenario.name", "must be a non-empty string", m.name)
    _name_problems(p, m.name)
    need(
        math.isfinite(m.duration_s) and 0 < m.duration_s <= MAX_DURATION_S,
        "scenario.duration_s",
        f"must be a finite number of seconds in (0, {MAX_DURATION_S:.0f}] (one day)",
        m.duration_s,
    )
    need(1 <= m.step_ms <= 60_000, "scenario.step_ms", "must be in 1..60000", m.step_ms)
    need(m.sample_s * 1000 >= m.step_ms, "scenario.sample_s", "must be >= one step", m.sample_s)
    need(
        m.sample_s <= m.duration_s,
        "scenario.sample_s",
        "must be <= scenario.duration_s (no sample would be taken)",
        m.sample_s,
    )
    need(m.open.tzinfo is not None, "scenario.open", "must carry a UTC offset", str(m.open))
    if m.open.tzinfo is not None:
        need(
            OPEN_RANGE[0] <= m.open < OPEN_RANGE[1],
            "scenario.open",
            "must be in 1971..2199 (the clocks count nanoseconds in 64 bits)",
            str(m.open),
        )
    f = sc.fleet
    need(1 <= f.nodes <= 256, "fleet.nodes", "must be in 1..256", f.nodes)
    # at most the ids a fleet can have (node_ids() of 1e18 nodes ran out of memory)
    ids = {f"n{i}" for i in range(1, min(f.nodes, 256) + 1)}
    for i, n in enumerate(f.missed_deploy):
        need(n in ids, f"fleet.missed_deploy[{i}]", f"must be a node id n1..n{f.nodes}", n)
        need(n not in f.missed_deploy[:i], f"fleet.missed_deploy[{i}]", "lists a node twice", n)
    for n, count in f.pre_open_errors.items():
        need(n in ids, f"fleet.pre_open_errors.{n}", f"must be a node id n1..n{f.nodes}", n)
        need(
            0 <= count <= MAX_PRE_OPEN_ERRORS,
            f"fleet.pre_open_errors.{n}",
            f"must be in 0..{MAX_PRE_OPEN_ERRORS}",
            count,
        )
    bad = order_problem("id", f.strategy, "X", Side.BUY, 1, None)
    if bad is not None:  # every child carries it: an invalid one fails the first order
        p.append(f"fleet.strategy: {bad[1]} (got {quoted(f.strategy)})")
    elif not _order_name(f.strategy):  # the Guard refuses it (invalid_order): all blocked
        p.append(f"fleet.strategy: {NAME_RULE} (got {quoted(f.strategy)})")
    need(bool(sc.releases), "releases", "must define at least one release", {})
    for rid, rel in sc.releases.items():
        need(rel.id == rid, f"releases.{rid}.id", "must equal its table name", rel.id)
        try:  # the attestation layer signs every release of the scenario
            check_release_id(rid, where=f"releases.{rid}")
        except ReleaseInputError as exc:
            p.append(f"{exc} (what a signed release manifest holds)")
        for flag in rel.flags:
            _flag_id_problem(p, f"releases.{rid}.flags", flag)
        for flag, beh in rel.flags.items():
            need(
                beh in BEHAVIOURS,
                f"releases.{rid}.flags.{flag}",
                f"must be one of {', '.join(sorted(BEHAVIOURS))}",
                beh,
            )
    p.extend(sc.config.problems("config"))
    for nid, o in sc.nodes.items():
        where = f"nodes.{nid}"
        need(nid in ids, where, f"must be a node id n1..n{f.nodes}", nid)
        need(  # an empty override was silently ignored: the node ran what the rest run
            o.release is not None or bool(o.flags) or bool(o.config),
            where,
            "must set at least one of release, flags, config",
            {},
        )
        if o.release is not None:
            need(o.release in sc.releases, f"{where}.release", "must name a release", o.release)
            need(
                nid not in f.missed_deploy,
                f"{where}.release",
                "conflicts with fleet.missed_deploy (which already sets its release)",
                o.release,
            )
        for flag in o.flags:
            _flag_id_problem(p, f"{where}.flags", flag)
        for flag, beh in o.flags.items():
            need(
                beh in BEHAVIOURS,
                f"{where}.flags.{flag}",
                f"must be one of {', '.join(sorted(BEHAVIOURS))}",
                beh,
            )
        try:
            merged = msgspec.convert(
                {**msgspec.structs.asdict(sc.config), **o.config}, NodeConfig, strict=True
            )
        except msgspec.ValidationError as exc:
            p.extend(f"{where}.config.{q}" for q in _msgspec_problems(str(exc)))
        else:
            p.extend(merged.problems(f"{where}.config"))
    for nid, fault in sc.faults.items():
        _fault_problems(p, nid, fault, nid in ids, f.nodes, m.duration_s)
    d = sc.deploy
    need(d.target in sc.releases, "deploy.target", "must name a release", d.target)
    need(d.previous in sc.releases, "deploy.previous", "must name a release", d.previous)
    known = {flag for rel in sc.releases.values() for flag in rel.flags}
    known |= {flag for o in sc.nodes.values() for flag in o.flags}
    need(
        d.flag in known,
        "deploy.flag",
        "must be a flag some release knows (switching an unknown flag changes nothing)",
        d.flag,
    )
    need(
        d.flag not in known or d.target not in sc.releases or d.flag in sc.releases[d.target].flags,
        "deploy.flag",
        f"must be a flag deploy.target ({d.target}) defines: the flag registry takes its meaning "
        "from the target, so every node would refuse the switch (schema_missing_flag) and "
        "nothing would change",
        d.flag,
    )
    need(
        NAMESPACED_ID.fullmatch(d.flag) is not None,
        "deploy.flag",
        "must be a namespaced flag id (lower-case dotted segments, e.g. trading.smars.rlp)",
        d.flag,
    )
    need(
        0 <= d.flag_on_s < m.duration_s,
        "deploy.flag_on_s",
        "must be in 0..scenario.duration_s (exclusive: a flag switched on at the stop "
        "changes nothing)",
        d.flag_on_s,
    )
    pc = sc.parents
    need(1 <= pc.count <= MAX_PARENTS, "parents.count", f"must be in 1..{MAX_PARENTS}", pc.count)
    need(0 <= pc.pre_open <= pc.count, "parents.pre_open", "must be in 0..count", pc.pre_open)
    need(
        0 <= pc.arrival_end_s <= m.duration_s,
        "parents.arrival_end_s",
        "must be in 0..scenario.duration_s",
        pc.arrival_end_s,
    )
    need(
        1 <= pc.child_qty <= MAX_QTY,
        "parents.child_qty",
        f"must be in 1..{MAX_QTY:.0e} (an order's quantity)",
        pc.child_qty,
    )
    need(0 <= pc.accounts <= 100_000, "parents.accounts", "must be in 0..100000", pc.accounts)
    need(bool(pc.qty), "parents.qty", "must list at least one size", pc.qty)
    # sizes are judged by a child_qty that is itself valid (else it alone is named: a 0
    # divided every size, a ZeroDivisionError)
    child = pc.child_qty if 1 <= pc.child_qty <= MAX_QTY else 1
    for i, q in enumerate(pc.qty):
        need(
            child <= q <= MAX_QTY and q % child == 0,
            f"parents.qty[{i}]",
            f"must be a positive multiple of parents.child_qty, at most {MAX_QTY:.0e} (the "
            "Guard registers no larger parent)",
            q,
        )
    u = sc.universe
    need(
        bool(u.tiers) != bool(u.symbols),
        "universe",
        "must have exactly one of `tiers` (generated) or `symbols` (listed)",
        sorted(k for k in ("tiers", "symbols") if getattr(u, k)),
    )
    initials: dict[str, int] = {}
    for i, t in enumerate(u.tiers):
        where = f"universe.tiers[{i}]"
        need(bool(t.name), f"{where}.name", "must be a non-empty string", t.name)
        initial = t.name[:1].upper()
        if t.name and (initial == "/" or not _order_name(initial)):
            p.append(
                f"{where}.name: must not start with '/', a space or a control character "
                f"(it starts every generated symbol, {initial}000...) (got {quoted(t.name)})"
            )
        if t.name and initial in initials:  # generated symbols are <initial><index>
            p.append(
                f"{where}.name: must not start with the letter of universe.tiers"
                f"[{initials[initial]}].name (its symbols would be named {initial}000... too, "
                f"and two books would trade as one) (got {quoted(t.name)})"
            )
        initials.setdefault(initial, i)
        need(1 <= t.count <= 1000, f"{where}.count", "must be in 1..1000", t.count)
        # a tier's ADV is drawn down to half its value: the thinnest book it can make
        _spec_values(p, where, t.price, t.adv, t.sigma, t.spread, t.peg_updates_per_s, sc, 0.5)
    names: set[str] = set()
    for i, s in enumerate(u.symbols):
        where = f"universe.symbols[{i}]"
        need(1 <= len(s.name) <= 16, f"{where}.name", "must be 1..16 characters", s.name)
        need(s.name not in names, f"{where}.name", "must be unique", s.name)
        need(
            "/" not in s.name and _order_name(s.name),
            f"{where}.name",
            "must not contain '/' or a control character, or start or end with a space "
            "(the Guard refuses such a symbol: every child would be blocked, invalid_order)",
            s.name,
        )
        names.add(s.name)
        _spec_values(p, where, s.price, s.adv, s.sigma, s.spread, s.peg_updates_per_s, sc, 1.0)
    n_sym = len(u.symbols) or sum(t.count for t in u.tiers)
    if pc.long_symbols is not None:
        need(
            0 <= pc.long_symbols <= n_sym,
            "parents.long_symbols",
            f"must be in 0..{n_sym} (the universe size)",
            pc.long_symbols,
        )
    listed = {s.name for s in u.symbols} or {
        f"{t.name[:1].upper()}{j:03d}" for t in u.tiers for j in range(max(0, min(t.count, 1000)))
    }  # generated names do not depend on the seed (universe.generate)
    for i, fl in enumerate(sc.flow):
        where = f"flow[{i}]"
        need(
            fl.symbol in listed, f"{where}.symbol", "must name a symbol of the universe", fl.symbol
        )
        need(1 <= fl.shares <= 10**12, f"{where}.shares", "must be in 1..1e12", fl.shares)
        need(  # a negative from_s was named as a bad to_s
            0 <= fl.from_s < m.duration_s,
            f"{where}.from_s",
            "must be in 0..scenario.duration_s (exclusive)",
            fl.from_s,
        )
        need(
            not 0 <= fl.from_s < m.duration_s or fl.from_s < fl.to_s <= m.duration_s,
            f"{where}.to_s",
            "must be after from_s and at most scenario.duration_s",
            fl.to_s,
        )
    mk = sc.market
    need(mk.tick > 0, "market.tick", "must be > 0", mk.tick)
    need(mk.impact_y > 0, "market.impact_y", "must be > 0", mk.impact_y)
    need(
        0 <= mk.permanent_fraction <= 1,
        "market.permanent_fraction",
        "must be in 0..1",
        mk.permanent_fraction,
    )
    need(mk.resilience_s > 0, "market.resilience_s", "must be > 0", mk.resilience_s)
    # seconds the replay turns into clock nanoseconds: a finite 1e300 overflowed mid-run
    need(
        0 <= mk.quiet_s <= MAX_DURATION_S,
        "market.quiet_s",
        f"must be in 0..{MAX_DURATION_S:.0f} (one day)",
        mk.quiet_s,
    )
    need(
        0 <= sc.exit.discount_y <= MAX_DISCOUNT_Y,
        "exit.discount_y",
        f"must be in 0..{MAX_DISCOUNT_Y:g} (a short's buy-back premium is not capped)",
        sc.exit.discount_y,
    )
    rec = sc.record
    need(  # the report's title for the comparison with the record prints it
        rec.source.isprintable(),
        "record.source",
        "must not contain a control character (the report prints it as a table title)",
        rec.source,
    )
    counts = ("executions", "symbols", "shares", "net_long_symbols", "net_short_symbols")
    for key in (*counts, "symbols_moved_over_5pct"):
        count = getattr(rec, key)  # the report holds the replay's figure to it as a ratio
        need(count is None or count >= 0, f"record.{key}", "must be >= 0 (a count)", count)
    tl = sc.timeline
    if tl.rollback_s is not None:
        need(
            0 <= tl.rollback_s < m.duration_s,
            "timeline.rollback_s",
            "must be in 0..scenario.duration_s (exclusive: a rollback at the stop changes nothing)",
            tl.rollback_s,
        )
        need(
            d.previous != d.target,
            "deploy.previous",
            "must differ from deploy.target when timeline.rollback_s is set "
            "(a rollback to the release already deployed changes nothing)",
            d.previous,
        )
    for key, value in (("notice_s", tl.notice_s), ("reaction_s", tl.reaction_s)):
        need(  # the kill is scheduled at this many seconds: 1e300 overflowed the clock
            0 <= value <= MAX_DURATION_S,
            f"timeline.{key}",
            f"must be in 0..{MAX_DURATION_S:.0f} (one day: a kill later than that is after "
            "any run)",
            value,
        )
    if tl.resume_after_s is not None:
        need(
            0 <= tl.resume_after_s <= m.duration_s,
            "timeline.resume_after_s",
            "must be in 0..scenario.duration_s",
            tl.resume_after_s,
        )
    rb = sc.router
    need(
        rb.max_children_per_parent >= 1,
        "router.max_children_per_parent",
        "must be >= 1",
        rb.max_children_per_parent,
    )
    need(
        0 < rb.max_qty_multiple <= MAX_QTY_MULTIPLE,
        "router.max_qty_multiple",
        f"must be in (0, {MAX_QTY_MULTIPLE:g}]",
        rb.max_qty_multiple,
    )
    try:  # what the rollout layer's start checks: without it the layer refused to start,
        sc.rollout.check_gated()  # and a run it never judged read as contained
    except ValueError as exc:
        p.append(f"rollout.{str(exc).removeprefix('plan.')}")
    for i, gate in enumerate(sc.rollout.gates):
        need(
            gate.metric in GATE_METRICS,
            f"rollout.gates[{i}].metric",
            "must be a metric the supervisor reports ("
            + ", ".join(sorted(GATE_METRICS))
            + "): any other is never reported, so the gate fails and the rollout aborts "
            "at its first stage",
            gate.metric,
        )
    cp = sc.control
    try:
        cp.policy()
    except LeaseError as exc:
        p.append(f"control.{exc}")
    need(
        cp.heartbeat_s <= cp.metrics_s <= 60,
        "control.metrics_s",
        "must be in control.heartbeat_s..60",
        cp.metrics_s,
    )
    if "lease_timeout_s" in sc.limits:
        p.append("limits.lease_timeout_s: set control.lease_timeout_s instead (one lease policy)")
    for key in sc.limits:
        if key not in FLEET_RULES or key == "version":
            p.append(f"limits.{key}: unknown key (a fleet key of knightwatch.limits.Limits)")
    if not p:
        try:
            Limits(**sc.limits)
        except LimitsError as exc:
            p.extend(f"limits.{problem}" for problem in exc.problems)
    return p


def _fault_problems(
    p: list[str], nid: str, fault: NodeFaults, known: bool, nodes: int, duration_s: float
) -> None:
    """A fault on a node outside the fleet, outside the run, or that changes nothing."""
    where = f"faults.{nid}"
    if not known:
        p.append(f"{where}: must be a node id n1..n{nodes} (got {quoted(nid)})")
    kinds = [k for k in fault.__struct_fields__ if getattr(fault, k) is not None]
    if not kinds:
        p.append(
            f"{where}: must set at least one of frozen_feed, reused_ids, off_price, wrong_side "
            "(got {})"
        )
    for kind in kinds:
        from_s = getattr(fault, kind).from_s
        if not 0 <= from_s < duration_s:  # NaN too
            p.append(
                f"{where}.{kind}.from_s: must be in 0..scenario.duration_s (exclusive: a fault "
                f"at the stop changes nothing) (got {quoted(from_s)})"
            )
    for kind, window in (("frozen_feed", fault.frozen_feed), ("wrong_side", fault.wrong_side)):
        if window is None or window.until_s is None:
            continue
        if not window.from_s < window.until_s <= duration_s:
            p.append(
                f"{where}.{kind}.until_s: must be after {kind}.from_s and at most "
                f"scenario.duration_s (got {quoted(window.until_s)})"
            )
    op = fault.off_price
    if op is not None and not 0 < op.pct < 1:
        p.append(
            f"{where}.off_price.pct: must be in (0, 1) (a fraction of the touch; a sell "
            f"priced 100% through the bid would be free) (got {quoted(op.pct)})"
        )


def _name_problems(p: list[str], name: str) -> None:
    """The scenario's name labels the replay's limits (`replay:<name>`, in every Guard
    decision and flight-record line) and heads the report: it follows the rule a limits
    file's `version` follows. An escape sequence in it reached the terminal, and a name
    ending in `@5%` made the fleet's full limits read as a 5% ramp stage."""
    longest = VERSION_MAX_CHARS - len(VERSION_PREFIX)
    if len(name) > longest:
        p.append(
            f"scenario.name: must be at most {longest} characters (the replay's limits "
            f"version, {VERSION_PREFIX}<name>, holds {VERSION_MAX_CHARS}) (got {quoted(name)})"
        )
        return
    if not name:
        return  # named as empty above
    try:
        Limits.from_mapping({"version": f"{VERSION_PREFIX}{name}"})
    except LimitsError as exc:
        for problem in exc.problems:
            rule = problem.partition("version: ")[2].split(" (got ")[0]
            p.append(
                f"scenario.name: {rule} (it labels the replay's limits as "
                f"{VERSION_PREFIX}<name>) (got {quoted(name)})"
            )


NAME_RULE = (
    "must not start or end with whitespace or contain a control character (the Guard "
    "refuses such an order: every child would be blocked, invalid_order)"
)


def _order_name(name: str) -> bool:
    """Whether an order can carry `name` as its strategy or symbol (the Guard's validity rule)."""
    return name == name.strip() and name.isprintable()


def _flag_id_problem(p: list[str], where: str, flag: str) -> None:
    """A flag id a release's flag table cannot hold (`knightwatch.release.flagschema`): the
    governance layers build every table, and one such id ended the run in a traceback."""
    try:
        check_flag_id(flag, where=where)
    except ReleaseInputError as exc:
        p.append(f"{where}.{flag}: {str(exc).removeprefix(f'{where}: ')}")


def _finite(p: list[str], value: object, key: str) -> None:
    """Name every number that is not finite (TOML has `inf` and `nan`): each one ended a
    replay in a traceback (`round(inf)`) or ran it on a market that cannot exist.
    `limits`, `supervisor`, `rollout` and `ramp` are checked by their own types."""
    if isinstance(value, float):
        if not math.isfinite(value):
            p.append(f"{key}: must be a finite number (got {quoted(value)})")
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            if not key and name in ("limits", "supervisor", "rollout", "ramp"):
                continue
            _finite(p, getattr(value, name), f"{key}.{name}" if key else name)
    elif isinstance(value, dict):
        for k, v in value.items():
            _finite(p, v, f"{key}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _finite(p, v, f"{key}[{i}]")


def _spec_values(
    p: list[str],
    where: str,
    price: float,
    adv: float,
    sigma: float,
    spread: float,
    rate: float,
    sc: Scenario,
    thinnest: float,
) -> None:
    tick = sc.market.tick
    before = len(p)
    ticked = math.isfinite(tick) and tick > 0  # else market.tick is named on its own
    on_book = not ticked or (math.isfinite(price / tick) and round(price / tick) >= 1)
    for key, value, ok, rule in (
        ("price", price, price > 0, "must be > 0"),
        ("price", price, price <= 0 or on_book, "must be at least one market.tick"),
        ("price", price, price <= MAX_BOOK_PRICE, f"must be at most {MAX_BOOK_PRICE:.0e}"),
        ("adv", adv, adv > 0, "must be > 0"),
        ("sigma", sigma, 0 < sigma < 1, "must be in (0, 1)"),
        ("spread", spread, spread > 0, "must be > 0"),
        ("spread", spread, spread <= 0 or spread < price, "must be less than price"),
        ("peg_updates_per_s", rate, 0 < rate <= 1000, "must be in (0, 1000]"),
    ):
        if not ok:
            p.append(f"{where}.{key}: {rule} (got {quoted(value)})")
    y = sc.market.impact_y
    if len(p) > before or not (ticked and math.isfinite(y) and y > 0):
        return  # the values above (or market.*) are named on their own
    try:
        scale = (y * sigma * price) ** 2
    except OverflowError:
        scale = math.inf
    if not (math.isfinite(scale) and scale > 0):
        p.append(
            f"{where}.sigma: sigma * price * market.impact_y must be a usable number (the "
            f"book's depth divides by its square, which is {scale:g}) (got {quoted(sigma)})"
        )
        return
    depth = 2.0 * adv * thinnest * tick * tick / scale
    if not depth >= MIN_LEVEL_DEPTH:
        p.append(
            f"{where}: price, sigma, adv, market.tick and market.impact_y give a book whose "
            f"first level holds {depth:.3g} shares, so one share moves the quote by over a "
            f"thousand ticks; must be >= {MIN_LEVEL_DEPTH:g} (a larger tick or adv, or a "
            "smaller sigma or impact_y)"
        )
