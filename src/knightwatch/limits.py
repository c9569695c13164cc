"""Limits: the numbers the Guard enforces, as frozen, validated structs.

Three levels, like a broker's risk sheet: fleet defaults, per-strategy and
per-symbol overrides. Every applicable limit applies, so when a strategy and a
symbol both override a key the stricter value wins; a conflict never loosens
a control. A key set to ``None`` at fleet level switches that rule off (the
replay uses this to measure one guardrail at a time); overrides cannot switch
a rule off, only tighten or loosen its number.

Validation is strict and exhaustive because a typo in a risk file is exactly
the kind of quiet failure that lets a runaway through: unknown keys, wrong
types, negatives, NaN and infinities, integers past 64 bits, durations the
Guard's nanoseconds cannot hold, an empty allow-list and one symbol's override
table written twice in different cases (`[symbol.ibm]` beside `[symbol.IBM]`: the
Guard holds a symbol's halts and restricted listing in any case, but took each
table's limits for one spelling only) are errors naming the key and the rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgspec

from knightwatch.decision import RejectReason
from knightwatch.errors import KnightwatchError, quoted
from knightwatch.inputs import InputFileError, load_toml
from knightwatch.order import MAX_ID_LEN, MAX_PRICE, MAX_SYMBOL_LEN, MIN_PRICE


class LimitsError(KnightwatchError, ValueError):
    """All problems found in a limits definition, one `key: rule (got value)` per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid limits:\n  " + "\n  ".join(problems))


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str  # "int", "float", "bool", "symbols", "str"
    minimum: float | None = None
    exclusive: bool = False  # minimum itself not allowed
    maximum: float | None = None
    nullable: bool = True
    empty: bool = True  # "symbols": an empty list allowed

    def problem(self, value: Any) -> str | None:
        if value is None:
            return None if self.nullable else "is required"
        if self.kind == "bool":
            return None if type(value) is bool else "must be true or false"
        if self.kind == "str":
            return None if type(value) is str and value else "must be a non-empty string"
        if self.kind == "symbols":
            ok = isinstance(value, list | tuple | set | frozenset)
            if not ok or not all(type(s) is str and s for s in value):
                return "must be a list of non-empty symbol strings"
            if not value and not self.empty:
                return (
                    "must not be empty (an empty allow-list allows no symbol); leave the key "
                    "out to allow every symbol"
                )
            for symbol in value:
                if (p := _name_problem(symbol, "symbol")) is not None:
                    return f"symbol {quoted(symbol)}: {p}"
            return None
        if type(value) is bool:
            return f"must be a{'n integer' if self.kind == 'int' else ' number'}, not a boolean"
        if self.kind == "int" and type(value) is not int:
            return "must be an integer"
        if self.kind == "float" and type(value) not in (int, float):
            return "must be a number"
        if type(value) is int and not -INT_MAX <= value <= INT_MAX:
            return f"must be at most {INT_MAX} in size (a 64-bit integer)"
        if not math.isfinite(value):
            return "must be finite (not NaN or infinity)"
        if self.minimum is not None:
            if self.exclusive and value <= self.minimum:
                return f"must be > {self.minimum:g}"
            if not self.exclusive and value < self.minimum:
                return f"must be >= {self.minimum:g}"
        if self.maximum is not None and value > self.maximum:
            return f"must be <= {self.maximum:g}"
        return None


VERSION_MAX_CHARS = 128
"""A limits file's `version` is a label in every decision and audit record, not a document."""

ID_BUCKETS = 1024
"""Time buckets per duplicate-check window (`guard.orderids.BUCKETS`)."""

INT_MAX = 2**63 - 1
"""The largest integer a limit may be: every consumer (JSON, ns arithmetic, a float
scale) handles it, and `math.isfinite` of a larger one raises instead of answering."""
SECONDS_MIN = 1e-6
SECONDS_MAX = 10 * 365 * 86_400.0
"""Durations are kept as integer nanoseconds: below a microsecond a window rounds to
nothing (a zero duplicate window stops the Guard being built, a zero execution window
switches the throttle off), and above ten years the nanoseconds overflow or mean "never"."""

