"""The Guard's halt latches: why each scope is not ACTIVE, kept per source.

A scope can be halted by several sources at once (an operator's kill, the
Guard's own loss stop, a cancel-ratio breach). Each is its own latch, keyed by
its reason code, so resuming one source never lifts another as a side effect.
The hot path reads only `states`, the worst latch per scope, kept equal to the
worst of its sources on every change.
"""

from __future__ import annotations

from knightwatch.decision import Decision, RejectReason
from knightwatch.state import Scope, TradingState

Slot = tuple[Scope, str]


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

    __slots__ = ("sources", "states")

    def __init__(self) -> None:
        self.states: dict[Slot, Halt] = {}
        self.sources: dict[Slot, dict[RejectReason, Halt]] = {}

    def worst(self, slots: tuple[Slot, ...]) -> Halt | None:
        """The most severe halt over an order's scopes, or None if all are ACTIVE."""
        states = self.states
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
        self.sources.setdefault(slot, {})[halt.code] = halt
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
        """Keep the hot path's one-halt-per-scope view equal to the worst of its sources."""
        sources = self.sources.get(slot)
        if not sources:
            self.sources.pop(slot, None)
            self.states.pop(slot, None)
            return
        self.states[slot] = max(sources.values(), key=lambda h: h.state)
