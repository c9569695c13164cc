"""A symbol's halt matches the symbol in any case (the stop direction); a resume lifts
exactly the slot it names (`guard/halts.py`)."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st
from tests.guard.conftest import Rig

from knightwatch.decision import RejectReason as R
from knightwatch.guard.halts import Halt, HaltLatches, view_slot
from knightwatch.state import Scope, TradingState

Mk = Callable[..., Rig]


def test_a_symbol_kill_typed_in_another_case_halts_the_symbol(rig: Mk) -> None:
    r = rig()
    assert r.send().accepted  # a kept IBM lane, before the kill
    r.guard.halt(Scope.SYMBOL, "ibm", "typed in lowercase", actor="alice")
    d = r.send()
    assert not d.accepted and d.reason is R.HALTED
    assert "typed in lowercase" in d.detail
    r.guard.on_price("MSFT", 100.0)
    assert r.send(symbol="MSFT").accepted  # another symbol is not touched
    # a lane first seen after the kill is halted too
    r.guard.on_price("Ibm", 100.0)
    assert r.send(symbol="Ibm").reason is R.HALTED


def test_a_pair_kill_matches_the_symbol_in_any_case_not_the_strategy(rig: Mk) -> None:
    r = rig()
    r.guard.halt(Scope.STRATEGY_SYMBOL, "rlp/ibm", "pair", actor="alice")
    assert r.send(strategy="rlp").reason is R.HALTED
    assert r.send(strategy="RLP").accepted  # a strategy's name is its own: exact


def test_a_resume_lifts_only_the_slot_it_names(rig: Mk) -> None:
    r = rig()
    r.guard.halt(Scope.SYMBOL, "IBM", "exact", actor="alice")
    r.guard.halt(Scope.SYMBOL, "ibm", "lower", actor="bob")
    assert not r.guard.resume(Scope.SYMBOL, "Ibm", "no such slot", actor="carol")
    assert r.guard.resume(Scope.SYMBOL, "ibm", "lift lower", actor="carol")
    d = r.send()
    assert d.reason is R.HALTED and "exact" in d.detail  # IBM's own kill stands
    assert r.guard.trading_state(Scope.SYMBOL, "ibm") is TradingState.ACTIVE
    assert r.guard.trading_state(Scope.SYMBOL, "IBM") is TradingState.HALTED
    assert r.guard.resume(Scope.SYMBOL, "IBM", "lift exact", actor="carol")
    assert r.send().accepted


def test_the_worst_of_case_variants_applies(rig: Mk) -> None:
    r = rig()
    r.guard.halt(Scope.SYMBOL, "ibm", "reduce", actor="a", state=TradingState.REDUCING)
    r.guard.halt(Scope.SYMBOL, "IBM", "stop", actor="b")
    assert r.send().reason is R.HALTED
    r.guard.resume(Scope.SYMBOL, "IBM", "lift", actor="c")
    assert r.send(side=r.order().side).reason is R.REDUCING_ONLY


def test_halts_keep_their_own_keys_for_status(rig: Mk) -> None:
    r = rig()
    r.guard.halt(Scope.SYMBOL, "ibm", "lower", actor="alice")
    assert set(r.guard.halts()) == {(Scope.SYMBOL, "ibm")}


_keys = st.sampled_from(["IBM", "ibm", "Ibm", "MSFT", "msft"])
_ops = st.lists(st.tuples(st.booleans(), _keys), max_size=30)


@given(_ops)
def test_the_view_is_the_worst_over_every_case_variant(ops: list[tuple[bool, str]]) -> None:
    h = HaltLatches()
    held: set[str] = set()
    for latch, key in ops:
        slot = (Scope.SYMBOL, key)
        if latch:
            h.latch(slot, Halt(TradingState.HALTED, R.HALTED, "k", "a", 0))
            held.add(key)
        else:
            h.clear(slot, None)
            held.discard(key)
        for probe in ("IBM", "MSFT"):
            want = any(k.casefold() == probe.casefold() for k in held)
            assert (h.worst((view_slot((Scope.SYMBOL, probe)),)) is not None) == want
        assert set(h.states) == {(Scope.SYMBOL, k) for k in held}