COUNT = Rule("int", 1)
AMOUNT = Rule("float", 0, exclusive=True)
SECONDS = Rule("float", SECONDS_MIN, maximum=SECONDS_MAX)
FRACTION = Rule("float", 0, exclusive=True, maximum=1)
TICK = Rule("float", MIN_PRICE, maximum=MAX_PRICE)
"""A tick is a price step: no finer than the finest price an order may carry, no coarser
than the largest (a tick of 1e-320 would make a tick collar refuse every price)."""
LOT_MIN = 1e-12
LOT_MAX = 1e9
LOT = Rule("float", LOT_MIN, maximum=LOT_MAX)
"""What one unit of `qty` is. Every amount the Guard values is qty x price x lot: a lot
of 1e-320 would round realistic orders' notional to nothing (the notional and exposure
checks off), one of 1e300 would make positions infinite and their sums NaN."""

# Keys an override may set, the rule for each, and which way is stricter.
OVERRIDE_RULES: dict[str, tuple[Rule, str]] = {
    "max_order_qty": (COUNT, "min"),
    "max_order_notional": (AMOUNT, "min"),
    "price_collar_pct": (FRACTION, "min"),
    "price_collar_ticks": (COUNT, "min"),
    "tick_size": (TICK, "max"),
    "lot_size": (LOT, "max"),
    "max_price_age_s": (SECONDS, "min"),
    "max_orders_per_s": (COUNT, "min"),
    "max_orders_per_min": (COUNT, "min"),
    "max_executions_per_window": (COUNT, "min"),
    "execution_window_s": (SECONDS, "max"),
    "max_child_orders_per_parent": (COUNT, "min"),
    "max_position_qty": (COUNT, "min"),
}

FLEET_RULES: dict[str, Rule] = {
    "version": Rule("str", nullable=False),
    "lease_timeout_s": SECONDS,
    "allowed_symbols": Rule("symbols", empty=False),
    "restricted_symbols": Rule("symbols", nullable=False),
    "max_order_qty": COUNT,
    "max_order_notional": AMOUNT,
    "require_reference_price": Rule("bool", nullable=False),
    "max_price_age_s": SECONDS,
    "price_collar_pct": FRACTION,
    "price_collar_ticks": COUNT,
    "tick_size": Rule("float", MIN_PRICE, maximum=MAX_PRICE, nullable=False),
    "max_orders_per_s_node": COUNT,
    "max_orders_per_min_node": COUNT,
    "max_orders_per_s_strategy": COUNT,
    "max_orders_per_min_strategy": COUNT,
    "max_orders_per_s_symbol": COUNT,
    "max_orders_per_min_symbol": COUNT,
    "max_executions_per_window": COUNT,
    "execution_window_s": Rule("float", SECONDS_MIN, maximum=SECONDS_MAX, nullable=False),
    "max_child_orders_per_parent": COUNT,
    "require_registered_parent": Rule("bool", nullable=False),
    "max_parent_qty_multiple": Rule("float", 1),
    "max_position_qty": COUNT,
    "max_gross_exposure": AMOUNT,
    "max_net_exposure": AMOUNT,
    "max_customer_gross_exposure": AMOUNT,
    "max_customer_net_exposure": AMOUNT,
    "max_turnover_per_min": AMOUNT,
    "max_cancel_to_fill_ratio": AMOUNT,
    "cancel_ratio_min_cancels": Rule("int", 0, nullable=False),
    "max_unknown_cancels_per_s": COUNT,
    "max_loss": AMOUNT,
    "max_tracked_order_ids": Rule("int", 1, nullable=False),
    "duplicate_id_window_s": SECONDS,
}


