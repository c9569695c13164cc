"""standing: a milder halt of a source recorded over a stricter one leaves the stricter.

The Guard keeps a source's stricter latch when a milder one of that source is latched
after it (`Halts.latch`: a drain over a kill leaves the kill; only a resume lifts a halt),
yet records the milder one as a `halt` event all the same. The replay took the last line
of each source as the latch, so a node halted, then drained, traded reducing orders after
a restart: fewer halts than it had.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.audit import FlightRecorder
from knightwatch.audit.standing import held_read_back, standing
from knightwatch.clock import SimClock
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.state import Scope, TradingState


def test_a_drain_recorded_over_a_halt_does_not_loosen_it_at_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "n1.jsonl"
    clock = SimClock(10**18)
    with FlightRecorder(path, clock=clock) as rec:
        g = Guard(Limits(), node="n1", clock=clock, recorder=rec)
        g.halt(Scope.FLEET, "fleet", "kill", actor="alice")
        clock.advance(1_000)
        g.halt(Scope.FLEET, "fleet", "drain", actor="bob", state=TradingState.REDUCING)
        assert g.trading_state(Scope.FLEET) is TradingState.HALTED  # the Guard kept the kill
    (held,) = standing(path).halts
    assert (held.scope, held.key, held.code) == ("fleet", "fleet", RejectReason.HALTED.value)
    assert (held.state, held.actor, held.ts) == ("HALTED", "alice", 10**18)
    with FlightRecorder(path, clock=clock) as rec:  # the one-pass read a starting node does
        assert held_read_back(rec, path).standing.halts == [held]


def test_a_stricter_halt_of_the_source_still_replaces_a_milder_one(tmp_path: Path) -> None:
    path = tmp_path / "n1.jsonl"
    clock = SimClock(10**18)
    with FlightRecorder(path, clock=clock) as rec:
        g = Guard(Limits(), node="n1", clock=clock, recorder=rec)
        g.halt(Scope.SYMBOL, "IBM", "drain", actor="bob", state=TradingState.REDUCING)
        clock.advance(1_000)
        g.halt(Scope.SYMBOL, "IBM", "kill", actor="alice")
        clock.advance(1_000)
        g.halt(Scope.SYMBOL, "IBM", "drain again", actor="bob", state=TradingState.REDUCING)
        assert g.trading_state(Scope.SYMBOL, "IBM") is TradingState.HALTED
    (held,) = standing(path).halts
    assert (held.state, held.actor) == ("HALTED", "alice")


_SLOTS = [(Scope.FLEET, "fleet"), (Scope.NODE, "n1"), (Scope.SYMBOL, "IBM")]
_CODES = [RejectReason.HALTED, RejectReason.LOSS_LIMIT]
_STEP = st.one_of(
    st.tuples(
        st.just("halt"),
        st.sampled_from(_SLOTS),
        st.sampled_from(_CODES),
        st.sampled_from([TradingState.HALTED, TradingState.REDUCING]),
    ),
    st.tuples(
        st.just("resume"), st.sampled_from(_SLOTS), st.sampled_from([None, *_CODES]), st.none()
    ),
)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(_STEP, max_size=12))
def test_the_replay_holds_what_the_guard_held_per_source(
    steps: list[tuple[str, tuple[Scope, str], RejectReason | None, TradingState | None]],
) -> None:
    """Whatever the halts and resumes, what the file says stands is each source's latch the
    Guard held when it stopped: its state, and the halt that set it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "n1.jsonl"
        clock = SimClock(10**18)
        with FlightRecorder(path, clock=clock) as rec:
            g = Guard(Limits(), node="n1", clock=clock, recorder=rec)
            for i, (op, (scope, key), code, state) in enumerate(steps):
                clock.advance(1_000)
                if op == "halt":
                    assert code is not None and state is not None
                    g.halt(scope, key, f"step {i}", actor="ops", state=state, code=code)
                else:
                    g.resume(scope, key, f"step {i}", actor="ops", code=code)
            held = {
                (scope.value, key, code.value): (halt.state.name, halt.reason)
                for code in _CODES
                for (scope, key), halt in g.latched(code).items()
            }
        found = {(h.scope, h.key, h.code): (h.state, h.reason) for h in standing(path).halts}
    assert found == held
