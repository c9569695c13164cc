"""A halt is sticky: a milder latch (a drain) over a kill of the same source never
loosens it; only a resume lifts a halt (`guard/halts.py`, `Guard.halt`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from knightwatch.decision import RejectReason as R
from knightwatch.order import Fill, Side
from knightwatch.state import Scope, TradingState

from .conftest import Rig

Mk = Callable[..., Rig]
SLOTS = [
    (Scope.FLEET, "fleet"),
    (Scope.NODE, "n1"),
    (Scope.STRATEGY, "rlp"),
    (Scope.SYMBOL, "IBM"),
    (Scope.SYMBOL, "ibm"),
    (Scope.STRATEGY_SYMBOL, "rlp/IBM"),
]


def long_ibm(rig: Mk) -> Rig:
    r = rig()
    assert r.send(qty=100).accepted
    r.guard.on_fill(Fill("o1", "IBM", Side.BUY, 100, 100.0))
    return r


@pytest.mark.parametrize(("scope", "key"), SLOTS)
@pytest.mark.parametrize("code", [R.HALTED, R.LOSS_LIMIT])
def test_a_drain_latched_over_a_kill_does_not_loosen_it(
    rig: Mk, scope: Scope, key: str, code: R
) -> None:
    r = long_ibm(rig)
    g = r.guard
    g.halt(scope, key, "kill", "alice", code=code)
    g.halt(scope, key, "drain", "bob", state=TradingState.REDUCING, code=code)
    assert g.trading_state(scope, key) is TradingState.HALTED
    assert r.send(qty=10, side=Side.SELL).reason is code  # a reducing sell stays refused
    assert g.resume(scope, key, "reconciled", "carol")
    assert r.send(qty=10, side=Side.SELL).accepted


@pytest.mark.parametrize(("scope", "key"), SLOTS)
def test_a_kill_latched_over_a_drain_tightens_it(rig: Mk, scope: Scope, key: str) -> None:
    r = long_ibm(rig)
    g = r.guard
    g.halt(scope, key, "drain", "bob", state=TradingState.REDUCING)
    assert r.send(qty=10, side=Side.SELL).accepted
    g.halt(scope, key, "kill", "alice")
    assert g.trading_state(scope, key) is TradingState.HALTED
    assert r.send(qty=10, side=Side.SELL).reason is R.HALTED