class Override(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-strategy or per-symbol values; ``None`` inherits the fleet default."""

    max_order_qty: int | None = None
    max_order_notional: float | None = None
    price_collar_pct: float | None = None
    price_collar_ticks: int | None = None
    tick_size: float | None = None
    lot_size: float | None = None
    """What one unit of `qty` is for this symbol (symbol overrides only): 0.0001 makes
    quantities count in 1/10,000 of the instrument (crypto, fractional shares)."""
    max_price_age_s: float | None = None
    max_orders_per_s: int | None = None
    max_orders_per_min: int | None = None
    max_executions_per_window: int | None = None
    execution_window_s: float | None = None
    max_child_orders_per_parent: int | None = None
    max_position_qty: int | None = None

    def __post_init__(self) -> None:
        problems = [
            f"{key}: {p} (got {quoted(getattr(self, key))})"
            for key, (rule, _) in OVERRIDE_RULES.items()
            if (p := rule.problem(getattr(self, key))) is not None
        ]
        if problems:
            raise LimitsError(problems)


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Fleet-wide limits with conservative defaults; every rule is on by default.

    The defaults are sized for one equity order router: a few thousand shares
    per order, a few hundred orders per second, a $250k loss stop. A firm
    replaces them with its own file; nobody should run with no file at all.

    Position, exposure, turnover and loss limits are the firm's own (principal)
    capital limits; a customer's fills within its registered parent count
    against the `max_customer_*` credit limits of that customer's account
    instead (see `knightwatch.guard.ledger`).
    """

    version: str = "default"
    lease_timeout_s: float | None = None
    allowed_symbols: frozenset[str] | None = None
    restricted_symbols: frozenset[str] = frozenset()
    max_order_qty: int | None = 10_000
    max_order_notional: float | None = 1_000_000.0
    require_reference_price: bool = True
    max_price_age_s: float | None = 10.0
    price_collar_pct: float | None = 0.05
    price_collar_ticks: int | None = None
    tick_size: float = 0.01
    max_orders_per_s_node: int | None = 500
    max_orders_per_min_node: int | None = 10_000
    max_orders_per_s_strategy: int | None = 200
    max_orders_per_min_strategy: int | None = 5_000
    max_orders_per_s_symbol: int | None = 50
    max_orders_per_min_symbol: int | None = 1_000
    max_executions_per_window: int | None = 100
    execution_window_s: float = 1.0
    max_child_orders_per_parent: int | None = 200
    require_registered_parent: bool = True
    max_parent_qty_multiple: float | None = 1.0
    max_position_qty: int | None = 100_000
    max_gross_exposure: float | None = 20_000_000.0
    max_net_exposure: float | None = 10_000_000.0
    max_customer_gross_exposure: float | None = 10_000_000.0
    max_customer_net_exposure: float | None = 10_000_000.0
    max_turnover_per_min: float | None = 10_000_000.0
    max_cancel_to_fill_ratio: float | None = 50.0
    cancel_ratio_min_cancels: int = 500
    max_unknown_cancels_per_s: int | None = 100
    """Cancel requests for orders the Guard does not hold (`Guard.on_cancel_request`) in
    any second beyond which the node halts: a loop cancelling order ids that do not exist
    (filled, never sent) floods the venue, and the cancel-to-fill ratio counts only the
    cancels the venue confirmed. A cancel racing its order's fill is one such request;
    100 a second is no race. None switches it off."""
    max_loss: float | None = 250_000.0
    max_tracked_order_ids: int = 15_000_000
    duplicate_id_window_s: float | None = 86_400.0
    """How long an accepted order id blocks its reuse; None: until `Guard.start_session`."""
    strategy: Mapping[str, Override] = msgspec.field(default_factory=dict)
    symbol: Mapping[str, Override] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for key, rule in FLEET_RULES.items():
            value = getattr(self, key)
            if (p := rule.problem(value)) is not None:
                problems.append(f"{key}: {p} (got {quoted(value)})")
        for section in ("strategy", "symbol"):
            table = getattr(self, section)
            if not isinstance(table, Mapping):
                problems.append(f"{section}: must be a table of overrides")
                continue
            for name, ov in table.items():
                if (p := _name_problem(name, section)) is not None:
                    problems.append(f"{section}.{quoted(name)}: {p}")
                if not isinstance(ov, Override):
                    problems.append(f"{section}.{name}: must be an Override")
        if not problems and (p := self._id_capacity_problem()) is not None:
            problems.append(p)
        if problems:
            raise LimitsError(problems)
        for key in ("allowed_symbols", "restricted_symbols"):
            value = getattr(self, key)
            if value is not None and type(value) is not frozenset:
                msgspec.structs.force_setattr(self, key, frozenset(value))
        # frozen all the way down: an override table cannot be edited behind the Guard's back
        for section in ("strategy", "symbol"):
            msgspec.structs.force_setattr(
                self, section, MappingProxyType(dict(getattr(self, section)))
            )

    def ids_in_window(self) -> int | None:
        """The most ids the duplicate check can hold when the node trades at its rate limits.

        The orders the node-rate limits let through within `duplicate_id_window_s`
        plus the time an id may outstay the window (two of the check's time
        buckets). None when that is unbounded (no window: the scope is the
        session; or no node-rate limit). `max_tracked_order_ids` must be at least
        this, or a node trading at its limits would be blocked for capacity.
        """
        if self.duplicate_id_window_s is None:
            return None
        window = self.duplicate_id_window_s * (1 + 2 / ID_BUCKETS)
        bounds = []
        if self.max_orders_per_s_node is not None:
            bounds.append(self.max_orders_per_s_node * math.ceil(window))
        if self.max_orders_per_min_node is not None:
            bounds.append(self.max_orders_per_min_node * math.ceil(window / 60))
        return min(bounds) if bounds else None

    def _id_capacity_problem(self) -> str | None:
        most = self.ids_in_window()
        if most is None or most <= self.max_tracked_order_ids:
            return None
        return (
            f"max_tracked_order_ids: must be >= {most}, the orders max_orders_per_s_node and "
            f"max_orders_per_min_node allow within duplicate_id_window_s "
            f"{self.duplicate_id_window_s:g}s (got {self.max_tracked_order_ids}); raise it or "
            "shorten the window, or a node at its rate limits is blocked for capacity"
        )

    def symbol_override(self, symbol: str) -> Override | None:
        """`symbol`'s own table, found in any case: a symbol in any case is one security (the
        Guard's halts, the restricted list), and a file holds one table per symbol however
        spelled. Found by exact spelling only, `[symbol.ibm]` was silently unused for
        orders in `IBM`, which then had the fleet's looser limits and lot size.
        A scan past the exact lookup: called once per lane and symbol book, never per order."""
        ov = self.symbol.get(symbol)
        if ov is None and self.symbol:
            folded = symbol.casefold()
            ov = next((o for n, o in self.symbol.items() if n.casefold() == folded), None)
        return ov

    def lot(self, symbol: str) -> float:
        """What one unit of `qty` is in `symbol`: its `lot_size`, or 1 when none is set."""
        ov = self.symbol_override(symbol)
        return ov.lot_size if ov is not None and ov.lot_size is not None else 1.0

    @classmethod
    def off(cls, **on: Any) -> Limits:
        """Every rule that can be switched off is off, except the keys given.

        For tests, benchmarks and the replay, which measure one rule at a time:
        `Limits.off(max_order_qty=100)` checks only what it must (fail-closed
        basics) plus the order size. Never the right choice for a live node.
        """
        off: dict[str, Any] = {k: None for k, rule in FLEET_RULES.items() if rule.nullable}
        return cls(**{**off, **on})

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "limits") -> Limits:
        """Build from the TOML layout: `version`, `[fleet]`, `[strategy.X]`, `[symbol.Y]`."""
        problems: list[str] = []
        fleet: dict[str, Any] = {}
        overrides: dict[str, dict[str, Override]] = {"strategy": {}, "symbol": {}}
        for top, value in data.items():
            if top == "version":
                p = FLEET_RULES["version"].problem(value)
                if p is None:
                    p = _version_problem(value)
                if p is not None:
                    problems.append(f"version: {p} (got {quoted(value)})")
                else:
                    fleet["version"] = value
            elif top == "fleet":
                if not isinstance(value, Mapping):
                    problems.append("fleet: must be a table")
                    continue
                for key, v in value.items():
                    if key in ("strategy", "symbol", "version") or key not in FLEET_RULES:
                        problems.append(f"fleet.{_key_text(key)}: unknown key")
                    elif (p := FLEET_RULES[key].problem(v)) is not None:
                        problems.append(f"fleet.{key}: {p} (got {quoted(v)})")
                    else:
                        fleet[key] = v
            elif top in overrides:
                if not isinstance(value, Mapping):
                    problems.append(f"{top}: must be a table of tables")
                    continue
                for name, table in value.items():
                    if (p := _name_problem(name, top)) is not None:
                        problems.append(f"{top}.{quoted(name)}: {p}")
                        continue
                    if top == "symbol" and (twin := _case_twin(name, overrides[top])):
                        # the Guard holds a symbol in any case as one security (its restricted
                        # list and halts do): `[symbol.ibm]` beside `[symbol.IBM]` gave it two
                        # limits, the looser one to whichever spelling an order used
                        problems.append(
                            f"symbol.{quoted(name)}: the same symbol as symbol.{quoted(twin)} "
                            "in another case; keep one table for it"
                        )
                        continue
                    ov = _override(f"{top}.{name}", table, top, problems)
                    if ov is not None:
                        overrides[top][name] = ov
            else:
                problems.append(
                    f"{_key_text(top)}: unknown key (expected version, fleet, strategy, symbol)"
                )
        problems.extend(_inert_overrides(fleet, overrides))
        if problems:
            raise LimitsError([f"{source}: {p}" for p in problems])
        try:
            return cls(**fleet, strategy=overrides["strategy"], symbol=overrides["symbol"])
        except LimitsError as exc:
            # every key passed on its own: what is left is between fleet keys (the id
            # capacity), named like every other problem, with the file and its table
            raise LimitsError([f"{source}: fleet.{p}" for p in exc.problems]) from None

    @classmethod
    def from_toml(cls, path: str | Path) -> Limits:
        p = Path(path)
        try:
            data = load_toml(p, "limits file")
        except InputFileError as exc:
            raise LimitsError([str(exc)]) from None
        return cls.from_mapping(data, source=str(p))


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _key_text(key: str) -> str:
    """An unknown key as an error names it: as written when it is a plain word, else quoted
    and cut (a key is the file's text: a newline in it forged a second problem line, an
    escape sequence reached the terminal, a 100 KB key was echoed whole)."""
    return key if _PLAIN_KEY.fullmatch(key) else quoted(key)


