"""The Guard's state through any sequence of order-flow events, against a simple model.

A hypothesis state machine sends orders, replaces and every venue answer the Guard
takes (fill, cancel, reject, expire, restatement, replace ack and reject, bust,
correction), prices, `set_limits` moving the position limit, and REDUCING halts,
in any order. The model is the plainest bookkeeping of the same events; after
every step the Guard's position, working quantity (with replace reservations)
and each order's leaves are the model's, no consistent sequence halts the node,
and every decision is the one the model predicts: the position limit binds the
side an order moves (one over a tightened limit can always be reduced), REDUCING
lets out only orders that shrink the position.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from knightwatch.clock import SimClock
from knightwatch.decision import RejectReason as R
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Fill, Order, Side
from knightwatch.state import Scope, TradingState

SYMS = ("A", "B")
PRICE = 100.0


@dataclass
class Work:
    """One order as the model books it (kept by a pending replace after it ended)."""

    sym: str
    side: Side
    qty: int
    rem: int
    filled: int = 0
    pending: str | None = None


@dataclass
class Pend:
    orig: str
    work: Work
    qty: int
    reserved: int


class GuardMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.limit = 300
        self.g = Guard(Limits.off(max_position_qty=self.limit), node="n1", clock=SimClock(10**12))
        for sym in SYMS:
            self.g.on_price(sym, PRICE)
        self.g.arm("test")
        self.n = 0
        self.pos = dict.fromkeys(SYMS, 0)
        self.working: dict[str, Work] = {}
        self.pending: dict[str, Pend] = {}
        self.reducing = False

    # the model's worst case: every working order (and reservation) on a side filled
    def worst(self, sym: str) -> tuple[int, int]:
        wb = ws = 0
        for w in self.working.values():
            if w.sym == sym:
                wb += w.rem if w.side is Side.BUY else 0
                ws += w.rem if w.side is Side.SELL else 0
        for p in self.pending.values():
            if p.work.sym == sym:
                wb += p.reserved if p.work.side is Side.BUY else 0
                ws += p.reserved if p.work.side is Side.SELL else 0
        return self.pos[sym] + wb, self.pos[sym] - ws

    def allowed(self, sym: str, side: Side, qty: int) -> bool:
        long_q, short_q = self.worst(sym)
        if self.reducing:  # REDUCING: only an order that can only shrink the position
            pos = self.pos[sym]
            shrinks = (
                pos < 0 and long_q + qty <= 0
                if side is Side.BUY
                else pos > 0 and short_q - qty >= 0
            )
            if not shrinks:
                return False
        return long_q + qty <= self.limit if side is Side.BUY else -(short_q - qty) <= self.limit

    def next_id(self) -> str:
        self.n += 1
        return f"o{self.n}"

    def pick(self, i: int) -> str:
        ids = sorted(self.working)
        return ids[i % len(ids)]

    @rule(sym=st.sampled_from(SYMS), side=st.sampled_from(Side), qty=st.integers(1, 250))
    def order(self, sym: str, side: Side, qty: int) -> None:
        oid = self.next_id()
        expect = self.allowed(sym, side, qty)
        d = self.g.check(Order(oid, "s", sym, side, qty, PRICE))
        assert d.accepted is expect, (d, self.worst(sym), self.pos[sym])
        if d.accepted:
            self.working[oid] = Work(sym, side, qty, qty)
        else:
            assert d.reason in (R.MAX_POSITION, R.REDUCING_ONLY), d

    @precondition(lambda self: self.working)
    @rule(i=st.integers(0, 99), frac=st.floats(0.0, 1.0))
    def fill(self, i: int, frac: float) -> None:
        oid = self.pick(i)
        w = self.working[oid]
        q = max(1, int(w.rem * frac))
        self.g.on_fill(Fill(oid, w.sym, w.side, q, PRICE))
        w.rem -= q
        w.filled += q
        self.pos[w.sym] += q if w.side is Side.BUY else -q
        if not w.rem:
            del self.working[oid]

    @precondition(lambda self: self.working)
    @rule(i=st.integers(0, 99), how=st.sampled_from(("cancel", "reject", "expire")))
    def end(self, i: int, how: str) -> None:
        oid = self.pick(i)
        getattr(self.g, f"on_{how}")(oid)
        del self.working[oid]

    @precondition(lambda self: self.working)
    @rule(i=st.integers(0, 99), frac=st.floats(0.0, 1.0))
    def restate_down(self, i: int, frac: float) -> None:
        oid = self.pick(i)
        w = self.working[oid]
        left = int(w.rem * frac)
        self.g.on_restate(oid, left)
        if w.pending is not None:  # held until the venue answers the replace (it may restore it)
            self.pending[w.pending].reserved += w.rem - left
        w.rem = left
        if not left:
            del self.working[oid]

    @precondition(lambda self: any(w.filled for w in self.working.values()))
    @rule(i=st.integers(0, 99), frac=st.floats(0.0, 1.0), bust=st.booleans())
    def bust_or_correct(self, i: int, frac: float, bust: bool) -> None:
        filled = sorted(o for o, w in self.working.items() if w.filled)
        oid = filled[i % len(filled)]
        w = self.working[oid]
        old = Fill(oid, w.sym, w.side, w.filled, PRICE)
        sign = 1 if w.side is Side.BUY else -1
        if bust:
            self.g.on_bust(old)
            self.pos[w.sym] -= sign * w.filled
            w.filled = 0
        else:  # corrected down: never more than the order was checked for
            new_q = max(1, int(w.filled * frac))
            self.g.on_correct(old, Fill(oid, w.sym, w.side, new_q, PRICE))
            self.pos[w.sym] += sign * (new_q - w.filled)
            w.filled = new_q

    @precondition(lambda self: self.working)
    @rule(i=st.integers(0, 99), qty=st.integers(1, 400))
    def replace(self, i: int, qty: int) -> None:
        oid = self.pick(i)
        w = self.working[oid]
        nid = self.next_id()
        grow = max(max(qty - w.filled, 0) - w.rem, 0)
        if w.pending is not None:
            expect = False
        elif grow:
            expect = not self.reducing and self.allowed(w.sym, w.side, grow)
        else:
            expect = True
        d = self.g.check_replace(oid, Order(nid, "s", w.sym, w.side, qty, PRICE))
        assert d.accepted is expect, (d, grow, self.worst(w.sym))
        if d.accepted:
            w.pending = nid
            self.pending[nid] = Pend(oid, w, qty, grow)

    @precondition(lambda self: self.pending)
    @rule(i=st.integers(0, 99), ack=st.booleans())
    def replace_answer(self, i: int, ack: bool) -> None:
        nid = sorted(self.pending)[i % len(self.pending)]
        p = self.pending.pop(nid)
        w = p.work
        w.pending = None
        if not ack:
            self.g.on_replace_reject(nid)
            return
        self.g.on_replace_ack(nid)
        self.working.pop(p.orig, None)
        w.qty, w.rem = p.qty, max(p.qty - w.filled, 0)
        if w.rem:
            self.working[nid] = w

    @rule(sym=st.sampled_from(SYMS), px=st.floats(50.0, 150.0))
    def price(self, sym: str, px: float) -> None:
        self.g.on_price(sym, px)

    @rule(limit=st.integers(50, 400))
    def set_limit(self, limit: int) -> None:
        """A tighter (or looser) limit while orders work: nothing held changes."""
        self.limit = limit
        self.g.set_limits(
            msgspec.structs.replace(self.g.limits, max_position_qty=limit), actor="risk"
        )

    @rule(on=st.booleans())
    def drain(self, on: bool) -> None:
        if on:
            self.g.halt(Scope.FLEET, "fleet", "drain", "op", state=TradingState.REDUCING)
        else:
            self.g.resume(Scope.FLEET, "fleet", "done", "op")
        self.reducing = on

    @invariant()
    def the_guard_books_what_the_model_books(self) -> None:
        g = self.g
        for sym in SYMS:
            long_q, short_q = self.worst(sym)
            wb, ws = g.working_qty(sym)
            assert (g.position(sym), g.position(sym) + wb, g.position(sym) - ws) == (
                self.pos[sym],
                long_q,
                short_q,
            )
        for oid, w in self.working.items():
            assert g.remaining(oid) == w.rem
        # nothing here disagrees with what the Guard let out: no reconciliation halt
        assert (Scope.NODE, "n1") not in g.halts(), g.halts()[(Scope.NODE, "n1")].reason


GuardMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_the_guard_state_follows_any_sequence_of_events = GuardMachine.TestCase
