"""Trading states and the scopes a halt can apply to (NautilusTrader's states, Knight's scopes)."""

from __future__ import annotations

from enum import IntEnum, StrEnum

from knightwatch.decision import Decision, RejectReason


class Scope(StrEnum):
    FLEET = "fleet"
    NODE = "node"
    STRATEGY = "strategy"
    SYMBOL = "symbol"
    STRATEGY_SYMBOL = "strategy_symbol"
    """One strategy in one symbol; the repeated-execution throttle halts at this scope.
    Its key is "STRATEGY/SYMBOL"."""


class TradingState(IntEnum):
    """Ordered by severity so the effective state of an order is the max over its scopes."""

    ACTIVE = 0
    REDUCING = 1
    HALTED = 2


def pair_key(strategy: str, symbol: str) -> str:
    return f"{strategy}/{symbol}"


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