def _case_twin(name: str, seen: Mapping[str, object]) -> str | None:
    """The name in `seen` that spells `name` in another case, if any."""
    folded = name.casefold()
    return next((other for other in seen if other.casefold() == folded), None)


def _version_problem(version: str) -> str | None:
    """A file's `version` is a label in every decision, audit record, log line and metric,
    and the ramp reads a stage back from its end: one that is padded, carries a control
    character (a newline forges a log line, an escape sequence rewrites the operator's
    terminal) or already ends like a ramp stage ("v1@1%": a node at full limits would read
    as within every stage, so the ramp's check that nodes applied a stage passed for a
    node that did not) is refused."""
    if len(version) > VERSION_MAX_CHARS:
        return f"must be at most {VERSION_MAX_CHARS} characters"
    if version != version.strip():
        return "must not start or end with whitespace"
    if not version.isprintable():
        return "must not contain control characters"
    if _SCALED_SUFFIX.search(version):
        return "must not end in @N% (reserved: a ramp stage's limits are named so)"
    return None


def _name_problem(name: object, kind: str) -> str | None:
    """A strategy or symbol name in the limits (an override's, a symbol list's entry): one
    no order can carry (empty, padded, a control character, longer than an order's
    field, a strategy with '/') would never match, so the override would silently do
    nothing and a restricted symbol would stay tradeable."""
    if not isinstance(name, str) or not name.strip():
        return "the name must not be empty"
    if name != name.strip():
        return "the name must not start or end with whitespace"
    if not name.isprintable():
        return "the name must not contain control characters"
    limit = MAX_ID_LEN if kind == "strategy" else MAX_SYMBOL_LEN
    if len(name) > limit:
        return f"the name must be at most {limit} characters (no order's {kind} is longer)"
    if kind == "strategy" and "/" in name:
        return "the name must not contain '/' (no order's strategy can)"
    return None


