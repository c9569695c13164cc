"""Trading states and the scopes a halt can apply to (NautilusTrader's states, Knight's scopes)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


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


FLEET_KEY = "fleet"
"""The key of the one fleet-wide slot: a fleet halt has no name of its own."""


def pair_key(strategy: str, symbol: str) -> str:
    return f"{strategy}/{symbol}"


def split_pair(key: str) -> tuple[str, str]:
    """The (strategy, symbol) of a `pair_key`. No strategy holds a '/', so the first one
    joins them and a symbol may hold its own ("mm/BTC/USDT" is mm in BTC/USDT); a key
    without one splits into (key, "")."""
    strategy, _, symbol = key.partition("/")
    return strategy, symbol


def scope_key(scope: Scope, key: str) -> str:
    """The key a halt of `scope` is stored under: the fleet has one slot whatever key is given."""
    return FLEET_KEY if scope is Scope.FLEET else key
