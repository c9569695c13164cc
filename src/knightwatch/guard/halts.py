"""The Guard's halt latches: why each scope is not ACTIVE, kept per source.

A scope can be halted by several sources at once (an operator's kill, the
Guard's own loss stop, a cancel-ratio breach). Each is its own latch, keyed by
its reason code, so resuming one source never lifts another as a side effect.
`states` holds the worst latch per scope, kept equal to the worst of its
sources on every change. A latch never loosens what its source holds (a drain
latched over a kill keeps the kill): loosening is a resume's. The hot path
reads `view`: the same halts with a symbol's key case-folded (`view_slot`), so
a kill typed `ibm` halts orders in `IBM` as the restricted list does (a venue
may not care for case; fail closed).
The match is the stop direction's only: a resume lifts exactly the slot it
names, so `ibm`'s resume never lifts a kill of `IBM`.
"""

from __future__ import annotations

from knightwatch.decision import Decision, RejectReason
from knightwatch.state import Scope, TradingState, pair_key, split_pair

Slot = tuple[Scope, str]


def view_slot(slot: Slot) -> Slot:
    """The slot an order's lane looks a halt up under: a symbol's key case-folded (alone or
    in a strategy's pair), every other scope's as it is."""
    scope, key = slot
    if scope is Scope.SYMBOL:
        return (scope, key.casefold())
    if scope is Scope.STRATEGY_SYMBOL:
        strategy, symbol = split_pair(key)
        return (scope, pair_key(strategy, symbol.casefold()))
    return slot


class Halt:
    """Why a scope is not ACTIVE: kept so a blocked order can say who halted it and why."""

    __slots__ = ("actor", "code", "decision", "reason", "state", "ts_ns")

    def __init__(
        self, state: TradingState, code: RejectReason, reason: str, actor: str, ts_ns: int
    ) -> None:
        self.state = state
        self.code = code
        self.reason = reason
        self.actor = actor
        self.ts_ns = ts_ns
        # built once: a halted fleet may be asked about millions of orders
        self.decision = Decision(
            False,
            code if state is TradingState.HALTED else RejectReason.REDUCING_ONLY,
            f"{state.name}: {reason} (by {actor})",
        )


class HaltLatches:
    """Every latched halt by scope and source, plus the worst one per scope for the hot path."""

    __slots__ = ("_alike", "sources", "states", "view")

    def __init__(self) -> None:
        self.states: dict[Slot, Halt] = {}
        self.sources: dict[Slot, dict[RejectReason, Halt]] = {}
        self.view: dict[Slot, Halt] = {}
        """The worst halt per `view_slot`: what `worst` reads."""
        self._alike: dict[Slot, set[Slot]] = {}
        """The halted slots behind each `view` slot (`IBM` and `ibm` behind `ibm`)."""

    def worst(self, slots: tuple[Slot, ...]) -> Halt | None:
        """The most severe halt over an order's scopes (`view_slot`s, as a lane holds
        them), or None if all are ACTIVE."""
        states = self.view
        worst: Halt | None = None
        for slot in slots:
            h = states.get(slot)
            if h is not None and (worst is None or h.state > worst.state):
                worst = h
        return worst

    def source(self, slot: Slot, code: RejectReason) -> Halt | None:
        return self.sources.get(slot, {}).get(code)

    def clears(self, slot: Slot, code: RejectReason | None) -> bool:
        """Whether `clear(slot, code)` would lift anything (asked before recording it)."""
        sources = self.sources.get(slot)
        if not sources:
            return False
        return True if code is None else code in sources

    def latch(self, slot: Slot, halt: Halt) -> None:
        """Latch `halt` as its source's halt of `slot`. A milder one than that source
        holds (a drain over a kill) leaves the stricter latched: only a resume lifts a
        halt (before, the drain replaced the kill, and reducing orders went out)."""
        sources = self.sources.setdefault(slot, {})
        held = sources.get(halt.code)
        if held is not None and held.state > halt.state:
            return
        sources[halt.code] = halt
        self._settle(slot)

    def clear(self, slot: Slot, code: RejectReason | None) -> bool:
        """Lift one source (`code`) or every source (`None`) of a scope; True if any was."""
        sources = self.sources.get(slot, {})
        if code is None:
            cleared = bool(sources)
            sources.clear()
        else:
            cleared = sources.pop(code, None) is not None
        self._settle(slot)
        return cleared

    def _settle(self, slot: Slot) -> None:
        """Keep the one-halt-per-scope views equal to the worst of their sources."""
        sources = self.sources.get(slot)
        v = view_slot(slot)
        alike = self._alike.setdefault(v, set())
        if not sources:
            self.sources.pop(slot, None)
            self.states.pop(slot, None)
            alike.discard(slot)
        else:
            self.states[slot] = max(sources.values(), key=lambda h: h.state)
            alike.add(slot)
        if not alike:
            del self._alike[v]
            self.view.pop(v, None)
            return
        self.view[v] = max((self.states[s] for s in alike), key=lambda h: h.state)