def _inert_overrides(
    fleet: Mapping[str, Any], overrides: Mapping[str, Mapping[str, Override]]
) -> list[str]:
    """An override of a rule the fleet leaves off does nothing (an override changes the
    number of a rule the fleet switches on, never switches one on): a file's
    `[symbol.GME] price_collar_ticks = 5` without `fleet.price_collar_ticks` passed as
    valid and GME had no tick collar. Each such key is a problem naming the fleet key."""
    out = []
    defaults: Limits | None = None
    for section, table in overrides.items():
        for name, ov in table.items():
            for key in OVERRIDE_RULES:
                if getattr(ov, key) is None:
                    continue
                fk = (
                    f"{key}_{section}" if key in ("max_orders_per_s", "max_orders_per_min") else key
                )
                if fk not in FLEET_RULES:
                    continue  # lot_size: no fleet switch
                if fk in fleet:
                    value = fleet[fk]
                else:
                    defaults = defaults if defaults is not None else Limits()
                    value = getattr(defaults, fk)
                if value is None:
                    out.append(
                        f"{section}.{name}.{key}: has no effect while fleet.{fk} is off; set "
                        f"fleet.{fk} to switch the rule on (an override only changes its number)"
                    )
    return out


def _override(where: str, table: Any, section: str, problems: list[str]) -> Override | None:
    if not isinstance(table, Mapping):
        problems.append(f"{where}: must be a table")
        return None
    good: dict[str, Any] = {}
    for key, v in table.items():
        if key not in OVERRIDE_RULES:
            problems.append(f"{where}.{_key_text(key)}: unknown key for a {section} override")
        elif key in ("tick_size", "lot_size") and section != "symbol":
            problems.append(f"{where}.{key}: only a symbol override may set {key}")
        elif (p := OVERRIDE_RULES[key][0].problem(v)) is not None:
            problems.append(f"{where}.{key}: {p} (got {quoted(v)})")
        else:
            good[key] = v
    return Override(**good)


