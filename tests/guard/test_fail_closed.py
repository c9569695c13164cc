"""The Guard fails closed on its own inputs: no half-applied call, no untrusted fill, no bad mark.

Every public call validates all of its arguments before it changes anything;
a resume that cannot be recorded changes nothing; a fill that disagrees with
what the Guard let out halts the node with `fill_mismatch`; no non-finite
value can enter the Guard's state.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knightwatch.audit import FlightRecorder, MemorySink, decode_record
from knightwatch.audit.recorder import MAX_RECORD_BYTES
from knightwatch.clock import SimClock
from knightwatch.decision import RejectReason as R
from knightwatch.guard import Guard, RecorderUnavailable
from knightwatch.limits import Limits
from knightwatch.order import Fill, InvalidOrder, Order, Side
from knightwatch.state import Scope, TradingState

from .conftest import T0, Rig

Mk = Callable[..., Rig]


def _records(g: Guard) -> list[Any]:
    g.recorder.flush()
    return [decode_record(line) for line in g.recorder.lines]


def _kinds(g: Guard) -> list[str]:
    return [r.kind for r in _records(g)]


# ------------------------------------------------------------------ item 2: no half-applied call


def test_resume_with_a_plain_string_scope_is_recorded(rig: Mk) -> None:
    r = rig()
    g = r.guard
    g.halt(Scope.FLEET, "fleet", "kill", actor="ops")
    assert g.resume("fleet", "fleet", "all clear", actor="ops") is True
    resumes = [x for x in _records(g) if x.kind == "resume"]
    assert len(resumes) == 1
    assert resumes[0].data["scope"] == "fleet" and resumes[0].data["cleared"] is True
    assert g.trading_state(Scope.FLEET) is TradingState.ACTIVE


def test_string_scope_halt_blocks_and_is_recorded(rig: Mk) -> None:
    r = rig()
    r.guard.halt("symbol", "IBM", "bad prints", actor="ops")
    assert r.send().reason is R.HALTED
    assert [x.data["key"] for x in _records(r.guard) if x.kind == "halt"] == ["IBM"]


BAD_CALLS: list[tuple[str, Callable[[Guard], object], str]] = [
    ("halt key None", lambda g: g.halt(Scope.SYMBOL, None, "r", "a"), "key"),  # type: ignore[arg-type]
    ("halt key blank", lambda g: g.halt(Scope.NODE, "  ", "r", "a"), "key"),
    ("halt scope", lambda g: g.halt("galaxy", "x", "r", "a"), "scope"),
    ("halt reason", lambda g: g.halt(Scope.FLEET, "fleet", None, "a"), "reason"),  # type: ignore[arg-type]
    ("halt actor", lambda g: g.halt(Scope.FLEET, "fleet", "r", 7), "actor"),  # type: ignore[arg-type]
    (
        "halt state",
        lambda g: g.halt(Scope.FLEET, "fleet", "r", "a", state=TradingState.ACTIVE),
        "state",
    ),
    ("halt code", lambda g: g.halt(Scope.FLEET, "fleet", "r", "a", code="x"), "code"),  # type: ignore[arg-type]
    ("resume scope", lambda g: g.resume(3, "fleet", "r", "a"), "scope"),  # type: ignore[arg-type]
    ("resume key", lambda g: g.resume(Scope.SYMBOL, "", "r", "a"), "key"),
    ("resume code", lambda g: g.resume(Scope.FLEET, "fleet", "r", "a", code="x"), "code"),  # type: ignore[arg-type]
    ("resume actor", lambda g: g.resume(Scope.FLEET, "fleet", "r", None), "actor"),  # type: ignore[arg-type]
    ("arm actor", lambda g: g.arm(["ops"]), "actor"),  # type: ignore[arg-type]
    ("disarm actor", lambda g: g.disarm(None), "actor"),  # type: ignore[arg-type]
    ("context", lambda g: g.set_context(release_id=5), "release_id"),  # type: ignore[arg-type]
    ("parent id", lambda g: g.register_parent("", 5), "parent_id"),
    ("parent qty", lambda g: g.register_parent("P", True), "qty"),
    ("cancel id", lambda g: g.on_cancel(None), "order_id"),  # type: ignore[arg-type]
    ("price symbol", lambda g: g.on_price(None, 1.0), "symbol"),  # type: ignore[arg-type]
    ("price bool", lambda g: g.on_price("IBM", True), "price"),
    ("price subnormal", lambda g: g.on_price("IBM", 5e-324), "price"),
    ("price nan", lambda g: g.on_price("IBM", math.nan), "price"),
    ("price huge", lambda g: g.on_price("IBM", 1e300), "price"),
    # a garbled LeavesQty or position would make exposure inf, then NaN (checks off)
    ("restate huge", lambda g: g.on_restate("o1", 10**307), "remaining"),
    ("replace ack huge", lambda g: g.on_replace_ack("o1~1", 10**16), "remaining"),
    ("restore huge", lambda g: g.restore_position("IBM", -(10**40), 1.0), "qty"),
    # a book no order can name, or a position whose value is inf (the P&L NaN for good)
    ("restore symbol", lambda g: g.restore_position(None, 5, 1.0), "symbol"),  # type: ignore[arg-type]
    ("restore symbol empty", lambda g: g.restore_position("", 5, 1.0), "symbol"),
    ("restore avg huge", lambda g: g.restore_position("IBM", 5, 1e300), "avg_price"),
]


@pytest.mark.parametrize(("name", "call", "names"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_a_bad_argument_raises_naming_it_and_changes_nothing(
    rig: Mk, name: str, call: Callable[[Guard], object], names: str
) -> None:
    r = rig()
    g = r.guard
    g.halt(Scope.FLEET, "fleet", "kill", actor="ops")
    before = (len(_records(g)), g.armed, dict(g.halts()), g.exposure(), g.working_qty("IBM"))
    with pytest.raises(ValueError, match=names):
        call(g)
    after = (len(_records(g)), g.armed, dict(g.halts()), g.exposure(), g.working_qty("IBM"))
    assert after == before
    assert g.trading_state(Scope.FLEET) is TradingState.HALTED  # the kill is never lifted


def _full_recorder_guard() -> tuple[Guard, SimClock]:
    clock = SimClock(T0)
    rec = FlightRecorder(None, clock=clock, sink=MemorySink(capacity=8), batch_size=1)
    g = Guard(Limits.off(), node="n1", clock=clock, recorder=rec)
    g.arm("ops")
    g.on_price("IBM", 100.0)
    g.halt(Scope.FLEET, "fleet", "kill", actor="ops")
    for i in range(10):  # fill the sink: the recorder can no longer write
        g.check(Order(f"o{i}", "s", "IBM", Side.BUY, 1, 100.0))
    assert not g.recorder.ready()
    return g, clock


def test_a_resume_that_cannot_be_recorded_changes_nothing() -> None:
    g, _ = _full_recorder_guard()
    with pytest.raises(RecorderUnavailable, match="stays halted"):
        g.resume(Scope.FLEET, "fleet", "all clear", actor="ops")
    assert g.trading_state(Scope.FLEET) is TradingState.HALTED


def test_arming_while_the_recorder_cannot_record_changes_nothing() -> None:
    g, _ = _full_recorder_guard()
    g.disarm("ops")  # the stop direction is never refused
    with pytest.raises(RecorderUnavailable, match="not armed"):
        g.arm("ops")
    assert not g.armed


def test_a_halt_that_cannot_be_written_yet_still_blocks() -> None:
    g, _ = _full_recorder_guard()
    g.halt(Scope.SYMBOL, "IBM", "bad prints", actor="ops")
    assert g.trading_state(Scope.SYMBOL, "IBM") is TradingState.HALTED
    assert not g.check(Order("late", "s", "IBM", Side.BUY, 1, 100.0)).accepted


# ------------------------------------------------------------------ item 5: fills are checked


def _mismatch(g: Guard) -> str:
    halt = g.halts().get((Scope.NODE, "n1"))
    assert halt is not None, "the node was not halted"
    assert halt.code is R.FILL_MISMATCH
    return halt.reason


def test_fill_for_an_unknown_order_halts_the_node(rig: Mk) -> None:
    r = rig()
    r.guard.on_fill(Fill("stranger", "IBM", Side.SELL, 50, 100.0))
    assert "stranger" in _mismatch(r.guard)
    assert "no order with this id was accepted" in _mismatch(r.guard)
    assert r.guard.position("IBM") == -50  # the venue's report is still the truth
    assert r.send().reason is R.FILL_MISMATCH


def test_an_overfill_halts_the_node(rig: Mk) -> None:
    r = rig()
    o = r.order(qty=100)
    assert r.guard.check(o).accepted
    r.guard.on_fill(Fill(o.id, "IBM", Side.BUY, 150, 100.0))
    why = _mismatch(r.guard)
    assert o.id in why and "overfill" in why and "150" in why
    assert r.guard.position("IBM") == 150
    assert r.guard.working_qty("IBM") == (0, 0)


def test_a_duplicate_fill_halts_the_node(rig: Mk) -> None:
    r = rig()
    o = r.order(qty=100)
    assert r.guard.check(o).accepted
    fill = Fill(o.id, "IBM", Side.BUY, 100, 100.0)
    r.guard.on_fill(fill)
    assert (Scope.NODE, "n1") not in r.guard.halts()
    r.guard.on_fill(fill)
    why = _mismatch(r.guard)
    assert o.id in why and "duplicate or late fill" in why


def test_a_good_partial_fill_sequence_halts_nothing(rig: Mk) -> None:
    r = rig()
    o = r.order(qty=100)
    assert r.guard.check(o).accepted
    for q in (30, 30, 40):
        r.guard.on_fill(Fill(o.id, "IBM", Side.BUY, q, 100.0))
    assert r.guard.halts() == {}
    assert r.guard.position("IBM") == 100


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("price", math.nan, "finite"),
        ("price", math.inf, "finite"),
        ("price", 5e-324, "between"),
        ("qty", True, "integer"),
        ("qty", 2.5, "integer"),
        ("qty", 10**30, "at most"),
        ("side", "hold", "Side"),
    ],
)
def test_a_fill_that_cannot_be_applied_changes_no_state_and_halts(
    field: str, value: object, rule: str
) -> None:
    clock = SimClock(T0)
    g = Guard(Limits.off(max_loss=500.0), node="n1", clock=clock)
    g.arm("ops")
    g.on_price("IBM", 100.0)
    for oid in ("o0", "o1"):
        assert g.check(Order(oid, "s", "IBM", Side.BUY, 10, 100.0)).accepted
    g.on_fill(Fill("o0", "IBM", Side.BUY, 10, 100.0))
    fill = Fill("o1", "IBM", Side.BUY, 10, 100.0)
    msgspec.structs.force_setattr(fill, field, value)
    before = (g.position("IBM"), g.pnl(), g.exposure(), g.working_qty("IBM"))
    g.on_fill(fill)
    assert (g.position("IBM"), g.pnl(), g.exposure(), g.working_qty("IBM")) == before
    why = _mismatch(g)
    assert "o1" in why and rule in why
    # the loss limit is still alive: P&L stayed a number
    assert math.isfinite(g.pnl())
    g.on_price("IBM", 1.0)
    g.resume(Scope.NODE, "n1", "reconciled", actor="ops", code=R.FILL_MISMATCH)
    assert g.halts()[(Scope.NODE, "n1")].code is R.LOSS_LIMIT


def test_a_non_fill_object_halts_instead_of_raising(rig: Mk) -> None:
    r = rig()
    r.guard.on_fill(None)  # type: ignore[arg-type]
    assert "must be a Fill" in _mismatch(r.guard)


hostile_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([5e-324, 1e308, -0.0, 1e12, 1e-12]),
)
hostile_ints = st.one_of(st.integers(-(10**20), 10**20), st.sampled_from([True, False, 10**40]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["fill", "price", "order", "bust", "restate"]),
            hostile_ints,
            hostile_floats,
            st.sampled_from(["IBM", "AAPL"]),
        ),
        max_size=40,
    )
)
def test_no_non_finite_value_ever_enters_the_guard_state(
    events: list[tuple[str, int, float, str]],
) -> None:
    clock = SimClock(T0)
    g = Guard(Limits.off(max_loss=1e6), node="n1", clock=clock)
    g.arm("ops")
    g.on_price("IBM", 100.0)
    g.on_price("AAPL", 50.0)
    for n, (kind, q, px, sym) in enumerate(events, start=1):
        if kind == "price":
            with contextlib.suppress(ValueError):
                g.on_price(sym, px)
        elif kind == "order":
            try:
                o = Order(f"o{n}", "s", sym, Side.BUY, q, px)
            except InvalidOrder:
                o = Order(f"o{n}", "s", sym, Side.BUY, 1, 1.0)
                msgspec.structs.force_setattr(o, "qty", q)
                msgspec.structs.force_setattr(o, "price", px)
            g.check(o)
        elif kind == "restate":
            with contextlib.suppress(ValueError):
                g.on_restate(f"o{max(n - 1, 1)}", q)
        else:
            f = Fill(f"o{max(n - 1, 1)}", sym, Side.SELL, 1, 1.0)
            msgspec.structs.force_setattr(f, "qty", q)
            msgspec.structs.force_setattr(f, "price", px)
            g.on_fill(f) if kind == "fill" else g.on_bust(f)
        gross, net_long, net_short = g.exposure()
        assert all(math.isfinite(x) for x in (gross, net_long, net_short, g.pnl()))


# ------------------------------------------------------------------ item 9: echoes are capped


def test_a_huge_invalid_id_is_cut_in_the_error_and_the_record(rig: Mk) -> None:
    with pytest.raises(InvalidOrder) as info:
        Order("x" * 10_000_000, "s", "IBM", Side.BUY, 1, 1.0)
    assert len(str(info.value)) < 300 and "10000000 characters, cut" in str(info.value)
    r = rig()
    o = Order("ok", "s", "IBM", Side.BUY, 1, 100.0)
    msgspec.structs.force_setattr(o, "id", "y" * 1_000_000)
    d = r.guard.check(o)
    assert d.reason is R.INVALID_ORDER and len(d.detail) < 300 and "cut" in d.detail
    r.guard.recorder.flush()
    line = r.guard.recorder.lines[-2]  # the last record (a seal follows it)
    assert len(line) <= MAX_RECORD_BYTES
    rec = decode_record(line)
    assert rec.order_id.endswith("[cut: 1000000 characters]")


def test_a_huge_halt_reason_is_recorded_cut(rig: Mk) -> None:
    r = rig()
    r.guard.halt(Scope.FLEET, "fleet", "z" * 2_000_000, actor="ops")
    r.guard.recorder.flush()
    line = r.guard.recorder.lines[-2]  # the last record (a seal follows it)
    assert len(line) <= MAX_RECORD_BYTES
    assert decode_record(line).data["reason"].endswith("[cut: 2000000 characters]")  # type: ignore[union-attr]


class _ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("repr")

    __str__ = __repr__


class _AttrRaises:
    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"attribute {name}")


@pytest.mark.parametrize("make", [_ReprRaises, _AttrRaises, "parent_id"])
def test_check_never_raises_for_an_object_that_raises_when_read(rig: Mk, make: object) -> None:
    """An object whose repr or attributes raise, or an Order built around its validation with
    such a parent id, is refused and recorded: `check` and `check_replace` never raise."""
    r = rig()
    g = r.guard
    thing: Any
    if make == "parent_id":
        thing = r.order()
        msgspec.structs.force_setattr(thing, "parent_id", _ReprRaises())
    else:
        thing = make()  # type: ignore[operator]
    before = len(_records(g))
    assert g.check(thing).reason is R.INVALID_ORDER
    assert g.check_replace(thing, r.order()).reason is R.INVALID_ORDER
    assert g.check_replace("o1", thing).reason is R.INVALID_ORDER
    assert g.working_qty("IBM") == (0, 0) and len(_records(g)) > before


@pytest.mark.parametrize("node", ["", "  ", None, "n" * 65])
def test_a_guard_needs_a_node_id_its_own_halts_can_latch_under(node: object) -> None:
    with pytest.raises(ValueError, match="node"):
        Guard(Limits.off(), node=node)  # type: ignore[arg-type]
