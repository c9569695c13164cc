"""Amends of orders whose NautilusTrader ids are as long as the Guard's ids may be.

NautilusTrader builds a client order id from the time, the trader's and the strategy's
tags and a count; a long `order_id_tag` makes it as long as the Guard's 64 characters.
The adapter names each amend `<id>~<n>`; that name must stay a valid Guard id."""

from __future__ import annotations

from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.objects import Quantity

from knightwatch import Scope
from knightwatch.adapters.nautilus import _amend_id, install
from knightwatch.order import MAX_ID_LEN

from .nt_world import AUDUSD, Scripted, engine, open_limits, quote, scripted

SYM = AUDUSD.id.value


def test_amend_ids_stay_within_the_guards_length_and_unique() -> None:
    """`n` counts the adapter's amends: each name is new, whichever orders share a prefix."""
    long_id = "O-" + "x" * (MAX_ID_LEN - 2)
    oids = [long_id, long_id[:-1] + "y", "O-1"] * 3
    counts = [1, 2, 3, 99, 100, 101, 10**9, 10**9 + 1, 10**9 + 2]
    ids = {_amend_id(oid, n) for oid, n in zip(oids, counts, strict=True)}
    assert len(ids) == 9
    assert all(0 < len(i) <= MAX_ID_LEN for i in ids)
    assert _amend_id("O-1", 7) == "O-1~7"  # a short id is kept whole


def test_an_order_with_a_64_character_id_can_still_be_amended_and_cut_while_halted() -> None:
    """Before, the amend's Guard id (`<64-character id>~1`) was 67 characters: every amend
    of the order was refused `invalid_order`, the one that only lowers it while halted
    too (the stop direction gated), though the order itself had passed."""
    e = engine(AUDUSD)
    try:
        tag = "t" * (MAX_ID_LEN - len("O-20231114-221320-001--1"))
        s = scripted(e, AUDUSD, tag)
        seen: list[tuple[int, int]] = []

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            order = (st.cache.orders_open() or [None])[0]
            if n == 1:
                st.buy("40000", "0.69000")  # rests: below the market
            elif n == 2:
                assert len(order.client_order_id.value) == MAX_ID_LEN
                kw.guard.halt(Scope.STRATEGY, st.id.value, "operator stop", "test")
            elif n == 3:  # the stop direction: passes while halted
                st.modify_order(order, quantity=Quantity.from_int(10_000))
            elif n == 4:
                seen.append(kw.guard.working_qty(SYM))
                kw.guard.resume(Scope.STRATEGY, st.id.value, "all clear", "test")
            elif n == 5:  # a new risk, checked as one: passes within the limits
                st.modify_order(order, quantity=Quantity.from_int(30_000))
            elif n == 6:
                seen.append(kw.guard.working_qty(SYM))

        s.script = script
        e.add_data([quote(AUDUSD, i, 0.7, 0.7001) for i in range(8)])
        kw = install(e, limits=open_limits())
        e.run()
        assert s.modify_rejected == []
        (order,) = e.kernel.cache.orders()
        assert order.quantity == Quantity.from_int(30_000) and order.is_open
        assert seen == [(10_000, 0), (30_000, 0)]
    finally:
        e.dispose()