@dataclass(frozen=True, slots=True)
class RuleGroup:
    """The facts about one group of the Guard's checks, kept in one place.

    `row` is the group's row in the README's check table (groups sharing a row
    are listed together there); `keys` are the config keys it reads; `reasons`
    the reason codes it can produce; `layer` the replay layer that switches it
    on (None: always on, a fail-closed basic); `on_fill` groups run on
    executions rather than on orders. The Guard's checks stay inline in
    `Guard._evaluate`; this table is what everything else derives from:
    `rules_for` (the flight recorder's list of rules evaluated), `Limits.off`,
    the replay's layers and the README test.
    """

    name: str
    row: int
    keys: tuple[str, ...] = ()
    reasons: tuple[RejectReason, ...] = ()
    layer: str | None = None
    on_fill: bool = False

    def enabled(self, limits: Limits) -> bool:
        """On unless every key that can switch it is off (None, False or an empty list).

        Overrides can only change a number, never switch a rule on or off, so the
        fleet values decide.
        """
        switches = [k for k in self.keys if k in SWITCHES]
        if not switches:
            return True
        return any(getattr(limits, k) not in (None, False, frozenset()) for k in switches)


_R = RejectReason

RULE_GROUPS: tuple[RuleGroup, ...] = (
    RuleGroup("trading_state", 4, reasons=(_R.HALTED, _R.REDUCING_ONLY)),
    RuleGroup("armed", 2, reasons=(_R.NOT_ARMED,)),
    RuleGroup("lease", 2, ("lease_timeout_s",), (_R.LEASE_EXPIRED,)),
    RuleGroup("validity", 3, reasons=(_R.INVALID_ORDER,)),
    RuleGroup("duplicate_id", 5, ("duplicate_id_window_s",), (_R.DUPLICATE_ORDER_ID,)),
    RuleGroup(
        "symbol_lists",
        5,
        ("allowed_symbols", "restricted_symbols"),
        (_R.SYMBOL_NOT_ALLOWED, _R.SYMBOL_RESTRICTED),
    ),
    RuleGroup(
        "order_size",
        6,
        ("max_order_qty", "max_order_notional"),
        (_R.MAX_ORDER_QTY, _R.MAX_ORDER_NOTIONAL),
        layer="order_size",
    ),
    RuleGroup(
        "reference_price",
        7,
        ("require_reference_price", "max_price_age_s"),
        (_R.NO_REFERENCE_PRICE, _R.STALE_REFERENCE_PRICE),
    ),
    RuleGroup(
        "price_collar",
        7,
        ("price_collar_pct", "price_collar_ticks", "tick_size"),
        (_R.PRICE_COLLAR,),
        layer="order_size",
    ),
    RuleGroup(
        "rates",
        9,
        (
            "max_orders_per_s_node",
            "max_orders_per_min_node",
            "max_orders_per_s_strategy",
            "max_orders_per_min_strategy",
            "max_orders_per_s_symbol",
            "max_orders_per_min_symbol",
        ),
        (_R.RATE_NODE, _R.RATE_STRATEGY, _R.RATE_SYMBOL),
        layer="rates",
    ),
    RuleGroup(
        "execution_throttle",
        13,
        ("max_executions_per_window", "execution_window_s"),
        (_R.EXECUTION_THROTTLE,),
        layer="execution_throttle",
        on_fill=True,
    ),
    RuleGroup(
        "parent",
        8,
        ("max_child_orders_per_parent", "require_registered_parent", "max_parent_qty_multiple"),
        (_R.UNKNOWN_PARENT, _R.MAX_CHILD_ORDERS, _R.PARENT_QTY_EXCEEDED),
        layer="parent_reconciliation",
    ),
    # a child on the other side of the parent it names (registered with its side) is
    # refused whatever the limits switch on: no setting makes a sign bug a valid order
    RuleGroup("parent_side", 8, reasons=(_R.PARENT_SIDE_MISMATCH,)),
    RuleGroup("position", 10, ("max_position_qty",), (_R.MAX_POSITION,), layer="exposure"),
    RuleGroup(
        "exposure",
        10,
        ("max_gross_exposure", "max_net_exposure"),
        (_R.MAX_GROSS_EXPOSURE, _R.MAX_NET_EXPOSURE),
        layer="exposure",
    ),
    RuleGroup(
        "customer_exposure",
        10,
        ("max_customer_gross_exposure", "max_customer_net_exposure"),
        (_R.CUSTOMER_GROSS_EXPOSURE, _R.CUSTOMER_NET_EXPOSURE),
        layer="exposure",
    ),
    RuleGroup("turnover", 11, ("max_turnover_per_min",), (_R.MAX_TURNOVER,), layer="exposure"),
    RuleGroup(
        "cancel_fill_ratio",
        11,
        ("max_cancel_to_fill_ratio", "cancel_ratio_min_cancels"),
        (_R.CANCEL_FILL_RATIO,),
    ),
    RuleGroup("unknown_cancels", 11, ("max_unknown_cancels_per_s",), (_R.UNKNOWN_CANCELS,)),
    RuleGroup("loss", 13, ("max_loss",), (_R.LOSS_LIMIT,), layer="loss_limit", on_fill=True),
    RuleGroup("fill_mismatch", 13, reasons=(_R.FILL_MISMATCH,), on_fill=True),
    RuleGroup("order_id_capacity", 12, ("max_tracked_order_ids",), (_R.ORDER_ID_CAPACITY,)),
    RuleGroup("audit", 1, reasons=(_R.AUDIT_UNAVAILABLE,)),
)
"""Every group of the Guard's rules, in the order the flight recorder lists them."""

SWITCHES = frozenset(
    k for k, rule in FLEET_RULES.items() if rule.nullable or rule.kind in ("bool", "symbols")
) - {"require_registered_parent", "duplicate_id_window_s"}
"""Keys that switch a group off when None, false or empty (the rest are parameters)."""

_RECORDED = tuple(g for g in RULE_GROUPS if g.name not in ("fill_mismatch", "order_id_capacity"))


def layer_keys(layer: str) -> tuple[str, ...]:
    """The config keys a replay layer switches on: every key of its rule groups."""
    keys = [k for g in RULE_GROUPS if g.layer == layer for k in g.keys]
    if not keys:
        raise KeyError(f"no rule group belongs to layer {layer!r}")
    return tuple(dict.fromkeys(keys))


def rules_for(limits: Limits) -> tuple[str, ...]:
    """Names of the rule groups evaluated for an order, for the flight recorder."""
    return tuple(g.name for g in _RECORDED if g.enabled(limits))


RAMP_SCALED_KEYS: tuple[str, ...] = (
    "max_order_qty",
    "max_order_notional",
    "max_orders_per_s_node",
    "max_orders_per_min_node",
    "max_orders_per_s_strategy",
    "max_orders_per_min_strategy",
    "max_orders_per_s_symbol",
    "max_orders_per_min_symbol",
    "max_executions_per_window",
    "max_position_qty",
    "max_gross_exposure",
    "max_net_exposure",
    "max_turnover_per_min",
)
"""The rate, notional and exposure keys a resume ramp scales (fleet and override tables)."""


def ramp_percent(fraction: float) -> int:
    """A ramp fraction as the whole percent `scaled` names in a limits version."""
    return int(f"{fraction:.0%}"[:-1]) if fraction < 1.0 else 100


_SCALED_SUFFIX = re.compile(r"@(\d+)%\Z")


def scaled_percent(version: str) -> int:
    """The percent of its limits a limits version says it is scaled to (`scaled`): 100
    for one no ramp scaled."""
    m = _SCALED_SUFFIX.search(version)
    return int(m[1]) if m else 100


def scaled(limits: Limits, fraction: float) -> Limits:
    """`limits` with every ramp key multiplied by `fraction` (0 < fraction <= 1).

    Counts round down but never below 1, so a scaled rule stays on and stays
    tighter; a rule that is off (None) stays off. The version says the stage,
    so records and metrics show which limits a decision was made under.
    """
    if not 0.0 < fraction <= 1.0:
        raise LimitsError([f"fraction: must be in (0, 1] (got {fraction!r})"])
    if fraction == 1.0:
        return limits

    def scale(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, int):
            return max(1, int(value * fraction))
        return float(value) * fraction

    top = {k: scale(getattr(limits, k)) for k in RAMP_SCALED_KEYS}
    # an override's rates are the fleet's per-strategy or per-symbol ones under a short
    # name (`max_orders_per_s`): before, they were left out and a strategy or symbol
    # with its own rate traded at its full rate through every stage of the ramp
    over_keys = {
        k
        for k in Override.__struct_fields__
        if k in RAMP_SCALED_KEYS or f"{k}_strategy" in RAMP_SCALED_KEYS
    }

    def table(section: Mapping[str, Override]) -> dict[str, Override]:
        return {
            name: msgspec.structs.replace(
                ov, **{k: scale(getattr(ov, k)) for k in sorted(over_keys)}
            )
            for name, ov in section.items()
        }

    fields = {k: getattr(limits, k) for k in limits.__struct_fields__}
    fields.update(top)
    fields["version"] = f"{limits.version}@{ramp_percent(fraction)}%"
    fields["strategy"] = table(limits.strategy)
    fields["symbol"] = table(limits.symbol)
    return Limits(**fields)


_LOOSER_IF_LARGER = frozenset(
    k
    for k in Limits.__struct_fields__
    if k.startswith(("max_", "price_collar_")) and k != "max_tracked_order_ids"
) | {"cancel_ratio_min_cancels", "tick_size", "lease_timeout_s"}
"""A coarser tick widens the `price_collar_ticks` collar; a longer lease lets a node
cut off from the control plane trade longer (None: it never lapses)."""
_LOOSER_IF_SMALLER = frozenset({"execution_window_s", "duplicate_id_window_s"})
"""A shorter duplicate window forgets an id sooner, so its reuse goes out."""
_SYMBOL_ONLY = frozenset({"tick_size", "lot_size"})
_REQUIREMENTS = ("require_reference_price", "require_registered_parent")


def _looser(key: str, old: Any, new: Any) -> bool:
    """Whether `new` allows more than `old` for one numeric limit (None: rule off)."""
    if old is None:
        return False
    if new is None:
        return True
    if key in _LOOSER_IF_SMALLER:
        return bool(new < old)
    return bool(new > old)


def _effective(limits: Limits, section: str, name: str, key: str) -> Any:
    """What an override key resolves to for `name`: its own value, else the fleet's."""
    table: Mapping[str, Override] = getattr(limits, section)
    ov = table.get(name)
    own = getattr(ov, key) if ov is not None else None
    if own is not None:
        return own
    if key == "lot_size":
        return 1.0  # `Limits.lot`: a symbol without one counts in whole units
    fleet = f"{key}_{section}" if key in ("max_orders_per_s", "max_orders_per_min") else key
    return getattr(limits, fleet, None)


def loosened(old: Limits, new: Limits) -> list[str]:
    """Every way `new` allows more than `old`, as `key old -> new` (empty: as tight or
    tighter): a rule switched off, a larger cap, a shorter execution window for the same
    count, a requirement dropped, a symbol allowed or unrestricted, an override raised,
    a coarser tick (a wider tick collar), a larger lot (every quantity cap counts in
    lots), a shorter duplicate-id window or a longer (or no) lease. A node restarted
    with raised limits while a kill freezes the fleet is refused on it."""
    out = []
    for key in sorted(_LOOSER_IF_LARGER | _LOOSER_IF_SMALLER):
        a, b = getattr(old, key), getattr(new, key)
        if _looser(key, a, b):
            out.append(f"{key} {quoted(a)} -> {quoted(b)}")
    for key in _REQUIREMENTS:
        if getattr(old, key) and not getattr(new, key):
            out.append(f"{key} true -> false")
    if old.allowed_symbols is not None:
        if new.allowed_symbols is None:
            out.append("allowed_symbols: every symbol allowed now")
        elif added := sorted(new.allowed_symbols - old.allowed_symbols):
            out.append(f"allowed_symbols: added {', '.join(added)}")
    if lifted := sorted(old.restricted_symbols - new.restricted_symbols):
        out.append(f"restricted_symbols: lifted {', '.join(lifted)}")
    for section in ("strategy", "symbol"):
        for name in sorted(set(getattr(old, section)) | set(getattr(new, section))):
            for key in Override.__struct_fields__:
                if section == "strategy" and key in _SYMBOL_ONLY:
                    continue  # only a symbol override sets them
                a = _effective(old, section, name, key)
                b = _effective(new, section, name, key)
                if _looser(key, a, b):
                    out.append(f"{section}.{name}.{key} {quoted(a)} -> {quoted(b)}")
    return out
